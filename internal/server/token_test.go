package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/token"
)

func TestRandomIdentity(t *testing.T) {
	re := regexp.MustCompile(`^[A-Z][a-z]+[A-Z][a-z]+-[0-9a-z]{20}$`)
	seen := map[string]bool{}
	for range 1000 {
		// ?identity= is not honoured.
		id, err := RandomIdentity{}.Identity(tokenRequest("GET", "/token?identity=alice", nil))
		if err != nil || !re.MatchString(id) {
			t.Fatalf("RandomIdentity() = %q, %v, want AdjectiveAnimal-<20 base32 digits>", id, err)
		}
		if seen[id] {
			t.Fatalf("RandomIdentity() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:3000": true, "127.1.2.3:0": true, "[::1]:3000": true, "localhost:3000": true, "LOCALHOST:1": true,
		":3000": false, "0.0.0.0:3000": false, "[::]:3000": false, "192.168.1.2:3000": false, "example.com:80": false,
		"": false, "127.0.0.1": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// operatorCreds are credentials as an operator sets them with TWILIO_*.
func operatorCreds() engine.Credentials {
	return engine.Credentials{
		AccountSID: chorus.NewSID(chorus.PrefixAccount), AuthToken: chorus.NewSecret(32),
		APIKeySID: chorus.NewSID(chorus.PrefixAPIKey), APISecret: chorus.NewSecret(32),
		ServiceSID: chorus.NewSID(chorus.PrefixService),
	}
}

func TestDevTokensDefaults(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want bool
	}{
		{"generated credentials on loopback", Config{Listen: "127.0.0.1:3000"}, true},
		{"generated credentials on every interface", Config{Listen: ":3000"}, false},
		{"operator credentials on loopback", Config{Listen: "127.0.0.1:3000", Creds: operatorCreds()}, false},
		{"switched on with operator credentials", Config{Listen: ":3000", Creds: operatorCreds(), DevTokens: DevTokensOn}, true},
		{"switched off on loopback", Config{Listen: "127.0.0.1:3000", DevTokens: DevTokensOff}, false},
		// Behind a reverse proxy a loopback listener serves the internet.
		{"loopback behind a public URL", Config{Listen: "127.0.0.1:3000", PublicURL: "https://sync.example.com"}, false},
		{"loopback with trusted proxies", Config{Listen: "127.0.0.1:3000",
			Transport: Transport{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.cfg)
			if s.DevTokensOn() != tt.want {
				t.Fatalf("DevTokensOn() = %v, want %v", s.DevTokensOn(), tt.want)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, tokenRequest("GET", "/token", nil))
			if tt.want {
				if rec.Code != 200 {
					t.Fatalf("GET /token = %d %s, want 200", rec.Code, rec.Body)
				}
				return
			}
			var body struct {
				Code    int
				Message string
				Status  int
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("GET /token body %q: %v", rec.Body, err)
			}
			if rec.Code != 404 || body.Code != 20404 || body.Status != 404 || !strings.Contains(body.Message, "--dev-tokens") {
				t.Errorf("GET /token while off = %d %+v, want 404 20404 naming --dev-tokens", rec.Code, body)
			}
		})
	}
}

// getToken calls /token and decodes a 200 answer; it returns the status
// and Twilio error code otherwise.
func getToken(t *testing.T, s *Server, r *http.Request) (tokenResponse, int, int) {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, r)
	var tr tokenResponse
	if rec.Code != 200 {
		var e struct{ Code int }
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		return tr, rec.Code, e.Code
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil {
		t.Fatalf("/token body %q: %v", rec.Body, err)
	}
	return tr, 200, 0
}

func bearer(method, tok string) *http.Request {
	r := tokenRequest(method, "/token", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return r
}

// tokenRequest is a request to /token as a browser on this machine sends
// it: Host localhost, no proxy headers.
func tokenRequest(method, target string, body io.Reader) *http.Request {
	r := httptest.NewRequest(method, target, body)
	r.Host = "localhost:3000"
	r.RemoteAddr = "127.0.0.1:40000"
	return r
}

// postForm is a POST /token with form as its urlencoded body.
func postForm(form url.Values) *http.Request {
	r := tokenRequest("POST", "/token", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

func TestTokenRenewal(t *testing.T) {
	s := newServer(t, Config{Listen: "127.0.0.1:0", TokenTTL: time.Hour})
	ctx := context.Background()
	first, code, _ := getToken(t, s, tokenRequest("GET", "/token", nil))
	if code != 200 {
		t.Fatalf("GET /token = %d", code)
	}

	// Presenting the token keeps the identity: Bearer on GET and POST, or
	// the form field of a POST.
	form := tokenRequest("POST", "/token", strings.NewReader(url.Values{"token": {first.Token}}.Encode()))
	form.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for name, r := range map[string]*http.Request{
		"GET Bearer": bearer("GET", first.Token), "POST Bearer": bearer("POST", first.Token), "POST form": form,
	} {
		got, code, ecode := getToken(t, s, r)
		if code != 200 || got.Identity != first.Identity {
			t.Fatalf("%s: /token = %d %d %q, want 200 and %q", name, code, ecode, got.Identity, first.Identity)
		}
		if c, err := s.Verifier().Verify(ctx, got.Token); err != nil || c.Identity != first.Identity {
			t.Fatalf("%s: renewed token: %v %+v", name, err, c)
		}
	}

	creds := s.Credentials()
	mint := func(p token.Params) string {
		t.Helper()
		tok, err := token.Mint(p)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	base := token.Params{AccountSID: creds.AccountSID, APIKeySID: creds.APIKeySID, APISecret: creds.APISecret,
		Identity: "alice", ServiceSID: creds.ServiceSID, TTL: time.Minute}
	otherSvc := base
	otherSvc.ServiceSID = chorus.NewSID(chorus.PrefixService)
	expired := base
	expired.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	forged := base
	forged.APISecret = strings.Repeat("f", 32)
	system := base
	system.Identity = "system"

	tests := []struct {
		name       string
		r          *http.Request
		code, want int
	}{
		{"asks for an identity", tokenRequest("GET", "/token?identity=alice", nil), 400, 54060},
		{"asks for an identity with a token", func() *http.Request {
			r := bearer("GET", first.Token)
			r.URL.RawQuery = "identity=alice"
			return r
		}(), 400, 54060},
		{"expired token", bearer("POST", mint(expired)), 401, chorus.ErrTokenExpired.Code},
		{"forged token", bearer("POST", mint(forged)), 401, chorus.ErrTokenSignature.Code},
		{"garbage", bearer("POST", "x.y.z"), 401, 0},
		{"empty Bearer", func() *http.Request {
			r := tokenRequest("POST", "/token", nil)
			r.Header.Set("Authorization", "Bearer ")
			return r
		}(), 401, chorus.ErrTokenInvalid.Code},
		{"token of another service", bearer("POST", mint(otherSvc)), 401, chorus.ErrTokenGrants.Code},
		{"reserved identity", bearer("POST", mint(system)), 401, chorus.ErrTokenGrants.Code},
		{"PUT", tokenRequest("PUT", "/token", nil), 405, 0},
		// Nothing is ignored: each of these used to get a new random
		// identity, which a renewal sent so would silently lose.
		{"Identity, capitalised", postForm(url.Values{"Identity": {"alice"}}), 400, 54060},
		{"unknown parameter", tokenRequest("GET", "/token?foo=1", nil), 400, 54060},
		{"ttl", tokenRequest("GET", "/token?ttl=999999", nil), 400, 54060},
		{"token in the URL", tokenRequest("GET", "/token?token="+url.QueryEscape(first.Token), nil), 400, 54060},
		{"token twice", postForm(url.Values{"token": {first.Token, "abc"}}), 400, 54060},
		{"token as Bearer and in the form", func() *http.Request {
			r := postForm(url.Values{"token": {first.Token}})
			r.Header.Set("Authorization", "Bearer "+first.Token)
			return r
		}(), 400, 54060},
		{"JSON body", func() *http.Request {
			r := tokenRequest("POST", "/token", strings.NewReader(`{"token":"`+first.Token+`"}`))
			r.Header.Set("Content-Type", "application/json")
			return r
		}(), 415, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, code, ecode := getToken(t, s, tt.r)
			if code != tt.code || (tt.want != 0 && ecode != tt.want) {
				t.Errorf("/token = %d %d, want %d %d", code, ecode, tt.code, tt.want)
			}
		})
	}

	// Basic credentials a browser cached are not a token: a new identity.
	r := tokenRequest("GET", "/token", nil)
	r.SetBasicAuth(creds.AccountSID, creds.AuthToken)
	if got, code, _ := getToken(t, s, r); code != 200 || got.Identity == first.Identity || got.Identity == creds.AccountSID {
		t.Errorf("GET /token with Basic = %d %q, want a new random identity", code, got.Identity)
	}

	// A token of the quickstart's service with a name the endpoint never
	// hands out (chorus token --identity alice) is not renewed.
	if _, code, ecode := getToken(t, s, bearer("POST", mint(base))); code != 401 || ecode != chorus.ErrTokenGrants.Code {
		t.Errorf("renew alice's token = %d %d, want 401 20106", code, ecode)
	}
}

// TestTokenRenewalOnlyOwnTokens: /token renews only the tokens it minted.
// A token of the quickstart's service signed by a standard key (minted
// with a short TTL through /admin/v1/Tokens) is not re-signed with the
// operator key, and the key's deletion ends it.
func TestTokenRenewalOnlyOwnTokens(t *testing.T) {
	s := newServer(t, Config{Listen: "127.0.0.1:0"})
	ctx := context.Background()
	c := s.Credentials()
	first, code, _ := getToken(t, s, tokenRequest("GET", "/token", nil))
	if code != 200 {
		t.Fatalf("GET /token = %d", code)
	}
	// A standard key mints a 60 s token for the same random identity.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/2010-04-01/Accounts/"+c.AccountSID+"/Keys.json", strings.NewReader("FriendlyName=backend"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(c.AccountSID, c.AuthToken)
	s.Handler().ServeHTTP(rec, req)
	var key struct{ Sid, Secret string }
	if err := json.Unmarshal(rec.Body.Bytes(), &key); rec.Code != 201 || err != nil {
		t.Fatalf("create key = %d %s", rec.Code, rec.Body)
	}
	short, err := token.Mint(token.Params{AccountSID: c.AccountSID, APIKeySID: key.Sid, APISecret: key.Secret,
		Identity: first.Identity, ServiceSID: c.ServiceSID, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verifier().Verify(ctx, short); err != nil {
		t.Fatalf("the standard key's token does not verify: %v", err)
	}
	if got, code, ecode := getToken(t, s, bearer("POST", short)); code != 401 || ecode != chorus.ErrTokenIssuer.Code {
		t.Errorf("renew a standard key's token = %d %d %q, want 401 20103", code, ecode, got.Identity)
	}
	// The console (a session opened with the auth token) mints with the
	// operator's key, for an identity of its choosing and 60 s: /token
	// must not make it last longer than that.
	rec = httptest.NewRecorder()
	req = httptest.NewRequest("POST", "/admin/v1/Tokens", strings.NewReader(url.Values{"Identity": {first.Identity}, "Ttl": {"60"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(c.AccountSID, c.AuthToken)
	s.Handler().ServeHTTP(rec, req)
	var console struct{ Token string }
	if err := json.Unmarshal(rec.Body.Bytes(), &console); rec.Code != http.StatusCreated || err != nil || console.Token == "" {
		t.Fatalf("POST /admin/v1/Tokens = %d %s", rec.Code, rec.Body)
	}
	if cl, err := s.Verifier().Verify(ctx, console.Token); err != nil || cl.Issuer != c.APIKeySID {
		t.Fatalf("the console's token: %+v, %v; want it signed by the operator key %s", cl, err, c.APIKeySID)
	}
	if got, code, ecode := getToken(t, s, bearer("POST", console.Token)); code != 401 || ecode != chorus.ErrTokenIssuer.Code {
		t.Errorf("renew a console token = %d %d %q, want 401 20103", code, ecode, got.Identity)
	}
	// The endpoint's own token still renews, and so does the renewed one.
	got, code, _ := getToken(t, s, bearer("POST", first.Token))
	if code != 200 || got.Identity != first.Identity {
		t.Errorf("renew own token = %d %q", code, got.Identity)
	}
	if again, code, _ := getToken(t, s, bearer("POST", got.Token)); code != 200 || again.Identity != first.Identity {
		t.Errorf("renew the renewed token = %d %q", code, again.Identity)
	}
}

// TestTokenHost: /token answers only requests to a loopback Host (or, with
// DevTokensPublic, the public URL's host), and no request a proxy
// forwarded; a DNS-rebinding page (Host rebind.evil.example, Origin of the
// same name) gets nothing.
func TestTokenHost(t *testing.T) {
	req := func(host string, hdr ...string) *http.Request {
		r := tokenRequest("GET", "/token", nil)
		r.Host = host
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		return r
	}
	local := newServer(t, Config{Listen: "127.0.0.1:0"})
	pub := newServer(t, Config{DevTokens: DevTokensOn, PublicURL: "https://chorus.example.com"})
	open := newServer(t, Config{DevTokens: DevTokensOn, PublicURL: "https://chorus.example.com", DevTokensPublic: true})
	tests := []struct {
		name string
		s    *Server
		r    *http.Request
		want int
	}{
		{"localhost", local, req("localhost:3000"), 200},
		{"localhost without port", local, req("localhost"), 200},
		{"127.0.0.1", local, req("127.0.0.1:3000"), 200},
		{"127.1.2.3", local, req("127.1.2.3"), 200},
		{"::1", local, req("[::1]:3000"), 200},
		{"a .localhost name", local, req("app.localhost:3000"), 200},
		{"DNS rebinding", local, req("rebind.evil.example", "Origin", "http://rebind.evil.example", "Sec-Fetch-Site", "same-origin"), 403},
		{"LAN address", local, req("192.168.1.5:3000"), 403},
		{"remote peer claiming localhost", local, func() *http.Request {
			r := req("localhost:3000")
			r.RemoteAddr = "203.0.113.9:40000"
			return r
		}(), 403},
		{"X-Forwarded-For", local, req("localhost:3000", "X-Forwarded-For", "203.0.113.9"), 403},
		{"Forwarded", local, req("localhost:3000", "Forwarded", "for=203.0.113.9"), 403},
		{"X-Real-IP", local, req("localhost:3000", "X-Real-IP", "203.0.113.9"), 403},
		{"Via", local, req("localhost:3000", "Via", "1.1 proxy"), 403},
		// HAProxy's forwardfor adds its line after the client's.
		{"an empty X-Forwarded-For before the proxy's", local, func() *http.Request {
			r := req("localhost:3000")
			r.Header.Add("X-Forwarded-For", "")
			r.Header.Add("X-Forwarded-For", "203.0.113.9")
			return r
		}(), 403},
		{"an empty Via", local, func() *http.Request {
			r := req("localhost:3000")
			r.Header["Via"] = []string{""}
			return r
		}(), 403},
		// A default nginx proxy_pass: HTTP/1.0, Host 127.0.0.1:3000, no
		// forwarding header.
		{"HTTP/1.0 from a default nginx", local, func() *http.Request {
			r := req("127.0.0.1:3000")
			r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.0", 1, 0
			return r
		}(), 403},
		{"public host without DevTokensPublic", pub, req("chorus.example.com"), 403},
		{"loopback with a public URL", pub, req("127.0.0.1:3000"), 200},
		{"public host with DevTokensPublic", open, req("chorus.example.com", "X-Forwarded-For", "203.0.113.9"), 200},
		{"public host and port with DevTokensPublic", open, req("chorus.example.com:443"), 200},
		{"another host with DevTokensPublic", open, req("evil.example"), 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, code, ecode := getToken(t, tt.s, tt.r); code != tt.want || (code == 403 && ecode != chorus.ErrForbiddenRequest.Code) {
				t.Errorf("GET /token Host %q = %d %d, want %d", tt.r.Host, code, ecode, tt.want)
			}
		})
	}
}

func TestTokenReservedIdentitySource(t *testing.T) {
	s := newServer(t, Config{Identities: IdentityFunc(func(*http.Request) (string, error) { return "System", nil })})
	if _, code, ecode := getToken(t, s, tokenRequest("GET", "/token", nil)); code != 403 || ecode != chorus.ErrForbidden.Code {
		t.Errorf("GET /token for System = %d %d, want 403 54007", code, ecode)
	}
}
