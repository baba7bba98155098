package transfer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/transfer"
)

// watchedStore is a target store that logs its item reads (into a log it
// may share with a source's proxy) and can fail the n-th Update that
// writes items.
type watchedStore struct {
	chorus.Store
	log *eventLog

	failItemUpdate int // fail the n-th Update that puts items (1-based); 0: never
	itemUpdates    atomic.Int64
}

type eventLog struct {
	mu  sync.Mutex
	all []string
}

func (l *eventLog) add(format string, a ...any) {
	l.mu.Lock()
	l.all = append(l.all, fmt.Sprintf(format, a...))
	l.mu.Unlock()
}

func (l *eventLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.all...)
}

var errInjected = errors.New("injected failure")

func (s *watchedStore) View(ctx context.Context, fn func(chorus.ReadTx) error) error {
	return s.Store.View(ctx, func(tx chorus.ReadTx) error { return fn(&watchedTx{ReadTx: tx, log: s.log}) })
}

func (s *watchedStore) Update(ctx context.Context, fn func(chorus.Tx) error) error {
	return s.Store.Update(ctx, func(tx chorus.Tx) error {
		w := &watchedWriteTx{Tx: tx}
		if err := fn(w); err != nil {
			return err
		}
		if w.puts > 0 && s.failItemUpdate > 0 && s.itemUpdates.Add(1) == int64(s.failItemUpdate) {
			return errInjected // rolls back the batch
		}
		return nil
	})
}

type watchedTx struct {
	chorus.ReadTx
	log *eventLog
}

func (tx *watchedTx) Items(ctx context.Context, objectSID string, q chorus.ItemQuery) ([]*chorus.Item, error) {
	tx.log.add("target Items limit=%d", q.Limit)
	return tx.ReadTx.Items(ctx, objectSID, q)
}

func (tx *watchedTx) Item(ctx context.Context, objectSID string, ref chorus.ItemRef) (*chorus.Item, error) {
	tx.log.add("target Item %q", ref.Key)
	return tx.ReadTx.Item(ctx, objectSID, ref)
}

func (tx *watchedTx) ItemsOf(ctx context.Context, objectSID string, refs []chorus.ItemRef) ([]*chorus.Item, error) {
	tx.log.add("target ItemsOf %d", len(refs))
	return tx.ReadTx.ItemsOf(ctx, objectSID, refs)
}

type watchedWriteTx struct {
	chorus.Tx
	puts int
}

func (tx *watchedWriteTx) PutItem(ctx context.Context, it *chorus.Item) error {
	tx.puts++
	return tx.Tx.PutItem(ctx, it)
}

// wholeReads returns the target item listings in log that were not
// bounded by a page.
func wholeReads(log []string) []string {
	var out []string
	for _, l := range log {
		if strings.HasPrefix(l, "target Items") && (strings.HasSuffix(l, "limit=0") || strings.Contains(l, "limit=-")) {
			out = append(out, l)
		}
	}
	return out
}

func mapKey(i int) string { return fmt.Sprintf("k%03d", i) }

