package admin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/gateway"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/token"
)

// fixture is a real engine over a real SQLite file with bootstrapped
// credentials.
type fixture struct {
	eng   *engine.Engine
	st    chorus.Store
	bus   *mem.Bus
	creds engine.Credentials
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(tb.TempDir(), "chorus.db"), nil)
	if err != nil {
		tb.Fatalf("sqlite.Open() = %v", err)
	}
	bus := mem.New()
	tb.Cleanup(func() {
		_ = bus.Close()
		_ = st.Close()
	})
	eng := engine.New(engine.Config{Store: st, Bus: bus, Logger: quietLogger()})
	creds, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		tb.Fatalf("Bootstrap() = %v", err)
	}
	return &fixture{eng: eng, st: st, bus: bus, creds: creds}
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// fakeGateway reports fixed counts.
type fakeGateway struct{ s gateway.Stats }

func (g fakeGateway) Stats() gateway.Stats { return g.s }

type response struct {
	status int
	header http.Header
	body   map[string]any
}

func do(tb testing.TB, h http.Handler, method, path, user, pass string, form url.Values) response {
	tb.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if user != "" || pass != "" {
		req.SetBasicAuth(user, pass)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := response{status: rec.Code, header: rec.Header()}
	if err := json.Unmarshal(rec.Body.Bytes(), &res.body); err != nil {
		tb.Fatalf("%s %s: body %q is not a JSON object: %v", method, path, rec.Body.String(), err)
	}
	return res
}

func TestAuthentication(t *testing.T) {
	f := newFixture(t)
	h := New(Config{Engine: f.eng, Logger: quietLogger()})
	tests := []struct {
		name       string
		user, pass string
		want       int
	}{
		{"account and auth token", f.creds.AccountSID, f.creds.AuthToken, http.StatusOK},
		{"api key and secret", f.creds.APIKeySID, f.creds.APISecret, http.StatusOK},
		{"no credentials", "", "", http.StatusUnauthorized},
		{"wrong auth token", f.creds.AccountSID, "nope", http.StatusUnauthorized},
		{"wrong api secret", f.creds.APIKeySID, f.creds.AuthToken, http.StatusUnauthorized},
		{"unknown account", "AC" + strings.Repeat("0", 32), f.creds.AuthToken, http.StatusUnauthorized},
		{"not a sid", "admin", "admin", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, ep := range []struct{ method, path string }{
				{http.MethodGet, "/admin/v1/Stats"},
				{http.MethodGet, "/admin/v1/Account"},
				{http.MethodPost, "/admin/v1/Tokens"},
			} {
				res := do(t, h, ep.method, ep.path, tt.user, tt.pass, url.Values{})
				wantStatus := tt.want
				if wantStatus == http.StatusOK && ep.method == http.MethodPost {
					wantStatus = http.StatusCreated
				}
				if res.status != wantStatus {
					t.Fatalf("%s %s status = %d, want %d (body %v)", ep.method, ep.path, res.status, wantStatus, res.body)
				}
				if tt.want != http.StatusUnauthorized {
					continue
				}
				if got := res.body["code"]; got != float64(20003) {
					t.Errorf("%s %s code = %v, want 20003", ep.method, ep.path, got)
				}
				if got := res.header.Get("WWW-Authenticate"); got != "" {
					t.Errorf("%s %s WWW-Authenticate = %q, want none (no browser credential prompt)", ep.method, ep.path, got)
				}
				for _, leak := range []string{"connections", "writes", "token", "account_sid"} {
					if _, ok := res.body[leak]; ok {
						t.Errorf("%s %s: 401 body has %q: %v", ep.method, ep.path, leak, res.body)
					}
				}
			}
		})
	}
}

func TestAccount(t *testing.T) {
	f := newFixture(t)
	h := New(Config{Engine: f.eng, Logger: quietLogger()})
	tests := []struct {
		name, user, pass, method string
	}{
		{"auth token", f.creds.AccountSID, f.creds.AuthToken, "auth_token"},
		{"api key", f.creds.APIKeySID, f.creds.APISecret, "api_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := do(t, h, http.MethodGet, "/admin/v1/Account", tt.user, tt.pass, nil)
			if res.body["account_sid"] != f.creds.AccountSID || res.body["auth_method"] != tt.method ||
				res.body["credential_sid"] != tt.user {
				t.Errorf("GET Account = %v, want account %s, method %s, credential %s",
					res.body, f.creds.AccountSID, tt.method, tt.user)
			}
		})
	}
}

