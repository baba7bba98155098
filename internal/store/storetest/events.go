package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

func getEvents(t testing.TB, s chorus.Store, objectSID string, after int64, limit int) []*chorus.Event {
	t.Helper()
	return mustGet(t, s, "Events", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Event, error) {
		return tx.Events(ctx, objectSID, after, limit)
	})
}

func lastEventIDs(t testing.TB, s chorus.Store, objectSIDs ...string) map[string]int64 {
	t.Helper()
	var out map[string]int64
	view(t, s, func(tx chorus.ReadTx) (err error) {
		out, err = tx.LastEventIDs(context.Background(), objectSIDs)
		return err
	})
	return out
}

func testEvents(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	a := f.newObject(chorus.KindList, at(0))
	b := f.newObject(chorus.KindList, at(0))
	insert(t, s, a, b)

	full := &chorus.Event{
		Type:         chorus.EventListItemUpdated,
		ID:           1,
		AccountSID:   f.acc.SID,
		ServiceSID:   f.svc.SID,
		ObjectSID:    a.SID,
		Kind:         chorus.KindList,
		UniqueName:   "the-list",
		Revision:     "a",
		Data:         json.RawMessage(" {\"ctx\" : \"<&>\"} "),
		ItemIndex:    4,
		ItemKey:      "",
		ItemRevision: "1f",
		ItemData:     json.RawMessage("[1,  2,\n3]"),
		MessageSID:   "",
		DateCreated:  at(time.Second),
		DateExpires:  ptr(at(time.Hour)),
		Identity:     "alice",
		EndpointID:   "ep-1",
		FromREST:     true,
	}
	events := []*chorus.Event{full}
	for id := int64(2); id <= 10; id++ {
		events = append(events, newEvent(a, id, at(time.Duration(id)*time.Second)))
	}
	for id := int64(1); id <= 3; id++ {
		events = append(events, newEvent(b, id, at(0)))
	}
	appendEvents(t, s, events...)

	got := getEvents(t, s, a.SID, 0, 100)
	checkList(t, "Events(a, 0, 100)", got, events[:10])
	if len(got) > 0 {
		if string(got[0].Data) != string(full.Data) || string(got[0].ItemData) != string(full.ItemData) {
			t.Errorf("Events(a)[0] data = %q, %q, want %q, %q", got[0].Data, got[0].ItemData, full.Data, full.ItemData)
		}
		if got[0].DateExpires == nil {
			t.Errorf("Events(a)[0].DateExpires = nil, want %v", full.DateExpires)
		}
		if len(got) > 1 && got[1].DateExpires != nil {
			t.Errorf("Events(a)[1].DateExpires = %v, want nil", got[1].DateExpires)
		}
		if len(got) > 1 && (got[1].ItemData != nil) {
			t.Errorf("Events(a)[1].ItemData = %q, want nil", got[1].ItemData)
		}
	}
	tests := []struct {
		obj   string
		after int64
		limit int
		want  []int64
	}{
		{a.SID, 0, 3, []int64{1, 2, 3}},
		{a.SID, 4, 3, []int64{5, 6, 7}},
		{a.SID, 8, 100, []int64{9, 10}},
		{a.SID, 10, 100, []int64{}},
		{b.SID, 0, 100, []int64{1, 2, 3}},
		{b.SID, 1, 1, []int64{2}},
		{chorus.NewSID(chorus.PrefixList), 0, 100, []int64{}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/after=%d/limit=%d", tt.obj[:6], tt.after, tt.limit), func(t *testing.T) {
			got := getEvents(t, s, tt.obj, tt.after, tt.limit)
			if ids := eventIDs(got); fmt.Sprint(ids) != fmt.Sprint(tt.want) {
				t.Errorf("Events(%s, %d, %d) = %v, want %v", tt.obj, tt.after, tt.limit, ids, tt.want)
			}
			for _, e := range got {
				if e.ObjectSID != tt.obj {
					t.Errorf("Events(%s) returned an event of %s", tt.obj, e.ObjectSID)
				}
			}
		})
	}

	// The newest logged ID of each object that has one; objects without
	// events (c), and SIDs without an object, are absent. A long list
	// binds as one argument.
	c := f.newObject(chorus.KindList, at(0))
	insert(t, s, c)
	sids := []string{a.SID, c.SID, b.SID}
	for range 1000 {
		sids = append(sids, chorus.NewSID(chorus.PrefixList))
	}
	if got := lastEventIDs(t, s, sids...); fmt.Sprint(got) != fmt.Sprint(map[string]int64{a.SID: 10, b.SID: 3}) {
		t.Errorf("LastEventIDs(a, c, b, 1000 unknown) = %v, want a: 10, b: 3", got)
	}
	if got := lastEventIDs(t, s); len(got) != 0 {
		t.Errorf("LastEventIDs() = %v, want none", got)
	}

	// An ID is logged once per object.
	err := s.Update(context.Background(), func(tx chorus.Tx) error {
		return tx.AppendEvent(context.Background(), newEvent(a, 5, at(0)))
	})
	if err == nil {
		t.Errorf("AppendEvent(duplicate id 5) = nil, want an error")
	}
	if ids := eventIDs(getEvents(t, s, a.SID, 4, 1)); fmt.Sprint(ids) != "[5]" {
		t.Errorf("Events after a duplicate append = %v, want [5]", ids)
	}
}

