package sqlrow

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/chorus-sync/chorus"
)

// Scanner is one row: *sql.Row, *sql.Rows, pgx.Row, pgx.Rows.
type Scanner interface{ Scan(dest ...any) error }

// Rows is a result set: *sql.Rows, pgx.Rows.
type Rows interface {
	Scanner
	Next() bool
	Err() error
}

// Collect scans every remaining row of rows with scan. It does not close
// rows.
func Collect[T any](rows Rows, scan func(Scanner) (*T, error)) ([]*T, error) {
	var out []*T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// Times are UTC unix nanoseconds; the zero time is math.MinInt64 so that it
// round-trips and sorts first.

// Nanos is t as stored.
func Nanos(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	return t.UnixNano()
}

// Time is the time stored as n (UTC).
func Time(n int64) time.Time {
	if n == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// NullNanos binds an optional time: nil is NULL, else Nanos(*t).
func NullNanos(t *time.Time) any {
	if t == nil {
		return nil
	}
	return Nanos(*t)
}

// NullTime is the optional time scanned as n: NULL is nil.
func NullTime(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := Time(n.Int64)
	return &t
}

// NullString binds s with "" as NULL.
func NullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Blob binds JSON bytes verbatim; nil is NULL (a nil []byte would bind as
// an empty BLOB in SQLite).
func Blob(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

// rawJSON is b as a json.RawMessage; nil (NULL) stays nil.
func rawJSON(b []byte) json.RawMessage {
	if b == nil {
		return nil
	}
	return json.RawMessage(b)
}

// Accounts.

// AccountCols are the accounts columns ScanAccount reads, in order.
const AccountCols = `sid, auth_token, friendly_name, date_created, secondary_auth_token, secondary_date_created`

// AccountArgs are a's values in AccountCols order.
func AccountArgs(a *chorus.Account) []any {
	return []any{a.SID, a.AuthToken, a.FriendlyName, Nanos(a.DateCreated), a.SecondaryAuthToken, Nanos(a.SecondaryDateCreated)}
}

// ScanAccount scans a row of AccountCols.
func ScanAccount(sc Scanner) (*chorus.Account, error) {
	var a chorus.Account
	var dc, sdc int64
	if err := sc.Scan(&a.SID, &a.AuthToken, &a.FriendlyName, &dc, &a.SecondaryAuthToken, &sdc); err != nil {
		return nil, err
	}
	a.DateCreated, a.SecondaryDateCreated = Time(dc), Time(sdc)
	return &a, nil
}

// APIKeyCols are the api_keys columns ScanAPIKey reads, in order.
const APIKeyCols = `sid, account_sid, secret, friendly_name, date_created, main, date_updated`

// APIKeyArgs are k's values in APIKeyCols order.
func APIKeyArgs(k *chorus.APIKey) []any {
	return []any{k.SID, k.AccountSID, k.Secret, k.FriendlyName, Nanos(k.DateCreated), k.Main, Nanos(k.DateUpdated)}
}

// ScanAPIKey scans a row of APIKeyCols.
func ScanAPIKey(sc Scanner) (*chorus.APIKey, error) {
	var k chorus.APIKey
	var dc, du int64
	if err := sc.Scan(&k.SID, &k.AccountSID, &k.Secret, &k.FriendlyName, &dc, &k.Main, &du); err != nil {
		return nil, err
	}
	k.DateCreated, k.DateUpdated = Time(dc), Time(du)
	return &k, nil
}

// ServiceCols are the services columns ScanService reads, in order.
const ServiceCols = `sid, account_sid, unique_name, friendly_name, webhook_url,
	webhooks_from_rest_enabled, reachability_webhooks_enabled, acl_enabled,
	reachability_debouncing_enabled, reachability_debouncing_window, date_created, date_updated`

// ScanService scans a row of ServiceCols.
func ScanService(sc Scanner) (*chorus.Service, error) {
	var s chorus.Service
	var dc, du, window int64
	if err := sc.Scan(&s.SID, &s.AccountSID, &s.UniqueName, &s.FriendlyName, &s.WebhookURL,
		&s.WebhooksFromRestEnabled, &s.ReachabilityWebhooksEnabled, &s.ACLEnabled,
		&s.ReachabilityDebouncingEnabled, &window, &dc, &du); err != nil {
		return nil, err
	}
	s.ReachabilityDebouncingWindow = int(window)
	s.DateCreated, s.DateUpdated = Time(dc), Time(du)
	return &s, nil
}

// ObjectCols are the objects columns ScanObject reads, in order.
const ObjectCols = `kind, sid, account_sid, service_sid, unique_name, revision, data,
	last_event_id, next_index, created_by, date_created, date_updated, date_expires`

// ScanObject scans a row of ObjectCols.
func ScanObject(sc Scanner) (*chorus.Object, error) {
	var o chorus.Object
	var kind string
	var un sql.NullString
	var data []byte
	var dc, du int64
	var de sql.NullInt64
	if err := sc.Scan(&kind, &o.SID, &o.AccountSID, &o.ServiceSID, &un, &o.Revision, &data,
		&o.LastEventID, &o.NextIndex, &o.CreatedBy, &dc, &du, &de); err != nil {
		return nil, err
	}
	o.Kind = chorus.Kind(kind)
	o.UniqueName = un.String
	o.Data = rawJSON(data)
	o.DateCreated, o.DateUpdated = Time(dc), Time(du)
	o.DateExpires = NullTime(de)
	return &o, nil
}

// ItemCols are the items columns ScanItem reads, in order.
const ItemCols = `kind, object_sid, idx, key, data, revision, last_event_id,
	created_by, date_created, date_updated, date_expires`

// ScanItem scans a row of ItemCols.
func ScanItem(sc Scanner) (*chorus.Item, error) {
	var it chorus.Item
	var kind string
	var data []byte
	var dc, du int64
	var de sql.NullInt64
	if err := sc.Scan(&kind, &it.ObjectSID, &it.Index, &it.Key, &data, &it.Revision,
		&it.LastEventID, &it.CreatedBy, &dc, &du, &de); err != nil {
		return nil, err
	}
	it.Kind = chorus.Kind(kind)
	it.Data = rawJSON(data)
	it.DateCreated, it.DateUpdated = Time(dc), Time(du)
	it.DateExpires = NullTime(de)
	return &it, nil
}

// PermissionCols are the permissions columns ScanPermission reads, in
// order.
const PermissionCols = `object_sid, identity, read, write, manage`

// ScanPermission scans a row of PermissionCols.
func ScanPermission(sc Scanner) (*chorus.Permission, error) {
	var p chorus.Permission
	if err := sc.Scan(&p.ObjectSID, &p.Identity, &p.Read, &p.Write, &p.Manage); err != nil {
		return nil, err
	}
	return &p, nil
}

// Events. The body is the event's JSON without Data and ItemData, which are
// stored verbatim beside it (encoding/json would compact and escape them).

// EventCols are the events columns ScanEvent reads, in order.
const EventCols = `body, data, item_data`

// EncodeEvent returns the body, data and item_data values to store e as,
// ready to bind: body is TEXT; a nil Data or ItemData is NULL.
func EncodeEvent(e *chorus.Event) (body string, data, itemData any, err error) {
	var buf [512]byte
	b, err := appendEventBody(buf[:0], e)
	if err != nil {
		return "", nil, nil, err
	}
	return string(b), Blob(e.Data), Blob(e.ItemData), nil
}

// EventTypePrefix is how the body EncodeEvent stores for an event of type
// t starts, and no other type's body: every body starts with its type.
func EventTypePrefix(t chorus.EventType) string {
	return string(appendString([]byte(`{"type":`), string(t))) + ","
}

// DecodeEvent is the event stored as body, data and itemData (nil: NULL).
func DecodeEvent(body string, data, itemData []byte) (*chorus.Event, error) {
	var e chorus.Event
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	e.Data, e.ItemData = rawJSON(data), rawJSON(itemData)
	return &e, nil
}

// ScanTime scans a row of one time column (Nanos).
func ScanTime(sc Scanner) (*time.Time, error) {
	var n int64
	if err := sc.Scan(&n); err != nil {
		return nil, err
	}
	t := Time(n)
	return &t, nil
}

// ScanString scans a row of one text column.
func ScanString(sc Scanner) (*string, error) {
	var v string
	if err := sc.Scan(&v); err != nil {
		return nil, err
	}
	return &v, nil
}

// ScanEvent scans a row of EventCols.
func ScanEvent(sc Scanner) (*chorus.Event, error) {
	var body string
	var data, itemData []byte
	if err := sc.Scan(&body, &data, &itemData); err != nil {
		return nil, err
	}
	return DecodeEvent(body, data, itemData)
}

// LastEventID is a row of ReadTx.LastEventIDs' query: an object's SID and
// the ID of its newest logged event (nil: none).
type LastEventID struct {
	ObjectSID string
	ID        *int64
}

// LastEventIDMap is ReadTx.LastEventIDs' result from its query's rows:
// the objects that have a logged event.
func LastEventIDMap(rows []*LastEventID) map[string]int64 {
	out := make(map[string]int64, len(rows))
	for _, l := range rows {
		if l.ID != nil {
			out[l.ObjectSID] = *l.ID
		}
	}
	return out
}

// ScanLastEventID scans a row of (object SID, MAX(id)).
func ScanLastEventID(sc Scanner) (*LastEventID, error) {
	var l LastEventID
	if err := sc.Scan(&l.ObjectSID, &l.ID); err != nil {
		return nil, err
	}
	return &l, nil
}
