package engine

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/chorus-sync/chorus"
)

// Config configures an Engine.
type Config struct {
	Store  chorus.Store
	Bus    chorus.Bus
	Logger *slog.Logger     // default slog.Default()
	Now    func() time.Time // default time.Now

	EventRetention time.Duration // how long events stay replayable; default 24h
	EventKeep      int           // newest events kept per object regardless of age; default 1000
	SweepInterval  time.Duration // TTL sweeper / log trimmer period; default 5s
}

// Engine applies Sync's rules to a Store and publishes committed events on
// a Bus. It is safe for concurrent use.
type Engine struct {
	cfg Config
	log *slog.Logger
}

// New returns an Engine.
func New(cfg Config) *Engine {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.EventRetention == 0 {
		cfg.EventRetention = 24 * time.Hour
	}
	if cfg.EventKeep == 0 {
		cfg.EventKeep = 1000
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = 5 * time.Second
	}
	return &Engine{cfg: cfg, log: cfg.Logger}
}

var errTODO = errors.New("engine: not implemented yet")

// Store is the engine's store.
func (e *Engine) Store() chorus.Store { return e.cfg.Store }

// Bus is the engine's bus.
func (e *Engine) Bus() chorus.Bus { return e.cfg.Bus }

// Run sweeps expired objects and items (deleting them and publishing their
// removal events) and trims the event log, until ctx is done.
func (e *Engine) Run(ctx context.Context) error { return errTODO }

// Bootstrap makes want the valid credentials: it creates the account, key
// and service when absent. With want zero it generates a development
// account, key and default service on first start and returns the stored
// ones afterwards. created reports whether anything was generated.
func (e *Engine) Bootstrap(ctx context.Context, want Credentials) (got Credentials, created bool, err error) {
	return Credentials{}, false, errTODO
}

// Authenticate checks REST Basic credentials (account SID + auth token, or
// API key SID + secret) and returns the account SID, or ErrAuthenticate.
func (e *Engine) Authenticate(ctx context.Context, username, password string) (accountSID string, err error) {
	return "", errTODO
}

// APIKey returns an API key (access token verification).
func (e *Engine) APIKey(ctx context.Context, sid string) (*chorus.APIKey, error) { return nil, errTODO }

// Account returns an account (webhook signing).
func (e *Engine) Account(ctx context.Context, sid string) (*chorus.Account, error) {
	return nil, errTODO
}

// CreateService creates a service in the account.
func (e *Engine) CreateService(ctx context.Context, accountSID string, p ServiceParams) (*chorus.Service, error) {
	return nil, errTODO
}

// Service returns the account's service by SID, or by the alias "default"
// (the account's oldest service). Another account's service is 54056 (403);
// a missing one 54050.
func (e *Engine) Service(ctx context.Context, accountSID, sid string) (*chorus.Service, error) {
	return nil, errTODO
}

// Services pages the account's services.
func (e *Engine) Services(ctx context.Context, accountSID string, p PageRequest) (Page[*chorus.Service], error) {
	return Page[*chorus.Service]{}, errTODO
}

// UpdateService updates a service.
func (e *Engine) UpdateService(ctx context.Context, accountSID, sid string, p ServiceParams) (*chorus.Service, error) {
	return nil, errTODO
}

// DeleteService deletes a service and everything in it.
func (e *Engine) DeleteService(ctx context.Context, accountSID, sid string) error { return errTODO }

// CreateObject creates a document, list, map or stream.
func (e *Engine) CreateObject(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, p CreateObject) (*chorus.Object, error) {
	return nil, errTODO
}

// Object returns an object by SID or unique name. Expired objects are not
// found. A missing object addressed by SID is the kind's not-found code; by
// unique name, also the kind's code (54100 etc.).
func (e *Engine) Object(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, id string) (*chorus.Object, error) {
	return nil, errTODO
}

