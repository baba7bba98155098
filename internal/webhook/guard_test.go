package webhook_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// Every SSRF form is refused at configuration time with 54051.
func TestCheckURL(t *testing.T) {
	strict := webhook.Policy{Self: "http://sync.example.com"}
	dev := webhook.Policy{AllowPrivate: true}
	refused := []string{
		"http://127.0.0.1:8080/hook",
		"http://127.1/",
		"http://0x7f000001/",
		"http://2130706433/",
		"http://0177.0.0.1/",
		"http://[::1]:5432/",
		"http://[::ffff:127.0.0.1]/",
		"http://[0:0:0:0:0:ffff:7f00:1]/",
		"http://169.254.169.254/latest/meta-data/",
		"http://[fe80::1]/",
		"http://10.0.0.1/",
		"http://172.16.5.4/",
		"http://192.168.1.1/",
		"http://100.64.0.1/",
		"http://[fd00::1]/",
		"http://0.0.0.0/",
		"http://[::]/",
		"http://224.0.0.1/",
		"http://[ff02::1]/",
		"http://255.255.255.255/",
		"http://[64:ff9b::7f00:1]/",
		"http://[::ffff:0:7f00:1]/",         // IPv4-translated (SIIT) 127.0.0.1
		"http://[::ffff:0:a9fe:a9fe]/",      // … 169.254.169.254
		"http://hooks.example.com/ok?x=a b", // sent raw: receivers answer 400
		"http://hooks.example.com/ok?x=\u00fc",
		"http://[::7f00:1]/",
		"http://[fe80::1%25eth0]/",
		"http://127.0.0.1./",
		"http://\uff11\uff12\uff17.0.0.1:23999/hook", // full-width digits: net/http dials 127.0.0.1
		"http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/", // full-width "localhost"
		"http://10\u30020.0.1/", // an ideographic full stop between labels
		"http://localhost/",
		"http://LOCALHOST:3000/",
		"http://api.localhost/",
		"http://sync.example.com/hook",
		"ftp://hooks.example.com/",
		"http:///nohost",
		"http://08.1.1.1/",
		"http://hooks.example.com:99999/",
		"http://" + strings.Repeat("a", 2050) + ".com/",
		// Documentation, deprecated site-local and discard-only ranges.
		"http://192.0.2.1/", "http://198.51.100.7/", "http://203.0.113.9/",
		"http://[2001:db8::1]/", "http://[3fff::1]/", "http://[fec0::1]/", "http://[100::1]/",
		// Signed as requested, validated as set: they would differ.
		"http://hooks.example.com/h#frag", "http://hooks.example.com/x ", "http://hooks.example.com/a b",
		"http://hooks.example.com/a{b}", "http://hooks.example.com/a|c", "http://hooks.example.com/a^b",
		"http://hooks.example.com/a\\b", "http://hooks.example.com/a`b", "http://hooks.example.com/a<b>", "http://hooks.example.com/a\"b",
		// Looked up as names when connecting, never reached.
		"http://134744072/", "http://8.8.2056/", "http://0x08.8.8.8/",
	}
	for _, u := range refused {
		err := strict.CheckURL(u)
		if chorus.ErrorCode(err) != 54051 {
			t.Errorf("CheckURL(%.60q) = %v, want 54051", u, err)
		}
		if e := chorus.AsError(err); e != nil && strings.Contains(e.Message, "s3cr3t") {
			t.Errorf("CheckURL(%q): message %q repeats the password", u, e.Message)
		}
	}
	allowed := []string{
		"", "https://hooks.example.com/sync?tenant=acme", "http://93.184.216.34:8080/x", "http://[2606:2800:220:1::1]/",
		"http://cafe.be/", "http://1e100.net/", "https://hooks.example.com/hoök?x=%C3%BC", // a path is sent percent-encoded
		"http://user:s3cr3t@hooks.example.com/", "https://token@hooks.example.com/", // Basic authentication, as with Twilio
	}
	for _, u := range allowed {
		if err := strict.CheckURL(u); err != nil {
			t.Errorf("CheckURL(%q) = %v, want nil", u, err)
		}
	}
	// The development switch allows loopback and private targets, never
	// link-local (cloud metadata), unspecified or multicast, with or
	// without credentials.
	for _, u := range []string{"http://127.0.0.1:8080/", "http://localhost:3000/", "http://[::1]:5432/", "http://10.0.0.1/",
		"http://192.0.2.1/", "http://[2001:db8::1]/"} { // test set-ups use documentation ranges too
		if err := dev.CheckURL(u); err != nil {
			t.Errorf("AllowPrivate: CheckURL(%q) = %v, want nil", u, err)
		}
	}
	// Shorthand forms of loopback are refused even then: the client would
	// look them up in DNS (a tester saw 'lookup 0x7f000001 on
	// 10.255.255.53:53') and every webhook would fail.
	for _, u := range []string{"http://169.254.169.254/", "http://0.0.0.0/", "http://224.0.0.1/", "http://u:s3cr3t@169.254.169.254/",
		"http://0x7f000001/", "http://127.1:8080/short", "http://2130706433/"} {
		if err := dev.CheckURL(u); chorus.ErrorCode(err) != 54051 {
			t.Errorf("AllowPrivate: CheckURL(%q) = %v, want 54051", u, err)
		}
	}
}