func testEventsOfType(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	m := f.newObject(chorus.KindMap, at(0))
	other := f.newObject(chorus.KindMap, at(0))
	insert(t, s, m, other)
	typed := func(obj *chorus.Object, id int64, typ chorus.EventType, key string) *chorus.Event {
		e := newEvent(obj, id, at(time.Duration(id)*time.Second))
		e.Type, e.ItemKey = typ, key
		return e
	}
	appendEvents(t, s,
		typed(m, 1, chorus.EventMapItemAdded, "a"),
		typed(m, 2, chorus.EventMapItemRemoved, "a"),
		// Bodies that contain a removal's type elsewhere, or a type that
		// starts like it, are not removals.
		typed(m, 3, chorus.EventMapItemUpdated, `{"type":"map_item_removed",`),
		typed(m, 4, chorus.EventType("map_item_removed_x"), "b"),
		typed(m, 5, chorus.EventMapItemRemoved, `100% _\\ "quoted"`),
		typed(m, 6, chorus.EventMapItemRemoved, "c"),
		typed(other, 1, chorus.EventMapItemRemoved, "a"),
	)
	// Another service's event under m's SID (a reused SID).
	foreign := typed(m, 7, chorus.EventMapItemRemoved, "z")
	foreign.ServiceSID = "ISother"
	appendEvents(t, s, foreign)
	removed := []chorus.EventType{chorus.EventMapItemRemoved}
	tests := []struct {
		svc, obj       string
		types          []chorus.EventType
		after, through int64
		limit          int
		want           []int64
	}{
		{f.svc.SID, m.SID, removed, 0, math.MaxInt64, 100, []int64{2, 5, 6}},
		{f.svc.SID, m.SID, removed, 2, math.MaxInt64, 1, []int64{5}},
		{f.svc.SID, m.SID, removed, 5, math.MaxInt64, 100, []int64{6}},
		{f.svc.SID, m.SID, removed, 6, math.MaxInt64, 100, []int64{}},
		{f.svc.SID, m.SID, removed, 6, math.MaxInt64, 1, []int64{}},
		{f.svc.SID, m.SID, removed, 0, 5, 100, []int64{2, 5}},
		{f.svc.SID, m.SID, removed, 0, 4, 100, []int64{2}},
		{f.svc.SID, m.SID, []chorus.EventType{chorus.EventMapItemUpdated}, 0, math.MaxInt64, 100, []int64{3}},
		{f.svc.SID, m.SID, []chorus.EventType{chorus.EventMapItemAdded, chorus.EventMapItemUpdated}, 0, math.MaxInt64, 100, []int64{1, 3}},
		{f.svc.SID, m.SID, []chorus.EventType{chorus.EventListItemRemoved}, 0, math.MaxInt64, 100, []int64{}},
		{f.svc.SID, m.SID, nil, 0, math.MaxInt64, 100, []int64{}},
		{f.svc.SID, other.SID, removed, 0, math.MaxInt64, 100, []int64{1}},
		{"ISother", m.SID, removed, 0, math.MaxInt64, 100, []int64{7}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%v/after=%d/through=%d/limit=%d", tt.obj[:6], tt.types, tt.after, tt.through, tt.limit), func(t *testing.T) {
			got := mustGet(t, s, "EventsOfType", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Event, error) {
				return tx.EventsOfType(ctx, tt.svc, tt.obj, tt.types, tt.after, tt.through, tt.limit)
			})
			if ids := eventIDs(got); fmt.Sprint(ids) != fmt.Sprint(tt.want) {
				t.Errorf("EventsOfType(%s, %v, %d, %d, %d) = %v, want %v", tt.obj, tt.types, tt.after, tt.through, tt.limit, ids, tt.want)
			}
			for _, e := range got {
				if e.ObjectSID != tt.obj || !slices.Contains(tt.types, e.Type) {
					t.Errorf("EventsOfType(%s, %v) returned %s of %s", tt.obj, tt.types, e.Type, e.ObjectSID)
				}
			}
		})
	}
}

