package gateway

import (
	"context"
	"encoding/json"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/protocol"
)

// coalesceEnv is a pool-mode gateway holding writes for interval, whose
// writer pool counts as behind throughout when behind is set and never
// otherwise (coalesce.go), with one subscriber to a document.
type coalesceEnv struct {
	*env
	sid   string
	start int64 // the document's last event id before the test's events
	sub   *tclient
	next  int64 // events published so far
}

func newCoalesceEnv(t *testing.T, interval time.Duration, behind bool) *coalesceEnv {
	e := newEnv(t, withConfig(func(c *Config) { c.WriterPool, c.CoalesceInterval = true, interval }))
	if behind {
		e.gw.writers.behindUntil.Store(math.MaxInt64)
	} else {
		e.gw.writers.lag = time.Hour // before any session exists
	}
	a := e.session("alice")
	doc := wantStatus(t, "create", a.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	ce := &coalesceEnv{env: e, sid: doc["sid"].(string), start: num(doc["last_event_id"])}
	ce.sub = e.dial(context.Background())
	ce.sub.mustInit(e.token("reader", time.Hour))
	ce.sub.establish(1, docSub(ce.sid, ce.start)) // event protocol 4: merges
	return ce
}

// publish hands n document events to the bus, as the engine does after a
// commit.
func (ce *coalesceEnv) publish(n int) {
	for range n {
		ce.next++
		data, _ := json.Marshal(map[string]any{"i": ce.next})
		ce.bus.Publish(context.Background(), &chorus.Event{Type: chorus.EventDocumentUpdated, ID: ce.start + ce.next, ObjectSID: ce.sid,
			ServiceSID: ce.svc.SID, Kind: chorus.KindDocument, Revision: "1", Data: data, DateCreated: time.Now()})
	}
}

// session returns the subscriber's session on the server.
func (ce *coalesceEnv) session() *conn {
	ce.t.Helper()
	ce.gw.mu.Lock()
	defer ce.gw.mu.Unlock()
	for c := range ce.gw.conns {
		c.mu.Lock()
		_, ok := c.subs[ce.sid]
		c.mu.Unlock()
		if ok {
			return c
		}
	}
	ce.t.Fatal("no session subscribed to the document")
	return nil
}

// publishQueued publishes n events while the subscriber's session is
// taken off the pool (as if a pool writer had it), so that all n are
// queued when a pool writer next flushes it; then it hands the session
// back.
func (ce *coalesceEnv) publishQueued(n int) {
	ce.t.Helper()
	c := ce.session()
	waitFor(ce.t, func() bool { return c.sched.CompareAndSwap(false, true) })
	ce.publish(n)
	c.unsched()
}

// receive reads the next n events, checks that they are the next ids in
// order, and returns the frame (seq) each came in.
func (ce *coalesceEnv) receive(t *testing.T, first int64, n int, timeout time.Duration) []int64 {
	t.Helper()
	var seqs []int64
	deadline := time.Now().Add(timeout)
	for i := range int64(n) {
		nt := ce.sub.next(time.Until(deadline))
		if got, want := nt.id(), ce.start+first+i; got != want {
			t.Fatalf("event id %d, want %d", got, want)
		}
		seqs = append(seqs, nt.seq)
	}
	return seqs
}

// hold makes the subscriber's session hold events 2 and 3: event 1 is
// written, and the next two find it written just now.
func (ce *coalesceEnv) hold(t *testing.T) {
	t.Helper()
	ce.publish(1)
	ce.receive(t, 1, 1, 5*time.Second)
	ce.publishQueued(2)
	waitFor(t, func() bool { return ce.gw.Stats().HeldWrites > 0 })
}

// TestCoalesceHoldsEventsWhileBehind: while the pool is behind, events
// that a session fell behind on within the interval after its last write
// wait for the interval and then arrive together, in order, in one
// notification.
func TestCoalesceHoldsEventsWhileBehind(t *testing.T) {
	const interval = 3 * time.Second
	ce := newCoalesceEnv(t, interval, true)

	ce.publish(1)
	ce.receive(t, 1, 1, 5*time.Second) // nothing written before: not held
	sent := time.Now()
	ce.publishQueued(4)
	seqs := ce.receive(t, 2, 4, 5*time.Second)
	if waited := time.Since(sent); waited < 100*time.Millisecond {
		t.Fatalf("events 2-5 arrived %v after they were published, want them held up to %v", waited, interval)
	}
	for _, s := range seqs[1:] {
		if s != seqs[0] {
			t.Fatalf("events 2-5 came in frames %v, want one merged notification", seqs)
		}
	}
	if st := ce.gw.Stats(); st.HeldWrites != 1 || st.Merged != 3 {
		t.Fatalf("stats %+v: want HeldWrites 1 and Merged 3", st)
	}
}

// TestCoalesceNotWhenKeepingUp: a session that has not fallen behind its
// events (one queued when it is written) is never held, even while the
// pool is behind.
func TestCoalesceNotWhenKeepingUp(t *testing.T) {
	ce := newCoalesceEnv(t, 30*time.Second, true)
	for i := int64(0); i < 5; i++ {
		ce.publish(1)
		ce.receive(t, i+1, 1, 5*time.Second) // held, it would take 30 s
	}
	if st := ce.gw.Stats(); st.HeldWrites != 0 {
		t.Fatalf("HeldWrites = %d, want 0", st.HeldWrites)
	}
}

// TestCoalesceNotWhenPoolKeepsUp: while the pool is not behind, nothing
// is held, even a session that has fallen behind its events right after
// a write.
func TestCoalesceNotWhenPoolKeepsUp(t *testing.T) {
	ce := newCoalesceEnv(t, 30*time.Second, false)
	ce.publish(1)
	ce.receive(t, 1, 1, 5*time.Second)
	ce.publishQueued(3)
	ce.receive(t, 2, 3, 10*time.Second) // held, they would take 30 s
	if st := ce.gw.Stats(); st.HeldWrites != 0 {
		t.Fatalf("HeldWrites = %d, want 0", st.HeldWrites)
	}
}

// TestCoalesceBehind: the pool is behind once it has had sessions waiting
// for coalesceLag without a break, and stays so for coalesceHold after;
// a shorter burst never makes it so.
func TestCoalesceBehind(t *testing.T) {
	const ms = int64(time.Millisecond)
	w := &writers{lag: 50 * time.Millisecond, hold: 500 * time.Millisecond}
	if w.behind(1000 * ms) {
		t.Fatal("idle pool behind")
	}
	w.busySince.Store(1000 * ms) // a burst from t=1000 ms
	if w.behind(1049 * ms) {
		t.Fatal("behind after 49 ms busy")
	}
	w.busySince.Store(0) // written within 50 ms: not behind
	if w.behind(1060 * ms) {
		t.Fatal("behind after a 49 ms burst")
	}
	w.busySince.Store(2000 * ms)
	if !w.behind(2050 * ms) {
		t.Fatal("not behind after 50 ms busy")
	}
	w.busySince.Store(0) // idle again
	if !w.behind(2549 * ms) {
		t.Fatal("not behind 499 ms after it was")
	}
	if w.behind(2550 * ms) {
		t.Fatal("still behind 500 ms after it was")
	}
}

// TestCoalesceReplyEndsHold: a reply does not wait for a hold; it goes out
// at once, after the held events (the order of frames never changes).
func TestCoalesceReplyEndsHold(t *testing.T) {
	ce := newCoalesceEnv(t, 30*time.Second, true)
	ce.hold(t)

	done := make(chan httpResp, 1)
	go func() { done <- ce.sub.do("GET", "/v3/Documents/"+ce.sid, nil, nil) }()
	var r httpResp
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the reply waited for the hold")
	}
	wantStatus(t, "get", r, 200, 0)
	replySeq := ce.sub.lastReplySeq.Load()
	for _, s := range ce.receive(t, 2, 2, time.Second) {
		if s > replySeq {
			t.Fatalf("held event in frame %d, after the reply (frame %d)", s, replySeq)
		}
	}
}

