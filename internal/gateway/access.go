package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/protocol"
)

// Live authorization: access changes reach the gateways of every node as
// control events on the Bus (chorus.EventType.Control), published by the
// engine after the change committed. A gateway never trusts their
// content beyond naming what to re-check: it re-reads the committed state
// and ends what is no longer allowed.
//
//   - EventPermissionChanged arrives on the object's topic: the topic
//     holds its subscribers of that identity at once (in the Bus
//     callback, before any later event of the object) and re-checks them
//     off the Bus goroutine. Denied, they end; allowed, they get what was
//     held from the log, in order, and go on (holdLocked, release).
//     Stream subscribers are not held (no ids to resume from).
//   - EventServiceChanged arrives on chorus.ControlTopic: the sessions of
//     the service get the re-read service (its ACL switch applies to their
//     next request) and, with ACLs on, all their subscriptions are
//     re-checked.
//   - EventKeysRevoked arrives on chorus.ControlTopic: the sessions whose
//     token an API key of the list signed are closed (RevokeKeys).
//
// A subscription that lost read access gets subscription_failed with 403
// / 54007 (the SDK reports it to the object's "failure" listeners) and
// receives nothing after it. Live queries (insights.go) follow their Map's
// read access the same way: they ride on the Map's topic, so a permission
// change of the Map re-checks them with its subscriptions (denyQuery).
//
// Deleting a service publishes EventServiceChanged too: the re-read finds
// no service, and the sessions of that service are closed like those of
// a revoked key (endService).

// recheckTimeout bounds one re-check's store read; recheckParallel is
// how many sessions are re-checked at once after a service change.
const (
	recheckTimeout  = 10 * time.Second
	recheckParallel = 4
)

// revokeGrace is how long a revoked session has to close after its
// twilsock close, before the gateway closes it.
const revokeGrace = 3 * time.Second

var errRevoked = errors.New("gateway: API key revoked")

// subscribeControl listens to the cluster's control topic.
func (g *Gateway) subscribeControl() {
	if g.cfg.Engine == nil || g.cfg.Engine.Bus() == nil {
		return
	}
	cancel, err := g.cfg.Engine.Bus().Subscribe(chorus.ControlTopic, func(e *chorus.Event) {
		if e.Type == chorus.EventServiceChanged {
			g.noteServiceChange(e.ServiceSID) // takes effect at once: servicegen.go
		}
		// Bus callbacks must not block; the handlers read the store.
		go func() {
			if d := g.controlDelay.Load(); d > 0 { // tests: a slow handler
				time.Sleep(time.Duration(d))
			}
			g.onControl(e)
		}()
	})
	if err != nil {
		// Without it, access changes apply at the next Resync only.
		g.log.Error("gateway: subscribe to control events", slog.Any(logError, err))
		return
	}
	g.controlCancel = cancel
}

func (g *Gateway) onControl(e *chorus.Event) {
	switch e.Type {
	case chorus.EventServiceChanged:
		g.serviceChangedMerged(e.AccountSID, e.ServiceSID)
	case chorus.EventResync:
		g.Resync() // a node could not publish for a while
	case chorus.EventCredentialsChanged:
		// An API key's secret may have changed in place (a node started
		// with a new TWILIO_API_SECRET): the key as last read, cached or
		// kept by a session for renewals, is not to be trusted any more,
		// and a session whose token the old secret signed ends.
		g.forgetKeys()
		g.recheckSecretsMerged()
	case chorus.EventKeysRevoked:
		g.forgetKeys() // whatever the event says
		var keys []string
		if len(e.Data) > 0 {
			if err := json.Unmarshal(e.Data, &keys); err != nil {
				g.log.Warn("gateway: malformed keys_revoked event", slog.Any(logError, err))
				return
			}
		}
		g.revokeChecked(e.AccountSID, keys)
	}
}

// sessions returns the live sessions for which match (called with the
// session's mu held) is true.
func (g *Gateway) sessions(match func(c *conn) bool) []*conn {
	g.mu.Lock()
	all := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		all = append(all, c)
	}
	g.mu.Unlock()
	out := all[:0]
	for _, c := range all {
		c.mu.Lock()
		ok := c.initialized && !c.offline && match(c)
		c.mu.Unlock()
		if ok {
			out = append(out, c)
		}
	}
	return out
}

