package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/protocol"
	"github.com/chorus-sync/chorus/token"
)

func TestInit(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tests := []struct {
		name      string
		token     string
		code      int
		errorCode int
	}{
		{"valid", e.token("alice", time.Hour), 200, 0},
		{"expired", e.tokenAt("alice", time.Hour, time.Now().Add(-3*time.Hour), e.creds.ServiceSID, e.creds.APISecret), 401, 20104},
		{"bad signature", e.tokenAt("alice", time.Hour, time.Now(), e.creds.ServiceSID, "wrong-secret"), 401, 20107},
		{"not a jwt", "hello", 401, 20160},
		{"unknown service", e.tokenAt("alice", time.Hour, time.Now(), chorus.NewSID(chorus.PrefixService), e.creds.APISecret), 403, 54050},
		{"default service", e.tokenAt("alice", time.Hour, time.Now(), "default", e.creds.APISecret), 200, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.dial(ctx)
			f := c.init(tt.token)
			st := f.Header.Status
			if st == nil || st.Code != tt.code || st.ErrorCode != tt.errorCode {
				t.Fatalf("init status = %+v, want code %d errorCode %d", st, tt.code, tt.errorCode)
			}
			if tt.code == 401 && st.Status != "UNAUTHORIZED" {
				t.Errorf("init status text = %q, want UNAUTHORIZED", st.Status)
			}
			if tt.code != 200 {
				return
			}
			var caps []string
			if ok, _ := f.Header.Get("capabilities", &caps); !ok || len(caps) != 1 || caps[0] != "client_update" {
				t.Errorf("init capabilities = %v, want [client_update]", caps)
			}
			var ct string
			if ok, _ := f.Header.Get("continuation_token", &ct); !ok || ct == "" {
				t.Errorf("init continuation_token = %q, want non-empty", ct)
			}
			// The session works.
			if r := c.do("GET", "/v3/Documents/missing-doc", nil, nil); r.Status != 404 {
				t.Errorf("GET missing document = %d, want 404", r.Status)
			}
		})
	}
}

func TestUpdate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tests := []struct {
		name      string
		token     string
		code      int
		errorCode int
	}{
		{"same identity", e.token("alice", 2*time.Hour), 200, 0},
		{"other identity", e.token("mallory", time.Hour), 401, 20101},
		{"expired", e.tokenAt("alice", time.Hour, time.Now().Add(-3*time.Hour), e.creds.ServiceSID, e.creds.APISecret), 401, 20104},
		{"garbage", "x.y.z", 401, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.dial(ctx)
			c.mustInit(e.token("alice", time.Hour))
			f := c.call(map[string]any{"method": "update", "token": tt.token}, nil)
			st := f.Header.Status
			if st == nil || st.Code != tt.code || (tt.errorCode != 0 && st.ErrorCode != tt.errorCode) {
				t.Fatalf("update status = %+v, want code %d errorCode %d", st, tt.code, tt.errorCode)
			}
			if tt.code == 401 && st.Status != "UNAUTHORIZED" {
				t.Errorf("update status text = %q, want UNAUTHORIZED", st.Status)
			}
		})
	}
}

// A session whose token's time comes while the store is out of reach
// stays: a renewal signed with the session's own key is verified against
// that key as last read, and names the session's service as its token did.
// It was answered 500 and the SDK dropped the connection, which the README
// says stays open through a store outage. Nothing else gets through: a new
// session is 503 (20503, not 500: the client's to retry), another identity
// or a forged signature is 401.
// TestUpdateWhileStoreAway runs with this node's API key cache (one node)
// and without it (a cluster's shared store, where the cache is off): the
// fallback must hold in both, and refuse the same tokens in both.
func TestUpdateWhileStoreAway(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) { testUpdateWhileStoreAway(t, shared) })
	}
}

