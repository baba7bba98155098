package server

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus/internal/logtest"
)

// restAs sends GET /v1/Services from addr with Basic user:pass through the
// whole handler.
func restAs(s *Server, addr, user, pass string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", "/v1/Services", nil)
	req.RemoteAddr = addr + ":40000"
	if user != "" || pass != "" {
		req.SetBasicAuth(user, pass)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
}

func wantThrottled(t *testing.T, what string, rec *httptest.ResponseRecorder) {
	t.Helper()
	var body struct{ Code, Status int }
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	ra, err := strconv.Atoi(rec.Header().Get("Retry-After"))
	if rec.Code != 429 || body.Code != 20429 || body.Status != 429 || err != nil || ra < 1 {
		t.Fatalf("%s = %d %s Retry-After %q, want 429 20429 with Retry-After", what, rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
}

func TestLoginThrottlePerAddress(t *testing.T) {
	var logs logtest.Buffer
	s := newServer(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c := s.Credentials()
	const secret = "wrong-password-xyzzy"

	for i := range AddrBurst {
		if rec := restAs(s, "10.0.0.1", c.AccountSID, secret); rec.Code != 401 {
			t.Fatalf("failure %d = %d, want 401", i+1, rec.Code)
		}
	}
	wantThrottled(t, "one failure too many", restAs(s, "10.0.0.1", c.AccountSID, secret))
	// Even the right password: the guesser must not learn it is right.
	wantThrottled(t, "right password from the throttled address", restAs(s, "10.0.0.1", c.AccountSID, c.AuthToken))
	// Requests without credentials are not counted or throttled.
	if rec := restAs(s, "10.0.0.1", "", ""); rec.Code != 401 {
		t.Errorf("no credentials from the throttled address = %d, want 401", rec.Code)
	}
	// Other addresses are not affected, with the account or a key.
	if rec := restAs(s, "10.0.0.2", c.AccountSID, c.AuthToken); rec.Code != 200 {
		t.Errorf("other address = %d %s, want 200", rec.Code, rec.Body)
	}
	if rec := restAs(s, "10.0.0.3", c.APIKeySID, c.APISecret); rec.Code != 200 {
		t.Errorf("other address with the API key = %d, want 200", rec.Code)
	}
	// The admin API is throttled the same way.
	req := httptest.NewRequest("GET", "/admin/v1/Account", nil)
	req.RemoteAddr = "10.0.0.1:1"
	req.SetBasicAuth(c.AccountSID, c.AuthToken)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	wantThrottled(t, "admin API from the throttled address", rec)

	if !strings.Contains(logs.String(), "authentication failed") || !strings.Contains(logs.String(), "client=10.0.0.1") {
		t.Errorf("no log line for failed logins: %s", logs.String())
	}
	if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), c.AuthToken) || strings.Contains(logs.String(), c.APISecret) {
		t.Errorf("the log holds a secret: %s", logs.String())
	}
}

func TestLoginThrottlePerAccount(t *testing.T) {
	s := newServer(t, Config{})
	c := s.Credentials()
	// A server that used the account before the attack.
	if rec := restAs(s, "192.0.2.1", c.AccountSID, c.AuthToken); rec.Code != 200 {
		t.Fatalf("known client = %d", rec.Code)
	}
	// A distributed guesser: a few failures from each of many addresses,
	// alternating the account SID and its API key.
	for i := range AccountBurst + 5 {
		user := c.AccountSID
		if i%2 == 1 {
			user = c.APIKeySID
		}
		restAs(s, fmt.Sprintf("10.1.%d.%d", i/200, i%200), user, "guess")
	}
	wantThrottled(t, "new address, right password, account under attack", restAs(s, "10.2.0.1", c.AccountSID, c.AuthToken))
	wantThrottled(t, "new address, API key of the account under attack", restAs(s, "10.2.0.2", c.APIKeySID, c.APISecret))
	if rec := restAs(s, "192.0.2.1", c.AccountSID, c.AuthToken); rec.Code != 200 {
		t.Errorf("known client during the attack = %d %s, want 200", rec.Code, rec.Body)
	}
	// Unknown users do not fill the account table.
	for i := range 50 {
		restAs(s, fmt.Sprintf("10.3.0.%d", i), fmt.Sprintf("AC%032x", i), "guess")
	}
	s.throttle.mu.Lock()
	n := len(s.throttle.accounts.m)
	s.throttle.mu.Unlock()
	if n != 1 {
		t.Errorf("account buckets = %d, want 1 (unknown SIDs are not tracked)", n)
	}
}

func TestThrottleBounded(t *testing.T) {
	th := newThrottle()
	th.max = 100
	now := time.Now()
	for i := range 1000 {
		th.fail(ticket{}, fmt.Sprintf("10.0.%d.%d", i/250, i%250), "", "", now)
		th.succeeded(fmt.Sprintf("10.0.%d.%d", i/250, i%250), "ACx", now)
	}
	if n := len(th.addrs.m); n > th.max {
		t.Errorf("address buckets = %d, want at most %d", n, th.max)
	}
	if n := len(th.good); n > th.max {
		t.Errorf("known-good pairs = %d, want at most %d", n, th.max)
	}
	// A refilled bucket lets the address in again.
	for range AddrBurst {
		th.fail(ticket{}, "10.9.9.9", "", "", now)
	}
	if d := th.wait("10.9.9.9", "", now); d <= 0 || d > AddrEvery {
		t.Errorf("wait after burst failures = %v, want (0, %v]", d, AddrEvery)
	}
	if d := th.wait("10.9.9.9", "", now.Add(AddrEvery*2)); d != 0 {
		t.Errorf("wait after the refill = %v, want 0", d)
	}
}

func TestAddrKey(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:5000":          "127.0.0.1",
		"[2001:db8::1]:443":       "2001:db8::/64",
		"[2001:db8::ffff:1]:443":  "2001:db8::/64",
		"[2001:db8:0:1::1]:443":   "2001:db8:0:1::/64",
		"[::ffff:10.0.0.1]:80":    "10.0.0.1",
		"not an address":          "not an address",
		"[fe80::1%eth0]:80":       "fe80::1%eth0",
		"192.0.2.10:1":            "192.0.2.10",
		"[::1]:1":                 "::/64",
		"127.0.0.2:1":             "127.0.0.2",
		"10.0.0.1":                "10.0.0.1",
		"2001:db8::1":             "2001:db8::/64",
		"[2001:db8::1]":           "[2001:db8::1]",
		"[::]:0":                  "::/64",
		"[2001:db8:1:2:3::4]:999": "2001:db8:1:2::/64",
	} {
		if got := addrKey(in); got != want {
			t.Errorf("addrKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCrossSite(t *testing.T) {
	s := newServer(t, Config{PublicURL: "https://sync.example.com", Listen: "chorus.internal:3000"})
	c := s.Credentials()
	post := func(hdr map[string]string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/v1/Services/default", strings.NewReader("WebhookUrl=https://evil.example/hook"))
		req.Host = "chorus.internal:3000"
		if h := hdr["Host"]; h != "" {
			req.Host = h
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(c.AccountSID, c.AuthToken)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		return rec
	}
	for _, tt := range []struct {
		name    string
		hdr     map[string]string
		refused bool
	}{
		{"server to server", nil, false},
		{"form from another site", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Origin": "https://evil.example"}, true},
		{"fetch from a sibling site", map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "https://evil.example.com"}, true},
		{"old browser, other origin", map[string]string{"Origin": "https://evil.example"}, true},
		{"old browser, null origin", map[string]string{"Origin": "null"}, true},
		{"same origin", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://chorus.internal:3000"}, false},
		{"same origin behind a proxy", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "https://sync.example.com"}, false},
		{"old browser, same host", map[string]string{"Origin": "http://chorus.internal:3000"}, false},
		{"old browser, public URL", map[string]string{"Origin": "https://sync.example.com"}, false},
		{"typed into the address bar", map[string]string{"Sec-Fetch-Site": "none"}, false},
		// An Origin equal to a Host that is not one of this server's names
		// is what a DNS-rebinding page sends.
		{"old browser, rebound host", map[string]string{"Host": "rebind.evil.example", "Origin": "http://rebind.evil.example"}, true},
		{"old browser, loopback host", map[string]string{"Host": "localhost:3000", "Origin": "http://localhost:3000"}, false},
		{"old browser, address host", map[string]string{"Host": "192.0.2.7:3000", "Origin": "http://192.0.2.7:3000"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := post(tt.hdr)
			var body struct{ Code int }
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if tt.refused && (rec.Code != 403 || body.Code != 20403) {
				t.Errorf("= %d %s, want 403 20403", rec.Code, rec.Body)
			}
			if !tt.refused && rec.Code != 200 {
				t.Errorf("= %d %s, want 200", rec.Code, rec.Body)
			}
			if rec.Header().Get("WWW-Authenticate") != "" {
				t.Errorf("WWW-Authenticate = %q, want none", rec.Header().Get("WWW-Authenticate"))
			}
		})
	}
	// A refused request changes nothing.
	s2 := newServer(t, Config{})
	c2 := s2.Credentials()
	req := httptest.NewRequest("POST", "/v1/Services/default", strings.NewReader("WebhookUrl=https://evil.example/hook"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.SetBasicAuth(c2.AccountSID, c2.AuthToken)
	s2.Handler().ServeHTTP(httptest.NewRecorder(), req)
	if svc, err := s2.Engine().Service(t.Context(), c2.AccountSID, "default"); err != nil || svc.WebhookURL != "" {
		t.Errorf("after a refused cross-site POST the webhook URL = %q, %v, want unchanged", svc.WebhookURL, err)
	}
}

// TestCrossSiteEMSExchange: twilio-sync 0.5–0.7 in a browser post the
// access token to /v1/token from the app's own origin (with a CORS
// preflight); that exchange carries no browser-held credential, so the
// cross-site refusal of the APIs does not apply to it.
func TestCrossSiteEMSExchange(t *testing.T) {
	s := newServer(t, Config{})
	for _, method := range []string{"OPTIONS", "POST"} {
		req := httptest.NewRequest(method, "/v1/token", strings.NewReader(`{"fpa_token":"not-a-token"}`))
		req.Header.Set("Origin", "https://app.example")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		var body struct{ Code int }
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code == 403 && body.Code == 20403 {
			t.Errorf("%s /v1/token cross-site = %d %s, want the EMS handler's answer", method, rec.Code, rec.Body)
		}
		if rec.Header().Get("Access-Control-Allow-Origin") == "" {
			t.Errorf("%s /v1/token: no CORS header in %v", method, rec.Header())
		}
	}
}

// Only POST and OPTIONS /v1/token are the EMS exchange; any other method
// there is REST v1 and must count failed logins like every API, or it
// would be an unthrottled, unlogged password oracle (401 wrong, 404 right).
func TestV1TokenOtherMethodsThrottled(t *testing.T) {
	for _, method := range []string{"GET", "HEAD", "PUT", "DELETE"} {
		s := newServer(t, Config{}) // the account's own bucket starts full
		c := s.Credentials()
		const addr = "10.0.1.1"
		send := func(secret string) *httptest.ResponseRecorder {
			req := httptest.NewRequest(method, "/v1/token", nil)
			req.RemoteAddr = addr + ":40000"
			req.SetBasicAuth(c.AccountSID, secret)
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			return rec
		}
		for i := range AddrBurst {
			if rec := send("wrong-password-xyzzy"); rec.Code != 401 {
				t.Fatalf("%s /v1/token failure %d = %d, want 401", method, i+1, rec.Code)
			}
		}
		wantThrottled(t, method+" /v1/token, one failure too many", send("wrong-password-xyzzy"))
		wantThrottled(t, method+" /v1/token, the right password after them", send(c.AuthToken))
	}
	// Cross-site browsers may not use it either.
	s := newServer(t, Config{})
	c := s.Credentials()
	req := httptest.NewRequest("GET", "/v1/token", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.SetBasicAuth(c.AccountSID, c.AuthToken)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 403 {
		t.Errorf("cross-site GET /v1/token = %d %s, want 403", rec.Code, rec.Body)
	}
}

func TestSecurityHeaders(t *testing.T) {
	s := newServer(t, Config{})
	for _, path := range []string{"/", "/console/", "/game.js", "/v1/Services", "/admin/v1/Account", "/token"} {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		h := rec.Header()
		if h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" ||
			h.Get("Referrer-Policy") != "no-referrer" || !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Errorf("GET %s headers = %v, want the security headers", path, h)
		}
		if !strings.HasPrefix(path, "/v1/") && !strings.HasPrefix(path, "/admin/") && !strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s CSP = %q, want the page policy", path, h.Get("Content-Security-Policy"))
		}
	}
}

// TestLoginThrottleBehindProxy: with the proxy trusted, the throttle counts
// the client in X-Forwarded-For, so one client's failures do not lock out
// the others behind the same proxy; an untrusted peer cannot pick its
// address with the header.
func TestLoginThrottleBehindProxy(t *testing.T) {
	s := newServer(t, Config{Transport: Transport{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}})
	c := s.Credentials()
	user := c.AccountSID
	via := func(peer, xff, pass string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/v1/Services", nil)
		req.RemoteAddr = peer + ":5000"
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		req.SetBasicAuth(user, pass)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		return rec
	}
	for range AddrBurst + 1 {
		via("127.0.0.1", "203.0.113.7", "wrong")
	}
	wantThrottled(t, "the guesser behind the proxy", via("127.0.0.1", "203.0.113.7", c.AuthToken))
	if rec := via("127.0.0.1", "198.51.100.1, 203.0.113.8", c.AuthToken); rec.Code != 200 {
		t.Errorf("another client behind the proxy = %d %s, want 200", rec.Code, rec.Body)
	}
	// The guesser cannot escape by prepending a forged hop.
	wantThrottled(t, "forged leftmost hop", via("127.0.0.1", "192.0.2.99, 203.0.113.7", c.AuthToken))

	// An untrusted peer's header is ignored: it is counted as itself. (An
	// unknown user, so that the account's bucket stays out of it.)
	user = "AC00000000000000000000000000000000"
	for range AddrBurst + 1 {
		via("10.5.5.5", "198.51.100.77", "wrong")
	}
	user = c.AccountSID
	wantThrottled(t, "untrusted peer", via("10.5.5.5", "198.51.100.78", c.AuthToken))
	if rec := via("127.0.0.1", "198.51.100.77", c.AuthToken); rec.Code != 200 {
		t.Errorf("the address the untrusted peer claimed = %d, want 200 (not throttled)", rec.Code)
	}
}

// TestLoginThrottleConcurrent: requests in flight hold a token each, so
// concurrent guesses cannot get past an almost empty bucket together.
func TestLoginThrottleConcurrent(t *testing.T) {
	s := newServer(t, Config{})
	c := s.Credentials()
	for range AddrBurst - 1 {
		restAs(s, "10.7.0.1", c.AccountSID, "wrong")
	}
	var wg sync.WaitGroup
	codes := make(chan int, 30)
	for range 30 {
		wg.Go(func() { codes <- restAs(s, "10.7.0.1", c.AccountSID, "wrong").Code })
	}
	wg.Wait()
	close(codes)
	n := map[int]int{}
	for code := range codes {
		n[code]++
	}
	if n[401] > 2 || n[401]+n[429] != 30 {
		t.Errorf("30 concurrent guesses with one token left: %v, want at most 2 checked (401), the rest 429", n)
	}
	// Right credentials from an address with a bucket still work, and give
	// their token back.
	for range 5 {
		if rec := restAs(s, "10.7.0.2", c.AccountSID, "wrong"); rec.Code != 401 {
			t.Fatalf("failure = %d", rec.Code)
		}
	}
	for range AddrBurst {
		if rec := restAs(s, "10.7.0.2", c.AccountSID, c.AuthToken); rec.Code != 200 {
			t.Fatalf("right password after 5 failures = %d, want 200 every time", rec.Code)
		}
	}
}

// TestPlural: the throttle's message says "retry in 1 second", not "1 seconds".
func TestPlural(t *testing.T) {
	for n, want := range map[int]string{0: "0 seconds", 1: "1 second", 2: "2 seconds"} {
		if got := plural(n, "second"); got != want {
			t.Errorf("plural(%d) = %q, want %q", n, got, want)
		}
	}
}