// TestCheckURLSelf: a new webhook URL that addresses this server's public
// URL (host, port with the scheme's default, a path under its path) is
// refused; an app beside it on the same host, on another port or another
// path behind the same proxy, is not; a URL set before is still delivered
// (each node answers webhook requests 508, so none loops). The host alone
// used to be compared, at delivery too: --public-url http://127.0.0.1/chorus
// refused every port of 127.0.0.1 and abandoned the webhooks already set.
func TestCheckURLSelf(t *testing.T) {
	for _, tt := range []struct {
		self     string
		refused  []string
		accepted []string
	}{
		{"https://sync.example.com",
			[]string{"https://sync.example.com/hook", "https://SYNC.example.com:443/", "https://sync.example.com"},
			[]string{"http://sync.example.com/hook", "https://sync.example.com:8443/hook", "https://hooks.example.com/"}},
		{"https://example.com/sync",
			[]string{"https://example.com/sync", "https://example.com/sync/", "https://example.com/sync/v1/x"},
			[]string{"https://example.com/api/hook", "https://example.com/", "https://example.com/syncer", "https://example.com:444/sync"}},
		{"http://example.com:8080/",
			[]string{"http://example.com:8080/hook", "http://example.com:08080/hook"},
			[]string{"http://example.com/hook", "http://example.com:8081/hook"}},
	} {
		p := webhook.Policy{Self: tt.self}
		for _, u := range tt.refused {
			if err := p.CheckURL(u); chorus.ErrorCode(err) != 54051 {
				t.Errorf("public URL %s: CheckURL(%q) = %v, want 54051", tt.self, u, err)
			}
			if err := p.CheckURLAsSet(u); err != nil {
				t.Errorf("public URL %s: a URL set before, %q, = %v at delivery, want it sent (508 stops loops)", tt.self, u, err)
			}
		}
		for _, u := range tt.accepted {
			if err := p.CheckURL(u); err != nil {
				t.Errorf("public URL %s: CheckURL(%q) = %v, want nil", tt.self, u, err)
			}
		}
	}
}

// countingReceiver starts a loopback HTTP server that answers 200 and
// counts the connections made to it; it returns its port.
func countingReceiver(t *testing.T) (port string, conns *atomic.Int32) {
	t.Helper()
	conns = new(atomic.Int32)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ConnState = func(net.Conn, http.ConnState) { conns.Add(1) }
	srv.Start()
	t.Cleanup(srv.Close)
	_, port, _ = net.SplitHostPort(srv.Listener.Addr().String())
	return port, conns
}

