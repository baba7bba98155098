package server

import (
	"log/slog"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/chorus-sync/chorus/internal/logtest"
)

// TestOptionsSaysNothingAndIsThrottled: OPTIONS (and any other method a
// known path does not take) is answered 405 before the credentials are
// looked at, so the answer is the same for a right and a wrong password;
// and a request with credentials is counted by the login throttle whatever
// its method.
func TestOptionsSaysNothingAndIsThrottled(t *testing.T) {
	s := newServer(t, Config{})
	c := s.Credentials()
	do := func(method, path, addr, user, pass string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, nil)
		req.RemoteAddr = addr + ":40000"
		req.SetBasicAuth(user, pass)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		return rec
	}
	for _, path := range []string{
		"/admin/v1/Stats", "/admin/v1/Session", "/admin/v1/Tokens",
		"/2010-04-01/Accounts/" + c.AccountSID + "/Keys.json", "/v1/AuthTokens/Promote",
	} {
		right := do("OPTIONS", path, "192.0.2.1", c.AccountSID, c.AuthToken)
		wrong := do("OPTIONS", path, "192.0.2.2", c.AccountSID, "wrong-wrong-wrong-wrong-wrong-wrong")
		if right.Code != 405 || wrong.Code != 405 || right.Body.String() != wrong.Body.String() {
			t.Errorf("OPTIONS %s = %d %s (right) vs %d %s (wrong), want the same 405", path, right.Code, right.Body, wrong.Code, wrong.Body)
		}
	}
	// Guesses by OPTIONS on a path that authenticates (the 404 fallback)
	// are counted: the address is throttled, and says so before looking at
	// the next password, even the right one.
	for range AddrBurst + 1 {
		if rec := do("OPTIONS", "/admin/v1/Nope", "192.0.2.3", c.AccountSID, "wrong-wrong-wrong-wrong-wrong-wrong"); rec.Code != 401 && rec.Code != 429 {
			t.Fatalf("OPTIONS /admin/v1/Nope with a wrong password = %d %s", rec.Code, rec.Body)
		}
	}
	wantThrottled(t, "right password after OPTIONS guesses", do("OPTIONS", "/admin/v1/Nope", "192.0.2.3", c.AccountSID, c.AuthToken))
}

