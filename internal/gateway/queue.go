package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// sendQueue is a connection's bounded outbound queue. push never blocks:
// over the frame or byte limit it reports false once and the connection is
// closed as a slow consumer. The node's queues together are bounded too
// (queueBudget).
//
// While a write is in flight (hold), notifications are parked so that the
// reply to the write is queued before the write's own event.
type sendQueue struct {
	maxFrames, maxBytes int
	budget              *queueBudget // nil: none

	mu       sync.Mutex
	frames   []outFrame
	bytes    int
	held     []outFrame
	holding  int
	overflow bool
	wake     chan struct{} // capacity 1
	// notify, when set, replaces wake: the connection is written by the
	// gateway's writer pool (writer.go); urgent when a reply or control
	// frame is ready. Set before the queue is used.
	notify func(urgent bool)
	// roomc, while a replay waits for room (waitRoom), is closed by the
	// next drain.
	roomc chan struct{}
	// discarded once the session ended (discard): frames pushed later
	// are dropped.
	discarded bool
	// writing is the bytes drained and not yet written (wrote): a writer
	// blocked on a client that does not read still holds them, and they
	// stay in the budget.
	writing int
	// identity counts what the sessions of this session's identity hold
	// past budgetShare each (chargeIdentity); nil until init, or without
	// a budget.
	identity *atomic.Int64
	// since is when the queue began to hold bytes without progress
	// (monoNow): stamped by a push to an empty queue once the node is
	// past half its budget, or else by the budget's watcher (evict.go)
	// when it first sees them; 0 once it makes any progress (a drain, a
	// write), and while notifications are parked (hold): the server, not
	// the client, holds those.
	since int64
}

// queueBudget bounds the bytes queued by all the sessions of a node
// (Config.SendQueueBudget). Each session's queue is bounded (8 MiB), but
// one identity may hold 1,000 sessions: a tester's 300 sessions that sent
// requests for a 16 KiB document and never read their replies took 4 GB
// in 10 s. A session's bytes count from the moment they are queued until
// they are written (wrote), a batch the writer took included.
//
// Under the budget nothing is held: a burst to the many sessions of a
// shared identity (kiosks, one "guest") puts each of them past
// budgetShare for as long as the writers take to get round to it (a
// reviewer's 1,000 such sessions that all read, sent 10 events of 15 KB
// at once, held 133 MB).
//
// Past the budget, the largest holder's bytes that are stuck go first
// (evict.go): a watcher closes the stuck sessions (holding more than
// budgetShare with no progress for staleAfter) of the identity whose
// sessions hold the most past budgetShare each, if that is more than
// perIdentity (an eighth of the budget), largest first, until the node
// is back under the budget; while that identity has no stuck session, it
// waits. A push past budgetShare to a session that holds something is
// refused (the session closed as a slow consumer) when its identity holds
// more than perIdentity and the session is stuck, or the node is past an
// eighth more than the budget (so that one identity, fresh or not, never
// takes the whole headroom), or before init. Events parked behind the
// session's own write in flight count like any others: a client that
// never reads but keeps a write in flight would otherwise never be stuck
// (a reviewer's finding). Anyone else still queues, up
// to the backstop (a quarter more than the budget); past it every such
// push is refused. A session that holds nothing gets any one frame,
// however large (a page of 100 items of 16 KiB, a Map with its items),
// and one whose writer sends a large frame to a client that reads still
// queues what follows, so that another's slowness never closes it.
//
// Before, past the budget the session that pushed was refused if its
// identity was heavy, whoever had filled the budget: another identity's
// idle sessions holding 95 % of it got a shared identity's 25 reading
// sessions closed when a burst crossed it (a reviewer's finding). Neither
// rule closes an identity whose sessions each hold less than budgetShare,
// nor identities each under perIdentity: only the backstop holds those
// (and not below budgetShare each).
type queueBudget struct {
	max         int64
	perIdentity int64
	used        atomic.Int64
	// watch, when set, is signaled (without blocking) by a push that
	// leaves the node past half the budget: the watcher (evict.go) stamps
	// the queues that make no progress, and past the budget closes the
	// largest stale holder's sessions.
	watch chan struct{}
}

// staleAfter is how long a session may hold bytes without progress (no
// write done, no batch taken) before it counts as stuck for the budget:
// longer than the longest --ws-coalesce hold (1 s) and than a 256 KB
// batch takes to a client that reads at 128 KB/s, far shorter than
// WriteTimeout. From half the budget on, a queue's clock starts when its
// bytes arrive; a session that held bytes from before is stamped by the
// watcher's next look.
const staleAfter = int64(2 * time.Second)

// heavyHeadroom is how far past the budget an identity over its share
// may push, stuck or not: half the room to the backstop, so that the
// other half stays for the others.
func (b *queueBudget) heavyHeadroom() int64 { return b.max + b.max/8 }

