package gateway

import (
	"cmp"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"
)

// The budget's watcher: past the send-queue budget, the largest holder's
// bytes that are stuck go first (queueBudget). One goroutine per gateway
// (watchLoop) runs a pass every watchEvery while the node holds more than
// half the budget. A pass copies the session list under Gateway.mu, then
// looks at each queue under its own lock, never both at once, and closes
// sessions with conn.slow, which gives their bytes back when their writer
// lets go of them. Its scratch storage (Gateway.watch) belongs to the
// watcher goroutine alone (and to tests that run passes by hand with the
// gateway's context canceled).

// watchEvery is the shortest time between two of the watcher's passes.
const watchEvery = 100 * time.Millisecond

// watchLoop runs the watcher's passes until the gateway closes: from a
// push that leaves the node past half its budget on, every watchEvery for
// as long as the node stays past half of it, pushes or none.
func (g *Gateway) watchLoop() {
	b := &g.queued
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		if b.used.Load() <= b.max/2 {
			select {
			case <-g.ctx.Done():
				return
			case <-b.watch:
			}
		}
		if g.ctx.Err() != nil {
			return // both were ready: no pass after Close
		}
		g.watchPass(monoNow())
		t.Reset(watchEvery)
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchScratch is a pass's storage, kept from pass to pass.
type watchScratch struct {
	conns   []*conn
	holders map[*atomic.Int64]*holder // by identity's count
	ranked  []*holder
	spare   []*holder // for the next pass's holders
}

// holder is an identity as a pass sees it: what its sessions hold past
// budgetShare each (its count), and its stuck sessions.
type holder struct {
	count int64
	stuck []heldQueue
}

// heldQueue is a session and what its send queue holds.
type heldQueue struct {
	c    *conn
	held int64
}

// watchPass stamps the queues that hold bytes without a clock running
// (look), and when the node is past its budget closes stuck sessions
// until it would be back under it: the identities over perIdentity in
// the order of what they hold, each one's stuck sessions largest first;
// it stops at an identity without stuck sessions (the largest holder is
// moving: the next pass sees). Sessions already ending count as given
// back. It returns the sessions it closed.
func (g *Gateway) watchPass(now int64) int {
	b, w := &g.queued, &g.watch
	g.mu.Lock()
	w.conns = w.conns[:0]
	for c := range g.conns {
		w.conns = append(w.conns, c)
	}
	g.mu.Unlock()
	if w.holders == nil {
		w.holders = make(map[*atomic.Int64]*holder)
	}
	defer func() {
		clear(w.conns)
		for _, h := range w.holders {
			clear(h.stuck)
			h.stuck = h.stuck[:0]
			w.spare = append(w.spare, h)
		}
		clear(w.holders)
		clear(w.ranked)
		w.ranked = w.ranked[:0]
	}()

	var closing int64 // held by sessions that are ending: given back soon
	for _, c := range w.conns {
		held, stale, identity := c.q.look(now)
		switch {
		case c.ctx.Err() != nil:
			closing += int64(held)
		case identity == nil || held <= budgetShare:
		default:
			h := w.holders[identity]
			if h == nil {
				if n := len(w.spare); n > 0 {
					h, w.spare = w.spare[n-1], w.spare[:n-1]
				} else {
					h = &holder{}
				}
				h.count = identity.Load()
				w.holders[identity] = h
			}
			if stale {
				h.stuck = append(h.stuck, heldQueue{c, int64(held)})
			}
		}
	}
	excess := b.used.Load() - b.max - closing
	if excess <= 0 {
		return 0
	}
	for _, h := range w.holders {
		if h.count > b.perIdentity {
			w.ranked = append(w.ranked, h)
		}
	}
	slices.SortFunc(w.ranked, func(x, y *holder) int { return cmp.Compare(y.count, x.count) })
	closed, freed := 0, int64(0)
	for _, h := range w.ranked {
		if len(h.stuck) == 0 || excess <= 0 {
			break
		}
		slices.SortFunc(h.stuck, func(x, y heldQueue) int { return cmp.Compare(y.held, x.held) })
		for _, hq := range h.stuck {
			if excess <= 0 {
				break
			}
			excess -= hq.held
			if hq.c.slow() {
				freed += hq.held
				closed++
			}
		}
	}
	if closed > 0 {
		g.budgetClosed.Add(uint64(closed))
		g.log.Warn("gateway: send-queue budget full: closed the stuck sessions of its largest holders",
			slog.Int("sessions", closed), slog.Int64("bytes", freed), slog.Int64("budget", b.max))
	}
	return closed
}