// Objects pages a service's objects of kind k.
func (e *Engine) Objects(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, p PageRequest) (Page[*chorus.Object], error) {
	return Page[*chorus.Object]{}, errTODO
}

// UpdateObject updates an object; the result's LastEventID is the id of the
// event this write produced.
func (e *Engine) UpdateObject(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, id string, p UpdateObject) (*chorus.Object, error) {
	return nil, errTODO
}

// DeleteObject deletes an object and returns it as it was, with
// LastEventID set to the removal event's id.
func (e *Engine) DeleteObject(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, id string) (*chorus.Object, error) {
	return nil, errTODO
}

// AddListItem appends an item to a list.
func (e *Engine) AddListItem(ctx context.Context, a Actor, svc *chorus.Service, listID string, w ItemWrite) (*chorus.Item, error) {
	return nil, errTODO
}

// WriteItem updates, upserts or creates a list or map item according to
// w.Mode. created reports whether the item is new.
func (e *Engine) WriteItem(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, objectID string, ref chorus.ItemRef, w ItemWrite) (it *chorus.Item, created bool, err error) {
	return nil, false, errTODO
}

// Item returns one item.
func (e *Engine) Item(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, objectID string, ref chorus.ItemRef) (*chorus.Item, error) {
	return nil, errTODO
}

// Items pages a list's or map's items.
func (e *Engine) Items(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, objectID string, p ItemPageRequest) (Page[*chorus.Item], error) {
	return Page[*chorus.Item]{}, errTODO
}

// DeleteItem deletes an item (If-Match optional) and returns it as it was,
// with LastEventID set to the removal event's id and DateUpdated to the
// time of removal.
func (e *Engine) DeleteItem(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, objectID string, ref chorus.ItemRef, ifMatch string) (*chorus.Item, error) {
	return nil, errTODO
}

// PublishMessage publishes a message to a stream.
func (e *Engine) PublishMessage(ctx context.Context, a Actor, svc *chorus.Service, streamID string, data json.RawMessage) (*chorus.StreamMessage, error) {
	return nil, errTODO
}

// Permission returns an identity's permission on an object (54354 when
// none is set).
func (e *Engine) Permission(ctx context.Context, svc *chorus.Service, k chorus.Kind, objectID, identity string) (*chorus.Permission, error) {
	return nil, errTODO
}

// Permissions pages an object's permissions.
func (e *Engine) Permissions(ctx context.Context, svc *chorus.Service, k chorus.Kind, objectID string, p PageRequest) (Page[*chorus.Permission], error) {
	return Page[*chorus.Permission]{}, errTODO
}

// SetPermission upserts an identity's permission on an object.
func (e *Engine) SetPermission(ctx context.Context, svc *chorus.Service, k chorus.Kind, objectID string, p chorus.Permission) (*chorus.Permission, error) {
	return nil, errTODO
}

// DeletePermission removes an identity's permission on an object.
func (e *Engine) DeletePermission(ctx context.Context, svc *chorus.Service, k chorus.Kind, objectID, identity string) error {
	return errTODO
}

// Subscribable checks that a may subscribe to the object with SID sid (it
// exists, is not expired, and a may read it) and returns it. Used by the
// gateway on establish: a 404 or 403 becomes subscription_failed.
func (e *Engine) Subscribable(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, sid string) (*chorus.Object, error) {
	return nil, errTODO
}

// Replay returns what a subscriber at position afterID missed: the logged
// events with ID > afterID in order (at most limit). When the log no longer
// reaches back to afterID+1, it returns synthetic catch-up events instead
// (a document_updated with the current state; *_item_updated for every item
// changed since afterID) and truncated=true.
func (e *Engine) Replay(ctx context.Context, obj *chorus.Object, afterID int64, limit int) (events []*chorus.Event, truncated bool, err error) {
	return nil, false, errTODO
}

// Stats returns live counters.
func (e *Engine) Stats() Stats { return Stats{} }
