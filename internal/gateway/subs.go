package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/chorus-sync/chorus"
)

// subscriptionsReply is the body of every accepted /v4/Subscriptions
// request.
var subscriptionsReply = []byte(`{"estimated_delivery_in_ms":5000,"max_batch_size":100}`)

type subscriptionsRequest struct {
	EventProtocolVersion int         `json:"event_protocol_version"`
	Action               string      `json:"action"`
	CorrelationID        json.Number `json:"correlation_id"`
	Requests             []struct {
		ObjectSID   string          `json:"object_sid"`
		ObjectType  string          `json:"object_type"`
		LastEventID json.RawMessage `json:"last_event_id"`
		IndexName   string          `json:"index_name"`   // live_query
		QueryString string          `json:"query_string"` // live_query
	} `json:"requests"`
}

type failedEntry struct {
	ObjectSID string    `json:"object_sid"`
	Error     failedErr `json:"error"`
}

type failedErr struct {
	Status  int    `json:"status"`
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// handleSubscriptions establishes or cancels subscriptions. The reply goes
// first; replays and subscription_* notifications follow.
func (c *conn) handleSubscriptions(ctx context.Context, id string, r *request) {
	if r.method != http.MethodPost {
		c.sendHTTP(id, errorResponse(chorus.ErrMethod))
		return
	}
	var req subscriptionsRequest
	if err := json.Unmarshal(r.body, &req); err != nil {
		c.sendHTTP(id, errorResponse(chorus.Wrap(chorus.ErrInvalidJSON, err)))
		return
	}
	corr := req.CorrelationID
	if corr != "" {
		if _, err := strconv.ParseInt(string(corr), 10, 64); err != nil {
			c.sendHTTP(id, errorResponse(chorus.Errorf(chorus.ErrInvalidParameter, "Invalid correlation_id")))
			return
		}
	}
	switch req.Action {
	case "establish", "cancel":
	default:
		c.sendHTTP(id, errorResponse(chorus.Errorf(chorus.ErrInvalidParameter, "Invalid action %q", req.Action)))
		return
	}
	if v := req.EventProtocolVersion; v > 0 {
		c.eventProtocol.Store(int32(min(v, 1<<20)))
	}
	c.sendHTTP(id, response{http.StatusOK, subscriptionsReply})

	if req.Action == "cancel" {
		canceled := make([]map[string]string, 0, len(req.Requests))
		for _, e := range req.Requests {
			c.mu.Lock()
			s := c.subs[e.ObjectSID]
			if s != nil {
				delete(c.subs, e.ObjectSID)
			}
			c.mu.Unlock()
			if s != nil {
				c.g.hub.release(s.t, s)
			} else {
				c.cancelLiveQuery(e.ObjectSID)
			}
			canceled = append(canceled, map[string]string{"object_sid": e.ObjectSID, "object_type": e.ObjectType})
		}
		if len(canceled) > 0 {
			sendSync(c, "subscription_canceled", corr, canceled)
		}
		return
	}

	budget := c.newReplayBudget(ctx)
	defer budget.close()
	objects := 0 // the entries left that may replay
	for _, e := range req.Requests {
		if e.ObjectType != liveQueryType {
			objects++
		}
	}
	for _, e := range req.Requests {
		if e.ObjectType == liveQueryType {
			c.establishLiveQuery(ctx, corr, e.ObjectSID, e.IndexName, e.QueryString)
			continue
		}
		share := budget.share(objects, c.g.cfg.ReplayBatch)
		objects--
		var last *int64
		if len(e.LastEventID) > 0 && string(e.LastEventID) != "null" {
			n, err := strconv.ParseInt(string(e.LastEventID), 10, 64)
			if err != nil || n < 0 {
				c.failed(corr, e.ObjectSID, chorus.Errorf(chorus.ErrInvalidParameter, "Invalid last_event_id"))
				continue
			}
			last = &n
		}
		k, ok := chorus.Kind(e.ObjectType), false
		for _, kk := range chorus.Kinds {
			ok = ok || kk == k
		}
		if !ok {
			c.failed(corr, e.ObjectSID, chorus.ErrNotFound)
			continue
		}
		if !chorus.IsSID(k.Prefix(), e.ObjectSID) {
			c.failed(corr, e.ObjectSID, k.NotFound())
			continue
		}
		err := c.establish(ctx, corr, k, e.ObjectSID, last, share)
		budget.settle(share)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			ce := chorus.AsError(err)
			if ce.Status >= 500 {
				c.logger().Error("gateway: establish subscription", slog.String(logObject, e.ObjectSID), slog.Any(logError, err))
				// Leave it pending: the SDK re-pokes after the delivery
				// estimate.
				continue
			}
			c.failed(corr, e.ObjectSID, ce)
		}
	}
}

