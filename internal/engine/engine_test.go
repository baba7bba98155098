package engine_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
)

// clock is a settable time source.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

type fixture struct {
	eng   *engine.Engine
	bus   *mem.Bus
	clock *clock
	svc   *chorus.Service
	creds engine.Credentials
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{bus: mem.New(), clock: newClock()}
	f.eng = engine.New(engine.Config{Store: openSQLite(t), Bus: f.bus, Now: f.clock.Now})
	f.creds, f.svc = bootstrap(t, f.eng)
	return f
}

// openSQLite opens a real SQLite store in a temporary directory, closed
// when the test ends.
func openSQLite(tb testing.TB) *sqlite.Store {
	tb.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "chorus.db"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// bootstrap creates eng's account, key and default service.
func bootstrap(tb testing.TB, eng *engine.Engine) (engine.Credentials, *chorus.Service) {
	tb.Helper()
	ctx := context.Background()
	creds, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		tb.Fatal(err)
	}
	svc, err := eng.Service(ctx, creds.AccountSID, creds.ServiceSID)
	if err != nil {
		tb.Fatal(err)
	}
	return creds, svc
}

// record collects the events published for one object.
type record struct {
	mu  sync.Mutex
	evs []*chorus.Event
}

func (f *fixture) watch(t testing.TB, objectSID string) *record {
	r := &record{}
	cancel, err := f.bus.Subscribe(objectSID, func(e *chorus.Event) {
		r.mu.Lock()
		r.evs = append(r.evs, e)
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return r
}

func (r *record) types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.evs {
		out = append(out, fmt.Sprintf("%s#%d", e.Type, e.ID))
	}
	return out
}

func wantCode(t testing.TB, err error, code int) {
	t.Helper()
	if got := chorus.ErrorCode(err); got != code {
		t.Fatalf("error = %v (code %d), want code %d", err, got, code)
	}
}

func ptr[T any](v T) *T { return &v }

var sys = engine.SystemActor()

func TestBootstrapPersists(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func() *engine.Engine {
		st, err := sqlite.Open(ctx, filepath.Join(dir, "chorus.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return engine.New(engine.Config{Store: st, Bus: mem.New()})
	}
	first, created, err := open().Bootstrap(ctx, engine.Credentials{})
	if err != nil || !created {
		t.Fatalf("first Bootstrap = %v, created %v", err, created)
	}
	for _, s := range []string{first.AuthToken, first.APISecret} {
		if len(s) != 32 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
			t.Errorf("secret %q is not 32 alphanumerics", s)
		}
	}
	again, created, err := open().Bootstrap(ctx, engine.Credentials{})
	if err != nil || created || again != first {
		t.Fatalf("second Bootstrap = %+v, %v, %v; want %+v, false, nil", again, created, err, first)
	}
	eng := open()
	want := engine.Credentials{
		AccountSID: chorus.NewSID("AC"), AuthToken: "tok", APIKeySID: chorus.NewSID("SK"), APISecret: "sec",
		ServiceSID: chorus.NewSID("IS"),
	}
	if _, _, err := eng.Bootstrap(ctx, want); err != nil {
		t.Fatal(err)
	}
	if acct, err := eng.Authenticate(ctx, want.APIKeySID, "sec"); err != nil || acct != want.AccountSID {
		t.Errorf("Authenticate(key) = %q, %v", acct, err)
	}
	if acct, err := eng.Authenticate(ctx, want.AccountSID, "tok"); err != nil || acct != want.AccountSID {
		t.Errorf("Authenticate(account) = %q, %v", acct, err)
	}
	_, err = eng.Authenticate(ctx, want.AccountSID, "wrong")
	wantCode(t, err, 20003)
	if _, err := eng.Service(ctx, want.AccountSID, want.ServiceSID); err != nil {
		t.Errorf("env service missing: %v", err)
	}
	_, err = eng.Service(ctx, want.AccountSID, first.ServiceSID)
	wantCode(t, err, 54056)
	_, err = eng.Service(ctx, want.AccountSID, chorus.NewSID("IS"))
	wantCode(t, err, 54050)
	def, err := eng.Service(ctx, first.AccountSID, "default")
	if err != nil || def.SID != first.ServiceSID {
		t.Errorf("Service(default) = %v, %v; want %s", def, err, first.ServiceSID)
	}
}

func TestDocumentLifecycle(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	doc, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{UniqueName: "game"})
	if err != nil {
		t.Fatal(err)
	}
	if string(doc.Data) != "{}" || doc.RevisionString() != "0" || doc.LastEventID != 0 || doc.CreatedBy != "system" {
		t.Errorf("new document = %+v", doc)
	}
	rec := f.watch(t, doc.SID)
	_, err = f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{UniqueName: "game"})
	wantCode(t, err, 54301)

	for i := 1; i <= 17; i++ {
		doc, err = f.eng.UpdateObject(ctx, sys, f.svc, chorus.KindDocument, "game", engine.UpdateObject{
			Data: json.RawMessage(fmt.Sprintf(`{ "n": %d }`, i)), IfMatch: doc.RevisionString(),
		})
		if err != nil {
			t.Fatal(err)
		}
		if doc.LastEventID != int64(i) {
			t.Fatalf("update %d: LastEventID = %d", i, doc.LastEventID)
		}
	}
	if doc.RevisionString() != "11" || string(doc.Data) != `{"n":17}` {
		t.Errorf("after 17 updates: revision %s data %s; want 11 and compact data", doc.RevisionString(), doc.Data)
	}
	_, err = f.eng.UpdateObject(ctx, sys, f.svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(`{}`), IfMatch: "10"})
	wantCode(t, err, 54103)
	_, err = f.eng.UpdateObject(ctx, sys, f.svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(`{}`), IfMatch: "zz"})
	wantCode(t, err, 54003)
	got, _ := f.eng.Object(ctx, sys, f.svc, chorus.KindDocument, doc.SID)
	if string(got.Data) != `{"n":17}` {
		t.Errorf("failed updates changed data to %s", got.Data)
	}

	// TTL only: data and revision stay, no event; expiry is set; 0 clears it.
	doc, err = f.eng.UpdateObject(ctx, sys, f.svc, chorus.KindDocument, doc.SID, engine.UpdateObject{TTL: ptr(60)})
	if err != nil || string(doc.Data) != `{"n":17}` || doc.DateExpires == nil || !doc.DateExpires.Equal(f.clock.Now().Add(time.Minute)) {
		t.Fatalf("setTtl(60) = %+v, %v", doc, err)
	}
	if doc.RevisionString() != "11" || doc.LastEventID != 17 {
		t.Errorf("setTtl(60) changed revision to %s, last event to %d", doc.RevisionString(), doc.LastEventID)
	}
	doc, _ = f.eng.UpdateObject(ctx, sys, f.svc, chorus.KindDocument, doc.SID, engine.UpdateObject{TTL: ptr(0)})
	if doc.DateExpires != nil {
		t.Errorf("setTtl(0): DateExpires = %v, want nil", doc.DateExpires)
	}
	removed, err := f.eng.DeleteObject(ctx, sys, f.svc, chorus.KindDocument, "game")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.eng.Object(ctx, sys, f.svc, chorus.KindDocument, doc.SID)
	wantCode(t, err, 54100)
	types := rec.types()
	if len(types) != 18 || types[0] != "document_updated#1" || types[17] != fmt.Sprintf("document_removed#%d", removed.LastEventID) {
		t.Errorf("events = %v", types)
	}
	// The name is free again.
	if _, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{UniqueName: "game"}); err != nil {
		t.Errorf("re-create after delete: %v", err)
	}
}

