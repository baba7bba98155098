package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

func testItems(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	list := f.newObject(chorus.KindList, at(0))
	m := f.newObject(chorus.KindMap, at(0))
	insert(t, s, list, m)

	li := newItem(list, 3, "", at(time.Second))
	li.Data = json.RawMessage("[ 1,\t\"<>&\" ]")
	li.Revision, li.LastEventID = 5, 6
	li.DateUpdated = at(time.Minute)
	li.DateExpires = ptr(at(time.Hour))
	li0 := newItem(list, 0, "", at(0))
	mi := newItem(m, 0, "k/é 😀", at(2*time.Second))
	mi.Data = json.RawMessage(`{"nested": {"a": [true, false, null]} }`)
	mi2 := newItem(m, 0, "", at(0)) // empty key is distinct from none
	putItems(t, s, li, li0, mi, mi2)

	tests := []struct {
		name string
		obj  string
		ref  chorus.ItemRef
		want *chorus.Item
	}{
		{"list/full", list.SID, chorus.ItemRef{Index: 3}, li},
		{"list/index 0", list.SID, chorus.ItemRef{Index: 0}, li0},
		{"list/missing", list.SID, chorus.ItemRef{Index: 1}, nil},
		{"list/other object", m.SID, chorus.ItemRef{Index: 3}, nil},
		{"map/full", m.SID, chorus.ItemRef{Key: "k/é 😀"}, mi},
		{"map/empty key", m.SID, chorus.ItemRef{Key: ""}, mi2},
		{"map/missing", m.SID, chorus.ItemRef{Key: "K/é 😀"}, nil},
	}
	t.Run("ItemsOf", func(t *testing.T) {
		for _, obj := range []string{list.SID, m.SID} {
			var refs []chorus.ItemRef
			want := map[chorus.ItemRef]*chorus.Item{}
			for _, tt := range tests {
				refs = append(refs, tt.ref)
				if tt.want != nil && tt.obj == obj {
					want[tt.ref] = tt.want
				}
			}
			refs = append(refs, refs...) // asked twice, returned once
			got := mustGet(t, s, "ItemsOf", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Item, error) {
				return tx.ItemsOf(ctx, obj, refs)
			})
			if len(got) != len(want) {
				t.Fatalf("ItemsOf(%s, %d refs) = %d items, want %d", obj, len(refs), len(got), len(want))
			}
			for _, it := range got {
				ref := chorus.ItemRef{Index: it.Index, Key: it.Key}
				if want[ref] == nil {
					t.Fatalf("ItemsOf(%s) returned %+v, not asked for", obj, ref)
				}
				checkEqual(t, fmt.Sprintf("ItemsOf %+v", ref), it, want[ref])
			}
		}
		// More refs than one statement takes, repeated across statements.
		many := make([]chorus.ItemRef, 2500)
		for i := range many {
			many[i] = chorus.ItemRef{Index: int64(i % 1200)}
		}
		got := mustGet(t, s, "ItemsOf", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Item, error) {
			return tx.ItemsOf(ctx, list.SID, many)
		})
		if len(got) != 2 {
			t.Fatalf("ItemsOf(2,500 indexes, 0 and 3 thrice) = %d items, want li and li0 once", len(got))
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Item, error) {
				return tx.Item(ctx, tt.obj, tt.ref)
			})
			if tt.want == nil {
				wantNotFound(t, fmt.Sprintf("Item(%+v)", tt.ref), err)
				return
			}
			if err != nil {
				t.Fatalf("Item(%+v): %v", tt.ref, err)
			}
			checkEqual(t, fmt.Sprintf("Item(%+v)", tt.ref), got, tt.want)
			if string(got.Data) != string(tt.want.Data) {
				t.Errorf("Item(%+v).Data = %q, want %q", tt.ref, got.Data, tt.want.Data)
			}
		})
	}

	// Put replaces.
	li2 := *li
	li2.Data, li2.Revision, li2.DateExpires = json.RawMessage(`2`), 6, nil
	putItems(t, s, &li2)
	got := mustGet(t, s, "Item", func(ctx context.Context, tx chorus.ReadTx) (*chorus.Item, error) {
		return tx.Item(ctx, list.SID, chorus.ItemRef{Index: 3})
	})
	checkEqual(t, "Item after replace", got, &li2)

	// Delete.
	update(t, s, func(tx chorus.Tx) error {
		return tx.DeleteItem(context.Background(), m.SID, chorus.ItemRef{Key: mi.Key})
	})
	_, err := get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Item, error) {
		return tx.Item(ctx, m.SID, chorus.ItemRef{Key: mi.Key})
	})
	wantNotFound(t, "Item(deleted)", err)
	err = s.Update(context.Background(), func(tx chorus.Tx) error {
		return tx.DeleteItem(context.Background(), m.SID, chorus.ItemRef{Key: mi.Key})
	})
	wantNotFound(t, "DeleteItem(deleted)", err)
	left := mustGet(t, s, "Items", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Item, error) {
		return tx.Items(ctx, m.SID, chorus.ItemQuery{Kind: chorus.KindMap, Limit: 10})
	})
	checkList(t, "Items(map) after delete", left, []*chorus.Item{mi2})
}