// serviceChangedMerged runs serviceChanged for a service, one pass at a
// time per service: changes that arrive while a pass runs are merged into
// one more pass. A burst of updates of one service (anyone with its API
// key can make them) costs every node at most two passes over its
// sessions, not one each.
func (g *Gateway) serviceChangedMerged(accountSID, serviceSID string) {
	g.svcPassMu.Lock()
	if again, running := g.svcPass[serviceSID]; running {
		if !again {
			g.svcPass[serviceSID] = true
		}
		g.svcPassMu.Unlock()
		return
	}
	if g.svcPass == nil {
		g.svcPass = make(map[string]bool)
	}
	g.svcPass[serviceSID] = false
	g.svcPassMu.Unlock()
	for {
		g.serviceChanged(accountSID, serviceSID)
		g.svcPassMu.Lock()
		if !g.svcPass[serviceSID] {
			delete(g.svcPass, serviceSID)
			g.svcPassMu.Unlock()
			return
		}
		g.svcPass[serviceSID] = false
		g.svcPassMu.Unlock()
	}
}

// serviceChanged refreshes the service of its sessions and, if that turned
// ACLs on, re-checks their subscriptions (afterServiceRead).
func (g *Gateway) serviceChanged(accountSID, serviceSID string) {
	g.svcPasses.Add(1)
	g.cfg.Engine.ForgetServices() // every read from here on sees the change
	g.controlEpoch.Add(1)         // before the snapshot: see checkNewSession
	conns := g.sessions(func(c *conn) bool { return c.online.svc.SID == serviceSID })
	if len(conns) == 0 {
		return
	}
	// Read and store under svcMu, so that a read made before a later
	// change cannot overwrite what a read after it stored.
	gen := g.serviceCounter(serviceSID).Load()
	g.svcMu.Lock()
	ctx, cancel := context.WithTimeout(g.ctx, recheckTimeout)
	svc, err := g.cfg.Engine.Service(ctx, accountSID, serviceSID)
	cancel()
	if err == nil {
		for _, c := range conns {
			c.adoptService(svc, gen)
		}
	}
	g.svcMu.Unlock()
	if err != nil {
		if chorus.AsError(err).Status != 404 {
			// Its sessions stay stale (held, and their requests read the
			// service first) until a read succeeds: Resync retries.
			g.log.Warn("gateway: re-read changed service", slog.String(logService, serviceSID), slog.Any(logError, err))
			g.Resync()
			return
		}
		// Deleted: the sessions of that service (in that account) end.
		for _, c := range conns {
			if c.currentService().AccountSID == accountSID {
				c.endService()
			}
		}
		return
	}
	var eg errgroup.Group
	eg.SetLimit(recheckParallel)
	for _, c := range conns {
		eg.Go(func() error {
			c.afterServiceRead(g.ctx, svc)
			return nil
		})
	}
	eg.Wait()
}

// setService makes svc the session's service from its next request on,
// and marks subscriptions being established now for a re-check.
func (c *conn) setService(svc *chorus.Service) {
	c.svcLatest.Store(svc)
	c.accessGen.Add(1)
}

// currentService is the session's service as last known.
func (c *conn) currentService() *chorus.Service { return c.svcLatest.Load() }

// refreshService lets the worker pick up a changed service.
func (c *conn) refreshService() {
	if s := c.svcLatest.Load(); s != nil && s != c.svc {
		c.svc = s
	}
}

// actorOf is the session's engine actor (safe off the worker).
func (c *conn) actorOf() engine.Actor {
	c.mu.Lock()
	defer c.mu.Unlock()
	return engine.Actor{Identity: c.online.identity, EndpointID: c.id}
}

// recheckAll re-checks every subscription and live query of the session.
func (c *conn) recheckAll(ctx context.Context, svc *chorus.Service) {
	subs := c.subscriptions()
	c.mu.Lock()
	queries := make([]*liveQuery, 0, len(c.queries))
	for _, lq := range c.queries {
		queries = append(queries, lq)
	}
	c.mu.Unlock()
	for _, s := range subs {
		if ctx.Err() != nil {
			return
		}
		c.recheck(ctx, svc, s)
	}
	for _, lq := range queries {
		if ctx.Err() != nil {
			return
		}
		c.recheckQuery(ctx, svc, lq)
	}
}

// recheckQuery ends lq with a denial if the session may no longer read
// its Map. A store error is retried in the background, with backoff, until
// a re-check completes or lq or the session ends: nothing else would look
// at lq's access again before the next change. A re-check that finds the
// object gone leaves lq to its removal event.
func (c *conn) recheckQuery(ctx context.Context, svc *chorus.Service, lq *liveQuery) {
	if c.checkQuery(ctx, svc, lq) {
		return
	}
	lq.failedChecks.Add(1)
	if !lq.retrying.CompareAndSwap(false, true) {
		return // the running retry sees this failure and tries again
	}
	go func() {
		wait := c.g.cfg.ResyncRetry
		for {
			failed := lq.failedChecks.Load()
			select {
			case <-c.ctx.Done():
				lq.retrying.Store(false)
				return
			case <-time.After(wait):
			}
			if c.queryGone(lq) || c.checkQuery(c.ctx, c.currentService(), lq) {
				lq.retrying.Store(false)
				// A check that failed meanwhile, after this one read the
				// state, found this retry running and left it to it.
				if lq.failedChecks.Load() == failed || !lq.retrying.CompareAndSwap(false, true) {
					return
				}
			}
			wait = min(2*wait, maxResyncRetry)
		}
	}()
}

