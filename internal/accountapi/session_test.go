package accountapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestConsoleSessionRefused: a console session (12 hours at most) cannot
// manage credentials that would outlive it: every endpoint answers a
// Bearer with 403 (20003) and a Twilio error body that says to use Basic,
// and changes nothing; the same requests with Basic still work.
func TestConsoleSessionRefused(t *testing.T) {
	ctx := context.Background()
	eng, cr, log := newEngine(t)
	rev := &revoker{}
	h := New(Config{Engine: eng, Revoker: rev, Logger: log})

	// Sessions signed in with the auth token and with the main key: both
	// credentials may manage keys with Basic.
	var sessions []string
	for _, c := range [][2]string{{cr.AccountSID, cr.AuthToken}, {cr.APIKeySID, cr.APISecret}} {
		tok, _, _, err := eng.NewConsoleSession(ctx, c[0], c[1])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eng.AuthenticateHeader(ctx, "Bearer "+tok); err != nil {
			t.Fatalf("the session does not authenticate: %v", err)
		}
		sessions = append(sessions, tok)
	}

	base := "/2010-04-01/Accounts/" + cr.AccountSID
	code, key := send(t, h, "POST", base+"/Keys.json", cr.AccountSID, cr.AuthToken, url.Values{"FriendlyName": {"victim"}})
	if code != 201 {
		t.Fatalf("create with Basic = %d %v", code, key)
	}
	victim := base + "/Keys/" + key["sid"].(string) + ".json"
	requests := []struct{ method, path string }{
		{"POST", base + "/Keys.json"},
		{"GET", base + "/Keys.json"},
		{"GET", victim},
		{"POST", victim},
		{"DELETE", victim},
		{"POST", "/v1/AuthTokens/Secondary"},
		{"DELETE", "/v1/AuthTokens/Secondary"},
		{"POST", "/v1/AuthTokens/Promote"},
		{"POST", base + "/AuthTokens/Secondary.json"},
		{"DELETE", base + "/AuthTokens/Secondary.json"},
		{"POST", base + "/AuthTokens/Promote.json"},
	}
	for _, tok := range append(sessions, "chorus-session.not-even-valid", "eyJhbGciOiJIUzI1NiJ9.e30.x") {
		for _, rq := range requests {
			req := httptest.NewRequest(rq.method, rq.path, strings.NewReader(url.Values{"FriendlyName": {"evil"}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", "Bearer "+tok)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var body map[string]any
			_ = json.Unmarshal(rec.Body.Bytes(), &body) // checked below: a 204 has none
			msg, _ := body["message"].(string)
			if rec.Code != http.StatusForbidden || body["code"] != float64(20003) || body["status"] != float64(403) ||
				body["more_info"] != "https://www.twilio.com/docs/errors/20003" || !strings.Contains(msg, "HTTP Basic") ||
				body["secret"] != nil || body["secondary_auth_token"] != nil || body["auth_token"] != nil {
				t.Errorf("%s %s with a Bearer = %d %v, want 403 20003 naming Basic", rq.method, rq.path, rec.Code, body)
			}
		}
	}

	// Nothing changed: one key besides the main one, still named "victim",
	// no secondary auth token, the auth token still the primary.
	code, page := send(t, h, "GET", base+"/Keys.json", cr.AccountSID, cr.AuthToken, nil)
	if keys, _ := page["keys"].([]any); code != 200 || len(keys) != 2 {
		t.Errorf("keys after the refused requests = %d %v, want the main key and victim", code, page)
	}
	if code, k := send(t, h, "GET", victim, cr.AccountSID, cr.AuthToken, nil); code != 200 || k["friendly_name"] != "victim" {
		t.Errorf("victim after the refused requests = %d %v", code, k)
	}
	if code, _ := send(t, h, "DELETE", "/v1/AuthTokens/Secondary", cr.AccountSID, cr.AuthToken, nil); code != 404 {
		t.Errorf("DELETE Secondary with Basic = %d, want 404: a refused request created one", code)
	}
	if len(rev.calls) != 0 {
		t.Errorf("RevokeKeys calls = %v, want none", rev.calls)
	}

	// Basic still manages credentials.
	if code, sec := send(t, h, "POST", "/v1/AuthTokens/Secondary", cr.APIKeySID, cr.APISecret, nil); code != 201 || sec["secondary_auth_token"] == nil {
		t.Errorf("create secondary with Basic = %d %v", code, sec)
	}
	if code, _ := send(t, h, "DELETE", victim, cr.APIKeySID, cr.APISecret, nil); code != 204 {
		t.Errorf("delete with Basic = %d", code)
	}
}
