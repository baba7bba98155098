package engine

import (
	"context"
	"sync"
	"time"

	"github.com/chorus-sync/chorus"
)

// The engine keeps in memory what every request reads before it does
// anything: the credential it authenticates with and the service it
// addresses — on a single node. In a cluster (Config.SharedStore) both
// caches are off, because another node's change would be heard only when
// its control event arrives, after that node answered. A cache entry is
// trusted until
//
//   - this node changes credentials or a service: the change drops the
//     cache right after it commits, before it returns;
//   - another node does: it publishes a control event after its commit
//     (chorus.EventCredentialsChanged, chorus.EventServiceChanged) and every
//     engine drops its cache when it hears it;
//   - the Bus reports it may have lost events (Resync): the whole cache goes;
//   - cacheTTL passed, a bound for changes made to the store behind the
//     engines' back (an import into a live store).
//
// A read that began before a drop never fills the cache after it: each
// cache has an epoch that every drop advances, a reader notes it before
// its store read and may store only while it is unchanged. Only what the
// store has is cached (never a miss, so unknown SIDs cannot fill it), and
// each cache holds at most cacheMax entries. Entries are keyed by SID,
// never by a secret; secrets are compared in constant time on every use.
const (
	cacheTTL = 10 * time.Second
	cacheMax = 4096
)

type cacheEntry[V any] struct {
	v  V
	at time.Time
}

// cache is a bounded map of SIDs to values with epoch-checked fills. It is
// safe for concurrent use.
type cache[V any] struct {
	mu    sync.RWMutex
	off   bool // set before use when no change could be heard
	epoch uint64
	m     map[string]cacheEntry[V]
}

// get returns the fresh value of key.
func (c *cache[V]) get(key string) (V, bool) {
	c.mu.RLock()
	en, ok := c.m[key]
	c.mu.RUnlock()
	if !ok || time.Since(en.at) >= cacheTTL {
		var zero V
		return zero, false
	}
	return en.v, true
}

// begin returns the epoch to pass to put; call it before the store read.
func (c *cache[V]) begin() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.epoch
}

// put stores v read from the store after begin returned epoch, unless
// the cache was dropped since.
func (c *cache[V]) put(epoch uint64, key string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch || c.off {
		return
	}
	if c.m == nil || len(c.m) >= cacheMax {
		c.m = make(map[string]cacheEntry[V])
	}
	c.m[key] = cacheEntry[V]{v: v, at: time.Now()}
}

// drop empties the cache and fails the puts of reads begun before.
func (c *cache[V]) drop() {
	c.mu.Lock()
	c.epoch++
	c.m = nil
	c.mu.Unlock()
}

// secretsOf is a cached credential: what it authenticates as and the
// secrets that prove it (an empty one matches nothing).
type secretsOf struct {
	cred    Credential
	secrets [2]string
}

// credentialSecrets returns the credential named sid (an account or API
// key SID) and its secrets, from the cache or the store; ErrNotFound when
// there is none.
func (e *Engine) credentialSecrets(ctx context.Context, sid string) (secretsOf, error) {
	if s, ok := e.creds.get(sid); ok {
		return s, nil
	}
	epoch := e.creds.begin()
	var s secretsOf
	err := e.view(ctx, func(tx chorus.ReadTx) error {
		switch {
		case chorus.IsSID(chorus.PrefixAccount, sid):
			a, err := tx.Account(ctx, sid)
			if err != nil {
				return err
			}
			s = secretsOf{Credential{AccountSID: a.SID, SID: a.SID, Main: true}, [2]string{a.AuthToken, a.SecondaryAuthToken}}
		case chorus.IsSID(chorus.PrefixAPIKey, sid):
			k, err := tx.APIKey(ctx, sid)
			if err != nil {
				return err
			}
			s = secretsOf{Credential{AccountSID: k.AccountSID, SID: k.SID, Main: k.Main}, [2]string{k.Secret}}
		default:
			return chorus.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return secretsOf{}, err
	}
	e.creds.put(epoch, sid, s)
	return s, nil
}

// cachedService returns service sid (no alias) from the cache or the
// store, as a copy the caller may keep; the caller checks its account.
func (e *Engine) cachedService(ctx context.Context, sid string) (*chorus.Service, error) {
	if s, ok := e.services.get(sid); ok {
		cp := *s
		return &cp, nil
	}
	epoch := e.services.begin()
	var s *chorus.Service
	err := e.view(ctx, func(tx chorus.ReadTx) (err error) {
		s, err = tx.Service(ctx, sid)
		return err
	})
	if err != nil {
		return nil, err
	}
	cp := *s
	e.services.put(epoch, sid, &cp)
	return s, nil
}

// subscribeControl drops the caches when another node announces a change.
func (e *Engine) subscribeControl() {
	if e.cfg.Bus == nil {
		return
	}
	_, err := e.cfg.Bus.Subscribe(chorus.ControlTopic, func(ev *chorus.Event) {
		switch ev.Type {
		case chorus.EventServiceChanged:
			e.services.drop()
			e.outboxServiceChanged(ev.ServiceSID)
		case chorus.EventCredentialsChanged, chorus.EventKeysRevoked:
			e.creds.drop()
		}
	})
	if err != nil {
		// Without the control events no cache could be trusted.
		e.log.Error("engine: subscribe to control events; caching nothing", "err", err)
		e.creds.off, e.services.off = true, true
	}
}

// Resync drops every cache: call it when the Bus reports that events may
// have been lost (a NATS reconnect); the gateway's Resync does.
func (e *Engine) Resync() {
	e.creds.drop()
	e.services.drop()
}

// credentialsChanged drops this node's credential cache and tells the
// other nodes, after a committed change of accounts or keys.
func (e *Engine) credentialsChanged(ctx context.Context) {
	e.creds.drop()
	e.announce(ctx, &chorus.Event{Type: chorus.EventCredentialsChanged, ObjectSID: chorus.ControlTopic})
}

// serviceChanged does the same after a committed change of a service.
func (e *Engine) serviceChanged(ctx context.Context, s *chorus.Service) {
	e.services.drop()
	e.outboxServiceChanged(s.SID)
	e.announce(ctx, &chorus.Event{
		Type: chorus.EventServiceChanged, AccountSID: s.AccountSID, ServiceSID: s.SID, ObjectSID: chorus.ControlTopic,
	})
}

// announce publishes a control event and waits until the bus has it
// (Ping flushes NATS): the change is answered only once the other nodes'
// copies are on their way out, which the caller's next request, sent
// after the answer, cannot overtake in practice. Changes of credentials
// and services are rare; the round trip is cheap for them.
func (e *Engine) announce(ctx context.Context, ev *chorus.Event) {
	e.publishAccess(ctx, ev)
	if e.cfg.Bus == nil {
		return
	}
	if err := e.cfg.Bus.Ping(context.WithoutCancel(ctx)); err != nil {
		e.log.Warn("flush a control event", "err", err, "type", string(ev.Type))
	}
}

// outboxServiceChanged tells the outbox, when it caches services (see
// ServiceCache), that one changed: a write committed after the change must
// see the new webhook settings.
func (e *Engine) outboxServiceChanged(sid string) {
	if c, ok := e.cfg.Outbox.(ServiceCache); ok {
		c.ServiceChanged(sid)
	}
}
