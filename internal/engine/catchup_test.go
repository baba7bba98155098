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
// learns of the removals the log still holds, tombstones included, in ID
// order, whatever the size of each replay call. Before, catch-up sent only
// the items that exist, and the trim kept no removal: a removed item stayed
// in such a client for good.
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
	for _, tt := range []struct {
		name      string
		removals  time.Duration // RemovalRetention (0: the default)
		log       string        // what the trim leaves
		keepsItem bool          // whether the client still holds b, whose removal (7) is trimmed
	}{
		// The default keeps removals for 7 days: b's and x's (7 and 10)
		// outlive the events around them.
		{"tombstones", 0, "[7 10 12 13 14 15 16 17 18 19 20 21]", false},
		// Removals kept no longer than the rest: b's is gone, and no
		// store can replay it.
		{"no tombstones", time.Hour, "[12 13 14 15 16 17 18 19 20 21]", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			eng := engine.New(engine.Config{Store: f.eng.Store(), Bus: f.bus, Now: f.clock.Now, EventKeep: keep, RemovalRetention: tt.removals})
			if err := eng.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			if evs, err := eng.Events(ctx, f.svc.SID, m.SID, 0, 100); err != nil || fmt.Sprint(eventIDs(evs)) != tt.log {
				t.Fatalf("log after the trim = %v (%v), want %s", eventIDs(evs), err, tt.log)
			}
			want := maps.Clone(now)
			if tt.keepsItem {
				want["b"] = client.items["b"]
			}
			for _, limit := range []int{1, 2, 3, 100} {
				c := &mapClient{pos: client.pos, items: maps.Clone(client.items)}
				if !catchUpMap(t, eng, m, c, limit) {
					t.Errorf("limit %d: replay from 5 was not a catch-up", limit)
				}
				if !maps.Equal(c.items, want) {
					t.Errorf("limit %d: client after catch-up holds %v, want %v", limit, c.items, want)
				}
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

// TestTrimLooksAtKeptEventsHourly: a sweep trims the events that became old
// since the last one; those an earlier trim kept (an object's newest, the
// tombstones) are looked at again by the hourly trim of the whole log, so
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