// The dial-time check refuses what a name resolves to, before any packet
// is sent: localhost resolves to loopback, and the receiver listening
// there never sees a connection.
func TestDialTimeCheck(t *testing.T) {
	port, conns := countingReceiver(t)
	c := webhook.NewClient(webhook.Policy{}, 2*time.Second, nil)
	ctx := context.Background()
	for _, target := range []string{
		"http://localhost:" + port + "/",
		"http://127.0.0.1:" + port + "/",
		// Never connected to: refused after resolution, before connect.
		"http://10.255.255.1:9/",
		"http://169.254.169.254/latest/meta-data/",
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, target, nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Errorf("POST %s: connected, want refused", target)
			continue
		}
		if !errors.Is(err, webhook.ErrRefusedAddress) {
			t.Errorf("POST %s: %v, want ErrRefusedAddress", target, err)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the loopback receiver saw %d connections", n)
	}
	// A resolver that answers loopback for any name (DNS rebinding) is
	// refused the same way: the check runs on the resolved address.
	rebind := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		return fakeDNS(t, "127.0.0.1")
	}}
	c = webhook.NewClient(webhook.Policy{}, 2*time.Second, rebind)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://hooks.example.com:"+port+"/", nil)
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Error("a name resolving to loopback: connected, want refused")
	} else if !errors.Is(err, webhook.ErrRefusedAddress) {
		t.Errorf("a name resolving to loopback: %v, want ErrRefusedAddress", err)
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the loopback receiver saw %d connections", n)
	}
	// With the development switch, loopback is reachable.
	c = webhook.NewClient(webhook.Policy{AllowPrivate: true}, 2*time.Second, nil)
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost:"+port+"/", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("AllowPrivate: %v", err)
	}
	resp.Body.Close()
}

// A webhook refused at dial time is kept with a reason that does not say
// what the name resolved to: the reason is shown to the service's
// account, and would tell it how this host resolves internal names. The
// address goes to the operator's log.
func TestRefusedAddressReasonHidesTheAddress(t *testing.T) {
	ctx := context.Background()
	port, conns := countingReceiver(t)
	rebind := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		return fakeDNS(t, "127.0.0.1")
	}}
	e := newEnv(t, webhook.Config{Client: webhook.NewClient(webhook.Policy{}, 2*time.Second, rebind), Poll: 50 * time.Millisecond})
	svc := e.service(t, "http://db.internal.example:"+port+"/hook")
	if _, err := e.eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, engine.CreateObject{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the webhook given up on", func() bool { return e.d.Abandoned.Load() == 1 && e.pending(t) == 0 })
	page, err := e.d.AbandonedWebhooks(ctx, svc.SID, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Webhooks) != 1 {
		t.Fatalf("%d abandoned, want 1", len(page.Webhooks))
	}
	why := page.Webhooks[0].LastError
	if !strings.Contains(why, "address not allowed") || strings.Contains(why, "127.0.0.1") {
		t.Errorf("reason %q: want 'address not allowed' without the address", why)
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the loopback receiver saw %d connections", n)
	}
}

// fakeDNS returns one end of an in-memory connection whose other end
// answers every DNS query (over TCP framing or UDP, as the Go resolver
// sends it) with an A record of addr.
func fakeDNS(t testing.TB, addr string) (net.Conn, error) {
	client, server := net.Pipe()
	ip := net.ParseIP(addr).To4()
	go func() {
		defer server.Close()
		buf := make([]byte, 512)
		for {
			n, err := server.Read(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			tcp := false
			if n >= 2 && int(q[0])<<8|int(q[1]) == n-2 {
				q, tcp = q[2:], true
			}
			if len(q) < 12 {
				return
			}
			// Header: same id, response, recursion available, 1 question, 1 answer
			// (AAAA queries get none).
			end := 12
			for end < len(q) && q[end] != 0 {
				end += int(q[end]) + 1
			}
			end += 5 // zero label, type, class
			if end > len(q) {
				return
			}
			qtype := int(q[end-4])<<8 | int(q[end-3])
			resp := append([]byte{}, q[:2]...)
			resp = append(resp, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0)
			resp = append(resp, q[12:end]...)
			if qtype == 1 {
				resp[7] = 1
				resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
				resp = append(resp, ip...)
			}
			if tcp {
				resp = append([]byte{byte(len(resp) >> 8), byte(len(resp))}, resp...)
			}
			if _, err := server.Write(resp); err != nil {
				return
			}
		}
	}()
	return client, nil
}