// TestMetricsLoopbackOnly: /metrics (node totals, every account's service
// SIDs) is served to loopback peers only, not through a proxy, and only for
// a Host that names this server (DNS rebinding), unless MetricsPublic.
func TestMetricsLoopbackOnly(t *testing.T) {
	get := func(s *Server, remote string, hdr ...string) int {
		req := httptest.NewRequest("GET", "/metrics", nil)
		req.RemoteAddr = remote
		req.Host = "127.0.0.1:3000"
		for i := 0; i+1 < len(hdr); i += 2 {
			if hdr[i] == "Host" {
				req.Host = hdr[i+1]
				continue
			}
			if hdr[i] == "proto" { // HTTP/1.0: a default nginx proxy_pass
				req.Proto, req.ProtoMajor, req.ProtoMinor = hdr[i+1], 1, 0
				continue
			}
			req.Header.Add(hdr[i], hdr[i+1])
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	s := newServer(t, Config{})
	open := newServer(t, Config{MetricsPublic: true})
	for _, tt := range []struct {
		name   string
		s      *Server
		remote string
		hdr    []string
		want   int
	}{
		{"loopback", s, "127.0.0.1:40000", nil, 200},
		{"loopback v6", s, "[::1]:40000", nil, 200},
		{"remote", s, "192.0.2.1:40000", nil, 403},
		{"through a local proxy", s, "127.0.0.1:40000", []string{"X-Forwarded-For", "203.0.113.1"}, 403},
		{"through a local proxy, Forwarded", s, "127.0.0.1:40000", []string{"Forwarded", "for=203.0.113.1"}, 403},
		{"through a local proxy, Via", s, "127.0.0.1:40000", []string{"Via", "1.1 proxy"}, 403},
		{"through a local proxy that adds its line after an empty one", s, "127.0.0.1:40000", []string{"X-Forwarded-For", "", "X-Forwarded-For", "203.0.113.1"}, 403},
		{"through a local proxy, an empty Forwarded first", s, "127.0.0.1:40000", []string{"Forwarded", "", "Forwarded", "for=203.0.113.1"}, 403},
		{"through a default nginx (HTTP/1.0, no forwarding header)", s, "127.0.0.1:40000", []string{"proto", "HTTP/1.0"}, 403},
		{"remote with MetricsPublic", open, "192.0.2.1:40000", nil, 200},
		{"loopback, Host localhost", s, "127.0.0.1:40000", []string{"Host", "localhost:3000"}, 200},
		{"loopback, Host an IP address", s, "127.0.0.1:40000", []string{"Host", "[::1]:3000"}, 200},
		{"DNS rebinding: loopback peer, Host another name", s, "127.0.0.1:40000", []string{"Host", "evil.example:3000"}, 403},
		{"DNS rebinding with MetricsPublic", open, "127.0.0.1:40000", []string{"Host", "evil.example:3000"}, 200},
	} {
		if got := get(tt.s, tt.remote, tt.hdr...); got != tt.want {
			t.Errorf("%s: GET /metrics = %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestKnownGoodPairOwnBucket: a guesser sharing a known client's address
// throttles the address, not the client that authenticated from it; a
// guesser naming the known user from that address gets only the pair's
// small bucket. A peer sending X-Forwarded-For that is not a trusted
// proxy is warned about once.
func TestKnownGoodPairOwnBucket(t *testing.T) {
	var logs logtest.Buffer
	s := newServer(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c := s.Credentials()
	const shared = "198.51.100.7"
	if rec := restAs(s, shared, c.APIKeySID, c.APISecret); rec.Code != 200 {
		t.Fatalf("known client = %d", rec.Code)
	}
	for range AddrBurst + 1 {
		restAs(s, shared, c.AccountSID, "wrong-wrong-wrong-wrong-wrong-wrong")
	}
	wantThrottled(t, "another user from the shared address", restAs(s, shared, c.AccountSID, c.AuthToken))
	if rec := restAs(s, shared, c.APIKeySID, c.APISecret); rec.Code != 200 {
		t.Errorf("known client after a flood from its address = %d %s, want 200", rec.Code, rec.Body)
	}
	// Guessing as the known user from the known address: KnownGoodBurst
	// failures, then throttled.
	for range KnownGoodBurst {
		if rec := restAs(s, shared, c.APIKeySID, "wrong-wrong-wrong-wrong-wrong-wrong"); rec.Code != 401 {
			t.Fatalf("guess as the known user = %d, want 401", rec.Code)
		}
	}
	wantThrottled(t, "the known pair after its own burst", restAs(s, shared, c.APIKeySID, c.APISecret))

	for range 2 {
		req := httptest.NewRequest("GET", "/v1/Services", nil)
		req.RemoteAddr = "192.0.2.50:1"
		req.Header.Set("X-Forwarded-For", "203.0.113.5")
		req.SetBasicAuth(c.AccountSID, c.AuthToken)
		s.Handler().ServeHTTP(httptest.NewRecorder(), req)
	}
	if n := strings.Count(logs.String(), "--trusted-proxies does not name sent X-Forwarded-For"); n != 1 {
		t.Errorf("X-Forwarded-For warning logged %d times, want once: %s", n, logs.String())
	}
}

// TestMetricsStoreWrites: /metrics reports the embedded store's write path
// (batches, writes, COMMIT and WAL sync time), and a REST write moves it.
func TestMetricsStoreWrites(t *testing.T) {
	s := newServer(t, Config{})
	scrape := func() map[string]float64 {
		req := httptest.NewRequest("GET", "/metrics", nil)
		req.RemoteAddr, req.Host = "127.0.0.1:40000", "127.0.0.1:3000"
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Fatalf("GET /metrics = %d %s", rec.Code, rec.Body)
		}
		m := map[string]float64{}
		for _, line := range strings.Split(rec.Body.String(), "\n") {
			name, v, ok := strings.Cut(line, " ")
			if !ok || !strings.HasPrefix(name, "chorus_store_") {
				continue
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			m[name] = f
		}
		return m
	}
	// Each counter, and whether one successful write must move it.
	counters := []struct {
		name  string
		moves bool
	}{
		{"chorus_store_write_batches_total", true},
		{"chorus_store_batched_writes_total", true},
		{"chorus_store_commit_seconds_total", true},
		{"chorus_store_wal_syncs_total", true},
		{"chorus_store_wal_sync_seconds_total", true},
		{"chorus_store_batch_retries_total", false},
	}
	before := scrape()
	for _, m := range counters {
		if _, ok := before[m.name]; !ok {
			t.Errorf("/metrics has no %s", m.name)
		}
	}
	c := s.Credentials()
	req := httptest.NewRequest("POST", "/v1/Services/"+c.ServiceSID+"/Documents",
		strings.NewReader(url.Values{"Data": {`{"a":1}`}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(c.AccountSID, c.AuthToken)
	req.RemoteAddr = "127.0.0.1:40001"
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 201 {
		t.Fatalf("create document = %d %s", rec.Code, rec.Body)
	}
	after := scrape()
	for _, m := range counters {
		if m.moves && after[m.name] <= before[m.name] {
			t.Errorf("%s = %v after a write, was %v", m.name, after[m.name], before[m.name])
		}
	}
	// Disk gauges: what the files take and what the file system has left.
	for _, g := range []string{"chorus_store_database_bytes", "chorus_store_wal_bytes", "chorus_store_disk_free_bytes"} {
		if after[g] <= 0 {
			t.Errorf("/metrics %s = %v, want the size in bytes", g, after[g])
		}
	}
}
