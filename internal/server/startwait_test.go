package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/chorus-sync/chorus/internal/logtest"
	"github.com/chorus-sync/chorus/internal/testrelay"
)

// newWhenUp runs New in the background with the given config, waits until
// it has logged `waiting for what` twice (so it did retry), brings the
// dependency up and returns New's result.
func newWhenUp(t *testing.T, cfg Config, what string, up func()) (*Server, error) {
	t.Helper()
	var logs logtest.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	type result struct {
		s   *Server
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := New(context.Background(), cfg)
		done <- result{s, err}
	}()
	waitFor(t, "New to retry "+what, func() bool {
		return strings.Count(logs.String(), "waiting for "+what) >= 2
	})
	select {
	case r := <-done:
		t.Fatalf("New returned before %s was up: %v", what, r.err)
	default:
	}
	up()
	select {
	case r := <-done:
		if r.s != nil {
			t.Cleanup(func() { _ = r.s.Close() })
		}
		if strings.Contains(logs.String(), "password=") {
			t.Errorf("the log holds a password: %s", logs.String())
		}
		// Warnings about the configuration come once, not at each retry.
		if n := strings.Count(logs.String(), "no cluster secret"); n > 1 {
			t.Errorf("the missing cluster secret was warned of %d times while waiting for %s", n, what)
		}
		return r.s, r.err
	case <-time.After(30 * time.Second):
		t.Fatalf("New did not return within 30s of %s coming up; log:\n%s", what, logs.String())
		return nil, nil
	}
}

func checkReady(t *testing.T, s *Server) {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 200 {
		t.Errorf("/readyz = %d %s, want 200", rec.Code, rec.Body)
	}
}

// TestStartWaitsForNATS: a node started before NATS comes up once it does,
// instead of exiting.
func TestStartWaitsForNATS(t *testing.T) {
	ns := startNATS(t, &natsserver.Options{})
	relay := testrelay.New(t, ns.Addr().String())
	relay.Kill()
	s, err := newWhenUp(t, Config{BusURL: "nats://" + relay.Addr, StartWait: time.Minute}, "NATS", relay.Restart)
	if err != nil {
		t.Fatalf("New = %v, want it to connect once NATS is up", err)
	}
	checkReady(t, s)
}

// TestStartWaitGivesUp: New gives up once StartWait has passed, and at
// once without it, saying what it could not reach.
func TestStartWaitGivesUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, wait := range []time.Duration{0, 1500 * time.Millisecond} {
		start := time.Now()
		_, err := New(context.Background(), Config{DataDir: t.TempDir(), BusURL: "nats://" + addr, StartWait: wait,
			Logger: slog.New(slog.DiscardHandler)})
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "NATS") {
			t.Errorf("StartWait %v: New = %v, want an error naming NATS", wait, err)
		}
		if took < wait || took > wait+10*time.Second {
			t.Errorf("StartWait %v: New gave up after %v", wait, took)
		}
		if wait > 0 && !strings.Contains(err.Error(), "still unreachable after 1.5s") {
			t.Errorf("StartWait %v: error %q does not say how long it tried", wait, err)
		}
	}
}

// TestStartWaitRefusals: a NATS server that answers and refuses the node
// fails New at once: waiting would not fix it (TestStartWaitRefusedByPostgres
// for the store).
func TestStartWaitRefusals(t *testing.T) {
	ns := startNATS(t, &natsserver.Options{Authorization: "cluster-token-123"})
	newRefused(t, Config{BusURL: "nats://" + ns.Addr().String()})
}

// newRefused checks that New with cfg fails at once, without retrying,
// although cfg.StartWait is set.
func newRefused(t *testing.T, cfg Config) {
	t.Helper()
	var logs logtest.Buffer
	cfg.DataDir, cfg.StartWait, cfg.Logger = t.TempDir(), time.Minute, slog.New(slog.NewTextHandler(&logs, nil))
	start := time.Now()
	s, err := New(context.Background(), cfg)
	if err == nil {
		_ = s.Close()
		t.Fatalf("New(%s%s) = nil error, want a refusal", cfg.BusURL, cfg.StoreURL)
	}
	if took := time.Since(start); took > 10*time.Second || strings.Contains(logs.String(), "waiting for") {
		t.Errorf("New(%s%s) retried a refusal for %v: %v\n%s", cfg.BusURL, cfg.StoreURL, took, err, logs.String())
	}
}

// TestOneServerPerDataDir: a second server on an embedded store's data
// directory stops at start (it would serve the database without hearing
// the first one's events: its subscribers missed every write made through
// the other), until the first has closed.
func TestOneServerPerDataDir(t *testing.T) {
	dir := t.TempDir()
	first := newServer(t, Config{DataDir: dir})
	_, err := New(context.Background(), Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("a second New on %s = %v, want ErrDataDirInUse naming the directory", dir, err)
	}
	// Deleting the lock file does not let a second server in: it would
	// lock a new file of the same name (a tester's did).
	if err := os.Remove(filepath.Join(dir, ServeLockFile)); err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("a second New on %s after its lock file was deleted = %v, want ErrDataDirInUse", dir, err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	checkReady(t, newServer(t, Config{DataDir: dir}))
}
