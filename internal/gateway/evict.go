package gateway

import (
	"cmp"
	"log/slog"
	"slices"
	"time"
)

// The budget's watcher: past the send-queue budget, the bytes that are
// stuck go first, and the largest holder's first (queueBudget). One
// goroutine per gateway (watchLoop) runs a pass every watchEvery while
// the node holds more than half the budget. A pass reads the
// session table under Gateway.mu and each queue under its own lock, never
// both at once, and closes sessions with conn.slow, which gives their
// bytes back when their writer lets go of them.

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
		g.watchPass(monoNow())
		t.Reset(watchEvery)
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// heldQueue is a session and what its send queue holds.
type heldQueue struct {
	c    *conn
	held int64
}

// watchPass stamps the queues that hold bytes without progress (look),
// and when the node is past its budget closes stale sessions until it
// would be back under it: those of the identity whose stale sessions hold
// the most past budgetShare each first, largest first, then the next
// such identity, as long as it holds more than perIdentity. It returns
// the sessions it closed.
func (g *Gateway) watchPass(now int64) int {
	b := &g.queued
	g.mu.Lock()
	conns := make([]heldQueue, 0, len(g.conns))
	uses := make([]*identityUse, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, heldQueue{c: c})
		uses = append(uses, c.use)
	}
	g.mu.Unlock()

	var closing int64 // held by sessions that are ending: given back soon
	stale := make(map[*identityUse][]heldQueue)
	weight := make(map[*identityUse]int64) // stale bytes past budgetShare each
	for i, hq := range conns {
		held, isStale := hq.c.q.look(now)
		hq.held = int64(held)
		switch {
		case hq.c.ctx.Err() != nil:
			closing += hq.held
		case isStale && uses[i] != nil && held > budgetShare:
			stale[uses[i]] = append(stale[uses[i]], hq)
			weight[uses[i]] += pastShare(held)
		}
	}
	excess := b.used.Load() - b.max - closing
	if excess <= 0 {
		return 0
	}
	holders := make([]*identityUse, 0, len(weight))
	for u, w := range weight {
		if w > b.perIdentity {
			holders = append(holders, u)
		}
	}
	slices.SortFunc(holders, func(x, y *identityUse) int { return cmp.Compare(weight[y], weight[x]) })
	closed, freed := 0, int64(0)
	for _, u := range holders {
		sessions := stale[u]
		slices.SortFunc(sessions, func(x, y heldQueue) int { return cmp.Compare(y.held, x.held) })
		for _, hq := range sessions {
			if excess <= 0 {
				break
			}
			hq.c.slow()
			excess -= hq.held
			freed += hq.held
			closed++
		}
	}
	if closed > 0 {
		g.budgetClosed.Add(uint64(closed))
		g.log.Warn("gateway: send-queue budget full: closed the stuck sessions of its largest holders",
			slog.Int("sessions", closed), slog.Int64("bytes", freed), slog.Int64("budget", b.max))
	}
	return closed
}
