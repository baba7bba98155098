package sqlite

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlrow"
)

// renumberFixture is a store file with a document written docWrites
// times and a map with two items, closed.
type renumberFixture struct {
	path     string
	doc, m   string
	svc, acc string
}

func writeFixture(t *testing.T, path string, docWrites int) renumberFixture {
	t.Helper()
	ctx := context.Background()
	st, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
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
	f := renumberFixture{path: path, svc: svc.SID, acc: creds.AccountSID}
	doc, err := eng.CreateObject(ctx, sys, svc, chorus.KindDocument, engine.CreateObject{UniqueName: "doc"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := eng.CreateObject(ctx, sys, svc, chorus.KindMap, engine.CreateObject{UniqueName: "map"})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b"} {
		if _, _, err := eng.WriteItem(ctx, sys, svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: k}, engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	for range docWrites {
		if doc, err = eng.UpdateObject(ctx, sys, svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(`{"v":1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	f.doc, f.m = doc.SID, m.SID
	return f
}

// read returns the fixture's ids as the file holds them now.
func (f renumberFixture) read(t *testing.T) (docID, mapID int64, items []int64) {
	t.Helper()
	ctx := context.Background()
	st, err := Open(ctx, f.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = st.View(ctx, func(tx chorus.ReadTx) error {
		d, err := tx.Object(ctx, chorus.KindDocument, f.svc, f.doc)
		if err != nil {
			return err
		}
		m, err := tx.Object(ctx, chorus.KindMap, f.svc, f.m)
		if err != nil {
			return err
		}
		docID, mapID = d.LastEventID, m.LastEventID
		for _, k := range []string{"a", "b"} {
			it, err := tx.Item(ctx, f.m, chorus.ItemRef{Key: k})
			if err != nil {
				return err
			}
			items = append(items, it.LastEventID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return docID, mapID, items
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRenumberRebasesEachObject: a restore rebases each object on its own
// (event ids count per object): its lowest id becomes 1,000 times the
// time in ms, its others keep their distance. Restores do not add up, a
// new object beside rebased ones (id 1) does not push them further, and
// an older backup restored seconds after a newer one lands above what
// clients saw of the newer. A rebase on the store's lowest id doubled the
// ids at every restore once one object was new.
func TestRenumberRebasesEachObject(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := writeFixture(t, filepath.Join(dir, "live.db"), 3)
	_, m0, it0 := f.read(t)

	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	base, err := renumberEvents(ctx, f.path, t0)
	if err != nil {
		t.Fatal(err)
	}
	if base != sqlrow.RenumberBase(t0) {
		t.Errorf("base %d, want %d", base, sqlrow.RenumberBase(t0))
	}
	d1, m1, it1 := f.read(t)
	lo := min(m0, it0[0], it0[1])
	if d1 != base || m1 != base+(m0-lo) || it1[0] != base+(it0[0]-lo) || it1[1] != base+(it0[1]-lo) {
		t.Errorf("after a restore: doc %d, map %d, items %v; want doc %d, map %d, items at the same distances below it", d1, m1, it1, base, base+(m0-lo))
	}

	// A new object (its ids from 1) beside the rebased ones, then a
	// restore a day later: each rebased, nothing moved up twice.
	st, err := Open(ctx, f.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	eng := engine.New(engine.Config{Store: st, Bus: mem.New()})
	svc, err := eng.Service(ctx, f.acc, f.svc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, engine.CreateObject{}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	t1 := t0.Add(24 * time.Hour)
	if _, err := renumberEvents(ctx, f.path, t1); err != nil {
		t.Fatal(err)
	}
	d2, m2, _ := f.read(t)
	if b1 := sqlrow.RenumberBase(t1); d2 != b1 || m2 != b1+(m0-lo) {
		t.Errorf("second restore: doc %d, map %d; want %d and %d", d2, m2, b1, b1+(m0-lo))
	}

	// The 3 a.m. sequence: backups before and after 50 more writes to
	// the document; the newer restored, then the older 5 ms later (a
	// thousand ids a millisecond: 5,000 > 50).
	older := filepath.Join(dir, "older.db")
	fo := writeFixture(t, older, 3)
	newer := filepath.Join(dir, "newer.db")
	copyFile(t, older, newer)
	fn := fo
	fn.path = newer
	st, err = Open(ctx, newer, nil)
	if err != nil {
		t.Fatal(err)
	}
	eng = engine.New(engine.Config{Store: st, Bus: mem.New()})
	if svc, err = eng.Service(ctx, fo.acc, fo.svc); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if _, err := eng.UpdateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, fo.doc, engine.UpdateObject{Data: json.RawMessage(`{"v":2}`)}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	if _, err := renumberEvents(ctx, newer, t1); err != nil {
		t.Fatal(err)
	}
	seenDoc, _, _ := fn.read(t)
	if _, err := renumberEvents(ctx, older, t1.Add(5*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if restored, _, _ := fo.read(t); restored <= seenDoc {
		t.Errorf("the older backup restored 5 ms after the newer: document id %d, not above the %d clients saw", restored, seenDoc)
	}
}
