package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/protocol"
	"github.com/chorus-sync/chorus/token"
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
	do := formCaller(t, base)
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

// TestConsoleTokensEndWithTheAuthToken: access tokens minted through
// /admin/v1/Tokens with the auth token (by a console session opened with
// it, or with Basic auth) are signed by the account's main API key, yet
// rotating the auth token ends them as it ends the session: a live
// websocket session is closed, a new init and a plain-HTTP CDS request are
// refused. They survived the rotation (reviewers' findings: a copied
// session, or a leaked auth token, minted 12- and 24-hour tokens that
// outlived the remedy the README gives). Tokens minted with an API key
// (Basic or a session opened with it) are not touched, nor is a backend's
// token whose jti merely looks like a mark.
func TestConsoleTokensEndWithTheAuthToken(t *testing.T) {
	s := newServer(t, Config{})
	c := s.Credentials()
	addr := run(t, s)
	base := "http://" + addr
	do := formCaller(t, base)
	basicOf := func(user, pass string) string {
		r, _ := http.NewRequest("GET", base, nil)
		r.SetBasicAuth(user, pass)
		return r.Header.Get("Authorization")
	}
	mint := func(auth string) string {
		t.Helper()
		if strings.HasPrefix(auth, "Basic") {
			_, sess := do("POST", "/admin/v1/Session", auth, nil)
			auth = "Bearer " + sess["token"].(string)
		}
		code, body := do("POST", "/admin/v1/Tokens", auth, url.Values{"Identity": {"mallory"}, "Ttl": {"43200"}})
		if code != 201 {
			t.Fatalf("POST /admin/v1/Tokens = %d %v", code, body)
		}
		return body["token"].(string)
	}
	if code, body := do("POST", "/v1/Services/"+c.ServiceSID+"/Documents", basicOf(c.AccountSID, c.AuthToken), url.Values{"UniqueName": {"d1"}}); code != 201 {
		t.Fatalf("create d1 = %d %v", code, body)
	}
	byAuthToken := mint(basicOf(c.AccountSID, c.AuthToken))
	byKey := mint(basicOf(c.APIKeySID, c.APISecret))
	_, basicMinted := do("POST", "/admin/v1/Tokens", basicOf(c.AccountSID, c.AuthToken), url.Values{"Identity": {"bob"}, "Ttl": {"86400"}})
	_, basicKeyMinted := do("POST", "/admin/v1/Tokens", basicOf(c.APIKeySID, c.APISecret), url.Values{"Identity": {"carol"}})
	backend, err := token.Mint(token.Params{AccountSID: c.AccountSID, APIKeySID: c.APIKeySID, APISecret: c.APISecret,
		Identity: "dave", ServiceSID: c.ServiceSID, IDSuffix: "-web-console-0123456789abcdef"}) // not the form minted: iss-iat-console-…
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	initWS := func(tok string) (*websocket.Conn, string) {
		t.Helper()
		ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/v3/wsconnect", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.CloseNow() })
		h, _ := protocol.HeaderOf(map[string]any{"method": "init", "id": "TMinit", "token": tok,
			"metadata": map[string]any{"ver": "1.0.2"}, "capabilities": []string{"client_update"}})
		if err := ws.Write(ctx, websocket.MessageBinary, protocol.Encode(nil, h, nil)); err != nil {
			t.Fatal(err)
		}
		_, reply, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ws, string(reply)
	}
	cds := func(tok string) int {
		req, _ := http.NewRequest("GET", base+"/v3/Documents/d1", nil)
		req.Header.Set("X-Twilio-Token", tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	live, reply := initWS(byAuthToken)
	if !strings.Contains(reply, `"code":200`) {
		t.Fatalf("init with the session's token before the rotation: %s", reply)
	}
	if code := cds(byAuthToken); code != 200 {
		t.Fatalf("plain-HTTP CDS with the session's token before the rotation = %d", code)
	}

	// Rotate the auth token, as the README says to end every session.
	code, sec := do("POST", "/v1/AuthTokens/Secondary", basicOf(c.AccountSID, c.AuthToken), nil)
	if code != 201 {
		t.Fatalf("POST Secondary = %d %v", code, sec)
	}
	if code, body := do("POST", "/v1/AuthTokens/Promote", basicOf(c.AccountSID, c.AuthToken), nil); code != 200 {
		t.Fatalf("POST Promote = %d %v", code, body)
	}

	// The live session is closed with the close of a revoked token.
	closed := false
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	for !closed {
		_, msg, err := live.Read(rctx)
		if err != nil {
			closed = rctx.Err() == nil // the server closed it, not our wait
			break
		}
		closed = strings.Contains(string(msg), `"method":"close"`)
	}
	if !closed {
		t.Error("the live session with the session's token stayed open after the rotation")
	}
	for name, tok := range map[string]string{"the session": byAuthToken, "Basic auth with the auth token": basicMinted["token"].(string)} {
		if _, reply := initWS(tok); !strings.Contains(reply, `"code":401`) || !strings.Contains(reply, "auth token that was rotated") {
			t.Errorf("init with a token minted by %s after the rotation: %s, want 401 naming the rotation", name, reply)
		}
		if code := cds(tok); code != 401 {
			t.Errorf("plain-HTTP CDS with a token minted by %s after the rotation = %d, want 401", name, code)
		}
	}
	// The others are the API key's, which the rotation left.
	for name, tok := range map[string]string{"a session opened with the API key": byKey, "Basic auth with the API key": basicKeyMinted["token"].(string),
		"a backend, its jti ending like a mark": backend} {
		if _, reply := initWS(tok); !strings.Contains(reply, `"code":200`) {
			t.Errorf("init with a token minted by %s after the rotation: %s, want 200", name, reply)
		}
	}
}

// formCaller returns a function that sends a form to base+path with the
// Authorization header auth and returns the status and the JSON body.
func formCaller(t *testing.T, base string) func(method, path, auth string, form url.Values) (int, map[string]any) {
	return func(method, path, auth string, form url.Values) (int, map[string]any) {
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
}
