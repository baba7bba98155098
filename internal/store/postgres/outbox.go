package postgres

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/sqlrow"
)

// The webhook outbox and the reachability state (chorus.OutboxReader and
// chorus.OutboxWriter).

func (t *tx) Outbox(ctx context.Context, serviceSID string, perKey, limit int) ([]*chorus.OutboxEntry, error) {
	// The page is chosen on the narrow columns and only its rows are read
	// whole: ranking whole rows sorted every pending body and its data,
	// 43-61 ms against 11-12 ms now for a page of 200 of 10,000 pending
	// (BenchmarkOutboxPage).
	es, err := queryAll(ctx, t, sqlrow.ScanOutbox, `WITH page AS (
			SELECT seq, head_next FROM (
				SELECT seq, ROW_NUMBER() OVER w AS rank, FIRST_VALUE(next_attempt) OVER w AS head_next
				FROM outbox WHERE service_sid = $1
				WINDOW w AS (PARTITION BY order_key ORDER BY seq)) AS ranked
			WHERE rank <= $2 ORDER BY head_next, seq LIMIT $3)
		SELECT `+sqlrow.OutboxCols+` FROM outbox JOIN page USING (seq) ORDER BY page.head_next, seq`, serviceSID, perKey, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("postgres: list outbox of %s: %w", serviceSID, err)
	}
	return es, nil
}

func (t *tx) OutboxBacklog(ctx context.Context) ([]*chorus.OutboxBacklog, error) {
	// One pass over the table: with 200,000 webhooks pending in 100
	// services, 56-59 ms against 215-244 ms for SQLite's walk of the
	// service index, whose counts visit the heap (BenchmarkOutboxBacklog).
	bs, err := queryAll(ctx, t, sqlrow.BacklogRow, `SELECT service_sid, COUNT(*), MIN(created_at) FROM outbox
		GROUP BY service_sid ORDER BY service_sid`)
	if err != nil {
		return nil, fmt.Errorf("postgres: outbox backlog: %w", err)
	}
	return bs, nil
}

func (t *tx) OfflineIdentities(ctx context.Context, before time.Time, limit int) ([]*chorus.OfflineIdentity, error) {
	os, err := queryAll(ctx, t, sqlrow.ScanOffline, `SELECT `+sqlrow.OfflineCols+` FROM presence_identities
		WHERE offline_since IS NOT NULL AND offline_since <= $1 ORDER BY offline_since LIMIT $2`,
		sqlrow.Nanos(before), limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("postgres: list offline identities: %w", err)
	}
	return os, nil
}

func (t *tx) AppendOutbox(ctx context.Context, e *chorus.OutboxEntry) error {
	body, data, itemData, err := sqlrow.EncodeEvent(e.Event)
	if err != nil {
		return outboxError(e.OrderKey, err)
	}
	// Held back like AppendEvent: the sequence numbers the row when the
	// INSERT runs, still in the order of the appends, and e.Seq is left
	// unset (chorus.OutboxWriter).
	return t.hold(ctx, heldWrite{outbox: true, obj: e.OrderKey, args: []any{
		e.ServiceSID, e.OrderKey, sqlrow.Nanos(e.DateCreated), sqlrow.Nanos(e.NextAttempt), e.Attempts,
		e.LastStatus, e.LastError, body, data, itemData,
	}})
}

// sqlInsertOutbox is AppendOutbox's statement.
const sqlInsertOutbox = `INSERT INTO outbox (service_sid, order_key, created_at, next_attempt, attempts,
	last_status, last_error, body, data, item_data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`

// outboxError is AppendOutbox's error for an entry of key.
func outboxError(key string, err error) error {
	return fmt.Errorf("postgres: append outbox entry of %s: %w", key, err)
}

