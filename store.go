package chorus

import (
	"context"
	"errors"
	"time"
)

// ErrCommitUnknown is wrapped by an Update's error when the transaction's
// outcome is unknown: its COMMIT was sent, and the connection failed before
// the answer came (a database killed or restarted then).
var ErrCommitUnknown = errors.New("the commit's outcome is unknown")

// CommitSettler is implemented by an Update's error wrapping
// ErrCommitUnknown when the store can wait for the lost COMMIT to finish
// (the server may still be running it: a slow sync, a replica's
// confirmation): Settle reports whether it has, so that a read after it
// sees the transaction's outcome.
type CommitSettler interface {
	Settle(ctx context.Context) bool
}

// Store is durable state: credentials, services, objects, items,
// permissions and the per-object event log. Backends live under
// internal/store and all pass internal/store/storetest.
//
// The Store knows storage, not rules: validation, revisions, event ids,
// TTLs and ACLs are the engine's (internal/engine), written once over Tx.
type Store interface {
	// View runs fn against a consistent read-only snapshot.
	View(ctx context.Context, fn func(ReadTx) error) error

	// Update runs fn in a read-write transaction and returns once the
	// transaction is durably committed (fsynced), or with fn's error after
	// rolling back everything fn wrote. When the connection failed during
	// the commit, so that the transaction may or may not have committed,
	// the error wraps ErrCommitUnknown. Backends may run several concurrent
	// Updates in one database transaction (group commit); each fn's writes
	// still commit or roll back as a unit, and fns that touch the same rows
	// see each other's writes in order. fn may run more than once if the
	// backend retries a conflicted transaction, so fn must not have side
	// effects outside tx.
	Update(ctx context.Context, fn func(Tx) error) error

	// Ping checks that the backend is reachable.
	Ping(ctx context.Context) error

	Close() error
}