// An existing map whose items span several source pages is re-imported
// after updates, deletions and additions on both sides of page
// boundaries: the source is read a page at a time and each page's items
// are looked up in the target before the next page is asked for; the
// target is never listed whole; the counts are those of a whole diff; and
// the target ends equal to the source with event ids above all it had.
func TestImportPagesItems(t *testing.T) {
	ctx := context.Background()
	src, eng, svc, _ := sourceNode(t)
	m, err := eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindMap, engine.CreateObject{UniqueName: "paged"})
	if err != nil {
		t.Fatal(err)
	}
	put := func(i int, v string) {
		t.Helper()
		w := engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(fmt.Sprintf(`{"i":%d,"v":%q}`, i, v))}
		if _, _, err := eng.WriteItem(ctx, engine.SystemActor(), svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: mapKey(i)}, w); err != nil {
			t.Fatal(err)
		}
	}
	const n, page = 25, 4 // 7 pages
	for i := range n {
		put(i, "first")
	}

	st, _ := openSQLite(t)
	defer st.Close()
	s := src.source()
	s.PageSize = page
	opt := transfer.Options{Account: account(src), Logger: quiet}
	transfer.SetSpoolMem(&opt, 64) // a few items: the spool goes to a file
	if rep, err := transfer.Import(ctx, s, st, opt); err != nil || rep.Items.Created != n {
		t.Fatalf("first import: %v, items %+v", err, rep.Items)
	}

	// Updates and deletions at the page boundaries 3|4 and 15|16, and at
	// the end; additions after the last key and between pages.
	for _, i := range []int{3, 4, 15, 16, 24} {
		put(i, "second")
	}
	for _, i := range []int{7, 8, 20} {
		if _, err := eng.DeleteItem(ctx, engine.SystemActor(), svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: mapKey(i)}, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{25, 26} {
		put(i, "new")
	}
	w := engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(`{"between":true}`)}
	if _, _, err := eng.WriteItem(ctx, engine.SystemActor(), svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: mapKey(11) + "a"}, w); err != nil {
		t.Fatal(err)
	}
	var maxBefore int64
	_ = st.View(ctx, func(tx chorus.ReadTx) error {
		its, err := tx.Items(ctx, m.SID, chorus.ItemQuery{Kind: chorus.KindMap})
		for _, it := range its {
			maxBefore = max(maxBefore, it.LastEventID)
		}
		return err
	})

	// A proxy logs the source's requests into the target's log.
	log := &eventLog{}
	target, _ := url.Parse(src.url)
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/Items") {
			log.add("source %s", r.URL.RequestURI())
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	s.BaseURL = front.URL
	ws := &watchedStore{Store: st, log: log}
	rep, err := transfer.Import(ctx, s, ws, opt)
	if err != nil {
		t.Fatal(err)
	}
	want := transfer.Counts{Created: 3, Updated: 5, Unchanged: n - 5 - 3, Deleted: 3}
	if rep.Items != want || rep.Objects.Updated != 1 {
		t.Errorf("items %+v, want %+v; objects %+v, want 1 updated", rep.Items, want, rep.Objects)
	}
	lines := log.lines()
	if whole := wholeReads(lines); len(whole) > 0 {
		t.Errorf("the target's items were listed whole: %q", whole)
	}
	// Every source page but the first is asked for after the target was
	// asked for the previous page's keys.
	pages, lookups := 0, 0
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "source "):
			if pages > 0 && lookups == 0 {
				t.Errorf("source page %d (%s) asked for before the target was asked for page %d's items:\n%s", pages+1, l, pages, strings.Join(lines[:i+1], "\n"))
			}
			pages++
			lookups = 0
		case strings.HasPrefix(l, "target Item "):
			t.Errorf("a target item looked up alone: %s (a round trip per item)", l)
		case strings.HasPrefix(l, "target ItemsOf "):
			lookups++
		}
	}
	if wantPages := (n - 3 + 3 + page - 1) / page; pages != wantPages {
		t.Errorf("%d source pages of items read, want %d", pages, wantPages)
	}

	sameItems(t, src.srv.Engine().Store(), st, m.SID)
	checkEventIDs(t, st, rep)
	_ = st.View(ctx, func(tx chorus.ReadTx) error {
		its, err := tx.Items(ctx, m.SID, chorus.ItemQuery{Kind: chorus.KindMap})
		for _, it := range its {
			if strings.Contains(string(it.Data), "second") || strings.Contains(string(it.Data), "new") || strings.Contains(string(it.Data), "between") {
				if it.LastEventID <= maxBefore {
					t.Errorf("item %q written with event id %d, not above the target's %d", it.Key, it.LastEventID, maxBefore)
				}
			}
		}
		return err
	})

	// Nothing changed: a re-run (verifying) writes nothing and still reads
	// the target a page at a time.
	log.all = nil
	opt.Verify = true
	rep, err = transfer.Import(ctx, s, ws, opt)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Items != (transfer.Counts{Unchanged: n - 3 + 3}) || rep.Objects.Unchanged != 1 {
		t.Errorf("re-run: items %+v, objects %+v; want all unchanged", rep.Items, rep.Objects)
	}
	if whole := wholeReads(log.lines()); len(whole) > 0 {
		t.Errorf("re-run: the target's items were listed whole: %q", whole)
	}
}

// storeSource is a bootstrapped SQLite store to import from (a store
// source can hold what REST would not show, and is quick to fill).
func storeSource(t *testing.T) (chorus.Store, engine.Credentials) {
	t.Helper()
	ctx := context.Background()
	src, _ := openSQLite(t)
	t.Cleanup(func() { src.Close() })
	bus := mem.New()
	t.Cleanup(func() { bus.Close() })
	creds, _, err := engine.New(engine.Config{Store: src, Bus: bus}).Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	return src, creds
}

