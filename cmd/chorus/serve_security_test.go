package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chorus-sync/chorus/internal/logtest"
	"github.com/chorus-sync/chorus/internal/server"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 with serial.
func selfSigned(t *testing.T, certFile, keyFile string, serial int64) {
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
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

// TestServeTLS: --tls-cert/--tls-key serve HTTPS; SIGHUP reloads the files.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	selfSigned(t, certFile, keyFile, 7)
	cmd := exec.Command(binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"),
		"--tls-cert", certFile, "--tls-key", keyFile)
	cmd.Env = cleanEnv()
	p := &serveProc{cmd: cmd, stderr: &logtest.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.done })
	var addr string
	deadline := time.Now().Add(30 * time.Second)
	for addr == "" {
		if m := listeningRE.FindStringSubmatch(p.stderr.String()); m != nil {
			addr = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("chorus serve did not listen: %s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	serial := func() int64 {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("TLS dial: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if got := serial(); got != 7 {
		t.Fatalf("serial = %d, want 7", got)
	}
	if !strings.Contains(p.stderr.String(), "tls=true") {
		t.Errorf("the listening line does not say TLS: %s", p.stderr.String())
	}
	selfSigned(t, certFile, keyFile, 8)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for serial() != 8 {
		if time.Now().After(deadline) {
			t.Fatalf("the certificate was not reloaded on SIGHUP: %s", p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.stop(t)
}

func TestServeSecurityUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--tls-cert", "x.pem"},
		{"--max-conns", "-1"},
		{"--max-conns-per-ip", "many"},
		{"--bus-creds", "x.creds"}, // without --bus
		{"--trusted-proxies", "10.0.0.0/8,nginx"},
	} {
		_, errOut, code := chorusCmd(t, cleanEnv(), append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
		if code != exitUsage {
			t.Errorf("chorus serve %v = exit %d (%s), want %d", args, code, errOut, exitUsage)
		}
	}
	_, errOut, code := chorusCmd(t, cleanEnv("CHORUS_CLUSTER_SECRET=short"), "serve", "--listen", "127.0.0.1:0", "--bus", "nats://127.0.0.1:1")
	if code != exitUsage || !strings.Contains(errOut, "CHORUS_CLUSTER_SECRET") {
		t.Errorf("chorus serve with a short cluster secret = exit %d (%s), want %d", code, errOut, exitUsage)
	}
	_, errOut, code = chorusCmd(t, cleanEnv(envMetricsPublic+"=maybe"), "serve", "--listen", "127.0.0.1:0")
	if code != exitUsage || !strings.Contains(errOut, envMetricsPublic) {
		t.Errorf("chorus serve with %s=maybe = exit %d (%s), want %d", envMetricsPublic, code, errOut, exitUsage)
	}
}

// Without --max-conns the node caps its connections below its limit on
// open files: one client holding every descriptor made it refuse everyone
// ("accept4: too many open files"), the store and webhooks included.
// TestWebhookMaxInFlight: webhook requests in flight get half of what the
// connection cap leaves of the open-files limit, between 16 and the
// package's default; the default when the limit or the cap is unknown.
func TestWebhookMaxInFlight(t *testing.T) {
	for _, tt := range []struct {
		openFiles uint64
		maxConns  int
		want      int
	}{
		{600, 344, 128},       // a tester's ulimit -n 600: the 256 left are shared
		{20_000, 18_000, 512}, // 1,000, capped at the default
		{1_024, 1_000, 16},    // at least 16
		{20_000, 0, 0},        // no cap: the package's default
		{0, 344, 0},           // limit unknown
		{1_000, 5_000, 0},     // a cap above the limit: the default
	} {
		if got := webhookMaxInFlight(tt.openFiles, tt.maxConns); got != tt.want {
			t.Errorf("webhookMaxInFlight(%d, %d) = %d, want %d", tt.openFiles, tt.maxConns, got, tt.want)
		}
	}
}

func TestDefaultMaxConns(t *testing.T) {
	for _, tt := range []struct {
		openFiles uint64
		want      int
	}{
		{20_000, 18_000},
		{1_048_576, 943_718},
		{1_024, 768}, // at least 256 left
		{300, 0},     // too small to leave a margin: no cap
		{0, 0},       // unknown
	} {
		if got := defaultMaxConns(tt.openFiles); got != tt.want {
			t.Errorf("defaultMaxConns(%d) = %d, want %d", tt.openFiles, got, tt.want)
		}
	}
	apply := func(args ...string) server.Config {
		t.Helper()
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		f := addSecurityFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		var cfg server.Config
		if err := f.apply(&cfg); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	t.Setenv(envMaxConns, "") // the flag's default reads it
	limit := openFilesLimit()
	if got, want := apply().Transport.MaxConns, defaultMaxConns(limit); got != want || (limit >= 512 && (got <= 0 || uint64(got) >= limit)) {
		t.Errorf("no --max-conns: cap %d, want %d, below the open-files limit %d", got, want, limit)
	}
	if got := apply("--max-conns", "0").Transport.MaxConns; got != 0 {
		t.Errorf("--max-conns 0: cap %d, want none", got)
	}
	if got := apply("--max-conns", "50").Transport.MaxConns; got != 50 {
		t.Errorf("--max-conns 50: cap %d, want 50", got)
	}
}