// checkQuery re-checks lq's access once: it ends lq if read access was
// withdrawn, and reports false when the store could not answer.
func (c *conn) checkQuery(ctx context.Context, svc *chorus.Service, lq *liveQuery) (done bool) {
	ctx, cancel := context.WithTimeout(ctx, recheckTimeout)
	defer cancel()
	_, err := c.g.cfg.Engine.Subscribable(ctx, c.actorOf(), svc, chorus.KindMap, lq.mapSID)
	if err == nil {
		return true
	}
	e := chorus.AsError(err)
	switch {
	case e.Status == 403:
		c.denyQuery(lq, e)
	case e.Status >= 500:
		c.logger().Warn("gateway: re-check live query", slog.String(logObject, lq.mapSID), slog.Any(logError, err))
		return false
	}
	return true
}

// queryGone reports whether lq has ended.
func (c *conn) queryGone(lq *liveQuery) bool {
	lq.t.mu.Lock()
	defer lq.t.mu.Unlock()
	return lq.gone
}

// denyQuery ends lq because read access to its Map was withdrawn: it
// emits nothing more and leaves the connection. If the SDK subscribed to
// it, the SDK gets subscription_failed 403 / 54007 for the query_id
// (after the frames already emitted), which it reports to the LiveQuery's
// "failure" listeners; a query the SDK has not subscribed to yet fails
// that subscription with the denial (establishLiveQuery), and its
// re-subscriptions fail while the access is missing.
func (c *conn) denyQuery(lq *liveQuery, e *chorus.Error) {
	t := lq.t
	t.mu.Lock()
	if lq.gone {
		t.mu.Unlock()
		return
	}
	live := lq.state == lqLive
	lq.gone, lq.denied = true, e
	lq.keys, lq.buf, lq.pending, lq.pendingBytes, lq.window = nil, nil, nil, 0, nil
	if live {
		c.failed("null", lq.id, e)
	}
	t.mu.Unlock()
	c.logger().Info("gateway: read access withdrawn; live query ended",
		slog.String(logObject, lq.mapSID), slog.Int("code", e.Code))
	// Not registered yet (being opened): its opener finds it gone.
	c.dropLiveQuery(lq)
}

// recheckQueryIfChanged re-runs the authorization of a live query just
// registered on the connection if access changed since lq.access was
// taken (a change whose re-check did not see it yet). Worker only.
func (c *conn) recheckQueryIfChanged(ctx context.Context, lq *liveQuery) error {
	if c.accessToken(lq.t) == lq.access {
		return nil
	}
	c.refreshService()
	if _, err := c.g.cfg.Engine.Subscribable(ctx, c.actor, c.svc, chorus.KindMap, lq.mapSID); err != nil {
		c.dropLiveQuery(lq)
		return err
	}
	return nil
}

// recheck ends s with a denial if the session may no longer read its
// object. Other failures keep it: a missing object ends it by its removal
// event, and a store error leaves it to the next re-check.
func (c *conn) recheck(ctx context.Context, svc *chorus.Service, s *subscription) {
	ctx, cancel := context.WithTimeout(ctx, recheckTimeout)
	defer cancel()
	_, err := c.g.cfg.Engine.Subscribable(ctx, c.actorOf(), svc, s.kind, s.sid)
	if err == nil {
		return
	}
	e := chorus.AsError(err)
	switch {
	case e.Status == 403:
		c.deny(s, e)
	case e.Status >= 500:
		c.logger().Warn("gateway: re-check subscription", slog.String(logObject, s.sid), slog.Any(logError, err))
	}
}

// deny ends s because read access was withdrawn: it stops receiving
// events, then the client gets subscription_failed (after any event
// already queued). The correlation id is null, which the SDK matches
// against an established subscription (no request pending).
func (c *conn) deny(s *subscription, e *chorus.Error) {
	if !c.forget(s) {
		return
	}
	c.g.hub.release(s.t, s)
	c.logger().Info("gateway: read access withdrawn; subscription ended",
		slog.String(logObject, s.sid), slog.Int("code", e.Code))
	c.failed("null", s.sid, e)
}

