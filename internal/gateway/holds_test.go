// Regression tests from a review of the subscription holds (access.go,
// servicegen.go): each failed before its fix.

package gateway

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
)

// holdStore: Permission reads fail while failPerm; Events reads signal and
// sleep while slowEvents > 0.
type holdStore struct {
	chorus.Store
	x *holdCtl
}
type holdCtl struct {
	failPerm   atomic.Bool
	slowEvents atomic.Int64
	slowObject atomic.Int64
	started    chan struct{}
}
type holdTx struct {
	chorus.ReadTx
	x *holdCtl
}

func (s holdStore) View(ctx context.Context, fn func(chorus.ReadTx) error) error {
	return s.Store.View(ctx, func(tx chorus.ReadTx) error { return fn(holdTx{tx, s.x}) })
}
func (t holdTx) Permission(ctx context.Context, o, id string) (*chorus.Permission, error) {
	if t.x.failPerm.Load() {
		return nil, chorus.Errorf(chorus.ErrUnavailable, "test: store away")
	}
	return t.ReadTx.Permission(ctx, o, id)
}
func (t holdTx) Object(ctx context.Context, k chorus.Kind, svc, sid string) (*chorus.Object, error) {
	if d := t.x.slowObject.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	return t.ReadTx.Object(ctx, k, svc, sid)
}
func (t holdTx) Events(ctx context.Context, sid string, after int64, limit int) ([]*chorus.Event, error) {
	if d := t.x.slowEvents.Load(); d > 0 {
		select {
		case t.x.started <- struct{}{}:
		default:
		}
		time.Sleep(time.Duration(d))
	}
	return t.ReadTx.Events(ctx, sid, after, limit)
}

func withHoldStore(x *holdCtl) envOption {
	return func(e *env, c *Config) {
		c.Engine = engine.New(engine.Config{Store: holdStore{e.st, x}, Bus: e.bus})
		c.ResyncRetry = 100 * time.Millisecond
	}
}

func newCtl() *holdCtl { return &holdCtl{started: make(chan struct{}, 1)} }

func (e *env) writeID(sid string, n int) int64 {
	e.t.Helper()
	o, err := e.eng.UpdateObject(context.Background(), engine.SystemActor(), e.service(), chorus.KindDocument, sid,
		engine.UpdateObject{Data: json.RawMessage(`{"n":` + string(rune('0'+n)) + `}`)})
	if err != nil {
		e.t.Fatal(err)
	}
	return o.LastEventID
}

// A store error in releaseServiceHolds's re-check must not leave the
// subscription held for good (nothing would read the service again): it
// is retried, and the held event arrives once the store answers.
func TestServiceHoldRetriedAfterStoreError(t *testing.T) {
	x := newCtl()
	e := newEnv(t, withHoldStore(x))
	e.gw.controlDelay.Store(int64(300 * time.Millisecond))
	ctx := context.Background()
	doc := e.aclDoc(true)
	e.grant(doc.SID, "alice", true)
	alice := e.session("alice")
	alice.establish(1, docSub(doc.SID, nil))
	name := "renamed"
	if _, err := e.eng.UpdateService(ctx, e.creds.AccountSID, e.svc.SID, engine.ServiceParams{FriendlyName: &name}); err != nil {
		t.Fatal(err)
	}
	id := e.writeID(doc.SID, 1) // held: the session's service is stale
	x.failPerm.Store(true)
	time.Sleep(700 * time.Millisecond) // the pass runs; its re-check fails
	x.failPerm.Store(false)
	wantStatus(t, "read", alice.do("GET", "/v3/Documents/"+doc.SID, nil, nil), 200, 0)
	e.writeID(doc.SID, 2)
	n := alice.nextOf("document_updated", 5*time.Second)
	if n.id() != id {
		t.Fatalf("got %d want %d", n.id(), id)
	}
}

// An object removed while its subscription is held for a permission
// re-check: the subscriber (who keeps read access) must hear of it.
func TestRemovalReachesHeldSubscription(t *testing.T) {
	x := newCtl()
	e := newEnv(t, withHoldStore(x))
	ctx := context.Background()
	doc := e.aclDoc(true)
	e.grant(doc.SID, "alice", true)
	e.grant(doc.SID, "bob", true)
	alice, bob := e.session("alice"), e.session("bob")
	alice.establish(1, docSub(doc.SID, nil))
	bob.establish(1, docSub(doc.SID, nil))
	e.holdAlice(x, doc.SID)
	e.writeID(doc.SID, 1)
	if _, err := e.eng.DeleteObject(ctx, engine.SystemActor(), e.service(), chorus.KindDocument, doc.SID); err != nil {
		t.Fatal(err)
	}
	bob.nextOf("document_removed", 5*time.Second)
	x.failPerm.Store(false)
	alice.nextOf("document_removed", 5*time.Second)
}

