package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/testrelay"
)

// viaProxy rewrites the test DSN (a URL) to go through addr.
func viaProxy(t testing.TB, dsn, addr string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		t.Fatalf("this test needs CHORUS_TEST_POSTGRES as a postgres:// URL, got %q", dsn)
	}
	u.Host = addr
	return u.String()
}

// within runs fn and fails t unless it returns an ErrUnavailable error
// within limit.
func within(t *testing.T, what string, limit time.Duration, fn func() error) {
	t.Helper()
	start := time.Now()
	err := fn()
	took := time.Since(start)
	if !errors.Is(err, chorus.ErrUnavailable) {
		t.Errorf("%s = %v, want an error wrapping ErrUnavailable", what, err)
	}
	if took > limit {
		t.Errorf("%s took %v, want at most %v", what, took, limit)
	}
	t.Logf("%s failed after %v: %v", what, took.Round(time.Millisecond), err)
}

func TestServerUnavailable(t *testing.T) {
	for _, nobatch := range []bool{false, true} {
		t.Run(fmt.Sprintf("nobatch=%t", nobatch), func(t *testing.T) {
			testServerUnavailable(t, Config{NoBatch: nobatch, TxTimeout: 2 * time.Second, ConnectTimeout: time.Second})
		})
	}
}

func testServerUnavailable(t *testing.T, cfg Config) {
	dsn := newSchema(t)
	u, _ := url.Parse(dsn)
	p := testrelay.New(t, u.Host)
	s := openDSN(t, viaProxy(t, dsn, p.Addr), cfg)
	doc := newDoc(t, s)
	ctx := context.Background()
	update := func() error {
		return s.Update(ctx, func(tx chorus.Tx) error { return bump(ctx, tx, doc) })
	}
	view := func() error {
		return s.View(ctx, func(tx chorus.ReadTx) error {
			_, err := tx.Object(ctx, chorus.KindDocument, doc.ServiceSID, doc.SID)
			return err
		})
	}
	if err := update(); err != nil {
		t.Fatalf("Update: %v", err)
	}

	// Network cut: nothing answers; calls fail at TxTimeout, not later.
	p.Freeze()
	limit := cfg.TxTimeout + 2*time.Second
	within(t, "Update(frozen server)", limit, update)
	within(t, "View(frozen server)", limit, view)
	within(t, "Ping(frozen server)", limit, func() error { return s.Ping(ctx) })

	// Server gone: connections are refused; calls fail at once.
	p.Kill()
	within(t, "Update(dead server)", time.Second, update)
	within(t, "View(dead server)", time.Second, view)
	within(t, "Ping(dead server)", time.Second, func() error { return s.Ping(ctx) })

	// Back: the pool reconnects by itself.
	p.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := update()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Update 10s after the server came back = %v, want nil", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := view(); err != nil {
		t.Errorf("View after the server came back = %v, want nil", err)
	}
}

