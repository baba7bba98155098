package gateway

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
)

// TestResyncDeliversLostTail: events that never reached the bus (a NATS
// outage) arrive once the bus reports it reconnected, in order, even when
// no later event exposes the gap.
func TestResyncDeliversLostTail(t *testing.T) {
	e := newEnv(t)
	sub, sid := e.subscribedDoc()

	// Another node's engine on the same store, whose publishes are lost.
	e.writeDoc(t, engine.New(engine.Config{Store: e.eng.Store()}), sid, 3)
	select {
	case n := <-sub.notes:
		t.Fatalf("event %s arrived without a publish", n.EventType)
	case <-time.After(200 * time.Millisecond):
	}
	e.gw.Resync()
	for want := int64(1); want <= 3; want++ {
		n := sub.nextOf("document_updated", 5*time.Second)
		if n.id() != want {
			t.Fatalf("after Resync: event id %d, want %d", n.id(), want)
		}
	}
	if got := e.gw.Stats().Delivered; got != 3 {
		t.Errorf("Delivered = %d, want 3", got)
	}
}

// failingReads is a store whose reads fail while fail is set.
type failingReads struct {
	chorus.Store
	fail *atomic.Bool
}

func (s failingReads) View(ctx context.Context, fn func(chorus.ReadTx) error) error {
	if s.fail.Load() {
		return chorus.Errorf(chorus.ErrUnavailable, "test: the store is away")
	}
	return s.Store.View(ctx, fn)
}

// withFailingReads gives the gateway an engine over the env's store and
// bus whose reads fail while fail is set.
func withFailingReads(fail *atomic.Bool) envOption {
	return func(e *env, c *Config) {
		c.Engine = engine.New(engine.Config{Store: failingReads{e.st, fail}, Bus: e.bus})
		c.GapGiveUp = 50 * time.Millisecond
		c.ResyncRetry = 50 * time.Millisecond
	}
}

