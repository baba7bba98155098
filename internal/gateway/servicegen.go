package gateway

import (
	"context"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
)

// Service changes take effect at once. The Bus callback of
// EventServiceChanged notes the change (noteServiceChange) before the
// change's REST answer on this node (the in-process Bus calls back inside
// Publish) and before any later event on other nodes. From then on, until
// the session has read its service again:
//
//   - its next request first reads the service (the worker, loadService),
//     so that a request sent after ACLs were turned on is checked with them;
//   - live events do not reach its subscriptions: they are held
//     (heldForService) and released by releaseServiceHolds once the service
//     was read, after a re-check when ACLs are on, with what was held sent
//     from the log. A read that finds ACLs turned on holds every
//     subscription before the session adopts it (adoptService), so that
//     none is released unchecked. Stream subscriptions are not held: their
//     messages have no ids to resume from.
//
// The check costs two atomic loads per request and per delivery: the
// session holds its service's change counter.

// heldForService marks a subscription held until its session's service is
// read again (subscription.held; permission holds use the topic's access
// generation, which never reaches it).
const heldForService = math.MaxUint64

// serviceCounter is the change counter of service sid, made on first use
// (a session's init). Counters are never dropped: one per service that
// had a session on this node.
func (g *Gateway) serviceCounter(sid string) *atomic.Uint64 {
	if v, ok := g.svcGens.Load(sid); ok {
		return v.(*atomic.Uint64)
	}
	v, _ := g.svcGens.LoadOrStore(sid, new(atomic.Uint64))
	return v.(*atomic.Uint64)
}

// noteServiceChange records a change of service sid. A service without
// a counter has had no session here: nothing to mark stale, and a session
// that starts later reads the service after the change (a change during
// its init is checkNewSession's), so no counter is made for it; a node of
// a cluster hears of every service's changes. Called in the Bus callback:
// it must not block.
func (g *Gateway) noteServiceChange(sid string) {
	if v, ok := g.svcGens.Load(sid); ok {
		v.(*atomic.Uint64).Add(1)
	}
}

// markServiceRead records that the session's service was read after its
// change number gen.
func (c *conn) markServiceRead(gen uint64) {
	c.svcGenSeen.Store(gen)
}

// adoptService makes svc, read after change number gen, the session's
// service, unless a read after a later change was adopted already. If it
// turned ACLs on, every subscription is held first, so that none gets an
// event before releaseServiceHolds re-checked it.
func (c *conn) adoptService(svc *chorus.Service, gen uint64) {
	if gen < c.svcGenSeen.Load() {
		return // older than what the session has: it stays as it is
	}
	old := c.svcLatest.Load()
	if svc.ACLEnabled && (old == nil || !old.ACLEnabled) {
		c.holdForService()
		c.aclTurnedOn.Store(true) // afterServiceRead re-checks what holds do not cover
	}
	if svc.ReachabilityWebhooksEnabled && (old == nil || !old.ReachabilityWebhooksEnabled || old.WebhookURL == "") {
		c.tellPresence(svc)
	}
	c.setService(svc)
	c.markServiceRead(gen)
}

// tellPresence tells Presence of the open session again, after svc turned
// reachability webhooks on: Presence tracks only the sessions of services
// that have them, and one opened before would end unheard (no
// endpoint_disconnected). Under mu, so that it comes before teardown's
// Disconnected, never after it.
func (c *conn) tellPresence(svc *chorus.Service) {
	p := c.g.cfg.Presence
	if p == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.initialized && !c.offline {
		p.Connected(svc, c.online.identity, c.id)
	}
}

// holdForService holds every subscription of the session but streams'
// (see heldForService).
func (c *conn) holdForService() {
	for _, s := range c.subscriptions() {
		if s.kind == chorus.KindStream {
			continue
		}
		s.t.mu.Lock()
		if !s.gone {
			s.held = heldForService // over a permission hold too: this re-check covers it
		}
		s.t.mu.Unlock()
	}
	c.svcHolds.Store(true)
}

// serviceStale reports whether the session's service changed since the
// session read it. Safe anywhere once the session is initialized.
func (c *conn) serviceStale() bool {
	ctr := c.svcGen.Load()
	return ctr != nil && ctr.Load() != c.svcGenSeen.Load()
}

// loadService reads the session's service again, makes it the session's
// and releases what was held meanwhile. A deleted service ends the
// session. Safe off the worker.
func (c *conn) loadService(ctx context.Context) error { return c.readService(ctx, false) }

// readService is loadService; ifChanged leaves the session as it is when
// the service read equals the session's (checkDeaf's per-request read,
// which must not re-check every subscription each time).
func (c *conn) readService(ctx context.Context, ifChanged bool) error {
	g := c.g
	old := c.svcLatest.Load()
	gen := c.svcGen.Load().Load() // before the read: a later change makes it stale again
	rctx, cancel := context.WithTimeout(ctx, recheckTimeout)
	svc, err := g.cfg.Engine.Service(rctx, old.AccountSID, old.SID)
	cancel()
	if err != nil {
		if chorus.AsError(err).Status == 404 {
			c.endService()
		}
		return err
	}
	if ifChanged && *svc == *old {
		return nil
	}
	c.adoptService(svc, gen)
	go c.afterServiceRead(g.ctx, c.svcLatest.Load()) // reads the store: not on the worker
	return nil
}

// afterServiceRead releases what was held for the stale service and, if
// reading it turned ACLs on, re-checks what holds do not cover (stream
// subscriptions, live queries). A change that leaves ACLs as they were
// changes no one's access: nothing else is re-checked.
func (c *conn) afterServiceRead(ctx context.Context, svc *chorus.Service) {
	c.releaseServiceHolds(ctx, svc)
	if c.aclTurnedOn.Swap(false) {
		c.recheckAll(ctx, svc)
	}
}

// subscriptions returns a snapshot of the session's subscriptions.
func (c *conn) subscriptions() []*subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	subs := make([]*subscription, 0, len(c.subs))
	for _, s := range c.subs {
		subs = append(subs, s)
	}
	return subs
}

// releaseServiceHolds lets the subscriptions held for a stale service
// go on, now that svc was read: with ACLs on, each is re-checked first
// (denied, it ends). What a store error leaves held is tried again after
// ResyncRetry, for as long as the session lives.
func (c *conn) releaseServiceHolds(ctx context.Context, svc *chorus.Service) {
	if !c.svcHolds.Swap(false) {
		return
	}
	failed := false
	for _, s := range c.subscriptions() {
		s.t.mu.Lock()
		held := s.held == heldForService
		s.t.mu.Unlock()
		if !held {
			continue
		}
		if svc.ACLEnabled {
			rctx, cancel := context.WithTimeout(ctx, recheckTimeout)
			_, err := c.g.cfg.Engine.Subscribable(rctx, c.actorOf(), svc, s.kind, s.sid)
			cancel()
			if e := chorus.AsError(err); err != nil {
				switch {
				case e.Status == 403:
					c.deny(s, e)
				case e.Status >= 500:
					failed = true
					c.logger().Warn("gateway: re-check subscription", slog.String(logObject, s.sid), slog.Any(logError, err))
				}
				continue
			}
		}
		if err := s.t.release(ctx, s, heldForService, svc); err != nil {
			failed = true
		}
	}
	if failed {
		c.svcHolds.Store(true)
		time.AfterFunc(c.g.cfg.ResyncRetry, func() {
			if c.ctx.Err() == nil {
				c.releaseServiceHolds(ctx, c.svcLatest.Load())
			}
		})
	}
}
