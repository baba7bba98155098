package server

import (
	"cmp"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// TestMetricsDNSRebinding: on a real loopback listener, /metrics answers a
// request whose Host is this machine (a loopback address, localhost) or the
// public URL's host, and refuses one for another name: a page of
// evil.example whose name was rebound to 127.0.0.1 is a loopback peer that
// sends Host: evil.example. --metrics-public serves every Host.
func TestMetricsDNSRebinding(t *testing.T) {
	get := func(addr, host string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET /metrics Host %s: %v", host, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	addr := run(t, newServer(t, Config{PublicURL: "https://sync.example.com"}))
	_, port, _ := net.SplitHostPort(addr)
	for _, tt := range []struct {
		host string
		want int
	}{
		{addr, 200},
		{"localhost:" + port, 200},
		{"LOCALHOST", 200},
		{"metrics.localhost:" + port, 200},
		{"[::1]:" + port, 200},
		{"sync.example.com", 200},
		{"evil.example:" + port, 403},
		{"evil.example", 403},
		{"127.0.0.1.evil.example:" + port, 403},
		{"localhost.evil.example:" + port, 403},
		{"sync.example.com.evil.example", 403},
		// Another address: a loopback peer sends it only through a
		// forwarder from another machine (socat, ssh -L, kubectl port-forward).
		{"10.0.0.5", 403},
		{"203.0.113.7:" + port, 403},
		{"[2001:db8::1]:" + port, 403},
	} {
		code, body := get(addr, tt.host)
		if code != tt.want {
			t.Errorf("GET /metrics from 127.0.0.1 with Host %q = %d, want %d", tt.host, code, tt.want)
		}
		if code == 200 && !strings.Contains(body, "chorus_writes_total") {
			t.Errorf("GET /metrics with Host %q: no metrics in %q", tt.host, body)
		}
		if code == 403 && (strings.Contains(body, "chorus_writes_total") || !strings.Contains(body, `"code":20403`) ||
			!strings.Contains(body, "--metrics-public")) {
			t.Errorf("GET /metrics with Host %q: refusal body %q", tt.host, body)
		}
	}

	open := run(t, newServer(t, Config{MetricsPublic: true}))
	if code, _ := get(open, "evil.example"); code != 200 {
		t.Errorf("GET /metrics with --metrics-public and Host evil.example = %d, want 200", code)
	}
}

// /metrics shows the 5xx answers per error code.
func TestMetricsServerErrors(t *testing.T) {
	twiliohttp.WriteError(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/Services", nil), slog.New(slog.NewTextHandler(io.Discard, nil)), chorus.ErrUnavailable)
	addr := run(t, newServer(t, Config{}))
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if !strings.Contains(string(b), `chorus_http_server_errors_total{code="20503"} `) {
		t.Errorf("no chorus_http_server_errors_total line for 20503 in /metrics")
	}
}

// TestPerServiceMetricsBounded: a per-service metric shows the services
// with the most to show, at most metricsMaxServices of them: a tenant
// decides how many services there are (300 with a failing webhook made
// 600 series).
func TestPerServiceMetricsBounded(t *testing.T) {
	var backlog []*chorus.OutboxBacklog
	kept := map[string]int{}
	for i := range 3 * metricsMaxServices {
		sid := fmt.Sprintf("IS%032d", i)
		backlog = append(backlog, &chorus.OutboxBacklog{ServiceSID: sid, Pending: i % 7})
		kept[sid] = i % 5
	}
	big := fmt.Sprintf("IS%032d", 2*metricsMaxServices+1)
	backlog[2*metricsMaxServices+1].Pending, kept[big] = 1000, 1000
	top := topServices(backlog, metricsMaxServices, func(a, b *chorus.OutboxBacklog) int { return cmp.Compare(b.Pending, a.Pending) })
	if len(top) != metricsMaxServices {
		t.Fatalf("topServices by pending gave %d services, want %d", len(top), metricsMaxServices)
	}
	least, in := 1<<30, map[string]bool{}
	for i, b := range top {
		least, in[b.ServiceSID] = min(least, b.Pending), true
		if i > 0 && top[i-1].ServiceSID >= b.ServiceSID {
			t.Errorf("topServices by pending not in SID order at %d", i)
		}
	}
	if !in[big] {
		t.Errorf("topServices by pending left out the service with the most pending")
	}
	for i := range 3 * metricsMaxServices {
		if sid := fmt.Sprintf("IS%032d", i); !in[sid] && i%7 > least {
			t.Errorf("topServices by pending left out %s with %d pending, and kept one with %d", sid, i%7, least)
		}
	}
	// By age: the oldest are kept, whatever their count.
	now := time.Now()
	for i, b := range backlog {
		b.Oldest = now.Add(-time.Duration(i) * time.Second) // the last SIDs are the oldest
	}
	oldest := topServices(backlog, metricsMaxServices, func(a, b *chorus.OutboxBacklog) int { return a.Oldest.Compare(b.Oldest) })
	for _, b := range oldest {
		if n, _ := strconv.Atoi(b.ServiceSID[2:]); n < 2*metricsMaxServices {
			t.Errorf("topServices by age kept %s, not among the %d oldest", b.ServiceSID, metricsMaxServices)
			break
		}
	}
	sids := mostKept(kept, metricsMaxServices)
	if len(sids) != metricsMaxServices || !slices.Contains(sids, big) || !slices.IsSorted(sids) {
		t.Errorf("mostKept = %d SIDs (with %s: %v, sorted: %v), want the %d with the most, sorted", len(sids), big, slices.Contains(sids, big), slices.IsSorted(sids), metricsMaxServices)
	}
	leastKept := 1 << 30
	for _, sid := range sids {
		leastKept = min(leastKept, kept[sid])
	}
	for sid, n := range kept {
		if !slices.Contains(sids, sid) && n > leastKept {
			t.Errorf("mostKept left out %s with %d, and kept one with %d", sid, n, leastKept)
		}
	}
}