func TestStatsCounts(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	gw := fakeGateway{gateway.Stats{Connections: 3, Subscriptions: 7, Topics: 2, Delivered: 11}}
	h := New(Config{Engine: f.eng, Gateway: gw, OperatorAccount: f.creds.AccountSID, Logger: quietLogger()})

	before := f.eng.Stats()
	svc, err := f.eng.Service(ctx, f.creds.AccountSID, "default")
	if err != nil {
		t.Fatalf("Service(default) = %v", err)
	}
	for i := range 4 {
		if _, err := f.eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument,
			engine.CreateObject{Data: json.RawMessage(`{"i":` + string(rune('0'+i)) + `}`)}); err != nil {
			t.Fatalf("CreateObject() = %v", err)
		}
	}
	res := do(t, h, http.MethodGet, "/admin/v1/Stats", f.creds.APIKeySID, f.creds.APISecret, nil)
	if res.status != http.StatusOK {
		t.Fatalf("GET Stats status = %d, want 200 (%v)", res.status, res.body)
	}
	want := map[string]float64{
		"connections":      3,
		"subscriptions":    7,
		"topics":           2,
		"events_delivered": 11,
		"writes":           float64(before.Writes + 4),
		"events_posted":    float64(f.eng.Stats().EventsPosted),
	}
	for k, v := range want {
		if got := res.body[k]; got != v {
			t.Errorf("Stats[%q] = %v, want %v", k, got, v)
		}
	}
	if f.eng.Stats().EventsPosted <= before.EventsPosted {
		t.Errorf("EventsPosted did not grow with 4 creates: %d -> %d", before.EventsPosted, f.eng.Stats().EventsPosted)
	}
	if up, ok := res.body["uptime_seconds"].(float64); !ok || up < 0 {
		t.Errorf("Stats[uptime_seconds] = %v, want a non-negative number", res.body["uptime_seconds"])
	}
	if got := res.body["events_per_second"]; got != float64(0) {
		t.Errorf("first Stats[events_per_second] = %v, want 0 (no earlier sample)", got)
	}

	t.Run("without gateway", func(t *testing.T) {
		h := New(Config{Engine: f.eng, OperatorAccount: f.creds.AccountSID, Logger: quietLogger()})
		res := do(t, h, http.MethodGet, "/admin/v1/Stats", f.creds.APIKeySID, f.creds.APISecret, nil)
		for _, k := range []string{"connections", "subscriptions"} {
			if v, ok := res.body[k]; !ok || v != nil {
				t.Errorf("Stats[%q] = %v (present %v), want null", k, v, ok)
			}
		}
	})
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestEventsPerSecond(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	clk := &fakeClock{t: time.Now()}
	h := newHandler(Config{Engine: f.eng, OperatorAccount: f.creds.AccountSID, Logger: quietLogger()}, clk.Now)
	svc, err := f.eng.Service(ctx, f.creds.AccountSID, "default")
	if err != nil {
		t.Fatalf("Service(default) = %v", err)
	}
	doc, err := f.eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, engine.CreateObject{UniqueName: "rate"})
	if err != nil {
		t.Fatalf("CreateObject() = %v", err)
	}
	// write posts n document updates and returns how many events that was.
	write := func(n int) uint64 {
		before := f.eng.Stats().EventsPosted
		for i := range n {
			if _, err := f.eng.UpdateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, doc.SID,
				engine.UpdateObject{Data: json.RawMessage(`{"n":` + strings.Repeat("1", i+1) + `}`)}); err != nil {
				t.Fatalf("UpdateObject() = %v", err)
			}
		}
		return f.eng.Stats().EventsPosted - before
	}
	rate := func() float64 {
		res := do(t, h, http.MethodGet, "/admin/v1/Stats", f.creds.APIKeySID, f.creds.APISecret, nil)
		r, ok := res.body["events_per_second"].(float64)
		if !ok {
			t.Fatalf("events_per_second = %v, want a number", res.body["events_per_second"])
		}
		return r
	}

	if got := rate(); got != 0 {
		t.Fatalf("first rate = %v, want 0", got)
	}
	// 1 s later, 6 more events: 6/s.
	n := write(6)
	if n == 0 {
		t.Fatalf("6 updates posted no events")
	}
	clk.Advance(time.Second)
	if got, want := rate(), float64(n); got != want {
		t.Errorf("rate after %d events in 1s = %v, want %v", n, got, want)
	}
	// Another second with nothing new: averaged over the 2 s window.
	clk.Advance(time.Second)
	if got, want := rate(), float64(n)/2; got != want {
		t.Errorf("rate after a quiet second = %v, want %v", got, want)
	}
	// Quiet for longer than the window: the burst falls out of it.
	clk.Advance(RateWindow + time.Second)
	rate() // baseline: the newest sample before the gap
	clk.Advance(time.Second)
	if got := rate(); got != 0 {
		t.Errorf("rate after a quiet window = %v, want 0", got)
	}
	// A long gap between polls averages over the gap.
	m := write(4)
	clk.Advance(4 * RateWindow)
	if got, want := rate(), float64(m)/(4*RateWindow).Seconds(); got != float64(int(want*100+0.5))/100 {
		t.Errorf("rate over a %v gap = %v, want %v", 4*RateWindow, got, want)
	}
}