func (t *tx) UpdateOutbox(ctx context.Context, e *chorus.OutboxEntry) error {
	if err := t.execOne(ctx, `UPDATE outbox SET attempts = $1, next_attempt = $2, last_status = $3, last_error = $4
		WHERE seq = $5`, e.Attempts, sqlrow.Nanos(e.NextAttempt), e.LastStatus, e.LastError, e.Seq); err != nil {
		return fmt.Errorf("postgres: update outbox %d: %w", e.Seq, err)
	}
	return nil
}

func (t *tx) DeleteOutbox(ctx context.Context, seq int64) error {
	if _, err := t.exec(ctx, `DELETE FROM outbox WHERE seq = $1`, seq); err != nil {
		return fmt.Errorf("postgres: delete outbox %d: %w", seq, err)
	}
	return nil
}

// abandonCols are the columns an entry keeps when it moves between the
// outbox and webhooks_abandoned.
const abandonCols = `seq, service_sid, order_key, created_at, next_attempt, attempts, last_status, last_error, body, data, item_data`

// noBound stands for "no bound" in the seq and time comparisons below.
const noBound = int64(math.MaxInt64)

func (t *tx) AbandonOutbox(ctx context.Context, e *chorus.OutboxEntry, at time.Time) error {
	// One statement: a row that a concurrent trim moved first is not
	// found by the DELETE (it waits for the trim's lock, then sees the
	// row gone), so nothing is moved twice.
	if _, err := t.exec(ctx, `WITH moved AS (DELETE FROM outbox WHERE seq = $1 RETURNING *)
		INSERT INTO webhooks_abandoned (`+abandonCols+`, abandoned_at)
		SELECT seq, service_sid, order_key, created_at, next_attempt, CAST($2 AS BIGINT), CAST($3 AS BIGINT),
			CAST($4 AS TEXT), body, data, item_data, CAST($5 AS BIGINT)
		FROM moved`, e.Seq, e.Attempts, e.LastStatus, e.LastError, sqlrow.Nanos(at)); err != nil {
		return fmt.Errorf("postgres: abandon outbox %d: %w", e.Seq, err)
	}
	return nil
}

func (t *tx) TrimOutbox(ctx context.Context, serviceSID string, keep int, at time.Time, reason string) (int, error) {
	// One statement, so that what is deleted is what is kept as
	// abandoned: the cut-off is read once, and rows appended meanwhile
	// (past it anyway) or moved by others (the DELETE skips them once
	// their lock is released) are neither lost nor copied twice. Two
	// statements recomputed the cut-off and deleted rows appended between
	// them without keeping them.
	tag, err := t.exec(ctx, `WITH moved AS (DELETE FROM outbox WHERE service_sid = $1 AND seq <= (
			SELECT seq FROM outbox WHERE service_sid = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2) RETURNING *)
		INSERT INTO webhooks_abandoned (`+abandonCols+`, abandoned_at)
		SELECT seq, service_sid, order_key, created_at, next_attempt, attempts, last_status, CAST($3 AS TEXT),
			body, data, item_data, CAST($4 AS BIGINT)
		FROM moved`, serviceSID, keep, reason, sqlrow.Nanos(at))
	if err != nil {
		return 0, fmt.Errorf("postgres: trim outbox of %s: %w", serviceSID, err)
	}
	return int(tag.RowsAffected()), nil
}

func (t *tx) ReplayAbandoned(ctx context.Context, serviceSID string, now time.Time, limit int) (int, error) {
	// One statement, the rows locked as they are chosen (SKIP LOCKED): two
	// replays at once move disjoint rows, and a webhook abandoned while
	// one runs is either moved or left, never deleted unmoved. (Two
	// statements copied the same rows twice, and deleted rows abandoned
	// between them without copying them.)
	tag, err := t.exec(ctx, `WITH moved AS (DELETE FROM webhooks_abandoned WHERE seq IN (
			SELECT seq FROM webhooks_abandoned WHERE service_sid = $1 ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING seq, service_sid, order_key, body, data, item_data)
		INSERT INTO outbox (service_sid, order_key, created_at, next_attempt, attempts, last_status, last_error, body, data, item_data)
		SELECT service_sid, order_key, CAST($3 AS BIGINT), CAST($3 AS BIGINT), 0, 0, '', body, data, item_data
		FROM moved ORDER BY seq`, serviceSID, limitArg(limit), sqlrow.Nanos(now))
	if err != nil {
		return 0, fmt.Errorf("postgres: replay abandoned webhooks of %s: %w", serviceSID, err)
	}
	return int(tag.RowsAffected()), nil
}

