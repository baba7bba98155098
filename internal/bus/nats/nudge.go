package nats

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	natsgo "github.com/nats-io/nats.go"
)

// Webhook nudges. One node of a cluster delivers the webhooks of every
// node's changes (the leader); it hears of its own changes at once and of
// the others' at its next poll of the outbox (a second by default). A node
// that commits changes with webhooks to send nudges it on
// <prefix>.webhooks with the services concerned, so that they go out as
// soon as they would from the leader itself. A lost nudge costs nothing
// but that second: the poll still finds every webhook.
//
// Nudges carry the cluster's identity and signature as events do; another
// cluster's, and unsigned ones when a secret is set, are dropped. Without
// a secret, anything NATS lets publish there may make the leader read a
// service's outbox early: the same cost as a write of that service, for
// whoever could publish events on the prefix anyway.

// maxNudgeServices bounds the services one nudge names (a sender splits
// longer lists); maxNudgeBytes bounds what a receiver reads of one.
const (
	maxNudgeServices = 256
	maxNudgeBytes    = maxNudgeServices * 64
)

func (b *Bus) nudgeSubject() string { return b.opts.prefix + ".webhooks" }

// NudgeWebhooks tells the node that delivers the cluster's webhooks that
// services have new ones. It never blocks on the network: a nudge that
// cannot be sent is dropped (the leader's poll finds the webhooks).
func (b *Bus) NudgeWebhooks(services []string) {
	subject := b.nudgeSubject()
	for len(services) > 0 {
		n := min(len(services), maxNudgeServices)
		payload := []byte(strings.Join(services[:n], ","))
		services = services[n:]
		if b.opts.secret != nil {
			payload = appendMAC(b.opts.secret, subject, payload)
		}
		msg := &natsgo.Msg{Subject: subject, Data: payload, Header: b.opts.cluster}
		if err := b.nc.PublishMsg(msg); err != nil && !b.nc.IsClosed() {
			b.log.Debug("nats: webhook nudge", slog.Any(logError, err))
		}
	}
}

// OnWebhookNudge calls fn with the services of every nudge of this
// cluster that another node sends, from NATS's delivery goroutine (fn
// must not block). Call it once.
func (b *Bus) OnWebhookNudge(fn func(services []string)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("nats: webhook nudges: bus closed")
	}
	sub, err := b.nc.Subscribe(b.nudgeSubject(), func(m *natsgo.Msg) {
		data, ok := b.ours(m)
		if !ok || len(data) == 0 || len(data) > maxNudgeBytes {
			return
		}
		fn(strings.Split(string(data), ","))
	})
	if err != nil {
		return err
	}
	return boundControl(sub)
}

// Control subscriptions (hellos, nudges) hold at most this many messages,
// and bytes, not yet handled; past it NATS drops what arrives (a slow
// consumer), which loses no event: a node is heard at its next hello, a
// service's webhooks are found by the leader's poll. NATS's default, 512 Ki
// messages and 64 MiB per subscription, would let a flood pin 64 MiB.
const (
	controlPendingMsgs  = 4096
	controlPendingBytes = 8 << 20
)

func boundControl(sub *natsgo.Subscription) error {
	if err := sub.SetPendingLimits(controlPendingMsgs, controlPendingBytes); err != nil {
		return fmt.Errorf("nats: bound control subscription %s: %w", sub.Subject, err)
	}
	return nil
}

// control reports whether subject is one of the cluster's control
// subjects (hellos, nudges): messages dropped there lose no event, so a
// flood of them that overflows their subscription must not make the node
// read again what its sessions may have missed (lostEvents).
func (b *Bus) control(subject string) bool {
	return subject == b.opts.prefix+".hello" || subject == b.nudgeSubject()
}

// ours returns the payload of a message of this cluster on a control
// subject (hello, nudges), or false when it carries another cluster's
// identity or, with a secret set, no valid signature. Events go through
// receive instead, which counts and logs what it drops.
func (b *Bus) ours(m *natsgo.Msg) ([]byte, bool) {
	if b.opts.cluster != nil {
		if id := m.Header.Get(ClusterHeader); id != "" && id != b.opts.clusterID {
			return nil, false
		}
	}
	if b.opts.secret == nil {
		return m.Data, true
	}
	return verifyMAC(b.opts.secret, m.Subject, m.Data)
}
