package server

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"

	natsbus "github.com/chorus-sync/chorus/internal/bus/nats"
	"github.com/chorus-sync/chorus/internal/logtest"
	"github.com/chorus-sync/chorus/protocol"
	"github.com/chorus-sync/chorus/token"
)

// run serves s on a loopback port until the test ends and returns the
// address.
func run(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
	})
	return ln.Addr().String()
}

// serveUntilStopped serves s on a loopback port until stop is called, and
// returns the address and Run's result channel.
func serveUntilStopped(t *testing.T, s *Server) (addr string, stop context.CancelFunc, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- s.Run(ctx, ln) }()
	return ln.Addr().String(), stop, result
}

// runResult waits up to limit for Run's result on done, failing the test
// if it has not returned by then.
func runResult(t *testing.T, done <-chan error, limit time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("Run did not return within %v", limit)
		return nil
	}
}

// closedWithin waits until the server closes c and returns how long that
// took; it fails the test if c is still open after limit. Bytes the
// server sends first (an error response) are skipped.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", limit)
	}
	return time.Since(start)
}

func get(t *testing.T, c net.Conn, path string) {
	t.Helper()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: chorus\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s = %d", path, resp.StatusCode)
	}
}

// served reports whether a new connection to addr gets GET /healthz
// answered 200.
func served(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: chorus\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// dialFrom is dial from another loopback address (another client).
func dialFrom(t *testing.T, ip net.IP, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestTimeouts(t *testing.T) {
	const d = 500 * time.Millisecond
	s := newServer(t, Config{Transport: Transport{IdleTimeout: d, ReadTimeout: d, WriteTimeout: 2 * d, ReadHeaderTimeout: d}})
	addr := run(t, s)

	t.Run("idle keep-alive", func(t *testing.T) {
		c := dial(t, addr)
		get(t, c, "/healthz")
		if took := closedWithin(t, c, 20*time.Second); took < d/2 {
			t.Errorf("idle connection closed after %v, want about %v", took, d)
		}
	})
	t.Run("stalled body", func(t *testing.T) {
		c := dial(t, addr)
		io.WriteString(c, "POST /v1/Services HTTP/1.1\r\nHost: chorus\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nFriendly")
		closedWithin(t, c, 20*time.Second)
	})
	t.Run("stalled headers", func(t *testing.T) {
		c := dial(t, addr)
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: chor")
		closedWithin(t, c, 20*time.Second)
	})
	t.Run("websocket outlives the timeouts", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/v3/wsconnect", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		ws.CloseRead(ctx)
		time.Sleep(4 * d) // past the read, write and idle timeouts
		if err := ws.Ping(ctx); err != nil {
			t.Fatalf("websocket ping after %v = %v, want the connection alive", 4*d, err)
		}
	})
	t.Run("normal client", func(t *testing.T) {
		c := dial(t, addr)
		for range 3 {
			get(t, c, "/healthz")
			time.Sleep(d / 5)
		}
	})
}

func TestBodyLimit(t *testing.T) {
	s := newServer(t, Config{Transport: Transport{MaxBodyBytes: 1 << 10}})
	addr := run(t, s)
	creds := s.Credentials()
	req, _ := http.NewRequest("POST", "http://"+addr+"/admin/v1/Tokens", strings.NewReader("Identity="+strings.Repeat("x", 4<<10)))
	req.SetBasicAuth(creds.AccountSID, creds.AuthToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge && resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST 4 KiB with a 1 KiB limit = %d, want 413 or 400", resp.StatusCode)
	}
}

// TestHeaderLimit: headers past MaxHeaderBytes are refused (431) before a
// handler runs; the largest access token there is still fits.
func TestHeaderLimit(t *testing.T) {
	s := newServer(t, Config{})
	addr := run(t, s)
	get := func(name string, size int) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+"/v3/Services/"+s.Credentials().ServiceSID, nil)
		req.Header.Set(name, strings.Repeat("x", size))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("X-Twilio-Token", token.MaxTokenBytes); code == http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a %d-byte token header = %d, want it read (and refused as a token)", token.MaxTokenBytes, code)
	}
	if code := get("X-Padding", MaxHeaderBytes+8<<10); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("headers of %d bytes = %d, want 431", MaxHeaderBytes+8<<10, code)
	}
}

