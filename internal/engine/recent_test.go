package engine_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
)

// SubscribableRecent answers from the store's memory of recent writes but
// applies every check Subscribable does.
func TestSubscribableRecent(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	alice := engine.Actor{Identity: "alice"}
	doc, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{TTL: ptr(10)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.UpdateObject(ctx, sys, f.svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(`{"n":1}`)}); err != nil {
		t.Fatal(err)
	}
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