// failed sends subscription_failed for sid. It is queued in order with
// the live events parked while a write is in flight (sendEvent): a denial
// from an access re-check must follow the object's events queued before
// it, not overtake them.
func (c *conn) failed(corr json.Number, sid string, e *chorus.Error) {
	sendSyncWith(c, c.sendEvent, "subscription_failed", corr, []failedEntry{{
		ObjectSID: sid, Error: failedErr{Status: e.Status, Code: e.Code, Message: e.Message},
	}})
}

// establish subscribes the connection to one object, replays what the
// client missed after last (nil: nothing) and then goes live. It is
// idempotent for an object already subscribed.
func (c *conn) establish(ctx context.Context, corr json.Number, k chorus.Kind, sid string, last *int64, budget *replayBudget) error {
	h := c.g.hub
	eng := c.g.cfg.Engine

	c.mu.Lock()
	s := c.subs[sid]
	n := len(c.subs)
	c.mu.Unlock()

	if s == nil {
		if n >= chorus.MaxSubscriptionsPerWS {
			return chorus.ErrTooManySubscriptions
		}
		t, err := h.acquire(sid, k)
		if err != nil {
			return chorus.Wrap(chorus.ErrUnavailable, err)
		}
		access := c.accessToken(t)
		// Read the object after the Bus subscription started: its
		// LastEventID is then a valid ordering baseline for the topic
		// (every later change reaches the topic, which is why a recent
		// row from memory will do).
		obj, err := eng.SubscribableRecent(ctx, c.actor, c.svc, k, sid)
		if err != nil {
			h.release(t, nil)
			return err
		}
		t.setBaseline(obj)
		s = &subscription{c: c, t: t, sid: sid, kind: k, delivered: obj.LastEventID, identity: c.actor.Identity}
		t.mu.Lock()
		if old := t.subs[c]; old != nil {
			old.gone = true // cannot happen: c.subs had none
		}
		t.subs[c] = s
		t.mu.Unlock()
		c.mu.Lock()
		c.subs[sid] = s
		c.mu.Unlock()
		if err := c.recheckIfChanged(ctx, s, access); err != nil {
			return err
		}
		return c.catchUp(ctx, corr, s, obj, last, budget)
	}

	obj, err := eng.Subscribable(ctx, c.actor, c.svc, k, sid)
	if err != nil {
		if c.forget(s) {
			h.release(s.t, s)
		}
		return err
	}
	return c.catchUp(ctx, corr, s, obj, last, budget)
}

// replayBudget bounds the replays of one subscription request: at most
// ReplayLimit events, and ReplayTime in all, waiting for the client
// included. A request for many objects far behind, or a client that reads
// slowly, thus holds the session's worker, and the requests queued behind
// it (a token update among them: twilsock gives a request 20 s), for a
// bounded time. What it leaves is answered "interrupted", and the client
// asks again.
type replayBudget struct {
	events  int
	granted int // what share gave (settle)
	until   time.Time
	parent  context.Context
	// wait ends at until, or with the session. Made by the first replay
	// that waits for its client: most requests (a connect's first
	// subscription) replay nothing, and need no timer.
	wait   context.Context
	cancel context.CancelFunc
}

func (c *conn) newReplayBudget(ctx context.Context) *replayBudget {
	return &replayBudget{events: c.g.cfg.ReplayLimit, until: time.Now().Add(c.g.cfg.ReplayTime), parent: ctx}
}

func (b *replayBudget) spent() bool { return b.events <= 0 || !time.Now().Before(b.until) }

// share is the budget of the next of n objects of the request: an equal
// share of what is left (at least a batch, or what is left), so that one
// object far behind leaves room for the others. It used to spend a
// request's whole budget, and the objects after it, a few events behind,
// were answered "interrupted" with nothing, round after round, their live
// events held until it had caught up (26 s behind 25,000 list items). What
// an object leaves goes to the next; settle charges b with what it spent.
func (b *replayBudget) share(n, batch int) *replayBudget {
	now := time.Now()
	s := &replayBudget{events: b.events, until: b.until, parent: b.parent, granted: b.events}
	if n > 1 && b.events > 0 {
		s.events = max(b.events/n, min(b.events, batch))
		s.granted = s.events
	}
	if left := b.until.Sub(now); n > 1 && left > 0 {
		s.until = now.Add(max(left/time.Duration(n), min(left, minReplayShareTime)))
	}
	return s
}

// settle charges b with what share s spent, and ends s.
func (b *replayBudget) settle(s *replayBudget) {
	b.events -= s.granted - s.events
	s.close()
}

// minReplayShareTime is the least time share gives an object, unless
// less is left.
const minReplayShareTime = 500 * time.Millisecond

// waitCtx is the context a replay waits for its client under.
func (b *replayBudget) waitCtx() context.Context {
	if b.wait == nil {
		b.wait, b.cancel = context.WithDeadline(b.parent, b.until)
	}
	return b.wait
}

