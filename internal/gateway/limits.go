package gateway

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// Resource limits before and after authentication.
const (
	// DefaultMaxInitBytes is the default largest WebSocket message a
	// session accepts before its init succeeded: an access token (a few
	// KiB) plus metadata.
	DefaultMaxInitBytes = 32 << 10
	// maxPreInitRequests bounds the requests a session may have queued
	// before its init succeeded (init itself, and what a client pipelines
	// behind it).
	maxPreInitRequests = 4
	// readChunk bounds how far a message buffer grows ahead of the bytes
	// that actually arrived: a frame header announcing a large length
	// allocates nothing until its payload comes in.
	readChunk = 16 << 10
	// refusalLogEvery rate-limits the warning about refused connections.
	refusalLogEvery = 10 * time.Second
)

// appendRead reads exactly n bytes from r onto dst. The buffer grows at
// most readChunk ahead of what was read (amortized by append's growth), so
// a peer that announces n bytes and sends fewer costs what it sent.
func appendRead(r io.Reader, dst []byte, n int64) ([]byte, error) {
	for n > 0 {
		k := int(min(n, readChunk))
		dst = slices.Grow(dst, k)
		m, err := io.ReadFull(r, dst[len(dst):len(dst)+k])
		dst = dst[:len(dst)+m]
		if err != nil {
			return dst, err
		}
		n -= int64(k)
	}
	return dst, nil
}

// clientAddr is the address a connection counts against: the IP of the
// TCP peer (a proxy's forwarding headers are not trusted), and for IPv6
// its /64, which one host typically holds whole.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.WithZone("").Prefix(64)
		return p.String()
	}
	return ip.String()
}

// admit reserves a place for a new connection from addr, or writes the
// refusal (503 at MaxConns, 429 at MaxUnauthenticatedPerAddr) and returns
// false. A reservation is given back by unadmit (upgrade failed) or by the
// session (authenticated, ended).
func (g *Gateway) admit(w http.ResponseWriter, addr string) bool {
	g.mu.Lock()
	var refuse *chorus.Error
	switch {
	case g.closed:
		refuse = chorus.Errorf(chorus.ErrUnavailable, "Service unavailable: shutting down")
	case g.cfg.MaxConns > 0 && len(g.conns)+g.upgrading >= g.cfg.MaxConns:
		refuse = chorus.Errorf(chorus.ErrUnavailable, "Service unavailable: too many websocket connections")
	case g.cfg.MaxUnauthenticatedPerAddr > 0 && g.unauth[addr] >= g.cfg.MaxUnauthenticatedPerAddr:
		refuse = chorus.Errorf(chorus.ErrTooManyRequests, "Too many unauthenticated websocket connections from this address")
	}
	if refuse == nil {
		g.upgrading++
		g.unauth[addr]++
		g.mu.Unlock()
		return true
	}
	closing := g.closed
	g.mu.Unlock()
	if !closing {
		g.refused.Add(1)
		if held, ok := g.refusalLog.Allow(); ok {
			g.log.Warn("gateway: refusing websocket connection", slog.String("addr", addr),
				slog.Int("status", refuse.Status), slog.String("reason", refuse.Message), slog.Uint64("suppressed", held))
		}
	}
	if refuse.Status == http.StatusServiceUnavailable || refuse.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "5")
	}
	twiliohttp.WriteJSON(w, refuse.Status, twiliohttp.Body(refuse))
	return false
}

// unadmit gives back a reservation whose upgrade failed.
func (g *Gateway) unadmit(addr string) {
	g.mu.Lock()
	g.upgrading--
	g.dropUnauthLocked(addr)
	g.mu.Unlock()
}

func (g *Gateway) dropUnauthLocked(addr string) {
	if n := g.unauth[addr] - 1; n > 0 {
		g.unauth[addr] = n
	} else {
		delete(g.unauth, addr)
	}
}

// authenticated stops counting c as unauthenticated (its init succeeded).
func (g *Gateway) authenticated(c *conn) {
	g.mu.Lock()
	if c.unauth {
		c.unauth = false
		g.dropUnauthLocked(c.addr)
		c.endAwaitInitLocked()
	}
	g.mu.Unlock()
}

// awaitingInit tells Config.AwaitInit's caller whether c, not
// authenticated yet, waits on its client for an init (true) or the
// gateway works on one (false); nothing once it authenticated.
func (c *conn) awaitingInit(waiting bool) {
	if c.g.cfg.AwaitInit == nil {
		return
	}
	c.g.mu.Lock()
	defer c.g.mu.Unlock()
	if c.unauth && c.initMark != nil {
		c.initMark(waiting)
	}
}

// endAwaitInitLocked tells Config.AwaitInit's caller that c no longer
// waits for its init. Under g.mu, with c.unauth just cleared, so once.
func (c *conn) endAwaitInitLocked() {
	if c.initMark != nil {
		c.initMark(false)
		c.initMark = nil
	}
}

// identityBackoff is the body of the 429 to an init over
// MaxSessionsPerIdentity: twilsock waits at least reconnect_min_ms before
// its next attempt (TwilsockClient.modifyBackoff).
var identityBackoff = []byte(`{"backoff_policy":{"reconnect_min_ms":5000}}`)

// identityKey names an identity of a service (service SIDs are unique
// across accounts).
type identityKey struct{ service, identity string }

// identityUse is what the sessions of one identity of a service hold on
// this node.
type identityUse struct {
	sessions int          // guarded by Gateway.mu (MaxSessionsPerIdentity)
	queued   atomic.Int64 // bytes their send queues hold past 64 KiB each (queueBudget)
	queries  atomic.Int64 // live queries they hold (MaxLiveQueriesPerIdentity)
}

// countSession counts c's session against its identity, and from then on
// its send queue's bytes, or reports false when the identity has
// MaxSessionsPerIdentity sessions already.
func (g *Gateway) countSession(c *conn, k identityKey) bool {
	g.mu.Lock()
	u := g.perIdentity[k]
	if u != nil && g.cfg.MaxSessionsPerIdentity > 0 && u.sessions >= g.cfg.MaxSessionsPerIdentity {
		g.mu.Unlock()
		return false
	}
	if u == nil {
		u = &identityUse{}
		g.perIdentity[k] = u
	}
	u.sessions++
	c.session, c.use = &k, u
	g.mu.Unlock()
	// The entry lives while c is counted: it is removed (remove) only
	// after c's queue was discarded, so no byte is charged to an entry
	// that a later session of the identity does not share.
	c.q.chargeIdentity(&u.queued)
	return true
}

// uncountSessionLocked gives back c's place among its identity's sessions.
func (g *Gateway) uncountSessionLocked(c *conn) {
	if c.session == nil {
		return
	}
	if u := g.perIdentity[*c.session]; u.sessions > 1 {
		u.sessions--
	} else {
		delete(g.perIdentity, *c.session)
	}
	c.session = nil
}

// uncountQuery gives back the place of a live query of u's identity
// (countQuery); without an identity there is none.
func (u *identityUse) uncountQuery() {
	if u != nil {
		u.queries.Add(-1)
	}
}

// countQuery counts a new live query of u's identity, or reports false
// when it holds MaxLiveQueriesPerIdentity already. Without an identity
// (no init yet) there is nothing to count against.
func (g *Gateway) countQuery(u *identityUse) bool {
	if u == nil {
		return true
	}
	if n := u.queries.Add(1); g.cfg.MaxLiveQueriesPerIdentity > 0 && n > int64(g.cfg.MaxLiveQueriesPerIdentity) {
		u.queries.Add(-1)
		g.queriesRefused.Add(1)
		return false
	}
	return true
}
