package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

func getObject(t testing.TB, s chorus.Store, k chorus.Kind, serviceSID, sid string) (*chorus.Object, error) {
	t.Helper()
	return get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Object, error) {
		return tx.Object(ctx, k, serviceSID, sid)
	})
}

func testObjectRoundTrip(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	full := func(k chorus.Kind) *chorus.Object {
		o := f.newObject(k, at(time.Second))
		o.UniqueName = "name-" + string(k)
		o.Revision = 0x1f
		o.LastEventID = 42
		o.NextIndex = 7
		o.DateUpdated = at(time.Hour)
		o.DateExpires = ptr(at(48 * time.Hour))
		// Not compacted, with characters encoding/json would escape.
		o.Data = json.RawMessage(" { \"a\" : [1, 2.50, \"<b>&amp;\u2028\"] ,\n\"é\":null }")
		return o
	}
	tests := []struct {
		name string
		obj  *chorus.Object
	}{
		{"document/full", full(chorus.KindDocument)},
		{"list/full", full(chorus.KindList)},
		{"map/full", full(chorus.KindMap)},
		{"stream/full", full(chorus.KindStream)},
		{"document/minimal", f.newObject(chorus.KindDocument, at(0))},
		{"map/nil data", f.newObject(chorus.KindMap, at(0))},
		{"stream/nil data", f.newObject(chorus.KindStream, at(0))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			insert(t, s, tt.obj)
			got, err := getObject(t, s, tt.obj.Kind, f.svc.SID, tt.obj.SID)
			if err != nil {
				t.Fatalf("Object(%s): %v", tt.obj.SID, err)
			}
			checkEqual(t, fmt.Sprintf("Object(%s)", tt.obj.SID), got, tt.obj)
			if (got.DateExpires == nil) != (tt.obj.DateExpires == nil) {
				t.Errorf("Object(%s).DateExpires = %v, want %v", tt.obj.SID, got.DateExpires, tt.obj.DateExpires)
			}
			if string(got.Data) != string(tt.obj.Data) || (got.Data == nil) != (tt.obj.Data == nil) {
				t.Errorf("Object(%s).Data = %q, want %q", tt.obj.SID, got.Data, tt.obj.Data)
			}
		})
	}
}

func testObjectLookup(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	other := newService(f.acc.SID, at(0))
	update(t, s, func(tx chorus.Tx) error { return tx.PutService(context.Background(), other) })
	doc := f.newObject(chorus.KindDocument, at(0))
	doc.UniqueName = "doc"
	insert(t, s, doc)

	tests := []struct {
		name    string
		kind    chorus.Kind
		service string
		sid     string
		found   bool
	}{
		{"exact", chorus.KindDocument, f.svc.SID, doc.SID, true},
		{"any service", chorus.KindDocument, "", doc.SID, true},
		{"wrong kind", chorus.KindList, f.svc.SID, doc.SID, false},
		{"wrong service", chorus.KindDocument, other.SID, doc.SID, false},
		{"missing", chorus.KindDocument, f.svc.SID, chorus.NewSID(chorus.PrefixDocument), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := getObject(t, s, tt.kind, tt.service, tt.sid)
			if tt.found {
				if err != nil {
					t.Fatalf("Object(%s, %q, %s): %v", tt.kind, tt.service, tt.sid, err)
				}
				checkEqual(t, "Object", got, doc)
				return
			}
			wantNotFound(t, fmt.Sprintf("Object(%s, %q, %s)", tt.kind, tt.service, tt.sid), err)
		})
	}

	byName := []struct {
		name    string
		kind    chorus.Kind
		service string
		unique  string
		found   bool
	}{
		{"exact", chorus.KindDocument, f.svc.SID, "doc", true},
		{"wrong kind", chorus.KindMap, f.svc.SID, "doc", false},
		{"wrong service", chorus.KindDocument, other.SID, "doc", false},
		{"other case", chorus.KindDocument, f.svc.SID, "DOC", false},
		{"empty name", chorus.KindDocument, f.svc.SID, "", false},
	}
	for _, tt := range byName {
		t.Run("ByName/"+tt.name, func(t *testing.T) {
			got, err := get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Object, error) {
				return tx.ObjectByName(ctx, tt.kind, tt.service, tt.unique)
			})
			if tt.found {
				if err != nil {
					t.Fatalf("ObjectByName(%s, %q): %v", tt.kind, tt.unique, err)
				}
				checkEqual(t, "ObjectByName", got, doc)
				return
			}
			wantNotFound(t, fmt.Sprintf("ObjectByName(%s, %q, %q)", tt.kind, tt.service, tt.unique), err)
		})
	}
}