func (t *tx) PurgeAbandoned(ctx context.Context, serviceSID string, before time.Time) (int, error) {
	fail := func(err error) (int, error) { return 0, fmt.Errorf("postgres: purge abandoned webhooks: %w", err) }
	cut := noBound
	if !before.IsZero() {
		cut = sqlrow.Nanos(before)
	}
	res, err := t.exec(ctx, `DELETE FROM webhooks_abandoned WHERE (CAST($1 AS TEXT) = '' OR service_sid = $1) AND abandoned_at < $2`,
		serviceSID, cut)
	if err != nil {
		return fail(err)
	}
	return int(res.RowsAffected()), nil
}

func (t *tx) TrimAbandoned(ctx context.Context, serviceSID string, keep int) (int, error) {
	fail := func(err error) (int, error) {
		return 0, fmt.Errorf("postgres: trim abandoned webhooks of %s: %w", serviceSID, err)
	}
	res, err := t.exec(ctx, `DELETE FROM webhooks_abandoned WHERE service_sid = $1 AND seq <= (
		SELECT seq FROM webhooks_abandoned WHERE service_sid = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2)`, serviceSID, keep)
	if err != nil {
		return fail(err)
	}
	return int(res.RowsAffected()), nil
}

func (t *tx) AbandonedWebhooks(ctx context.Context, serviceSID string, beforeSeq int64, limit int) ([]*chorus.AbandonedWebhook, error) {
	if beforeSeq <= 0 {
		beforeSeq = noBound
	}
	as, err := queryAll(ctx, t, sqlrow.ScanAbandoned, `SELECT `+sqlrow.AbandonedCols+` FROM webhooks_abandoned
		WHERE service_sid = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3`, serviceSID, beforeSeq, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("postgres: list abandoned webhooks of %s: %w", serviceSID, err)
	}
	return as, nil
}

func (t *tx) AbandonedCounts(ctx context.Context, serviceSIDs []string) (map[string]int, error) {
	// An index-only count of the services asked about: the console asks
	// for one account's, which must not scan every tenant's rows.
	query, args := `SELECT service_sid, COUNT(*), 0 FROM webhooks_abandoned GROUP BY service_sid`, []any(nil)
	if serviceSIDs != nil {
		query = `SELECT service_sid, COUNT(*), 0 FROM webhooks_abandoned WHERE service_sid = ANY($1) GROUP BY service_sid`
		args = []any{serviceSIDs}
	}
	rows, err := queryAll(ctx, t, sqlrow.BacklogRow, query, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: count abandoned webhooks: %w", err)
	}
	out := make(map[string]int, len(rows))
	for _, r := range rows {
		out[r.ServiceSID] = r.Pending
	}
	return out, nil
}