func TestTokens(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	h := New(Config{Engine: f.eng, Logger: quietLogger()})
	verifier := &token.Verifier{Keys: f.eng.APIKey, RequireSync: true}

	other, err := f.eng.CreateService(ctx, f.creds.AccountSID, engine.ServiceParams{})
	if err != nil {
		t.Fatalf("CreateService() = %v", err)
	}
	// A second account with its own service: not reachable with f.creds.
	foreign := engine.Credentials{
		AccountSID: chorus.NewSID(chorus.PrefixAccount), AuthToken: "t0ken",
		APIKeySID: chorus.NewSID(chorus.PrefixAPIKey), APISecret: "s3cret",
		ServiceSID: chorus.NewSID(chorus.PrefixService),
	}
	if _, _, err := f.eng.Bootstrap(ctx, foreign); err != nil {
		t.Fatalf("Bootstrap(foreign) = %v", err)
	}

	tests := []struct {
		name         string
		user, pass   string
		form         url.Values
		wantStatus   int
		wantCode     float64
		wantIdentity string
		wantService  string
		wantTTL      time.Duration
		wantKey      string
	}{
		{"defaults with api key", f.creds.APIKeySID, f.creds.APISecret, url.Values{},
			http.StatusCreated, 0, "console", f.creds.ServiceSID, time.Hour, f.creds.APIKeySID},
		{"defaults with auth token", f.creds.AccountSID, f.creds.AuthToken, url.Values{},
			http.StatusCreated, 0, "console", f.creds.ServiceSID, time.Hour, f.creds.APIKeySID},
		{"identity, service and ttl", f.creds.AccountSID, f.creds.AuthToken,
			url.Values{"Identity": {"ops@example.com"}, "ServiceSid": {other.SID}, "Ttl": {"190"}},
			http.StatusCreated, 0, "ops@example.com", other.SID, 190 * time.Second, f.creds.APIKeySID},
		{"unknown service", f.creds.APIKeySID, f.creds.APISecret,
			url.Values{"ServiceSid": {chorus.NewSID(chorus.PrefixService)}},
			http.StatusNotFound, 54050, "", "", 0, ""},
		{"another account's service", f.creds.APIKeySID, f.creds.APISecret,
			url.Values{"ServiceSid": {foreign.ServiceSID}},
			http.StatusForbidden, 54056, "", "", 0, ""},
		{"reserved identity", f.creds.APIKeySID, f.creds.APISecret, url.Values{"Identity": {"system"}},
			http.StatusForbidden, 54007, "", "", 0, ""},
		{"reserved identity in another case", f.creds.AccountSID, f.creds.AuthToken, url.Values{"Identity": {"SYSTEM"}},
			http.StatusForbidden, 54007, "", "", 0, ""},
		{"ttl zero", f.creds.APIKeySID, f.creds.APISecret, url.Values{"Ttl": {"0"}},
			http.StatusBadRequest, 54060, "", "", 0, ""},
		{"ttl over 24h", f.creds.APIKeySID, f.creds.APISecret, url.Values{"Ttl": {"86401"}},
			http.StatusBadRequest, 54060, "", "", 0, ""},
		{"ttl not a number", f.creds.APIKeySID, f.creds.APISecret, url.Values{"Ttl": {"1h"}},
			http.StatusBadRequest, 54060, "", "", 0, ""},
		{"identity too long", f.creds.APIKeySID, f.creds.APISecret, url.Values{"Identity": {strings.Repeat("x", 257)}},
			http.StatusBadRequest, 54351, "", "", 0, ""},
		// Refused, not minted for the default identity with a 201.
		{"identity in lower case", f.creds.APIKeySID, f.creds.APISecret, url.Values{"identity": {"alice"}},
			http.StatusBadRequest, 54060, "", "", 0, ""},
		{"unknown parameter", f.creds.APIKeySID, f.creds.APISecret, url.Values{"Identity": {"alice"}, "TTL": {"60"}},
			http.StatusBadRequest, 54060, "", "", 0, ""},
		// Refused, not minted for the first of them.
		{"parameter twice", f.creds.APIKeySID, f.creds.APISecret, url.Values{"Identity": {"a", "b"}, "Ttl": {"60", "70"}},
			http.StatusBadRequest, 54060, "", "", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := do(t, h, http.MethodPost, "/admin/v1/Tokens", tt.user, tt.pass, tt.form)
			if res.status != tt.wantStatus {
				t.Fatalf("POST Tokens status = %d, want %d (%v)", res.status, tt.wantStatus, res.body)
			}
			if tt.wantCode != 0 {
				if res.body["code"] != tt.wantCode {
					t.Errorf("POST Tokens code = %v, want %v", res.body["code"], tt.wantCode)
				}
				if _, ok := res.body["token"]; ok {
					t.Errorf("error body carries a token: %v", res.body)
				}
				return
			}
			raw, _ := res.body["token"].(string)
			if res.body["identity"] != tt.wantIdentity {
				t.Errorf("identity = %v, want %q", res.body["identity"], tt.wantIdentity)
			}
			c, err := verifier.Verify(ctx, raw)
			if err != nil {
				t.Fatalf("Verify(minted token) = %v", err)
			}
			if c.Identity != tt.wantIdentity || c.Subject != f.creds.AccountSID || c.Issuer != tt.wantKey ||
				c.Sync == nil || c.Sync.ServiceSID != tt.wantService {
				t.Errorf("claims = identity %q sub %q iss %q sync %+v, want %q %q %q service %q",
					c.Identity, c.Subject, c.Issuer, c.Sync, tt.wantIdentity, f.creds.AccountSID, tt.wantKey, tt.wantService)
			}
			if got := c.Expires.Sub(c.IssuedAt); got != tt.wantTTL {
				t.Errorf("exp - iat = %v, want %v", got, tt.wantTTL)
			}
		})
	}

	t.Run("foreign account signs with its own key", func(t *testing.T) {
		res := do(t, h, http.MethodPost, "/admin/v1/Tokens", foreign.AccountSID, foreign.AuthToken, url.Values{})
		if res.status != http.StatusCreated {
			t.Fatalf("POST Tokens status = %d, want 201 (%v)", res.status, res.body)
		}
		c, err := verifier.Verify(ctx, res.body["token"].(string))
		if err != nil {
			t.Fatalf("Verify() = %v", err)
		}
		if c.Issuer != foreign.APIKeySID || c.Subject != foreign.AccountSID || c.Sync.ServiceSID != foreign.ServiceSID {
			t.Errorf("claims iss %q sub %q service %q, want %q %q %q",
				c.Issuer, c.Subject, c.Sync.ServiceSID, foreign.APIKeySID, foreign.AccountSID, foreign.ServiceSID)
		}
	})
}

