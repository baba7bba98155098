package sqlite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/chorus-sync/chorus"
)

// TestObjectCacheNames drives the cache with 40,000 random writes that keep
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
		return objectName{service: services[rng.IntN(2)], kind: kinds[rng.IntN(2)], name: fmt.Sprintf("n%d", rng.IntN(8000))}
	}
	rename := func(o *chorus.Object) {
		if o.UniqueName != "" {
			delete(owner, nameOf(o))
		}
		o.UniqueName = ""
		if k := (objectName{o.ServiceSID, o.Kind, fmt.Sprintf("n%d", rng.IntN(8000))}); rng.IntN(4) > 0 && owner[k] == "" {
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
	var maxRows, maxNames, maxRecent int
	for i := range 40000 {
		switch op := rng.IntN(1000); {
		case op < 400 || len(db) == 0: // insert
			k := randomName()
			o := &chorus.Object{SID: fmt.Sprintf("ET%d", i), ServiceSID: k.service, Kind: k.kind, Data: json.RawMessage(`{}`)}
			rename(o)
			db[o.SID] = o
			c.put(o)
		case op < 650: // update, sometimes under another name
			sid := someSID()
			o := copyObject(db[sid])
			o.Revision++
			if rng.IntN(3) == 0 {
				rename(o)
			}
			db[sid] = o
			c.put(o)
		case op < 750: // read a row into the cache
			c.put(db[someSID()])
		case op < 999: // delete
			sid := someSID()
			if o := db[sid]; o.UniqueName != "" {
				delete(owner, nameOf(o))
			}
			delete(db, sid)
			c.del(sid)
		default:
			if rng.IntN(8) == 0 {
				c.clear()
			}
		}
		k := randomName()
		if o, ok := c.byName(k.kind, k.service, k.name); ok {
			want := db[owner[k]]
			if want == nil || o.SID != want.SID || o.Revision != want.Revision {
				t.Fatalf("op %d: byName(%v) = %s rev %d, want %v", i, k, o.SID, o.Revision, want)
			}
		}
		if i%16 != 0 {
			continue
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
		c.publish(uint64(i))
		checkRecent(t, i, c.recent)
		maxRows, maxNames, maxRecent = max(maxRows, len(c.m)), max(maxNames, len(c.names)), max(maxRecent, len(c.recent.names))
	}
	if maxNames < 2000 || maxRecent < 2000 || maxRows < maxCachedObjects {
		t.Fatalf("the cache held at most %d rows, %d names, recentObjects %d names: the test exercised too little", maxRows, maxNames, maxRecent)
	}
}

// checkRecent checks recentObjects' invariants: names indexes exactly its
// named rows, and data counts the bytes of the rows held with their data.
func checkRecent(t *testing.T, op int, r *recentObjects) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, sid := range r.names {
		if e, ok := r.m[sid]; !ok || nameOf(e.o) != k {
			t.Fatalf("op %d: recent names[%v] = %s, whose row is %+v", op, k, sid, e.o)
		}
	}
	bytes := 0
	for sid, e := range r.m {
		if e.o.UniqueName != "" && r.names[nameOf(e.o)] != sid {
			t.Fatalf("op %d: recent row %s named %q is not in names", op, sid, e.o.UniqueName)
		}
		if !e.full && e.o.Data != nil {
			t.Fatalf("op %d: recent row %s holds data it does not count", op, sid)
		}
		bytes += len(e.o.Data)
	}
	if bytes != r.data || r.data > maxRecentData {
		t.Fatalf("op %d: recent rows hold %d bytes of data, counted %d (at most %d)", op, bytes, r.data, maxRecentData)
	}
}

// TestRecentObjectsDataBudget: past maxRecentData, the newest rows keep
// their data and older rows lose theirs, and the budget is given back as
// rows go.
func TestRecentObjectsDataBudget(t *testing.T) {
	r := &recentObjects{m: make(map[string]recentObject), names: make(nameIndex)}
	big := json.RawMessage(`"` + strings.Repeat("x", 16<<10) + `"`)
	n := maxRecentData/len(big) + 10
	for i := range n {
		r.apply(map[string]*chorus.Object{fmt.Sprintf("ET%d", i): {SID: fmt.Sprintf("ET%d", i), Kind: chorus.KindDocument, ServiceSID: "IS1", Data: big}}, uint64(i))
	}
	checkRecent(t, 0, r)
	full := 0
	for _, e := range r.m {
		if e.full {
			full++
		}
	}
	if full != maxRecentData/len(big) || len(r.m) != n {
		t.Fatalf("%d rows, %d with data; want %d, %d", len(r.m), full, n, maxRecentData/len(big))
	}
	if e, _ := r.get(chorus.KindDocument, "IS1", fmt.Sprintf("ET%d", n-1), ""); !e.full {
		t.Fatal("the newest row is held without its data")
	}
	// Deleting the rows with data makes room again.
	del := map[string]*chorus.Object{}
	for sid, e := range r.m {
		if e.full {
			del[sid] = nil
		}
	}
	r.apply(del, uint64(n))
	r.apply(map[string]*chorus.Object{"ETnew": {SID: "ETnew", Kind: chorus.KindDocument, ServiceSID: "IS1", Data: big}}, uint64(n+1))
	checkRecent(t, 1, r)
	if e, ok := r.get(chorus.KindDocument, "IS1", "ETnew", ""); !ok || !e.full {
		t.Fatalf("a row after the deletions: %+v, %v; want it with its data", e, ok)
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

// TestCachedObjectSeesOtherProcess: a write to the file by another store
// (another process: chorus import into a running server) is not hidden by
// the rows the readers' memory holds, at least not for longer than
// dataVersionPoll, although the first store runs no batch.
func TestCachedObjectSeesOtherProcess(t *testing.T) {
	ctx := context.Background()
	a, path := openFile(t)
	doc := seedDoc(t, a)
	if o, ok, err := a.CachedObject(ctx, chorus.KindDocument, "IS1", doc.SID, ""); err != nil || !ok || string(o.Data) != `{"v":0}` {
		t.Fatalf("CachedObject = %v, %v, %v; want the seeded row", o, ok, err)
	}
	b, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(ctx, func(tx chorus.Tx) error {
		o, err := tx.Object(ctx, chorus.KindDocument, "IS1", doc.SID)
		if err != nil {
			return err
		}
		o.Data, o.Revision = json.RawMessage(`{"v":1}`), o.Revision+1
		return tx.UpdateObject(ctx, o)
	})
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	deadline := start.Add(dataVersionPoll + 5*time.Second) // slow CI
	for {
		o, ok, err := a.CachedObject(ctx, chorus.KindDocument, "IS1", doc.SID, "")
		if err != nil {
			t.Fatal(err)
		}
		if !ok || string(o.Data) == `{"v":1}` {
			break // gone from memory (a read transaction sees the write), or fresh
		}
		if time.Now().After(deadline) {
			t.Fatalf("CachedObject still serves %s %v after the other store's write", o.Data, time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if o, err := viewObject(t, a, doc.SID); err != nil || string(o.Data) != `{"v":1}` {
		t.Fatalf("View = %v, %v; want the other store's write", o, err)
	}
}

// The writer's item rows answer Item inside Update exactly as SQLite
// would, whatever happened before: writes, deletes, requests rolled back
// inside a shared batch, the deletion of the item's object, and another
// store's write to the file. The test runs random requests, some failing
// after they wrote and some concurrent (so that they share batches), and
// after each round compares Item in Update (the cache, when it holds the
// row) with Item in View (always SQLite) for every item it may touch.
func TestItemCacheCoherent(t *testing.T) {
	ctx := context.Background()
	s, path := openFile(t)
	seedDoc(t, s) // the service
	now := time.Unix(1_700_000_000, 0).UTC()
	newCollection := func(k chorus.Kind) *chorus.Object {
		o := &chorus.Object{Kind: k, SID: chorus.NewSID(chorus.PrefixMap), AccountSID: "AC1", ServiceSID: "IS1",
			CreatedBy: "t", DateCreated: now, DateUpdated: now}
		if k == chorus.KindList {
			o.SID = chorus.NewSID(chorus.PrefixList)
		}
		if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.InsertObject(ctx, o) }); err != nil {
			t.Fatal(err)
		}
		return o
	}
	m, l := newCollection(chorus.KindMap), newCollection(chorus.KindList)
	type target struct {
		obj *chorus.Object
		ref chorus.ItemRef
	}
	var targets []target
	refresh := func() {
		targets = targets[:0]
		for i := range 4 {
			targets = append(targets, target{m, chorus.ItemRef{Key: fmt.Sprintf("k%d", i)}}, target{l, chorus.ItemRef{Index: int64(i)}})
		}
	}
	refresh()
	rng := rand.New(rand.NewPCG(1, 2))
	var rev atomic.Int64
	errFail := errors.New("fail after writing")
	// op is one random request: a few writes and reads, and sometimes a
	// failure after them.
	op := func(seed uint64) func(tx chorus.Tx) error {
		r := rand.New(rand.NewPCG(seed, 7))
		return func(tx chorus.Tx) error {
			for range 1 + r.IntN(3) {
				tg := targets[r.IntN(len(targets))]
				switch r.IntN(4) {
				case 0, 1:
					it := &chorus.Item{Kind: tg.obj.Kind, ObjectSID: tg.obj.SID, Index: tg.ref.Index, Key: tg.ref.Key,
						Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, r.IntN(1000))), Revision: rev.Add(1),
						LastEventID: rev.Load(), CreatedBy: "t", DateCreated: now, DateUpdated: time.Now()}
					if r.IntN(3) == 0 {
						exp := time.Now().Add(time.Duration(r.IntN(100)) * time.Hour)
						it.DateExpires = &exp
					}
					switch r.IntN(10) {
					case 0:
						it.Data = nil
					case 1:
						it.Data = json.RawMessage{} // stored as an empty blob
					case 2:
						it.DateUpdated = it.DateUpdated.In(time.FixedZone("UTC+5", 5*3600))
					}
					if r.IntN(15) == 0 { // an item of no object: refused, and SQLite goes on
						bogus := *it
						bogus.ObjectSID = chorus.NewSID(chorus.PrefixMap)
						if err := tx.PutItem(ctx, &bogus); err == nil {
							return fmt.Errorf("PutItem of a missing object = nil")
						}
					}
					if err := tx.PutItem(ctx, it); err != nil {
						return err
					}
					it.Data, it.Revision = json.RawMessage(`{"changed":"by the caller"}`), -1 // not the cache's
					if it.DateExpires != nil {
						*it.DateExpires = time.Time{}
					}
				case 2:
					if err := tx.DeleteItem(ctx, tg.obj.SID, tg.ref); err != nil && !errors.Is(err, chorus.ErrNotFound) {
						return err
					}
				default:
					it, err := tx.Item(ctx, tg.obj.SID, tg.ref)
					if err != nil && !errors.Is(err, chorus.ErrNotFound) {
						return err
					}
					if it != nil { // the caller owns what it got
						it.Revision = -1
						if len(it.Data) > 0 {
							it.Data[0] = 'X'
						}
						if it.DateExpires != nil {
							*it.DateExpires = time.Time{}
						}
					}
				}
			}
			if r.IntN(5) == 0 {
				return errFail
			}
			return nil
		}
	}
	items := func(in func(func(chorus.ReadTx) error) error) []string {
		out := make([]string, len(targets))
		if err := in(func(tx chorus.ReadTx) error {
			for i, tg := range targets {
				it, err := tx.Item(ctx, tg.obj.SID, tg.ref)
				switch {
				case errors.Is(err, chorus.ErrNotFound):
					out[i] = "none"
				case err != nil:
					return err
				default:
					out[i] = fmt.Sprintf("%+v nil=%t %s %v", *it, it.Data == nil, it.Data, it.DateExpires)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	inWriter, inView := readIn(ctx, s)
	var hits int
	for round := range 300 {
		var wg sync.WaitGroup
		for range 1 + rng.IntN(4) {
			seed := rng.Uint64()
			wg.Go(func() {
				if err := s.Update(ctx, op(seed)); err != nil && !errors.Is(err, errFail) {
					t.Errorf("round %d: %v", round, err)
				}
			})
		}
		wg.Wait()
		switch rng.IntN(20) {
		case 0: // the map goes, with its items; a new one takes its place
			if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.DeleteObject(ctx, m.SID) }); err != nil {
				t.Fatal(err)
			}
			old := m
			m = newCollection(chorus.KindMap)
			refresh()
			for i := range 4 {
				ref := chorus.ItemRef{Key: fmt.Sprintf("k%d", i)}
				for _, in := range []func(func(chorus.ReadTx) error) error{inWriter, inView} {
					if err := in(func(tx chorus.ReadTx) error {
						_, err := tx.Item(ctx, old.SID, ref)
						return err
					}); !errors.Is(err, chorus.ErrNotFound) {
						t.Fatalf("round %d: item %s of a deleted map: %v", round, ref.Key, err)
					}
				}
			}
		case 1: // another store writes the file
			o, err := Open(ctx, path, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = o.Update(ctx, func(tx chorus.Tx) error {
				return tx.PutItem(ctx, &chorus.Item{Kind: chorus.KindMap, ObjectSID: m.SID, Key: "k1",
					Data: json.RawMessage(`{"other":"process"}`), Revision: rev.Add(1), CreatedBy: "other",
					DateCreated: now, DateUpdated: now})
			})
			o.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
		got, want := items(inWriter), items(inView)
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("round %d: Item(%s %v) in Update = %s, in View = %s", round, targets[i].obj.SID, targets[i].ref, got[i], want[i])
			}
		}
	}
	if err := s.Update(ctx, func(chorus.Tx) error { hits = s.objs.items.hits; return nil }); err != nil {
		t.Fatal(err)
	}
	if hits == 0 {
		t.Fatal("the writer's item rows never answered a read: the test checked nothing")
	}

	// A deleted service takes its objects' items with it.
	if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.DeleteService(ctx, "IS1") }); err != nil {
		t.Fatal(err)
	}
	for i, got := range items(inWriter) {
		if got != "none" {
			t.Errorf("Item(%v) after its service was deleted = %s", targets[i].ref, got)
		}
	}
}

// The writer's item rows stay within their bounds, account their bytes
// exactly, and own their memory.
func TestItemCacheBounds(t *testing.T) {
	c := itemCache{m: make(map[itemKey]*chorus.Item)}
	check := func() {
		t.Helper()
		sum := 0
		for _, it := range c.m {
			sum += rowBytes(it)
		}
		if sum != c.bytes {
			t.Fatalf("bytes = %d, the rows add up to %d", c.bytes, sum)
		}
		if len(c.m) > maxCachedItems || c.bytes > maxCachedItemBytes {
			t.Fatalf("%d rows, %d bytes: over the bounds", len(c.m), c.bytes)
		}
	}
	body := strings.Repeat("k", 1<<16) // a request body the key is cut from
	small := json.RawMessage(`{"n":1}`)
	for i := range 2 * maxCachedItems {
		c.fill(&chorus.Item{Kind: chorus.KindMap, ObjectSID: fmt.Sprintf("MP%d", i%7), Key: body[:8+i%100] + fmt.Sprint(i), Data: small})
	}
	check()
	if len(c.m) != maxCachedItems {
		t.Errorf("%d small rows held, want %d", len(c.m), maxCachedItems)
	}
	for k, it := range c.m {
		if unsafe.StringData(k.ref.Key) == unsafe.StringData(body) || unsafe.StringData(it.Key) == unsafe.StringData(body) {
			t.Fatal("a held row shares the request body's memory")
		}
	}
	big := json.RawMessage(`"` + strings.Repeat("x", 16<<10) + `"`)
	for i := range 2000 {
		c.fill(&chorus.Item{Kind: chorus.KindMap, ObjectSID: "MPbig", Key: fmt.Sprint(i), Data: big})
	}
	check()
	if c.bytes < maxCachedItemBytes*9/10 {
		t.Errorf("%d bytes held, want the budget of %d nearly used", c.bytes, maxCachedItemBytes)
	}
	c.dropObject("MPbig")
	check()
	for k := range c.m {
		if k.object == "MPbig" {
			t.Fatal("dropObject left a row of its object")
		}
	}
	huge := &chorus.Item{Kind: chorus.KindMap, ObjectSID: "MP1", Key: "huge", Data: json.RawMessage(`"` + strings.Repeat("x", maxCachedItemBytes/32) + `"`)}
	c.fill(huge)
	if _, ok := c.get("MP1", chorus.ItemRef{Key: "huge"}); ok {
		t.Error("a row larger than 1/64 of the budget is held")
	}
	c.wrote(&chorus.Item{Kind: chorus.KindList, ObjectSID: "ES1", Index: 7, Data: small})
	if _, ok := c.get("ES1", chorus.ItemRef{Index: 7}); ok {
		t.Error("wrote held a row it did not hold before (a list append)")
	}
	c.clear()
	check()
	if len(c.m) != 0 {
		t.Error("clear left rows")
	}
}

// A cached object row does not pin the request its unique name was cut
// from, and an update that keeps the name costs no copy of it.
func TestObjectCacheOwnsStrings(t *testing.T) {
	c := newObjectCache()
	body := "UniqueName=" + strings.Repeat("n", 1<<16)
	o := &chorus.Object{Kind: chorus.KindDocument, SID: "ET1", ServiceSID: "IS1", UniqueName: body[len("UniqueName="):][:20], CreatedBy: body[:5]}
	c.put(o)
	held := c.m["ET1"]
	if unsafe.StringData(held.UniqueName) == unsafe.StringData(o.UniqueName) || unsafe.StringData(held.CreatedBy) == unsafe.StringData(o.CreatedBy) {
		t.Fatal("the cached row shares the request's memory")
	}
	o.Revision++
	c.put(o)
	if unsafe.StringData(c.m["ET1"].UniqueName) != unsafe.StringData(held.UniqueName) {
		t.Error("an update that kept the name copied it again")
	}
	if got, ok := c.byName(chorus.KindDocument, "IS1", o.UniqueName); !ok || got.Revision != 1 {
		t.Errorf("byName after the update = %v, %v", got, ok)
	}
}

// readIn returns the two ways to read s: in the writer (Update, answered
// from its caches where they hold the row) and in a reader (View: SQLite).
func readIn(ctx context.Context, s *Store) (inWriter, inView func(func(chorus.ReadTx) error) error) {
	inWriter = func(fn func(chorus.ReadTx) error) error {
		return s.Update(ctx, func(tx chorus.Tx) error { return fn(tx) })
	}
	inView = func(fn func(chorus.ReadTx) error) error { return s.View(ctx, fn) }
	return inWriter, inView
}