func (t *tx) ConnectEndpoint(ctx context.Context, e chorus.Endpoint, now time.Time) (bool, error) {
	fail := func(err error) (bool, error) {
		return false, fmt.Errorf("postgres: connect endpoint %s of %q: %w", e.EndpointID, e.Identity, err)
	}
	if _, err := t.exec(ctx, `INSERT INTO presence_nodes (node, heartbeat) VALUES ($1, $2)
		ON CONFLICT (node) DO UPDATE SET heartbeat = excluded.heartbeat`, e.Node, sqlrow.Nanos(now)); err != nil {
		return fail(err)
	}
	// The identity row first: its lock orders concurrent
	// connections and disconnections of one identity.
	res, err := t.exec(ctx, `INSERT INTO presence_identities (service_sid, identity, account_sid, last_endpoint, offline_since)
		VALUES ($1, $2, $3, $4, NULL) ON CONFLICT (service_sid, identity) DO NOTHING`,
		e.ServiceSID, e.Identity, e.AccountSID, e.EndpointID)
	if err != nil {
		return fail(err)
	}
	first := res.RowsAffected() == 1
	if !first {
		// Online already, or offline within the debouncing window: a
		// reconnection cancels the pending endpoint_disconnected.
		if _, err := t.exec(ctx, `UPDATE presence_identities SET offline_since = NULL
			WHERE service_sid = $1 AND identity = $2`, e.ServiceSID, e.Identity); err != nil {
			return fail(err)
		}
	}
	if _, err := t.exec(ctx, `INSERT INTO presence_endpoints (service_sid, identity, node, endpoint_id, sessions)
		VALUES ($1, $2, $3, $4, 1) ON CONFLICT (service_sid, identity, node, endpoint_id)
		DO UPDATE SET sessions = presence_endpoints.sessions + 1`, e.ServiceSID, e.Identity, e.Node, e.EndpointID); err != nil {
		return fail(err)
	}
	return first, nil
}

func (t *tx) DisconnectEndpoint(ctx context.Context, e chorus.Endpoint, now time.Time) error {
	fail := func(err error) error {
		return fmt.Errorf("postgres: disconnect endpoint %s of %q: %w", e.EndpointID, e.Identity, err)
	}
	if _, err := t.exec(ctx, `UPDATE presence_identities SET last_endpoint = $1
		WHERE service_sid = $2 AND identity = $3 AND offline_since IS NULL`, e.EndpointID, e.ServiceSID, e.Identity); err != nil {
		return fail(err)
	}
	if _, err := t.exec(ctx, `UPDATE presence_endpoints SET sessions = sessions - 1
		WHERE service_sid = $1 AND identity = $2 AND node = $3 AND endpoint_id = $4`,
		e.ServiceSID, e.Identity, e.Node, e.EndpointID); err != nil {
		return fail(err)
	}
	if _, err := t.exec(ctx, `DELETE FROM presence_endpoints
		WHERE service_sid = $1 AND identity = $2 AND node = $3 AND endpoint_id = $4 AND sessions <= 0`,
		e.ServiceSID, e.Identity, e.Node, e.EndpointID); err != nil {
		return fail(err)
	}
	if _, err := t.exec(ctx, `UPDATE presence_identities SET offline_since = $1
		WHERE service_sid = $2 AND identity = $3 AND offline_since IS NULL AND NOT EXISTS (
			SELECT 1 FROM presence_endpoints AS p
			WHERE p.service_sid = presence_identities.service_sid AND p.identity = presence_identities.identity)`,
		sqlrow.Nanos(now), e.ServiceSID, e.Identity); err != nil {
		return fail(err)
	}
	return nil
}

func (t *tx) GoneOffline(ctx context.Context, serviceSID, identity string, before time.Time) (bool, error) {
	res, err := t.exec(ctx, `DELETE FROM presence_identities
		WHERE service_sid = $1 AND identity = $2 AND offline_since IS NOT NULL AND offline_since <= $3
			AND NOT EXISTS (SELECT 1 FROM presence_endpoints AS p
				WHERE p.service_sid = presence_identities.service_sid AND p.identity = presence_identities.identity)`,
		serviceSID, identity, sqlrow.Nanos(before))
	if err != nil {
		return false, fmt.Errorf("postgres: identity %q offline: %w", identity, err)
	}
	return res.RowsAffected() == 1, nil
}

func (t *tx) LiveNodes(ctx context.Context, since time.Time) ([]string, error) {
	ns, err := queryAll(ctx, t, sqlrow.ScanString, `SELECT node FROM presence_nodes WHERE heartbeat >= $1 ORDER BY node`, sqlrow.Nanos(since))
	if err != nil {
		return nil, fmt.Errorf("postgres: live nodes: %w", err)
	}
	nodes := make([]string, len(ns))
	for i, n := range ns {
		nodes[i] = *n
	}
	return nodes, nil
}