func TestValidation(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	big := `{"a":"` + strings.Repeat("x", chorus.MaxDataBytes) + `"}`
	tests := []struct {
		name string
		p    engine.CreateObject
		kind chorus.Kind
		code int
	}{
		{"sid-shaped name", engine.CreateObject{UniqueName: "ET" + strings.Repeat("a", 32)}, chorus.KindDocument, 54302},
		{"name too long", engine.CreateObject{UniqueName: strings.Repeat("n", 321)}, chorus.KindList, 54302},
		{"bad json", engine.CreateObject{Data: json.RawMessage(`{"a":`)}, chorus.KindDocument, 54008},
		{"array data", engine.CreateObject{Data: json.RawMessage(`[1]`)}, chorus.KindDocument, 54008},
		{"null data", engine.CreateObject{Data: json.RawMessage(`null`)}, chorus.KindDocument, 54101},
		{"too large", engine.CreateObject{Data: json.RawMessage(big)}, chorus.KindDocument, 54006},
		{"negative ttl", engine.CreateObject{TTL: ptr(-1)}, chorus.KindMap, 54011},
		{"ttl over a year", engine.CreateObject{TTL: ptr(chorus.MaxTTL + 1)}, chorus.KindStream, 54011},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.eng.CreateObject(ctx, sys, f.svc, tt.kind, tt.p)
			wantCode(t, err, tt.code)
		})
	}
	page, err := f.eng.Objects(ctx, sys, f.svc, chorus.KindDocument, engine.PageRequest{})
	if err != nil || len(page.Items) != 0 {
		t.Errorf("rejected creates left %d documents (err %v)", len(page.Items), err)
	}
	// Exactly at the limit is fine.
	atLimit := `{"a":"` + strings.Repeat("x", chorus.MaxDataBytes-8) + `"}`
	if _, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{Data: json.RawMessage(atLimit)}); err != nil {
		t.Errorf("16 KiB document: %v", err)
	}
}

