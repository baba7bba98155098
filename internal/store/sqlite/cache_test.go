package sqlite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

// TestObjectCacheNames drives the cache with random writes that keep
// unique names unique, as the objects_unique_name index does (inserts,
// renames, deletions, evictions, clears), against a model of the
// database: byName never returns a row the database would not, and names
// indexes exactly the named rows of m.
func TestObjectCacheNames(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	c := newObjectCache()
	db := map[string]*chorus.Object{} // the rows by SID
	owner := map[objectName]string{}  // the database's unique index
	kinds := []chorus.Kind{chorus.KindDocument, chorus.KindMap}
	services := []string{"IS1", "IS2"}
	randomName := func() objectName {
		return objectName{service: services[rng.IntN(2)], kind: kinds[rng.IntN(2)], name: fmt.Sprintf("n%d", rng.IntN(40))}
	}
	rename := func(o *chorus.Object) {
		if o.UniqueName != "" {
			delete(owner, nameOf(o))
		}
		o.UniqueName = ""
		if k := (objectName{o.ServiceSID, o.Kind, fmt.Sprintf("n%d", rng.IntN(40))}); rng.IntN(4) > 0 && owner[k] == "" {
			o.UniqueName = k.name
			owner[k] = o.SID
		}
	}
	someSID := func() string {
		for sid := range db {
			return sid
		}
		return ""
	}
	for i := range 20000 {
		switch op := rng.IntN(100); {
		case op < 50 || len(db) == 0: // insert
			k := randomName()
			o := &chorus.Object{SID: fmt.Sprintf("ET%d", i), ServiceSID: k.service, Kind: k.kind, Data: json.RawMessage(`{}`)}
			rename(o)
			db[o.SID] = o
			c.put(o)
		case op < 75: // update, sometimes under another name
			sid := someSID()
			o := copyObject(db[sid])
			o.Revision++
			if rng.IntN(3) == 0 {
				rename(o)
			}
			db[sid] = o
			c.put(o)
		case op < 85: // read a row into the cache
			c.put(db[someSID()])
		case op < 99: // delete
			sid := someSID()
			if o := db[sid]; o.UniqueName != "" {
				delete(owner, nameOf(o))
			}
			delete(db, sid)
			c.del(sid)
		default:
			c.clear()
		}
		for k, sid := range c.names {
			if o, ok := c.m[sid]; !ok || nameOf(o) != k || o.UniqueName == "" {
				t.Fatalf("op %d: names[%v] = %s, whose row is %+v", i, k, sid, o)
			}
		}
		for sid, o := range c.m {
			if o.UniqueName != "" && c.names[nameOf(o)] != sid {
				t.Fatalf("op %d: row %s named %q is not in names", i, sid, o.UniqueName)
			}
		}
		k := randomName()
		if o, ok := c.byName(k.kind, k.service, k.name); ok {
			want := db[owner[k]]
			if want == nil || o.SID != want.SID || o.Revision != want.Revision {
				t.Fatalf("op %d: byName(%v) = %s rev %d, want %v", i, k, o.SID, o.Revision, want)
			}
		}
	}
	if len(c.m) == 0 || len(c.names) == 0 {
		t.Fatalf("the cache ended with %d rows, %d names: the test exercised nothing", len(c.m), len(c.names))
	}
}

// TestObjectByNameInWriter: reads by unique name inside Update see what
// the transaction sees, through deletion, reuse of the name and a batch
// that rolls back.
func TestObjectByNameInWriter(t *testing.T) {
	ctx := context.Background()
	s := openInternal(t)
	seedDoc(t, s) // the service
	now := time.Unix(1_700_000_000, 0).UTC()
	newDoc := func(name string) *chorus.Object {
		return &chorus.Object{Kind: chorus.KindDocument, SID: chorus.NewSID(chorus.PrefixDocument), AccountSID: "AC1",
			ServiceSID: "IS1", UniqueName: name, Data: json.RawMessage(`{}`), CreatedBy: "t", DateCreated: now, DateUpdated: now}
	}
	byName := func(name string) (*chorus.Object, error) {
		var o *chorus.Object
		err := s.Update(ctx, func(tx chorus.Tx) (err error) {
			o, err = tx.ObjectByName(ctx, chorus.KindDocument, "IS1", name)
			return err
		})
		return o, err
	}
	a, b := newDoc("x"), newDoc("x")
	if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.InsertObject(ctx, a) }); err != nil {
		t.Fatal(err)
	}
	if o, err := byName("x"); err != nil || o.SID != a.SID {
		t.Fatalf("ObjectByName(x) = %v, %v; want %s", o, err, a.SID)
	}
	// The SQL read cached the row: the next reads by name are served by
	// the cache (fn runs on the writer goroutine, which owns it).
	err := s.Update(ctx, func(chorus.Tx) error {
		if o, ok := s.objs.byName(chorus.KindDocument, "IS1", "x"); !ok || o.SID != a.SID {
			return fmt.Errorf("the writer's cache has x = %v, %v; want %s", o, ok, a.SID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Delete a and give its name to b, in one transaction that reads the
	// name before and after.
	err = s.Update(ctx, func(tx chorus.Tx) error {
		if err := tx.DeleteObject(ctx, a.SID); err != nil {
			return err
		}
		if _, err := tx.ObjectByName(ctx, chorus.KindDocument, "IS1", "x"); !errors.Is(err, chorus.ErrNotFound) {
			return fmt.Errorf("after the delete: %v, want not found", err)
		}
		if err := tx.InsertObject(ctx, b); err != nil {
			return err
		}
		o, err := tx.ObjectByName(ctx, chorus.KindDocument, "IS1", "x")
		if err != nil || o.SID != b.SID {
			return fmt.Errorf("after the insert: %v, %v; want %s", o, err, b.SID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if o, err := byName("x"); err != nil || o.SID != b.SID {
		t.Fatalf("ObjectByName(x) = %v, %v; want %s", o, err, b.SID)
	}
	// An update is seen by name.
	b.Revision = 7
	if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.UpdateObject(ctx, b) }); err != nil {
		t.Fatal(err)
	}
	if o, err := byName("x"); err != nil || o.Revision != 7 {
		t.Fatalf("ObjectByName(x) = %v, %v; want revision 7", o, err)
	}
	// A batch that fails after its insert leaves no y behind.
	fail := errors.New("fail")
	err = s.Update(ctx, func(tx chorus.Tx) error {
		if err := tx.InsertObject(ctx, newDoc("y")); err != nil {
			return err
		}
		if _, err := tx.ObjectByName(ctx, chorus.KindDocument, "IS1", "y"); err != nil {
			return err
		}
		return fail
	})
	if !errors.Is(err, fail) {
		t.Fatalf("Update = %v, want %v", err, fail)
	}
	if o, err := byName("y"); !errors.Is(err, chorus.ErrNotFound) {
		t.Fatalf("ObjectByName(y) after the rollback = %v, %v; want not found", o, err)
	}
	// x names no map, and no document of another service.
	err = s.Update(ctx, func(tx chorus.Tx) error {
		if o, err := tx.ObjectByName(ctx, chorus.KindMap, "IS1", "x"); !errors.Is(err, chorus.ErrNotFound) {
			return fmt.Errorf("map x = %v, %v; want not found", o, err)
		}
		if o, err := tx.ObjectByName(ctx, chorus.KindDocument, "IS2", "x"); !errors.Is(err, chorus.ErrNotFound) {
			return fmt.Errorf("IS2's x = %v, %v; want not found", o, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
