package admin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/token"
)

// TestTokensSessionTTLCap: an access token minted with a console session
// (POST /admin/v1/Tokens with Authorization: Bearer chorus-session.…) never
// outlives the session, which ends engine.ConsoleSessionMaxAge after its
// sign-in whatever its renewals; Basic callers keep the TTL they ask for.
// The engine and the handler share one fake clock, so the test walks a
// real session, renewal by renewal, to 10 minutes before its end.
func TestTokensSessionTTLCap(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "chorus.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	bus := mem.New()
	t.Cleanup(func() { _ = bus.Close(); _ = st.Close() })
	clk := &fakeClock{t: time.Now().Truncate(time.Second)}
	eng := engine.New(engine.Config{Store: st, Bus: bus, Logger: quietLogger(), Now: clk.Now})
	creds, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	h := newHandler(Config{Engine: eng, Logger: quietLogger()}, clk.Now)
	verifier := &token.Verifier{Keys: eng.APIKey, RequireSync: true, Now: clk.Now}

	mint := func(auth string, form url.Values) response {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "/admin/v1/Tokens", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", auth)
		return serve(t, h, req)
	}
	// lifetime checks a minted token's answer and its claims.
	lifetime := func(what string, res response, want time.Duration) {
		t.Helper()
		if res.status != http.StatusCreated {
			t.Fatalf("%s: POST Tokens = %d %v", what, res.status, res.body)
		}
		if res.body["ttl"] != want.Seconds() {
			t.Errorf("%s: ttl = %v, want %v", what, res.body["ttl"], want.Seconds())
		}
		c, err := verifier.Verify(ctx, res.body["token"].(string))
		if err != nil {
			t.Fatalf("%s: Verify = %v", what, err)
		}
		if got := c.Expires.Sub(c.IssuedAt); got != want {
			t.Errorf("%s: exp - iat = %v, want %v", what, got, want)
		}
	}
	basicReq := httptest.NewRequest(http.MethodGet, "/", nil)
	basicReq.SetBasicAuth(creds.APIKeySID, creds.APISecret)
	basicAuth := basicReq.Header.Get("Authorization")
	day := url.Values{"Ttl": {"86400"}}

	signIn := httptest.NewRequest(http.MethodPost, "/admin/v1/Session", nil)
	signIn.SetBasicAuth(creds.APIKeySID, creds.APISecret)
	res := serve(t, h, signIn)
	tok, _ := res.body["token"].(string)
	if res.status != http.StatusCreated || tok == "" {
		t.Fatalf("POST Session = %d %v", res.status, res.body)
	}
	signedIn := clk.Now()

	// Early in the session: the 1 h default fits; 24 h does not, and is cut
	// to the 12 h the session has left. Basic gets its 24 h.
	lifetime("session, default TTL", mint("Bearer "+tok, url.Values{}), DefaultTokenTTL)
	lifetime("session, 24 h", mint("Bearer "+tok, day), engine.ConsoleSessionMaxAge)
	lifetime("Basic, 24 h", mint(basicAuth, day), 24*time.Hour)

	// Renew the session as the console does until 10 minutes are left.
	end := signedIn.Add(engine.ConsoleSessionMaxAge)
	for clk.Now().Before(end.Add(-10 * time.Minute)) {
		clk.Advance(10 * time.Minute)
		renew := httptest.NewRequest(http.MethodPost, "/admin/v1/Session", nil)
		renew.Header.Set("Authorization", "Bearer "+tok)
		res := serve(t, h, renew)
		if res.status != http.StatusCreated {
			t.Fatalf("renewing at %v = %d %v", clk.Now().Sub(signedIn), res.status, res.body)
		}
		tok = res.body["token"].(string)
	}
	lifetime("session with 10 minutes left, default TTL", mint("Bearer "+tok, url.Values{}), 10*time.Minute)
	lifetime("session with 10 minutes left, 24 h", mint("Bearer "+tok, day), 10*time.Minute)
	lifetime("session with 10 minutes left, 60 s", mint("Bearer "+tok, url.Values{"Ttl": {"60"}}), time.Minute)
	lifetime("Basic at the same time, 24 h", mint(basicAuth, day), 24*time.Hour)

	// The Ttl error says a session caps it.
	if res := mint("Bearer "+tok, url.Values{"Ttl": {"86401"}}); res.status != http.StatusBadRequest ||
		!strings.Contains(res.body["message"].(string), "console session") {
		t.Errorf("Ttl over 24 h with a session = %d %v", res.status, res.body)
	}
	// At the end the session is refused, and mints nothing.
	clk.Advance(10 * time.Minute)
	if res := mint("Bearer "+tok, url.Values{}); res.status != http.StatusUnauthorized || res.body["token"] != nil {
		t.Errorf("POST Tokens with a session at its end = %d %v, want 401", res.status, res.body)
	}
}
