package engine_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
)

// downBus is an in-process bus whose Publish fails while down is set.
type downBus struct {
	*mem.Bus
	down atomic.Bool
}

func (b *downBus) Publish(ctx context.Context, events ...*chorus.Event) error {
	if b.down.Load() {
		return chorus.Wrap(chorus.ErrUnavailable, errors.New("bus down"))
	}
	return b.Bus.Publish(ctx, events...)
}

// TestUnpostedReportedOncePerAnnouncement: a change committed while its
// events cannot be published is reported to Config.Unposted the first
// time, not at every such change; after AnnounceResync the next one is
// reported again. Unposted stays true until the announcement.
func TestUnpostedReportedOncePerAnnouncement(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	bus := &downBus{Bus: mem.New()}
	t.Cleanup(func() { bus.Close() })
	var reported atomic.Int32
	eng := engine.New(engine.Config{Store: f.eng.Store(), Bus: bus, Now: f.clock.Now, Unposted: func() { reported.Add(1) }})
	create := func() {
		t.Helper()
		if _, err := eng.CreateObject(ctx, engine.SystemActor(), f.svc, chorus.KindDocument, engine.CreateObject{}); err != nil {
			t.Fatalf("CreateObject: %v", err)
		}
	}

	create()
	if eng.Unposted() || reported.Load() != 0 {
		t.Fatalf("bus up: Unposted() = %t, reported %d times, want false, 0", eng.Unposted(), reported.Load())
	}
	bus.down.Store(true)
	create()
	create()
	if !eng.Unposted() || reported.Load() != 1 {
		t.Fatalf("two changes while down: Unposted() = %t, reported %d times, want true, 1", eng.Unposted(), reported.Load())
	}
	bus.down.Store(false)
	if err := eng.AnnounceResync(ctx); err != nil {
		t.Fatalf("AnnounceResync: %v", err)
	}
	if eng.Unposted() {
		t.Fatal("Unposted() after the announcement = true, want false")
	}
	bus.down.Store(true)
	create()
	if reported.Load() != 2 {
		t.Fatalf("a change while down after the announcement: reported %d times in all, want 2", reported.Load())
	}
}

// TestUnpublishedWarnedNotPerWrite: while the bus is down every write's
// events fail to publish; the log says so once (with the count), not once
// per write (an operator saw 322 lines in 16 s at 20 writes/s).
func TestUnpublishedWarnedNotPerWrite(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	bus := &downBus{Bus: mem.New()}
	t.Cleanup(func() { bus.Close() })
	var logs bytes.Buffer
	eng := engine.New(engine.Config{Store: f.eng.Store(), Bus: bus, Now: f.clock.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	bus.down.Store(true)
	for range 50 {
		if _, err := eng.CreateObject(ctx, engine.SystemActor(), f.svc, chorus.KindDocument, engine.CreateObject{}); err != nil {
			t.Fatalf("CreateObject: %v", err)
		}
	}
	if n := strings.Count(logs.String(), "publish events"); n != 1 || !strings.Contains(logs.String(), "changes=1") {
		t.Errorf("50 writes with the bus down logged %d warnings, want 1 (for the first change):\n%s", n, logs.String())
	}
}

// A stream message is kept nowhere: when the bus does not take it, no
// subscriber gets it, so its publisher gets 503 (it was answered as
// published before, and a tester lost 459 such messages during a NATS
// outage). Objects are unaffected: their changes are logged and caught
// up.
func TestStreamMessageRefusedWhileBusDown(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	bus := &downBus{Bus: mem.New()}
	t.Cleanup(func() { bus.Close() })
	eng := engine.New(engine.Config{Store: f.eng.Store(), Bus: bus, Now: f.clock.Now})
	stream, err := eng.CreateObject(ctx, engine.SystemActor(), f.svc, chorus.KindStream, engine.CreateObject{})
	if err != nil {
		t.Fatal(err)
	}
	bus.down.Store(true)
	_, err = eng.PublishMessage(ctx, engine.SystemActor(), f.svc, stream.SID, []byte(`{"n":1}`))
	if e := chorus.AsError(err); e.Status != 503 || e.Code != 20503 {
		t.Fatalf("PublishMessage with the bus down = %v, want 503 20503", err)
	}
	bus.down.Store(false)
	if _, err := eng.PublishMessage(ctx, engine.SystemActor(), f.svc, stream.SID, []byte(`{"n":2}`)); err != nil {
		t.Fatalf("PublishMessage with the bus back = %v", err)
	}
}