// A re-establish of a held subscription while its release reads the log:
// the held events are sent once (by the re-establish's replay), in order.
func TestReestablishDuringRelease(t *testing.T) {
	x := newCtl()
	e := newEnv(t, withHoldStore(x))
	doc := e.aclDoc(true)
	e.grant(doc.SID, "alice", true)
	alice := e.session("alice")
	alice.establish(1, docSub(doc.SID, doc.LastEventID))
	e.holdAlice(x, doc.SID)
	id1 := e.writeID(doc.SID, 1)
	id2 := e.writeID(doc.SID, 2)
	x.slowEvents.Store(int64(400 * time.Millisecond))
	x.failPerm.Store(false)
	<-x.started // release is reading the log
	r := alice.subscribe("establish", 2, docSub(doc.SID, doc.LastEventID))
	wantStatus(t, "re-establish", r, 200, 0)
	time.Sleep(time.Second)
	x.slowEvents.Store(0)
	seen := map[int64]int{}
	deadline := time.After(3 * time.Second)
	for {
		select {
		case n := <-alice.notes:
			t.Logf("note %s %s id %d corr %s", n.MessageType, n.EventType, n.id(), n.Correlation)
			if n.EventType == "document_updated" {
				seen[n.id()]++
			}
			continue
		case <-deadline:
		}
		break
	}
	if seen[id1] != 1 || seen[id2] != 1 {
		t.Fatalf("event %d seen %d times, event %d seen %d times; want once each", id1, seen[id1], id2, seen[id2])
	}
}

// delayedBus publishes in order, late: a remote node whose events this
// node hears after a lag.
type delayedBus struct {
	chorus.Bus
	ch chan []*chorus.Event
}

func newDelayedBus(b chorus.Bus, d time.Duration) *delayedBus {
	db := &delayedBus{Bus: b, ch: make(chan []*chorus.Event, 100)}
	go func() {
		for evs := range db.ch {
			time.Sleep(d)
			b.Publish(context.Background(), evs...)
		}
	}()
	return db
}
func (b *delayedBus) Publish(ctx context.Context, events ...*chorus.Event) error {
	b.ch <- events
	return nil
}

