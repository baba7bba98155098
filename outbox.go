package chorus

import (
	"context"
	"time"
)

// OutboxEntry is a webhook waiting for delivery: written by the engine in
// the transaction that commits its event, deleted once the receiver took
// it or the dispatcher gave up on it.
type OutboxEntry struct {
	// Seq orders the outbox: the store assigns it when the entry is
	// written, increasing in the order of the appends.
	Seq        int64
	ServiceSID string
	// OrderKey groups the entries that must be delivered one after the
	// other, in Seq order: an object's SID, or "identity:<name>" for the
	// reachability events of an identity.
	OrderKey string
	Event    *Event

	Attempts    int       // delivery attempts made so far
	NextAttempt time.Time // not before
	LastStatus  int       // HTTP status of the last attempt; 0: none or no answer
	LastError   string    // why the last attempt failed, for operators
	DateCreated time.Time
}

// AbandonedWebhook is an outbox entry given up on (attempts used up, too
// old, or over the outbox's cap), kept for a while so that an operator can
// look at it and send it again (ReplayAbandoned). Seq is the Seq it had in
// the outbox; LastStatus and LastError say why it was given up on.
type AbandonedWebhook struct {
	OutboxEntry
	DateAbandoned time.Time
}

// OutboxBacklog is a service's pending webhooks.
type OutboxBacklog struct {
	ServiceSID string
	Pending    int
	Oldest     time.Time // DateCreated of the first (lowest Seq) or the earliest pending entry: the same unless nodes' clocks differ
}

// Endpoint is one connected client endpoint of an identity, on one node:
// the cluster-wide reachability state.
type Endpoint struct {
	ServiceSID string
	AccountSID string
	Identity   string
	EndpointID string
	Node       string // the node the endpoint's session runs on
}

// OfflineIdentity is an identity whose last endpoint went away at Since
// and whose endpoint_disconnected webhook is due after its service's
// debouncing window.
type OfflineIdentity struct {
	ServiceSID string
	AccountSID string
	Identity   string
	EndpointID string // the last endpoint that left
	Since      time.Time
}

// OutboxReader reads the webhook outbox and the reachability state.
type OutboxReader interface {
	// Now reads the store's clock. It is the cluster's clock: every node
	// of a cluster reads the same one (PostgreSQL's), so that times one
	// node records and another compares (heartbeats, when an identity
	// went offline) do not depend on how far the nodes' own clocks
	// disagree. A store that one machine's processes share reads that
	// machine's clock.
	Now(ctx context.Context) (time.Time, error)
	// Outbox returns a service's pending entries: the first perKey of each
	// OrderKey, each OrderKey's in Seq order, the OrderKeys in the order
	// their first entry is due (NextAttempt, then Seq), at most limit; so
	// objects whose first entries wait for a retry hide neither the others'
	// later entries nor the objects behind them.
	Outbox(ctx context.Context, serviceSID string, perKey, limit int) ([]*OutboxEntry, error)
	// OutboxBacklog returns every service with pending entries.
	OutboxBacklog(ctx context.Context) ([]*OutboxBacklog, error)
	// OfflineIdentities returns identities that have no endpoint left on
	// any node and went offline at or before before, at most limit.
	OfflineIdentities(ctx context.Context, before time.Time, limit int) ([]*OfflineIdentity, error)
	// LiveNodes returns the nodes whose last heartbeat (NodeHeartbeat) is
	// at or after since, in name order.
	LiveNodes(ctx context.Context, since time.Time) ([]string, error)
	// AbandonedWebhooks returns a service's abandoned webhooks with a Seq
	// below beforeSeq (0: from the newest), newest first, at most limit,
	// without their events' Data and ItemData (nil): ReplayAbandoned
	// keeps those, and Outbox returns them.
	AbandonedWebhooks(ctx context.Context, serviceSID string, beforeSeq int64, limit int) ([]*AbandonedWebhook, error)
	// AbandonedCounts returns how many abandoned webhooks each of the
	// services serviceSIDs (nil: every service) keeps, those with none
	// left out.
	AbandonedCounts(ctx context.Context, serviceSIDs []string) (map[string]int, error)
}

// OutboxWriter writes the webhook outbox and the reachability state.
type OutboxWriter interface {
	// AppendOutbox stores e with a new Seq. Like AppendEvent, a store
	// may send it with the transaction's next statement (its error may
	// then come from that statement's method, and fails the Update either
	// way), so e.Seq need not be set: Outbox reads it back.
	AppendOutbox(ctx context.Context, e *OutboxEntry) error
	// UpdateOutbox records a failed attempt: Attempts, NextAttempt,
	// LastStatus and LastError of the entry e.Seq.
	UpdateOutbox(ctx context.Context, e *OutboxEntry) error
	// DeleteOutbox removes an entry; a missing one is not an error.
	DeleteOutbox(ctx context.Context, seq int64) error
	// AbandonOutbox moves entry e.Seq from the outbox to the abandoned
	// webhooks, given up on at at, with e's Attempts, LastStatus and
	// LastError (why); a missing entry is not an error.
	AbandonOutbox(ctx context.Context, e *OutboxEntry, at time.Time) error
	// TrimOutbox moves a service's oldest entries beyond the newest keep
	// to the abandoned webhooks (at, reason, as AbandonOutbox does) and
	// returns how many it moved.
	TrimOutbox(ctx context.Context, serviceSID string, keep int, at time.Time, reason string) (int, error)
	// ReplayAbandoned moves up to limit of a service's abandoned webhooks,
	// oldest first, back to the outbox as new entries (new Seqs, in their
	// old order) that are due at now, created at now and not yet
	// attempted; it returns how many it moved.
	ReplayAbandoned(ctx context.Context, serviceSID string, now time.Time, limit int) (int, error)
	// PurgeAbandoned deletes the abandoned webhooks of serviceSID (""
	// every service's) given up on before before (zero: all of them) and
	// returns how many it deleted.
	PurgeAbandoned(ctx context.Context, serviceSID string, before time.Time) (int, error)
	// TrimAbandoned deletes a service's oldest abandoned webhooks beyond
	// the newest keep and returns how many it deleted.
	TrimAbandoned(ctx context.Context, serviceSID string, keep int) (int, error)

	// ConnectEndpoint records that e connected and reports whether its
	// identity was offline before (no endpoint on any node, and no
	// debounced disconnection pending).
	ConnectEndpoint(ctx context.Context, e Endpoint, now time.Time) (first bool, err error)
	// DisconnectEndpoint records that e went away at now; when it was its
	// identity's last endpoint, the identity shows in OfflineIdentities.
	DisconnectEndpoint(ctx context.Context, e Endpoint, now time.Time) error
	// GoneOffline removes an identity that is still offline since at or
	// before before, and reports whether it did: the caller then sends
	// endpoint_disconnected.
	GoneOffline(ctx context.Context, serviceSID, identity string, before time.Time) (bool, error)
	// NodeHeartbeat records that node is alive at now and reports whether
	// the store knew it (false on its first heartbeat, and after it was
	// presumed dead: its endpoints are gone then). Unless deadBefore is
	// zero, it also presumes dead the nodes not heard of since deadBefore:
	// it forgets them, disconnects their endpoints, and reports how many
	// it forgot (each is reported once, by the heartbeat that forgot it).
	NodeHeartbeat(ctx context.Context, node string, now, deadBefore time.Time) (known bool, dead int, err error)
	// RemoveNode forgets node without presuming it dead: a node that
	// leaves having handed every change it committed to the Bus. A
	// missing node is not an error.
	RemoveNode(ctx context.Context, node string) error
}