// itemQueryCase is one Items query and the keys or indexes it returns.
type itemQueryCase struct {
	name string
	q    chorus.ItemQuery
	want []string // fmt of Index (lists) or Key (maps)
}

func runItemQueries(t *testing.T, s chorus.Store, objectSID string, cases []itemQueryCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			items := mustGet(t, s, "Items", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Item, error) {
				return tx.Items(ctx, objectSID, tt.q)
			})
			got := []string{}
			for _, it := range items {
				if tt.q.Kind == chorus.KindMap {
					got = append(got, it.Key)
				} else {
					got = append(got, fmt.Sprint(it.Index))
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Items(%+v) = %q, want %q", tt.q, got, tt.want)
			}
		})
	}
}

func testListItemsPaging(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	list := f.newObject(chorus.KindList, at(0))
	otherList := f.newObject(chorus.KindList, at(0))
	insert(t, s, list, otherList)
	now := at(time.Hour)
	var items []*chorus.Item
	for _, i := range []int64{8, 0, 1, 2, 3, 5, 6, 12, 100} {
		it := newItem(list, i, "", at(time.Duration(i)*time.Second))
		switch i {
		case 5:
			it.DateExpires = ptr(now.Add(-time.Second))
		case 12:
			it.DateExpires = ptr(now) // expired exactly at now
		case 6:
			it.DateExpires = ptr(now.Add(time.Hour))
		}
		items = append(items, it, newItem(otherList, i+1, "", at(0)))
	}
	putItems(t, s, items...)

	l := chorus.KindList
	runItemQueries(t, s, list.SID, []itemQueryCase{
		{"asc", chorus.ItemQuery{Kind: l, Limit: 50, Now: now}, []string{"0", "1", "2", "3", "6", "8", "100"}},
		{"asc/no now", chorus.ItemQuery{Kind: l, Limit: 50}, []string{"0", "1", "2", "3", "5", "6", "8", "12", "100"}},
		{"asc/limit", chorus.ItemQuery{Kind: l, Limit: 3, Now: now}, []string{"0", "1", "2"}},
		{"desc", chorus.ItemQuery{Kind: l, Desc: true, Limit: 50, Now: now}, []string{"100", "8", "6", "3", "2", "1", "0"}},
		{"desc/limit", chorus.ItemQuery{Kind: l, Desc: true, Limit: 2, Now: now}, []string{"100", "8"}},
		{"asc/from 3 inclusive", chorus.ItemQuery{Kind: l, HasFrom: true, FromIndex: 3, Inclusive: true, Limit: 50, Now: now}, []string{"3", "6", "8", "100"}},
		{"asc/from 3 exclusive", chorus.ItemQuery{Kind: l, HasFrom: true, FromIndex: 3, Limit: 50, Now: now}, []string{"6", "8", "100"}},
		{"asc/from 4 (absent) inclusive", chorus.ItemQuery{Kind: l, HasFrom: true, FromIndex: 4, Inclusive: true, Limit: 50, Now: now}, []string{"6", "8", "100"}},
		{"asc/from 0 inclusive", chorus.ItemQuery{Kind: l, HasFrom: true, FromIndex: 0, Inclusive: true, Limit: 2, Now: now}, []string{"0", "1"}},
		{"asc/from 0 exclusive", chorus.ItemQuery{Kind: l, HasFrom: true, FromIndex: 0, Limit: 2, Now: now}, []string{"1", "2"}},
		{"asc/from 100 exclusive", chorus.ItemQuery{Kind: l, HasFrom: true, FromIndex: 100, Limit: 50, Now: now}, []string{}},
		{"desc/from 3 inclusive", chorus.ItemQuery{Kind: l, Desc: true, HasFrom: true, FromIndex: 3, Inclusive: true, Limit: 50, Now: now}, []string{"3", "2", "1", "0"}},
		{"desc/from 3 exclusive", chorus.ItemQuery{Kind: l, Desc: true, HasFrom: true, FromIndex: 3, Limit: 50, Now: now}, []string{"2", "1", "0"}},
		{"desc/from 7 exclusive limit 2", chorus.ItemQuery{Kind: l, Desc: true, HasFrom: true, FromIndex: 7, Limit: 2, Now: now}, []string{"6", "3"}},
		{"desc/from 6 exclusive skips expired", chorus.ItemQuery{Kind: l, Desc: true, HasFrom: true, FromIndex: 6, Limit: 2, Now: now}, []string{"3", "2"}},
		{"desc/from 6 exclusive no now", chorus.ItemQuery{Kind: l, Desc: true, HasFrom: true, FromIndex: 6, Limit: 2}, []string{"5", "3"}},
		{"desc/from 0 exclusive", chorus.ItemQuery{Kind: l, Desc: true, HasFrom: true, FromIndex: 0, Limit: 50, Now: now}, []string{}},
	})

	// Walking pages with exclusive From visits every live item once.
	for _, desc := range []bool{false, true} {
		t.Run(fmt.Sprintf("walk/desc=%v", desc), func(t *testing.T) {
			var got []int64
			q := chorus.ItemQuery{Kind: l, Desc: desc, Limit: 2, Now: now}
			for pages := 0; pages < 20; pages++ {
				page := mustGet(t, s, "Items", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Item, error) {
					return tx.Items(ctx, list.SID, q)
				})
				for _, it := range page {
					got = append(got, it.Index)
				}
				if len(page) < q.Limit {
					break
				}
				q.HasFrom, q.FromIndex = true, page[len(page)-1].Index
			}
			want := []int64{0, 1, 2, 3, 6, 8, 100}
			if desc {
				want = []int64{100, 8, 6, 3, 2, 1, 0}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("pages = %v, want %v", got, want)
			}
		})
	}
}