func testTrimDeletedObject(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	kept := f.newObject(chorus.KindMap, at(0))
	gone := f.newObject(chorus.KindMap, at(0))
	insert(t, s, kept, gone)
	for _, o := range []*chorus.Object{kept, gone} {
		appendEvents(t, s,
			newEvent(o, 1, at(time.Hour)),
			newEvent(o, 2, at(3*time.Hour)),
			newEvent(o, 3, at(10*time.Hour)), // younger than Before
		)
	}
	update(t, s, func(tx chorus.Tx) error { return tx.DeleteObject(context.Background(), gone.SID) })
	var n int
	update(t, s, func(tx chorus.Tx) error {
		var err error
		n, err = tx.TrimEvents(context.Background(), chorus.EventTrim{Before: at(5 * time.Hour), Keep: 10})
		return err
	})
	if n != 2 {
		t.Errorf("TrimEvents = %d, want 2 (the deleted object's old events)", n)
	}
	if got := fmt.Sprint(eventIDs(getEvents(t, s, gone.SID, 0, 100))); got != "[3]" {
		t.Errorf("deleted object's events = %s, want [3]", got)
	}
	if got := fmt.Sprint(eventIDs(getEvents(t, s, kept.SID, 0, 100))); got != "[1 2 3]" {
		t.Errorf("existing object's events = %s, want [1 2 3]", got)
	}
}

// testEventTime: the n-th event's creation time in creation order, from a
// time on, across objects; ties count one by one.
func testEventTime(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	a := f.newObject(chorus.KindDocument, at(0))
	b := f.newObject(chorus.KindDocument, at(0))
	insert(t, s, a, b)
	appendEvents(t, s,
		newEvent(a, 1, at(time.Second)),
		newEvent(b, 1, at(2*time.Second)),
		newEvent(a, 2, at(2*time.Second)),
		newEvent(b, 2, at(5*time.Second)),
	)
	tests := []struct {
		from time.Time
		n    int
		want time.Time
		ok   bool
	}{
		{time.Time{}, 0, at(time.Second), true},
		{time.Time{}, 1, at(2 * time.Second), true},
		{time.Time{}, 2, at(2 * time.Second), true},
		{time.Time{}, 3, at(5 * time.Second), true},
		{time.Time{}, 4, time.Time{}, false},
		{at(2 * time.Second), 0, at(2 * time.Second), true},
		{at(2 * time.Second), 2, at(5 * time.Second), true},
		{at(3 * time.Second), 1, time.Time{}, false},
	}
	for _, tt := range tests {
		var got time.Time
		var ok bool
		err := s.View(context.Background(), func(tx chorus.ReadTx) (err error) {
			got, ok, err = tx.EventTime(context.Background(), tt.from, tt.n)
			return err
		})
		if err != nil || ok != tt.ok || !got.Equal(tt.want) {
			t.Errorf("EventTime(%v, %d) = %v, %v, %v; want %v, %v", tt.from, tt.n, got, ok, err, tt.want, tt.ok)
		}
	}
}

