package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
)

// hub fans events out to subscribed connections. It holds one topic per
// subscribed object, and one Bus subscription per topic.
//
// Lock order: hub.mu → topic.mu → sendQueue.mu. The Bus calls topic.onEvent
// holding its own lock, so nothing may call the Bus while holding topic.mu,
// and bus callbacks never take hub.mu.
type hub struct {
	g *Gateway

	mu     sync.Mutex
	topics map[string]*topic

	delivered atomic.Uint64 // frames handed to connections
	gapFills  atomic.Uint64
	gapSkips  atomic.Uint64

	resyncRetries atomic.Uint64
	resyncs       atomic.Uint64 // Resync passes completed
}

func newHub(g *Gateway) *hub {
	return &hub{g: g, topics: make(map[string]*topic)}
}

// topic orders one object's events by ID and delivers them to its
// subscribers.
type topic struct {
	h    *hub
	sid  string
	kind chorus.Kind

	cancel func() // Bus subscription; set under hub.mu
	refs   int    // guarded by hub.mu

	mu       sync.Mutex
	baseline bool   // last is known
	closed   bool   // its last reference was released
	service  string // the object's service, set with the baseline
	last     int64  // highest ID delivered in order
	pending  map[int64]*chorus.Event
	gapTimer *time.Timer
	gapArmed bool // gapTimer is pending
	filling  bool
	gapSince time.Time
	removed  bool
	access   uint64 // permission changes heard (access.go)
	subs     map[*conn]*subscription
	queries  map[*liveQuery]struct{} // live queries of a Map (insights.go)
	frames   []baseFrame             // scratch: one encoded frame per public base
	// frameIndex finds the frames past the first linearBases (scratch, as
	// frames): sessions may name many hosts, and a linear search of each
	// for every subscriber would be quadratic.
	frameIndex map[string]*liveEvent
}

// linearBases is how many public bases an event's delivery looks up by
// a linear search (one, nearly always: the public URL or the SDK's host).
const linearBases = 8

type baseFrame struct {
	base  string
	event *liveEvent
}

// subscription is one connection's subscription to one object. Its fields
// are guarded by the topic's mutex.
type subscription struct {
	c    *conn
	t    *topic
	sid  string
	kind chorus.Kind

	identity string // the session's (fixed for its life)

	delivered int64  // highest event id sent on this connection
	live      bool   // receives live events
	gone      bool   // object removed or subscription canceled
	held      uint64 // the topic's access generation it waits for a re-check of; 0: none
}

// acquire returns the topic of sid, subscribing to the Bus when it is new.
// Each acquire must be paired with a release.
func (h *hub) acquire(sid string, k chorus.Kind) (*topic, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.topics[sid]
	if t != nil {
		t.mu.Lock()
		removed := t.removed
		t.mu.Unlock()
		if removed {
			t = nil
		}
	}
	if t == nil {
		t = &topic{h: h, sid: sid, kind: k, pending: make(map[int64]*chorus.Event), subs: make(map[*conn]*subscription)}
		cancel, err := h.g.cfg.Engine.Bus().Subscribe(sid, t.onEvent)
		if err != nil {
			return nil, err
		}
		t.cancel = cancel
		h.topics[sid] = t
	}
	t.refs++
	return t, nil
}

// release drops one reference to t and, if s is not nil, its
// subscription. The last release cancels the Bus subscription.
func (h *hub) release(t *topic, s *subscription) {
	h.mu.Lock()
	if s != nil {
		t.mu.Lock()
		s.gone = true
		if t.subs[s.c] == s {
			delete(t.subs, s.c)
		}
		t.mu.Unlock()
	}
	t.refs--
	var cancel func()
	if t.refs == 0 {
		if h.topics[t.sid] == t {
			delete(h.topics, t.sid)
		}
		cancel, t.cancel = t.cancel, nil
		t.mu.Lock()
		t.closed = true // a gap fill running now must not re-arm the timer
		if t.gapTimer != nil {
			t.gapTimer.Stop()
		}
		t.mu.Unlock()
	}
	h.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// counts returns the number of topics and subscriptions.
func (h *hub) counts() (topics, subs int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range h.topics {
		t.mu.Lock()
		subs += len(t.subs)
		t.mu.Unlock()
	}
	return len(h.topics), subs
}

// setBaseline fixes the position from which the topic orders events: the
// object's last event id as read after the Bus subscription started. Its
// service selects the events the topic reads from the log.
func (t *topic) setBaseline(obj *chorus.Object) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.baseline {
		return
	}
	t.baseline = true
	t.service = obj.ServiceSID
	t.last = obj.LastEventID
	t.drainLocked()
}

