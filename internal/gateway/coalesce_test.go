package gateway

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

// coalesceEnv is a pool-mode gateway holding writes for interval, whose
// writer pool counts as behind as soon as a session waits for it when
// alwaysBehind is set (coalesce.go), with one subscriber to a document.
type coalesceEnv struct {
	*env
	sid   string
	start int64 // the document's last event id before the test's events
	sub   *tclient
	next  int64 // events published so far
}

func newCoalesceEnv(t *testing.T, interval time.Duration, alwaysBehind bool) *coalesceEnv {
	e := newEnv(t, withConfig(func(c *Config) { c.WriterPool, c.CoalesceInterval = true, interval }))
	if alwaysBehind {
		e.gw.writers.lag = 0 // before any session exists
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

// TestCoalesceHoldsEventsWhileBehind: while the pool is behind, events that
// follow a session's last write within the interval wait for the interval
// and then arrive together, in order, in one notification.
func TestCoalesceHoldsEventsWhileBehind(t *testing.T) {
	const interval = 400 * time.Millisecond
	ce := newCoalesceEnv(t, interval, true)

	ce.publish(1)
	ce.receive(t, 1, 1, 5*time.Second) // nothing written before: not held
	sent := time.Now()
	ce.publish(4)
	seqs := ce.receive(t, 2, 4, 5*time.Second)
	if waited := time.Since(sent); waited < interval/2 {
		t.Fatalf("events 2-5 arrived %v after they were published, want them held about %v", waited, interval)
	}
	for _, s := range seqs[1:] {
		if s != seqs[0] {
			t.Fatalf("events 2-5 came in frames %v, want one merged notification", seqs)
		}
	}
	if st := ce.gw.Stats(); st.Coalesced == 0 || st.Merged != 3 {
		t.Fatalf("stats %+v: want Coalesced > 0 and Merged 3", st)
	}
}

// TestCoalesceNotWhenKeepingUp: a pool that writes a burst within
// coalesceLag is not behind, so nothing is held, however short the time
// since the session's last write.
func TestCoalesceNotWhenKeepingUp(t *testing.T) {
	ce := newCoalesceEnv(t, 30*time.Second, false)
	for i := int64(0); i < 5; i++ {
		ce.publish(1)
		ce.receive(t, i+1, 1, 5*time.Second) // held, it would take 30 s
	}
	if st := ce.gw.Stats(); st.Coalesced != 0 {
		t.Fatalf("Coalesced = %d, want 0", st.Coalesced)
	}
}

// TestCoalesceReplyEndsHold: a reply does not wait for a hold; it goes out
// at once, after the held events (the order of frames never changes).
func TestCoalesceReplyEndsHold(t *testing.T) {
	ce := newCoalesceEnv(t, 30*time.Second, true)
	ce.publish(1)
	ce.receive(t, 1, 1, 5*time.Second)
	ce.publish(2)
	waitFor(t, func() bool { return ce.gw.Stats().Coalesced > 0 })

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
	ce.publish(1)
	ce.receive(t, 1, 1, 5*time.Second)
	ce.publish(1)
	waitFor(t, func() bool { return ce.gw.Stats().Coalesced > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ce.sub.ws.Ping(ctx); err != nil {
		t.Fatalf("ping while events were held: %v", err)
	}
	ce.receive(t, 2, 1, time.Second)
}

// TestCoalesceEndEndsHold: a session that ends while events are held is
// torn down at once, not when its hold would have run out.
func TestCoalesceEndEndsHold(t *testing.T) {
	ce := newCoalesceEnv(t, 30*time.Second, true)
	ce.publish(1)
	ce.receive(t, 1, 1, 5*time.Second)
	ce.publish(3)
	waitFor(t, func() bool { return ce.gw.Stats().Coalesced > 0 })
	ce.sub.ws.CloseNow()
	waitFor(t, func() bool { return ce.gw.Stats().Subscriptions == 0 })
}

// TestCoalesceFullNotificationNotHeld: a session with a whole merged
// notification's worth of events queued is written at once, hold or not,
// so holds never bring it nearer its queue's limits.
func TestCoalesceFullNotificationNotHeld(t *testing.T) {
	ce := newCoalesceEnv(t, 30*time.Second, true)
	ce.publish(1)
	ce.receive(t, 1, 1, 5*time.Second)
	ce.publish(mergeMaxEvents - 1)
	waitFor(t, func() bool { return ce.gw.Stats().Coalesced > 0 })
	ce.publish(1)
	seqs := ce.receive(t, 2, mergeMaxEvents, 10*time.Second) // held, they would take 30 s
	if seqs[0] != seqs[len(seqs)-1] {
		t.Fatalf("the %d events came in frames %d to %d, want one merged notification", mergeMaxEvents, seqs[0], seqs[len(seqs)-1])
	}
}
