package sqlrow

import (
	"github.com/chorus-sync/chorus"
)

// Webhook outbox and reachability state.

// OutboxCols are the outbox columns ScanOutbox reads, in order.
const OutboxCols = `seq, service_sid, order_key, created_at, next_attempt, attempts, last_status, last_error, body, data, item_data`

// ScanOutbox scans a row of OutboxCols.
func ScanOutbox(sc Scanner) (*chorus.OutboxEntry, error) {
	var e chorus.OutboxEntry
	if err := scanOutbox(sc, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// AbandonedCols are the webhooks_abandoned columns ScanAbandoned reads,
// in order: the outbox's, but NULL for the event's data and item data,
// then when the entry was given up on. A listing shows what was given up
// on and why, not the payloads: a page of 1,000 would otherwise read and
// decode up to 32 MB of them (a reviewer's finding). A replay moves them
// in SQL, and the outbox's reads return them.
const AbandonedCols = `seq, service_sid, order_key, created_at, next_attempt, attempts, last_status, last_error, body, NULL, NULL, abandoned_at`

// ScanAbandoned scans a row of AbandonedCols.
func ScanAbandoned(sc Scanner) (*chorus.AbandonedWebhook, error) {
	var a chorus.AbandonedWebhook
	var abandoned int64
	if err := scanOutbox(sc, &a.OutboxEntry, &abandoned); err != nil {
		return nil, err
	}
	a.DateAbandoned = Time(abandoned)
	return &a, nil
}

// scanOutbox scans OutboxCols into e, and the columns after them into
// more.
func scanOutbox(sc Scanner, e *chorus.OutboxEntry, more ...any) error {
	var created, next, attempts, status int64
	var body string
	var data, itemData []byte
	dest := append([]any{&e.Seq, &e.ServiceSID, &e.OrderKey, &created, &next, &attempts, &status, &e.LastError,
		&body, &data, &itemData}, more...)
	if err := sc.Scan(dest...); err != nil {
		return err
	}
	ev, err := DecodeEvent(body, data, itemData)
	if err != nil {
		return err
	}
	e.Event, e.DateCreated, e.NextAttempt = ev, Time(created), Time(next)
	e.Attempts, e.LastStatus = int(attempts), int(status)
	return nil
}

// OfflineCols are the presence_identities columns ScanOffline reads.
const OfflineCols = `service_sid, account_sid, identity, last_endpoint, offline_since`

// ScanOffline scans a row of OfflineCols.
func ScanOffline(sc Scanner) (*chorus.OfflineIdentity, error) {
	var o chorus.OfflineIdentity
	var since int64
	if err := sc.Scan(&o.ServiceSID, &o.AccountSID, &o.Identity, &o.EndpointID, &since); err != nil {
		return nil, err
	}
	o.Since = Time(since)
	return &o, nil
}

// BacklogRow scans a row of (service_sid, COUNT(*), MIN(created_at)).
func BacklogRow(sc Scanner) (*chorus.OutboxBacklog, error) {
	var b chorus.OutboxBacklog
	var n, oldest int64
	if err := sc.Scan(&b.ServiceSID, &n, &oldest); err != nil {
		return nil, err
	}
	b.Pending, b.Oldest = int(n), Time(oldest)
	return &b, nil
}
