package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
)

// mapClient is what a subscriber of a map holds: each key's data and the
// ID of the last event it applied, as the SDK keeps them.
type mapClient struct {
	pos   int64
	items map[string]string
}

// apply applies a replayed event the way the SDK does: events arrive in
// ID order, an update sets the item, a removal deletes it.
func (c *mapClient) apply(t *testing.T, e *chorus.Event) {
	t.Helper()
	if e.ID <= c.pos {
		t.Fatalf("event %d (%s) after position %d: out of order", e.ID, e.Type, c.pos)
	}
	c.pos = e.ID
	switch e.Type {
	case chorus.EventMapItemAdded, chorus.EventMapItemUpdated:
		c.items[e.ItemKey] = string(e.ItemData)
	case chorus.EventMapItemRemoved:
		delete(c.items, e.ItemKey)
	default:
		t.Fatalf("unexpected %s in a map's replay", e.Type)
	}
}

// catchUpMap replays m to c in calls of at most limit events, as the
// gateway does for a re-subscribing client, until c is at m's last event.
func catchUpMap(t *testing.T, eng *engine.Engine, m *chorus.Object, c *mapClient, limit int) (truncated bool) {
	t.Helper()
	for range 1000 {
		if c.pos >= m.LastEventID {
			return truncated
		}
		evs, trunc, err := eng.Replay(context.Background(), m, c.pos, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			t.Fatalf("replay after %d returned nothing; the map is at %d", c.pos, m.LastEventID)
		}
		truncated = truncated || trunc
		for _, e := range evs {
			c.apply(t, e)
		}
	}
	t.Fatal("replay does not end")
	return false
}

func currentItems(t *testing.T, f *fixture, m *chorus.Object) map[string]string {
	t.Helper()
	page, err := f.eng.Items(context.Background(), sys, f.svc, chorus.KindMap, m.SID, engine.ItemPageRequest{PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, it := range page.Items {
		out[it.Key] = string(it.Data)
	}
	return out
}

// TestCatchUpReplaysRemovals: a client whose position the trimmed log no
// longer reaches is brought up to date from the items as they are and
// learns of the removals the log still holds, in ID order, whatever the
// size of each replay call. Before, catch-up sent only the items that
// exist: a removed item stayed in such a client for good.
func TestCatchUpReplaysRemovals(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	m, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindMap, engine.CreateObject{})
	if err != nil {
		t.Fatal(err)
	}
	set := func(key string, v int) {
		t.Helper()
		_, _, err := f.eng.WriteItem(ctx, sys, f.svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: key},
			engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(fmt.Sprintf(`{"v":%d}`, v))})
		if err != nil {
			t.Fatal(err)
		}
	}
	del := func(key string) {
		t.Helper()
		if _, err := f.eng.DeleteItem(ctx, sys, f.svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: key}, ""); err != nil {
			t.Fatal(err)
		}
	}
	for i, k := range []string{"a", "b", "c", "d", "e"} {
		set(k, i)
	}
	client := &mapClient{pos: 5, items: currentItems(t, f, m)}

	// Written an hour later, then trimmed below: 6–11.
	f.clock.Advance(time.Hour)
	set("a", 10)
	del("b")
	set("x", 11)
	set("c", 12)
	del("x")
	set("d", 13)
	// Kept by the trim: 12–21, with removals of items that existed at 5
	// (e), that the client never saw (y), and one removed and written again (c).
	f.clock.Advance(30 * time.Hour)
	del("e")
	set("y", 20)
	del("c")
	set("c", 21)
	for i := range 4 {
		set("d", 22+i)
	}
	del("y")
	del("a")

	m, err = f.eng.Object(ctx, sys, f.svc, chorus.KindMap, m.SID)
	if err != nil {
		t.Fatal(err)
	}
	now := currentItems(t, f, m)

	const keep = 10
	eng := engine.New(engine.Config{Store: f.eng.Store(), Bus: f.bus, Now: f.clock.Now, EventKeep: keep})
	if err := eng.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if evs, err := eng.Events(ctx, f.svc.SID, m.SID, 0, 100); err != nil || fmt.Sprint(eventIDs(evs)) != "[12 13 14 15 16 17 18 19 20 21]" {
		t.Fatalf("log after the trim = %v (%v), want 12-21", eventIDs(evs), err)
	}
	want := maps.Clone(now)
	// b's removal (7) was trimmed: no store can replay it.
	want["b"] = client.items["b"]
	for _, limit := range []int{1, 2, 3, 100} {
		c := &mapClient{pos: client.pos, items: maps.Clone(client.items)}
		if !catchUpMap(t, eng, m, c, limit) {
			t.Errorf("limit %d: replay from 5 was not a catch-up", limit)
		}
		if !maps.Equal(c.items, want) {
			t.Errorf("limit %d: client after catch-up holds %v, want %v", limit, c.items, want)
		}
	}
}

