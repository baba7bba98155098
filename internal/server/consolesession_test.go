package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chorus-sync/chorus/internal/engine"
)

// TestConsoleSessionCannotMintCredentials: on a real server, a console
// session (what a captured console tab holds) still drives the console's
// APIs, but cannot create keys or auth tokens, whose lifetime would
// outlive the session's 12 hours (403, 20003, "use HTTP Basic"); the
// access tokens it mints through /admin/v1/Tokens end with the session.
// Basic credentials keep doing both.
func TestConsoleSessionCannotMintCredentials(t *testing.T) {
	s := newServer(t, Config{})
	c := s.Credentials()
	base := "http://" + run(t, s)
	do := func(method, path, auth string, form url.Values) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", auth)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer res.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(res.Body).Decode(&body)
		return res.StatusCode, body
	}
	basicReq, _ := http.NewRequest("GET", base, nil)
	basicReq.SetBasicAuth(c.AccountSID, c.AuthToken)
	basic := basicReq.Header.Get("Authorization")

	code, sess := do("POST", "/admin/v1/Session", basic, nil)
	tok, _ := sess["token"].(string)
	if code != 201 || !strings.HasPrefix(tok, "chorus-session.") {
		t.Fatalf("POST /admin/v1/Session = %d %v", code, sess)
	}
	bearer := "Bearer " + tok

	// The console's own calls work with the session.
	if code, body := do("GET", "/v1/Services", bearer, nil); code != 200 {
		t.Errorf("GET /v1/Services with the session = %d %v", code, body)
	}
	// Credentials do not.
	acct := "/2010-04-01/Accounts/" + c.AccountSID
	for _, p := range []struct{ method, path string }{
		{"POST", acct + "/Keys.json"},
		{"GET", acct + "/Keys.json"},
		{"DELETE", acct + "/Keys/" + c.APIKeySID + ".json"},
		{"POST", "/v1/AuthTokens/Secondary"},
		{"POST", acct + "/AuthTokens/Secondary.json"},
		{"POST", "/v1/AuthTokens/Promote"},
		{"DELETE", "/v1/AuthTokens/Secondary"},
	} {
		code, body := do(p.method, p.path, bearer, url.Values{"FriendlyName": {"persist"}})
		msg, _ := body["message"].(string)
		if code != 403 || body["code"] != float64(20003) || body["status"] != float64(403) || body["more_info"] == nil ||
			!strings.Contains(msg, "HTTP Basic") || body["secret"] != nil || body["secondary_auth_token"] != nil {
			t.Errorf("%s %s with a console session = %d %v, want 403 20003 naming HTTP Basic", p.method, p.path, code, body)
		}
	}
	if code, body := do("POST", acct+"/Keys.json", basic, url.Values{"FriendlyName": {"backend"}}); code != 201 || body["secret"] == nil {
		t.Errorf("POST Keys.json with Basic = %d %v", code, body)
	}
	if code, body := do("DELETE", "/v1/AuthTokens/Secondary", basic, nil); code != 404 {
		t.Errorf("DELETE Secondary with Basic = %d %v, want 404: the session created one", code, body)
	}

	// Access tokens: a session gets at most what is left of its 12 hours.
	day := url.Values{"Ttl": {"86400"}}
	maxAge := engine.ConsoleSessionMaxAge.Seconds()
	if code, body := do("POST", "/admin/v1/Tokens", bearer, day); code != 201 ||
		body["ttl"].(float64) > maxAge || body["ttl"].(float64) < maxAge-60 {
		t.Errorf("POST /admin/v1/Tokens Ttl=86400 with the session = %d %v, want ttl just under %v", code, body, maxAge)
	}
	if code, body := do("POST", "/admin/v1/Tokens", basic, day); code != 201 || body["ttl"] != float64(86400) {
		t.Errorf("POST /admin/v1/Tokens Ttl=86400 with Basic = %d %v, want ttl 86400", code, body)
	}
}