func TestConnectionCaps(t *testing.T) {
	t.Run("per address", func(t *testing.T) {
		s := newServer(t, Config{Transport: Transport{MaxConnsPerIP: 2}})
		addr := run(t, s)
		a, b := dial(t, addr), dial(t, addr)
		get(t, a, "/healthz")
		get(t, b, "/healthz")
		closedWithin(t, dial(t, addr), 20*time.Second) // the third from 127.0.0.1

		// Another loopback address is not affected.
		other := dialFrom(t, net.IPv4(127, 0, 0, 2), addr)
		get(t, other, "/healthz")

		// A freed slot is usable again.
		a.Close()
		waitFor(t, "slot freed", func() bool { return served(addr) })
		if n := s.connsRefused.Load(); n == 0 {
			t.Errorf("connsRefused = 0, want > 0")
		}
	})
	t.Run("total", func(t *testing.T) {
		const shed = time.Second
		s := newServer(t, Config{Transport: Transport{MaxConns: 3, ShedIdleAfter: shed}})
		addr := run(t, s)
		var old []net.Conn
		for range 2 {
			c := dial(t, addr)
			get(t, c, "/healthz")
			old = append(old, c)
		}
		time.Sleep(shed + 200*time.Millisecond) // idle past ShedIdleAfter
		fresh := dial(t, addr)
		get(t, fresh, "/healthz")
		// At the cap, a newcomer takes the place of the keep-alive idle
		// longest past ShedIdleAfter: one client holding them open (120 s
		// each) used to keep every other out.
		for range old {
			get(t, dial(t, addr), "/healthz")
		}
		if n := closedCount(old); n != 2 {
			t.Errorf("after two newcomers, %d of the two old keep-alives were closed, want both", n)
		}
		// One idle for less keeps its place: a client filling the cap and
		// dialing once a second must not evict fresh keep-alives.
		get(t, fresh, "/healthz")
		closedWithin(t, dial(t, addr), 5*time.Second) // nothing evictable: over the cap
		waitFor(t, "a connection served once the others idled past ShedIdleAfter", func() bool { return served(addr) })
	})
	t.Run("unused", func(t *testing.T) {
		// Connections that never send a request: without a place for
		// newcomers, one client dialing them again as each is closed
		// (ReadHeaderTimeout) held the cap, and every other client out.
		s := newServer(t, Config{Transport: Transport{MaxConns: 3, ShedIdleAfter: time.Minute}})
		addr := run(t, s)
		unused := []net.Conn{dial(t, addr), dial(t, addr), dial(t, addr)}
		time.Sleep(100 * time.Millisecond) // accepted
		if n := s.connsRefused.Load(); n != 0 {
			t.Fatalf("%d of 3 connections refused under a cap of 3", n)
		}
		// Younger than a second, they keep their places.
		closedWithin(t, dial(t, addr), 20*time.Second)
		time.Sleep(clientGrace + 100*time.Millisecond)
		for i := 1; i <= 2; i++ {
			c := dial(t, addr)
			get(t, c, "/healthz")
			if n := closedCount(unused); n != i {
				t.Errorf("after %d newcomers, %d of the unused connections were closed, want %d", i, n, i)
			}
		}
	})
}

