package server

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// announceEvery is the shortest time between two resync announcements of
// one node. Each makes every node of the cluster read its sessions' objects
// again, so a flapping link or a string of dead nodes costs one pass per
// interval, not one per cause.
const announceEvery = 5 * time.Second

// announcer sends this node's resync announcements (send: the engine's
// AnnounceResync, which records its own failure as unposted changes). A
// request within announceEvery of the last announcement is merged into one
// sent when the interval is up; none is dropped. Safe for concurrent use.
type announcer struct {
	every time.Duration
	send  func(context.Context) error
	log   *slog.Logger

	mu       sync.Mutex
	last     time.Time   // when the last announcement started
	due      *time.Timer // the merged announcement, while one waits
	inflight int         // announcements being sent
	closed   bool
}

// request announces now, or has an announcement sent when the interval
// since the last one is up. It returns once the announcement was sent (or
// failed) or is scheduled.
func (a *announcer) request() {
	a.mu.Lock()
	if a.closed || a.due != nil {
		a.mu.Unlock()
		return // the announcement due covers this request
	}
	if wait := a.every - time.Since(a.last); wait > 0 {
		a.due = time.AfterFunc(wait, a.fire)
		a.mu.Unlock()
		return
	}
	a.announce() // unlocks
}

// fire sends the announcement that was due.
func (a *announcer) fire() {
	a.mu.Lock()
	a.due = nil
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.announce() // unlocks
}

// announce sends an announcement; it is called with mu held and unlocks it
// while sending.
func (a *announcer) announce() {
	a.last = time.Now()
	a.inflight++
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.send(ctx); err != nil {
		a.log.Warn("announce resync: the next reconnect tries again", logErr, err)
	}
	a.mu.Lock()
	a.inflight--
	a.mu.Unlock()
}

// pending reports whether an announcement waits or is being sent.
func (a *announcer) pending() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.due != nil || a.inflight > 0
}

// close drops the announcement waiting, if any, and refuses new ones.
func (a *announcer) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	if a.due != nil {
		a.due.Stop()
		a.due = nil
	}
}