// TestCoalescePingEndsHold: a websocket ping is answered at once, held
// events or not.
func TestCoalescePingEndsHold(t *testing.T) {
	ce := newCoalesceEnv(t, 30*time.Second, true)
	ce.hold(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ce.sub.ws.Ping(ctx); err != nil {
		t.Fatalf("ping while events were held: %v", err)
	}
	ce.receive(t, 2, 2, time.Second)
}

// TestCoalesceEndEndsHold: a session that ends while events are held is
// torn down at once, not when its hold would have run out.
func TestCoalesceEndEndsHold(t *testing.T) {
	ce := newCoalesceEnv(t, 30*time.Second, true)
	ce.hold(t)
	ce.sub.ws.CloseNow()
	waitFor(t, func() bool { return ce.gw.Stats().Subscriptions == 0 })
}

// TestCoalesceFrameDuringHoldCheck: a frame queued after the hold was
// decided but before it was set (a kick that then found nothing to take)
// is not left waiting for the hold.
func TestCoalesceFrameDuringHoldCheck(t *testing.T) {
	ce := newCoalesceEnv(t, 30*time.Second, true)
	var once sync.Once
	ce.gw.writers.holdGap = func(c *conn) {
		once.Do(func() { c.send(protocol.Encode(nil, protocol.NewPing(protocol.NewID()), nil)) })
	}
	ce.publish(1)
	ce.receive(t, 1, 1, 5*time.Second)
	ce.publishQueued(2)
	if f := ce.sub.nextControl(10 * time.Second); f.Header.Method != "ping" {
		t.Fatalf("control frame %q, want the ping", f.Header.Method)
	}
	ce.receive(t, 2, 2, time.Second)
}

// TestCoalesceFullNotificationNotHeld: a session with a whole merged
// notification's worth of events queued is written at once, hold or not,
// so holds never bring it nearer its queue's limits.
func TestCoalesceFullNotificationNotHeld(t *testing.T) {
	ce := newCoalesceEnv(t, 30*time.Second, true)
	ce.publish(1)
	ce.receive(t, 1, 1, 5*time.Second)
	ce.publishQueued(mergeMaxEvents - 1)
	waitFor(t, func() bool { return ce.gw.Stats().HeldWrites > 0 })
	ce.publish(1)
	seqs := ce.receive(t, 2, mergeMaxEvents, 10*time.Second) // held, they would take 30 s
	if seqs[0] != seqs[len(seqs)-1] {
		t.Fatalf("the %d events came in frames %d to %d, want one merged notification", mergeMaxEvents, seqs[0], seqs[len(seqs)-1])
	}
}

// TestCoalesceLiveQueryEndsHold: a live query's notification (not a
// fan-out event) does not wait for a hold either.
func TestCoalesceLiveQueryEndsHold(t *testing.T) {
	ce := newCoalesceEnv(t, 30*time.Second, true)
	ce.hold(t)
	ce.session().sendEvent(protocol.AppendNotification(nil, protocol.NewID(), protocol.MessageTypeSyncEvent,
		[]byte(`{"event_type":"live_query_test","event":{}}`)))
	ce.receive(t, 2, 2, 10*time.Second) // held, they would take 30 s
	if n := ce.sub.next(time.Second); n.EventType != "live_query_test" {
		t.Fatalf("next notification %q, want the live query's", n.EventType)
	}
}

// TestCoalesceFirstEventsNotHeld: a session never sent live events is not
// held on its first ones, however soon after the process started.
func TestCoalesceFirstEventsNotHeld(t *testing.T) {
	ce := newCoalesceEnv(t, time.Hour, true)
	ce.publishQueued(3)
	ce.receive(t, 1, 3, 10*time.Second) // held, they would take an hour
}