// TestConnectionCapsSlowClients: at the cap, a newcomer also takes the
// place of a connection whose request trickles in (a header without its
// end, a body one byte of its declared length): those held the cap as
// requests in flight, up to ReadTimeout, where silent connections no
// longer could. A client at its own per-address cap evicts no one.
func TestConnectionCapsSlowClients(t *testing.T) {
	t.Run("trickling requests", func(t *testing.T) {
		s := newServer(t, Config{Transport: Transport{MaxConns: 2, ShedIdleAfter: time.Minute}})
		addr := run(t, s)
		header, body := dial(t, addr), dial(t, addr)
		if _, err := io.WriteString(header, "GET /healthz HTTP/1.1\r\nHost: chorus\r\n"); err != nil { // no blank line
			t.Fatal(err)
		}
		// Authenticated: a body without credentials is not read at all.
		c := s.Credentials()
		auth := base64.StdEncoding.EncodeToString([]byte(c.AccountSID + ":" + c.AuthToken))
		if _, err := io.WriteString(body, "POST /v1/Services HTTP/1.1\r\nHost: chorus\r\nAuthorization: Basic "+auth+"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\nF"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		closedWithin(t, dial(t, addr), 5*time.Second) // under a second: they keep their places
		time.Sleep(clientGrace + 100*time.Millisecond)
		for i := 1; i <= 2; i++ {
			get(t, dial(t, addr), "/healthz")
			if n := closedCount([]net.Conn{header, body}); n != i {
				t.Errorf("after %d newcomers, %d of the trickling requests were closed, want %d", i, n, i)
			}
		}
	})
	t.Run("per address first", func(t *testing.T) {
		s := newServer(t, Config{Transport: Transport{MaxConns: 2, MaxConnsPerIP: 1, ShedIdleAfter: 100 * time.Millisecond}})
		addr := run(t, s)
		mine := dial(t, addr)
		get(t, mine, "/healthz")
		other := dialFrom(t, net.IPv4(127, 0, 0, 2), addr)
		get(t, other, "/healthz")
		time.Sleep(300 * time.Millisecond) // both idle past ShedIdleAfter: evictable
		// 127.0.0.1 is at its own cap: refused, and no one evicted for it.
		closedWithin(t, dial(t, addr), 5*time.Second)
		if n := closedCount([]net.Conn{other}); n != 0 {
			t.Errorf("a newcomer refused by its own address's cap evicted another address's connection")
		}
	})
}

// closedCount is how many of cs the server closed.
func closedCount(cs []net.Conn) int {
	n := 0
	for _, c := range cs {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		var b [1]byte
		_, err := c.Read(b[:])
		var ne net.Error
		if !(errors.As(err, &ne) && ne.Timeout()) {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and returns it.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "chorus test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true,

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestHandshakeErrorsPaced: net/http logs every failed TLS handshake,
// before any authentication; a client that sends garbage to the TLS port
// must not write a line per connection.
func TestHandshakeErrorsPaced(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCert(t, certFile, keyFile, 1)
	var logs logtest.Buffer
	s := newServer(t, Config{Transport: Transport{TLSCert: certFile, TLSKey: keyFile},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	addr := run(t, s)
	const conns = 200
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		_, _ = io.Copy(io.Discard, c) // until the server closes it
		c.Close()
	}
	lines := strings.Count(logs.String(), "TLS handshake error")
	if lines == 0 || lines > httpErrorBurst+5 {
		t.Errorf("%d connections that failed their handshake logged %d lines, want 1 to %d", conns, lines, httpErrorBurst+5)
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := writeCert(t, certFile, keyFile, 1)
	s := newServer(t, Config{Transport: Transport{TLSCert: certFile, TLSKey: keyFile}})
	addr := run(t, s)

	client := func(ca *x509.Certificate) *http.Client {
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	}
	creds := s.Credentials()
	req, _ := http.NewRequest("GET", "https://"+addr+"/v1/Services", nil)
	req.SetBasicAuth(creds.AccountSID, creds.AuthToken)
	resp, err := client(first).Do(req)
	if err != nil {
		t.Fatalf("HTTPS GET /v1/Services: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"url":"https://`) {
		t.Errorf("HTTPS GET /v1/Services = %d %s, want 200 with https URLs", resp.StatusCode, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "wss://"+addr+"/v3/wsconnect", &websocket.DialOptions{HTTPClient: client(first)})
	if err != nil {
		t.Fatalf("WSS connect: %v", err)
	}
	ws.CloseRead(ctx)
	if err := ws.Ping(ctx); err != nil {
		t.Errorf("WSS ping: %v", err)
	}
	ws.CloseNow()

	// Plain HTTP on the TLS port fails.
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP on the TLS port = 200")
		}
	}

	// Reload swaps the certificate for new handshakes.
	second := writeCert(t, certFile, keyFile, 2)
	if err := s.ReloadTLS(); err != nil {
		t.Fatalf("ReloadTLS = %v", err)
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	got := c.ConnectionState().PeerCertificates[0]
	c.Close()
	if got.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Errorf("after ReloadTLS the server presents serial %v, want %v", got.SerialNumber, second.SerialNumber)
	}
	if _, err := client(second).Get("https://" + addr + "/healthz"); err != nil {
		t.Errorf("HTTPS with the new certificate: %v", err)
	}

	// A broken file keeps the current certificate.
	os.WriteFile(certFile, []byte("garbage"), 0o600)
	if err := s.ReloadTLS(); err == nil {
		t.Errorf("ReloadTLS(garbage) = nil, want an error")
	}
	if _, err := client(second).Get("https://" + addr + "/healthz"); err != nil {
		t.Errorf("HTTPS after a failed reload: %v", err)
	}
}

func TestTransportConfigErrors(t *testing.T) {
	for _, tr := range []Transport{{TLSCert: "x"}, {MaxConns: -1}, {ReadTimeout: -1}, {ShedIdleAfter: -1}, {TLSCert: "/nonexistent", TLSKey: "/nonexistent"}} {
		if _, err := New(context.Background(), Config{DataDir: t.TempDir(), Transport: tr}); err == nil {
			t.Errorf("New(%+v) = nil error, want an error", tr)
		}
	}
}

// TestReadyzHidesAddresses: /readyz names the dependency that is down but
// not its address, which goes to the log.
func TestReadyzHidesAddresses(t *testing.T) {
	ns := startNATS(t, &natsserver.Options{})
	addr := ns.Addr().String()
	var logs logtest.Buffer
	s := newServer(t, Config{BusURL: "nats://" + addr, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ready := func() (int, string) {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := ready(); code != 200 {
		t.Fatalf("/readyz = %d %q, want 200", code, body)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	waitFor(t, "/readyz to fail", func() bool { code, _ := ready(); return code == 503 })
	code, body := ready()
	host, port, _ := net.SplitHostPort(addr)
	if code != 503 || !strings.Contains(body, "bus unreachable") || strings.Contains(body, host) || strings.Contains(body, port) {
		t.Errorf("/readyz with NATS down = %d %q, want 503 naming the bus without its address", code, body)
	}
	if !strings.Contains(logs.String(), "readyz: dependency unreachable") || !strings.Contains(logs.String(), port) {
		t.Errorf("the log does not say what is unreachable: %s", logs.String())
	}
}

// TestBusAuth: Config.BusAuth reaches the NATS connection.
func TestBusAuth(t *testing.T) {
	ns := startNATS(t, &natsserver.Options{Authorization: "cluster-token-123"})
	u := "nats://" + ns.Addr().String()
	_, err := New(context.Background(), Config{DataDir: t.TempDir(), BusURL: u, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("New without the bus token = %v, want an authorization error", err)
	}
	s := newServer(t, Config{BusURL: u, BusAuth: natsbus.Auth{Token: "cluster-token-123"}})
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 200 {
		t.Errorf("/readyz with the bus token = %d %s", rec.Code, rec.Body)
	}

	// A cluster secret signs the node's events; too short is refused.
	if _, err := New(context.Background(), Config{DataDir: t.TempDir(), BusURL: u, BusAuth: natsbus.Auth{Token: "cluster-token-123"},
		ClusterSecret: "short", Logger: slog.New(slog.DiscardHandler)}); err == nil {
		t.Errorf("New with a 5-byte cluster secret = nil error, want an error")
	}
	// Without a secret, anything NATS lets publish can inject events: the
	// node says so at start.
	for _, secret := range []string{"", strings.Repeat("k", 32)} {
		var logs logtest.Buffer
		s := newServer(t, Config{BusURL: u, BusAuth: natsbus.Auth{Token: "cluster-token-123"}, ClusterSecret: secret,
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		s.Close()
		if warned := strings.Contains(logs.String(), "no cluster secret"); warned != (secret == "") {
			t.Errorf("cluster secret %q: warned of none = %v: %s", secret, warned, logs.String())
		}
	}
	s = newServer(t, Config{BusURL: u, BusAuth: natsbus.Auth{Token: "cluster-token-123"}, ClusterSecret: strings.Repeat("k", 32)})
	rec = httptest.NewRecorder()
	mreq := httptest.NewRequest("GET", "/metrics", nil)
	mreq.RemoteAddr, mreq.Host = "127.0.0.1:40000", "127.0.0.1:3000"
	s.Handler().ServeHTTP(rec, mreq)
	if !strings.Contains(rec.Body.String(), "chorus_bus_forged_total 0") {
		t.Errorf("/metrics has no chorus_bus_forged_total: %s", rec.Body)
	}
}

// startNATS runs an embedded NATS server on a free loopback port with opts
// (Host, Port, logging and signals are set here) until the test ends.
func startNATS(t *testing.T, opts *natsserver.Options) *natsserver.Server {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

// On shutdown the websocket sessions are closed at once, while HTTP
// requests still drain: a client trickling a request body used to hold the
// websockets open for the whole ShutdownTimeout, since the gateway was
// closed only after the HTTP server had drained.
func TestShutdownClosesWebsocketsWhileHTTPDrains(t *testing.T) {
	s := newServer(t, Config{ShutdownTimeout: 6 * time.Second})
	addr, stop, done := serveUntilStopped(t, s)
	defer func() {
		stop()
		<-done
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/v3/wsconnect", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	closed := ws.CloseRead(ctx)
	slow := dial(t, addr) // a request whose body never completes
	io.WriteString(slow, "POST /v1/Services HTTP/1.1\r\nHost: chorus\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nFriendlyName=")
	time.Sleep(200 * time.Millisecond)

	start := time.Now()
	stop()
	select {
	case <-closed.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the websocket was still open 5 s after shutdown began")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the websocket was closed %v after shutdown began, want at once", took)
	}
	slow.Close() // the drain can end
}

// TestShutdownCutsStragglersCleanly: a request still running when the
// shutdown timeout ends (a client trickling its body) is cut, as the
// timeout is for, and the stop is still clean: the webhook senders and
// the engine get their own time, and a node alone does not warn of nodes
// that would presume it dead. Such a stop exited 1 with three errors.
func TestShutdownCutsStragglersCleanly(t *testing.T) {
	var logs logtest.Buffer
	s := newServer(t, Config{ShutdownTimeout: time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	addr, stop, done := serveUntilStopped(t, s)
	c := s.Credentials()
	slow := dial(t, addr)
	defer slow.Close()
	io.WriteString(slow, "POST /v1/Services HTTP/1.1\r\nHost: chorus\r\nAuthorization: Basic "+
		base64.StdEncoding.EncodeToString([]byte(c.AccountSID+":"+c.AuthToken))+
		"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nFriendlyName=")
	time.Sleep(200 * time.Millisecond)
	stop()
	if err := runResult(t, done, 15*time.Second); err != nil {
		t.Errorf("Run = %v, want a clean stop with the straggler cut", err)
	}
	if !strings.Contains(logs.String(), "cut short") {
		t.Errorf("no warning of the request cut short:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "presume") {
		t.Errorf("a node alone warned of other nodes:\n%s", logs.String())
	}
}

// TestShutdownDoesNotWaitOnUnusedConnections: a connection on which no
// request began (an HTTP client's spare, dialed for a request that another
// connection took) does not hold up a graceful stop, and is closed.
func TestShutdownDoesNotWaitOnUnusedConnections(t *testing.T) {
	s := newServer(t, Config{ShutdownTimeout: 4 * time.Second})
	addr, stop, done := serveUntilStopped(t, s)
	spare := dial(t, addr) // sends nothing
	defer spare.Close()
	if resp, err := http.Get("http://" + addr + "/healthz"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	time.Sleep(100 * time.Millisecond) // the spare is past its accept

	start := time.Now()
	stop()
	if err := runResult(t, done, 10*time.Second); err != nil {
		t.Errorf("Run = %v, want a clean stop", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the stop took %v with an unused connection open, want well under the 4 s timeout", took)
	}
	closedWithin(t, spare, time.Second)
}

// TestBodyUnreadWithoutCredentials: a form body is read at the edge only
// for a request whose credentials authenticate; any other is answered 401
// while its body is still on its way, so that no client without
// credentials can make the server hold bodies.
func TestBodyUnreadWithoutCredentials(t *testing.T) {
	s := newServer(t, Config{})
	addr := run(t, s)
	for _, auth := range []string{"", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(s.Credentials().AccountSID+":wrong-wrong-wrong-wrong-wrong-wrong")) + "\r\n"} {
		c := dial(t, addr)
		io.WriteString(c, "POST /v1/Services HTTP/1.1\r\nHost: chorus\r\n"+auth+"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 150000\r\n\r\nFriendlyName=")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer with the body unsent (auth %q): %v", auth, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("answer with the body unsent (auth %q) = %d, want 401", auth, resp.StatusCode)
		}
		c.Close()
	}
}

// TestRedact: what error messages show of a store or bus URL holds no
// password, in any form an operator may give it.
func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://chorus:pw-SECRET@db:5432/chorus?sslmode=require", "postgres://chorus:xxxxx@db:5432/chorus?sslmode=REDACTED"},
		{"postgres://db/chorus?password=pw-SECRET", "postgres://db/chorus?password=REDACTED"},
		{"host=127.0.0.1 port=5432 password=pw-SECRET", "(not shown: not a scheme://host URL)"},
		{"u:pw-SECRET@127.0.0.1:4222", "(not shown: not a scheme://host URL)"},
		{"mysql://db/x#pw-SECRET", "mysql://db/x"},
		{"postgres:///chorus?host=/run/postgresql&password=pw-SECRET", "postgres:///chorus?host=REDACTED&password=REDACTED"},
	} {
		if got := redact(tc.in); got != tc.want || strings.Contains(got, "SECRET") {
			t.Errorf("redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, cfg := range []Config{
		{DataDir: t.TempDir(), StoreURL: "host=127.0.0.1 password=pw-SECRET"},
		{DataDir: t.TempDir(), BusURL: "u:pw-SECRET@127.0.0.1:4222"},
	} {
		cfg.Logger = slog.New(slog.DiscardHandler)
		if _, err := New(context.Background(), cfg); err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("New(%+v) = %v, want an error without the password", cfg, err)
		}
	}
}

// TestEdgeErrorsAPIStandardV1: the edge's own refusals (a NUL in the
// query, here) carry the V1.0 fields to a request that asks for them, as
// the APIs' errors do (twilio-go 1.30.1-1.30.2 read the status from them).
func TestEdgeErrorsAPIStandardV1(t *testing.T) {
	s := newServer(t, Config{})
	c := s.Credentials()
	req := httptest.NewRequest("GET", "/v1/Services?PageSize=%00", nil)
	req.Header.Set("X-Twilio-ApiVersion", "v1.0")
	req.SetBasicAuth(c.AccountSID, c.AuthToken)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	var body struct {
		Code           int `json:"code"`
		Status         int `json:"status"`
		HTTPStatusCode int `json:"httpStatusCode"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 400 || body.Code != 54060 || body.HTTPStatusCode != 400 {
		t.Errorf("a NUL in the query with X-Twilio-ApiVersion: v1.0 = %d %s (%v), want 400/54060 with httpStatusCode 400", rec.Code, rec.Body, err)
	}
}

// TestPacedHandlerKeepsOtherErrors: a flood of failed handshakes does not
// hide net/http's other errors, which have a gate of their own.
func TestPacedHandlerKeepsOtherErrors(t *testing.T) {
	var logs logtest.Buffer
	l := slog.NewLogLogger(newPacedHandler(slog.NewTextHandler(&logs, nil)), slog.LevelWarn)
	for i := range 500 {
		l.Printf("http: TLS handshake error from 127.0.0.1:%d: EOF", 1000+i)
	}
	l.Printf("http: Accept error: accept tcp 127.0.0.1:3000: accept4: too many open files; retrying in 5ms")
	if n := strings.Count(logs.String(), "TLS handshake error"); n > httpErrorBurst {
		t.Errorf("%d handshake lines of 500, want at most %d", n, httpErrorBurst)
	}
	if !strings.Contains(logs.String(), "too many open files") {
		t.Errorf("the accept error was left out behind the handshake flood:\n%s", logs.String())
	}
}

// TestConnectionCapsUninitializedWebsockets: at the cap, a newcomer takes
// the place of a websocket that has not sent a successful init for
// clientGrace, as it does for a request still arriving; a session that
// initialized keeps its place. Websockets that never sent init held their
// places for the gateway's 30 s init timeout: clients from a few hundred
// addresses (64 each) kept everyone else out, /healthz included.
func TestConnectionCapsUninitializedWebsockets(t *testing.T) {
	s := newServer(t, Config{Transport: Transport{MaxConns: 3, ShedIdleAfter: time.Minute}})
	addr := run(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dialWS := func() *websocket.Conn {
		t.Helper()
		ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/v3/wsconnect", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.CloseNow() })
		return ws
	}
	c := s.Credentials()
	tok, err := token.Mint(token.Params{AccountSID: c.AccountSID, APIKeySID: c.APIKeySID, APISecret: c.APISecret, Identity: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := protocol.HeaderOf(map[string]any{"method": "init", "id": "TMinit", "token": tok,
		"metadata": map[string]any{"ver": "1.0.2"}, "capabilities": []string{"client_update"}})
	session := dialWS()
	if err := session.Write(ctx, websocket.MessageBinary, protocol.Encode(nil, h, nil)); err != nil {
		t.Fatal(err)
	}
	_, reply, err := session.Read(ctx)
	if err != nil || !strings.Contains(string(reply), `"code":200`) {
		t.Fatalf("init reply %q, %v; want 200", reply, err)
	}
	silent := []*websocket.Conn{dialWS(), dialWS()}
	alive := func(ws *websocket.Conn) bool {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		return ws.Ping(pctx) == nil
	}
	for _, ws := range silent {
		ws.CloseRead(ctx) // answers pings; never sends init
	}
	session.CloseRead(ctx)
	// Younger than clientGrace, they keep their places.
	closedWithin(t, dial(t, addr), 5*time.Second)
	time.Sleep(clientGrace + 100*time.Millisecond)
	for range 2 {
		get(t, dial(t, addr), "/healthz")
	}
	for i, ws := range silent {
		if alive(ws) {
			t.Errorf("websocket %d without init still open after two newcomers at the cap", i)
		}
	}
	if !alive(session) {
		t.Fatal("the initialized session was evicted")
	}
	// Nothing evictable is left: the next newcomer is refused, and the
	// session stays.
	time.Sleep(clientGrace + 100*time.Millisecond)
	closedWithin(t, dial(t, addr), 5*time.Second)
	if !alive(session) {
		t.Error("the initialized session was evicted by later newcomers")
	}
}

// TestAwaitInitKeepsItsGrace: a refused init makes the websocket wait on
// its client again within the grace that began at the upgrade, not a new
// one: garbage inits, refused at once, kept a socket out of the cap's
// reach about four times longer (a reviewer's finding). While the gateway
// works on an init, and once one succeeded, it is not evictable.
func TestAwaitInitKeepsItsGrace(t *testing.T) {
	cc := &capConn{}
	r := httptest.NewRequest("GET", "/v3/wsconnect", nil)
	r = r.WithContext(context.WithValue(r.Context(), connKey{}, cc))
	mark := awaitInit(r)
	deadline := cc.evictableAt.Load()
	if until := time.Until(time.Unix(0, deadline)); until <= 0 || until > clientGrace {
		t.Fatalf("after the upgrade evictable in %v, want within %v", until, clientGrace)
	}
	mark(false)
	if at := cc.evictableAt.Load(); at != 0 {
		t.Fatalf("while an init is checked evictableAt = %d, want 0", at)
	}
	time.Sleep(10 * time.Millisecond)
	mark(true)
	if at := cc.evictableAt.Load(); at != deadline {
		t.Fatalf("after a refused init evictable at %v, want the upgrade's deadline %v", time.Unix(0, at), time.Unix(0, deadline))
	}
	mark(false) // the next init succeeded
	if at := cc.evictableAt.Load(); at != 0 {
		t.Fatalf("after a successful init evictableAt = %d, want 0", at)
	}
}