// ReadTx reads. Lookups of missing rows return an error for which
// errors.Is(err, ErrNotFound) is true (backends return a wrapped
// chorus.ErrNotFound); callers translate it into the kind-specific code.
type ReadTx interface {
	Account(ctx context.Context, sid string) (*Account, error)
	// Accounts returns every account, oldest first.
	Accounts(ctx context.Context) ([]*Account, error)
	APIKey(ctx context.Context, sid string) (*APIKey, error)
	APIKeys(ctx context.Context, accountSID string) ([]*APIKey, error)
	// APIKeyRevoked reports whether key sid was deleted (Tx.DeleteAPIKey):
	// the store remembers revoked SIDs, so that a copy from another store
	// (chorus migrate, import) never brings a revoked key back.
	APIKeyRevoked(ctx context.Context, sid string) (bool, error)
	// SecretRetired reports whether secret was an auth token or API key
	// secret that an update replaced or dropped since (Tx.PutAccount,
	// Tx.PutAPIKey): a node started with the environment of before a
	// rotation must not bring it back.
	SecretRetired(ctx context.Context, secret string) (bool, error)
	// ConsoleSignedOut reports whether the console sign-in signIn (an id
	// its session tokens carry) of credential (an account or API key SID)
	// was signed out (Tx.SignOutConsole).
	ConsoleSignedOut(ctx context.Context, credential, signIn string) (bool, error)
	// OperatorCredentials returns what Tx.PutOperatorCredentials recorded
	// last; ErrNotFound in a store that has none (a new one, or one from
	// before they were recorded). Copies between stores never carry them.
	OperatorCredentials(ctx context.Context) (*OperatorCredentials, error)

	Service(ctx context.Context, sid string) (*Service, error)
	// Services returns the account's services ordered by (DateCreated,
	// SID) after q.After, or with q.Backward those before q.After, newest
	// first. q.Now is ignored: services do not expire.
	Services(ctx context.Context, accountSID string, q ObjectQuery) ([]*Service, error)

	// Object returns an object of kind k by SID, in the service serviceSID
	// (any service when serviceSID is ""). In an Update it also locks the
	// row against concurrent writers until commit.
	Object(ctx context.Context, k Kind, serviceSID, sid string) (*Object, error)
	// ObjectByName returns an object by unique name (locking as Object).
	ObjectByName(ctx context.Context, k Kind, serviceSID, uniqueName string) (*Object, error)
	// Objects returns the service's objects of kind k ordered by
	// (DateCreated, SID) after q.After, or with q.Backward those before
	// q.After, newest first; it hides those expired at q.Now when q.Now is
	// not zero.
	Objects(ctx context.Context, k Kind, serviceSID string, q ObjectQuery) ([]*Object, error)

	// Item returns the list item with index ref.Index or the map item with
	// key ref.Key.
	Item(ctx context.Context, objectSID string, ref ItemRef) (*Item, error)
	// Items returns a page of items in index (lists) or key (maps) order.
	Items(ctx context.Context, objectSID string, q ItemQuery) ([]*Item, error)
	// ItemsOf returns the items of refs that exist, expired ones too, in
	// no particular order: one round trip for many lookups.
	ItemsOf(ctx context.Context, objectSID string, refs []ItemRef) ([]*Item, error)
	// ItemsChangedSince returns the items whose LastEventID is greater
	// than eventID, in event order, at most limit.
	ItemsChangedSince(ctx context.Context, objectSID string, eventID int64, limit int) ([]*Item, error)

	Permission(ctx context.Context, objectSID, identity string) (*Permission, error)
	// Permissions returns an object's permissions ordered by identity
	// (byte order) after q.After, or with q.Backward those before q.After
	// in descending order.
	Permissions(ctx context.Context, objectSID string, q PermissionQuery) ([]*Permission, error)

	// Events returns an object's logged events with ID > afterID in ID
	// order, at most limit.
	Events(ctx context.Context, objectSID string, afterID int64, limit int) ([]*Event, error)
	// LastEventIDs returns the ID of the newest logged event of each of
	// the objects that has one, by object SID. It reads the log, so a
	// deleted object's removal counts while it is logged, and the events
	// of every service that held the SID count (Events returns them too).
	LastEventIDs(ctx context.Context, objectSIDs []string) (map[string]int64, error)
	// EventsOfType returns the logged events of the given types that
	// service serviceSID logged for an object, with afterID < ID <=
	// throughID, in ID order, at most limit.
	EventsOfType(ctx context.Context, serviceSID, objectSID string, types []EventType, afterID, throughID int64, limit int) ([]*Event, error)
	// EventTime returns the creation time of the n-th event (counting
	// from 0) of all objects' events created at from or later, in
	// creation order; ok is false when there are no more than n.
	EventTime(ctx context.Context, from time.Time, n int) (t time.Time, ok bool, err error)

	// ExpiredObjects and ExpiredItems find what the TTL sweeper deletes.
	ExpiredObjects(ctx context.Context, now time.Time, limit int) ([]*Object, error)
	ExpiredItems(ctx context.Context, now time.Time, limit int) ([]*Item, error)

	OutboxReader
}

