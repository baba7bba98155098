package webhook_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// One endpoint_connected when an identity's first endpoint connects, one
// endpoint_disconnected after its last left and the debouncing window
// passed; a reconnection within the window sends neither.
func TestReachabilityWithDebouncing(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, webhook.Config{Poll: 100 * time.Millisecond})
	rc := newReceiver(t, e.creds.AuthToken, nil)
	hook, on, window := rc.URL(), true, 1000
	svc, err := e.eng.UpdateService(ctx, e.creds.AccountSID, e.creds.ServiceSID, engine.ServiceParams{
		WebhookURL: &hook, ReachabilityWebhooksEnabled: &on, ReachabilityDebouncingEnabled: &on, ReachabilityDebouncingWindow: &window,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := func(s string) {
		t.Helper()
		h := rc.next(t, 5*time.Second)
		if got := h.form.Get("EventType") + " " + h.form.Get("Identity") + " " + h.form.Get("EndpointId"); got != s {
			t.Fatalf("webhook %q, want %q", got, s)
		}
	}
	e.d.Connected(svc, "alice", "ep1")
	want("endpoint_connected alice ep1")
	e.d.Connected(svc, "alice", "ep2") // online already
	e.d.Disconnected(svc, "alice", "ep1")
	rc.none(t, 300*time.Millisecond)
	e.d.Disconnected(svc, "alice", "ep2") // the last one: debounced
	rc.none(t, 500*time.Millisecond)
	e.d.Connected(svc, "alice", "ep3") // within the window: cancels it
	rc.none(t, 1200*time.Millisecond)
	start := time.Now()
	e.d.Disconnected(svc, "alice", "ep3")
	want("endpoint_disconnected alice ep3")
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("endpoint_disconnected after %v, before the 1s debouncing window", took)
	}
	// Without debouncing, at once.
	off := false
	if _, err := e.eng.UpdateService(ctx, e.creds.AccountSID, svc.SID, engine.ServiceParams{ReachabilityDebouncingEnabled: &off}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // cached settings
	svc.ReachabilityDebouncingEnabled = false
	e.d.Connected(svc, "bob", "b1")
	want("endpoint_connected bob b1")
	e.d.Disconnected(svc, "bob", "b1")
	want("endpoint_disconnected bob b1")
}

// A node that the cluster presumed dead (it could not heartbeat in time)
// records its endpoints again once it heartbeats: its identities come
// back online.
func TestPresumedDeadNodeRecovers(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, webhook.Config{Poll: 100 * time.Millisecond, Heartbeat: 100 * time.Millisecond})
	rc := newReceiver(t, e.creds.AuthToken, nil)
	hook, on := rc.URL(), true
	svc, err := e.eng.UpdateService(ctx, e.creds.AccountSID, e.creds.ServiceSID, engine.ServiceParams{WebhookURL: &hook, ReachabilityWebhooksEnabled: &on})
	if err != nil {
		t.Fatal(err)
	}
	want := func(s string) {
		t.Helper()
		h := rc.next(t, 15*time.Second)
		if got := h.form.Get("EventType") + " " + h.form.Get("Identity"); got != s {
			t.Fatalf("webhook %q, want %q", got, s)
		}
	}
	e.d.Connected(svc, "alice", "ep1")
	want("endpoint_connected alice")
	// Another node presumes every node silent since a second from now dead.
	if err := e.st.Update(ctx, func(tx chorus.Tx) error {
		_, _, err := tx.NodeHeartbeat(ctx, "other", time.Now().UTC(), time.Now().UTC().Add(time.Second))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// This node heartbeats every 100 ms and records its endpoints again;
	// the leader announces the drop on its own 100 ms poll. Whichever runs
	// first decides: either alice is announced gone and back (a pair), or
	// she is back before the drop was announced (nothing at all). Never
	// one without the other.
	select {
	case h := <-rc.hits:
		if got := h.form.Get("EventType") + " " + h.form.Get("Identity"); got != "endpoint_disconnected alice" {
			t.Fatalf("webhook %q after the presumed death, want endpoint_disconnected alice", got)
		}
		want("endpoint_connected alice")
	case <-time.After(10 * time.Second):
		t.Log("this node recorded its endpoints again before the drop was announced")
	}
	// Either way alice is online again: her last endpoint leaving is news.
	e.d.Disconnected(svc, "alice", "ep1")
	want("endpoint_disconnected alice")
}

// outageStore fails every write while fail is set: a PostgreSQL failover.
type outageStore struct {
	chorus.Store
	fail *atomic.Bool
}

func (s outageStore) Update(ctx context.Context, fn func(chorus.Tx) error) error {
	if s.fail.Load() {
		return errors.New("store unavailable (failover)")
	}
	return s.Store.Update(ctx, fn)
}

// A presence change made while the store is down for longer than a few
// seconds is recorded once it is back: the disconnection is sent, and the
// identity is not left online.
func TestPresenceSurvivesStoreOutage(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	fail := &atomic.Bool{}
	e := newEnvOn(t, webhook.Config{Poll: 100 * time.Millisecond}, outageStore{st, fail})
	rc := newReceiver(t, e.creds.AuthToken, nil)
	on, hook := true, rc.URL()
	svc, err := e.eng.CreateService(ctx, e.creds.AccountSID, engine.ServiceParams{WebhookURL: &hook, ReachabilityWebhooksEnabled: &on})
	if err != nil {
		t.Fatal(err)
	}
	next := func(within time.Duration) string {
		select {
		case h := <-rc.hits:
			return h.form.Get("EventType")
		case <-time.After(within):
			return ""
		}
	}
	e.d.Connected(svc, "alice", "ep1")
	if got := next(5 * time.Second); got != "endpoint_connected" {
		t.Fatalf("first webhook %q, want endpoint_connected", got)
	}
	waitFor(t, 5*time.Second, "the delivered webhook deleted", func() bool { return e.pending(t) == 0 })
	fail.Store(true)
	e.d.Disconnected(svc, "alice", "ep1")
	time.Sleep(4 * time.Second) // longer than the retries used to last
	fail.Store(false)
	if got := next(10 * time.Second); got != "endpoint_disconnected" {
		t.Errorf("after a 4 s store outage: webhook %q, want endpoint_disconnected", got)
	}
}

// An endpoint recorded before the node's first heartbeat, and dropped by a
// leader that presumed the node dead, is recorded again at that first
// heartbeat: recording an endpoint records the node, so the store not
// knowing the node means it was dropped. Only later beats counted, and
// TestPresumedDeadNodeRecovers saw alice announced gone and never back
// when its first beat came after the drop (a busy machine).
func TestFirstHeartbeatAfterADropRecordsAgain(t *testing.T) {
	ctx := context.Background()
	e, start := newStoppedEnv(t, webhook.Config{Poll: 50 * time.Millisecond, Heartbeat: 50 * time.Millisecond})
	rc := newReceiver(t, e.creds.AuthToken, nil)
	hook, on := rc.URL(), true
	svc, err := e.eng.UpdateService(ctx, e.creds.AccountSID, e.creds.ServiceSID, engine.ServiceParams{WebhookURL: &hook, ReachabilityWebhooksEnabled: &on})
	if err != nil {
		t.Fatal(err)
	}
	e.d.Connected(svc, "alice", "ep1")
	if err := e.d.FlushPresence(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Update(ctx, func(tx chorus.Tx) error {
		_, _, err := tx.NodeHeartbeat(ctx, "other", time.Now().UTC(), time.Now().UTC().Add(time.Second))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	start() // the first heartbeat comes now, after the drop
	var last string
	for quiet := time.After(3 * time.Second); ; {
		select {
		case h := <-rc.hits:
			last = h.form.Get("EventType") + " " + h.form.Get("Identity")
			quiet = time.After(3 * time.Second)
			continue
		case <-quiet:
		}
		break
	}
	if last != "endpoint_connected alice" {
		t.Errorf("last reachability webhook %q, want endpoint_connected alice (she is connected)", last)
	}
}

// A connection tracked but not yet recorded when the node's first
// heartbeat finds the store without the node is not a sign of a drop:
// recording it again counted its session twice, and the identity never
// went offline (TestReachabilityWithDebouncing failed so 1 run in 12).
func TestFirstHeartbeatBeforeAConnectionIsRecorded(t *testing.T) {
	ctx := context.Background()
	e, _ := newStoppedEnv(t, webhook.Config{Poll: 50 * time.Millisecond, Heartbeat: time.Hour})
	on, hook := true, "https://example.com/hook" // never sent: the dispatcher is not started
	svc, err := e.eng.UpdateService(ctx, e.creds.AccountSID, e.creds.ServiceSID, engine.ServiceParams{WebhookURL: &hook, ReachabilityWebhooksEnabled: &on})
	if err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	restore := webhook.SetBeforePresenceRecord(func() {
		once.Do(func() {
			close(held)
			<-release
		})
	})
	defer restore()
	e.d.Connected(svc, "alice", "ep1")
	<-held // alice's connection is tracked, not recorded
	if err := e.d.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := e.d.FlushPresence(ctx); err != nil {
		t.Fatal(err)
	}
	e.d.Disconnected(svc, "alice", "ep1")
	if err := e.d.FlushPresence(ctx); err != nil {
		t.Fatal(err)
	}
	var offline []*chorus.OfflineIdentity
	if err := e.st.View(ctx, func(tx chorus.ReadTx) (err error) {
		offline, err = tx.OfflineIdentities(ctx, time.Now().Add(time.Hour), 10)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(offline) != 1 || offline[0].Identity != "alice" {
		t.Errorf("offline identities after alice's only session ended = %v, want alice", offline)
	}
}