func testMapItemsPaging(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	m := f.newObject(chorus.KindMap, at(0))
	otherMap := f.newObject(chorus.KindMap, at(0))
	insert(t, s, m, otherMap)
	now := at(time.Hour)
	var items []*chorus.Item
	// Byte order: "B" < "a" < "b" < "bb" < "c" < "d" < "e" < "é" < "😀".
	for _, k := range []string{"d", "a", "b", "bb", "c", "B", "e", "é", "😀"} {
		it := newItem(m, 0, k, at(0))
		switch k {
		case "c":
			it.DateExpires = ptr(now.Add(-time.Minute))
		case "bb":
			it.DateExpires = ptr(now)
		case "e":
			it.DateExpires = ptr(now.Add(time.Minute))
		}
		items = append(items, it, newItem(otherMap, 0, k+"x", at(0)))
	}
	putItems(t, s, items...)

	mk := chorus.KindMap
	runItemQueries(t, s, m.SID, []itemQueryCase{
		{"asc", chorus.ItemQuery{Kind: mk, Limit: 50, Now: now}, []string{"B", "a", "b", "d", "e", "é", "😀"}},
		{"asc/no now", chorus.ItemQuery{Kind: mk, Limit: 50}, []string{"B", "a", "b", "bb", "c", "d", "e", "é", "😀"}},
		{"asc/limit", chorus.ItemQuery{Kind: mk, Limit: 2, Now: now}, []string{"B", "a"}},
		{"desc", chorus.ItemQuery{Kind: mk, Desc: true, Limit: 50, Now: now}, []string{"😀", "é", "e", "d", "b", "a", "B"}},
		{"asc/from b inclusive", chorus.ItemQuery{Kind: mk, HasFrom: true, FromKey: "b", Inclusive: true, Limit: 50, Now: now}, []string{"b", "d", "e", "é", "😀"}},
		{"asc/from b exclusive", chorus.ItemQuery{Kind: mk, HasFrom: true, FromKey: "b", Limit: 50, Now: now}, []string{"d", "e", "é", "😀"}},
		{"asc/from ba (absent) inclusive", chorus.ItemQuery{Kind: mk, HasFrom: true, FromKey: "ba", Inclusive: true, Limit: 50}, []string{"bb", "c", "d", "e", "é", "😀"}},
		{"asc/from empty exclusive", chorus.ItemQuery{Kind: mk, HasFrom: true, FromKey: "", Limit: 3, Now: now}, []string{"B", "a", "b"}},
		{"desc/from d inclusive", chorus.ItemQuery{Kind: mk, Desc: true, HasFrom: true, FromKey: "d", Inclusive: true, Limit: 50, Now: now}, []string{"d", "b", "a", "B"}},
		{"desc/from d exclusive limit 2", chorus.ItemQuery{Kind: mk, Desc: true, HasFrom: true, FromKey: "d", Limit: 2, Now: now}, []string{"b", "a"}},
		{"desc/from é exclusive", chorus.ItemQuery{Kind: mk, Desc: true, HasFrom: true, FromKey: "é", Limit: 1, Now: now}, []string{"e"}},
		{"desc/from B exclusive", chorus.ItemQuery{Kind: mk, Desc: true, HasFrom: true, FromKey: "B", Limit: 50, Now: now}, []string{}},
	})
}

