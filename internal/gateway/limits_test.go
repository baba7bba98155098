package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/protocol"
)

// writeHeader sends only the header of a masked binary frame that
// announces n payload bytes, then the first len(p) of them.
func (c *rawClient) writeHeader(n int64, p []byte) {
	c.t.Helper()
	h := ws.Header{Fin: true, OpCode: ws.OpBinary, Length: n, Masked: true, Mask: ws.NewMask()}
	if err := ws.WriteHeader(c.nc, h); err != nil {
		c.t.Fatalf("write header: %v", err)
	}
	if len(p) > 0 {
		ws.Cipher(p, h.Mask, 0)
		if _, err := c.nc.Write(p); err != nil {
			c.t.Fatalf("write payload: %v", err)
		}
	}
}

func TestMessageLimitBeforeInit(t *testing.T) {
	e := newEnv(t)
	tok := e.token("alice", time.Hour)
	t.Run("over the init limit closes 1009 before the payload", func(t *testing.T) {
		c := e.rawDial()
		c.writeHeader(DefaultMaxInitBytes+1, nil)
		c.readFailClose(ws.StatusMessageTooBig)
	})
	t.Run("a 1 MiB announcement closes 1009", func(t *testing.T) {
		c := e.rawDial()
		c.writeHeader(1<<20, []byte("TWILSOCK"))
		c.readFailClose(ws.StatusMessageTooBig)
	})
	t.Run("a continuation announcing 2^63-1 bytes closes 1009 before the payload", func(t *testing.T) {
		// The fragment's length plus what is already buffered must not wrap
		// past the limit check: the reader would then buffer whatever came.
		c := e.rawDial()
		c.write(ws.OpBinary, false, []byte("T"), false)
		h := ws.Header{Fin: true, OpCode: ws.OpContinuation, Length: math.MaxInt64, Masked: true, Mask: ws.NewMask()}
		if err := ws.WriteHeader(c.nc, h); err != nil {
			t.Fatalf("write header: %v", err)
		}
		c.readFailClose(ws.StatusMessageTooBig)
	})
	t.Run("payload_size over the init limit closes", func(t *testing.T) {
		c := e.rawDial()
		c.write(ws.OpBinary, true, []byte(`TWILSOCK V3.0 51`+"\r\n"+`{"method":"init","id":"TM1","payload_size":1000000}`+"\r\n"), false)
		c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c.r); err != nil {
			t.Fatalf("after a huge payload_size before init: %v, want the connection closed", err)
		}
	})
	t.Run("requests piled up before init close 1008", func(t *testing.T) {
		c := e.rawDial()
		// One write, and nothing after the request that is one too many
		// (unread bytes would make the close a reset).
		var buf bytes.Buffer
		for i := 0; i < maxPreInitRequests+1; i++ {
			ws.WriteFrame(&buf, ws.MaskFrame(ws.NewFrame(ws.OpBinary, true, initFrame("not-a-token"))))
		}
		if _, err := c.nc.Write(buf.Bytes()); err != nil {
			t.Fatalf("write: %v", err)
		}
		c.readFailClose(ws.StatusPolicyViolation)
	})
	t.Run("a token with metadata under the limit is accepted", func(t *testing.T) {
		c := e.rawDial()
		h, _ := protocol.HeaderOf(map[string]any{"method": "init", "id": "TMinit", "token": tok,
			"metadata": map[string]any{"pad": strings.Repeat("x", 20<<10)}})
		c.write(ws.OpBinary, true, protocol.Encode(nil, h, nil), false)
		if f := c.readTwilsock("reply"); f.Header.Status == nil || f.Header.Status.Code != 200 {
			t.Fatalf("init reply status = %+v, want 200", f.Header.Status)
		}
	})
	t.Run("after init the frame limit applies", func(t *testing.T) {
		c := e.dial(context.Background())
		c.mustInit(tok)
		// Read and answered (the document is over Sync's data limit),
		// not cut off like before init.
		r := c.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{"x": strings.Repeat("y", 100<<10)}})
		if r.Status != 413 {
			t.Fatalf("create of a 100 KiB document after init = %d, want 413", r.Status)
		}
		if r := c.do("GET", "/v3/Documents/nope", nil, nil); r.Status != 404 {
			t.Fatalf("GET after a 100 KiB request = %d, want 404 on a live session", r.Status)
		}
	})
}

