package gateway

import (
	"bytes"
	"testing"

	"github.com/chorus-sync/chorus"
)

// TestDenialAfterParkedEvents: a subscription_failed sent while a write is
// in flight is queued after the object's events parked before it, so
// nothing of the object follows the denial (doc.go, "Live authorization");
// with no write in flight it is queued at once, as urgent as a reply.
func TestDenialAfterParkedEvents(t *testing.T) {
	q := newSendQueue(100, 1<<20)
	var urgent []bool
	q.notify = func(u bool) { urgent = append(urgent, u) }
	c := &conn{q: q}

	q.hold() // a CDS write in flight
	q.pushNotification(outFrame{b: []byte("event"), fanout: true})
	c.failed("null", "ET00000000000000000000000000000001", chorus.Errorf(chorus.ErrForbidden, "denied"))
	q.release([]byte("reply"))
	frames, _ := q.drain(nil)
	var order []string
	for _, f := range frames {
		switch {
		case bytes.Contains(f.b, []byte("subscription_failed")):
			order = append(order, "denial")
		default:
			order = append(order, string(f.b))
		}
	}
	if got := len(order); got != 3 || order[0] != "reply" || order[1] != "event" || order[2] != "denial" {
		t.Fatalf("queued %v, want [reply event denial]", order)
	}

	urgent = nil
	c.failed("null", "ET00000000000000000000000000000001", chorus.Errorf(chorus.ErrForbidden, "denied"))
	if frames, _ := q.drain(nil); len(frames) != 1 || len(urgent) != 1 || !urgent[0] {
		t.Fatalf("with no write in flight: %d frames queued, signals %v; want 1 frame and one urgent signal", len(frames), urgent)
	}
}

// TestBudgetAdmitsAnEmptyQueue: past the node's budget, a queue that
// holds nothing, queued or being written, still takes a frame of any size
// (a session that keeps up asking for a Map with its items, or a page of
// large items), and one that holds a frame is refused the next large one.
// A batch the writer took counts until it is written: a session whose
// writer is blocked on a client that does not read was let in a second
// large frame, and another after every drain (a reviewer's finding).
func TestBudgetAdmitsAnEmptyQueue(t *testing.T) {
	b := &queueBudget{max: 1 << 20}
	others := b.max + 1
	b.used.Store(others) // others filled it
	q := newSendQueue(100, 8<<20)
	q.budget = b
	big := make([]byte, 150<<10)
	if !q.push(big) {
		t.Fatal("an empty queue was refused a 150 KiB frame past the budget")
	}
	if q.push(big) {
		t.Fatal("a queue holding 150 KiB took 150 KiB more past the budget")
	}
	w := newSendQueue(100, 8<<20)
	w.budget = b
	if !w.push(big) {
		t.Fatal("an empty queue was refused a 150 KiB frame past the budget")
	}
	var dst []outFrame
	dst, _ = w.drain(dst) // the writer takes it and blocks on the client
	if !w.pushNotification(outFrame{b: make([]byte, 1<<10), fanout: true}) {
		t.Fatal("a 1 KiB event was refused while the writer sends a large frame")
	}
	if w.push(big) {
		t.Fatal("a queue whose writer holds 150 KiB took 150 KiB more past the budget")
	}
	done := newSendQueue(100, 8<<20)
	done.budget = b
	done.push(big)
	dst, _ = done.drain(dst)
	done.wrote() // the writer got through
	if !done.push(big) {
		t.Fatal("a queue whose batch was written was refused a frame past the budget")
	}
	done.discard()
	small := newSendQueue(100, 8<<20)
	small.budget = b
	for i := range 4 {
		if !small.push(make([]byte, 10<<10)) {
			t.Fatalf("frame %d of 10 KiB refused to a queue under 64 KiB", i)
		}
	}
	dst, _ = small.drain(dst)
	small.wrote()
	q.discard()
	w.discard()
	if got := b.used.Load(); got != others {
		t.Errorf("budget used = %d after writing and discarding, want %d (what others hold)", got, others)
	}
	_ = dst
}