// release must not read the log past the topic's position: an event
// committed after a permission withdrawal that this node has not heard of
// yet would reach the subscriber it denies.
func TestReleaseStopsAtTopicPosition(t *testing.T) {
	x := newCtl()
	e := newEnv(t, withHoldStore(x))
	ctx := context.Background()
	doc := e.aclDoc(true)
	e.grant(doc.SID, "alice", true)
	alice := e.session("alice")
	alice.establish(1, docSub(doc.SID, doc.LastEventID))
	e.holdAlice(x, doc.SID)
	e.writeID(doc.SID, 1)
	remote := engine.New(engine.Config{Store: e.st, Bus: newDelayedBus(e.bus, 500*time.Millisecond)})
	x.slowEvents.Store(int64(300 * time.Millisecond))
	x.failPerm.Store(false)
	<-x.started
	x.slowEvents.Store(0)
	svc := e.service()
	if err := remote.DeletePermission(ctx, svc, chorus.KindDocument, doc.SID, "alice"); err != nil {
		t.Fatal(err)
	}
	o, err := remote.UpdateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(`{"secret":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	for {
		n := alice.next(10 * time.Second)
		if n.EventType == "subscription_failed" {
			return
		}
		if n.id() == o.LastEventID {
			t.Fatalf("event %d, written after alice's permission was deleted, reached her", o.LastEventID)
		}
	}
}

// release must not send what it read if ACLs were turned on while it
// read: the service's re-check decides.
func TestReleaseAfterACLOn(t *testing.T) {
	x := newCtl()
	e := newEnv(t, withHoldStore(x))
	e.gw.controlDelay.Store(int64(time.Second))
	ctx := context.Background()
	doc := e.aclDoc(false)
	alice := e.session("alice")
	alice.establish(1, docSub(doc.SID, doc.LastEventID))
	x.failPerm.Store(true) // not read with ACLs off
	// A permission change (alice gets none) holds her; ACLs are off so the
	// re-check passes.
	x.slowEvents.Store(int64(300 * time.Millisecond))
	x.slowObject.Store(int64(200 * time.Millisecond))
	if _, err := e.eng.SetPermission(ctx, e.service(), chorus.KindDocument, doc.SID, chorus.Permission{Identity: "alice", Read: false}); err != nil {
		t.Fatal(err)
	}
	e.writeID(doc.SID, 1)
	x.slowObject.Store(0)
	<-x.started // release reads the log
	x.slowEvents.Store(0)
	on := true
	if _, err := e.eng.UpdateService(ctx, e.creds.AccountSID, e.svc.SID, engine.ServiceParams{ACLEnabled: &on}); err != nil {
		t.Fatal(err)
	}
	id := e.writeID(doc.SID, 2) // after ACLs were turned on
	x.failPerm.Store(false)
	for {
		n := alice.next(10 * time.Second)
		if n.EventType == "subscription_failed" {
			return
		}
		if n.id() == id {
			t.Fatalf("event %d, written after ACLs were turned on, reached alice", id)
		}
	}
}

// holdAlice changes alice's permission on sid (she keeps read) while the
// store fails permission reads: her subscription stays held until
// x.failPerm is cleared.
func (e *env) holdAlice(x *holdCtl, sid string) {
	e.t.Helper()
	x.failPerm.Store(true)
	if _, err := e.eng.SetPermission(context.Background(), e.service(), chorus.KindDocument, sid, chorus.Permission{Identity: "alice", Read: true, Write: true}); err != nil {
		e.t.Fatal(err)
	}
}

// A live query whose access re-check the store fails is re-checked again:
// withdrawn access ends it once the store answers, not at the next change
// (before, the failure was logged and the query went on for good).
func TestLiveQueryRecheckRetriedAfterStoreError(t *testing.T) {
	x := newCtl()
	e := newEnv(t, withHoldStore(x))
	m := e.aclMap(true, "alice")
	e.putMapItem(m.SID, "t1", "open")
	alice := e.session("alice")
	id := openQuery(t, alice)
	alice.establishQuery(1, lqSub(id, "tasks", openExpr))
	e.putMapItem(m.SID, "t2", "open")
	wantQueryItem(t, alice, "t2")

	x.failPerm.Store(true)
	if err := e.eng.DeletePermission(context.Background(), e.service(), chorus.KindMap, m.SID, "alice"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the re-check runs and fails
	x.failPerm.Store(false)
	wantDenied(t, alice, id)
	waitFor(t, func() bool { return e.gw.hub.liveQueries() == 0 })
}

// awayStore fails every transaction with ErrUnavailable while away.
type awayStore struct {
	chorus.Store
	away *atomic.Bool
}

func (s awayStore) View(ctx context.Context, fn func(chorus.ReadTx) error) error {
	if s.away.Load() {
		return chorus.Errorf(chorus.ErrUnavailable, "test: the store is away")
	}
	return s.Store.View(ctx, fn)
}

func (s awayStore) Update(ctx context.Context, fn func(chorus.Tx) error) error {
	if s.away.Load() {
		return chorus.Errorf(chorus.ErrUnavailable, "test: the store is away")
	}
	return s.Store.Update(ctx, fn)
}

// A request tunnelled over the websocket that finds the store away gets
// 503 20503, as over REST, not 500 20500: the client may retry.
func TestCDSStoreAwayIs503(t *testing.T) {
	var away atomic.Bool
	e := newEnv(t, func(e *env, c *Config) {
		c.Engine = engine.New(engine.Config{Store: awayStore{e.st, &away}, Bus: e.bus})
	})
	c := e.session("alice")
	o := wantStatus(t, "create", c.do("POST", "/v3/Documents", nil, map[string]any{"unique_name": "away", "data": map[string]any{}}), 201, 0)
	doc := "/v3/Documents/" + o["sid"].(string)
	away.Store(true)
	wantStatus(t, "write with the store away", c.do("POST", doc, nil, map[string]any{"data": map[string]any{"n": 1}}), 503, 20503)
	wantStatus(t, "create with the store away", c.do("POST", "/v3/Lists", nil, map[string]any{"unique_name": "l"}), 503, 20503)
	away.Store(false)
	wantStatus(t, "write with the store back", c.do("POST", doc, nil, map[string]any{"data": map[string]any{"n": 2}}), 200, 0)
}

// slowStore holds every Update for delay while slow is set, after
// signaling entered.
type slowStore struct {
	chorus.Store
	slow    *atomic.Bool
	entered chan struct{}
	delay   time.Duration
}

func (s slowStore) Update(ctx context.Context, fn func(chorus.Tx) error) error {
	if s.slow.Load() {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		time.Sleep(s.delay)
	}
	return s.Store.Update(ctx, fn)
}

// A shutdown lets a request in flight end and its reply go out before the
// session closes. A write that committed was cut off from its answer, so
// its client was told it failed and retried it (a duplicate list item in
// a tester's rolling restart).
func TestCloseDrainsRequestsInFlight(t *testing.T) {
	var slow atomic.Bool
	entered := make(chan struct{}, 1)
	e := newEnv(t, func(e *env, c *Config) {
		c.Engine = engine.New(engine.Config{Store: slowStore{e.st, &slow, entered, 500 * time.Millisecond}, Bus: e.bus})
	})
	c := e.session("alice")
	slow.Store(true)
	closed := make(chan error, 1)
	go func() {
		<-entered
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- e.gw.Close(ctx)
	}()
	wantStatus(t, "a write in flight at shutdown", c.do("POST", "/v3/Documents", nil, map[string]any{"unique_name": "drained", "data": map[string]any{}}), 201, 0)
	if err := <-closed; err != nil {
		t.Fatalf("Close = %v", err)
	}
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the session did not close after the drain")
	}
}