// putRawItems writes a map's items straight into st, bypassing the engine.
func putRawItems(t *testing.T, st chorus.Store, m *chorus.Object, data func(i int) string, idx ...int) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	err := st.Update(ctx, func(tx chorus.Tx) error {
		if _, err := tx.Object(ctx, chorus.KindMap, "", m.SID); errors.Is(err, chorus.ErrNotFound) {
			if err := tx.InsertObject(ctx, m); err != nil {
				return err
			}
		}
		for _, i := range idx {
			m.LastEventID++
			it := &chorus.Item{Kind: chorus.KindMap, ObjectSID: m.SID, Key: mapKey(i), Data: json.RawMessage(data(i)),
				Revision: m.LastEventID, LastEventID: m.LastEventID, CreatedBy: "system", DateCreated: now, DateUpdated: now}
			if err := tx.PutItem(ctx, it); err != nil {
				return err
			}
		}
		m.Revision++
		m.DateUpdated = now
		return tx.UpdateObject(ctx, m)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func newMap(creds engine.Credentials) *chorus.Object {
	now := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	return &chorus.Object{Kind: chorus.KindMap, SID: chorus.NewSID(chorus.PrefixMap), AccountSID: creds.AccountSID,
		ServiceSID: creds.ServiceSID, CreatedBy: "system", DateCreated: now, DateUpdated: now}
}

func itemsOf(t *testing.T, st chorus.Store, sid string) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	err := st.View(ctx, func(tx chorus.ReadTx) error {
		its, err := tx.Items(ctx, sid, chorus.ItemQuery{Kind: chorus.KindMap})
		for _, it := range its {
			out[it.Key] = string(it.Data)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameItems checks that the map sid has the same items in both stores.
func sameItems(t *testing.T, src, dst chorus.Store, sid string) {
	t.Helper()
	want, got := itemsOf(t, src, sid), itemsOf(t, dst, sid)
	if len(want) == 0 || fmt.Sprint(want) != fmt.Sprint(got) {
		t.Errorf("map %s: items differ\nsource %v\ntarget %v", sid, want, got)
	}
}

// A copy interrupted part way, while reading the source's pages or while
// writing the items in batches, is completed by the next run: the
// interrupted object is compared again (its row is written last, a new
// one first with the marker date), and the rerun reads the target a page
// at a time.
func TestInterruptedPagedImportIsCompleted(t *testing.T) {
	ctx := context.Background()
	src, creds := storeSource(t)
	m := newMap(creds)
	const n = 1234 // three write batches
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	putRawItems(t, src, m, func(i int) string { return fmt.Sprintf(`{"i":%d}`, i) }, idx...)

	st, _ := openSQLite(t)
	defer st.Close()
	log := &eventLog{}
	ws := &watchedStore{Store: st, log: log, failItemUpdate: 2}
	opt := transfer.Options{Account: transfer.Account{SID: creds.AccountSID}, Logger: quiet}
	transfer.SetSpoolMem(&opt, 1000)
	_, err := transfer.Import(ctx, &transfer.StoreReader{Store: src, PageSize: 100}, ws, opt)
	if !errors.Is(err, errInjected) {
		t.Fatalf("interrupted import: %v, want the injected failure", err)
	}
	if got := len(itemsOf(t, st, m.SID)); got != 500 {
		t.Fatalf("the interrupted import left %d items, want the first batch of 500", got)
	}

	ws.failItemUpdate = 0
	log.all = nil
	rep, err := transfer.Import(ctx, &transfer.StoreReader{Store: src, PageSize: 100}, ws, opt)
	if err != nil {
		t.Fatal(err)
	}
	if want := (transfer.Counts{Created: n - 500, Unchanged: 500}); rep.Items != want || rep.Objects.Updated != 1 {
		t.Errorf("rerun: items %+v, want %+v; objects %+v, want 1 updated (the marked row)", rep.Items, want, rep.Objects)
	}
	if whole := wholeReads(log.lines()); len(whole) > 0 {
		t.Errorf("rerun: the target's items were listed whole: %q", whole)
	}
	compareStores(t, src, st, creds.AccountSID)
	checkEventIDs(t, st, rep)

	// An update of the now existing map interrupted the same way leaves
	// 500 items with event ids above its row's LastEventID (the row is
	// written last): the rerun, with the same event base, continues above
	// them, not above the row.
	putRawItems(t, src, m, func(i int) string { return fmt.Sprintf(`{"i":%d,"v":2}`, i) }, idx...)
	opt.EventBase = time.Now().Add(-time.Minute).UnixMilli()
	ws.failItemUpdate = 2
	ws.itemUpdates.Store(0)
	if _, err := transfer.Import(ctx, &transfer.StoreReader{Store: src, PageSize: 100}, ws, opt); !errors.Is(err, errInjected) {
		t.Fatalf("interrupted update: %v, want the injected failure", err)
	}
	ws.failItemUpdate = 0
	rep, err = transfer.Import(ctx, &transfer.StoreReader{Store: src, PageSize: 100}, ws, opt)
	if err != nil {
		t.Fatal(err)
	}
	if want := (transfer.Counts{Updated: n - 500, Unchanged: 500}); rep.Items != want || rep.Objects.Updated != 1 {
		t.Errorf("rerun of the update: items %+v, want %+v; objects %+v", rep.Items, want, rep.Objects)
	}
	compareStores(t, src, st, creds.AccountSID)
	checkEventIDs(t, st, rep)
}

// A source that fails on a page of items part way: nothing of the object
// is written, and the next run copies it whole.
func TestImportSourceFailsMidPages(t *testing.T) {
	ctx := context.Background()
	src, eng, svc, _ := sourceNode(t)
	m, err := eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindMap, engine.CreateObject{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	for i := range n {
		w := engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
		if _, _, err := eng.WriteItem(ctx, engine.SystemActor(), svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: mapKey(i)}, w); err != nil {
			t.Fatal(err)
		}
	}
	var items atomic.Int64
	var reqs atomic.Int64
	front := faultProxy(t, src.url, func(_ int64, path string) int {
		if strings.Contains(path, "/Items") && items.Add(1) == 2 {
			return http.StatusBadRequest // not retried
		}
		return 0
	}, &reqs)
	s := src.source()
	s.BaseURL, s.PageSize = front, 3
	st, _ := openSQLite(t)
	defer st.Close()
	opt := transfer.Options{Account: account(src), Logger: quiet}
	if _, err := transfer.Import(ctx, s, st, opt); err == nil {
		t.Fatal("the import did not fail")
	}
	err = st.View(ctx, func(tx chorus.ReadTx) error {
		_, err := tx.Object(ctx, chorus.KindMap, "", m.SID)
		return err
	})
	if !errors.Is(err, chorus.ErrNotFound) {
		t.Fatalf("the map is in the target after its source failed: %v", err)
	}
	rep, err := transfer.Import(ctx, s, st, opt)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Items.Created != n || rep.Objects.Created != 1 {
		t.Errorf("rerun: objects %+v, items %+v; want the map and its %d items created", rep.Objects, rep.Items, n)
	}
	sameItems(t, src.srv.Engine().Store(), st, m.SID)
}

// An invalid item on the source's last page refuses the object before any
// of it is written, also the changes on earlier pages (as when the items
// were read whole).
func TestInvalidItemOnLastPageWritesNothing(t *testing.T) {
	ctx := context.Background()
	src, creds := storeSource(t)
	m := newMap(creds)
	putRawItems(t, src, m, func(i int) string { return fmt.Sprintf(`{"i":%d}`, i) }, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
	st, _ := openSQLite(t)
	defer st.Close()
	opt := transfer.Options{Account: transfer.Account{SID: creds.AccountSID}, Logger: quiet}
	transfer.SetSpoolMem(&opt, 16)
	from := &transfer.StoreReader{Store: src, PageSize: 3}
	if rep, err := transfer.Import(ctx, from, st, opt); err != nil || rep.Items.Created != 10 {
		t.Fatalf("first import: %v, %+v", err, rep.Items)
	}
	before := itemsOf(t, st, m.SID)

	putRawItems(t, src, m, func(i int) string { return `{"changed":true}` }, 0, 1)
	putRawItems(t, src, m, func(i int) string { return `["not an object"]` }, 11)
	rep, err := transfer.Import(ctx, from, st, opt)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Objects.Refused != 1 || len(rep.Conflicts) != 1 || !strings.Contains(rep.Conflicts[0].Reason, "not a JSON object") {
		t.Errorf("objects %+v, conflicts %+v; want the map refused for its item", rep.Objects, rep.Conflicts)
	}
	if rep.Items != (transfer.Counts{}) {
		t.Errorf("items %+v counted for a refused map", rep.Items)
	}
	after := itemsOf(t, st, m.SID)
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the refused map's items were written:\nbefore %v\nafter  %v", before, after)
	}
}

// An import that could not spool a large list's or map's changes says so
// before it copies anything, not when the first such object comes.
func TestImportChecksTempDirFirst(t *testing.T) {
	ctx := context.Background()
	src, creds := storeSource(t)
	m := newMap(creds)
	putRawItems(t, src, m, func(i int) string { return fmt.Sprintf(`{"i":%d}`, i) }, 0, 1, 2)
	st, _ := openSQLite(t)
	defer st.Close()
	missing := filepath.Join(t.TempDir(), "gone")
	opt := transfer.Options{Account: transfer.Account{SID: creds.AccountSID}, Logger: quiet, TempDir: missing}
	rep, err := transfer.Import(ctx, &transfer.StoreReader{Store: src}, st, opt)
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("import with TempDir %s: %v, want an error naming it", missing, err)
	}
	if rep.Objects.Created != 0 || len(itemsOf(t, st, m.SID)) != 0 {
		t.Fatalf("objects %+v written before the temporary directory was found missing", rep.Objects)
	}
	opt.DryRun = true // writes nothing, needs no spool
	if _, err := transfer.Import(ctx, &transfer.StoreReader{Store: src}, st, opt); err != nil {
		t.Fatalf("dry run with a missing TempDir: %v", err)
	}
}