// TestGapOutlivesStoreOutage: an event the bus lost, and the store away
// while the gap is filled for longer than GapGiveUp. The event is in the
// log: it must arrive, in order, once the store answers, not be skipped.
func TestGapOutlivesStoreOutage(t *testing.T) {
	var fail atomic.Bool
	e := newEnv(t, withFailingReads(&fail))
	ctx := context.Background()
	sub, sid := e.subscribedDoc()

	lost := engine.New(engine.Config{Store: e.eng.Store()}) // another node, its publish lost
	if _, err := lost.UpdateObject(ctx, engine.SystemActor(), e.svc, "document", sid, engine.UpdateObject{Data: json.RawMessage(`{"n":1}`)}); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	if _, err := e.eng.UpdateObject(ctx, engine.SystemActor(), e.svc, "document", sid, engine.UpdateObject{Data: json.RawMessage(`{"n":2}`)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond) // GapGiveUp 8 times over, reads failing
	select {
	case n := <-sub.notes:
		t.Fatalf("event %d (%s) arrived while its predecessor could not be read", n.id(), n.EventType)
	default:
	}
	fail.Store(false)
	for want := int64(1); want <= 2; want++ {
		n := sub.nextOf("document_updated", 5*time.Second)
		if n.id() != want {
			t.Fatalf("event id %d, want %d: the gap was skipped", n.id(), want)
		}
	}
	if s := e.gw.Stats(); s.GapSkips != 0 {
		t.Errorf("GapSkips = %d, want 0", s.GapSkips)
	}
}

// TestResyncRetriesUntilStoreAnswers: the bus reconnects while the store
// is still away (a partition takes both). Resync's pass fails; it must be
// run again until the lost events are delivered.
func TestResyncRetriesUntilStoreAnswers(t *testing.T) {
	var fail atomic.Bool
	e := newEnv(t, withFailingReads(&fail))
	sub, sid := e.subscribedDoc()

	e.writeDoc(t, engine.New(engine.Config{Store: e.eng.Store()}), sid, 2) // another node, its publishes lost
	fail.Store(true)
	e.gw.Resync()
	time.Sleep(300 * time.Millisecond)
	if e.gw.Stats().ResyncRetries == 0 {
		t.Fatal("no Resync pass was retried while the store failed")
	}
	fail.Store(false)
	for want := int64(1); want <= 2; want++ {
		n := sub.nextOf("document_updated", 5*time.Second)
		if n.id() != want {
			t.Fatalf("after the store came back: event id %d, want %d", n.id(), want)
		}
	}
}

// failingPublish is a Bus whose Publish fails while fail is set, as a
// node's NATS connection does while it is down.
type failingPublish struct {
	chorus.Bus
	fail      *atomic.Bool
	published atomic.Int64
}

func (b *failingPublish) Publish(ctx context.Context, events ...*chorus.Event) error {
	if b.fail.Load() {
		return chorus.Errorf(chorus.ErrUnavailable, "test: the bus is away")
	}
	b.published.Add(int64(len(events)))
	return b.Bus.Publish(ctx, events...)
}

// TestUnpostedChangesAnnounced: another node commits two writes while its
// own bus connection is down; this node's connection never dropped, so it
// has no reason to resync. When the writer's bus is back, its
// announcement (AnnounceUnposted: only when something is unposted; the
// server's reconnect handler announces with AnnounceResync) has every
// node read again: the subscriber gets both events, in order.
func TestUnpostedChangesAnnounced(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sub, sid := e.subscribedDoc()

	var fail atomic.Bool
	bus := &failingPublish{Bus: e.bus, fail: &fail}
	writer := engine.New(engine.Config{Store: e.eng.Store(), Bus: bus})
	if err := writer.AnnounceUnposted(ctx); err != nil || bus.published.Load() != 0 {
		t.Fatalf("AnnounceUnposted with nothing unposted: err %v, %d events published; want none", err, bus.published.Load())
	}
	fail.Store(true)
	e.writeDoc(t, writer, sid, 2)
	if err := writer.AnnounceUnposted(ctx); err == nil {
		t.Fatal("AnnounceUnposted succeeded while the bus was away")
	}
	select {
	case n := <-sub.notes:
		t.Fatalf("event %s arrived without a publish", n.EventType)
	case <-time.After(200 * time.Millisecond):
	}
	fail.Store(false)
	if err := writer.AnnounceUnposted(ctx); err != nil {
		t.Fatal(err)
	}
	for want := int64(1); want <= 2; want++ {
		n := sub.nextOf("document_updated", 5*time.Second)
		if n.id() != want {
			t.Fatalf("after the announcement: event id %d, want %d", n.id(), want)
		}
	}
	if err := writer.AnnounceUnposted(ctx); err != nil || bus.published.Load() != 1 {
		t.Errorf("second AnnounceUnposted: err %v, %d events published in all; want 1 (nothing new was unposted)", err, bus.published.Load())
	}
}

// subscribedDoc creates a document and subscribes a session of bob to it.
func (e *env) subscribedDoc() (*tclient, string) {
	e.t.Helper()
	sub := e.session("bob")
	doc := wantStatus(e.t, "create", sub.do("POST", "/v3/Documents", nil, map[string]any{"unique_name": "d"}), 201, 0)
	sid := doc["sid"].(string)
	sub.establish(1, docSub(sid, num(doc["last_event_id"])))
	return sub, sid
}

// writeDoc updates document sid n times through eng (another node's
// engine on the env's store, say).
func (e *env) writeDoc(t testing.TB, eng *engine.Engine, sid string, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		data, _ := json.Marshal(map[string]int{"n": i})
		if _, err := eng.UpdateObject(context.Background(), engine.SystemActor(), e.svc, "document", sid, engine.UpdateObject{Data: data}); err != nil {
			t.Fatal(err)
		}
	}
}