// holdLocked stops live events to the topic's subscriptions of identity
// ("" = all) until the re-check of access generation gen releases them:
// called in the Bus callback of a permission change, so that no event
// after the change reaches a subscriber whose access it withdrew. Stream
// subscriptions are not held: their messages have no ids to resume from.
// t.mu held.
func (t *topic) holdLocked(identity string, gen uint64) {
	if t.kind == chorus.KindStream {
		return
	}
	for _, s := range t.subs {
		if !s.gone && (identity == "" || s.identity == identity) {
			s.held = gen
		}
	}
}

// permissionChanged re-checks the topic's subscribers that have identity
// ("" = all of them), held for access generation gen, and releases those
// that may still read. It runs off the Bus goroutine.
func (t *topic) permissionChanged(identity string, gen uint64) {
	t.mu.Lock()
	subs := make([]*subscription, 0, len(t.subs))
	for _, s := range t.subs {
		// Held for a later change, or for the service, its own re-check
		// covers it: no store read for one that is already superseded.
		if !s.gone && (identity == "" || s.identity == identity) && (s.kind == chorus.KindStream || s.held == gen) {
			subs = append(subs, s)
		}
	}
	queries := make([]*liveQuery, 0, len(t.queries))
	for lq := range t.queries {
		if !lq.gone {
			queries = append(queries, lq)
		}
	}
	t.mu.Unlock()
	ctx := t.h.g.ctx
	mine := func(c *conn) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return identity == "" || c.online.identity == identity
	}
	for _, s := range subs {
		if ctx.Err() != nil {
			return
		}
		s.c.recheckHeld(ctx, s, gen)
	}
	for _, lq := range queries {
		if ctx.Err() != nil {
			return
		}
		if c := lq.c; mine(c) {
			c.recheckQuery(ctx, c.currentService(), lq)
		}
	}
}

// recheckHeld re-checks a subscription held for access generation gen:
// denied, it ends; allowed, it gets the events held back and is released.
// A store error is retried (the subscription stays held: no event
// reaches it unchecked).
func (c *conn) recheckHeld(ctx context.Context, s *subscription, gen uint64) {
	wait := c.g.cfg.ResyncRetry
	for {
		svc := c.currentService()
		rctx, cancel := context.WithTimeout(ctx, recheckTimeout)
		_, err := c.g.cfg.Engine.Subscribable(rctx, c.actorOf(), svc, s.kind, s.sid)
		cancel()
		e := chorus.AsError(err)
		switch {
		case err == nil:
			err = s.t.release(ctx, s, gen, svc)
			if err == nil {
				return
			}
		case e.Status == 403:
			c.deny(s, e)
			return
		case e.Status < 500:
			return // gone (404): its removal event ends it
		}
		c.logger().Warn("gateway: re-check subscription", slog.String(logObject, s.sid), slog.Any(logError, err))
		select {
		case <-ctx.Done():
			return
		case <-c.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, maxResyncRetry)
	}
}

// release sends s the events it was held back from, from the store's log,
// and lets live events reach it again. It stops without releasing when a
// later change holds s (its own re-check releases it): a later permission
// change, or a change of the session's service since svc, the service
// the re-check used. Only events up to the topic's position are sent from
// the log: later ones come through the topic, after any access change
// this node hears of before them. A store error leaves s held and is
// returned.
func (t *topic) release(ctx context.Context, s *subscription, gen uint64, svc *chorus.Service) error {
	g := t.h.g
	// superseded reports (t.mu held) whether s is no longer this
	// release's to let go, handing it to the service's re-check if the
	// service changed.
	superseded := func() bool {
		if s.held != gen || s.gone {
			return true
		}
		if s.c.svcLatest.Load() != svc || s.c.serviceStale() {
			s.held = heldForService
			s.c.svcHolds.Store(true)
			go s.c.releaseServiceHolds(g.ctx, s.c.svcLatest.Load())
			return true
		}
		return false
	}
	for {
		t.mu.Lock()
		if superseded() {
			t.mu.Unlock()
			return nil
		}
		if !s.live || s.delivered >= t.last {
			// Caught up; or being established, whose replay reads the log
			// up to the topic's position before it goes live.
			s.held = 0
			t.mu.Unlock()
			return nil
		}
		after := s.delivered
		t.mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, recheckTimeout)
		events, err := g.cfg.Engine.Events(rctx, t.service, t.sid, after, 1000)
		cancel()
		if err != nil {
			g.log.Warn("gateway: events held back during a re-check", slog.String(logObject, t.sid), slog.Any(logError, err))
			return err
		}
		t.mu.Lock()
		if superseded() {
			t.mu.Unlock()
			return nil
		}
		if !s.live {
			s.held = 0 // re-established meanwhile: its replay sends them
			t.mu.Unlock()
			return nil
		}
		sent := false
		for _, e := range events {
			if e.ID <= s.delivered {
				continue
			}
			if e.ID > t.last {
				break // the topic delivers it, in order with access changes
			}
			s.delivered = e.ID
			sent = true
			if e.Type.Realtime() && !s.c.heldBack() {
				s.c.sendLive(liveFrame(e, s.c.base))
			}
		}
		if !sent && s.delivered < t.last {
			// The log no longer has them (trimmed): what was missed is
			// lost to this subscriber as it is to one that reconnects.
			s.delivered = t.last
		}
		t.mu.Unlock()
	}
}

