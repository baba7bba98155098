package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
)

// The budget watcher's passes, run by hand on sessions that are only
// queues (no sockets), with the gateway's own watcher stopped.

// watchedGateway returns a gateway with send-queue budget budget whose
// watcher goroutine has stopped: the test runs the passes.
func watchedGateway(tb testing.TB, budget int64) *Gateway {
	g := New(Config{SendQueueBudget: budget, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	g.cancel()
	return g
}

// queueOnly adds a session of identity u (nil: before init) to g whose
// queue holds n bytes.
func queueOnly(g *Gateway, u *identityUse, n int) *conn {
	c := &conn{g: g, id: "q", q: newSendQueue(1<<20, 8<<20), use: u}
	c.q.budget = &g.queued
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	if u != nil {
		c.q.chargeIdentity(&u.queued)
	}
	if n > 0 {
		c.q.push(make([]byte, n))
	}
	g.mu.Lock()
	g.conns[c] = struct{}{}
	g.mu.Unlock()
	return c
}

// TestWatcherSparesLightIdentity: bob's one session holds 900 KiB, under
// his share of 1 MiB, and is stuck; other identities' fresh bytes take
// the node past its budget. The watcher closes nothing: bob, the largest
// holder, is light.
func TestWatcherSparesLightIdentity(t *testing.T) {
	g := watchedGateway(t, 8<<20)
	bob := queueOnly(g, &identityUse{}, 900<<10)
	now := monoNow()
	g.watchPass(now) // bob's clock starts
	for range 80 {
		queueOnly(g, &identityUse{}, 100<<10) // 8 MB more, fresh, of light identities
	}
	if n := g.watchPass(now + staleAfter); n != 0 || bob.ctx.Err() != nil {
		t.Errorf("the watcher closed %d sessions (bob's: %v) with the node at %d of %d", n, bob.ctx.Err() != nil, g.queued.used.Load(), g.queued.max)
	}
}

// TestWatcherCountsClosing: a pass closes one of mallory's stuck sessions,
// which brings the node under its budget once its writer lets go of its
// bytes; the next pass, before that, closes no other for the same excess.
func TestWatcherCountsClosing(t *testing.T) {
	g := watchedGateway(t, 8<<20)
	m := &identityUse{}
	for range 9 {
		queueOnly(g, m, 1000<<10) // 9 MB: 600 KB past the budget
	}
	now := monoNow()
	g.watchPass(now)
	first := g.watchPass(now + staleAfter)
	second := g.watchPass(now + staleAfter + int64(watchEvery))
	if first != 1 || second != 0 {
		t.Errorf("passes closed %d then %d sessions, want 1 then 0 (node %d of %d)", first, second, g.queued.used.Load(), g.queued.max)
	}
}

// TestWatcherWaitsForTheLargestHolder: trudy's sessions have been stuck
// for a while, mallory's, which hold more, only just began to hold bytes:
// the watcher closes nothing of trudy's, and once mallory's are stuck,
// closes the one of hers that takes the node back under its budget.
func TestWatcherWaitsForTheLargestHolder(t *testing.T) {
	g := watchedGateway(t, 8<<20)
	trudy, mallory := &identityUse{}, &identityUse{}
	var trudys []*conn
	for range 2 {
		trudys = append(trudys, queueOnly(g, trudy, 1300<<10))
	}
	now := monoNow()
	g.watchPass(now) // trudy's clocks start
	for range 6 {
		queueOnly(g, mallory, 1000<<10) // 6 MB: the node 200 KB past its budget
	}
	later := monoNow()
	if n := g.watchPass(now + staleAfter); n != 0 {
		t.Fatalf("the watcher closed %d sessions while the largest holder's were fresh", n)
	}
	if n := g.watchPass(later + staleAfter); n != 1 {
		t.Fatalf("the watcher closed %d sessions once mallory's were stuck, want 1", n)
	}
	for _, c := range trudys {
		if c.ctx.Err() != nil {
			t.Errorf("one of trudy's sessions was closed; mallory holds more")
		}
	}
}

// TestFreshHeavyIdentityLeavesHeadroom: mallory's queues that never read
// fill the budget within their first second (none is stuck yet): she is
// refused an eighth past the budget, and bob, far under his share, still
// queues 300 KiB. A reviewer found that without that limit she took the
// node to its backstop alone, and bob was refused at 61 KB.
func TestFreshHeavyIdentityLeavesHeadroom(t *testing.T) {
	b := &queueBudget{max: 8 << 20, perIdentity: identityShareOf(8 << 20)}
	var mallory, bob atomic.Int64
	frame := make([]byte, 15<<10)
	var hers []*sendQueue
	for range 8 {
		q := newSendQueue(1<<20, 8<<20)
		q.budget = b
		q.chargeIdentity(&mallory)
		hers = append(hers, q)
	}
	for refused := 0; refused < len(hers); {
		refused = 0
		for _, q := range hers {
			if q.overflow {
				refused++
			} else {
				q.push(frame)
			}
		}
	}
	if limit := b.heavyHeadroom() + 8*(budgetShare+int64(len(frame))); b.used.Load() > limit {
		t.Errorf("mallory took the node to %d bytes, want at most %d", b.used.Load(), limit)
	}
	q := newSendQueue(1<<20, 8<<20)
	q.budget = b
	q.chargeIdentity(&bob)
	for i := range 20 { // 300 KiB, far under bob's share of 1 MiB
		if !q.push(frame) {
			t.Fatalf("bob refused at frame %d (%d bytes held), node at %d of budget %d", i, i*len(frame), b.used.Load(), b.max)
		}
	}
}

// TestWatcherClosesLargestFirst: of the largest holder's stuck sessions,
// the watcher closes the largest first, and only as many as the excess
// takes: here the one of 2 MiB.
func TestWatcherClosesLargestFirst(t *testing.T) {
	g := watchedGateway(t, 8<<20)
	for range 40 {
		queueOnly(g, &identityUse{}, 150<<10) // light identities: 6 MB
	}
	m := &identityUse{}
	small, large, medium := queueOnly(g, m, 500<<10), queueOnly(g, m, 2<<20), queueOnly(g, m, 700<<10)
	now := monoNow()
	g.watchPass(now)
	if n := g.watchPass(now + staleAfter); n != 1 || large.ctx.Err() == nil || small.ctx.Err() != nil || medium.ctx.Err() != nil {
		t.Errorf("the watcher closed %d sessions (500 KiB: %v, 2 MiB: %v, 700 KiB: %v), want the one of 2 MiB",
			n, small.ctx.Err() != nil, large.ctx.Err() != nil, medium.ctx.Err() != nil)
	}
}

// TestClockStartsWhenBytesArrive: past half the budget, a queue's clock
// starts when bytes arrive in it empty, not when the watcher first looks:
// a session that never reads is stuck staleAfter after its first byte.
func TestClockStartsWhenBytesArrive(t *testing.T) {
	g := watchedGateway(t, 8<<20)
	queueOnly(g, &identityUse{}, 5<<20) // past half the budget
	c := queueOnly(g, &identityUse{}, 100<<10)
	if _, stale, _ := c.q.look(monoNow() + staleAfter); !stale {
		t.Errorf("a queue that got its bytes staleAfter ago, first looked at now, is not stuck")
	}
}

// BenchmarkWatchPass: one watcher pass over 20,000 sessions of 100
// identities, 2,000 of them holding 100 KiB, with the node past its
// budget and nobody heavy (nothing is closed): fresh, and stuck.
func BenchmarkWatchPass(b *testing.B) {
	for _, stuck := range []bool{false, true} {
		b.Run(fmt.Sprintf("stuck=%v", stuck), func(b *testing.B) {
			g := watchedGateway(b, 128<<20)
			uses := make([]*identityUse, 100)
			for i := range uses {
				uses[i] = &identityUse{}
			}
			for i := range 20000 {
				n := 0
				if i%10 == 0 {
					n = 100 << 10
				}
				queueOnly(g, uses[i%100], n)
			}
			g.queued.used.Add(200 << 20) // past the budget
			start := monoNow()
			g.watchPass(start)
			b.ReportAllocs()
			for b.Loop() {
				now := monoNow()
				if stuck {
					now += staleAfter
				}
				g.watchPass(now)
			}
		})
	}
}