func testUniqueName(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	other := newService(f.acc.SID, at(0))
	update(t, s, func(tx chorus.Tx) error { return tx.PutService(context.Background(), other) })
	named := func(k chorus.Kind, svc, name string) *chorus.Object {
		o := f.newObject(k, at(0))
		o.ServiceSID, o.UniqueName = svc, name
		return o
	}
	first := named(chorus.KindDocument, f.svc.SID, "shared")
	insert(t, s, first)
	tests := []struct {
		name  string
		obj   *chorus.Object
		clash bool
	}{
		{"same kind and service", named(chorus.KindDocument, f.svc.SID, "shared"), true},
		{"other kind", named(chorus.KindMap, f.svc.SID, "shared"), false},
		{"other service", named(chorus.KindDocument, other.SID, "shared"), false},
		{"other name", named(chorus.KindDocument, f.svc.SID, "shared2"), false},
		{"no name 1", named(chorus.KindDocument, f.svc.SID, ""), false},
		{"no name 2", named(chorus.KindDocument, f.svc.SID, ""), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Update(context.Background(), func(tx chorus.Tx) error {
				return tx.InsertObject(context.Background(), tt.obj)
			})
			if tt.clash {
				if !errors.Is(err, chorus.ErrUniqueNameExists) {
					t.Errorf("InsertObject(%q) = %v, want ErrUniqueNameExists", tt.obj.UniqueName, err)
				}
				if _, err := getObject(t, s, tt.obj.Kind, tt.obj.ServiceSID, tt.obj.SID); !errors.Is(err, chorus.ErrNotFound) {
					t.Errorf("Object(clashing %s) = %v, want ErrNotFound", tt.obj.SID, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("InsertObject(%q) = %v, want nil", tt.obj.UniqueName, err)
			}
		})
	}
	// The first keeps its name.
	got := mustGet(t, s, "ObjectByName", func(ctx context.Context, tx chorus.ReadTx) (*chorus.Object, error) {
		return tx.ObjectByName(ctx, chorus.KindDocument, f.svc.SID, "shared")
	})
	if got.SID != first.SID {
		t.Errorf("ObjectByName(shared).SID = %s, want %s", got.SID, first.SID)
	}
	// A clash inside an Update fails only that Update's own error path:
	// the caller may recover and go on in the same transaction.
	third := named(chorus.KindDocument, f.svc.SID, "third")
	update(t, s, func(tx chorus.Tx) error {
		if err := tx.InsertObject(context.Background(), named(chorus.KindDocument, f.svc.SID, "shared")); !errors.Is(err, chorus.ErrUniqueNameExists) {
			return fmt.Errorf("InsertObject(clash) = %v, want ErrUniqueNameExists", err)
		}
		return tx.InsertObject(context.Background(), third)
	})
	if _, err := getObject(t, s, chorus.KindDocument, f.svc.SID, third.SID); err != nil {
		t.Errorf("Object(inserted after a clash in the same Update): %v", err)
	}
}

func testUpdateObject(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	doc := f.newObject(chorus.KindDocument, at(0))
	doc.UniqueName = "before"
	doc.DateExpires = ptr(at(time.Hour))
	insert(t, s, doc)

	changed := *doc
	changed.UniqueName = ""
	changed.Revision = 2
	changed.Data = json.RawMessage(`{"x": "y"}`)
	changed.LastEventID = 9
	changed.DateUpdated = at(time.Minute)
	changed.DateExpires = nil
	update(t, s, func(tx chorus.Tx) error { return tx.UpdateObject(context.Background(), &changed) })
	got, err := getObject(t, s, chorus.KindDocument, f.svc.SID, doc.SID)
	if err != nil {
		t.Fatalf("Object: %v", err)
	}
	checkEqual(t, "Object after UpdateObject", got, &changed)
	if _, err := get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Object, error) {
		return tx.ObjectByName(ctx, chorus.KindDocument, f.svc.SID, "before")
	}); !errors.Is(err, chorus.ErrNotFound) {
		t.Errorf("ObjectByName(old name) = %v, want ErrNotFound", err)
	}

	// Back to an expiry and a name.
	changed.DateExpires = ptr(at(2 * time.Hour))
	changed.UniqueName = "after"
	update(t, s, func(tx chorus.Tx) error { return tx.UpdateObject(context.Background(), &changed) })
	got = mustGet(t, s, "ObjectByName", func(ctx context.Context, tx chorus.ReadTx) (*chorus.Object, error) {
		return tx.ObjectByName(ctx, chorus.KindDocument, f.svc.SID, "after")
	})
	checkEqual(t, "ObjectByName(after)", got, &changed)

	missing := f.newObject(chorus.KindDocument, at(0))
	err = s.Update(context.Background(), func(tx chorus.Tx) error {
		return tx.UpdateObject(context.Background(), missing)
	})
	wantNotFound(t, "UpdateObject(missing)", err)
}

