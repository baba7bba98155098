package chorus

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits documented by Twilio and enforced by Chorus.
const (
	MaxDataBytes          = 16 * 1024 // document, list item and map item data
	MaxMessageBytes       = 4 * 1024  // stream message data
	MaxUniqueNameLen      = 320
	MaxKeyLen             = 320
	MaxIdentityLen        = 256
	MaxTTL                = 31_536_000 // seconds; 0 means "never expires"
	DefaultPageSize       = 50
	MaxPageSize           = 1000
	MaxSubscriptionsPerWS = 2000
)

// CompactJSON returns b compacted, as the stores hold data, and reports
// whether b is JSON text in valid UTF-8 (json.Valid does not check the
// encoding). Stored data is copied into REST and CDS answers as it is, so
// every way into a store (a write, an import) checks data with it. A raw
// NUL is invalid JSON; an escaped \u0000 is valid and kept (PostgreSQL
// stores data as BYTEA, so it round-trips).
func CompactJSON(b []byte) (json.RawMessage, bool) {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil || !utf8.Valid(b) {
		return nil, false
	}
	return json.RawMessage(buf.Bytes()), true
}

// SystemIdentity is the created_by and webhook Identity of REST changes.
const SystemIdentity = "system"

// ReservedIdentity reports whether no access token may carry id: an
// empty identity, or SystemIdentity in any case, which would pass for
// REST in created_by and webhooks. Spaces and invisible format characters
// (a zero-width space) are left out of the comparison: "system " and
// "sys\u200btem" look the same as REST's in a console or a log.
func ReservedIdentity(id string) bool {
	bare := strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) {
			return -1
		}
		return r
	}, id)
	return bare == "" || strings.EqualFold(bare, SystemIdentity)
}

// ValidIdentity reports whether id can be an identity: 1 to
// MaxIdentityLen characters of valid UTF-8 without NUL (which no
// PostgreSQL text column holds, and which REST refuses in a permission's
// identity). Access tokens with another identity are refused.
func ValidIdentity(id string) bool {
	n := utf8.RuneCountInString(id)
	return n >= 1 && n <= MaxIdentityLen && utf8.ValidString(id) && strings.IndexByte(id, 0) < 0
}

// Kind is the type of a Sync object.
type Kind string

// The four kinds of Sync object.
const (
	KindDocument Kind = "document"
	KindList     Kind = "list"
	KindMap      Kind = "map"
	KindStream   Kind = "stream"
)

// Kinds lists every kind, in documentation order.
var Kinds = []Kind{KindDocument, KindList, KindMap, KindStream}

// Prefix is the SID prefix of objects of kind k.
func (k Kind) Prefix() string {
	switch k {
	case KindDocument:
		return PrefixDocument
	case KindList:
		return PrefixList
	case KindMap:
		return PrefixMap
	case KindStream:
		return PrefixStream
	}
	return ""
}

// Collection is the URL path segment of objects of kind k in the REST and
// CDS APIs: "Documents", "Lists", "Maps" or "Streams".
func (k Kind) Collection() string {
	switch k {
	case KindDocument:
		return "Documents"
	case KindList:
		return "Lists"
	case KindMap:
		return "Maps"
	case KindStream:
		return "Streams"
	}
	return ""
}

// NotFound is the error for a missing object of kind k.
func (k Kind) NotFound() *Error {
	switch k {
	case KindDocument:
		return ErrDocumentNotFound
	case KindList:
		return ErrListNotFound
	case KindMap:
		return ErrMapNotFound
	case KindStream:
		return ErrStreamNotFound
	}
	return ErrNotFound
}

// ItemNotFound is the error for a missing item of a list or map.
func (k Kind) ItemNotFound() *Error {
	if k == KindMap {
		return ErrMapItemNotFound
	}
	return ErrListItemNotFound
}

// KindOfSID returns the kind whose prefix sid carries.
func KindOfSID(sid string) (Kind, bool) {
	for _, k := range Kinds {
		if IsSID(k.Prefix(), sid) {
			return k, true
		}
	}
	return "", false
}

// Account is a tenant. Its auth token authenticates REST calls and signs
// webhooks; while a rotation is under way the secondary auth token
// authenticates REST calls too. An account whose AuthToken is "" is
// revoked: nothing authenticates as it.
type Account struct {
	SID          string
	AuthToken    string
	FriendlyName string
	DateCreated  time.Time
	// SecondaryAuthToken is "" when there is none.
	SecondaryAuthToken   string
	SecondaryDateCreated time.Time
}