// accessGeneration is a topic's count of permission changes; see
// recheckIfChanged.
func (t *topic) accessGeneration() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.access
}

// accessToken captures the access generations before a subscription's
// authorization is read.
type accessToken struct{ topic, conn uint64 }

func (c *conn) accessToken(t *topic) accessToken {
	return accessToken{t.accessGeneration(), c.accessGen.Load()}
}

// recheckIfChanged re-runs the authorization of a subscription just
// registered if access changed while it was being established (a change
// whose re-check did not see it yet). Worker only.
func (c *conn) recheckIfChanged(ctx context.Context, s *subscription, before accessToken) error {
	if c.accessToken(s.t) == before {
		return nil
	}
	c.refreshService()
	if _, err := c.g.cfg.Engine.Subscribable(ctx, c.actor, c.svc, s.kind, s.sid); err != nil {
		if c.forget(s) {
			c.g.hub.release(s.t, s)
		}
		return err
	}
	return nil
}

// RevokeKeys closes, on every node, the live sessions of accountSID whose
// access token was signed by one of keySIDs (the token's iss); with no
// keySIDs, every session of the account. Call it after the keys were
// deleted from the store: this node closes its sessions at once, while
// the other nodes, told through the Bus, close only those whose key the
// store no longer has (a Bus event names what to check, it is not
// trusted). Each session gets the twilsock close of an expired token
// (410, 20103): the SDK stops and emits tokenExpired, and an init with the
// same token is refused because the key no longer verifies. An error means the other
// nodes could not be told (the Bus is down: they re-check keys when it
// is back, see Resync).
func (g *Gateway) RevokeKeys(ctx context.Context, accountSID string, keySIDs ...string) error {
	g.forgetKeys()
	g.revokeLocal(accountSID, keySIDs)
	if g.cfg.Engine.Bus() == nil {
		return nil
	}
	data, err := json.Marshal(append([]string{}, keySIDs...))
	if err != nil {
		return fmt.Errorf("gateway: revoke keys: %w", err)
	}
	err = g.cfg.Engine.Bus().Publish(ctx, &chorus.Event{
		Type: chorus.EventKeysRevoked, AccountSID: accountSID, ObjectSID: chorus.ControlTopic,
		Data: data, DateCreated: time.Now().UTC(), FromREST: true,
	})
	if err != nil {
		return fmt.Errorf("gateway: revoke keys: %w", err)
	}
	return nil
}

// forgetKeys records that keys may have changed (keyGen) and empties the
// API key cache (keys.go).
func (g *Gateway) forgetKeys() {
	g.keysHeard.Add(1)
	if g.keys != nil {
		g.keys.invalidate()
	}
}

// revokeChecked closes this node's sessions signed by keys of accountSID
// whose key the store no longer has: a keys_revoked event from the Bus
// only names what to look up.
func (g *Gateway) revokeChecked(accountSID string, keys []string) {
	g.controlEpoch.Add(1) // before the snapshot: see checkNewSession
	conns := g.sessions(func(c *conn) bool {
		return c.account == accountSID && (len(keys) == 0 || slices.Contains(keys, c.keySID))
	})
	ctx := g.ctx
	valid := make(map[string]bool)
	for _, c := range conns {
		c.mu.Lock()
		key := c.keySID
		c.mu.Unlock()
		ok, seen := valid[key]
		if !seen {
			ok, _ = g.keyValid(ctx, accountSID, key) // a store error: Resync decides
			valid[key] = ok
		}
		if !ok {
			c.revoke()
		}
	}
}