// onEvent is the Bus callback. It must not block.
func (t *topic) onEvent(e *chorus.Event) {
	if e.Type == chorus.EventPermissionChanged {
		t.mu.Lock()
		t.access++
		gen := t.access
		t.holdLocked(e.Identity, gen)
		t.mu.Unlock()
		go t.permissionChanged(e.Identity, gen) // reads the store
		return
	}
	if !e.Type.Realtime() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.acceptLocked(e)
}

func (t *topic) acceptLocked(e *chorus.Event) {
	if t.removed {
		return
	}
	if e.ID == 0 || t.kind == chorus.KindStream {
		t.deliverLocked(e)
		return
	}
	if t.baseline && e.ID <= t.last {
		return // duplicate
	}
	t.pending[e.ID] = e
	if t.baseline {
		t.drainLocked()
	}
}

// drainLocked delivers pending events in ID order while they are
// contiguous, and arms the gap timer when some remain.
func (t *topic) drainLocked() {
	for id := range t.pending {
		if id <= t.last {
			delete(t.pending, id)
		}
	}
	for !t.removed {
		e, ok := t.pending[t.last+1]
		if !ok {
			break
		}
		delete(t.pending, e.ID)
		t.deliverLocked(e)
	}
	if len(t.pending) == 0 || t.removed {
		clear(t.pending)
		t.gapSince = time.Time{}
		if t.gapTimer != nil {
			t.gapTimer.Stop()
		}
		t.gapArmed = false
		return
	}
	if t.gapSince.IsZero() {
		t.gapSince = time.Now()
	}
	if !t.filling && !t.gapArmed {
		// Armed once per gap: resetting on every event would postpone
		// the fill for as long as events keep coming.
		t.gapArmed = true
		if t.gapTimer == nil {
			t.gapTimer = time.AfterFunc(t.h.g.cfg.GapWait, t.fillGap)
		} else {
			t.gapTimer.Reset(t.h.g.cfg.GapWait)
		}
	}
}

// fillGap reads missing events from the store log.
func (t *topic) fillGap() {
	t.mu.Lock()
	t.gapArmed = false
	if t.filling || len(t.pending) == 0 || t.removed {
		t.mu.Unlock()
		return
	}
	t.filling = true
	after := t.last
	since := t.gapSince
	t.mu.Unlock()

	g := t.h.g
	ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
	events, err := g.cfg.Engine.Events(ctx, t.service, t.sid, after, 1000)
	cancel()
	t.h.gapFills.Add(1)

	t.mu.Lock()
	defer t.mu.Unlock()
	t.filling = false
	if err != nil {
		// A failed read says nothing of the log: the gap is read again,
		// never skipped, however long the store is away. Skipping would
		// move every subscriber past events the log still holds.
		g.log.Warn("gateway: fill event gap", slog.String(logObject, t.sid), slog.Any(logError, err))
		if !t.removed && !t.closed && !t.gapArmed {
			t.gapArmed = true
			t.gapTimer.Reset(g.cfg.ResyncRetry)
			t.h.resyncRetries.Add(1)
		}
		return
	}
	for _, e := range events {
		if e.ID > t.last {
			t.pending[e.ID] = e
		}
	}
	if len(events) == 0 && len(t.pending) > 0 && !since.IsZero() && time.Since(since) > g.cfg.GapGiveUp {
		// The log cannot fill the gap (trimmed, or the event was never
		// committed): skip to the lowest pending event rather than stall.
		low := int64(-1)
		for id := range t.pending {
			if low < 0 || id < low {
				low = id
			}
		}
		g.log.Warn("gateway: skipping unfillable event gap", slog.String(logObject, t.sid),
			slog.Int64("from", t.last+1), slog.Int64("to", low-1))
		t.h.gapSkips.Add(1)
		t.last = low - 1
	}
	t.drainLocked()
}