// identityShareOf is the part of a node's budget that the sessions of one
// identity may hold past budgetShare each and still queue past the budget.
func identityShareOf(budget int64) int64 { return budget / 8 }

// backstop is what the node's sessions may hold before every session is
// held to budgetShare, whatever its identity holds.
func (b *queueBudget) backstop() int64 { return b.max + b.max/4 }

// pastShare is the part of held bytes that counts against an identity's
// share.
func pastShare(held int) int64 { return int64(max(held-budgetShare, 0)) }

// budgetShare is what a session may hold however full the budget is.
const budgetShare = 64 << 10

// DefaultSendQueueBudget is Config.SendQueueBudget's default: 512 MiB,
// the queues of 64 sessions at their 8 MiB; with the garbage collector's
// headroom the process holds about twice that (300 sessions that never
// read: 1.2 GB at most, against 4 GB without the budget). A fan-out of a
// 16 KiB document to 10,000 subscribers queues 160 MiB at once.
const DefaultSendQueueBudget = 512 << 20

func newSendQueue(maxFrames, maxBytes int) *sendQueue {
	return &sendQueue{maxFrames: maxFrames, maxBytes: maxBytes, wake: make(chan struct{}, 1)}
}

// pushLocked appends f; it reports false when the queue is over its limits.
func (q *sendQueue) pushLocked(f outFrame, notification bool) bool {
	if q.discarded {
		return true // the session ended: nobody reads it
	}
	if q.overflow {
		return false
	}
	n := len(f.b)
	if len(q.frames)+len(q.held) >= q.maxFrames || q.bytes+n > q.maxBytes {
		q.overflow = true
		return false
	}
	if b := q.budget; b != nil {
		held := q.bytes + q.writing
		if held == 0 {
			q.since = 0 // a fresh backlog, not a stuck one
		}
		used := b.used.Add(int64(n))
		if held == 0 && used > b.max/2 {
			q.since = monoNow() // the clock of these bytes starts now
		}
		var past, mine int64 // what the identity's count grows by, and comes to
		if q.identity != nil {
			if past = pastShare(held+n) - pastShare(held); past != 0 {
				mine = q.identity.Add(past)
			}
		}
		if used > b.max/2 && b.watch != nil {
			select {
			case b.watch <- struct{}{}:
			default:
			}
		}
		if held > 0 && q.bytes+n > budgetShare && used > b.max && (used > b.backstop() || q.refusedPastBudget(used, past, mine)) {
			b.used.Add(-int64(n))
			if past > 0 {
				q.identity.Add(-past)
			}
			q.overflow = true
			return false
		}
	}
	q.bytes += n
	if notification && q.holding > 0 {
		q.held = append(q.held, f)
		return true
	}
	q.frames = append(q.frames, f)
	return true
}

func (q *sendQueue) signal() { q.signalAs(false) }

func (q *sendQueue) signalAs(urgent bool) {
	if q.notify != nil {
		q.notify(urgent)
		return
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// push queues a reply or control frame.
func (q *sendQueue) push(f []byte) bool { return q.pushFrame(outFrame{b: f}) }

// pushFrame is push for a frame that may carry a mergeable event.
func (q *sendQueue) pushFrame(f outFrame) bool {
	q.mu.Lock()
	ok := q.pushLocked(f, false)
	q.mu.Unlock()
	q.signalAs(true)
	return ok
}

// pushNotification queues an event frame, parking it while a write is in
// flight.
func (q *sendQueue) pushNotification(f outFrame) bool {
	q.mu.Lock()
	ok := q.pushLocked(f, true)
	parked := q.holding > 0
	full := q.fullLocked()
	q.mu.Unlock()
	if ok && !parked { // a parked frame is signaled by release
		// Anything but a fan-out event (a live query's notification)
		// ends a hold at once, like a reply (coalesce.go).
		q.signalAs(full || !f.fanout)
	}
	return ok
}

// fullLocked reports whether a whole merged notification's worth of frames
// is ready: that ends a hold at once, like a reply (coalesce.go).
func (q *sendQueue) fullLocked() bool { return len(q.frames) >= mergeMaxEvents }

// hold parks notifications until the matching release.
func (q *sendQueue) hold() {
	q.mu.Lock()
	q.holding++
	q.mu.Unlock()
}

// release queues reply and then, when no other hold remains, every parked
// notification.
func (q *sendQueue) release(reply []byte) bool {
	q.mu.Lock()
	ok := true
	if reply != nil {
		ok = q.pushLocked(outFrame{b: reply}, false)
	}
	q.holding--
	if q.holding == 0 && len(q.held) > 0 {
		q.frames = append(q.frames, q.held...)
		clear(q.held)
		q.held = q.held[:0]
	}
	full := q.fullLocked()
	q.mu.Unlock()
	q.signalAs(reply != nil || full)
	return ok
}

// drain moves every ready frame into dst (reusing its storage) and returns
// it with the overflow flag.
func (q *sendQueue) drain(dst []outFrame) ([]outFrame, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	dst = append(dst[:0], q.frames...)
	clear(q.frames)
	q.frames = q.frames[:0]
	drained := 0
	for _, f := range dst {
		drained += len(f.b)
	}
	q.bytes -= drained
	q.writing += drained // still in the budget until wrote
	if drained > 0 {
		q.since = 0
	}
	if q.roomc != nil && len(dst) > 0 {
		close(q.roomc)
		q.roomc = nil
	}
	return dst, q.overflow
}

// waitRoom blocks while the queue is at least half full, by frames or by
// bytes (an empty queue always has room), so that a replay queues events
// only as fast as the client reads them: a client behind by more than the
// queue holds is paced, not closed as a slow consumer. It returns at once when the queue has overflowed
// (the session is closing), and false when ctx ends.
func (q *sendQueue) waitRoom(ctx context.Context) bool {
	for {
		q.mu.Lock()
		n := len(q.frames) + len(q.held)
		if q.overflow || n == 0 || (n < q.maxFrames/2 && q.bytes < q.maxBytes/2) {
			q.mu.Unlock()
			return ctx.Err() == nil
		}
		if q.roomc == nil {
			q.roomc = make(chan struct{})
		}
		room := q.roomc
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return false
		case <-room:
		}
	}
}

// ready reports whether frames are ready to write or the queue
// overflowed.
func (q *sendQueue) ready() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.frames) > 0 || q.overflow
}