// recheckSecretsMerged runs recheckKeys for a credentials_changed event,
// one pass at a time: events that arrive during a pass (a tenant creating
// keys in a loop) make one more pass, not one each.
func (g *Gateway) recheckSecretsMerged() {
	g.keyPassMu.Lock()
	if g.keyPassRunning {
		g.keyPassAgain = true
		g.keyPassMu.Unlock()
		return
	}
	g.keyPassRunning = true
	g.keyPassMu.Unlock()
	for {
		if _, err := g.recheckKeys(g.ctx); err != nil {
			g.log.Warn("gateway: re-check API keys; a later change or Resync checks again", slog.Any(logError, err))
		}
		g.keyPassMu.Lock()
		if !g.keyPassAgain {
			g.keyPassRunning = false
			g.keyPassMu.Unlock()
			return
		}
		g.keyPassAgain = false
		g.keyPassMu.Unlock()
	}
}

// recheckKeys ends this node's sessions whose token was verified with a
// key the store no longer has as it was (checkKey: deleted, moved to
// another account, or with another secret, changed in place by a node
// started with a new TWILIO_API_SECRET) and returns the others. Each key
// is read once. A key the store cannot read leaves its sessions alone, and
// the first such error is returned.
func (g *Gateway) recheckKeys(ctx context.Context) (live []*conn, err error) {
	// Before the snapshot: see checkNewSession.
	g.controlEpoch.Add(1)
	current := make(map[string]*chorus.APIKey) // nil: gone
	failed := make(map[string]bool)
	for _, c := range g.sessions(func(*conn) bool { return true }) {
		if ctx.Err() != nil {
			return live, ctx.Err()
		}
		c.mu.Lock()
		sid, had, account := c.keySID, c.key, c.account
		c.mu.Unlock()
		k, seen := current[sid]
		if !seen && !failed[sid] {
			var kerr error
			if k, kerr = g.currentKey(ctx, sid); kerr != nil {
				failed[sid] = true
				if err == nil {
					err = fmt.Errorf("gateway: re-check key %s: %w", sid, kerr)
				}
			} else {
				current[sid] = k
			}
		}
		if failed[sid] || !c.checkKey(k, account, had) {
			live = append(live, c)
		}
	}
	live, merr := g.recheckAuthTokenMarks(ctx, live)
	if err == nil {
		err = merr
	}
	return live, err
}

// recheckAuthTokenMarks ends the sessions of conns whose access token was
// minted with an auth token that its account no longer has
// (engine.AuthTokenMark; the account read from the store once per pass),
// and returns the others. A store error leaves the session alone and is
// returned (the first), so that Resync tries again.
func (g *Gateway) recheckAuthTokenMarks(ctx context.Context, conns []*conn) (live []*conn, err error) {
	type signer struct{ account, keySecret string }
	marks := make(map[signer][]string) // the account's auth tokens' marks for tokens the key signed
	failed := make(map[signer]bool)
	for _, c := range conns {
		c.mu.Lock()
		account, mark, key := c.account, c.tokenMark, c.key
		c.mu.Unlock()
		s := signer{account, keySecret(key)}
		if mark == "" || key == nil || failed[s] {
			live = append(live, c)
			continue
		}
		current, seen := marks[s]
		if !seen {
			var rerr error
			if current, rerr = g.cfg.Engine.AuthTokenMarks(ctx, account, key.Secret); rerr != nil {
				failed[s] = true
				if err == nil {
					err = fmt.Errorf("gateway: re-check auth token of account %s: %w", account, rerr)
				}
				live = append(live, c)
				continue
			}
			marks[s] = current
		}
		if !slices.Contains(current, mark) {
			c.endRotated()
			continue
		}
		live = append(live, c)
	}
	return live, err
}

// deaf reports whether this node may be missing the control events of
// other nodes now: in a cluster, while the Bus is disconnected and until
// the Resync after its reconnect has run. A revocation or a service change
// made on another node meanwhile reaches this node's sessions only through
// the store (checkDeaf): a cluster tester's session wrote with a revoked
// key into a service whose ACLs were on, for as long as NATS was away.
func (g *Gateway) deaf() bool {
	if !g.cfg.SharedStore {
		return false
	}
	if g.resyncRunning.Load() {
		return true
	}
	b, ok := g.cfg.Engine.Bus().(interface{ Connected() bool })
	return ok && !b.Connected()
}

// keySecret is k's secret, "" for nil.
func keySecret(k *chorus.APIKey) string {
	if k == nil {
		return ""
	}
	return k.Secret
}

// errAuthTokenRotated refuses an access token minted through the admin
// API with an auth token the account no longer has (engine.AuthTokenMark).
var errAuthTokenRotated = chorus.Errorf(chorus.ErrTokenIssuer,
	"Invalid Access Token issuer: it was minted with an auth token that was rotated since")

// errKeyChanged answers a request of a session that checkDeaf ended.
var errKeyChanged = chorus.Errorf(chorus.ErrTokenIssuer, "Invalid Access Token issuer: the API key was revoked or changed")

