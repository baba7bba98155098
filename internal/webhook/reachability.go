package webhook

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
)

// Reachability is cluster-wide: every node records its endpoints in the
// store (chorus.Endpoint rows, with a heartbeat per node), an identity is
// online while any endpoint on any node is connected, and the delivering
// node sends endpoint_disconnected once an identity has had no endpoint
// for its service's debouncing window, including when the node its
// endpoints were on stopped heartbeating.

// presenceOp is a connection or disconnection to record.
type presenceOp struct {
	ep      chorus.Endpoint
	connect bool
}

// presenceQueue records presence changes in the store in the order they
// happened, off the gateway's goroutines (whose calls must not block).
type presenceQueue struct {
	d       *Dispatcher
	mu      sync.Mutex
	ops     []presenceOp
	running bool                     // a drain goroutine runs
	idle    chan struct{}            // closed when the queue drains; nil while running
	tracked map[endpointKey]*tracked // sessions this node recorded, per endpoint
	// connected is set once a connection was recorded in the store, which
	// records this node too (heartbeat).
	connected atomic.Bool
}

// beforeRecord, when set (tests), is called before each presence change
// is recorded.
var beforeRecord atomic.Pointer[func()]

type tracked struct {
	ep       chorus.Endpoint
	sessions int
}

type endpointKey struct{ service, identity, endpoint string }

func (q *presenceQueue) init(d *Dispatcher) {
	q.d = d
	q.tracked = make(map[endpointKey]*tracked)
}

// Connected records that a client endpoint of identity opened a session on
// svc (the gateway's Presence). Services without reachability webhooks
// are not tracked. An endpoint already tracked is not counted again: the
// gateway also calls it for its open sessions when a service turns
// reachability webhooks on, so that their ends are heard.
func (d *Dispatcher) Connected(svc *chorus.Service, identity, endpointID string) {
	if !svc.ReachabilityWebhooksEnabled || svc.WebhookURL == "" {
		return
	}
	d.presence.push(presenceOp{ep: d.endpoint(svc, identity, endpointID), connect: true})
}

// Disconnected records that an endpoint's session ended.
func (d *Dispatcher) Disconnected(svc *chorus.Service, identity, endpointID string) {
	d.presence.push(presenceOp{ep: d.endpoint(svc, identity, endpointID)})
}

func (d *Dispatcher) endpoint(svc *chorus.Service, identity, endpointID string) chorus.Endpoint {
	return chorus.Endpoint{ServiceSID: svc.SID, AccountSID: svc.AccountSID, Identity: identity, EndpointID: endpointID, Node: d.cfg.Node}
}

func (q *presenceQueue) push(op presenceOp) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := endpointKey{op.ep.ServiceSID, op.ep.Identity, op.ep.EndpointID}
	tr := q.tracked[k]
	switch {
	case op.connect && tr == nil:
		q.tracked[k] = &tracked{ep: op.ep, sessions: 1}
	case op.connect:
		return // the endpoint (a session's own id) is tracked already
	case tr == nil:
		return // never recorded
	default:
		if tr.sessions--; tr.sessions == 0 {
			delete(q.tracked, k)
		}
	}
	q.enqueueLocked(op)
}

func (q *presenceQueue) enqueueLocked(op presenceOp) {
	q.ops = append(q.ops, op)
	if !q.running {
		q.running = true
		q.idle = make(chan struct{})
		go q.drain()
	}
}

// reconnectAll records every session this node has again: after the
// store presumed the node dead and dropped its endpoints. The changes
// still queued are dropped: tracked holds their effect already, and
// recording both counted a session twice (its identity then never went
// offline). One being recorded now may still count twice, if it commits
// after the drop.
func (q *presenceQueue) reconnectAll() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.ops = q.ops[:0]
	for _, tr := range q.tracked {
		for range tr.sessions {
			q.enqueueLocked(presenceOp{ep: tr.ep, connect: true})
		}
	}
}

// drain records the queued operations one after the other.
func (q *presenceQueue) drain() {
	for {
		q.mu.Lock()
		if len(q.ops) == 0 {
			q.running = false
			close(q.idle)
			q.mu.Unlock()
			return
		}
		op := q.ops[0]
		q.ops = q.ops[1:]
		q.mu.Unlock()
		if f := beforeRecord.Load(); f != nil {
			(*f)()
		}
		q.d.record(op)
	}
}

