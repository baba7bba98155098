package nats

import (
	"errors"
	"log/slog"
	"maps"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// HelloInterval is how often, by default, a node that called SayHello
// announces itself on <prefix>.hello.
const HelloInterval = 2 * time.Second

// WithHelloInterval sets how often SayHello announces the node (default
// HelloInterval); tests shorten it.
func WithHelloInterval(d time.Duration) Option { return func(o *options) { o.hello = d } }

// HelloEvery is the interval of SayHello's announcements.
func (b *Bus) HelloEvery() time.Duration { return b.opts.hello }

// SayHello announces node (its identity in the store's heartbeats) on
// <prefix>.hello every HelloEvery until Close, and records the other
// nodes heard there (Heard). The store tells a node which nodes share its
// database; Heard tells it which of them share its bus. A node of the
// database that is never heard has another --bus-prefix, NATS server or
// cluster secret, and the two see each other's writes only through gap
// fills. Hellos carry the cluster's identity and signature as events do;
// another cluster's, and unsigned ones when a secret is set, are not
// counted. Call it once.
func (b *Bus) SayHello(node string) error {
	subject := b.opts.prefix + ".hello"
	b.peersMu.Lock()
	b.peers = make(map[string]time.Time)
	b.peersMu.Unlock()
	// Under b.mu, so that Close, which sets closed under it before it
	// waits for b.wg, never waits while the ticker below is added.
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("nats: say hello: bus closed")
	}
	sub, err := b.nc.Subscribe(subject, func(m *natsgo.Msg) { b.heard(m, node) })
	if err != nil {
		return err
	}
	if err := boundControl(sub); err != nil {
		return err
	}
	payload := []byte(node)
	if b.opts.secret != nil {
		payload = appendMAC(b.opts.secret, subject, payload)
	}
	say := func() {
		msg := &natsgo.Msg{Subject: subject, Data: payload, Header: b.opts.cluster}
		if err := b.nc.PublishMsg(msg); err != nil && !b.nc.IsClosed() {
			b.log.Debug("nats: hello", slog.Any(logError, err))
		}
	}
	say()
	b.wg.Go(func() {
		t := time.NewTicker(b.opts.hello)
		defer t.Stop()
		for {
			select {
			case <-b.done:
				return
			case <-t.C:
				say()
			}
		}
	})
	return nil
}

// heard records the sender of a hello, unless it is self or not of this
// cluster.
func (b *Bus) heard(m *natsgo.Msg, self string) {
	data, ok := b.ours(m) // another cluster's are dropped: receive logs its events
	if !ok || len(data) == 0 || len(data) > maxPeerName {
		return // no node's: the store's node names are far shorter
	}
	node := string(data)
	if node == self {
		return
	}
	now := time.Now()
	b.peersMu.Lock()
	defer b.peersMu.Unlock()
	if _, known := b.peers[node]; !known && len(b.peers) >= maxPeers {
		return // a flood of made-up names (no cluster secret): memory stays bounded
	}
	b.peers[node] = now
}

// Bounds of Heard's memory against hellos that anything NATS lets publish
// may send when the cluster has no secret.
const (
	maxPeerName = 256
	maxPeers    = 1024
)

// Heard returns when each other node was last heard saying hello (none
// before SayHello), for the nodes heard in the last forgetPeersAfter.
func (b *Bus) Heard() map[string]time.Time {
	b.peersMu.Lock()
	defer b.peersMu.Unlock()
	// Every start of a node is a new identity: forget the silent ones.
	maps.DeleteFunc(b.peers, func(_ string, at time.Time) bool { return time.Since(at) > forgetPeersAfter })
	return maps.Clone(b.peers)
}

// forgetPeersAfter bounds Heard's memory of nodes that stopped saying hello.
const forgetPeersAfter = 10 * time.Minute

// ConnectedSince is when the connection to NATS was last (re)established;
// zero while it is down.
func (b *Bus) ConnectedSince() time.Time {
	if !b.nc.IsConnected() {
		return time.Time{}
	}
	return time.Unix(0, b.connectedAt.Load())
}