func TestUnknownRoute(t *testing.T) {
	f := newFixture(t)
	h := New(Config{Engine: f.eng, Logger: quietLogger()})
	res := do(t, h, http.MethodGet, "/admin/v1/Nope", f.creds.APIKeySID, f.creds.APISecret, nil)
	if res.status != http.StatusNotFound || res.body["code"] != float64(20404) {
		t.Errorf("GET /admin/v1/Nope = %d %v, want 404 code 20404", res.status, res.body)
	}
	res = do(t, h, http.MethodGet, "/admin/v1/Nope", "", "", nil)
	if res.status != http.StatusUnauthorized {
		t.Errorf("GET /admin/v1/Nope without credentials = %d, want 401", res.status)
	}
}

// TestTokenBodies: POST /admin/v1/Tokens reads multipart as well as
// urlencoded parameters, and refuses (415) a JSON or text body, or an
// encoded one, rather than minting a default token for "console" that
// ignores the Identity and Ttl it was sent.
func TestTokenBodies(t *testing.T) {
	f := newFixture(t)
	h := New(Config{Engine: f.eng, Logger: quietLogger()})
	post := func(ct, enc, body string) response {
		t.Helper()
		req := httptest.NewRequest("POST", "/admin/v1/Tokens", strings.NewReader(body))
		req.Header.Set("Content-Type", ct)
		if enc != "" {
			req.Header.Set("Content-Encoding", enc)
		}
		req.SetBasicAuth(f.creds.AccountSID, f.creds.AuthToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		res := response{status: rec.Code, header: rec.Header()}
		if err := json.Unmarshal(rec.Body.Bytes(), &res.body); err != nil {
			t.Fatalf("body %q: %v", rec.Body.String(), err)
		}
		return res
	}
	mp := "--b\r\nContent-Disposition: form-data; name=\"Identity\"\r\n\r\nbob\r\n--b\r\nContent-Disposition: form-data; name=\"Ttl\"\r\n\r\n60\r\n--b--\r\n"
	if res := post("multipart/form-data; boundary=b", "", mp); res.status != http.StatusCreated || res.body["identity"] != "bob" || res.body["ttl"] != float64(60) {
		t.Errorf("multipart = %d %v, want 201 for bob, ttl 60", res.status, res.body)
	}
	for _, tc := range []struct{ ct, enc, body string }{
		{"application/json", "", `{"Identity":"bob","Ttl":60}`},
		{"text/plain", "", "Identity=bob&Ttl=60"},
		{"application/x-www-form-urlencoded", "br", "Identity=bob&Ttl=60"},
	} {
		if res := post(tc.ct, tc.enc, tc.body); res.status != http.StatusUnsupportedMediaType || res.body["code"] != float64(20415) {
			t.Errorf("%s (encoding %q) = %d %v, want 415 20415", tc.ct, tc.enc, res.status, res.body)
		}
	}
}

// TestReadsTakeNoParameters: the console's reads of the account, stats and
// webhooks take no parameters; one sent, in the query or in a body, is
// refused (54060) rather than ignored.
func TestReadsTakeNoParameters(t *testing.T) {
	f := newHookFixture(t)
	h := New(Config{Engine: f.eng, Webhooks: f.d, Gateway: fakeGateway{}, Logger: quietLogger()})
	user, pass := f.creds.AccountSID, f.creds.AuthToken
	for _, path := range []string{"/admin/v1/Account", "/admin/v1/Stats", "/admin/v1/Webhooks", "/admin/v1/Webhooks/" + f.svc.SID + "/Abandoned"} {
		if res := do(t, h, http.MethodGet, path, user, pass, nil); res.status != http.StatusOK {
			t.Errorf("GET %s = %d %v, want 200", path, res.status, res.body)
		}
		if res := do(t, h, http.MethodGet, path+"?Bogus=1", user, pass, nil); res.status != http.StatusBadRequest || res.body["code"] != float64(54060) {
			t.Errorf("GET %s?Bogus=1 = %d %v, want 400 54060", path, res.status, res.body)
		}
		if res := do(t, h, http.MethodGet, path, user, pass, url.Values{"Bogus": {"1"}}); res.status != http.StatusBadRequest || res.body["code"] != float64(54060) {
			t.Errorf("GET %s with Bogus=1 in its body = %d %v, want 400 54060", path, res.status, res.body)
		}
	}
}

// TestTokensWithAuthTokenSignedByMainKey: with the auth token, tokens are
// signed by the account's oldest main key, not by an older standard key
// (after the operator's key was rotated, the oldest key is often a
// backend's): the holder of a standard key must not get tokens marked
// with the auth token under its own key's secret, with which it could
// test guesses of the auth token offline (a reviewer's finding).
func TestTokensWithAuthTokenSignedByMainKey(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	acct := engine.Credential{AccountSID: f.creds.AccountSID, SID: f.creds.AccountSID, Main: true}
	std, err := f.eng.CreateAPIKey(ctx, acct, "backend")
	if err != nil {
		t.Fatal(err)
	}
	rotated := f.creds
	rotated.APIKeySID, rotated.APISecret = chorus.NewSID(chorus.PrefixAPIKey), chorus.NewSecret(32)
	if _, _, err := f.eng.Bootstrap(ctx, rotated); err != nil { // the operator's key rotated: std is now the oldest
		t.Fatal(err)
	}
	if _, err := f.eng.RevokeOthers(ctx, rotated); err != nil { // as serve does at start: the old main key goes
		t.Fatal(err)
	}
	h := New(Config{Engine: f.eng, Logger: quietLogger()})
	res := do(t, h, http.MethodPost, "/admin/v1/Tokens", f.creds.AccountSID, f.creds.AuthToken, url.Values{})
	if res.status != http.StatusCreated {
		t.Fatalf("POST Tokens = %d %v", res.status, res.body)
	}
	c, err := (&token.Verifier{Keys: f.eng.APIKey, RequireSync: true}).Verify(ctx, res.body["token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if c.Issuer != rotated.APIKeySID || c.Issuer == std.SID {
		t.Errorf("token signed by %s, want the main key %s (not the older standard key %s)", c.Issuer, rotated.APIKeySID, std.SID)
	}
	if engine.AuthTokenMark(c.ID, c.Issuer, c.IssuedAt) == "" {
		t.Errorf("jti %q carries no auth token mark", c.ID)
	}
}
