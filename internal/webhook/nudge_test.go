package webhook_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// TestNudgedLeaderSendsAtOnce: two nodes on one store, one leading. A
// change committed on the other goes out at once: that node nudges the
// leader (Config.Nudge, here a direct call of Nudged where a cluster has
// its bus), which reads the service's outbox then rather than at its next
// poll, a minute away here (a second by default).
func TestNudgedLeaderSendsAtOnce(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	base := webhook.Config{Store: st, Poll: time.Minute, Policy: webhook.Policy{AllowPrivate: true}}
	lead := base
	lead.Node, lead.Leader = "leader", func(context.Context) bool { return true }
	leader := webhook.New(lead)
	nudged := make(chan []string, 100)
	follow := base
	follow.Node, follow.Leader = "follower", func(context.Context) bool { return false }
	follow.Nudge = func(services []string) {
		nudged <- services
		leader.Nudged(services)
	}
	follower := webhook.New(follow)
	// The follower's engine: its changes are observed by the follower only.
	eng := engine.New(engine.Config{Store: st, Bus: mem.New(), Observe: follower.Observe, Outbox: follower, CheckWebhookURL: base.Policy.CheckURL})
	creds, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	rc := newReceiver(t, creds.AuthToken, nil)
	on := true
	hook := rc.URL()
	svc, err := eng.CreateService(ctx, creds.AccountSID, engine.ServiceParams{WebhookURL: &hook, WebhooksFromRestEnabled: &on})
	if err != nil {
		t.Fatal(err)
	}
	first, err := eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, engine.CreateObject{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []*webhook.Dispatcher{leader, follower} {
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = d.Run(runCtx) }()
		t.Cleanup(func() {
			cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
			defer ccancel()
			_ = d.Close(cctx)
			cancel()
			<-done
		})
	}
	// The leader's first round finds the first document's webhook: from
	// then on it leads, and polls again only a minute later. Once the
	// outbox is empty, its lane reads it once more and ends: a write
	// before that would be found by that read, nudged or not.
	if h := rc.next(t, 10*time.Second); h.form.Get("DocumentSid") != first.SID {
		t.Fatalf("first webhook for %s, want %s", h.form.Get("DocumentSid"), first.SID)
	}
	e := &env{st: st}
	waitFor(t, 10*time.Second, "the outbox empty", func() bool { return e.pending(t) == 0 })
	time.Sleep(300 * time.Millisecond)
	for i := range 3 {
		doc, err := eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, engine.CreateObject{})
		if err != nil {
			t.Fatal(err)
		}
		if h := rc.next(t, 10*time.Second); h.form.Get("DocumentSid") != doc.SID {
			t.Fatalf("webhook %d for %s, want %s", i, h.form.Get("DocumentSid"), doc.SID)
		}
		waitFor(t, 10*time.Second, "the outbox empty", func() bool { return e.pending(t) == 0 })
		time.Sleep(300 * time.Millisecond) // the lane ends
	}
	var got []string
	for len(nudged) > 0 {
		got = append(got, <-nudged...)
	}
	if len(got) == 0 || slices.ContainsFunc(got, func(s string) bool { return s != svc.SID }) {
		t.Errorf("the follower nudged about %q, want %s only", got, svc.SID)
	}
}