// checkDeaf reads the session's key and service from the store before a
// request is served while the node is deaf: the session ends if its key
// is gone or changed (checkKey), and takes the service as it is now if it
// changed (its ACL switch among others; a deleted service ends it). A
// store error fails the request (503), as it would fail the request.
func (c *conn) checkDeaf(ctx context.Context) error {
	c.mu.Lock()
	account, keySID, had := c.account, c.keySID, c.key
	c.mu.Unlock()
	k, err := c.g.currentKey(ctx, keySID)
	if err != nil {
		return err
	}
	if c.checkKey(k, account, had) {
		return errKeyChanged
	}
	return c.readService(ctx, true)
}

// checkKey ends the session if k, its token's key as the store has it now
// (nil: gone), is not the key that verified the token (had, nil if
// unknown) in the session's account. It reports whether it did.
func (c *conn) checkKey(k *chorus.APIKey, account string, had *chorus.APIKey) bool {
	c.mu.Lock()
	renewed := c.key != had // since had was read: the renewal read the store after k, or k after it
	c.mu.Unlock()
	if renewed {
		return false
	}
	switch {
	case k == nil || k.AccountSID != account:
		c.revoke()
	case had != nil && k.Secret != had.Secret:
		c.closeUnauthorized(closeRenew, "API key secret changed", chorus.ErrTokenSignature.Code, errSecretChanged)
	default:
		return false
	}
	return true
}

var errSecretChanged = errors.New("gateway: API key secret changed")

// currentKey reads key sid from the store: nil if it is gone, an error if
// the store failed.
func (g *Gateway) currentKey(ctx context.Context, sid string) (*chorus.APIKey, error) {
	ctx, cancel := context.WithTimeout(ctx, recheckTimeout)
	defer cancel()
	k, err := g.cfg.Engine.APIKey(ctx, sid)
	if err != nil {
		if chorus.AsError(err).Status >= 500 {
			return nil, err
		}
		return nil, nil
	}
	return k, nil
}

// keyValid reports whether the store still has key, in account. A store
// error counts as valid, and is returned: a later re-check decides.
func (g *Gateway) keyValid(ctx context.Context, account, key string) (bool, error) {
	k, err := g.currentKey(ctx, key)
	if err != nil {
		return true, err
	}
	return k != nil && k.AccountSID == account, nil
}

// revokeLocal closes this node's sessions signed by keys of accountSID.
func (g *Gateway) revokeLocal(accountSID string, keys []string) {
	g.controlEpoch.Add(1) // before the snapshot: see checkNewSession
	conns := g.sessions(func(c *conn) bool {
		return c.account == accountSID && (len(keys) == 0 || slices.Contains(keys, c.keySID))
	})
	for _, c := range conns {
		c.revoke()
	}
}

// revoke ends the session because its token's key was revoked.
func (c *conn) revoke() {
	c.closeUnauthorized(closeRenew, "API key revoked", chorus.ErrTokenIssuer.Code, errRevoked)
}

// endRotated ends the session because its token was minted with an auth
// token the account no longer has (engine.AuthTokenMark): as revoke does,
// so that the app renews its token.
func (c *conn) endRotated() {
	c.closeUnauthorized(closeRenew, "auth token rotated", chorus.ErrTokenIssuer.Code, errRotated)
}

var errRotated = errors.New("gateway: the auth token that minted the access token was rotated")

// endService ends the session because its token's service was deleted.
// Its reconnect's init is refused: the token names no service (403,
// 54050).
func (c *conn) endService() {
	c.closeUnauthorized(closeStop, "Service deleted", chorus.ErrServiceNotFound.Code, errServiceDeleted)
}

var errServiceDeleted = errors.New("gateway: service deleted")

// The twilsock closes of closeUnauthorized. On either the SDK stops
// instead of reconnecting at once; on closeRenew (410, as at the token's
// expiry) it also emits tokenExpired, so that an app renews its token as
// it does at expiry and goes on with one a valid key signed. closeStop
// (401) gives the app no event: for a session no new token can revive.
var (
	closeRenew = protocol.Status{Code: 410, Status: "TOKEN_REVOKED"}
	closeStop  = protocol.Status{Code: 401, Status: "UNAUTHORIZED"}
)

