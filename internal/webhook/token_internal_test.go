package webhook

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

// The idempotency token names the event, not the outbox row: a store the
// data was migrated or restored into numbers its outbox from 1 again, and
// receivers that deduplicate on the token would drop new events.
func TestIdempotencyTokenNamesTheEvent(t *testing.T) {
	at := time.Date(2026, 12, 5, 17, 0, 0, 123456789, time.UTC)
	entry := func(seq, id int64, when time.Time) *chorus.OutboxEntry {
		return &chorus.OutboxEntry{Seq: seq, ServiceSID: "IS1", OrderKey: "ET1",
			Event: &chorus.Event{Type: chorus.EventDocumentUpdated, ID: id, ObjectSID: "ET1", DateCreated: when}}
	}
	a := IdempotencyToken(entry(1, 7, at))
	if !strings.HasPrefix(a, "IS1-") || a != IdempotencyToken(entry(1, 7, at)) {
		t.Fatalf("token %q: want IS1-… and the same for every attempt", a)
	}
	if b := IdempotencyToken(entry(42, 7, at)); b != a {
		t.Errorf("the same event in another store's outbox row: %q, want %q", b, a)
	}
	for name, other := range map[string]*chorus.OutboxEntry{
		"the same outbox row, another event id":      entry(1, 8, at),
		"the same id after a restore, another event": entry(1, 7, at.Add(time.Millisecond)),
	} {
		if b := IdempotencyToken(other); b == a {
			t.Errorf("%s: token %q, want another", name, b)
		}
	}
}

// lastChance, for webhooks past MaxAge: a last attempt each while the
// receiver's latest attempt succeeded; otherwise one probe per pause, the
// others waiting for it, and given up on once it failed. A receiver not
// heard from (a restart, a new URL) is probed first: a dead one used to get
// a request per old webhook, since a failed last attempt (given up on) did
// not count as a failure either.
func TestLastChance(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 12, 6, 16, 0, 0, 0, time.UTC)
	e := &chorus.OutboxEntry{Event: &chorus.Event{Type: chorus.EventDocumentUpdated}}
	h := &health{}
	check := func(name string, wantLast, wantProbe, wantWait bool) {
		t.Helper()
		if last, probe, wait := h.lastChance(&mu); last != wantLast || probe != wantProbe || wait != wantWait {
			t.Errorf("%s: lastChance = %v, %v, %v; want %v, %v, %v", name, last, probe, wait, wantLast, wantProbe, wantWait)
		}
	}
	check("not heard from: probe", true, true, false)
	check("while the probe is out: wait", false, false, true)
	// The probe, a last attempt, fails without an answer: given up on,
	// and counted as the receiver's failure.
	h.record(&mu, now, e, 3, attemptResult{res: abandon, transient: true, why: "connection refused"}, time.Second)
	h.probed(&mu)
	if h.consecutive != 1 {
		t.Errorf("a failed last attempt: %d consecutive failures, want 1", h.consecutive)
	}
	check("probe failed, no pause since: give up", false, false, false)
	// Two more failures pause the receiver; after that pause, one probe.
	h.record(&mu, now, e, 1, attemptResult{res: retry, status: 503, why: "answered 503"}, time.Second)
	h.record(&mu, now, e, 1, attemptResult{res: retry, status: 503, why: "answered 503"}, time.Second)
	if h.pausedUntil.IsZero() {
		t.Fatal("three failures did not pause the receiver")
	}
	check("a pause later: probe", true, true, false)
	h.record(&mu, h.pausedUntil, e, 4, attemptResult{res: delivered, status: 200}, time.Second)
	h.probed(&mu)
	check("the probe delivered: last attempts", true, false, false)
	check("... for each", true, false, false)
	// A new URL: nothing known of its receiver.
	h.url = "https://a.example.com/"
	h.newURL(&mu, "https://b.example.com/")
	check("new URL: probe", true, true, false)
}

// A failed request that was out while another request to the receiver
// succeeded is its object's failure, not the receiver's: it does not count
// toward a pause. Three objects whose requests hung (timed out together)
// used to pause a receiver that answered every other object at once.
func TestFailureWhileReceiverAnswers(t *testing.T) {
	var mu sync.Mutex
	t0 := time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC)
	e := &chorus.OutboxEntry{Event: &chorus.Event{Type: chorus.EventDocumentUpdated}}
	h := &health{}
	timeout := attemptResult{res: retry, why: "timeout", started: t0}
	h.record(&mu, t0.Add(time.Second), e, 1, attemptResult{res: delivered, status: 200, started: t0.Add(time.Second)}, time.Second)
	for range 3 { // out since t0, across the success at t0+1s
		h.record(&mu, t0.Add(10*time.Second), e, 1, timeout, time.Second)
	}
	if h.consecutive != 0 || !h.pausedUntil.IsZero() {
		t.Errorf("hung requests that spanned a success: %d consecutive failures, paused until %v; want 0, none", h.consecutive, h.pausedUntil)
	}
	if h.failed != 3 || len(h.failures) != 3 {
		t.Errorf("failed %d, %d recent failures; want 3 (the console still shows them)", h.failed, len(h.failures))
	}
	// Requests that began after the last success and failed: the receiver's.
	later := attemptResult{res: retry, status: 503, why: "answered 503", started: t0.Add(11 * time.Second)}
	for range 3 {
		h.record(&mu, t0.Add(12*time.Second), e, 1, later, time.Second)
	}
	if h.consecutive != 3 || h.pausedUntil.IsZero() {
		t.Errorf("three failures after the last success: %d consecutive, paused until %v; want 3, paused", h.consecutive, h.pausedUntil)
	}
}