func (b *replayBudget) close() {
	if b.cancel != nil {
		b.cancel()
	}
}

// replayHoldPoll is how often a replay held by an access re-check looks
// whether the re-check has ended.
const replayHoldPoll = 10 * time.Millisecond

// sleepCtx sleeps d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// replayStep is what became of a replayed event (sendReplayed).
type replayStep int

const (
	replaySent replayStep = iota
	replayHeld            // an access re-check holds the subscription: not sent
	replayEnd             // canceled, denied or revoked: not sent, and nothing more is
)

// sendReplayed queues one replayed event unless s may not have it now.
// It runs under t.mu, as a live delivery does, so that a hold or a denial
// from an access re-check, or a revocation, falls between two events and
// stops the replay there. A subscription ended by its object's removal
// goes on: the log holds the removal, which the client must get.
func (c *conn) sendReplayed(s *subscription, f *liveEvent) replayStep {
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case c.heldBack() || (s.gone && !t.removed):
		return replayEnd
	case s.held != 0 && !s.gone:
		return replayHeld
	}
	c.sendReplay(f)
	return replaySent
}

// catchUp replays events after the client's position until the
// subscription has caught up with the topic, then makes it live and sends
// subscription_established. Replayed events are queued only as fast as the
// client reads them (sendQueue.waitRoom), and wait while an access re-check
// holds the subscription. When the request's budget is spent, the replay
// stops with replay_status "interrupted" and the subscription stays off the
// live stream: every SDK generation (0.5 to 4.x, and the Go client) then
// subscribes again from the last event it received, so a client far behind
// is caught up in steps, with its other requests served between them, and
// never skips an event. Each step that reads the store runs in one of the
// gateway's replay slots (Config.ReplaySlots), which bounds the memory of
// many replays at once; waiting for one counts against the budget.
func (c *conn) catchUp(ctx context.Context, corr json.Number, s *subscription, obj *chorus.Object, last *int64, budget *replayBudget) error {
	t := s.t
	if s.kind == chorus.KindStream {
		t.mu.Lock()
		s.live = true
		c.sendEstablished(corr, s, "completed", nil) // under t.mu: see below
		t.mu.Unlock()
		return nil
	}

	t.mu.Lock()
	if s.gone {
		t.mu.Unlock()
		return s.kind.NotFound()
	}
	pos := obj.LastEventID // no position: start from now
	if last != nil {
		pos = *last
	}
	if s.live && s.delivered > pos {
		pos = s.delivered // never re-send what this connection has seen
	}
	s.live = false
	s.delivered = pos
	t.mu.Unlock()

	eng := c.g.cfg.Engine
	status := "completed"
	chase := false // removed meanwhile: read on to the removal, budget or not
	for round := 0; ; round++ {
		var events []*chorus.Event
		release := func() {}
		if round == 0 || chase || !budget.spent() {
			// Every round may synthesize catch-up events from current
			// state when the log no longer reaches back to pos (a trimmed
			// log, or an imported object): a list or map with more
			// changed items than one batch needs several such rounds.
			// Rounds after the first look past obj's snapshot, at
			// whatever the store holds now.
			snap := obj
			if round > 0 {
				cp := *obj
				cp.LastEventID = math.MaxInt64
				snap = &cp
			}
			if pos < snap.LastEventID {
				// Something to replay: in one of the gateway's slots.
				var ok bool
				if release, ok = c.g.replaySlot(c.replayWait(budget, chase)); !ok {
					if c.ctx.Err() != nil {
						return c.ctx.Err()
					}
					// The budget ran out waiting.
					switch c.interruptReplay(corr, s, pos) {
					case replayRemoved:
						chase = true // the client must get the removal
						continue
					default:
						return nil
					}
				}
			}
			limit := c.g.cfg.ReplayBatch
			if !chase {
				limit = max(1, min(limit, budget.events))
			}
			var err error
			if events, _, err = eng.Replay(ctx, snap, pos, limit); err != nil {
				release()
				return err
			}
		}
		end, progressed := c.replayEvents(s, events, &pos, corr, budget, chase)
		release()
		switch end {
		case batchStop:
			return ctx.Err()
		case batchRemoved:
			if c.forget(s) {
				c.g.hub.release(t, s)
			}
			return nil // the client learned of the removal from the event
		}
		held := end == batchHeld
		t.mu.Lock()
		if s.gone {
			gone := !t.removed || (round > 0 && !progressed)
			t.mu.Unlock()
			if gone {
				return nil
			}
			chase = true
			continue
		}
		// Caught up when the topic has delivered nothing beyond pos; from
		// here on the topic delivers every later event in order. If the
		// store has nothing more although the topic is ahead, trust the
		// topic rather than loop.
		if !held && (t.last <= pos || (round > 0 && !progressed && !budget.spent())) {
			s.delivered = max(s.delivered, pos)
			s.live = true
			// Queued under t.mu: the topic delivers to s from here on,
			// and a live event queued before subscription_established
			// reached the client ahead of a position that did not
			// include it (TestSubscribeDuringWrites, 1 run in 20).
			c.sendEstablished(corr, s, status, s.delivered)
			t.mu.Unlock()
			return nil
		}
		if held || budget.spent() {
			// Not live: the client's next establish replays from pos.
			s.delivered = pos
			status = "interrupted"
			t.mu.Unlock()
			c.g.replaysInterrupted.Add(1)
			break
		}
		t.mu.Unlock()
	}
	c.sendEstablished(corr, s, status, pos)
	return nil
}