// deliverLocked sends e to every live subscriber that has not seen it.
// The frame is encoded once per public base URL.
func (t *topic) deliverLocked(e *chorus.Event) {
	if e.ID > t.last {
		t.last = e.ID
	}
	frames := t.frames[:0]
	n := 0
	for c, s := range t.subs {
		if !s.live || s.gone || s.held != 0 || c.heldBack() {
			continue
		}
		if t.kind != chorus.KindStream && c.serviceStale() {
			s.held = heldForService // until the session's service is read again
			c.svcHolds.Store(true)
			if !c.serviceStale() {
				// Read and released between the check and the flag: this
				// hold would wait for nothing.
				go c.releaseServiceHolds(t.h.g.ctx, c.svcLatest.Load())
			}
			continue
		}
		if e.ID > 0 && t.kind != chorus.KindStream {
			if e.ID <= s.delivered {
				continue
			}
			s.delivered = e.ID
		}
		var f *liveEvent
		for i := range min(len(frames), linearBases) {
			if frames[i].base == c.base {
				f = frames[i].event
				break
			}
		}
		if f == nil && len(frames) > linearBases {
			f = t.frameIndex[c.base]
		}
		if f == nil {
			f = liveFrame(e, c.base)
			frames = append(frames, baseFrame{c.base, f})
			if len(frames) > linearBases {
				if t.frameIndex == nil {
					t.frameIndex = make(map[string]*liveEvent)
				}
				t.frameIndex[c.base] = f
			}
		}
		c.sendLive(f)
		n++
	}
	clear(frames)
	t.frames = frames[:0]
	clear(t.frameIndex) // nil but when sessions named more than linearBases hosts
	t.h.delivered.Add(uint64(n))
	if len(t.queries) > 0 {
		t.offerQueriesLocked(e)
	}
	if e.Type.Removal() {
		t.removed = true
		clear(t.pending)
		subs := make([]*subscription, 0, len(t.subs))
		for c, s := range t.subs {
			if s.held != 0 && s.live && !s.gone && !c.heldBack() && t.kind != chorus.KindStream && e.ID > s.delivered {
				// Held for a re-check that ends with the object: it must
				// still learn of the removal (which carries no data).
				s.delivered = e.ID
				c.sendLive(liveFrame(e, c.base))
			}
			s.gone = true
			subs = append(subs, s)
		}
		// Not inline: the Bus lock is held by our caller.
		go t.h.dropRemoved(t, subs)
	}
}

// dropRemoved ends the subscriptions of a removed object.
func (h *hub) dropRemoved(t *topic, subs []*subscription) {
	for _, s := range subs {
		if s.c.forget(s) {
			h.release(t, s)
		}
	}
}

// Resync makes every topic read what it may have missed from the store's
// event log. A Bus that can lose events (NATS core is at-most-once) calls it
// after it reconnects: events published while it was away would otherwise
// only be noticed when a later event arrives, and the last ones never.
// Access changes that may have been lost are re-checked too.
//
// The reconnect is the only signal that something was lost, and a
// partition often takes the store with the bus: a pass that a store error
// left incomplete is run again, with backoff, until one completes. Calls
// while a pass runs are merged into one more pass.
func (g *Gateway) Resync() {
	g.forgetKeys() // a keys_revoked event may be among the lost
	g.resyncWanted.Store(true)
	if g.resyncRunning.CompareAndSwap(false, true) {
		go g.resyncLoop()
	}
}

