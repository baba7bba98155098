package gateway

import "time"

// DefaultCoalesceInterval is Config.CoalesceInterval's default.
const DefaultCoalesceInterval = 100 * time.Millisecond

// Coalescing writes while the writer pool is behind.
//
// Each notification costs both ends a frame: here a write(2) and the read
// of the SDK's ack, in the client a websocket message, a twilsock decode
// and an ack to send. When the writer pool is behind (it has had sessions
// waiting for a writer, without a break, for coalesceLag; it then counts
// as behind for coalesceHold more), a session that has fallen behind its
// events (two or more queued) less than CoalesceInterval after its last
// write of live events is not written yet: it keeps its place
// (conn.sched) and a timer hands it back to the pool when the interval is
// up. Its events then leave together, merged into one notification for
// sessions on event protocol 4 (merge.go), in one write for the others.
//
// What never waits:
//   - anything, when the pool is not behind;
//   - a session that keeps up with its events (one queued when its turn
//     comes), and the first events after CoalesceInterval of quiet;
//   - a session with a full merged notification's worth of events queued
//     (mergeMaxEvents), so a hold never brings a session nearer its
//     queue's limits than that;
//   - a reply, a control frame, a replayed event, a live query's
//     notification, a pong or the end of the session: each ends the hold
//     at once (kick), and the frames leave in the order they were queued,
//     held events first.
//
// No event is dropped, and none waits more than CoalesceInterval beyond
// the pool's own delay (a released session joins the back of the ready
// list). Times come from the monotonic clock (monoNow).
//
// Why: with 1,000 sessions on an object written 600 times a second, the
// pool left alone sends each session a notification every 25-50 ms, and
// whether a run settles at 25 ms or 50 ms decides whether it delivers 350k
// or 550k events a second (the client side's cost is per frame). Holding
// each session to at most one write of live events per 100 ms under such
// load cuts the frames to ten a second per session at most; README,
// "Performance", has the measurements.
//
// Concurrency: lastFanout and deferTimer belong to whoever holds sched;
// deferTimer is created and armed before deferred is set, so the
// goroutine that takes the session from deferred sees it, and nothing
// touches it after. deferred is taken (CAS to false) exactly once per
// hold: by the timer, by an urgent kick or one after the session ended
// (which push the session to the pool), or by holdBack itself when its
// second look finds the hold should not be (it then writes). A timer left
// armed by a hold that a kick ended fires into a failed CAS, or is re-armed
// by the next hold.

// holdBack reports whether c's write waits; c then keeps sched until its
// timer or an urgent kick puts it back on the pool. now is monoNow's.
func (c *conn) holdBack(now int64) bool {
	iv := int64(c.g.cfg.CoalesceInterval)
	if iv <= 0 {
		return false
	}
	if c.lastFanout == 0 {
		return false // never written live events
	}
	wait := c.lastFanout + iv - now // at most iv: monotonic, lastFanout <= now
	if wait <= 0 || !c.g.writers.behind(now) || !c.holdable() {
		return false
	}
	if c.deferTimer == nil {
		c.deferTimer = time.AfterFunc(time.Hour, c.undefer)
		c.deferTimer.Stop()
	}
	// The timer is armed before the hold is set, so that nothing touches
	// it once another goroutine may have the session; it cannot fire
	// before now+wait.
	c.deferTimer.Reset(time.Duration(wait))
	if gap := c.g.writers.holdGap; gap != nil {
		gap(c) // tests: a frame queued between the check and the hold
	}
	c.deferred.Store(true)
	// A kick that came after holdable looked and before deferred was set
	// found nothing to take, and a timer that fired before it found no
	// hold: look again, and give the hold up unless a kick or the timer
	// has taken it meanwhile (then c is on the pool already).
	if !c.holdable() || monoNow() >= now+wait {
		return !c.deferred.CompareAndSwap(true, false)
	}
	c.g.heldWrites.Add(1)
	return true
}

// holdable reports whether nothing but held-back-able events wait: the
// session is live, no pong is due and its queue holds only live events of
// the fan-out, at least two (it has fallen behind its events, so waiting
// merges them) and fewer than a merged notification carries.
func (c *conn) holdable() bool {
	return c.ctx.Err() == nil && c.pong.Load() == nil && c.q.holdable()
}

// undefer is the hold's timer: the interval is up.
func (c *conn) undefer() {
	if c.deferred.CompareAndSwap(true, false) {
		c.g.writers.push(c, false)
	}
}

// hasFanout reports whether batch holds a live event of the fan-out.
func hasFanout(batch []outFrame) bool {
	for _, f := range batch {
		if f.fanout {
			return true
		}
	}
	return false
}

// coalesceLag is how long the writer pool must have had sessions waiting,
// without a moment with none, to count as behind: a burst that it writes
// within coalesceLag (an event to a few hundred sessions) is not. It then
// counts as behind for coalesceHold more: the holds it makes empty its
// lists, which must not end them. (writers.lag and writers.hold; tests
// change them.)
const (
	coalesceLag  = 50 * time.Millisecond
	coalesceHold = 500 * time.Millisecond
)

// behind reports whether the pool is behind (coalesceLag); now is
// monoNow's.
func (w *writers) behind(now int64) bool {
	if since := w.busySince.Load(); since != 0 && now-since >= int64(w.lag) {
		if until := now + int64(w.hold); w.behindUntil.Load() < until {
			w.behindUntil.Store(until)
		}
		return true
	}
	return now < w.behindUntil.Load()
}

// monoEpoch and monoNow give the pool's times: nanoseconds on the monotonic
// clock, never 0 (0 means unset), unmoved by changes of the wall clock.
var monoEpoch = time.Now()

func monoNow() int64 { return max(int64(time.Since(monoEpoch)), 1) }
