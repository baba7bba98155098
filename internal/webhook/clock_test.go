package webhook_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// twentyAhead is the clock of a node 20 minutes ahead of the store's:
// more than MaxAge (15 minutes) away.
func twentyAhead() time.Time { return time.Now().Add(20 * time.Minute) }

// runDispatcher runs d until the test ends.
func runDispatcher(t *testing.T, d *webhook.Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		_ = d.Close(cctx)
		cancel()
		<-done
	})
}

// TestLeaderWaitsForStoreClock: a leader whose clock is 20 minutes ahead
// and whose first heartbeat fails (the store away as it starts) does not
// deliver on its own clock meanwhile, which would give up on webhooks
// written seconds ago as older than MaxAge: it leads once a heartbeat has
// read the store's clock, and sends them all.
func TestLeaderWaitsForStoreClock(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvOn(t, webhook.Config{Leader: func(context.Context) bool { return false }}, st)
	rc := newReceiver(t, e.creds.AuthToken, nil)
	svc := e.service(t, rc.URL())
	for range 3 {
		if _, err := e.eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, engine.CreateObject{}); err != nil {
			t.Fatal(err)
		}
	}
	var down atomic.Bool
	down.Store(true)
	lead := webhook.New(webhook.Config{Store: outageStore{st, &down}, Poll: 100 * time.Millisecond, Heartbeat: 200 * time.Millisecond,
		Policy: webhook.Policy{AllowPrivate: true}, Clock: twentyAhead})
	runDispatcher(t, lead)
	time.Sleep(time.Second)
	down.Store(false)
	for range 3 {
		rc.next(t, 10*time.Second)
	}
	if n := lead.Abandoned.Load(); n != 0 {
		t.Errorf("the leader gave up on %d webhooks", n)
	}
}

// TestWriterBeforeStoreClock: a node 20 minutes ahead whose heartbeats
// fail while its writes succeed dates its webhooks on the store's clock
// all the same (it reads it in the write), so the leader sends them at
// once instead of holding them for 20 minutes.
func TestWriterBeforeStoreClock(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvOn(t, webhook.Config{Poll: 100 * time.Millisecond}, st) // the leader
	rc := newReceiver(t, e.creds.AuthToken, nil)
	svc := e.service(t, rc.URL())
	var down atomic.Bool
	down.Store(true)
	w := webhook.New(webhook.Config{Store: outageStore{st, &down}, Leader: func(context.Context) bool { return false },
		Policy: webhook.Policy{AllowPrivate: true}, Clock: twentyAhead})
	runDispatcher(t, w)
	weng := engine.New(engine.Config{Store: st, Bus: mem.New(), Observe: w.Observe, Outbox: w})
	if _, err := weng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, engine.CreateObject{}); err != nil {
		t.Fatal(err)
	}
	if h := rc.next(t, 5*time.Second); h.form.Get("EventType") != "document_created" {
		t.Fatalf("webhook %v, want document_created", h.form)
	}
}