func testDeleteObject(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	m := f.newObject(chorus.KindMap, at(0))
	m.UniqueName = "doomed"
	keep := f.newObject(chorus.KindMap, at(0))
	insert(t, s, m, keep)
	putItems(t, s, newItem(m, 0, "a", at(0)), newItem(m, 0, "b", at(0)), newItem(keep, 0, "a", at(0)))
	update(t, s, func(tx chorus.Tx) error {
		ctx := context.Background()
		for _, o := range []*chorus.Object{m, keep} {
			if err := tx.PutPermission(ctx, &chorus.Permission{ObjectSID: o.SID, Identity: "alice", Read: true}); err != nil {
				return err
			}
		}
		return nil
	})
	appendEvents(t, s, newEvent(m, 1, at(0)), newEvent(m, 2, at(0)), newEvent(keep, 1, at(0)))

	update(t, s, func(tx chorus.Tx) error {
		ctx := context.Background()
		if err := tx.DeleteObject(ctx, m.SID); err != nil {
			return err
		}
		// The removal event is logged after the object is gone.
		return tx.AppendEvent(ctx, newEvent(m, 3, at(0)))
	})

	if got := lastEventIDs(t, s, m.SID, keep.SID); got[m.SID] != 3 || got[keep.SID] != 1 {
		t.Errorf("LastEventIDs(deleted, kept) = %v, want the removal's 3 and 1", got)
	}
	if _, err := getObject(t, s, chorus.KindMap, f.svc.SID, m.SID); err == nil {
		t.Errorf("Object(deleted) = nil error, want ErrNotFound")
	} else {
		wantNotFound(t, "Object(deleted)", err)
	}
	_, err := get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Item, error) {
		return tx.Item(ctx, m.SID, chorus.ItemRef{Key: "a"})
	})
	wantNotFound(t, "Item(of deleted object)", err)
	items := mustGet(t, s, "Items", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Item, error) {
		return tx.Items(ctx, m.SID, chorus.ItemQuery{Kind: chorus.KindMap, Limit: 10})
	})
	if len(items) != 0 {
		t.Errorf("Items(deleted object) = %d items, want 0", len(items))
	}
	_, err = get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Permission, error) {
		return tx.Permission(ctx, m.SID, "alice")
	})
	wantNotFound(t, "Permission(of deleted object)", err)
	perms := mustGet(t, s, "Permissions", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Permission, error) {
		return tx.Permissions(ctx, m.SID, chorus.PermissionQuery{Limit: 10})
	})
	if len(perms) != 0 {
		t.Errorf("Permissions(deleted object) = %d, want 0", len(perms))
	}
	if ids := eventIDs(getEvents(t, s, m.SID, 0, 10)); fmt.Sprint(ids) != "[1 2 3]" {
		t.Errorf("Events(deleted object) = %v, want [1 2 3]", ids)
	}

	// The other object is untouched.
	if _, err := getObject(t, s, chorus.KindMap, f.svc.SID, keep.SID); err != nil {
		t.Errorf("Object(kept): %v", err)
	}
	if items := mustGet(t, s, "Items", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Item, error) {
		return tx.Items(ctx, keep.SID, chorus.ItemQuery{Kind: chorus.KindMap, Limit: 10})
	}); len(items) != 1 {
		t.Errorf("Items(kept object) = %d, want 1", len(items))
	}
	if _, err := get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Permission, error) {
		return tx.Permission(ctx, keep.SID, "alice")
	}); err != nil {
		t.Errorf("Permission(kept object): %v", err)
	}

	// The unique name is free again.
	again := f.newObject(chorus.KindMap, at(0))
	again.UniqueName = "doomed"
	insert(t, s, again)

	err = s.Update(context.Background(), func(tx chorus.Tx) error {
		return tx.DeleteObject(context.Background(), m.SID)
	})
	wantNotFound(t, "DeleteObject(deleted)", err)
}