func TestOpenUnreachable(t *testing.T) {
	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name string
		dsn  string
	}{
		{"url", "postgres://postgres:s3cretpw@" + addr + "/test?sslmode=disable"},
		{"keyword/value", fmt.Sprintf("host=127.0.0.1 port=%s user=postgres password=s3cretpw dbname=test sslmode=disable", addr[strings.LastIndexByte(addr, ':')+1:])},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			s, err := Open(ctx, tt.dsn, nil)
			took := time.Since(start)
			if err == nil {
				s.Close()
				t.Fatalf("Open(closed port) = nil error, want one")
			}
			msg := err.Error()
			if !strings.Contains(msg, addr) {
				t.Errorf("Open(closed port) = %q, want it to name %s", msg, addr)
			}
			if strings.Contains(msg, "s3cretpw") {
				t.Errorf("Open(closed port) = %q, which shows the password", msg)
			}
			if !errors.Is(err, chorus.ErrUnavailable) {
				t.Errorf("Open(closed port) = %v, want an error wrapping ErrUnavailable", err)
			}
			if took > 5*time.Second {
				t.Errorf("Open(closed port) took %v, want it to fail fast", took)
			}
			if err := Migrate(ctx, tt.dsn); err == nil || !strings.Contains(err.Error(), addr) || strings.Contains(err.Error(), "s3cretpw") {
				t.Errorf("Migrate(closed port) = %v, want an error naming %s without the password", err, addr)
			}
		})
	}
	t.Run("invalid DSN", func(t *testing.T) {
		for dsn, why := range map[string]string{
			"postgres://postgres:s3cretpw@127.0.0.1:notaport/test":  "invalid port",
			"postgres://postgres:s3cretpw@127.0.0.1/test?sslmode=x": "sslmode is invalid",
			"postgres://postgres:s3cr%zzetpw@127.0.0.1/test":        "invalid percent-encoded token",
			"host=127.0.0.1 password=s3cretpw port=x":               "invalid port",
		} {
			_, err := Open(context.Background(), dsn, nil)
			if err == nil || strings.Contains(err.Error(), "s3cr") || !strings.Contains(err.Error(), why) {
				t.Errorf("Open(%q) = %v, want an error saying %q without the password", dsn, err, why)
			}
		}
	})
}

var _ io.Closer = (*Store)(nil)

// TestReadOnlyServerIsUnavailable: a server that takes no writes (a
// standby, or a primary set read-only during a failover) makes writes fail
// with 20503, which clients may retry, not 20500.
func TestReadOnlyServerIsUnavailable(t *testing.T) {
	dsn := newSchema(t)
	openDSN(t, dsn, Config{}) // the schema, migrated
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("default_transaction_read_only", "on")
	u.RawQuery = q.Encode()
	for _, cfg := range []Config{{}, {NoBatch: true}} {
		s := openDSN(t, u.String(), cfg)
		err := s.Update(context.Background(), func(tx chorus.Tx) error {
			return tx.PutAccount(context.Background(), &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), AuthToken: "x"})
		})
		if chorus.ErrorCode(err) != chorus.ErrUnavailable.Code || !strings.Contains(err.Error(), "read-only") {
			t.Errorf("NoBatch %v: a write to a read-only server = %v, want 20503 naming the cause", cfg.NoBatch, err)
		}
		// Readiness says so too.
		if err := s.Ping(context.Background()); chorus.ErrorCode(err) != chorus.ErrUnavailable.Code {
			t.Errorf("NoBatch %v: Ping on a read-only server = %v, want 20503", cfg.NoBatch, err)
		}
		// What a node does at start passes: it starts, and serves reads.
		if shift, err := s.AdoptCopy(context.Background(), time.Now()); err != nil || shift != 0 {
			t.Errorf("NoBatch %v: AdoptCopy on a read-only server = %d, %v; want 0, nil", cfg.NoBatch, shift, err)
		}
	}
}

// TestOpenTLSRefused: a server that answers an sslmode=require connection
// with "no TLS" is not unavailable, to be waited for: it answered, and
// `chorus serve` stops at once (it waited its whole --start-wait, saying
// the server was unreachable).
func TestOpenTLSRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 8) // SSLRequest
				if _, err := io.ReadFull(c, buf); err == nil {
					_, _ = c.Write([]byte{'N'})
				}
				time.Sleep(100 * time.Millisecond)
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := OpenConfig(ctx, "postgres://postgres:s3cretpw@"+ln.Addr().String()+"/test?sslmode=require", Config{ConnectTimeout: 2 * time.Second}, nil)
	if err == nil {
		s.Close()
		t.Fatal("Open(a server without TLS, sslmode=require) = nil error, want one")
	}
	if errors.Is(err, chorus.ErrUnavailable) || !strings.Contains(err.Error(), "TLS") || strings.Contains(err.Error(), "s3cretpw") {
		t.Errorf("Open(a server without TLS, sslmode=require) = %v; want an error about TLS, not unavailable, without the password", err)
	}
}
