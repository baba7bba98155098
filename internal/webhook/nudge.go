package webhook

import (
	"context"
	"sync"
	"time"

	"github.com/chorus-sync/chorus"
)

// Nudges: in a cluster, one node delivers every node's webhooks (the
// leader). It hears of its own changes at once (Observe) and of the
// others' at its next poll of the outbox (Config.Poll, a second). A node
// that does not lead gathers the services of the changes committed on it
// for nudgeGather and hands them to Config.Nudge in one call, which the
// cluster's bus carries to the leader; there Nudged reads those services'
// outboxes at once. A nudge lost on the way costs the poll's delay, never
// a webhook.

// nudgeGather is how long a node that does not lead gathers services
// before it nudges the leader: one message for the writes of a moment,
// not one per write.
const nudgeGather = 2 * time.Millisecond

// nudges is the set of services to nudge the leader about; nudge adds to
// it, sendNudges (on the Run goroutine's side) takes it.
type nudges struct {
	mu      sync.Mutex
	pending map[string]struct{}
	wake    chan struct{} // capacity 1
}

// deliverSoon has the new webhooks of service sid, committed on this
// node, looked at now: by this node's lane when it leads, else by the
// leader, nudged.
func (d *Dispatcher) deliverSoon(sid string) {
	if d.leading.Load() {
		d.kick(sid)
	} else {
		d.nudge(sid)
	}
}

// nudge notes that service sid has new webhooks for the leader.
func (d *Dispatcher) nudge(sid string) {
	if d.cfg.Nudge == nil {
		return
	}
	n := &d.nudges
	n.mu.Lock()
	n.pending[sid] = struct{}{}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// sendNudges hands the noted services to Config.Nudge until ctx ends.
func (d *Dispatcher) sendNudges(ctx context.Context) {
	n := &d.nudges
	t := time.NewTimer(nudgeGather)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.wake:
		}
		t.Reset(nudgeGather)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.mu.Lock()
		services := make([]string, 0, len(n.pending))
		for sid := range n.pending {
			services = append(services, sid)
		}
		clear(n.pending)
		n.mu.Unlock()
		d.cfg.Nudge(services)
	}
}

// Nudged hears from another node that services have new webhooks
// (Config.Nudge on that node): while this node leads, it reads their
// outboxes at once instead of at its next poll. Anything but a service
// SID is ignored. It does not block.
func (d *Dispatcher) Nudged(services []string) {
	if !d.leading.Load() {
		return
	}
	for _, sid := range services {
		if chorus.IsSID("IS", sid) {
			d.kick(sid)
		}
	}
}