func TestListItemsAndPaging(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	list, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindList, engine.CreateObject{UniqueName: "todo"})
	if err != nil {
		t.Fatal(err)
	}
	rec := f.watch(t, list.SID)
	for i := range 7 {
		it, err := f.eng.AddListItem(ctx, sys, f.svc, "todo", engine.ItemWrite{Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
		if err != nil || it.Index != int64(i) || it.LastEventID != int64(i+1) {
			t.Fatalf("push %d = %+v, %v", i, it, err)
		}
	}
	// Delete index 6: indexes are never reused.
	if _, err := f.eng.DeleteItem(ctx, sys, f.svc, chorus.KindList, "todo", chorus.ItemRef{Index: 6}, ""); err != nil {
		t.Fatal(err)
	}
	it, _ := f.eng.AddListItem(ctx, sys, f.svc, "todo", engine.ItemWrite{Data: json.RawMessage(`{"n":7}`)})
	if it.Index != 7 {
		t.Errorf("push after delete: index %d, want 7", it.Index)
	}
	indexes := func(p engine.Page[*chorus.Item]) string {
		var s []string
		for _, it := range p.Items {
			s = append(s, fmt.Sprint(it.Index))
		}
		return strings.Join(s, ",")
	}
	tests := []struct {
		req            engine.ItemPageRequest
		want           string
		hasPrev, hasNx bool
	}{
		{engine.ItemPageRequest{PageSize: 3}, "0,1,2", false, true},
		{engine.ItemPageRequest{PageSize: 10}, "0,1,2,3,4,5,7", false, false},
		{engine.ItemPageRequest{PageSize: 3, Order: "desc"}, "7,5,4", false, true},
		{engine.ItemPageRequest{PageSize: 10, Order: "desc", From: "1"}, "1,0", true, false},
		{engine.ItemPageRequest{PageSize: 2, From: "4", Bounds: "exclusive"}, "5,7", true, false},
		{engine.ItemPageRequest{PageSize: 2, From: "6"}, "7", true, false},
		{engine.ItemPageRequest{PageSize: 2, From: "8"}, "", true, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%+v", tt.req), func(t *testing.T) {
			p, err := f.eng.Items(ctx, sys, f.svc, chorus.KindList, list.SID, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := indexes(p); got != tt.want || (p.PrevToken != "") != tt.hasPrev || (p.NextToken != "") != tt.hasNx {
				t.Errorf("Items = %s prev=%v next=%v; want %s prev=%v next=%v", got, p.PrevToken != "", p.NextToken != "", tt.want, tt.hasPrev, tt.hasNx)
			}
		})
	}
	// Walk forward with tokens, then back from the end.
	var walked []string
	p, _ := f.eng.Items(ctx, sys, f.svc, chorus.KindList, list.SID, engine.ItemPageRequest{PageSize: 3})
	for {
		walked = append(walked, indexes(p))
		if p.NextToken == "" {
			break
		}
		p, err = f.eng.Items(ctx, sys, f.svc, chorus.KindList, list.SID, engine.ItemPageRequest{PageSize: 3, Token: p.NextToken})
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(walked, "|"); got != "0,1,2|3,4,5|7" {
		t.Errorf("forward walk = %s", got)
	}
	p, err = f.eng.Items(ctx, sys, f.svc, chorus.KindList, list.SID, engine.ItemPageRequest{PageSize: 3, Token: p.PrevToken})
	if err != nil || indexes(p) != "3,4,5" || p.PrevToken == "" {
		t.Errorf("previous page = %s (prev %q), %v; want 3,4,5 with a previous page", indexes(p), p.PrevToken, err)
	}
	for _, bad := range []engine.ItemPageRequest{{Order: "up"}, {Bounds: "open"}, {PageSize: 1001}, {Token: "PTnope"}, {From: "x"}} {
		_, err := f.eng.Items(ctx, sys, f.svc, chorus.KindList, list.SID, bad)
		if chorus.ErrorCode(err) == 0 {
			t.Errorf("Items(%+v) = nil error", bad)
		}
	}
	// Conditional item update.
	item, _ := f.eng.Item(ctx, sys, f.svc, chorus.KindList, list.SID, chorus.ItemRef{Index: 0})
	_, _, err = f.eng.WriteItem(ctx, sys, f.svc, chorus.KindList, list.SID, chorus.ItemRef{Index: 0},
		engine.ItemWrite{Data: json.RawMessage(`{"n":"x"}`), IfMatch: "5"})
	wantCode(t, err, 54155)
	upd, created, err := f.eng.WriteItem(ctx, sys, f.svc, chorus.KindList, list.SID, chorus.ItemRef{Index: 0},
		engine.ItemWrite{Data: json.RawMessage(`{"n":"x"}`), IfMatch: item.RevisionString()})
	if err != nil || created || upd.RevisionString() != "1" {
		t.Errorf("conditional update = %+v, %v, %v", upd, created, err)
	}
	_, _, err = f.eng.WriteItem(ctx, sys, f.svc, chorus.KindList, list.SID, chorus.ItemRef{Index: 42}, engine.ItemWrite{Data: json.RawMessage(`{}`)})
	wantCode(t, err, 54151)
	if got := rec.types(); len(got) != 10 || got[7] != "list_item_removed#8" || got[9] != "list_item_updated#10" {
		t.Errorf("list events = %v", got)
	}
}

func TestMapItemModes(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	m, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindMap, engine.CreateObject{})
	if err != nil {
		t.Fatal(err)
	}
	key := chorus.ItemRef{Key: "k/1 é"}
	data := json.RawMessage(`{"v":1}`)
	_, created, err := f.eng.WriteItem(ctx, sys, f.svc, chorus.KindMap, m.SID, key, engine.ItemWrite{Mode: engine.Upsert, Data: data})
	if err != nil || !created {
		t.Fatalf("upsert new = %v, created %v", err, created)
	}
	it, created, err := f.eng.WriteItem(ctx, sys, f.svc, chorus.KindMap, m.SID, key, engine.ItemWrite{Mode: engine.Upsert, Data: data})
	if err != nil || created || it.Revision != 1 {
		t.Fatalf("upsert existing = %+v, created %v, %v", it, created, err)
	}
	_, _, err = f.eng.WriteItem(ctx, sys, f.svc, chorus.KindMap, m.SID, key, engine.ItemWrite{Mode: engine.CreateOnly, Data: data})
	wantCode(t, err, 54208)
	if chorus.AsError(err).Status != 409 {
		t.Errorf("REST create of existing key: status %d, want 409", chorus.AsError(err).Status)
	}
	_, _, err = f.eng.WriteItem(ctx, sys, f.svc, chorus.KindMap, m.SID, key, engine.ItemWrite{Mode: engine.Upsert, Data: data, IfMatch: "-1"})
	if e := chorus.AsError(err); e.Code != 54208 || e.Status != 412 {
		t.Errorf("If-Match -1 on existing key = %v, want 412 54208", err)
	}
	if _, err := f.eng.DeleteItem(ctx, sys, f.svc, chorus.KindMap, m.SID, key, ""); err != nil {
		t.Fatal(err)
	}
	// A stale revision for an item that is gone is 412, never 404.
	_, _, err = f.eng.WriteItem(ctx, sys, f.svc, chorus.KindMap, m.SID, key, engine.ItemWrite{Mode: engine.Upsert, Data: data, IfMatch: "1"})
	if e := chorus.AsError(err); e.Status != 412 {
		t.Errorf("stale revision on removed key = %v, want 412", err)
	}
	_, err = f.eng.DeleteItem(ctx, sys, f.svc, chorus.KindMap, m.SID, key, "")
	wantCode(t, err, 54201)
	_, _, err = f.eng.WriteItem(ctx, sys, f.svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: strings.Repeat("k", 321)}, engine.ItemWrite{Mode: engine.Upsert, Data: data})
	wantCode(t, err, 54209)
	_, _, err = f.eng.WriteItem(ctx, sys, f.svc, chorus.KindMap, "nope", key, engine.ItemWrite{Mode: engine.Upsert, Data: data})
	wantCode(t, err, 54200)
}