// resyncLoop runs passes while Resync asks for them. One at a time
// (resyncRunning).
func (g *Gateway) resyncLoop() {
	for {
		for g.resyncWanted.Swap(false) {
			g.resyncUntilDone()
		}
		g.resyncRunning.Store(false)
		// A Resync between the Swap and the Store found the loop running.
		if !g.resyncWanted.Load() || !g.resyncRunning.CompareAndSwap(false, true) {
			return
		}
	}
}

// resyncUntilDone re-checks access and catches every topic up, retrying
// what a store error left undone until nothing is.
func (g *Gateway) resyncUntilDone() {
	accessDone := false
	g.hub.mu.Lock()
	topics := make([]*topic, 0, len(g.hub.topics))
	for _, t := range g.hub.topics {
		topics = append(topics, t)
	}
	g.hub.mu.Unlock()
	backoff := g.cfg.ResyncRetry
	for {
		if !accessDone {
			err := g.recheckAccess()
			accessDone = err == nil
			if err != nil {
				g.log.Warn("gateway: resync access", slog.Any(logError, err))
			}
		}
		failed, firstErr := g.catchUpAll(topics)
		if g.ctx.Err() != nil {
			return
		}
		if len(failed) > 0 {
			g.log.Warn("gateway: resync", slog.Int("topics_left", len(failed)), slog.Any(logError, firstErr))
		}
		topics = failed
		if accessDone && len(topics) == 0 {
			g.hub.resyncs.Add(1)
			return
		}
		g.hub.resyncRetries.Add(1)
		select {
		case <-g.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxResyncRetry)
	}
}

// catchUpAll catches up the topics that missed logged events and returns
// those it could not (the store failed), with the first error. It finds
// them with a query per lastEventIDsBatch topics (Engine.LastEventIDs),
// not one per topic: most topics missed nothing.
func (g *Gateway) catchUpAll(topics []*topic) (failed []*topic, firstErr error) {
	fail := func(err error, ts ...*topic) {
		failed = append(failed, ts...)
		if firstErr == nil {
			firstErr = err
		}
	}
	for batch := range slices.Chunk(topics, resyncBatch) {
		if g.ctx.Err() != nil {
			return failed, firstErr
		}
		sids := make([]string, 0, len(batch))
		for _, t := range batch {
			if t.catchesUp() {
				sids = append(sids, t.sid)
			}
		}
		if len(sids) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
		last, err := g.cfg.Engine.LastEventIDs(ctx, sids)
		cancel()
		if err != nil {
			fail(fmt.Errorf("gateway: resync: %w", err), batch...)
			continue
		}
		for _, t := range batch {
			t.mu.Lock()
			behind := last[t.sid] > t.last
			t.mu.Unlock()
			if !behind {
				continue
			}
			if err := t.catchUp(); err != nil {
				fail(err, t)
			}
		}
	}
	return failed, firstErr
}

// resyncBatch is how many topics catchUpAll looks at per query.
const resyncBatch = 500

// catchesUp reports whether catchUp reads the log for t: it has a
// position, and a log (Streams have none).
func (t *topic) catchesUp() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.baseline && !t.removed && t.kind != chorus.KindStream
}

// maxResyncRetry caps the wait between two passes of a Resync that the
// store keeps failing.
const maxResyncRetry = 30 * time.Second

// catchUp delivers the logged events after the topic's position. It
// fails when the store could not be read.
func (t *topic) catchUp() error {
	g := t.h.g
	for {
		t.mu.Lock()
		if !t.baseline || t.removed || t.kind == chorus.KindStream {
			t.mu.Unlock()
			return nil
		}
		after := t.last
		t.mu.Unlock()
		ctx, cancel := context.WithTimeout(g.ctx, 5*time.Second)
		events, err := g.cfg.Engine.Events(ctx, t.service, t.sid, after, 1000)
		cancel()
		if err != nil {
			return fmt.Errorf("gateway: catch up %s: %w", t.sid, err)
		}
		t.mu.Lock()
		for _, e := range events {
			t.acceptLocked(e)
		}
		t.mu.Unlock()
		if len(events) < 1000 {
			return nil
		}
	}
}