// flush waits until the queued operations are recorded.
func (q *presenceQueue) flush(ctx context.Context) error {
	q.mu.Lock()
	idle := q.idle
	running := q.running
	q.mu.Unlock()
	if !running {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("webhook: record presence: %w", ctx.Err())
	}
}

// presenceRetryFor is how long record retries a presence change while the
// store fails: longer than a PostgreSQL failover. A change given up on
// leaves the identity's state wrong until this node restarts.
const presenceRetryFor = 2 * time.Minute

// record writes one presence change, retrying while the store fails (the
// change must not be lost) for presenceRetryFor or until the Dispatcher
// closes.
func (d *Dispatcher) record(op presenceOp) {
	ctx := context.WithoutCancel(d.ctx)
	giveUp := time.Now().Add(presenceRetryFor)
	for attempt := 0; ; attempt++ {
		err := d.cfg.Store.Update(ctx, func(tx chorus.Tx) error {
			now, err := d.storeNow(ctx, tx) // the cluster's clock: the leader compares it
			if err != nil {
				return err
			}
			if !op.connect {
				return tx.DisconnectEndpoint(ctx, op.ep, now)
			}
			first, err := tx.ConnectEndpoint(ctx, op.ep, now)
			if err != nil || !first {
				return err
			}
			return d.Append(ctx, tx, []*chorus.Event{reachabilityEvent(op.ep, chorus.EventEndpointConnected, now)})
		})
		if err == nil {
			break
		}
		d.warnRateLimited("webhook: record presence", "service", op.ep.ServiceSID, "err", err)
		if time.Now().After(giveUp) {
			d.log.Error("webhook: gave up recording a presence change", "service", op.ep.ServiceSID, "connect", op.connect, "err", err)
			return
		}
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 5*time.Second)):
		}
	}
	if op.connect {
		d.presence.connected.Store(true)
		d.deliverSoon(op.ep.ServiceSID) // endpoint_connected, if it was the first
	} else {
		d.poke()
	}
}

func reachabilityEvent(ep chorus.Endpoint, typ chorus.EventType, now time.Time) *chorus.Event {
	return &chorus.Event{
		Type: typ, AccountSID: ep.AccountSID, ServiceSID: ep.ServiceSID,
		Identity: ep.Identity, EndpointID: ep.EndpointID, DateCreated: now,
	}
}

// reachability sends endpoint_disconnected for the identities whose
// debouncing window has passed since they went offline, and returns when
// the next one is due (zero: none pending). Its times are Now's, the
// store's clock: the node that recorded when an identity went offline may
// not be this one. Only a leader runs it, and a leader knows that clock.
func (d *Dispatcher) reachability(ctx context.Context) (next time.Time, err error) {
	var offline []*chorus.OfflineIdentity
	now := d.Now()
	err = d.cfg.Store.View(ctx, func(tx chorus.ReadTx) (err error) {
		offline, err = tx.OfflineIdentities(ctx, now, 1000)
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("webhook: offline identities: %w", err)
	}
	for _, o := range offline {
		var window time.Duration
		svc, err := d.service(ctx, o.ServiceSID)
		switch {
		case err == nil && svc.ReachabilityDebouncingEnabled:
			window = time.Duration(svc.ReachabilityDebouncingWindow) * time.Millisecond
		case err != nil && !isNotFound(err):
			return time.Time{}, err
		}
		if due := o.Since.Add(window); due.After(now) {
			if next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		var gone bool
		err = d.cfg.Store.Update(ctx, func(tx chorus.Tx) (err error) {
			now := d.Now()
			gone, err = tx.GoneOffline(ctx, o.ServiceSID, o.Identity, now.Add(-window))
			if err != nil || !gone || svc == nil {
				return err
			}
			ep := chorus.Endpoint{ServiceSID: o.ServiceSID, AccountSID: o.AccountSID, Identity: o.Identity, EndpointID: o.EndpointID}
			return d.Append(ctx, tx, []*chorus.Event{reachabilityEvent(ep, chorus.EventEndpointDisconnected, now)})
		})
		if err != nil {
			return time.Time{}, fmt.Errorf("webhook: identity offline: %w", err)
		}
		if gone {
			d.kick(o.ServiceSID)
		}
	}
	return next, nil
}

func isNotFound(err error) bool { return errors.Is(err, chorus.ErrNotFound) }