func testDeleteService(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	other := newService(f.acc.SID, at(0))
	update(t, s, func(tx chorus.Tx) error { return tx.PutService(context.Background(), other) })

	// Per service: one object of each kind with items, a permission and
	// events, plus the events of an object deleted earlier.
	type world struct {
		objs    []*chorus.Object
		deleted *chorus.Object
	}
	build := func(svc *chorus.Service) world {
		var w world
		g := fixture{acc: f.acc, svc: svc}
		for _, k := range chorus.Kinds {
			w.objs = append(w.objs, g.newObject(k, at(0)))
		}
		w.deleted = g.newObject(chorus.KindDocument, at(0))
		insert(t, s, append([]*chorus.Object{w.deleted}, w.objs...)...)
		update(t, s, func(tx chorus.Tx) error {
			ctx := context.Background()
			for _, o := range w.objs {
				if o.Kind == chorus.KindList || o.Kind == chorus.KindMap {
					it := newItem(o, 1, "", at(0))
					if o.Kind == chorus.KindMap {
						it = newItem(o, 0, "k", at(0))
					}
					if err := tx.PutItem(ctx, it); err != nil {
						return err
					}
				}
				if err := tx.PutPermission(ctx, &chorus.Permission{ObjectSID: o.SID, Identity: "alice", Read: true}); err != nil {
					return err
				}
				if err := tx.AppendEvent(ctx, newEvent(o, 1, at(0))); err != nil {
					return err
				}
			}
			if err := tx.AppendEvent(ctx, newEvent(w.deleted, 1, at(0))); err != nil {
				return err
			}
			return tx.DeleteObject(ctx, w.deleted.SID)
		})
		return w
	}
	gone, kept := build(f.svc), build(other)

	update(t, s, func(tx chorus.Tx) error { return tx.DeleteService(context.Background(), f.svc.SID) })

	_, err := get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Service, error) {
		return tx.Service(ctx, f.svc.SID)
	})
	wantNotFound(t, "Service(deleted)", err)
	// An object inserted into the deleted service (a create racing the
	// deletion on another node) is not found, not an internal error (a
	// cluster tester saw 500s from PostgreSQL's foreign key violation).
	err = s.Update(context.Background(), func(tx chorus.Tx) error {
		return tx.InsertObject(context.Background(), f.newObject(chorus.KindDocument, at(1)))
	})
	wantNotFound(t, "InsertObject(into the deleted service)", err)
	check := func(w world, alive bool) {
		t.Helper()
		for _, o := range w.objs {
			_, err := getObject(t, s, o.Kind, "", o.SID)
			if alive && err != nil {
				t.Errorf("Object(%s of the other service): %v", o.Kind, err)
			}
			if !alive {
				wantNotFound(t, fmt.Sprintf("Object(%s of deleted service)", o.Kind), err)
			}
			objs := mustGet(t, s, "Objects", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Object, error) {
				return tx.Objects(ctx, o.Kind, o.ServiceSID, chorus.ObjectQuery{Limit: 10})
			})
			if want := map[bool]int{true: 1, false: 0}[alive]; len(objs) != want {
				t.Errorf("Objects(%s, alive=%v) = %d, want %d", o.Kind, alive, len(objs), want)
			}
			if o.Kind == chorus.KindList || o.Kind == chorus.KindMap {
				items := mustGet(t, s, "Items", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Item, error) {
					return tx.Items(ctx, o.SID, chorus.ItemQuery{Kind: o.Kind, Limit: 10})
				})
				if alive != (len(items) == 1) {
					t.Errorf("Items(%s, alive=%v) = %d items", o.Kind, alive, len(items))
				}
			}
			perms := mustGet(t, s, "Permissions", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Permission, error) {
				return tx.Permissions(ctx, o.SID, chorus.PermissionQuery{Limit: 10})
			})
			if alive != (len(perms) == 1) {
				t.Errorf("Permissions(%s, alive=%v) = %d", o.Kind, alive, len(perms))
			}
			if events := getEvents(t, s, o.SID, 0, 10); alive != (len(events) == 1) {
				t.Errorf("Events(%s, alive=%v) = %d", o.Kind, alive, len(events))
			}
		}
		if events := getEvents(t, s, w.deleted.SID, 0, 10); alive != (len(events) == 1) {
			t.Errorf("Events(object deleted before, alive=%v) = %d", alive, len(events))
		}
	}
	check(gone, false)
	check(kept, true)
}

func testExpiredObjects(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	now := at(time.Hour)
	var want []*chorus.Object
	var objs []*chorus.Object
	for i, d := range []time.Duration{-3 * time.Minute, time.Minute, -time.Minute, 0, -2 * time.Minute, time.Nanosecond * 1000} {
		o := f.newObject(chorus.Kinds[i%4], at(0))
		o.DateExpires = ptr(now.Add(d))
		objs = append(objs, o)
		if d <= 0 {
			want = append(want, o)
		}
	}
	objs = append(objs, f.newObject(chorus.KindDocument, at(0))) // never expires
	insert(t, s, objs...)
	got := mustGet(t, s, "ExpiredObjects", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Object, error) {
		return tx.ExpiredObjects(ctx, now, 100)
	})
	if g, w := sidSet(got), sidSet(want); g != w {
		t.Errorf("ExpiredObjects(now) = %v, want %v", g, w)
	}
	for _, o := range got {
		if !o.Expired(now) {
			t.Errorf("ExpiredObjects returned %s expiring at %v, after now", o.SID, o.DateExpires)
		}
	}
	got = mustGet(t, s, "ExpiredObjects", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Object, error) {
		return tx.ExpiredObjects(ctx, now, 2)
	})
	if len(got) != 2 {
		t.Errorf("ExpiredObjects(now, 2) returned %d, want 2", len(got))
	}
	got = mustGet(t, s, "ExpiredObjects", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Object, error) {
		return tx.ExpiredObjects(ctx, at(0), 100)
	})
	if len(got) != 0 {
		t.Errorf("ExpiredObjects(long before) returned %d, want 0", len(got))
	}
}