// TestReplayStopsAtALogHole: a log with a hole after its first events (an
// event trimmed before later ones: the clock stepped back when it was
// written) is replayed up to the hole, and the rest caught up from state,
// instead of jumping the hole.
func TestReplayStopsAtALogHole(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	doc, _ := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{})
	write := func(i int) {
		t.Helper()
		var err error
		doc, err = f.eng.UpdateObject(ctx, sys, f.svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
		if err != nil {
			t.Fatal(err)
		}
	}
	f.clock.Advance(48 * time.Hour)
	write(1) // event 1
	f.clock.Advance(-48 * time.Hour)
	write(2) // event 2, logged 48 h before event 1
	f.clock.Advance(48 * time.Hour)
	write(3) // event 3
	f.clock.Advance(2 * time.Hour)
	eng := engine.New(engine.Config{Store: f.eng.Store(), Bus: f.bus, Now: f.clock.Now, EventKeep: 1})
	if err := eng.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if evs, err := eng.Events(ctx, f.svc.SID, doc.SID, 0, 100); err != nil || fmt.Sprint(eventIDs(evs)) != "[1 3]" {
		t.Fatalf("log = %v (%v), want [1 3]", eventIDs(evs), err)
	}
	evs, truncated, err := eng.Replay(ctx, doc, 0, 100)
	if err != nil || truncated || fmt.Sprint(eventIDs(evs)) != "[1]" {
		t.Fatalf("Replay(after 0) = %v, truncated %v, %v; want [1], the events before the hole", eventIDs(evs), truncated, err)
	}
	evs, truncated, err = eng.Replay(ctx, doc, 1, 100)
	if err != nil || !truncated || len(evs) != 1 || evs[0].ID != 3 || string(evs[0].Data) != `{"i":3}` {
		t.Fatalf("Replay(after 1) = %v, truncated %v, %v; want the current state at 3", eventIDs(evs), truncated, err)
	}
}

