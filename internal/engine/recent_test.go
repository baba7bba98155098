package engine_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
)

// writtenDoc creates a document (named name, unless "") with a TTL and
// updates it: the store's memory holds it, as it does a document in use.
func writtenDoc(t *testing.T, f *fixture, name string) *chorus.Object {
	t.Helper()
	ctx := context.Background()
	doc, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{UniqueName: name, TTL: ptr(10)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.UpdateObject(ctx, sys, f.svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(`{"n":1}`)}); err != nil {
		t.Fatal(err)
	}
	return doc
}

// SubscribableRecent answers from the store's memory of recent writes but
// applies every check Subscribable does.
func TestSubscribableRecent(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	alice := engine.Actor{Identity: "alice"}
	doc := writtenDoc(t, f, "")
	got, err := f.eng.SubscribableRecent(ctx, alice, f.svc, chorus.KindDocument, doc.SID)
	if err != nil {
		t.Fatalf("SubscribableRecent: %v", err)
	}
	want, err := f.eng.Subscribable(ctx, alice, f.svc, chorus.KindDocument, doc.SID)
	if err != nil {
		t.Fatal(err)
	}
	if got.LastEventID != want.LastEventID || got.Revision != want.Revision || got.SID != doc.SID || got.Kind != chorus.KindDocument {
		t.Errorf("SubscribableRecent = event %d rev %d %s %s, Subscribable = event %d rev %d",
			got.LastEventID, got.Revision, got.SID, got.Kind, want.LastEventID, want.Revision)
	}

	// Wrong kind, another service's view and an unknown SID: not found.
	_, err = f.eng.SubscribableRecent(ctx, alice, f.svc, chorus.KindMap, doc.SID)
	wantCode(t, err, 54200)
	other := *f.svc
	other.SID = chorus.NewSID(chorus.PrefixService)
	_, err = f.eng.SubscribableRecent(ctx, alice, &other, chorus.KindDocument, doc.SID)
	wantCode(t, err, 54100)

	// With ACLs on, an identity without a permission is refused although
	// the object is in memory.
	acl, err := f.eng.UpdateService(ctx, f.creds.AccountSID, f.svc.SID, engine.ServiceParams{ACLEnabled: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.eng.SubscribableRecent(ctx, alice, acl, chorus.KindDocument, doc.SID)
	wantCode(t, err, 54007)
	if _, err := f.eng.SubscribableRecent(ctx, sys, acl, chorus.KindDocument, doc.SID); err != nil {
		t.Errorf("system actor with ACLs on: %v", err)
	}

	// Expired: hidden at once, as Subscribable does.
	f.clock.Advance(11 * time.Second)
	_, err = f.eng.SubscribableRecent(ctx, alice, f.svc, chorus.KindDocument, doc.SID)
	wantCode(t, err, 54100)

	// Deleted: not found.
	doc2, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.DeleteObject(ctx, sys, f.svc, chorus.KindDocument, doc2.SID); err != nil {
		t.Fatal(err)
	}
	_, err = f.eng.SubscribableRecent(ctx, alice, f.svc, chorus.KindDocument, doc2.SID)
	wantCode(t, err, 54100)
}

// viewCounter counts the store's read transactions.
type viewCounter struct {
	*sqlite.Store
	views atomic.Int64
}

func (v *viewCounter) View(ctx context.Context, fn func(chorus.ReadTx) error) error {
	v.views.Add(1)
	return v.Store.View(ctx, fn)
}

// FetchObject answers a fetch of a recently written object, by SID or
// unique name, from the store's memory, without a read transaction, with
// the object Object returns and every check Object makes.
func TestFetchObject(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "chorus.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	vc := &viewCounter{Store: st}
	f := &fixture{bus: mem.New(), clock: newClock()}
	f.eng = engine.New(engine.Config{Store: vc, Bus: f.bus, Now: f.clock.Now})
	if f.creds, _, err = f.eng.Bootstrap(ctx, engine.Credentials{}); err != nil {
		t.Fatal(err)
	}
	if f.svc, err = f.eng.Service(ctx, f.creds.AccountSID, f.creds.ServiceSID); err != nil {
		t.Fatal(err)
	}
	alice := engine.Actor{Identity: "alice"}
	doc := writtenDoc(t, f, "report")
	want, err := f.eng.Object(ctx, alice, f.svc, chorus.KindDocument, doc.SID)
	if err != nil {
		t.Fatal(err)
	}
	views := vc.views.Load()
	for _, id := range []string{doc.SID, "report"} {
		got, err := f.eng.FetchObject(ctx, alice, f.svc, chorus.KindDocument, id)
		if err != nil {
			t.Fatalf("FetchObject(%s): %v", id, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("FetchObject(%s) = %+v\nObject         = %+v", id, got, want)
		}
	}
	if n := vc.views.Load() - views; n != 0 {
		t.Errorf("FetchObject of a recent object opened %d read transactions, want 0", n)
	}

	// The answers Object gives: wrong kind, another service, a SID-like
	// name, an unknown name.
	_, err = f.eng.FetchObject(ctx, alice, f.svc, chorus.KindMap, doc.SID)
	wantCode(t, err, 54200)
	_, err = f.eng.FetchObject(ctx, alice, f.svc, chorus.KindMap, "report")
	wantCode(t, err, 54200)
	other := *f.svc
	other.SID = chorus.NewSID(chorus.PrefixService)
	_, err = f.eng.FetchObject(ctx, alice, &other, chorus.KindDocument, "report")
	wantCode(t, err, 54100)
	_, err = f.eng.FetchObject(ctx, alice, f.svc, chorus.KindDocument, "ET00000000000000000000000000000000")
	wantCode(t, err, 54100)
	_, err = f.eng.FetchObject(ctx, alice, f.svc, chorus.KindDocument, "nothing")
	wantCode(t, err, 54100)

	// With ACLs on, an identity without a permission is refused although
	// the object is in memory.
	acl, err := f.eng.UpdateService(ctx, f.creds.AccountSID, f.svc.SID, engine.ServiceParams{ACLEnabled: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.eng.FetchObject(ctx, alice, acl, chorus.KindDocument, "report")
	wantCode(t, err, 54007)

	// Expired: hidden at once.
	f.clock.Advance(11 * time.Second)
	_, err = f.eng.FetchObject(ctx, alice, f.svc, chorus.KindDocument, "report")
	wantCode(t, err, 54100)

	// Deleted, and the name taken by another document: that one.
	doc2, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{UniqueName: "draft"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.DeleteObject(ctx, sys, f.svc, chorus.KindDocument, doc2.SID); err != nil {
		t.Fatal(err)
	}
	_, err = f.eng.FetchObject(ctx, alice, f.svc, chorus.KindDocument, doc2.SID)
	wantCode(t, err, 54100)
	_, err = f.eng.FetchObject(ctx, alice, f.svc, chorus.KindDocument, "draft")
	wantCode(t, err, 54100)
	doc3, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{UniqueName: "draft", Data: json.RawMessage(`{"v":3}`)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.eng.FetchObject(ctx, alice, f.svc, chorus.KindDocument, "draft")
	if err != nil || got.SID != doc3.SID || string(got.Data) != `{"v":3}` {
		t.Fatalf("FetchObject(draft) = %+v, %v; want %s with {\"v\":3}", got, err, doc3.SID)
	}
}