func testExpiredItems(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	list := f.newObject(chorus.KindList, at(0))
	m := f.newObject(chorus.KindMap, at(0))
	insert(t, s, list, m)
	now := at(time.Hour)
	var items, want []*chorus.Item
	for i, d := range []time.Duration{-time.Minute, time.Minute, 0, -time.Hour, time.Hour} {
		li := newItem(list, int64(i), "", at(0))
		li.DateExpires = ptr(now.Add(d))
		mi := newItem(m, 0, fmt.Sprint(i), at(0))
		mi.DateExpires = ptr(now.Add(d))
		items = append(items, li, mi)
		if d <= 0 {
			want = append(want, li, mi)
		}
	}
	items = append(items, newItem(list, 99, "", at(0)), newItem(m, 0, "forever", at(0)))
	putItems(t, s, items...)
	got := mustGet(t, s, "ExpiredItems", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Item, error) {
		return tx.ExpiredItems(ctx, now, 100)
	})
	key := func(its []*chorus.Item) map[string]bool {
		m := map[string]bool{}
		for _, it := range its {
			m[fmt.Sprintf("%s/%s/%d/%s", it.Kind, it.ObjectSID, it.Index, it.Key)] = true
		}
		return m
	}
	if g, w := key(got), key(want); fmt.Sprint(g) != fmt.Sprint(w) || len(got) != len(want) {
		t.Errorf("ExpiredItems(now) = %v, want %v", g, w)
	}
	got = mustGet(t, s, "ExpiredItems", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Item, error) {
		return tx.ExpiredItems(ctx, now, 3)
	})
	if len(got) != 3 {
		t.Errorf("ExpiredItems(now, 3) returned %d, want 3", len(got))
	}
}

// sidSet renders the SIDs of objs as a sorted set.
func sidSet(objs []*chorus.Object) string {
	m := map[string]bool{}
	for _, o := range objs {
		m[o.SID] = true
	}
	return fmt.Sprint(m) // fmt prints maps sorted by key
}

func testTrimEvents(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	a := f.newObject(chorus.KindDocument, at(0))
	b := f.newObject(chorus.KindDocument, at(0))
	insert(t, s, a, b)
	var events []*chorus.Event
	for id := int64(1); id <= 10; id++ {
		events = append(events, newEvent(a, id, at(time.Duration(id)*time.Minute)))
	}
	for id := int64(1); id <= 3; id++ {
		events = append(events, newEvent(b, id, at(time.Duration(id)*time.Minute)))
	}
	appendEvents(t, s, events...)
	far := at(1000 * time.Hour)
	steps := []struct {
		before, after time.Time
		keep          int
		deleted       int
		a, b          string
	}{
		// Only those from 3 min on: a's 3-6; b has only 3, all kept.
		{at(6*time.Minute + 30*time.Second), at(3 * time.Minute), 3, 4, "[1 2 7 8 9 10]", "[1 2 3]"},
		// Older than 6.5 min: a's 1-6 go (the newest 3 are younger
		// anyway).
		{at(6*time.Minute + 30*time.Second), time.Time{}, 3, 2, "[7 8 9 10]", "[1 2 3]"},
		{at(6*time.Minute + 30*time.Second), time.Time{}, 3, 0, "[7 8 9 10]", "[1 2 3]"},
		// Everything is old: keep the newest 2 of each.
		{far, time.Time{}, 2, 3, "[9 10]", "[2 3]"},
		{far, time.Time{}, 1, 2, "[10]", "[3]"},
		{far, time.Time{}, 0, 2, "[]", "[]"},
	}
	for i, st := range steps {
		var n int
		update(t, s, func(tx chorus.Tx) error {
			var err error
			n, err = tx.TrimEvents(context.Background(), chorus.EventTrim{Before: st.before, After: st.after, Keep: st.keep})
			return err
		})
		if n != st.deleted {
			t.Errorf("step %d: TrimEvents(%v, %d) = %d, want %d", i, st.before, st.keep, n, st.deleted)
		}
		if got := fmt.Sprint(eventIDs(getEvents(t, s, a.SID, 0, 100))); got != st.a {
			t.Errorf("step %d: Events(a) = %s, want %s", i, got, st.a)
		}
		if got := fmt.Sprint(eventIDs(getEvents(t, s, b.SID, 0, 100))); got != st.b {
			t.Errorf("step %d: Events(b) = %s, want %s", i, got, st.b)
		}
	}
}