// closeUnauthorized ends the session, once, with the twilsock close st
// (closeRenew or closeStop) carrying code and description. Requests sent
// meanwhile get 401 with them; the connection closes after revokeGrace.
func (c *conn) closeUnauthorized(st protocol.Status, description string, code int, cause error) {
	c.revokeOnce.Do(func() {
		c.logger().Info("gateway: closing session", slog.String("reason", description))
		c.closeReason.Store(&chorus.Error{Status: 401, Code: code, Message: description})
		c.closing.Store(closingRevoked)
		c.mu.Lock()
		c.tokenGen++ // no more token notices
		c.mu.Unlock()
		st.ErrorCode, st.Description = code, description
		c.send(protocol.Encode(nil, protocol.NewClose(protocol.NewID(), st), nil))
		time.AfterFunc(revokeGrace, func() { c.fail(cause) })
	})
}

// recheckAccess re-checks every session after control events may have
// been lost (the Bus reconnected or dropped messages): services are
// re-read, keys looked up (a missing key closes its sessions), and the
// subscriptions of ACL services re-checked. It returns the first store
// error that left a key or service unchecked: Resync then runs it again.
func (g *Gateway) recheckAccess() error {
	g.cfg.Engine.Resync() // the engine's caches may have missed changes too
	ctx := g.ctx
	// Keys: a revocation or a secret changed in place may be among the
	// lost events.
	live, storeErr := g.recheckKeys(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}

	// Services: each read once and stored to its sessions, all under
	// svcMu (see serviceChanged).
	bySvc := make(map[string][]*conn)
	first := make(map[string]*chorus.Service)
	for _, c := range live {
		c.mu.Lock()
		old := c.online.svc
		c.mu.Unlock()
		bySvc[old.SID] = append(bySvc[old.SID], c)
		first[old.SID] = old
	}
	fresh := make(map[string]*chorus.Service)
	gens := make(map[string]uint64, len(bySvc))
	for sid := range bySvc {
		gens[sid] = g.serviceCounter(sid).Load()
	}
	g.svcMu.Lock()
	for sid, conns := range bySvc {
		rctx, cancel := context.WithTimeout(ctx, recheckTimeout)
		svc, err := g.cfg.Engine.Service(rctx, first[sid].AccountSID, sid)
		cancel()
		if err != nil {
			if chorus.AsError(err).Status == 404 { // deleted
				for _, c := range conns {
					c.endService()
				}
			} else if storeErr == nil {
				storeErr = fmt.Errorf("gateway: re-check service %s: %w", sid, err)
			}
			continue
		}
		fresh[sid] = svc
		for _, c := range conns {
			c.adoptService(svc, gens[sid])
		}
	}
	g.svcMu.Unlock()

	for sid, conns := range bySvc {
		svc := fresh[sid]
		if svc == nil {
			continue
		}
		for _, c := range conns {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.releaseServiceHolds(ctx, svc)
			// Lost permission changes too: with ACLs on, re-check all.
			if c.aclTurnedOn.Swap(false) || svc.ACLEnabled {
				c.recheckAll(ctx, svc)
			}
		}
	}
	return storeErr
}

// checkNewSession closes the window between a session's authentication
// and the moment control handlers can see it (initialized): if a service
// change, key revocation or change of credentials was handled since epoch
// (read before the token was verified), the key and service are read
// again. Worker only,
// after init or an update took effect.
func (c *conn) checkNewSession(ctx context.Context, epoch uint64) {
	g := c.g
	if g.controlEpoch.Load() == epoch {
		return
	}
	c.mu.Lock()
	account, keySID, had, svcSID, mark := c.account, c.keySID, c.key, c.online.svc.SID, c.tokenMark
	c.mu.Unlock()
	// A store error: Resync decides.
	if k, err := g.currentKey(ctx, keySID); err == nil && c.checkKey(k, account, had) {
		return
	}
	if mark != "" && had != nil {
		// The auth token that minted the token may have been rotated
		// meanwhile: the key is still valid then.
		rctx, cancel := context.WithTimeout(ctx, recheckTimeout)
		marks, err := g.cfg.Engine.AuthTokenMarks(rctx, account, had.Secret)
		cancel()
		if err == nil && !slices.Contains(marks, mark) {
			c.endRotated()
			return
		}
	}
	gen := g.serviceCounter(svcSID).Load()
	g.svcMu.Lock()
	g.cfg.Engine.ForgetServices() // the engine may not have heard of the change yet
	rctx, cancel := context.WithTimeout(ctx, recheckTimeout)
	svc, err := g.cfg.Engine.Service(rctx, account, svcSID)
	cancel()
	if err == nil {
		c.adoptService(svc, gen)
	}
	g.svcMu.Unlock()
	switch {
	case err == nil:
		go c.afterServiceRead(g.ctx, svc) // an update's session may hold subscriptions
	case chorus.AsError(err).Status == 404:
		c.endService() // deleted since the token was verified
	}
}
