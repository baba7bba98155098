package webhook

import (
	"sync"
	"time"

	"github.com/chorus-sync/chorus"
)

// presence tracks the connected endpoints of each (service, identity) on
// this node, and the debounced endpoint_disconnected webhooks waiting to
// be sent.
type presence struct {
	mu      sync.Mutex
	online  map[identityKey]int
	pending map[identityKey]*time.Timer
}

type identityKey struct{ service, identity string }

// Connected reports that a client endpoint of identity opened a session on
// svc: an endpoint_connected webhook (when the service has reachability
// webhooks on), and it cancels a debounced endpoint_disconnected of that
// identity.
func (d *Dispatcher) Connected(svc *chorus.Service, identity, endpointID string) {
	k := identityKey{svc.SID, identity}
	d.presence.mu.Lock()
	d.presence.online[k]++
	if t := d.presence.pending[k]; t != nil {
		t.Stop()
		delete(d.presence.pending, k)
	}
	d.presence.mu.Unlock()
	d.Observe([]*chorus.Event{reachabilityEvent(svc, identity, endpointID, chorus.EventEndpointConnected)})
}

// Disconnected reports that an endpoint's session ended. When it was the
// identity's last endpoint on this node, endpoint_disconnected is sent at
// once, or after the service's debouncing window when it has debouncing on
// (a reconnection of the identity within the window cancels it).
func (d *Dispatcher) Disconnected(svc *chorus.Service, identity, endpointID string) {
	k := identityKey{svc.SID, identity}
	ev := reachabilityEvent(svc, identity, endpointID, chorus.EventEndpointDisconnected)
	d.presence.mu.Lock()
	defer d.presence.mu.Unlock()
	if d.presence.online[k]--; d.presence.online[k] > 0 {
		return
	}
	delete(d.presence.online, k)
	if !svc.ReachabilityDebouncingEnabled {
		d.Observe([]*chorus.Event{ev})
		return
	}
	if t := d.presence.pending[k]; t != nil {
		t.Stop()
	}
	window := time.Duration(svc.ReachabilityDebouncingWindow) * time.Millisecond
	var t *time.Timer
	t = time.AfterFunc(window, func() {
		d.presence.mu.Lock()
		fire := d.presence.pending[k] == t
		if fire {
			delete(d.presence.pending, k)
		}
		d.presence.mu.Unlock()
		if fire {
			d.Observe([]*chorus.Event{ev})
		}
	})
	d.presence.pending[k] = t
}

func reachabilityEvent(svc *chorus.Service, identity, endpointID string, typ chorus.EventType) *chorus.Event {
	return &chorus.Event{
		Type: typ, AccountSID: svc.AccountSID, ServiceSID: svc.SID,
		Identity: identity, EndpointID: endpointID, DateCreated: time.Now().UTC(),
	}
}
