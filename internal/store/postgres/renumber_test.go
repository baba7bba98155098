package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlrow"
)

// TestRenumberEvents: after a restore from a dump, every object's event
// ids (its items' too) are rebased at 1,000 times the time in ms (where no
// lost write can have taken them), keeping their order; the log keeps its
// ids, and writes go on from the new ones. It refuses while a node runs.
func TestRenumberEvents(t *testing.T) {
	ctx := context.Background()
	dsn := newSchema(t)
	st := openDSN(t, dsn, Config{})
	eng := engine.New(engine.Config{Store: st, Bus: mem.New()})
	creds, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := eng.Service(ctx, creds.AccountSID, creds.ServiceSID)
	if err != nil {
		t.Fatal(err)
	}
	sys := engine.SystemActor()
	doc, err := eng.CreateObject(ctx, sys, svc, chorus.KindDocument, engine.CreateObject{Data: json.RawMessage(`{"v":0}`)})
	if err != nil {
		t.Fatal(err)
	}
	for v := 1; v <= 3; v++ {
		if doc, err = eng.UpdateObject(ctx, sys, svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(`{"v":1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	m, err := eng.CreateObject(ctx, sys, svc, chorus.KindMap, engine.CreateObject{})
	if err != nil {
		t.Fatal(err)
	}
	var items []*chorus.Item
	for _, k := range []string{"a", "b"} {
		it, _, err := eng.WriteItem(ctx, sys, svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: k}, engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, it)
	}
	beat := func(at string) {
		t.Helper()
		if _, err := st.pool.Exec(ctx, `INSERT INTO presence_nodes (node, heartbeat) VALUES ('n1', (extract(epoch FROM clock_timestamp() - $1::interval) * 1e9)::bigint)
			ON CONFLICT (node) DO UPDATE SET heartbeat = excluded.heartbeat`, at); err != nil {
			t.Fatal(err)
		}
	}
	beat("1 second")
	if _, err := RenumberEvents(ctx, dsn, time.Now()); !errors.Is(err, ErrNodesRunning) {
		t.Fatalf("RenumberEvents with a node heartbeating = %v, want ErrNodesRunning", err)
	}
	beat("1 minute") // killed a while ago
	now := time.Now()
	base, err := RenumberEvents(ctx, dsn, now)
	if err != nil {
		t.Fatal(err)
	}
	if base != sqlrow.RenumberBase(now) {
		t.Errorf("base %d, want 1,000 times the time in ms (%d)", base, sqlrow.RenumberBase(now))
	}
	eng2 := engine.New(engine.Config{Store: openDSN(t, dsn, Config{}), Bus: mem.New()}) // a fresh node: no cache
	// Each object on its own: a document's lowest id is its last; a map's
	// is its oldest item's, and the others keep their distance from it.
	got, err := eng2.Object(ctx, sys, svc, chorus.KindDocument, doc.SID)
	if err != nil || got.LastEventID != base {
		t.Fatalf("document's last event id = %v (%v), want %d", got.LastEventID, err, base)
	}
	mapShift := base - items[0].LastEventID
	for _, want := range items {
		it, err := eng2.Item(ctx, sys, svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: want.Key})
		if err != nil || it.LastEventID != want.LastEventID+mapShift {
			t.Errorf("item %s: last event id %v (%v), want %d", want.Key, it.LastEventID, err, want.LastEventID+mapShift)
		}
	}
	next, err := eng2.UpdateObject(ctx, sys, svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(`{"v":9}`)})
	if err != nil || next.LastEventID != base+1 {
		t.Errorf("a write after: event id %v (%v), want %d", next.LastEventID, err, base+1)
	}
}

// TestClusterIdentity: a database's cluster identity is the same for
// every node; a copy (another database) is noticed; migrate
// --after-restore gives the copy its own identity, in its own database.
func TestClusterIdentity(t *testing.T) {
	ctx := context.Background()
	dsn := newSchema(t)
	a, b := openDSN(t, dsn, Config{}), openDSN(t, dsn, Config{})
	idA, copied, err := a.ClusterIdentity(ctx)
	if err != nil || idA == "" || copied {
		t.Fatalf("ClusterIdentity = %q, copied %v, %v; want an identity, not copied", idA, copied, err)
	}
	if idB, _, _ := b.ClusterIdentity(ctx); idB != idA {
		t.Errorf("two nodes of one database: identities %q and %q", idA, idB)
	}
	// As if the row came from a dump of another database.
	if _, err := a.pool.Exec(ctx, `UPDATE cluster_identity SET db_oid = 1`); err != nil {
		t.Fatal(err)
	}
	if id, copied, err := a.ClusterIdentity(ctx); err != nil || !copied || id != idA {
		t.Errorf("after a copy: %q, copied %v, %v; want the same identity, copied", id, copied, err)
	}
	if _, err := RenumberEvents(ctx, dsn, time.Now()); err != nil {
		t.Fatal(err)
	}
	if id, copied, err := b.ClusterIdentity(ctx); err != nil || copied || id == idA || id == "" {
		t.Errorf("after migrate --after-restore: %q (was %q), copied %v, %v; want a new identity, not copied", id, idA, copied, err)
	}
}

// TestAdoptCopy: a node starting on a copy (restored without migrate
// --after-restore) makes it its own, even with the original's heartbeats
// in it; nodes starting at once adopt it once, and wait for each other
// beyond lock_timeout; a database that is no copy is left as it is.
func TestAdoptCopy(t *testing.T) {
	ctx := context.Background()
	dsn := newSchema(t)
	a, b := openDSN(t, dsn, Config{}), openDSN(t, dsn, Config{})
	id, _, err := a.ClusterIdentity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if shift, err := a.AdoptCopy(ctx, time.Now()); err != nil || shift != 0 {
		t.Fatalf("AdoptCopy on the original = %d, %v; want 0, nil", shift, err)
	}
	exec := func(q string) {
		t.Helper()
		if _, err := a.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// As if restored from another database's dump, taken while its nodes
	// ran: their heartbeats came with it, and must not stop the adoption.
	exec(`UPDATE cluster_identity SET db_oid = 1`)
	exec(`INSERT INTO presence_nodes (node, heartbeat) VALUES ('original', (extract(epoch FROM clock_timestamp()) * 1e9)::bigint)`)
	// One node adopting holds the row a while (a big store): another
	// starting meanwhile waits past the sessions' lock_timeout, and finds
	// it adopted.
	hold, err := a.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(ctx, `SELECT 1 FROM cluster_identity FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(3*time.Second, func() { _ = hold.Rollback(ctx) }) // lock_timeout is 2.5 s
	shifts := make(chan int64, 2)
	for _, s := range []*Store{a, b} {
		go func() {
			shift, err := s.AdoptCopy(ctx, time.Now())
			if err != nil {
				t.Error(err)
			}
			shifts <- shift
		}()
	}
	s1, s2 := <-shifts, <-shifts
	if (s1 == 0) == (s2 == 0) {
		t.Errorf("two nodes adopting one copy at once shifted %d and %d, want exactly one shift", s1, s2)
	}
	if newID, copied, err := b.ClusterIdentity(ctx); err != nil || copied || newID == id {
		t.Errorf("after adoption: identity %q (was %q), copied %v, %v", newID, id, copied, err)
	}
	// The original's heartbeats went with the adoption: migrate
	// --after-restore run again does not wait 15 s for them to age.
	if _, err := RenumberEvents(ctx, dsn, time.Now()); err != nil {
		t.Errorf("migrate --after-restore after the adoption = %v, want nil (no node serves the copy)", err)
	}
}