func testUpdateWhileStoreAway(t *testing.T, shared bool) {
	var away, busDown atomic.Bool
	e := newEnv(t, func(e *env, c *Config) {
		eng := engine.New(engine.Config{Store: awayStore{e.st, &away}, Bus: pingDown{e.bus, &busDown}, SharedStore: shared})
		c.Engine, c.Verifier = eng, &token.Verifier{Keys: eng.APIKey}
		c.SharedStore = shared
	})
	if (e.gw.keys == nil) != shared {
		t.Fatalf("key cache = %v with SharedStore %v", e.gw.keys != nil, shared)
	}
	ctx := context.Background()
	// Another account with a key and a service: its tokens must not renew
	// alice's session (a reviewer's attack on the first version).
	other := &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), AuthToken: chorus.NewSecret(32), DateCreated: time.Now()}
	otherKey := &chorus.APIKey{SID: chorus.NewSID(chorus.PrefixAPIKey), AccountSID: other.SID, Secret: chorus.NewSecret(32), Main: true, DateCreated: time.Now()}
	if err := e.st.Update(ctx, func(tx chorus.Tx) error {
		if err := tx.PutAccount(ctx, other); err != nil {
			return err
		}
		return tx.PutAPIKey(ctx, otherKey)
	}); err != nil {
		t.Fatal(err)
	}
	foreign := func(identity string) string {
		tok, err := token.Mint(token.Params{AccountSID: other.SID, APIKeySID: otherKey.SID, APISecret: otherKey.Secret,
			Identity: identity, ServiceSID: e.creds.ServiceSID, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	c := e.dial(ctx)
	c.mustInit(e.token("alice", time.Hour))
	update := func(tok string) *protocol.Status {
		return c.call(map[string]any{"method": "update", "token": tok}, nil).Header.Status
	}
	// Refused with the store up (its service is another account's): it
	// must not become the key the session falls back on.
	if st := update(foreign("mallory")); st == nil || st.Code != 401 {
		t.Fatalf("another account's token with the store up = %+v, want 401", st)
	}
	away.Store(true)
	e.gw.cfg.Engine.ForgetServices() // the service is read from the store too
	// The other key is still in the gateway's key cache: verified, but
	// its account's token does not get the session's service.
	if st := update(foreign("alice")); st == nil || st.Code == 200 {
		t.Errorf("another account's cached key, store away = %+v, want a refusal", st)
	}
	if e.gw.keys != nil {
		e.gw.keys.mu.Lock()
		clear(e.gw.keys.keys) // the key too (a cache miss, not a change of keys)
		e.gw.keys.mu.Unlock()
	}
	if st := update(e.token("alice", 2*time.Hour)); st == nil || st.Code != 200 {
		t.Fatalf("renewal with the store away = %+v, want 200", st)
	}
	// twilio-sync 0.5-0.7 exchange the renewed token through the socket
	// first, and send the update only if that succeeded.
	exchange := func(tok string) int {
		body, _ := json.Marshal(map[string]any{"fpa_token": tok, "continuation_token": "ct_1"})
		return c.do("POST", "/v1/token", nil, json.RawMessage(body)).Status
	}
	if st := exchange(e.token("alice", 2*time.Hour)); st != 200 {
		t.Errorf("the EMS exchange of a renewal with the store away = %d, want 200", st)
	}
	if st := exchange(e.token("mallory", 2*time.Hour)); st != 401 {
		t.Errorf("the EMS exchange of another identity's token with the store away = %d, want 401", st)
	}
	if st := update(foreign("alice")); st == nil || st.Code == 200 {
		t.Errorf("another account's token naming the session's service, store away = %+v, want a refusal", st)
	}
	if st := update(e.token("mallory", time.Hour)); st == nil || st.Code != 401 {
		t.Errorf("another identity with the store away = %+v, want 401", st)
	}
	forged := e.tokenAt("alice", time.Hour, time.Now(), e.creds.ServiceSID, strings.Repeat("x", 32))
	if st := update(forged); st == nil || st.Code != 401 {
		t.Errorf("a forged signature with the store away = %+v, want 401", st)
	}
	bob := e.dial(ctx)
	if st := bob.init(e.token("bob", time.Hour)).Header.Status; st == nil || st.Code != 503 || st.ErrorCode != 20503 {
		t.Errorf("a new session with the store away = %+v, want 503 20503", st)
	}
	// The EMS exchange of twilio-sync 0.5-0.7 too.
	ems := httptest.NewServer(http.HandlerFunc(e.gw.ServeEMSToken))
	defer ems.Close()
	body, _ := json.Marshal(map[string]any{"fpa_token": e.token("bob", time.Hour)})
	res, err := http.Post(ems.URL+"/v1/token", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 503 {
		t.Errorf("the EMS exchange with the store away = %d, want 503", res.StatusCode)
	}
	// In a cluster, a change of keys on another node is heard through
	// the Bus: while it does not answer, one may have gone unheard.
	if shared {
		busDown.Store(true)
		if st := update(e.token("alice", time.Hour)); st == nil || st.Code != 503 {
			t.Errorf("renewal with the store and the Bus away = %+v, want 503", st)
		}
		busDown.Store(false)
	}
	// Once keys changed (a secret changed in place, announced by another
	// node), the key as last read is not trusted any more.
	heard := e.gw.keysHeard.Load()
	if err := e.bus.Publish(ctx, &chorus.Event{Type: chorus.EventCredentialsChanged, ObjectSID: chorus.ControlTopic, DateCreated: time.Now()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return e.gw.keysHeard.Load() > heard }) // credentials_changed heard
	if st := update(e.token("alice", time.Hour)); st == nil || st.Code != 503 {
		t.Errorf("renewal with the store away after keys changed = %+v, want 503", st)
	}
	away.Store(false)
	if st := update(e.token("alice", time.Hour)); st == nil || st.Code != 200 {
		t.Errorf("renewal with the store back = %+v, want 200", st)
	}
}

// pingDown is a Bus whose Ping fails while down is set.
type pingDown struct {
	chorus.Bus
	down *atomic.Bool
}

func (b pingDown) Ping(ctx context.Context) error {
	if b.down.Load() {
		return chorus.ErrUnavailable
	}
	return b.Bus.Ping(ctx)
}

// shifted returns a clock running offset ahead of the real one.
func shifted(offset time.Duration) func() time.Time {
	return func() time.Time { return time.Now().Add(offset) }
}

func TestTokenAboutToExpire(t *testing.T) {
	// Tokens carry whole seconds: a 185s token minted now expires in
	// (184s, 185s]. The gateway's clock runs 3s ahead, so it sees
	// (181s, 182s] left and warns 1–2s after init.
	e := newEnv(t, withConfig(func(c *Config) { c.Now = shifted(3 * time.Second) }))
	c := e.dial(context.Background())
	start := time.Now()
	c.mustInit(e.token("alice", 185*time.Second))
	f := c.nextControl(5 * time.Second)
	elapsed := time.Since(start)
	var typ string
	f.Header.Get("client_update_type", &typ)
	if f.Header.Method != "client_update" || typ != "token_about_to_expire" {
		t.Fatalf("frame = %s %q, want client_update token_about_to_expire", f.Header.Method, typ)
	}
	if elapsed < 800*time.Millisecond || elapsed > 2500*time.Millisecond {
		t.Errorf("token_about_to_expire after %v, want 1–2s", elapsed)
	}

	// An update re-arms: a fresh 1h token is not about to expire.
	if f := c.call(map[string]any{"method": "update", "token": e.token("alice", time.Hour)}, nil); f.Header.Status.Code != 200 {
		t.Fatalf("update status = %+v, want 200", f.Header.Status)
	}
	select {
	case f := <-c.control:
		if f.Header.Method != "ping" {
			t.Errorf("after update got %s, want nothing", f.Header.Method)
		}
	case <-time.After(1500 * time.Millisecond):
	}
}

func TestTokenExpiryCloses410(t *testing.T) {
	// A 10 minute token seen by a clock 598s ahead: less than 180s remain
	// (warn at once) and it expires 1–2s after init (whole seconds).
	e := newEnv(t, withConfig(func(c *Config) { c.Now = shifted(598 * time.Second) }))
	c := e.dial(context.Background())
	start := time.Now()
	c.mustInit(e.token("alice", 10*time.Minute))
	f := c.nextControl(2 * time.Second)
	if f.Header.Method != "client_update" {
		t.Fatalf("first frame after init = %s, want client_update", f.Header.Method)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("client_update after %v, want at once", d)
	}
	f = c.nextControl(5 * time.Second)
	st := f.Header.Status
	if f.Header.Method != "close" || st == nil || st.Code != 410 || st.ErrorCode != 20104 || st.Status != "TOKEN_EXPIRED" {
		t.Fatalf("frame = %s %+v, want close 410 TOKEN_EXPIRED 20104", f.Header.Method, st)
	}
	if d := time.Since(start); d < 800*time.Millisecond || d > 3*time.Second {
		t.Errorf("close after %v, want 1–2s", d)
	}
	if err := c.closed(5 * time.Second); err != nil {
		t.Errorf("after close 410: %v", err)
	}
}

func TestMalformedFrames(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	good := func(id string) []byte {
		return protocol.Encode(nil, protocol.NewPing(id), nil)
	}
	tests := []struct {
		name       string
		init       bool
		typ        websocket.MessageType
		msg        []byte
		wantClosed bool
	}{
		{"text frame", true, websocket.MessageText, good("TM1"), false},
		{"truncated", true, websocket.MessageBinary, []byte("TWILSOCK V3.0 50\r\n{\"method\":\"mess"), true},
		{"huge payload_size", true, websocket.MessageBinary, []byte("TWILSOCK V3.0 56\r\n{\"method\":\"message\",\"id\":\"TM1\",\"payload_size\":99999999}\r\n"), true},
		{"bad json header", true, websocket.MessageBinary, []byte("TWILSOCK V3.0 5\r\n{nope\r\n"), true},
		{"bad magic", true, websocket.MessageBinary, []byte("HELLO"), true},
		{"oversize request", true, websocket.MessageBinary, oversizeFrame(300 << 10), false},
		{"request before init", false, websocket.MessageBinary, protocol.Encode(nil, &protocol.Header{Method: "message", ID: "TM1"}, nil), true},
		{"unknown method", true, websocket.MessageBinary, protocol.Encode(nil, &protocol.Header{Method: "frobnicate", ID: "TM1"}, nil), false},
		{"telemetry", true, websocket.MessageBinary, protocol.Encode(nil, &protocol.Header{Method: "telemetry.v1", ID: "TM1"}, nil), false},
	}
	bystander := e.dial(ctx)
	bystander.mustInit(e.token("bob", time.Hour))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.dial(ctx)
			if tt.init {
				c.mustInit(e.token("alice", time.Hour))
			}
			if err := c.ws.Write(ctx, tt.typ, tt.msg); err != nil {
				t.Fatalf("write: %v", err)
			}
			if tt.wantClosed {
				if err := c.closed(5 * time.Second); err != nil {
					t.Errorf("after %s: %v, want closed", tt.name, err)
				}
			} else if r := c.do("GET", "/v3/Documents/nope", nil, nil); r.Status != 404 {
				t.Errorf("after %s: GET = %d, want 404 on a live session", tt.name, r.Status)
			}
			if r := bystander.do("GET", "/v3/Documents/nope", nil, nil); r.Status != 404 {
				t.Errorf("bystander GET = %d, want 404", r.Status)
			}
		})
	}
	t.Run("oversize request answered", func(t *testing.T) {
		c := e.dial(ctx)
		c.mustInit(e.token("alice", time.Hour))
		ch := make(chan *protocol.Frame, 1)
		c.mu.Lock()
		c.waiters["TMbig"] = ch
		c.mu.Unlock()
		c.ws.Write(ctx, websocket.MessageBinary, oversizeFrame(300<<10))
		select {
		case f := <-ch:
			var hs protocol.Status
			f.Header.Get("http_status", &hs)
			if f.Header.Status.Code != 200 || hs.Code != 413 || !strings.Contains(string(f.Payload), "54006") {
				t.Errorf("oversize reply = %+v http %+v %s, want 200 / 413 54006", f.Header.Status, hs, f.Payload)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no reply to an oversize request")
		}
	})
	t.Run("second init", func(t *testing.T) {
		c := e.dial(ctx)
		c.mustInit(e.token("alice", time.Hour))
		f := c.init(e.token("alice", time.Hour))
		if f.Header.Status == nil || f.Header.Status.Code < 400 {
			t.Errorf("second init status = %+v, want an error", f.Header.Status)
		}
	})
	t.Run("client close", func(t *testing.T) {
		c := e.dial(ctx)
		c.mustInit(e.token("alice", time.Hour))
		c.sendFrame(map[string]any{"method": "close"}, nil)
		if err := c.closed(5 * time.Second); err != nil {
			t.Errorf("after client close: %v", err)
		}
	})
}

func TestPing(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.PingInterval = 100 * time.Millisecond }))
	c := e.dial(context.Background())
	c.mustInit(e.token("alice", time.Hour))
	f := c.nextControl(2 * time.Second)
	if f.Header.Method != "ping" || f.Header.ID == "" {
		t.Fatalf("frame = %s id %q, want ping", f.Header.Method, f.Header.ID)
	}
	// Acked pings keep the session alive well past 2 intervals.
	time.Sleep(500 * time.Millisecond)
	if r := c.do("GET", "/v3/Documents/nope", nil, nil); r.Status != 404 {
		t.Errorf("GET = %d, want 404", r.Status)
	}
}