func (t *tx) NodeHeartbeat(ctx context.Context, node string, now, deadBefore time.Time) (bool, int, error) {
	fail := func(err error) error { return fmt.Errorf("postgres: heartbeat of node %s: %w", node, err) }
	res, err := t.exec(ctx, `UPDATE presence_nodes SET heartbeat = $1 WHERE node = $2`, sqlrow.Nanos(now), node)
	if err != nil {
		return false, 0, fail(err)
	}
	known := res.RowsAffected() == 1
	if !known {
		if _, err := t.exec(ctx, `INSERT INTO presence_nodes (node, heartbeat) VALUES ($1, $2)
			ON CONFLICT (node) DO UPDATE SET heartbeat = excluded.heartbeat`, node, sqlrow.Nanos(now)); err != nil {
			return false, 0, fail(err)
		}
	}
	if deadBefore.IsZero() {
		return known, 0, nil
	}
	// The endpoints of dead (or unknown) nodes go; so do their identities
	// when that left them without an endpoint. The nodes that have
	// endpoints are found by walking presence_endpoints_node from one node
	// to the next (a handful of lookups), not by reading every endpoint
	// row, which took 130-180 ms every heartbeat with 100,000 endpoints.
	res, err = t.exec(ctx, `DELETE FROM presence_endpoints WHERE node IN (
		WITH RECURSIVE nodes (node) AS (
			SELECT MIN(node) FROM presence_endpoints
			UNION ALL
			SELECT (SELECT MIN(e.node) FROM presence_endpoints AS e WHERE e.node > nodes.node)
			FROM nodes WHERE nodes.node IS NOT NULL
		)
		SELECT node FROM nodes WHERE node IS NOT NULL AND node NOT IN (
			SELECT node FROM presence_nodes WHERE heartbeat >= $1))`, sqlrow.Nanos(deadBefore))
	if err != nil {
		return known, 0, fail(err)
	}
	if res.RowsAffected() > 0 {
		if _, err := t.exec(ctx, `UPDATE presence_identities SET offline_since = $1
			WHERE offline_since IS NULL AND NOT EXISTS (SELECT 1 FROM presence_endpoints AS p
				WHERE p.service_sid = presence_identities.service_sid AND p.identity = presence_identities.identity)`,
			sqlrow.Nanos(now)); err != nil {
			return known, 0, fail(err)
		}
	}
	res, err = t.exec(ctx, `DELETE FROM presence_nodes WHERE heartbeat < $1`, sqlrow.Nanos(deadBefore))
	if err != nil {
		return known, 0, fail(err)
	}
	return known, int(res.RowsAffected()), nil
}

func (t *tx) RemoveNode(ctx context.Context, node string) error {
	if _, err := t.exec(ctx, `DELETE FROM presence_nodes WHERE node = $1`, node); err != nil {
		return fmt.Errorf("postgres: remove node %s: %w", node, err)
	}
	return nil
}

// deleteServiceWebhooks deletes a service's outbox and reachability rows.
func (t *tx) deleteServiceWebhooks(ctx context.Context, sid string) error {
	for _, table := range []string{"outbox", "webhooks_abandoned", "presence_endpoints", "presence_identities"} {
		if _, err := t.exec(ctx, `DELETE FROM `+table+` WHERE service_sid = $1`, sid); err != nil {
			return fmt.Errorf("postgres: delete service %s: %s: %w", sid, table, err)
		}
	}
	return nil
}

// Now reads the server's clock (clock_timestamp: the time of the call,
// not of the transaction's start), to the microsecond.
func (t *tx) Now(ctx context.Context) (time.Time, error) {
	ts, err := queryOne(ctx, t, sqlrow.ScanTime, `SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000`)
	if err != nil {
		return time.Time{}, fmt.Errorf("postgres: now: %w", err)
	}
	return ts.UTC(), nil
}