// holdable reports whether the queue may wait for a hold (coalesce.go):
// it holds only live events of the fan-out, at least two and fewer than
// one merged notification carries.
func (q *sendQueue) holdable() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.overflow || len(q.frames) < 2 || len(q.frames) >= mergeMaxEvents {
		return false
	}
	for _, f := range q.frames {
		if !f.fanout {
			return false
		}
	}
	return true
}

// wrote reports that the frames drained so far are written (or failed
// to be): their bytes leave the budget.
func (q *sendQueue) wrote() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.giveBackLocked(q.bytes+q.writing, q.bytes)
	q.writing = 0
	q.since = 0
}

// discard drops what the queue holds when its session has ended, giving
// its bytes back to the budget; later pushes are dropped.
func (q *sendQueue) discard() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.giveBackLocked(q.bytes+q.writing, 0)
	q.bytes, q.writing, q.discarded = 0, 0, true
	clear(q.frames)
	clear(q.held)
	q.frames, q.held = nil, nil
}

// refusedPastBudget reports, with q.mu held and the node at used past
// its budget, whether a push past budgetShare is refused: before init
// (no identity yet); or when the identity of q holds more than its share,
// given what the push just added to its count and the count it came to,
// and q is stuck or the node is past heavyHeadroom. Asked only past the budget, so that a push under it
// reads no clock and no counter shared by the identity's sessions.
func (q *sendQueue) refusedPastBudget(used, past, mine int64) bool {
	switch {
	case q.identity == nil:
		return true
	case past == 0:
		mine = q.identity.Load()
	}
	if mine <= q.budget.perIdentity {
		return false
	}
	return used > q.budget.heavyHeadroom() || q.staleLocked(monoNow())
}

// staleLocked reports whether q has held bytes since at least staleAfter
// before now with no progress.
func (q *sendQueue) staleLocked(now int64) bool {
	return q.since != 0 && now-q.since >= staleAfter
}

// look is the watcher's look at q (evict.go): it stamps a queue that
// holds bytes and has no clock running yet, and returns what q holds,
// queued or being written, whether it is stale, and its identity's count
// (nil before init).
func (q *sendQueue) look(now int64) (held int, stale bool, identity *atomic.Int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	held, identity = q.bytes+q.writing, q.identity
	switch {
	case held == 0 || q.discarded:
		q.since = 0
		return held, false, identity
	case q.since == 0:
		q.since = now
	}
	return held, q.staleLocked(now), identity
}

// giveBackLocked gives the budget and the identity's count what the queue
// no longer holds: it held before, and holds after.
func (q *sendQueue) giveBackLocked(before, after int) {
	if q.budget == nil {
		return
	}
	q.budget.used.Add(-int64(before - after))
	if d := pastShare(after) - pastShare(before); d != 0 && q.identity != nil {
		q.identity.Add(d) // most sessions hold under budgetShare: no shared write
	}
}

// chargeIdentity counts what the queue holds past budgetShare, from now
// on, in queued too: what the sessions of its identity hold past it
// (init). Without a budget, or once the session ended, it does nothing.
func (q *sendQueue) chargeIdentity(queued *atomic.Int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.budget == nil || q.discarded || q.identity != nil {
		return
	}
	queued.Add(pastShare(q.bytes + q.writing))
	q.identity = queued
}

// len returns the number of queued frames (tests, stats).
func (q *sendQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.frames) + len(q.held)
}
