package nats_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/bustest"
	"github.com/chorus-sync/chorus/internal/bus/nats"
)

// runSecured starts an embedded nats-server with opts on a free loopback
// port and returns its host:port.
func runSecured(t *testing.T, opts *server.Options) string {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s.Addr().String()
}

// tryOpen opens a bus, closed at the end of the test.
func tryOpen(t *testing.T, url string, a nats.Auth) (*nats.Bus, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := nats.Open(ctx, url, quietLogger(), nats.WithAuth(a), nats.WithPrefix(uniquePrefix(t)))
	if err == nil {
		t.Cleanup(func() { b.Close() })
	}
	return b, err
}

// roundTrip checks that an event published on b comes back to it.
func roundTrip(t *testing.T, b *nats.Bus) {
	t.Helper()
	x := bustest.NewObjectSID()
	got := make(chan *chorus.Event, 1)
	cancel, err := b.Subscribe(x, func(e *chorus.Event) { got <- e })
	if err != nil {
		t.Fatalf("Subscribe = %v", err)
	}
	defer cancel()
	if err := b.Publish(context.Background(), bustest.NewEvent(x, 1)); err != nil {
		t.Fatalf("Publish = %v", err)
	}
	select {
	case <-got:
	case <-time.After(bustest.Deadline):
		t.Fatal("event not delivered")
	}
}

// wantRefused checks that Open failed with a clear, secret-free error.
func wantRefused(t *testing.T, what string, err error, mention string, secrets ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: Open = nil error, want a refusal", what)
	}
	if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(mention)) {
		t.Errorf("%s: Open = %v, want it to mention %q", what, err, mention)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("%s: error %q holds a secret", what, err)
		}
	}
}

func TestAuthUserPassword(t *testing.T) {
	const user, pass = "chorus", "s3cret-bus-password"
	addr := runSecured(t, &server.Options{Username: user, Password: pass})

	b, err := tryOpen(t, "nats://"+user+":"+pass+"@"+addr, nats.Auth{})
	if err != nil {
		t.Fatalf("URL userinfo: %v", err)
	}
	roundTrip(t, b)
	b, err = tryOpen(t, "nats://"+addr, nats.Auth{User: user, Password: pass})
	if err != nil {
		t.Fatalf("Auth.User/Password: %v", err)
	}
	roundTrip(t, b)

	_, err = tryOpen(t, "nats://"+addr, nats.Auth{})
	wantRefused(t, "no credentials", err, "authorization")
	_, err = tryOpen(t, "nats://"+user+":wrong-password@"+addr, nats.Auth{})
	wantRefused(t, "wrong password", err, "authorization", "wrong-password")
}

func TestAuthToken(t *testing.T) {
	const tok = "bus-token-0123456789"
	addr := runSecured(t, &server.Options{Authorization: tok})
	b, err := tryOpen(t, "nats://"+addr, nats.Auth{Token: tok})
	if err != nil {
		t.Fatalf("Auth.Token: %v", err)
	}
	roundTrip(t, b)
	b, err = tryOpen(t, "nats://"+tok+"@"+addr, nats.Auth{})
	if err != nil {
		t.Fatalf("token in the URL: %v", err)
	}
	roundTrip(t, b)
	_, err = tryOpen(t, "nats://"+addr, nats.Auth{Token: "not-the-token"})
	wantRefused(t, "wrong token", err, "authorization", "not-the-token")
}

func TestAuthNKey(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := runSecured(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	b, err := tryOpen(t, "nats://"+addr, nats.Auth{NKeySeedFile: seedFile})
	if err != nil {
		t.Fatalf("NKey: %v", err)
	}
	roundTrip(t, b)

	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	otherFile := filepath.Join(t.TempDir(), "other.nk")
	os.WriteFile(otherFile, otherSeed, 0o600)
	_, err = tryOpen(t, "nats://"+addr, nats.Auth{NKeySeedFile: otherFile})
	wantRefused(t, "unknown NKey", err, "authorization", string(otherSeed))
	_, err = tryOpen(t, "nats://"+addr, nats.Auth{NKeySeedFile: filepath.Join(t.TempDir(), "missing.nk")})
	wantRefused(t, "missing seed file", err, "nkey")
}

func TestAuthConfigErrors(t *testing.T) {
	for _, a := range []nats.Auth{
		{User: "u"},
		{User: "u", Password: "p", Token: "t"},
		{CertFile: "c.pem"},
	} {
		if _, err := nats.Open(context.Background(), "nats://127.0.0.1:1", quietLogger(), nats.WithAuth(a)); err == nil || errors.Is(err, chorus.ErrUnavailable) {
			t.Errorf("Open(%+v) = %v, want a configuration error", a, err)
		}
	}
}

// selfSignedCA writes a self-signed CA certificate (usable as a server or
// client certificate for 127.0.0.1) and its key, and returns the files.
func selfSignedCA(t *testing.T, dir, name string) (certFile, keyFile string, cert tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

func TestAuthTLS(t *testing.T) {
	dir := t.TempDir()
	srvCA, _, srvCert := selfSignedCA(t, dir, "server")
	cliCert, cliKey, cli := selfSignedCA(t, dir, "client")
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(cli.Leaf)

	t.Run("server TLS", func(t *testing.T) {
		addr := runSecured(t, &server.Options{
			TLS: true, TLSConfig: &tls.Config{Certificates: []tls.Certificate{srvCert}, MinVersion: tls.VersionTLS12},
			Username: "u", Password: "p",
		})
		b, err := tryOpen(t, "tls://u:p@"+addr, nats.Auth{CAFile: srvCA})
		if err != nil {
			t.Fatalf("tls:// with the CA: %v", err)
		}
		roundTrip(t, b)
		_, err = tryOpen(t, "tls://u:p@"+addr, nats.Auth{})
		wantRefused(t, "tls:// without the CA", err, "certificate")
	})
	t.Run("mutual TLS", func(t *testing.T) {
		addr := runSecured(t, &server.Options{
			TLS: true, TLSVerify: true,
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientCAs: clientCAs,
				ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
		})
		b, err := tryOpen(t, fmt.Sprintf("tls://%s", addr), nats.Auth{CAFile: srvCA, CertFile: cliCert, KeyFile: cliKey})
		if err != nil {
			t.Fatalf("mutual TLS: %v", err)
		}
		roundTrip(t, b)
		_, err = tryOpen(t, "tls://"+addr, nats.Auth{CAFile: srvCA})
		if err == nil {
			t.Fatal("mutual TLS without a client certificate: Open = nil error, want a refusal")
		}
	})
}

// TestAuthCreds: decentralised JWT auth with a .creds file, against a
// server in operator mode.
func TestAuthCreds(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	operator, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ajwt, err := jwt.NewAccountClaims(apub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(apub, ajwt); err != nil {
		t.Fatal(err)
	}
	addr := runSecured(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{operator}, AccountResolver: resolver})

	writeCreds := func(name string) string {
		ukp, _ := nkeys.CreateUser()
		upub, _ := ukp.PublicKey()
		ujwt, err := jwt.NewUserClaims(upub).Encode(akp)
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := ukp.Seed()
		creds, err := jwt.FormatUserConfig(ujwt, seed)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), name)
		os.WriteFile(f, creds, 0o600)
		return f
	}
	b, err := tryOpen(t, "nats://"+addr, nats.Auth{CredsFile: writeCreds("user.creds")})
	if err != nil {
		t.Fatalf("creds file: %v", err)
	}
	roundTrip(t, b)
	_, err = tryOpen(t, "nats://"+addr, nats.Auth{})
	wantRefused(t, "no creds", err, "authorization")
}