func eventIDs(evs []*chorus.Event) []int64 {
	ids := make([]int64, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	return ids
}

// TestTrimLooksAtKeptEventsHourly: a sweep trims the events that became old
// since the last one; those an earlier trim kept (an object's newest) are
// looked at again by the hourly trim of the whole log, so
// that what the log keeps costs a scan once an hour, not at every sweep.
func TestTrimLooksAtKeptEventsHourly(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	eng := engine.New(engine.Config{Store: f.eng.Store(), Bus: f.bus, Now: f.clock.Now, EventKeep: 2, EventRetention: 10 * time.Minute})
	doc, _ := eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{})
	write := func(n int) {
		t.Helper()
		for range n {
			if _, err := eng.UpdateObject(ctx, sys, f.svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	sweep := func(want string) {
		t.Helper()
		if err := eng.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		if evs, err := eng.Events(ctx, f.svc.SID, doc.SID, 0, 100); err != nil || fmt.Sprint(eventIDs(evs)) != want {
			t.Fatalf("log after the sweep = %v (%v), want %s", eventIDs(evs), err, want)
		}
	}
	write(3)
	f.clock.Advance(20 * time.Minute)
	sweep("[2 3]") // the whole log: 1 is old and not among the newest 2
	write(4)
	f.clock.Advance(15 * time.Minute)
	// 4-7 became old: 4 and 5 go. 2 and 3 are no longer among the newest
	// but were looked at 15 minutes ago.
	sweep("[2 3 6 7]")
	f.clock.Advance(46 * time.Minute)
	sweep("[6 7]") // an hour after the last look at the whole log
}

// TestCatchUpCutIgnoresOtherServices: removals logged under the object's
// SID by another service (an earlier holder of a reused SID) are never
// sent, and, although dropped, they still count for the cut: before, they
// filled the limit unseen, the cut was skipped and the next call started
// past one of the object's own removals (found in review).
func TestCatchUpCutIgnoresOtherServices(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	m, _ := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindMap, engine.CreateObject{})
	set := func(key string) {
		t.Helper()
		if _, _, err := f.eng.WriteItem(ctx, sys, f.svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: key},
			engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	del := func(key string) {
		t.Helper()
		if _, err := f.eng.DeleteItem(ctx, sys, f.svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: key}, ""); err != nil {
			t.Fatal(err)
		}
	}
	set("a") // 1
	set("b") // 2: the client is here, holding a and b
	set("d") // 3, trimmed below; another service's removal takes its ID
	del("a") // 4
	set("d") // 5, trimmed below; another service's removal takes its ID
	del("b") // 6
	set("d") // 7
	if err := f.eng.Store().Update(ctx, func(tx chorus.Tx) error {
		if _, err := tx.TrimEvents(ctx, chorus.EventTrim{Before: f.clock.Now().Add(time.Hour)}); err != nil {
			return err
		}
		for _, id := range []int64{3, 4, 5, 6} {
			e := &chorus.Event{Type: chorus.EventMapItemRemoved, ID: id, AccountSID: "ACother", ServiceSID: "ISother",
				ObjectSID: m.SID, Kind: chorus.KindMap, ItemKey: "zz", DateCreated: f.clock.Now(), Identity: "x"}
			if id == 4 || id == 6 { // the object's own removals, put back
				e.AccountSID, e.ServiceSID, e.ItemKey = m.AccountSID, m.ServiceSID, map[int64]string{4: "a", 6: "b"}[id]
			}
			if err := tx.AppendEvent(ctx, e); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m, _ = f.eng.Object(ctx, sys, f.svc, chorus.KindMap, m.SID)
	for _, limit := range []int{1, 2, 3, 100} {
		c := &mapClient{pos: 2, items: map[string]string{"a": "{}", "b": "{}"}}
		catchUpMap(t, f.eng, m, c, limit)
		if _, ok := c.items["zz"]; ok || len(c.items) != 1 || c.items["d"] != "{}" {
			t.Errorf("limit %d: client holds %v, want only d", limit, c.items)
		}
	}
}

// TestCatchUpSendsListContext: a list whose context changed after a hole
// in its log gets the logged list_context_updated in its catch-up (before,
// replay stopped at the hole and catch-up sent no context: the client kept
// the old one; found in review).
func TestCatchUpSendsListContext(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	l, _ := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindList, engine.CreateObject{})
	write := func(i int) {
		t.Helper()
		var err error
		l, err = f.eng.UpdateObject(ctx, sys, f.svc, chorus.KindList, l.SID, engine.UpdateObject{Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
		if err != nil {
			t.Fatal(err)
		}
	}
	f.clock.Advance(48 * time.Hour)
	write(1)
	f.clock.Advance(-48 * time.Hour)
	write(2) // logged 48 h before the others: trimmed, a hole
	f.clock.Advance(48 * time.Hour)
	write(3)
	f.clock.Advance(2 * time.Hour)
	eng := engine.New(engine.Config{Store: f.eng.Store(), Bus: f.bus, Now: f.clock.Now, EventKeep: 1})
	if err := eng.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	var got []*chorus.Event
	for pos := int64(0); pos < l.LastEventID; {
		evs, _, err := eng.Replay(ctx, l, pos, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			t.Fatalf("replay after %d returned nothing; the list is at %d", pos, l.LastEventID)
		}
		got = append(got, evs...)
		pos = evs[len(evs)-1].ID
	}
	if last := got[len(got)-1]; last.Type != chorus.EventListContextUpdated || string(last.Data) != `{"i":3}` {
		t.Errorf("last replayed = %s %s, want list_context_updated {\"i\":3}", last.Type, last.Data)
	}
}

// trimCounter counts TrimEvents calls: one per trim transaction.
type trimCounter struct {
	chorus.Store
	n *atomic.Int64
}
type trimCountTx struct {
	chorus.Tx
	n *atomic.Int64
}

func (s trimCounter) Update(ctx context.Context, fn func(chorus.Tx) error) error {
	return s.Store.Update(ctx, func(tx chorus.Tx) error { return fn(trimCountTx{tx, s.n}) })
}
func (t trimCountTx) TrimEvents(ctx context.Context, p chorus.EventTrim) (int, error) {
	t.n.Add(1)
	return t.Tx.TrimEvents(ctx, p)
}

// TestTrimWholeLogInChunks: the hourly trim of the whole log runs in
// transactions of TrimChunk events, ties at one instant kept together, and
// leaves what one transaction would: each existing object's newest Keep
// events, nothing old of a deleted one.
func TestTrimWholeLogInChunks(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	docs := make([]*chorus.Object, 3)
	for i := range docs {
		docs[i], _ = f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{})
	}
	for round := range 6 {
		for _, d := range docs { // the three writes of a round share one instant
			if _, err := f.eng.UpdateObject(ctx, sys, f.svc, chorus.KindDocument, d.SID, engine.UpdateObject{Data: json.RawMessage(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
		f.clock.Advance(time.Duration(round+1) * time.Minute)
	}
	if _, err := f.eng.DeleteObject(ctx, sys, f.svc, chorus.KindDocument, docs[2].SID); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(48 * time.Hour)
	var trims atomic.Int64
	eng := engine.New(engine.Config{Store: trimCounter{f.eng.Store(), &trims}, Bus: f.bus, Now: f.clock.Now, EventKeep: 2, TrimChunk: 2})
	if err := eng.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	// 19 events (6 per document and a removal) over 7 instants: a
	// transaction per instant, and one for the rest.
	if n := trims.Load(); n < 7 {
		t.Errorf("the whole-log trim ran in %d transactions, want one per instant at least (7)", n)
	}
	for i, want := range []string{"[5 6]", "[5 6]", "[]"} {
		if evs, err := eng.Events(ctx, f.svc.SID, docs[i].SID, 0, 100); err != nil || fmt.Sprint(eventIDs(evs)) != want {
			t.Errorf("document %d's log = %v (%v), want %s", i, eventIDs(evs), err, want)
		}
	}
}