// oversizeFrame is a well-formed document create whose payload is n bytes.
func oversizeFrame(n int) []byte {
	h, _ := protocol.HeaderOf(map[string]any{
		"method": "message", "id": "TMbig", "payload_type": "application/json",
		"http_request": map[string]any{"host": "h", "path": "/v3/Documents", "method": "POST", "params": map[string]any{}, "headers": map[string]any{}},
	})
	payload := append([]byte(`{"data":{"x":"`), strings.Repeat("x", n)...)
	return protocol.Encode(nil, h, append(payload, `"}}`...))
}

// TestMarkedRenewalWhileStoreAway: a session whose token was minted with
// the auth token (marked, engine.AuthTokenMark) renews through a store
// outage as an unmarked one does, with a token of the same mark; one of
// another mark is not taken on trust (503). The mark's check read the
// account and answered 503, so such sessions ended at their token's
// expiry during any outage (a reviewer's finding).
func TestMarkedRenewalWhileStoreAway(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			var away, busDown atomic.Bool
			e := newEnv(t, func(e *env, c *Config) {
				eng := engine.New(engine.Config{Store: awayStore{e.st, &away}, Bus: pingDown{e.bus, &busDown}, SharedStore: shared})
				c.Engine, c.Verifier = eng, &token.Verifier{Keys: eng.APIKey}
				c.SharedStore = shared
			})
			ctx := context.Background()
			var acct *chorus.Account
			if err := e.st.View(ctx, func(tx chorus.ReadTx) (err error) {
				acct, err = tx.Account(ctx, e.creds.AccountSID)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			marked := func(authToken string, at time.Time) string {
				tok, err := token.Mint(token.Params{AccountSID: e.creds.AccountSID, APIKeySID: e.creds.APIKeySID, APISecret: e.creds.APISecret,
					Identity: "alice", ServiceSID: e.creds.ServiceSID, TTL: time.Hour, Now: func() time.Time { return at },
					IDSuffix: engine.AuthTokenSuffix(authToken, e.creds.APISecret)})
				if err != nil {
					t.Fatal(err)
				}
				return tok
			}
			c := e.dial(ctx)
			c.mustInit(marked(acct.AuthToken, time.Now()))
			update := func(tok string) *protocol.Status {
				return c.call(map[string]any{"method": "update", "token": tok}, nil).Header.Status
			}
			away.Store(true)
			e.gw.cfg.Engine.Resync() // nothing cached: the account is read from the store
			if e.gw.keys != nil {
				e.gw.keys.mu.Lock()
				clear(e.gw.keys.keys)
				e.gw.keys.mu.Unlock()
			}
			if st := update(marked(acct.AuthToken, time.Now().Add(time.Second))); st == nil || st.Code != 200 {
				t.Fatalf("renewal with the session's mark, store away = %+v, want 200", st)
			}
			if st := update(marked(strings.Repeat("a", 32), time.Now().Add(2*time.Second))); st == nil || st.Code == 200 {
				t.Errorf("renewal with another auth token's mark, store away = %+v, want a refusal", st)
			}
		})
	}
}
