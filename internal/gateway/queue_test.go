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