func testItemsChangedSince(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	m := f.newObject(chorus.KindMap, at(0))
	other := f.newObject(chorus.KindMap, at(0))
	insert(t, s, m, other)
	var items []*chorus.Item
	for i, ev := range []int64{3, 1, 7, 5, 9} {
		it := newItem(m, 0, fmt.Sprintf("k%d", i), at(0))
		it.LastEventID = ev
		o := newItem(other, 0, fmt.Sprintf("k%d", i), at(0))
		o.LastEventID = ev + 1
		items = append(items, it, o)
	}
	putItems(t, s, items...)
	tests := []struct {
		since int64
		limit int
		want  []int64
	}{
		{0, 10, []int64{1, 3, 5, 7, 9}},
		{2, 10, []int64{3, 5, 7, 9}},
		{2, 2, []int64{3, 5}},
		{3, 10, []int64{5, 7, 9}},
		{9, 10, []int64{}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("since=%d/limit=%d", tt.since, tt.limit), func(t *testing.T) {
			its := mustGet(t, s, "ItemsChangedSince", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Item, error) {
				return tx.ItemsChangedSince(ctx, m.SID, tt.since, tt.limit)
			})
			got := []int64{}
			for _, it := range its {
				if it.ObjectSID != m.SID {
					t.Errorf("ItemsChangedSince returned an item of %s", it.ObjectSID)
				}
				got = append(got, it.LastEventID)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("ItemsChangedSince(%d, %d) = %v, want %v", tt.since, tt.limit, got, tt.want)
			}
		})
	}
}