// TestStalledHeadersStaySmall: connections that announce large messages
// and stall hold only what they sent, before and after init, and other
// clients are not slowed down.
func TestStalledHeadersStaySmall(t *testing.T) {
	e := newEnv(t)
	tok := e.token("alice", time.Hour)
	const n = 100 // per kind
	heap0, _, _ := settledMemory(t)
	var stalled []*rawClient
	for i := 0; i < n; i++ {
		// Before init: just under the init limit.
		c := e.rawDial()
		c.writeHeader(DefaultMaxInitBytes-1, []byte("TWILSOCK V3.0"))
		stalled = append(stalled, c)
		// After init: just under the frame limit, ~1 MiB.
		c = e.rawDial()
		c.write(ws.OpBinary, true, initFrame(tok), false)
		c.readTwilsock("reply")
		c.writeHeader(1<<20, []byte("TWILSOCK V3.0"))
		stalled = append(stalled, c)
	}
	waitFor(t, func() bool { return e.gw.Stats().Connections == 2*n })
	// Give the readers time to block in their reads; a reader that
	// allocated by the announced length would hold it from here on.
	var worst int64
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		heap, _, _ := settledMemory(t)
		worst = max(worst, heap-heap0)
		time.Sleep(100 * time.Millisecond)
	}
	per := worst / (2 * n)
	t.Logf("heap growth with %d stalled connections: %d KiB (%d KiB each)", 2*n, worst>>10, per>>10)
	// Allocating the announced lengths would be ~530 KiB each.
	if per > 48<<10 {
		t.Errorf("heap per stalled connection = %d KiB, want < 48 KiB", per>>10)
	}

	// Another client is served promptly.
	start := time.Now()
	c := e.dial(context.Background())
	c.mustInit(tok)
	if r := c.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{"ok": true}}); r.Status != 201 {
		t.Fatalf("create beside stalled connections = %d, want 201", r.Status)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a session beside stalled connections took %v", d)
	}
	for _, c := range stalled {
		c.nc.Close()
	}
	waitFor(t, func() bool { return e.gw.Stats().Connections == 1 })
}