// OperatorCredentials names the credentials a server last started with
// (generated on its first start, or given in TWILIO_*): what `chorus admin
// credentials`, `chorus token` and the quickstart's /token use. A store
// holds them as SIDs only; the secrets stay with the account and key.
type OperatorCredentials struct {
	AccountSID string
	APIKeySID  string
	ServiceSID string // "" when none was named
}

// APIKey is a credential of an account: REST Basic auth and the HMAC key of
// access tokens. A main key (the operator's, Twilio's "Main" key) may
// manage the account's keys and auth tokens; a standard key may not.
type APIKey struct {
	SID          string
	AccountSID   string
	Secret       string
	FriendlyName string
	Main         bool
	DateCreated  time.Time
	DateUpdated  time.Time
}

// Service is a Sync service instance: the namespace of objects.
type Service struct {
	SID                           string
	AccountSID                    string
	UniqueName                    string // "" when none
	FriendlyName                  string
	WebhookURL                    string
	WebhooksFromRestEnabled       bool
	ReachabilityWebhooksEnabled   bool
	ACLEnabled                    bool
	ReachabilityDebouncingEnabled bool
	ReachabilityDebouncingWindow  int // milliseconds
	DateCreated                   time.Time
	DateUpdated                   time.Time
}

// Object is a Document, List, Map or Stream. Fields that a kind does not use
// stay zero.
type Object struct {
	Kind        Kind
	SID         string
	AccountSID  string
	ServiceSID  string
	UniqueName  string          // "" when none
	Revision    int64           // shown as lower-case hex, see RevisionString
	Data        json.RawMessage // document data; list context; nil otherwise
	LastEventID int64           // id of the object's latest event; 0 before any
	NextIndex   int64           // lists: the index the next pushed item gets
	CreatedBy   string
	DateCreated time.Time
	DateUpdated time.Time
	DateExpires *time.Time // nil: never expires
}

// RevisionString is the opaque revision clients see and send in If-Match.
func (o *Object) RevisionString() string { return FormatRevision(o.Revision) }

// Expired reports whether the object's TTL has passed at now.
func (o *Object) Expired(now time.Time) bool { return expired(o.DateExpires, now) }

// Item is an element of a List (by Index) or a Map (by Key).
type Item struct {
	Kind        Kind // KindList or KindMap
	ObjectSID   string
	Index       int64  // lists
	Key         string // maps
	Data        json.RawMessage
	Revision    int64
	LastEventID int64 // id of the event of the item's latest change
	CreatedBy   string
	DateCreated time.Time
	DateUpdated time.Time
	DateExpires *time.Time
}

// RevisionString is the opaque revision clients see and send in If-Match.
func (it *Item) RevisionString() string { return FormatRevision(it.Revision) }

// Expired reports whether the item's TTL has passed at now.
func (it *Item) Expired(now time.Time) bool { return expired(it.DateExpires, now) }

// Permission is the access an identity has to one object when the service
// has ACLs enabled.
type Permission struct {
	ObjectSID string
	Identity  string
	Read      bool
	Write     bool
	Manage    bool
}

// StreamMessage is an ephemeral message published to a stream.
type StreamMessage struct {
	SID  string
	Data json.RawMessage
}

// FormatRevision renders a revision counter the way Twilio does.
func FormatRevision(r int64) string { return strconv.FormatInt(r, 16) }

// ParseRevision parses a revision as sent in If-Match: optionally quoted
// (an ETag), lower- or upper-case hex.
func ParseRevision(s string) (int64, error) {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	if len(s) >= 2 && s[:2] == "W/" {
		return ParseRevision(s[2:])
	}
	r, err := strconv.ParseInt(s, 16, 64)
	if err != nil || r < 0 || s == "" {
		return 0, Wrap(ErrInvalidIfMatch, err)
	}
	return r, nil
}

func expired(exp *time.Time, now time.Time) bool {
	return exp != nil && !now.Before(*exp)
}

// ExpiresAt turns a TTL in seconds into an expiry time; 0 means never.
func ExpiresAt(now time.Time, ttl int) *time.Time {
	if ttl <= 0 {
		return nil
	}
	t := now.Add(time.Duration(ttl) * time.Second)
	return &t
}
