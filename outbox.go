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
	// TrimOutbox deletes a service's oldest entries beyond the newest
	// keep and returns how many it deleted.
	TrimOutbox(ctx context.Context, serviceSID string, keep int) (int, error)

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