func TestStreamsArePublishedNotLogged(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	s, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindStream, engine.CreateObject{UniqueName: "chat"})
	if err != nil {
		t.Fatal(err)
	}
	rec := f.watch(t, s.SID)
	msg, err := f.eng.PublishMessage(ctx, sys, f.svc, "chat", json.RawMessage(`{"hello":"world"}`))
	if err != nil || !chorus.IsSID("TZ", msg.SID) {
		t.Fatalf("publish = %+v, %v", msg, err)
	}
	_, err = f.eng.PublishMessage(ctx, sys, f.svc, "chat", json.RawMessage(`{"a":"`+strings.Repeat("x", chorus.MaxMessageBytes)+`"}`))
	wantCode(t, err, 54006)
	if got := rec.types(); len(got) != 1 || got[0] != "stream_message_published#0" {
		t.Errorf("stream events = %v", got)
	}
	evs, err := f.eng.Events(ctx, f.svc.SID, s.SID, 0, 10)
	if err != nil || len(evs) != 0 {
		t.Errorf("stream log = %v, %v; want empty", evs, err)
	}
}

func TestACL(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	svc, err := f.eng.UpdateService(ctx, f.creds.AccountSID, f.svc.SID, engine.ServiceParams{ACLEnabled: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := f.eng.CreateObject(ctx, sys, svc, chorus.KindDocument, engine.CreateObject{UniqueName: "secret"})
	alice := engine.Actor{Identity: "alice"}
	_, err = f.eng.Object(ctx, alice, svc, chorus.KindDocument, "secret")
	wantCode(t, err, 54007)
	if _, err := f.eng.SetPermission(ctx, svc, chorus.KindDocument, doc.SID, chorus.Permission{Identity: "alice", Read: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.Object(ctx, alice, svc, chorus.KindDocument, "secret"); err != nil {
		t.Errorf("read with permission: %v", err)
	}
	_, err = f.eng.UpdateObject(ctx, alice, svc, chorus.KindDocument, "secret", engine.UpdateObject{Data: json.RawMessage(`{}`)})
	wantCode(t, err, 54007)
	_, err = f.eng.DeleteObject(ctx, alice, svc, chorus.KindDocument, "secret")
	wantCode(t, err, 54007)
	// Without ACLs any identity may do everything.
	svc, _ = f.eng.UpdateService(ctx, f.creds.AccountSID, f.svc.SID, engine.ServiceParams{ACLEnabled: ptr(false)})
	if _, err := f.eng.DeleteObject(ctx, engine.Actor{Identity: "bob"}, svc, chorus.KindDocument, "secret"); err != nil {
		t.Errorf("delete without ACL: %v", err)
	}
}

// TestACLChangesTakeEffectAtOnce: the writer keeps the permission rows its
// writes read (internal/store/sqlite), so every way a permission changes
// must show on the very next write: a downgrade, a deletion, a grant, and
// a new object under a deleted one's name (a new SID: the sqlite tests
// cover an SID that comes back, as an import does).
func TestACLChangesTakeEffectAtOnce(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	svc, err := f.eng.UpdateService(ctx, f.creds.AccountSID, f.svc.SID, engine.ServiceParams{ACLEnabled: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	alice := engine.Actor{Identity: "alice"}
	write := func(name string) error {
		_, err := f.eng.UpdateObject(ctx, alice, svc, chorus.KindDocument, name, engine.UpdateObject{Data: json.RawMessage(`{}`)})
		return err
	}
	set := func(sid string, w bool) {
		t.Helper()
		if _, err := f.eng.SetPermission(ctx, svc, chorus.KindDocument, sid, chorus.Permission{Identity: "alice", Read: true, Write: w}); err != nil {
			t.Fatal(err)
		}
	}
	doc, err := f.eng.CreateObject(ctx, sys, svc, chorus.KindDocument, engine.CreateObject{UniqueName: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, write("shared"), 54007)
	set(doc.SID, true)
	for range 3 {
		if err := write("shared"); err != nil {
			t.Fatalf("write with permission: %v", err)
		}
	}
	set(doc.SID, false)
	wantCode(t, write("shared"), 54007)
	set(doc.SID, true)
	if err := write("shared"); err != nil {
		t.Fatalf("write after the grant: %v", err)
	}
	if err := f.eng.DeletePermission(ctx, svc, chorus.KindDocument, doc.SID, "alice"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, write("shared"), 54007)
	set(doc.SID, true)
	if err := write("shared"); err != nil {
		t.Fatalf("write after the second grant: %v", err)
	}
	// A new document under the old name has none of the old one's grants.
	if _, err := f.eng.DeleteObject(ctx, sys, svc, chorus.KindDocument, "shared"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.CreateObject(ctx, sys, svc, chorus.KindDocument, engine.CreateObject{UniqueName: "shared"}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, write("shared"), 54007)
}

func TestTTLHidesAtOnceAndSweeperRemoves(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	doc, _ := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{UniqueName: "tmp", TTL: ptr(10)})
	m, _ := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindMap, engine.CreateObject{})
	if _, _, err := f.eng.WriteItem(ctx, sys, f.svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: "a"}, engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(`{}`), ItemTTL: ptr(5)}); err != nil {
		t.Fatal(err)
	}
	docEvents, mapEvents := f.watch(t, doc.SID), f.watch(t, m.SID)
	f.clock.Advance(11 * time.Second)
	_, err := f.eng.Object(ctx, sys, f.svc, chorus.KindDocument, "tmp")
	wantCode(t, err, 54100)
	_, err = f.eng.Item(ctx, sys, f.svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: "a"})
	wantCode(t, err, 54201)
	// The expired name can be taken before the sweeper runs.
	if _, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{UniqueName: "tmp"}); err != nil {
		t.Fatalf("reuse of expired name: %v", err)
	}
	before := f.eng.Stats().Writes
	if err := f.eng.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	// The item sweep removed the item (the document went when its name
	// was taken); the object sweep, the trim and the sweeps after found
	// nothing to remove: no write counted for them.
	for range 3 {
		if err := f.eng.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.eng.Stats().Writes - before; got != 1 {
		t.Errorf("a sweep that removed an item, and 3 that found nothing, counted %d writes, want 1", got)
	}
	if got := docEvents.types(); len(got) != 1 || got[0] != "document_removed#1" {
		t.Errorf("document events = %v", got)
	}
	if got := mapEvents.types(); len(got) != 1 || got[0] != "map_item_removed#2" {
		t.Errorf("map events = %v", got)
	}
}

func TestReplayAndCatchUp(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	doc, _ := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{})
	for i := range 5 {
		doc, _ = f.eng.UpdateObject(ctx, sys, f.svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
	}
	evs, truncated, err := f.eng.Replay(ctx, doc, 2, 100)
	if err != nil || truncated || len(evs) != 3 || evs[0].ID != 3 || evs[2].ID != 5 {
		t.Fatalf("Replay(after 2) = %d events, truncated %v, %v", len(evs), truncated, err)
	}
	// Trim everything but the newest event; a subscriber at 1 gets the
	// current state instead of a silent gap.
	f.clock.Advance(48 * time.Hour)
	eng := engine.New(engine.Config{Store: f.eng.Store(), Bus: f.bus, Now: f.clock.Now, EventKeep: 1})
	if err := eng.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	evs, truncated, err = eng.Replay(ctx, doc, 1, 100)
	if err != nil || !truncated || len(evs) != 1 || evs[0].ID != 5 || string(evs[0].Data) != `{"i":4}` {
		t.Fatalf("Replay after trim = %+v, truncated %v, %v", evs, truncated, err)
	}
}

func TestConcurrentWritesGetConsecutiveEventIDs(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	doc, _ := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{})
	const writers, each = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				_, err := f.eng.UpdateObject(ctx, sys, f.svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	evs, err := f.eng.Events(ctx, f.svc.SID, doc.SID, 0, 1000)
	if err != nil || len(evs) != writers*each {
		t.Fatalf("log has %d events (%v), want %d", len(evs), err, writers*each)
	}
	for i, e := range evs {
		if e.ID != int64(i+1) {
			t.Fatalf("event %d has id %d", i, e.ID)
		}
	}
	got, _ := f.eng.Object(ctx, sys, f.svc, chorus.KindDocument, doc.SID)
	if got.LastEventID != writers*each || got.Revision != writers*each {
		t.Errorf("document LastEventID %d revision %d, want %d", got.LastEventID, got.Revision, writers*each)
	}
}

func TestPermissionsCRUD(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	l, _ := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindList, engine.CreateObject{})
	for _, id := range []string{"carol", "alice", "bob"} {
		if _, err := f.eng.SetPermission(ctx, f.svc, chorus.KindList, l.SID, chorus.Permission{Identity: id, Read: true}); err != nil {
			t.Fatal(err)
		}
	}
	p1, err := f.eng.Permissions(ctx, f.svc, chorus.KindList, l.SID, engine.PageRequest{PageSize: 2})
	if err != nil || len(p1.Items) != 2 || p1.Items[0].Identity != "alice" || p1.NextToken == "" {
		t.Fatalf("page 1 = %+v, %v", p1, err)
	}
	p2, err := f.eng.Permissions(ctx, f.svc, chorus.KindList, l.SID, engine.PageRequest{PageSize: 2, Token: p1.NextToken})
	if err != nil || len(p2.Items) != 1 || p2.Items[0].Identity != "carol" || p2.NextToken != "" {
		t.Fatalf("page 2 = %+v, %v", p2, err)
	}
	if err := f.eng.DeletePermission(ctx, f.svc, chorus.KindList, l.SID, "bob"); err != nil {
		t.Fatal(err)
	}
	_, err = f.eng.Permission(ctx, f.svc, chorus.KindList, l.SID, "bob")
	wantCode(t, err, 54354)
	_, err = f.eng.SetPermission(ctx, f.svc, chorus.KindList, l.SID, chorus.Permission{Identity: strings.Repeat("i", 257)})
	wantCode(t, err, 54351)
}

// pageResult is one page of a collection as the ids of its items.
type pageResult struct {
	ids        []string
	next, prev string
}

func resultOf[T any](p engine.Page[T], err error, id func(T) string) (pageResult, error) {
	r := pageResult{next: p.NextToken, prev: p.PrevToken}
	for _, x := range p.Items {
		r.ids = append(r.ids, id(x))
	}
	return r, err
}

// walkBothWays pages forward over a collection whose items are want, then
// back from the last page over PrevToken, checking that every page going
// back is the page seen going forward and that its NextToken leads to the
// page after it again.
func walkBothWays(t *testing.T, want []string, size int, read func(token string) (pageResult, error)) {
	t.Helper()
	var pages []pageResult
	var all []string
	for tok := ""; ; {
		if len(pages) > len(want) {
			t.Fatalf("no last page after %d pages", len(pages))
		}
		r, err := read(tok)
		if err != nil {
			t.Fatalf("page %d: %v", len(pages), err)
		}
		if len(r.ids) > size || (r.next != "" && len(r.ids) != size) {
			t.Errorf("page %d = %v with next %v, want %d items", len(pages), r.ids, r.next != "", size)
		}
		if (r.prev != "") != (len(pages) > 0) {
			t.Errorf("page %d PrevToken = %q, want one only after the first page", len(pages), r.prev)
		}
		pages = append(pages, r)
		all = append(all, r.ids...)
		if r.next == "" {
			break
		}
		tok = r.next
	}
	if fmt.Sprint(all) != fmt.Sprint(want) {
		t.Fatalf("forward = %v, want %v", all, want)
	}
	if n := (len(want) + size - 1) / size; len(pages) != n {
		t.Errorf("forward pages = %d, want %d", len(pages), n)
	}
	tok := pages[len(pages)-1].prev
	for k := len(pages) - 2; k >= 0; k-- {
		r, err := read(tok)
		if err != nil {
			t.Fatalf("previous page %d: %v", k, err)
		}
		if fmt.Sprint(r.ids) != fmt.Sprint(pages[k].ids) {
			t.Errorf("previous page %d = %v, want %v", k, r.ids, pages[k].ids)
		}
		if (r.prev != "") != (k > 0) {
			t.Errorf("previous page %d PrevToken = %q, want one only when k > 0", k, r.prev)
		}
		if r.next == "" {
			t.Errorf("previous page %d has no NextToken", k)
			continue
		}
		n, err := read(r.next)
		if err != nil || fmt.Sprint(n.ids) != fmt.Sprint(pages[k+1].ids) || n.prev == "" {
			t.Errorf("next of previous page %d = %v (prev %q), %v; want %v with a PrevToken", k, n.ids, n.prev, err, pages[k+1].ids)
		}
		tok = r.prev
	}
}

// rawToken builds a page token the way clients of older servers got them.
func rawToken(json string) string {
	return "PT" + base64.RawURLEncoding.EncodeToString([]byte(json))
}

func TestPagingBackward(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	sid := func(s *chorus.Service) string { return s.SID }
	objSID := func(o *chorus.Object) string { return o.SID }
	identity := func(p *chorus.Permission) string { return p.Identity }

	services := []*chorus.Service{f.svc}
	for range 6 {
		f.clock.Advance(time.Second)
		s, err := f.eng.CreateService(ctx, f.creds.AccountSID, engine.ServiceParams{})
		if err != nil {
			t.Fatal(err)
		}
		services = append(services, s)
	}
	var docs []string
	for i := range 7 {
		f.clock.Advance(time.Second)
		d, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{UniqueName: fmt.Sprint("d", i)})
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, d.SID)
	}
	list, _ := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindList, engine.CreateObject{})
	for _, id := range []string{"zed", "érin", "alice", "Bob", "carol", "dave", "frank"} {
		if _, err := f.eng.SetPermission(ctx, f.svc, chorus.KindList, list.SID, chorus.Permission{Identity: id, Read: true}); err != nil {
			t.Fatal(err)
		}
	}
	identities := []string{"Bob", "alice", "carol", "dave", "frank", "zed", "érin"} // byte order

	var svcSIDs []string
	for _, s := range services {
		svcSIDs = append(svcSIDs, s.SID)
	}
	collections := []struct {
		name string
		want []string
		read func(p engine.PageRequest) (pageResult, error)
	}{
		{"services", svcSIDs, func(p engine.PageRequest) (pageResult, error) {
			pg, err := f.eng.Services(ctx, f.creds.AccountSID, p)
			return resultOf(pg, err, sid)
		}},
		{"documents", docs, func(p engine.PageRequest) (pageResult, error) {
			pg, err := f.eng.Objects(ctx, sys, f.svc, chorus.KindDocument, p)
			return resultOf(pg, err, objSID)
		}},
		{"permissions", identities, func(p engine.PageRequest) (pageResult, error) {
			pg, err := f.eng.Permissions(ctx, f.svc, chorus.KindList, list.SID, p)
			return resultOf(pg, err, identity)
		}},
	}
	for _, c := range collections {
		for _, size := range []int{1, 2, 3, 7, 50} {
			t.Run(fmt.Sprintf("%s/size=%d", c.name, size), func(t *testing.T) {
				walkBothWays(t, c.want, size, func(tok string) (pageResult, error) {
					return c.read(engine.PageRequest{PageSize: size, Token: tok})
				})
			})
		}
	}

	// Tokens without the backward flag, as older servers issued them,
	// still page forward.
	old := []struct {
		name  string
		read  func(p engine.PageRequest) (pageResult, error)
		token string
		want  []string
	}{
		{"services", collections[0].read, rawToken(fmt.Sprintf(`{"t":%d,"s":%q}`, services[1].DateCreated.UnixNano(), services[1].SID)), svcSIDs[2:4]},
		{"permissions", collections[2].read, rawToken(`{"i":"alice"}`), identities[2:4]},
	}
	for _, tt := range old {
		r, err := tt.read(engine.PageRequest{PageSize: 2, Token: tt.token})
		if err != nil || fmt.Sprint(r.ids) != fmt.Sprint(tt.want) || r.prev == "" {
			t.Errorf("%s(old token) = %v (prev %q), %v; want %v with a PrevToken", tt.name, r.ids, r.prev, err, tt.want)
		}
	}

	for _, tok := range []string{rawToken(`{"t":5,"b":true}`), rawToken(`{"t":5}`), rawToken(`{"s":""}`), "PT!!"} {
		_, err := f.eng.Services(ctx, f.creds.AccountSID, engine.PageRequest{Token: tok})
		wantCode(t, err, 54453)
		_, err = f.eng.Objects(ctx, sys, f.svc, chorus.KindDocument, engine.PageRequest{Token: tok})
		wantCode(t, err, 54453)
	}
}

