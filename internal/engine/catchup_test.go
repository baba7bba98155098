package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
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

	const keep = 10
	eng := engine.New(engine.Config{Store: f.eng.Store(), Bus: f.bus, Now: f.clock.Now, EventKeep: keep})
	if err := eng.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if evs, err := eng.Events(ctx, f.svc.SID, m.SID, 0, 100); err != nil || len(evs) != keep || evs[0].ID != 12 {
		t.Fatalf("log after the trim = %d events from %v (%v), want %d from 12", len(evs), eventIDs(evs), err, keep)
	}
	m, err = f.eng.Object(ctx, sys, f.svc, chorus.KindMap, m.SID)
	if err != nil {
		t.Fatal(err)
	}
	want := currentItems(t, f, m)
	// b's removal (7) was trimmed: no store can replay it.
	want["b"] = client.items["b"]

	for _, limit := range []int{1, 2, 3, 100} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			c := &mapClient{pos: client.pos, items: maps.Clone(client.items)}
			if !catchUpMap(t, eng, m, c, limit) {
				t.Error("replay from 5 was not a catch-up")
			}
			if !maps.Equal(c.items, want) {
				t.Errorf("client after catch-up holds %v, want %v", c.items, want)
			}
		})
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
