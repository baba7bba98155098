package chorus

import (
	"encoding/json"
	"time"
)

// EventType names a change, with the names of the Twilio realtime protocol
// and webhooks.
type EventType string

// Event types. The *_created and endpoint_* types are webhook-only: they
// never reach realtime subscribers and take no place in an object's event
// log.
const (
	EventDocumentCreated        EventType = "document_created"
	EventDocumentUpdated        EventType = "document_updated"
	EventDocumentRemoved        EventType = "document_removed"
	EventListCreated            EventType = "list_created"
	EventListItemAdded          EventType = "list_item_added"
	EventListItemUpdated        EventType = "list_item_updated"
	EventListItemRemoved        EventType = "list_item_removed"
	EventListContextUpdated     EventType = "list_context_updated"
	EventListRemoved            EventType = "list_removed"
	EventMapCreated             EventType = "map_created"
	EventMapItemAdded           EventType = "map_item_added"
	EventMapItemUpdated         EventType = "map_item_updated"
	EventMapItemRemoved         EventType = "map_item_removed"
	EventMapRemoved             EventType = "map_removed"
	EventStreamCreated          EventType = "stream_created"
	EventStreamMessagePublished EventType = "stream_message_published"
	EventStreamRemoved          EventType = "stream_removed"

	// Reachability (webhook only): a client endpoint of an identity
	// connected, or the identity's last endpoint went away.
	EventEndpointConnected    EventType = "endpoint_connected"
	EventEndpointDisconnected EventType = "endpoint_disconnected"

	// Access changes (Bus only): they never reach clients, webhooks or an
	// object's log; gateways re-check live sessions and subscriptions.
	//
	// EventPermissionChanged: an identity's permission on the object
	// ObjectSID was set or deleted (Identity names it).
	EventPermissionChanged EventType = "permission_changed"
	// EventServiceChanged: the service ServiceSID was updated (its ACL
	// switch, among others) or deleted. ObjectSID is ControlTopic.
	EventServiceChanged EventType = "service_changed"
	// EventKeysRevoked: the API keys listed in Data (a JSON array of SIDs;
	// empty: every key) of account AccountSID no longer sign valid tokens.
	// ObjectSID is ControlTopic.
	EventKeysRevoked EventType = "keys_revoked"
	// EventCredentialsChanged: an account's auth tokens or API keys were
	// created, changed or deleted; engines drop their credential caches.
	// ObjectSID is ControlTopic.
	EventCredentialsChanged EventType = "credentials_changed"
	// EventResync: a node committed changes it could not publish (its Bus
	// was down) and now can: every gateway reads again what it may have
	// missed (events from the log, access from the store). ObjectSID is
	// ControlTopic.
	EventResync EventType = "resync"
)

// ControlTopic is the Bus "object SID" of cluster-wide control events
// (EventServiceChanged, EventKeysRevoked, EventCredentialsChanged); every
// gateway and engine subscribes to it.
const ControlTopic = "control"

// Control reports whether t is an access change that travels on the Bus
// only.
func (t EventType) Control() bool {
	switch t {
	case EventPermissionChanged, EventServiceChanged, EventKeysRevoked, EventCredentialsChanged, EventResync:
		return true
	}
	return false
}

// Realtime reports whether subscribers of the object receive events of
// type t.
func (t EventType) Realtime() bool {
	switch t {
	case EventDocumentCreated, EventListCreated, EventMapCreated, EventStreamCreated,
		EventEndpointConnected, EventEndpointDisconnected,
		EventPermissionChanged, EventServiceChanged, EventKeysRevoked, EventCredentialsChanged, EventResync:
		return false
	}
	return true
}

// Removal reports whether t is the event of an object's deletion.
func (t EventType) Removal() bool {
	switch t {
	case EventDocumentRemoved, EventListRemoved, EventMapRemoved, EventStreamRemoved:
		return true
	}
	return false
}

// Event is one change to one object. Events with an ID belong to the
// object's ordered log: IDs are allocated in the writing transaction, start
// at 1 and grow by one with every change, and the event is stored in the
// same transaction as the change. Events with ID 0 (stream messages,
// *_created) are only published.
type Event struct {
	Type       EventType `json:"type"`
	ID         int64     `json:"id"`
	AccountSID string    `json:"account_sid"`
	ServiceSID string    `json:"service_sid"`
	ObjectSID  string    `json:"object_sid"`
	Kind       Kind      `json:"kind"`
	UniqueName string    `json:"unique_name,omitempty"`

	// Revision is the object's revision after the change (document, list or
	// map revision).
	Revision string `json:"revision,omitempty"`
	// Data is the document's new data, the list's new context, or the
	// stream message's data.
	Data json.RawMessage `json:"data,omitempty"`

	ItemIndex    int64           `json:"item_index,omitempty"`
	ItemKey      string          `json:"item_key,omitempty"`
	ItemRevision string          `json:"item_revision,omitempty"`
	ItemData     json.RawMessage `json:"item_data,omitempty"` // new data; before removal, the old data
	MessageSID   string          `json:"message_sid,omitempty"`

	DateCreated time.Time  `json:"date_created"` // when the change happened
	DateExpires *time.Time `json:"date_expires,omitempty"`

	// Origin of the change, for webhooks.
	Identity   string `json:"identity,omitempty"`
	EndpointID string `json:"endpoint_id,omitempty"`
	FromREST   bool   `json:"from_rest,omitempty"`
}

// Logged reports whether e has a place in its object's event log.
func (e *Event) Logged() bool { return e.ID > 0 }