// TestPagingBackwardAfterDelete: a page that went empty because its objects
// were deleted leads back to the last page.
func TestPagingBackwardAfterDelete(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	var docs []string
	for range 7 {
		f.clock.Advance(time.Second)
		d, _ := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{})
		docs = append(docs, d.SID)
	}
	read := func(tok string) (pageResult, error) {
		pg, err := f.eng.Objects(ctx, sys, f.svc, chorus.KindDocument, engine.PageRequest{PageSize: 2, Token: tok})
		return resultOf(pg, err, func(o *chorus.Object) string { return o.SID })
	}
	p1, _ := read("")
	p2, _ := read(p1.next)
	for _, sid := range docs[2:6] {
		if _, err := f.eng.DeleteObject(ctx, sys, f.svc, chorus.KindDocument, sid); err != nil {
			t.Fatal(err)
		}
	}
	// p2 (docs 2, 3) is gone: its NextToken still leads to doc 6.
	p3, err := read(p2.next)
	if err != nil || fmt.Sprint(p3.ids) != fmt.Sprint(docs[6:]) || p3.next != "" {
		t.Fatalf("page 3 = %+v, %v; want %v and no NextToken", p3, err, docs[6:])
	}
	back, err := read(p3.prev)
	if err != nil || fmt.Sprint(back.ids) != fmt.Sprint(docs[:2]) || back.prev != "" || back.next == "" {
		t.Errorf("previous of page 3 = %+v, %v; want %v, a NextToken and no PrevToken", back, err, docs[:2])
	}
	if _, err := f.eng.DeleteObject(ctx, sys, f.svc, chorus.KindDocument, docs[6]); err != nil {
		t.Fatal(err)
	}
	empty, err := read(p2.next)
	if err != nil || len(empty.ids) != 0 || empty.next != "" || empty.prev == "" {
		t.Fatalf("emptied page = %+v, %v; want no items and a PrevToken", empty, err)
	}
	back, err = read(empty.prev)
	if err != nil || fmt.Sprint(back.ids) != fmt.Sprint(docs[:2]) || back.prev != "" || back.next != "" {
		t.Errorf("previous of the emptied page = %+v, %v; want %v and no tokens", back, err, docs[:2])
	}
}

