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
// outboxes at once instead of at its next poll. A service this node knows
// (its lane runs, or it has looked the service up) gets its lane kicked;
// for the others one sweep of the cluster's backlog, at most every
// nudgeSweepEvery, starts the lanes of those with webhooks pending. So a
// flood of made-up SIDs (anyone who may publish on NATS when the cluster
// has no secret) costs one backlog sweep per nudgeSweepEvery, not a
// goroutine and an outbox read per SID: a reviewer's 400 nudges of 256
// SIDs each took a leader from 18 to 564 MB and 13,841 goroutines. It
// does not block.
func (d *Dispatcher) Nudged(services []string) {
	if !d.leading.Load() {
		return
	}
	unknown := false
	for _, sid := range services {
		switch {
		case !chorus.IsSID("IS", sid):
		case d.knows(sid):
			d.kick(sid)
		default:
			unknown = true
		}
	}
	if unknown {
		d.sweepSoon()
	}
}

// sweepSoon has the run loop sweep the backlog (poke) now, or, within
// nudgeSweepEvery of the last such sweep, once that much time has passed
// (one sweep waits at a time), so that a nudge about a service this node
// does not know yet is never left to the next poll.
func (d *Dispatcher) sweepSoon() {
	now := d.sinceStart()
	last := time.Duration(d.nudgeSweep.Load())
	if last == 0 || now-last >= nudgeSweepEvery {
		d.nudgeSweep.Store(int64(now))
		d.poke()
		return
	}
	if d.sweepWaits.CompareAndSwap(false, true) {
		time.AfterFunc(nudgeSweepEvery-(now-last), func() {
			d.nudgeSweep.Store(int64(d.sinceStart()))
			d.sweepWaits.Store(false)
			d.poke()
		})
	}
}

// nudgeSweepEvery is the least time between two sweeps of the backlog
// that nudges about services this node does not know ask for. A sweep
// reads the whole outbox's backlog and wakes every backlogged lane (56-59
// ms for 200,000 webhooks pending on PostgreSQL): a flood of made-up SIDs
// must not run it continuously. A real service the leader does not know
// yet waits that long at most.
const nudgeSweepEvery = 250 * time.Millisecond

// knows reports whether this node has a lane for service sid or has
// looked it up.
func (d *Dispatcher) knows(sid string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, looked := d.services[sid]
	return d.lanes[sid] != nil || looked
}
