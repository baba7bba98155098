package webhook_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// nudgePair is two nodes on one store: a leader and a follower whose
// engine (eng) the tests write with, polling the outbox once a minute.
// The follower's nudges reach the leader's Nudged directly, where a
// cluster has its bus, and are recorded in nudged.
type nudgePair struct {
	leader, follower *webhook.Dispatcher
	eng              *engine.Engine
	st               chorus.Store
	svc              *chorus.Service
	rc               *receiver
	nudged           chan []string
}

func newNudgePair(t *testing.T) *nudgePair {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	p := &nudgePair{st: st, nudged: make(chan []string, 1000)}
	base := webhook.Config{Store: st, Poll: time.Minute, Policy: webhook.Policy{AllowPrivate: true}}
	lead := base
	lead.Node, lead.Leader = "leader", func(context.Context) bool { return true }
	p.leader = webhook.New(lead)
	follow := base
	follow.Node, follow.Leader = "follower", func(context.Context) bool { return false }
	follow.Nudge = func(services []string) {
		p.nudged <- services
		p.leader.Nudged(services)
	}
	p.follower = webhook.New(follow)
	// The follower's engine: its changes are observed by the follower only.
	p.eng = engine.New(engine.Config{Store: st, Bus: mem.New(), Observe: p.follower.Observe, Outbox: p.follower, CheckWebhookURL: base.Policy.CheckURL})
	creds, _, err := p.eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	p.rc = newReceiver(t, creds.AuthToken, nil)
	on := true
	hook := p.rc.URL()
	if p.svc, err = p.eng.CreateService(ctx, creds.AccountSID, engine.ServiceParams{WebhookURL: &hook, WebhooksFromRestEnabled: &on}); err != nil {
		t.Fatal(err)
	}
	return p
}

// run starts both dispatchers until the test ends.
func (p *nudgePair) run(t *testing.T) {
	runDispatcher(t, p.leader)
	runDispatcher(t, p.follower)
}

// write creates a document with the follower's engine and waits for its
// webhook, then for the leader's lane to end (the outbox empty, and a
// moment for its last read): a write before that would be found by that
// read, nudged or not.
func (p *nudgePair) write(t *testing.T, what string) {
	t.Helper()
	doc, err := p.eng.CreateObject(context.Background(), engine.SystemActor(), p.svc, chorus.KindDocument, engine.CreateObject{})
	if err != nil {
		t.Fatal(err)
	}
	if h := p.rc.next(t, 10*time.Second); h.form.Get("DocumentSid") != doc.SID {
		t.Fatalf("%s: webhook for %s, want %s", what, h.form.Get("DocumentSid"), doc.SID)
	}
	e := &env{st: p.st}
	waitFor(t, 10*time.Second, "the outbox empty", func() bool { return e.pending(t) == 0 })
	time.Sleep(300 * time.Millisecond)
}

// TestNudgedLeaderSendsAtOnce: two nodes on one store, one leading. A
// change committed on the other goes out at once: that node nudges the
// leader, which reads the service's outbox then rather than at its next
// poll, a minute away here (a second by default). The first nudge is
// about a service the leader has never looked up (it sweeps the backlog),
// the next ones about one it knows (it kicks the service's lane).
func TestNudgedLeaderSendsAtOnce(t *testing.T) {
	p := newNudgePair(t)
	p.run(t)
	time.Sleep(300 * time.Millisecond) // the leader's first round is over: the next poll is a minute away
	for i := range 3 {
		p.write(t, fmt.Sprintf("write %d", i))
	}
	var got []string
	for len(p.nudged) > 0 {
		got = append(got, <-p.nudged...)
	}
	if len(got) == 0 || slices.ContainsFunc(got, func(s string) bool { return s != p.svc.SID }) {
		t.Errorf("the follower nudged about %q, want %s only", got, p.svc.SID)
	}
}

// TestNudgeFloodIsCheap: nudges naming services the leader does not know
// (made up, by anyone who may publish on NATS when the cluster has no
// secret) start no lane each: they ask for one sweep of the backlog at
// most every 250 ms. A reviewer's 400 nudges of 256 made-up SIDs each took
// a leader to 564 MB and 13,841 goroutines. A real service's nudge still
// gets its webhook out.
func TestNudgeFloodIsCheap(t *testing.T) {
	p := newNudgePair(t)
	p.run(t)
	time.Sleep(300 * time.Millisecond)
	before := runtime.NumGoroutine()
	for range 40 {
		var fake []string
		for range 256 {
			fake = append(fake, chorus.NewSID("IS"))
		}
		p.leader.Nudged(fake)
	}
	if n := runtime.NumGoroutine() - before; n > 100 {
		t.Errorf("%d more goroutines after nudges about 10,240 made-up services, want next to none", n)
	}
	// A nudge about a real service the leader does not know, within 250
	// ms of the sweep another unknown one asked for, gets its own sweep
	// once they have passed: it is not left to the poll, a minute away.
	time.Sleep(300 * time.Millisecond)
	p.leader.Nudged([]string{chorus.NewSID("IS")}) // a sweep now
	p.write(t, "a real service's write right after a sweep")
}