// Tx reads and writes inside Store.Update.
type Tx interface {
	ReadTx

	// PutAccount inserts or replaces an account, and records the auth
	// tokens it replaces or drops as retired (ReadTx.SecretRetired).
	PutAccount(ctx context.Context, a *Account) error
	// PutAPIKey inserts or replaces a key, and records the secret it
	// replaces as retired.
	PutAPIKey(ctx context.Context, k *APIKey) error
	// DeleteAPIKey deletes key sid and records it as revoked.
	DeleteAPIKey(ctx context.Context, sid string) error
	// PutOperatorCredentials records the operator's credentials,
	// replacing the previous ones.
	PutOperatorCredentials(ctx context.Context, c *OperatorCredentials) error
	// SignOutConsole records that the console sign-in signIn of
	// credential is over, every renewed or copied token of it included,
	// until until (when they expire anyway), and forgets the sign-outs
	// whose until is past.
	SignOutConsole(ctx context.Context, credential, signIn string, until time.Time) error

	// PutService inserts or replaces a service.
	PutService(ctx context.Context, s *Service) error
	// DeleteService deletes a service with all its objects, items,
	// permissions and events.
	DeleteService(ctx context.Context, sid string) error

	// InsertObject inserts a new object. A clash of (ServiceSID, Kind,
	// UniqueName) returns ErrUniqueNameExists.
	InsertObject(ctx context.Context, o *Object) error
	// UpdateObject replaces the row of o.SID.
	UpdateObject(ctx context.Context, o *Object) error
	// DeleteObject deletes an object with its items and permissions. Its
	// events stay until trimmed, so that subscribers can replay the removal.
	DeleteObject(ctx context.Context, sid string) error

	// PutItem inserts or replaces an item.
	PutItem(ctx context.Context, it *Item) error
	DeleteItem(ctx context.Context, objectSID string, ref ItemRef) error

	PutPermission(ctx context.Context, p *Permission) error
	DeletePermission(ctx context.Context, objectSID, identity string) error

	// AppendEvent stores a logged event (e.ID > 0). IDs are allocated by
	// the caller from the object's LastEventID inside the same Update.
	// A store may send it with the transaction's next statement: its
	// error may then come from that statement's method, or from Update
	// itself, and fails the Update either way. Later reads in the same
	// Update see the event.
	AppendEvent(ctx context.Context, e *Event) error
	// TrimEvents deletes the logged events p selects and returns how many
	// it deleted.
	TrimEvents(ctx context.Context, p EventTrim) (int, error)

	OutboxWriter
}

// Cursor is a position in a (DateCreated, SID) ordering; the zero Cursor is
// the start.
type Cursor struct {
	DateCreated time.Time
	SID         string
}

// ObjectQuery selects a page of objects (or services) in (DateCreated, SID)
// order.
type ObjectQuery struct {
	After Cursor
	// Backward selects the objects before After, newest first; with a zero
	// After, the newest objects.
	Backward bool
	Limit    int       // at most Limit rows; <= 0: no limit
	Now      time.Time // hide objects expired at Now; zero: hide nothing
}

// PermissionQuery selects a page of an object's permissions in identity
// (byte) order.
type PermissionQuery struct {
	After string // the identities after After ("": from the first)
	// Backward selects the identities before After in descending order;
	// with After "", the last identities.
	Backward bool
	Limit    int // at most Limit rows; <= 0: no limit
}

// ItemRef names one item: Index for lists, Key for maps.
type ItemRef struct {
	Index int64
	Key   string
}

// ItemQuery selects a page of items of a list (by index) or map (by key).
type ItemQuery struct {
	Kind      Kind // KindList or KindMap: which of FromIndex/FromKey applies
	Desc      bool
	HasFrom   bool
	FromIndex int64
	FromKey   string
	Inclusive bool // with HasFrom: include the item at From
	Limit     int
	Now       time.Time // hide items expired at Now; zero: hide nothing
}

// Bus carries committed events to every node's realtime gateway.
//
// Publish is called after commit, possibly concurrently and out of order;
// a Bus may also lose events (NATS core is at-most-once). Subscribers
// therefore order by Event.ID and fill gaps from the Store's event log.
type Bus interface {
	// Publish hands events to every subscriber of their objects, on every
	// node. It does not block on slow subscribers.
	Publish(ctx context.Context, events ...*Event) error
	// Subscribe calls fn for every event of the object published from now
	// on, until the returned cancel function is called. fn must not block.
	Subscribe(objectSID string, fn func(*Event)) (cancel func(), err error)
	// Ping checks that the bus is reachable.
	Ping(ctx context.Context) error
	Close() error
}

// EventTrim selects the logged events TrimEvents deletes: those created
// before Before (and at After or later, unless After is zero), except,
// while their object exists, those among the Keep newest IDs of the object
// (none when Keep is 0: as IDs count up by one, the newest Keep events).
type EventTrim struct {
	Before time.Time
	After  time.Time
	Keep   int
}