func testPermissions(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	doc := f.newObject(chorus.KindDocument, at(0))
	other := f.newObject(chorus.KindDocument, at(0))
	insert(t, s, doc, other)
	ids := []string{"zed", "alice", "Bob", "carol", "dave", "érin", "frank"}
	want := map[string]*chorus.Permission{}
	update(t, s, func(tx chorus.Tx) error {
		for i, id := range ids {
			p := &chorus.Permission{ObjectSID: doc.SID, Identity: id, Read: i%2 == 0, Write: i%3 == 0, Manage: i%4 == 0}
			want[id] = p
			if err := tx.PutPermission(context.Background(), p); err != nil {
				return err
			}
			if err := tx.PutPermission(context.Background(), &chorus.Permission{ObjectSID: other.SID, Identity: id + "2", Read: true}); err != nil {
				return err
			}
		}
		return nil
	})
	got := mustGet(t, s, "Permission", func(ctx context.Context, tx chorus.ReadTx) (*chorus.Permission, error) {
		return tx.Permission(ctx, doc.SID, "alice")
	})
	checkEqual(t, "Permission(alice)", got, want["alice"])
	_, err := get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Permission, error) {
		return tx.Permission(ctx, doc.SID, "alice2")
	})
	wantNotFound(t, "Permission(missing)", err)

	order := []string{"Bob", "alice", "carol", "dave", "frank", "zed", "érin"}
	for _, limit := range []int{1, 3, 7, 100} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			var all []*chorus.Permission
			after := ""
			for pages := 0; pages < 10; pages++ {
				page := mustGet(t, s, "Permissions", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Permission, error) {
					return tx.Permissions(ctx, doc.SID, chorus.PermissionQuery{After: after, Limit: limit})
				})
				if len(page) > limit {
					t.Fatalf("Permissions(limit %d) returned %d", limit, len(page))
				}
				all = append(all, page...)
				if len(page) < limit {
					break
				}
				after = page[len(page)-1].Identity
			}
			var w []*chorus.Permission
			for _, id := range order {
				w = append(w, want[id])
			}
			checkList(t, "Permissions pages", all, w)
		})
		t.Run(fmt.Sprintf("backward/limit=%d", limit), func(t *testing.T) {
			var w []*chorus.Permission
			for _, id := range order {
				w = append(w, want[id])
			}
			fetch := func(after string) []*chorus.Permission {
				return mustGet(t, s, "Permissions", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Permission, error) {
					return tx.Permissions(ctx, doc.SID, chorus.PermissionQuery{After: after, Backward: true, Limit: limit})
				})
			}
			identity := func(p *chorus.Permission) string { return p.Identity }
			checkList(t, "Permissions backward pages", walkBackward(t, "Permissions", limit, len(w)+1, fetch, identity), w)
			// Byte order: "Bob" < "a" < "alice", "zed" < "zzz" < "érin" < "ÿ".
			probes := append([]string{"A", "a", "zzz", "ÿ"}, order...)
			checkBefore(t, "Permissions backward", w, limit, probes,
				func(p *chorus.Permission, c string) bool { return p.Identity < c }, fetch)
		})
	}

	// Put replaces; Delete removes.
	update(t, s, func(tx chorus.Tx) error {
		return tx.PutPermission(context.Background(), &chorus.Permission{ObjectSID: doc.SID, Identity: "alice", Manage: true})
	})
	got = mustGet(t, s, "Permission", func(ctx context.Context, tx chorus.ReadTx) (*chorus.Permission, error) {
		return tx.Permission(ctx, doc.SID, "alice")
	})
	checkEqual(t, "Permission(alice) after replace", got, &chorus.Permission{ObjectSID: doc.SID, Identity: "alice", Manage: true})
	update(t, s, func(tx chorus.Tx) error { return tx.DeletePermission(context.Background(), doc.SID, "alice") })
	_, err = get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Permission, error) {
		return tx.Permission(ctx, doc.SID, "alice")
	})
	wantNotFound(t, "Permission(deleted)", err)
	err = s.Update(context.Background(), func(tx chorus.Tx) error {
		return tx.DeletePermission(context.Background(), doc.SID, "alice")
	})
	wantNotFound(t, "DeletePermission(deleted)", err)
}
