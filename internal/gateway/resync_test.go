package gateway

import (
	"context"
	"encoding/json"
	"fmt"
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

// TestResyncFindsTopicsBehind: among 1,200 subscribed documents (three
// of Resync's batches), the few whose events the bus lost, in the first,
// middle and last batch, and one deleted meanwhile, get what they missed,
// in order; the others get nothing.
func TestResyncFindsTopicsBehind(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sids, sessions := e.subscribedDocs(2*resyncBatch+200, true)
	for quiet := false; !quiet; {
		quiet = true
		time.Sleep(100 * time.Millisecond)
		for _, c := range sessions {
			for drained := false; !drained; {
				select {
				case n := <-c.notes:
					if n.EventType != "subscription_established" {
						t.Fatalf("before any write: %s %s", n.EventType, n.Event)
					}
					quiet = false
				default:
					drained = true
				}
			}
		}
	}
	lost := engine.New(engine.Config{Store: e.eng.Store()}) // another node, its publishes lost
	behind := map[string]int{sids[0]: 2, sids[resyncBatch+7]: 1, sids[len(sids)-1]: 3}
	for sid, n := range behind {
		e.writeDoc(t, lost, sid, n)
	}
	deleted := sids[2*resyncBatch+1]
	if _, err := lost.DeleteObject(ctx, engine.SystemActor(), e.svc, chorus.KindDocument, deleted); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	noNotes(t, "before Resync, without a publish", sessions)
	e.gw.Resync()
	got := map[string][]string{} // by document: event types and ids
	deadline := time.After(10 * time.Second)
	for want := 2 + 1 + 3 + 1; want > 0; want-- {
		var n *note
		for n == nil {
			for _, c := range sessions {
				select {
				case n = <-c.notes:
				default:
					continue
				}
				break
			}
			select {
			case <-deadline:
				t.Fatalf("after Resync: %d notifications missing; got %v", want, got)
			case <-time.After(time.Millisecond):
			}
		}
		var ev struct {
			SID string `json:"document_sid"`
		}
		if err := json.Unmarshal(n.Event, &ev); err != nil {
			t.Fatalf("%s: %v", n.Event, err)
		}
		got[ev.SID] = append(got[ev.SID], fmt.Sprintf("%s %d", n.EventType, n.id()))
	}
	for sid, n := range behind {
		var want []string
		for i := 1; i <= n; i++ {
			want = append(want, fmt.Sprintf("document_updated %d", i))
		}
		if fmt.Sprint(got[sid]) != fmt.Sprint(want) {
			t.Errorf("document %s: got %v, want %v", sid, got[sid], want)
		}
	}
	if fmt.Sprint(got[deleted]) != "[document_removed 1]" {
		t.Errorf("deleted document: got %v, want [document_removed 1]", got[deleted])
	}
	time.Sleep(200 * time.Millisecond)
	noNotes(t, "after Resync, more", sessions)
}

// noNotes fails t if any of sessions has a notification queued.
func noNotes(t *testing.T, what string, sessions map[string]*tclient) {
	t.Helper()
	for _, c := range sessions {
		select {
		case n := <-c.notes:
			t.Fatalf("%s: %s %s", what, n.EventType, n.Event)
		default:
		}
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
// has no reason to resync. The writer knows its changes are unposted, and
// when its bus is back its announcement (AnnounceResync, which the
// server's reconnect handler sends when Unposted) has every node read
// again: the subscriber gets both events, in order.
func TestUnpostedChangesAnnounced(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sub, sid := e.subscribedDoc()

	var fail atomic.Bool
	bus := &failingPublish{Bus: e.bus, fail: &fail}
	writer := engine.New(engine.Config{Store: e.eng.Store(), Bus: bus})
	if writer.Unposted() {
		t.Fatal("Unposted before any write")
	}
	fail.Store(true)
	e.writeDoc(t, writer, sid, 2)
	if !writer.Unposted() {
		t.Fatal("Unposted = false after writes the bus refused")
	}
	if err := writer.AnnounceResync(ctx); err == nil {
		t.Fatal("AnnounceResync succeeded while the bus was away")
	}
	if !writer.Unposted() {
		t.Fatal("Unposted = false after an announcement that failed")
	}
	select {
	case n := <-sub.notes:
		t.Fatalf("event %s arrived without a publish", n.EventType)
	case <-time.After(200 * time.Millisecond):
	}
	fail.Store(false)
	if err := writer.AnnounceResync(ctx); err != nil {
		t.Fatal(err)
	}
	for want := int64(1); want <= 2; want++ {
		n := sub.nextOf("document_updated", 5*time.Second)
		if n.id() != want {
			t.Fatalf("after the announcement: event id %d, want %d", n.id(), want)
		}
	}
	if writer.Unposted() || bus.published.Load() != 1 {
		t.Errorf("after the announcement: Unposted %v, %d events published in all; want false, 1", writer.Unposted(), bus.published.Load())
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
