package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/servertest"
	"github.com/chorus-sync/chorus/internal/store/postgres"
)

// TestSweepSparesExtendedTTL: on PostgreSQL the sweeper lists what expired
// without locks, so a write that extends a TTL may commit between that
// list and the deletion (another request, another node). The sweeper must
// then leave the object or item alone, not delete what was just made to
// live longer. A raw transaction plays the writer: it locks the row as
// the engine's writes do, extends the TTL, and commits while the sweep
// waits for its lock.
func TestSweepSparesExtendedTTL(t *testing.T) {
	ctx := context.Background()
	dsn := servertest.NewDatabase(t)
	st, err := postgres.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := newClock()
	eng := engine.New(engine.Config{Store: st, Bus: mem.New(), Now: clock.Now})
	_, svc := bootstrap(t, eng)
	doc, err := eng.CreateObject(ctx, sys, svc, chorus.KindDocument, engine.CreateObject{TTL: ptr(10)})
	if err != nil {
		t.Fatal(err)
	}
	m, err := eng.CreateObject(ctx, sys, svc, chorus.KindMap, engine.CreateObject{})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(11 * time.Second) // the document expired
	later := clock.Now().Add(time.Hour).UnixNano()

	c := servertest.Connect(t, dsn, nil)
	watch := servertest.Connect(t, dsn, nil)
	// extendDuringSweep extends a TTL in a transaction that holds the
	// object's lock until the sweep has listed the row and waits for it.
	extendDuringSweep := func(objectSID, extend string) {
		t.Helper()
		w, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Rollback(ctx)
		if _, err := w.Exec(ctx, `SELECT 1 FROM objects WHERE sid = $1 FOR NO KEY UPDATE`, objectSID); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Exec(ctx, extend, objectSID, later); err != nil {
			t.Fatalf("%s: %v", extend, err)
		}
		swept := make(chan error, 1)
		go func() { swept <- eng.Sweep(ctx) }()
		servertest.WaitForLockWait(t, watch, swept, "the sweep")
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-swept; err != nil {
			t.Fatalf("Sweep: %v", err)
		}
	}
	extendDuringSweep(doc.SID, `UPDATE objects SET date_expires = $2 WHERE sid = $1`)
	if _, err := eng.Object(ctx, sys, svc, chorus.KindDocument, doc.SID); err != nil {
		t.Errorf("the document whose TTL was extended: %v, want it kept", err)
	}
	if _, _, err := eng.WriteItem(ctx, sys, svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: "k"},
		engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(`{}`), ItemTTL: ptr(10)}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(11 * time.Second) // the item expired
	extendDuringSweep(m.SID, `UPDATE items SET date_expires = $2 WHERE object_sid = $1 AND key = 'k'`)
	if _, err := eng.Item(ctx, sys, svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: "k"}); err != nil {
		t.Errorf("the item whose TTL was extended: %v, want it kept", err)
	}
	// What is still expired goes, once its extended TTL has passed.
	clock.Advance(2 * time.Hour)
	if err := eng.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.View(ctx, func(tx chorus.ReadTx) error {
		if _, err := tx.Object(ctx, chorus.KindDocument, "", doc.SID); !errors.Is(err, chorus.ErrNotFound) {
			t.Errorf("the document's row after its extended TTL: %v, want it swept", err)
		}
		if _, err := tx.Item(ctx, m.SID, chorus.ItemRef{Key: "k"}); !errors.Is(err, chorus.ErrNotFound) {
			t.Errorf("the item's row after its extended TTL: %v, want it swept", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