// upgradeStatus sends a websocket handshake and returns the HTTP status
// and Twilio error code of a refusal (0 when upgraded).
func upgradeStatus(t *testing.T, e *env, keep *[]io.Closer) (status, code int) {
	t.Helper()
	req, _ := http.NewRequest("GET", e.srv.URL+"/v3/wsconnect", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		*keep = append(*keep, resp.Body)
		return 0, 0
	}
	defer resp.Body.Close()
	var body struct {
		Code int `json:"code"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("refusal body %q: %v", b, err)
	}
	return resp.StatusCode, body.Code
}

func TestConnectionCaps(t *testing.T) {
	t.Run("unauthenticated per address", func(t *testing.T) {
		e := newEnv(t, withConfig(func(c *Config) { c.MaxUnauthenticatedPerAddr = 2 }))
		a, b := e.rawDial(), e.rawDial()
		var keep []io.Closer
		if st, code := upgradeStatus(t, e, &keep); st != 429 || code != 20429 {
			t.Fatalf("third unauthenticated connection = %d %d, want 429 20429", st, code)
		}
		// An authenticated session no longer counts.
		a.write(ws.OpBinary, true, initFrame(e.token("alice", time.Hour)), false)
		a.readTwilsock("reply")
		c := e.rawDial()
		if st, _ := upgradeStatus(t, e, &keep); st != 429 {
			t.Fatalf("connection over the cap after an init = %d, want 429", st)
		}
		// Nor does one that ended.
		b.nc.Close()
		c.nc.Close()
		waitFor(t, func() bool { return e.gw.admitted() == 1 && e.gw.unauthFrom("127.0.0.1") == 0 })
		e.rawDial()
		if got := e.gw.Stats().Refused; got != 2 {
			t.Errorf("Stats.Refused = %d, want 2", got)
		}
	})
	t.Run("sessions per identity", func(t *testing.T) {
		e := newEnv(t, withConfig(func(c *Config) { c.MaxSessionsPerIdentity = 2 }))
		ctx := context.Background()
		alice := e.token("alice", time.Hour)
		a := e.dial(ctx)
		a.mustInit(alice)
		e.dial(ctx).mustInit(alice)
		over := e.dial(ctx)
		f := over.init(alice)
		if st := f.Header.Status; st == nil || st.Code != 429 || st.ErrorCode != 20429 {
			t.Fatalf("third session of one identity: init status %+v, want 429 20429", st)
		}
		var body struct {
			Backoff struct {
				Min int `json:"reconnect_min_ms"`
			} `json:"backoff_policy"`
		}
		if err := json.Unmarshal(f.Payload, &body); err != nil || body.Backoff.Min < 1000 {
			t.Errorf("the 429's body %q: want a backoff_policy of at least 1 s (%v)", f.Payload, err)
		}
		// Another identity, and the same name in another service, are
		// not affected.
		e.dial(ctx).mustInit(e.token("bob", time.Hour))
		other, err := e.eng.CreateService(ctx, e.creds.AccountSID, engine.ServiceParams{})
		if err != nil {
			t.Fatalf("CreateService: %v", err)
		}
		e.dial(ctx).mustInit(e.tokenAt("alice", time.Hour, time.Now(), other.SID, e.creds.APISecret))
		// A session that ended gives its place back: the refused one's
		// retry (the SDK retries a 429 with backoff) gets in.
		a.ws.CloseNow()
		waitFor(t, func() bool {
			e.gw.mu.Lock()
			defer e.gw.mu.Unlock()
			u := e.gw.perIdentity[identityKey{e.svc.SID, "alice"}]
			return u != nil && u.sessions == 1
		})
		over.mustInit(alice)
		if got := e.gw.Stats().IdentityRefused; got != 1 {
			t.Errorf("Stats.IdentityRefused = %d, want 1", got)
		}
	})
	t.Run("total", func(t *testing.T) {
		e := newEnv(t, withConfig(func(c *Config) { c.MaxConns = 2 }))
		e.rawDial()
		b := e.rawDial()
		var keep []io.Closer
		if st, code := upgradeStatus(t, e, &keep); st != 503 || code != 20503 {
			t.Fatalf("third connection = %d %d, want 503 20503", st, code)
		}
		b.nc.Close()
		// Stats counts a session gone before the gateway has released its
		// place; wait for the place itself.
		waitFor(t, func() bool { return e.gw.admitted() == 1 })
		e.rawDial()
	})
}

func TestClientAddr(t *testing.T) {
	for _, tt := range []struct{ remote, want string }{
		{"127.0.0.1:5000", "127.0.0.1"},
		{"[::ffff:10.0.0.1]:5000", "10.0.0.1"},
		{"[2001:db8:1:2:3:4:5:6]:5000", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:1", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:1", "fe80::/64"},
		{"pipe", "pipe"},
	} {
		r := &http.Request{RemoteAddr: tt.remote}
		if got := clientAddr(r); got != tt.want {
			t.Errorf("clientAddr(%q) = %q, want %q", tt.remote, got, tt.want)
		}
	}
}

// admitted is the number of places taken against MaxConns.
func (g *Gateway) admitted() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns) + g.upgrading
}

// unauthFrom is the number of unauthenticated places addr holds.
func (g *Gateway) unauthFrom(addr string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.unauth[addr]
}

// TestAwaitInitMarks: the gateway tells the server (Config.AwaitInit)
// that a new websocket waits on its client, that it works on an init
// (not the client's time: its checks may wait on a slow store, and the
// server must not evict the connection meanwhile), that a refused init
// waits on the client again, and, once an init succeeded, never that it
// waits again. Before, the mark was "waiting" from the upgrade until init
// succeeded, the server's own checks included.
func TestAwaitInitMarks(t *testing.T) {
	var (
		mu    sync.Mutex
		marks []bool
	)
	e := newEnv(t, withConfig(func(c *Config) {
		c.AwaitInit = func(*http.Request) func(bool) {
			return func(waiting bool) {
				mu.Lock()
				defer mu.Unlock()
				marks = append(marks, waiting)
			}
		}
	}))
	got := func() []bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(marks)
	}
	c := e.dial(context.Background())
	if f := c.init("not-a-token"); f.Header.Status == nil || f.Header.Status.Code != 401 {
		t.Fatalf("init with a bad token = %+v, want 401", f.Header.Status)
	}
	waitFor(t, func() bool { return len(got()) >= 2 })
	if m := got(); !slices.Equal(m, []bool{false, true}) {
		t.Fatalf("marks after a refused init = %v, want [false true]: working, then waiting again", m)
	}
	c.mustInit(e.token("alice", time.Hour))
	waitFor(t, func() bool { return len(got()) >= 4 })
	time.Sleep(50 * time.Millisecond) // a late mark would show
	if m := got(); !slices.Equal(m, []bool{false, true, false, false}) {
		t.Fatalf("marks after a successful init = %v, want [false true false false]: working, then done, never waiting", m)
	}
	c.ws.CloseNow()
	time.Sleep(100 * time.Millisecond)
	if m := got(); len(m) != 4 {
		t.Errorf("marks after the session ended = %v, want none more", m)
	}
}