// replaySlot waits under ctx for one of the gateway's replay slots
// (Config.ReplaySlots); release gives it back. False when ctx ended first.
func (g *Gateway) replaySlot(ctx context.Context) (release func(), ok bool) {
	select {
	case g.replaySlots <- struct{}{}:
		return func() { <-g.replaySlots }, true
	case <-ctx.Done():
		return func() {}, false
	}
}

// replayWait is the context a replay step waits under, for a slot or for
// its client: the budget's, or the session's when it chases a removal.
func (c *conn) replayWait(budget *replayBudget, chase bool) context.Context {
	if chase {
		return c.ctx
	}
	return budget.waitCtx() // waiting counts against the budget
}

// interruptReplay ends s's replay at pos with replay_status "interrupted",
// off the live stream, and the client subscribes again from pos; unless
// the subscription ended meanwhile (replayGone: nothing is sent), or its
// object was removed (replayRemoved: the caller replays on to the
// removal, as catchUp does).
func (c *conn) interruptReplay(corr json.Number, s *subscription, pos int64) replayOutcome {
	t := s.t
	t.mu.Lock()
	switch {
	case s.gone && t.removed:
		t.mu.Unlock()
		return replayRemoved
	case s.gone:
		t.mu.Unlock()
		return replayGone
	}
	s.delivered = pos
	t.mu.Unlock()
	c.g.replaysInterrupted.Add(1)
	c.sendEstablished(corr, s, "interrupted", pos)
	return replayInterrupted
}

// replayOutcome is what interruptReplay did.
type replayOutcome int

const (
	replayInterrupted replayOutcome = iota
	replayGone
	replayRemoved
)

// sendEstablished queues s's subscription_established at position pos (nil:
// none, a stream's). A subscription made live is established under its
// topic's lock, so that the topic's live events follow it.
func (c *conn) sendEstablished(corr json.Number, s *subscription, status string, pos any) {
	sendSync(c, "subscription_established", corr, []map[string]any{{
		"object_sid": s.sid, "object_type": string(s.kind), "replay_status": status, "last_event_id": pos,
	}})
}

// batchEnd is how replayEvents ended.
type batchEnd int

const (
	batchDone    batchEnd = iota // sent what the budget allowed
	batchHeld                    // an access re-check outlasted the budget: not sent
	batchRemoved                 // sent the object's removal
	batchStop                    // the subscription or the session ended: nothing more is sent
)

// replayEvents sends s the events after *pos, in the request's
// correlation, as fast as the client reads them and while budget lasts
// (when chase, up to the object's removal whatever the budget). It moves
// *pos past every event it sends and every one that is not sent to
// clients (an access change, a creation), and reports whether it did.
func (c *conn) replayEvents(s *subscription, events []*chorus.Event, pos *int64, corr json.Number, budget *replayBudget, chase bool) (end batchEnd, progressed bool) {
	wait := func() context.Context { return c.replayWait(budget, chase) }
	for _, e := range events {
		if e.ID <= *pos {
			continue
		}
		if !e.Type.Realtime() {
			*pos, progressed = e.ID, true
			continue
		}
		if budget.spent() && !chase && !e.Type.Removal() {
			return batchDone, progressed
		}
		if !c.q.waitRoom(wait()) {
			if c.ctx.Err() != nil {
				return batchStop, progressed
			}
			return batchDone, progressed // the budget's time ran out
		}
		f := replayFrame(e, c.base, corr)
		step := c.sendReplayed(s, f)
		for step == replayHeld && sleepCtx(wait(), replayHoldPoll) {
			// The re-check ends in a release, which lets the replay go
			// on, or a denial, which ends it.
			step = c.sendReplayed(s, f)
		}
		switch {
		case step == replayEnd || c.ctx.Err() != nil:
			return batchStop, progressed
		case step == replayHeld:
			return batchHeld, progressed
		}
		c.g.replayed.Add(1)
		*pos, progressed = e.ID, true
		budget.events--
		if e.Type.Removal() {
			return batchRemoved, progressed
		}
	}
	return batchDone, progressed
}