// TestPagingACL: with ACLs on, pages hold only readable objects and are
// full but for the last, in both directions.
func TestPagingACL(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	svc, err := f.eng.UpdateService(ctx, f.creds.AccountSID, f.svc.SID, engine.ServiceParams{ACLEnabled: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	var visible []string
	for i := range 12 {
		f.clock.Advance(time.Second)
		d, _ := f.eng.CreateObject(ctx, sys, svc, chorus.KindDocument, engine.CreateObject{})
		switch i % 4 {
		case 0, 3:
			visible = append(visible, d.SID)
			_, err = f.eng.SetPermission(ctx, svc, chorus.KindDocument, d.SID, chorus.Permission{Identity: "alice", Read: true})
		case 1:
			_, err = f.eng.SetPermission(ctx, svc, chorus.KindDocument, d.SID, chorus.Permission{Identity: "alice", Write: true})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	alice := engine.Actor{Identity: "alice"}
	for _, size := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("size=%d", size), func(t *testing.T) {
			walkBothWays(t, visible, size, func(tok string) (pageResult, error) {
				pg, err := f.eng.Objects(ctx, alice, svc, chorus.KindDocument, engine.PageRequest{PageSize: size, Token: tok})
				return resultOf(pg, err, func(o *chorus.Object) string { return o.SID })
			})
		})
	}
}

// TestCreationOrder: objects created one after another within a
// millisecond (here: on a stopped clock) get increasing creation times and
// list in creation order, not in the order of their random SIDs; a flood
// of creations runs at most 50 ms ahead of the clock.
func TestCreationOrder(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.clock.Advance(time.Second) // past the fixture's service, which took a creation time too
	var made []string
	for i := range 60 {
		o, err := f.eng.CreateObject(ctx, engine.SystemActor(), f.svc, chorus.KindDocument, engine.CreateObject{UniqueName: fmt.Sprintf("d%02d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if lead := o.DateCreated.Sub(f.clock.Now()); lead < 0 || lead > 50*time.Millisecond || !o.DateUpdated.Equal(o.DateCreated) {
			t.Fatalf("object %d: created %v (clock %v), updated %v", i, o.DateCreated, f.clock.Now(), o.DateUpdated)
		}
		made = append(made, o.SID)
	}
	pg, err := f.eng.Objects(ctx, engine.SystemActor(), f.svc, chorus.KindDocument, engine.PageRequest{PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, o := range pg.Items {
		listed = append(listed, o.SID)
	}
	// The first 50 (from the clock's millisecond to 49 ahead) are in
	// creation order; the rest share the 50th millisecond ahead, in SID
	// order.
	if len(listed) != 60 || !slices.Equal(listed[:50], made[:50]) {
		t.Errorf("listed %d objects; want the first 50 in creation order:\n%v\n%v", len(listed), listed, made)
	}
	f.clock.Advance(time.Second) // the clock moves on: creation times follow it again
	o, err := f.eng.CreateObject(ctx, engine.SystemActor(), f.svc, chorus.KindDocument, engine.CreateObject{})
	if err != nil || !o.DateCreated.Equal(f.clock.Now()) {
		t.Errorf("after the clock moved: created %v, clock %v (%v)", o.DateCreated, f.clock.Now(), err)
	}
}

// TestOperatorCredentialsAfterImport: an import brings accounts older than
// the operator's (their source's dates), with a standard key or none.
// Their owner is a tenant: the stored credentials stay the generated
// ones, every start and every read finds the same, nothing new is
// generated, and a later Bootstrap with other credentials names those.
func TestOperatorCredentialsAfterImport(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func() (*engine.Engine, *sqlite.Store) {
		st, err := sqlite.Open(ctx, filepath.Join(dir, "chorus.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return engine.New(engine.Config{Store: st, Bus: mem.New()}), st
	}
	// What an import wrote before the first start: two tenants' accounts,
	// years older, one with a standard key, one (imported with its auth
	// token) with none.
	eng, st := open()
	old := time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC)
	keyed, bare := chorus.NewSID("AC"), chorus.NewSID("AC")
	if err := st.Update(ctx, func(tx chorus.Tx) error {
		for _, a := range []string{bare, keyed} {
			if err := tx.PutAccount(ctx, &chorus.Account{SID: a, AuthToken: "tenant-token", DateCreated: old}); err != nil {
				return err
			}
		}
		return tx.PutAPIKey(ctx, &chorus.APIKey{SID: chorus.NewSID("SK"), AccountSID: keyed, Secret: "tenant-secret", DateCreated: old, DateUpdated: old})
	}); err != nil {
		t.Fatal(err)
	}
	first, created, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil || !created || first.AccountSID == keyed || first.AccountSID == bare {
		t.Fatalf("first start: %+v, created %v, %v; want new credentials", first, created, err)
	}
	for i := range 3 {
		eng, st = open()
		if got, err := eng.StoredCredentials(ctx); err != nil || got != first {
			t.Errorf("read %d: %+v, %v; want %+v", i, got, err, first)
		}
		if got, created, err := eng.Bootstrap(ctx, engine.Credentials{}); err != nil || created || got != first {
			t.Errorf("start %d: %+v, created %v, %v; want %+v and nothing generated", i, got, created, err, first)
		}
	}
	if n := accountCount(t, st); n != 3 {
		t.Errorf("%d accounts, want 3: the tenants' and the one generated", n)
	}
	// Credentials from the environment are the operator's from then on.
	env := engine.Credentials{AccountSID: chorus.NewSID("AC"), AuthToken: "tok", APIKeySID: chorus.NewSID("SK"), APISecret: "sec", ServiceSID: chorus.NewSID("IS")}
	if _, _, err := eng.Bootstrap(ctx, env); err != nil {
		t.Fatal(err)
	}
	if got, err := eng.StoredCredentials(ctx); err != nil || got != env {
		t.Errorf("after a start with TWILIO_*: %+v, %v; want %+v", got, err, env)
	}
}

// TestOperatorCredentialsGuessed: a store from before the operator's
// credentials were recorded has them guessed, never as an account without
// a main key, and the first start records the guess.
func TestOperatorCredentialsGuessed(t *testing.T) {
	ctx := context.Background()
	st := openSQLite(t)
	eng := engine.New(engine.Config{Store: st, Bus: mem.New()})
	tenant, operator := chorus.NewSID("AC"), chorus.NewSID("AC")
	opKey, svc := chorus.NewSID("SK"), chorus.NewSID("IS")
	t0 := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := st.Update(ctx, func(tx chorus.Tx) error {
		if err := tx.PutAccount(ctx, &chorus.Account{SID: tenant, AuthToken: "t1", DateCreated: t0}); err != nil {
			return err
		}
		if err := tx.PutAPIKey(ctx, &chorus.APIKey{SID: chorus.NewSID("SK"), AccountSID: tenant, Secret: "s1", DateCreated: t0, DateUpdated: t0}); err != nil {
			return err
		}
		t1 := t0.Add(time.Hour)
		if err := tx.PutAccount(ctx, &chorus.Account{SID: operator, AuthToken: "t2", DateCreated: t1}); err != nil {
			return err
		}
		if err := tx.PutAPIKey(ctx, &chorus.APIKey{SID: opKey, AccountSID: operator, Secret: "s2", Main: true, DateCreated: t1, DateUpdated: t1}); err != nil {
			return err
		}
		return tx.PutService(ctx, &chorus.Service{SID: svc, AccountSID: operator, FriendlyName: "Default Service", DateCreated: t1, DateUpdated: t1})
	}); err != nil {
		t.Fatal(err)
	}
	want := engine.Credentials{AccountSID: operator, AuthToken: "t2", APIKeySID: opKey, APISecret: "s2", ServiceSID: svc}
	if got, err := eng.StoredCredentials(ctx); err != nil || got != want {
		t.Fatalf("guessed: %+v, %v; want %+v", got, err, want)
	}
	if got, created, err := eng.Bootstrap(ctx, engine.Credentials{}); err != nil || created || got != want {
		t.Fatalf("start: %+v, created %v, %v; want %+v", got, created, err, want)
	}
	if err := st.View(ctx, func(tx chorus.ReadTx) error {
		op, err := tx.OperatorCredentials(ctx)
		if err == nil && (op.AccountSID != operator || op.APIKeySID != opKey || op.ServiceSID != svc) {
			t.Errorf("recorded %+v, want the guess", op)
		}
		return err
	}); err != nil {
		t.Errorf("the start recorded nothing: %v", err)
	}
}

// TestOperatorKeyRevoked: the operator revokes the key a start generated
// (after a leak). The next start gives the same account a new main key:
// same account, same service, the data with them, never a second
// operator account. Until then StoredCredentials says the key is gone.
func TestOperatorKeyRevoked(t *testing.T) {
	ctx := context.Background()
	st := openSQLite(t)
	eng := engine.New(engine.Config{Store: st, Bus: mem.New()})
	first, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	standard := &chorus.APIKey{SID: chorus.NewSID("SK"), AccountSID: first.AccountSID, Secret: "backend", DateCreated: time.Now(), DateUpdated: time.Now()}
	if err := st.Update(ctx, func(tx chorus.Tx) error {
		if err := tx.PutAPIKey(ctx, standard); err != nil {
			return err
		}
		return tx.DeleteAPIKey(ctx, first.APIKeySID)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.StoredCredentials(ctx); !errors.Is(err, chorus.ErrNotFound) {
		t.Errorf("StoredCredentials with the key revoked = %v, want not found", err)
	}
	again, created, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil || !created {
		t.Fatalf("start after the revocation: %v, created %v", err, created)
	}
	if again.AccountSID != first.AccountSID || again.AuthToken != first.AuthToken || again.ServiceSID != first.ServiceSID {
		t.Errorf("start after the revocation: %+v; want the account %s and service %s kept", again, first.AccountSID, first.ServiceSID)
	}
	if again.APIKeySID == first.APIKeySID || again.APIKeySID == standard.SID {
		t.Errorf("key %s after the revocation; want a new main key", again.APIKeySID)
	}
	if acct, err := eng.Authenticate(ctx, again.APIKeySID, again.APISecret); err != nil || acct != first.AccountSID {
		t.Errorf("the new key authenticates as %q, %v", acct, err)
	}
	if got, created, err := eng.Bootstrap(ctx, engine.Credentials{}); err != nil || created || got != again {
		t.Errorf("next start: %+v, created %v, %v; want %+v", got, created, err, again)
	}
	if n := accountCount(t, st); n != 1 {
		t.Errorf("%d accounts, want the operator's alone", n)
	}
}

// accountCount is the number of accounts in st, revoked ones included.
func accountCount(t *testing.T, st chorus.Store) int {
	t.Helper()
	var n int
	if err := st.View(context.Background(), func(tx chorus.ReadTx) error {
		all, err := tx.Accounts(context.Background())
		n = len(all)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}
