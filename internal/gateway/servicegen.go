package gateway

import (
	"context"
	"log/slog"
	"math"

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
// The check costs two atomic loads per request and per delivery while no
// service changed since the session last looked.

// heldForService marks a subscription held until its session's service is
// read again (subscription.held; permission holds use the topic's access
// generation, which never reaches it).
const heldForService = math.MaxUint64

// noteServiceChange records a change of service sid. Called in the Bus
// callback: it must not block.
func (g *Gateway) noteServiceChange(sid string) {
	g.svcGenMu.Lock()
	if g.svcGen == nil {
		g.svcGen = make(map[string]uint64)
	}
	g.svcGen[sid]++
	g.svcGenMu.Unlock()
	g.svcChanges.Add(1) // after the generation: see serviceStale
}

// serviceGen is the number of changes of service sid noted so far.
func (g *Gateway) serviceGen(sid string) uint64 {
	g.svcGenMu.Lock()
	defer g.svcGenMu.Unlock()
	return g.svcGen[sid]
}

// markServiceRead records that the session's service was read after
// change number changes (of all services) and gen (of its own).
func (c *conn) markServiceRead(gen, changes uint64) {
	c.svcGenSeen.Store(gen)
	c.svcChecked.Store(changes)
}

// adoptService makes svc, read after changes and gen, the session's
// service. If it turned ACLs on, every subscription is held first, so
// that none gets an event before releaseServiceHolds re-checked it.
// Callers hold g.svcMu.
func (c *conn) adoptService(svc *chorus.Service, gen, changes uint64) {
	if old := c.svcLatest.Load(); svc.ACLEnabled && (old == nil || !old.ACLEnabled) {
		c.holdForService()
	}
	c.setService(svc)
	c.markServiceRead(gen, changes)
}

// holdForService holds every subscription of the session but streams'
// (see heldForService).
func (c *conn) holdForService() {
	c.mu.Lock()
	subs := make([]*subscription, 0, len(c.subs))
	for _, s := range c.subs {
		subs = append(subs, s)
	}
	c.mu.Unlock()
	for _, s := range subs {
		if s.kind == chorus.KindStream {
			continue
		}
		s.t.mu.Lock()
		if s.held == 0 && !s.gone {
			s.held = heldForService
		}
		s.t.mu.Unlock()
	}
	c.svcHolds.Store(true)
}

// serviceStale reports whether the session's service changed since the
// session read it. Safe anywhere; cheap while no service changed.
func (c *conn) serviceStale() bool {
	n := c.g.svcChanges.Load()
	if n == c.svcChecked.Load() {
		return false
	}
	svc := c.svcLatest.Load()
	if svc == nil {
		return false
	}
	// The generation is read after n: a change of this service that n
	// does not count shows in a later n.
	if c.g.serviceGen(svc.SID) != c.svcGenSeen.Load() {
		return true
	}
	c.svcChecked.Store(n) // another service changed
	return false
}

// loadService reads the session's service again, makes it the session's
// and releases what was held meanwhile. A deleted service ends the
// session. Safe off the worker.
func (c *conn) loadService(ctx context.Context) error {
	g := c.g
	old := c.svcLatest.Load()
	n := g.svcChanges.Load()
	gen := g.serviceGen(old.SID)
	g.svcMu.Lock()
	rctx, cancel := context.WithTimeout(ctx, recheckTimeout)
	svc, err := g.cfg.Engine.Service(rctx, old.AccountSID, old.SID)
	cancel()
	if err == nil {
		c.adoptService(svc, gen, n)
	}
	g.svcMu.Unlock()
	if err != nil {
		if chorus.AsError(err).Status == 404 {
			c.endService()
		}
		return err
	}
	c.releaseServiceHolds(ctx, svc)
	return nil
}

// releaseServiceHolds lets the subscriptions held for a stale service
// go on, now that svc was read: with ACLs on, each is re-checked first
// (denied, it ends). A store error leaves it held for the next read.
func (c *conn) releaseServiceHolds(ctx context.Context, svc *chorus.Service) {
	if !c.svcHolds.Swap(false) {
		return
	}
	c.mu.Lock()
	subs := make([]*subscription, 0, len(c.subs))
	for _, s := range c.subs {
		subs = append(subs, s)
	}
	c.mu.Unlock()
	for _, s := range subs {
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
					c.svcHolds.Store(true) // the next read of the service tries again
					c.logger().Warn("gateway: re-check subscription", slog.String(logObject, s.sid), slog.Any(logError, err))
				}
				continue
			}
		}
		s.t.release(ctx, s, heldForService)
	}
}
