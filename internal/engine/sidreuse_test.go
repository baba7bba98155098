package engine_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
)

// TestReusedSIDReplaysNoForeignEvents: a document of one service is
// updated and deleted, its events stay in the log; an import then writes
// an object with the same SID into another service (an import keeps its
// source's SIDs, and a source may name any SID). A subscriber of the new
// object resuming from 0 must get none of the old object's events: they
// belong to another service, possibly another account.
func TestReusedSIDReplaysNoForeignEvents(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	sys := engine.SystemActor()
	old, err := f.eng.CreateObject(ctx, sys, f.svc, chorus.KindDocument, engine.CreateObject{UniqueName: "secret", Data: json.RawMessage(`{"pw":"one"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.UpdateObject(ctx, sys, f.svc, chorus.KindDocument, old.SID, engine.UpdateObject{Data: json.RawMessage(`{"pw":"two"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.DeleteObject(ctx, sys, f.svc, chorus.KindDocument, old.SID); err != nil {
		t.Fatal(err)
	}
	name := "other"
	other, err := f.eng.CreateService(ctx, f.svc.AccountSID, engine.ServiceParams{FriendlyName: &name})
	if err != nil {
		t.Fatal(err)
	}
	reused := &chorus.Object{SID: old.SID, AccountSID: other.AccountSID, ServiceSID: other.SID, Kind: chorus.KindDocument,
		Data: json.RawMessage(`{}`), Revision: 1, LastEventID: 5, CreatedBy: "system", DateCreated: old.DateCreated, DateUpdated: old.DateUpdated}
	if err := f.eng.Store().Update(ctx, func(tx chorus.Tx) error { return tx.InsertObject(ctx, reused) }); err != nil {
		t.Fatal(err)
	}

	events, _, err := f.eng.Replay(ctx, reused, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if e.ServiceSID != other.SID || string(e.Data) == `{"pw":"one"}` || string(e.Data) == `{"pw":"two"}` {
			t.Errorf("replay of the reused SID gave the deleted object's event %d %s %s (service %s)", e.ID, e.Type, e.Data, e.ServiceSID)
		}
	}
	logged, err := f.eng.Events(ctx, other.SID, old.SID, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(logged) != 0 {
		t.Errorf("Events of the reused SID in its new service = %d events, want none of the old service's", len(logged))
	}
	mine, err := f.eng.Events(ctx, f.svc.SID, old.SID, 0, 100)
	if err != nil || len(mine) < 2 {
		t.Errorf("Events of the old service = %d (%v), want its update and removal", len(mine), err)
	}
}
