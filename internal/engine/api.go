package engine

// This file is the engine's contract with its callers (internal/httpapi for
// REST v1, internal/gateway for the Twilsock/CDS API, cmd/chorus, the admin
// console). Keep signatures stable; add, don't change.

import (
	"encoding/json"
	"time"

	"github.com/chorus-sync/chorus"
)

// Actor is who performs an operation.
type Actor struct {
	// Identity is the access token's identity, or chorus.SystemIdentity for
	// REST callers. It becomes created_by and the webhook Identity.
	Identity string
	// EndpointID identifies the client connection (webhook EndpointId);
	// empty for REST.
	EndpointID string
	// System callers (REST v1, admin) bypass ACLs.
	System bool
}

// SystemActor is the actor of REST v1 and admin calls.
func SystemActor() Actor { return Actor{Identity: chorus.SystemIdentity, System: true} }

// ServiceParams creates or updates a service; nil fields are left as they
// are (or take defaults on create).
type ServiceParams struct {
	UniqueName                    *string // create only (read-only over REST)
	FriendlyName                  *string
	WebhookURL                    *string
	WebhooksFromRestEnabled       *bool
	ReachabilityWebhooksEnabled   *bool
	ACLEnabled                    *bool
	ReachabilityDebouncingEnabled *bool
	ReachabilityDebouncingWindow  *int
}

// CreateObject creates a document, list, map or stream.
type CreateObject struct {
	UniqueName string          // "" for none
	Data       json.RawMessage // documents: initial data (nil = {}); lists: context (nil = none)
	TTL        *int            // seconds; nil or 0 = never expires
}

// UpdateObject changes a document's data and/or any object's TTL (lists:
// also context). At least one field must be set (54010).
type UpdateObject struct {
	Data    json.RawMessage // nil = unchanged; JSON null = 54101 for documents
	TTL     *int
	IfMatch string // documents only; "" = unconditional
}

// WriteMode says what an item write may do.
type WriteMode int

const (
	// Update changes an existing item; a missing item is 54151/54201
	// (REST v1 item POST, CDS list item POST, CDS map item POST).
	Update WriteMode = iota
	// Upsert creates the item when absent (CDS map item PUT without
	// If-Match: -1). With IfMatch set on a missing item the answer is a 412,
	// never a 404: the SDK reads a 404 on a map item PUT as "map removed".
	Upsert
	// CreateOnly creates the item and fails if it exists: REST map item
	// create (409 54208) and CDS PUT with If-Match -1 (412 54208).
	CreateOnly
)

// ItemWrite writes an item.
type ItemWrite struct {
	Mode          WriteMode
	Data          json.RawMessage // nil = unchanged (TTL-only update); required on create
	ItemTTL       *int
	CollectionTTL *int   // re-arms the parent's TTL
	IfMatch       string // "" = unconditional; "-1" = only if absent (maps)
	// ConflictStatus412 makes CreateOnly answer 412 instead of 409 when the
	// item exists (CDS PUT with If-Match: -1).
	ConflictStatus412 bool
}

// PageRequest is REST-style paging of services, objects and permissions.
type PageRequest struct {
	PageSize int    // 0 = default (50); 1..1000
	Token    string // opaque PageToken from a previous page; "" = first page
}

// ItemPageRequest pages list or map items.
type ItemPageRequest struct {
	Order    string // "asc" (default) or "desc"; anything else 54451
	From     string // list: index; map: key; "" = from the start
	Bounds   string // "inclusive" (default) or "exclusive"; anything else 54452
	PageSize int
	Token    string
	// HideExpired hides expired items. Expired items are never shown: the
	// field exists because the CDS API sends it.
	HideExpired bool
}

// Page is one page of results. NextToken and PrevToken are "" at the ends.
type Page[T any] struct {
	Items     []T
	PageSize  int
	NextToken string
	PrevToken string
	// Filters are the Order, From and Bounds an item listing pages by, as
	// the request or, when it sent a PageToken alone, the token's issuer
	// sent them: the paging URLs repeat them. Other listings leave it zero.
	Filters ItemFilters
}

// ItemFilters are an item listing's filters as a client sent them ("" for
// one it left out).
type ItemFilters struct{ Order, From, Bounds string }

// Credentials are the account, API key and default service that `chorus
// serve` bootstraps.
type Credentials struct {
	AccountSID string
	AuthToken  string
	APIKeySID  string
	APISecret  string
	ServiceSID string
}

// Stats are live counts for metrics and the console.
type Stats struct {
	Writes       uint64 // committed mutations since start
	EventsPosted uint64 // events handed to the bus since start
	Started      time.Time
}