func testObjectsPaging(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	other := newService(f.acc.SID, at(0))
	update(t, s, func(tx chorus.Tx) error { return tx.PutService(context.Background(), other) })
	now := at(time.Hour)
	var all, live []*chorus.Object
	var noise []*chorus.Object
	for i := range 25 {
		o := f.newObject(chorus.KindMap, at(time.Duration(9-i/3)*time.Second))
		switch i % 5 {
		case 1:
			o.DateExpires = ptr(now.Add(-time.Second)) // expired at now
		case 2:
			o.DateExpires = ptr(now) // expires exactly at now: expired
		case 3:
			o.DateExpires = ptr(now.Add(time.Second))
		}
		all = append(all, o)
		if !o.Expired(now) {
			live = append(live, o)
		}
		// Same service other kind, other service same kind.
		noise = append(noise, f.newObject(chorus.KindList, o.DateCreated))
		n := f.newObject(chorus.KindMap, o.DateCreated)
		n.ServiceSID = other.SID
		noise = append(noise, n)
	}
	insert(t, s, append(append([]*chorus.Object(nil), all...), noise...)...)
	byCursor := func(objs []*chorus.Object) {
		sort.Slice(objs, func(i, j int) bool {
			a, b := objs[i], objs[j]
			if !a.DateCreated.Equal(b.DateCreated) {
				return a.DateCreated.Before(b.DateCreated)
			}
			return a.SID < b.SID
		})
	}
	byCursor(all)
	byCursor(live)
	if len(live) != 15 {
		t.Fatalf("fixture: %d live objects, want 15", len(live))
	}
	tests := []struct {
		name  string
		now   time.Time
		limit int
		want  []*chorus.Object
	}{
		{"all/limit=1", time.Time{}, 1, all},
		{"all/limit=4", time.Time{}, 4, all},
		{"all/limit=25", time.Time{}, 25, all},
		{"all/limit=1000", time.Time{}, 1000, all},
		{"live/limit=1", now, 1, live},
		{"live/limit=4", now, 4, live},
		{"live/limit=1000", now, 1000, live},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []*chorus.Object
			q := chorus.ObjectQuery{Limit: tt.limit, Now: tt.now}
			for pages := 0; ; pages++ {
				if pages > len(all)+1 {
					t.Fatalf("Objects: no end after %d pages", pages)
				}
				page := mustGet(t, s, "Objects", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Object, error) {
					return tx.Objects(ctx, chorus.KindMap, f.svc.SID, q)
				})
				if len(page) > tt.limit {
					t.Fatalf("Objects(limit %d) returned %d", tt.limit, len(page))
				}
				got = append(got, page...)
				if len(page) < tt.limit {
					break
				}
				last := page[len(page)-1]
				q.After = chorus.Cursor{DateCreated: last.DateCreated, SID: last.SID}
			}
			checkList(t, "Objects pages", got, tt.want)
		})
		t.Run("backward/"+tt.name, func(t *testing.T) {
			fetch := func(after chorus.Cursor) []*chorus.Object {
				return mustGet(t, s, "Objects", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Object, error) {
					return tx.Objects(ctx, chorus.KindMap, f.svc.SID, chorus.ObjectQuery{After: after, Backward: true, Limit: tt.limit, Now: tt.now})
				})
			}
			checkList(t, "Objects backward pages", walkBackward(t, "Objects", tt.limit, len(all)+1, fetch, objectCursor), tt.want)
			// Before every object (expired ones too), before the first and
			// after the last.
			probes := []chorus.Cursor{{DateCreated: at(-time.Hour), SID: "A"}, {DateCreated: at(time.Hour), SID: ""}}
			for _, o := range all {
				probes = append(probes, objectCursor(o))
			}
			checkBefore(t, "Objects backward", tt.want, tt.limit, probes,
				func(o *chorus.Object, c chorus.Cursor) bool { return cursorBefore(objectCursor(o), c) }, fetch)
		})
	}
}
