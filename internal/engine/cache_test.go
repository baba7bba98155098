package engine_test

import (
	"context"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
)

// peer is a second engine ("node") over the fixture's store; on the
// fixture's bus when shared, else on a bus of its own that hears nothing
// of the fixture's changes.
func (f *fixture) peer(t *testing.T, shared bool) *engine.Engine {
	t.Helper()
	bus := f.bus
	if !shared {
		bus = mem.New()
		t.Cleanup(func() { bus.Close() })
	}
	return engine.New(engine.Config{Store: f.eng.Store(), Bus: bus, Now: f.clock.Now})
}

// TestCachesFollowChangesOnEveryNode checks that what one node changes
// (keys, auth tokens, a service) takes effect on another node's cached
// credentials and services as soon as the change returned.
func TestCachesFollowChangesOnEveryNode(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other := f.peer(t, true)
	acct := engine.Credential{AccountSID: f.creds.AccountSID, SID: f.creds.AccountSID, Main: true}

	k, err := f.eng.CreateAPIKey(ctx, acct, "k")
	if err != nil {
		t.Fatal(err)
	}
	sec, err := f.eng.CreateSecondaryAuthToken(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*engine.Engine{f.eng, other} { // fill both caches
		for _, c := range [][2]string{{k.SID, k.Secret}, {f.creds.AccountSID, f.creds.AuthToken}, {f.creds.AccountSID, sec.SecondaryAuthToken}} {
			if _, err := e.AuthenticateCredential(ctx, c[0], c[1]); err != nil {
				t.Fatalf("AuthenticateCredential(%s) = %v", c[0], err)
			}
		}
		if _, err := e.AuthenticateCredential(ctx, k.SID, k.Secret+"x"); err != chorus.ErrAuthenticate {
			t.Fatalf("a wrong secret = %v, want ErrAuthenticate", err)
		}
	}
	if err := other.DeleteAPIKey(ctx, acct, k.SID); err != nil {
		t.Fatal(err)
	}
	if _, err := other.PromoteSecondaryAuthToken(ctx, acct); err != nil {
		t.Fatal(err)
	}
	for i, e := range []*engine.Engine{f.eng, other} {
		if _, err := e.AuthenticateCredential(ctx, k.SID, k.Secret); err != chorus.ErrAuthenticate {
			t.Errorf("node %d: the deleted key authenticates: %v", i, err)
		}
		if _, err := e.AuthenticateCredential(ctx, f.creds.AccountSID, f.creds.AuthToken); err != chorus.ErrAuthenticate {
			t.Errorf("node %d: the replaced auth token authenticates: %v", i, err)
		}
		if _, err := e.AuthenticateCredential(ctx, f.creds.AccountSID, sec.SecondaryAuthToken); err != nil {
			t.Errorf("node %d: the promoted auth token: %v", i, err)
		}
	}

	// A service: its ACL switch, then its deletion.
	svc, err := f.eng.CreateService(ctx, f.creds.AccountSID, engine.ServiceParams{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*engine.Engine{f.eng, other} {
		if s, err := e.Service(ctx, f.creds.AccountSID, svc.SID); err != nil || s.ACLEnabled {
			t.Fatalf("Service = %+v, %v", s, err)
		}
	}
	if _, err := other.UpdateService(ctx, f.creds.AccountSID, svc.SID, engine.ServiceParams{ACLEnabled: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	for i, e := range []*engine.Engine{f.eng, other} {
		s, err := e.Service(ctx, f.creds.AccountSID, svc.SID)
		if err != nil || !s.ACLEnabled {
			t.Errorf("node %d: Service after the ACL switch = %+v, %v", i, s, err)
		}
		s.ACLEnabled = false // a caller's copy: the cache must not see it
	}
	if s, _ := f.eng.Service(ctx, f.creds.AccountSID, svc.SID); !s.ACLEnabled {
		t.Error("a caller's change of its copy reached the cache")
	}
	if _, err := f.eng.Service(ctx, chorus.NewSID(chorus.PrefixAccount), svc.SID); chorus.ErrorCode(err) != chorus.ErrServiceAccount.Code {
		t.Errorf("another account's cached service = %v, want 54056", err)
	}
	if err := other.DeleteService(ctx, f.creds.AccountSID, svc.SID); err != nil {
		t.Fatal(err)
	}
	for i, e := range []*engine.Engine{f.eng, other} {
		if _, err := e.Service(ctx, f.creds.AccountSID, svc.SID); chorus.ErrorCode(err) != chorus.ErrServiceNotFound.Code {
			t.Errorf("node %d: the deleted service = %v, want 54050", i, err)
		}
	}
}

// TestResyncDropsCaches checks that a node that may have missed control
// events (Resync) reads credentials and services again.
func TestResyncDropsCaches(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	deaf := f.peer(t, false)
	acct := engine.Credential{AccountSID: f.creds.AccountSID, SID: f.creds.AccountSID, Main: true}
	k, err := f.eng.CreateAPIKey(ctx, acct, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deaf.AuthenticateCredential(ctx, k.SID, k.Secret); err != nil {
		t.Fatal(err)
	}
	if _, err := deaf.Service(ctx, f.creds.AccountSID, f.svc.SID); err != nil {
		t.Fatal(err)
	}
	if err := f.eng.DeleteAPIKey(ctx, acct, k.SID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.UpdateService(ctx, f.creds.AccountSID, f.svc.SID, engine.ServiceParams{ACLEnabled: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	deaf.Resync()
	if _, err := deaf.AuthenticateCredential(ctx, k.SID, k.Secret); err != chorus.ErrAuthenticate {
		t.Errorf("after Resync the deleted key authenticates: %v", err)
	}
	if s, err := deaf.Service(ctx, f.creds.AccountSID, f.svc.SID); err != nil || !s.ACLEnabled {
		t.Errorf("after Resync Service = %+v, %v", s, err)
	}
}
