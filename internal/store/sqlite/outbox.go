package sqlite

import (
	"context"
	"encoding/json"
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
	// 86-96 ms against 39 ms now for a page of 200 of 10,000 pending
	// (BenchmarkOutboxPage).
	es, err := queryAll(ctx, t, sqlrow.ScanOutbox, `WITH page AS (
			SELECT seq, head_next FROM (
				SELECT seq, ROW_NUMBER() OVER w AS rank, FIRST_VALUE(next_attempt) OVER w AS head_next
				FROM outbox WHERE service_sid = ?
				WINDOW w AS (PARTITION BY order_key ORDER BY seq)) AS ranked
			WHERE rank <= ? ORDER BY head_next, seq LIMIT ?)
		SELECT `+sqlrow.OutboxCols+` FROM outbox JOIN page USING (seq) ORDER BY page.head_next, seq`, serviceSID, perKey, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlite: list outbox of %s: %w", serviceSID, err)
	}
	return es, nil
}

func (t *tx) OutboxBacklog(ctx context.Context) ([]*chorus.OutboxBacklog, error) {
	// The services are found by walking outbox_service from one service to
	// the next, each counted on that index and dated by its first entry:
	// one GROUP BY read every row of the table, 4 s every second for the
	// leader's sweep with 1M webhooks pending (receivers down).
	bs, err := queryAll(ctx, t, sqlrow.BacklogRow, `WITH RECURSIVE svc (sid) AS (
			SELECT MIN(service_sid) FROM outbox
			UNION ALL
			SELECT (SELECT MIN(o.service_sid) FROM outbox AS o WHERE o.service_sid > svc.sid)
			FROM svc WHERE svc.sid IS NOT NULL
		)
		SELECT sid,
			(SELECT COUNT(*) FROM outbox AS o WHERE o.service_sid = svc.sid),
			(SELECT o.created_at FROM outbox AS o WHERE o.service_sid = svc.sid ORDER BY o.seq LIMIT 1)
		FROM svc WHERE sid IS NOT NULL ORDER BY sid`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: outbox backlog: %w", err)
	}
	return bs, nil
}

func (t *tx) OfflineIdentities(ctx context.Context, before time.Time, limit int) ([]*chorus.OfflineIdentity, error) {
	os, err := queryAll(ctx, t, sqlrow.ScanOffline, `SELECT `+sqlrow.OfflineCols+` FROM presence_identities
		WHERE offline_since IS NOT NULL AND offline_since <= ? ORDER BY offline_since LIMIT ?`,
		sqlrow.Nanos(before), limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlite: list offline identities: %w", err)
	}
	return os, nil
}

func (t *tx) AppendOutbox(ctx context.Context, e *chorus.OutboxEntry) error {
	body, data, itemData, err := sqlrow.EncodeEvent(e.Event)
	if err != nil {
		return fmt.Errorf("sqlite: append outbox: %w", err)
	}
	res, err := t.exec(ctx, `INSERT INTO outbox (service_sid, order_key, created_at, next_attempt, attempts,
			last_status, last_error, body, data, item_data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ServiceSID, e.OrderKey, sqlrow.Nanos(e.DateCreated), sqlrow.Nanos(e.NextAttempt), e.Attempts,
		e.LastStatus, e.LastError, body, data, itemData)
	if err != nil {
		return fmt.Errorf("sqlite: append outbox: %w", err)
	}
	if e.Seq, err = res.LastInsertId(); err != nil {
		return fmt.Errorf("sqlite: append outbox: %w", err)
	}
	return nil
}

func (t *tx) UpdateOutbox(ctx context.Context, e *chorus.OutboxEntry) error {
	if err := t.execOne(ctx, `UPDATE outbox SET attempts = ?, next_attempt = ?, last_status = ?, last_error = ?
		WHERE seq = ?`, e.Attempts, sqlrow.Nanos(e.NextAttempt), e.LastStatus, e.LastError, e.Seq); err != nil {
		return fmt.Errorf("sqlite: update outbox %d: %w", e.Seq, err)
	}
	return nil
}

func (t *tx) DeleteOutbox(ctx context.Context, seq int64) error {
	if _, err := t.exec(ctx, `DELETE FROM outbox WHERE seq = ?`, seq); err != nil {
		return fmt.Errorf("sqlite: delete outbox %d: %w", seq, err)
	}
	return nil
}

// abandonCols are the columns an entry keeps when it moves between the
// outbox and webhooks_abandoned.
const abandonCols = `seq, service_sid, order_key, created_at, next_attempt, attempts, last_status, last_error, body, data, item_data`

// noBound stands for "no bound" in the seq and time comparisons below.
const noBound = int64(math.MaxInt64)

func (t *tx) AbandonOutbox(ctx context.Context, e *chorus.OutboxEntry, at time.Time) error {
	if _, err := t.exec(ctx, `INSERT INTO webhooks_abandoned (`+abandonCols+`, abandoned_at)
		SELECT seq, service_sid, order_key, created_at, next_attempt, CAST(?2 AS BIGINT), CAST(?3 AS BIGINT),
			CAST(?4 AS TEXT), body, data, item_data, CAST(?5 AS BIGINT)
		FROM outbox WHERE seq = ?1`, e.Seq, e.Attempts, e.LastStatus, e.LastError, sqlrow.Nanos(at)); err != nil {
		return fmt.Errorf("sqlite: abandon outbox %d: %w", e.Seq, err)
	}
	if _, err := t.exec(ctx, `DELETE FROM outbox WHERE seq = ?1`, e.Seq); err != nil {
		return fmt.Errorf("sqlite: abandon outbox %d: %w", e.Seq, err)
	}
	return nil
}

func (t *tx) TrimOutbox(ctx context.Context, serviceSID string, keep int, at time.Time, reason string) (int, error) {
	// The entries beyond the newest keep: seq up to the keep+1-th newest's.
	// (One writer: the two statements see the same rows.)
	const beyond = `service_sid = ?1 AND seq <= (
		SELECT seq FROM outbox WHERE service_sid = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)`
	_, err := t.exec(ctx, `INSERT INTO webhooks_abandoned (`+abandonCols+`, abandoned_at)
		SELECT seq, service_sid, order_key, created_at, next_attempt, attempts, last_status, CAST(?3 AS TEXT), body, data, item_data,
			CAST(?4 AS BIGINT)
		FROM outbox WHERE `+beyond, serviceSID, keep, reason, sqlrow.Nanos(at))
	n := 0
	if err == nil {
		n, err = t.execCount(ctx, `DELETE FROM outbox WHERE `+beyond, serviceSID, keep)
	}
	if err != nil {
		return 0, fmt.Errorf("sqlite: trim outbox of %s: %w", serviceSID, err)
	}
	return n, nil
}

func (t *tx) ReplayAbandoned(ctx context.Context, serviceSID string, now time.Time, limit int) (int, error) {
	const oldest = `seq IN (SELECT seq FROM webhooks_abandoned WHERE service_sid = ?1 ORDER BY seq LIMIT ?2)`
	_, err := t.exec(ctx, `INSERT INTO outbox (service_sid, order_key, created_at, next_attempt, attempts,
			last_status, last_error, body, data, item_data)
		SELECT service_sid, order_key, CAST(?3 AS BIGINT), CAST(?3 AS BIGINT), 0, 0, '', body, data, item_data
		FROM webhooks_abandoned WHERE `+oldest+` ORDER BY seq`, serviceSID, limitArg(limit), sqlrow.Nanos(now))
	n := 0
	if err == nil {
		n, err = t.execCount(ctx, `DELETE FROM webhooks_abandoned WHERE `+oldest, serviceSID, limitArg(limit))
	}
	if err != nil {
		return 0, fmt.Errorf("sqlite: replay abandoned webhooks of %s: %w", serviceSID, err)
	}
	return n, nil
}

func (t *tx) PurgeAbandoned(ctx context.Context, serviceSID string, before time.Time) (int, error) {
	cut := noBound
	if !before.IsZero() {
		cut = sqlrow.Nanos(before)
	}
	n, err := t.execCount(ctx, `DELETE FROM webhooks_abandoned WHERE (CAST(?1 AS TEXT) = '' OR service_sid = ?1) AND abandoned_at < ?2`,
		serviceSID, cut)
	if err != nil {
		return 0, fmt.Errorf("sqlite: purge abandoned webhooks: %w", err)
	}
	return n, nil
}

func (t *tx) TrimAbandoned(ctx context.Context, serviceSID string, keep int) (int, error) {
	n, err := t.execCount(ctx, `DELETE FROM webhooks_abandoned WHERE service_sid = ?1 AND seq <= (
		SELECT seq FROM webhooks_abandoned WHERE service_sid = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)`, serviceSID, keep)
	if err != nil {
		return 0, fmt.Errorf("sqlite: trim abandoned webhooks of %s: %w", serviceSID, err)
	}
	return n, nil
}

func (t *tx) AbandonedWebhooks(ctx context.Context, serviceSID string, beforeSeq int64, limit int) ([]*chorus.AbandonedWebhook, error) {
	if beforeSeq <= 0 {
		beforeSeq = noBound
	}
	as, err := queryAll(ctx, t, sqlrow.ScanAbandoned, `SELECT `+sqlrow.AbandonedCols+` FROM webhooks_abandoned
		WHERE service_sid = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3`, serviceSID, beforeSeq, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlite: list abandoned webhooks of %s: %w", serviceSID, err)
	}
	return as, nil
}

func (t *tx) AbandonedCounts(ctx context.Context, serviceSIDs []string) (map[string]int, error) {
	// An index-only count of the services asked about: the console asks
	// for one account's, which must not scan every tenant's rows.
	query, args := `SELECT service_sid, COUNT(*), 0 FROM webhooks_abandoned GROUP BY service_sid`, []any(nil)
	if serviceSIDs != nil {
		list, err := json.Marshal(serviceSIDs)
		if err != nil {
			return nil, fmt.Errorf("sqlite: count abandoned webhooks: %w", err)
		}
		query = `SELECT service_sid, COUNT(*), 0 FROM webhooks_abandoned WHERE service_sid IN (SELECT value FROM json_each(?)) GROUP BY service_sid`
		args = []any{string(list)}
	}
	rows, err := queryAll(ctx, t, sqlrow.BacklogRow, query, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: count abandoned webhooks: %w", err)
	}
	out := make(map[string]int, len(rows))
	for _, r := range rows {
		out[r.ServiceSID] = r.Pending
	}
	return out, nil
}

func (t *tx) ConnectEndpoint(ctx context.Context, e chorus.Endpoint, now time.Time) (bool, error) {
	fail := func(err error) (bool, error) {
		return false, fmt.Errorf("sqlite: connect endpoint %s of %q: %w", e.EndpointID, e.Identity, err)
	}
	if _, err := t.exec(ctx, `INSERT INTO presence_nodes (node, heartbeat) VALUES (?, ?)
		ON CONFLICT (node) DO UPDATE SET heartbeat = excluded.heartbeat`, e.Node, sqlrow.Nanos(now)); err != nil {
		return fail(err)
	}
	// The identity row first: in PostgreSQL its lock orders concurrent
	// connections and disconnections of one identity.
	res, err := t.exec(ctx, `INSERT INTO presence_identities (service_sid, identity, account_sid, last_endpoint, offline_since)
		VALUES (?, ?, ?, ?, NULL) ON CONFLICT (service_sid, identity) DO NOTHING`,
		e.ServiceSID, e.Identity, e.AccountSID, e.EndpointID)
	if err != nil {
		return fail(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fail(err)
	}
	first := n == 1
	if !first {
		// Online already, or offline within the debouncing window: a
		// reconnection cancels the pending endpoint_disconnected.
		if _, err := t.exec(ctx, `UPDATE presence_identities SET offline_since = NULL
			WHERE service_sid = ? AND identity = ?`, e.ServiceSID, e.Identity); err != nil {
			return fail(err)
		}
	}
	if _, err := t.exec(ctx, `INSERT INTO presence_endpoints (service_sid, identity, node, endpoint_id, sessions)
		VALUES (?, ?, ?, ?, 1) ON CONFLICT (service_sid, identity, node, endpoint_id)
		DO UPDATE SET sessions = presence_endpoints.sessions + 1`, e.ServiceSID, e.Identity, e.Node, e.EndpointID); err != nil {
		return fail(err)
	}
	return first, nil
}

func (t *tx) DisconnectEndpoint(ctx context.Context, e chorus.Endpoint, now time.Time) error {
	fail := func(err error) error {
		return fmt.Errorf("sqlite: disconnect endpoint %s of %q: %w", e.EndpointID, e.Identity, err)
	}
	if _, err := t.exec(ctx, `UPDATE presence_identities SET last_endpoint = ?
		WHERE service_sid = ? AND identity = ? AND offline_since IS NULL`, e.EndpointID, e.ServiceSID, e.Identity); err != nil {
		return fail(err)
	}
	if _, err := t.exec(ctx, `UPDATE presence_endpoints SET sessions = sessions - 1
		WHERE service_sid = ? AND identity = ? AND node = ? AND endpoint_id = ?`,
		e.ServiceSID, e.Identity, e.Node, e.EndpointID); err != nil {
		return fail(err)
	}
	if _, err := t.exec(ctx, `DELETE FROM presence_endpoints
		WHERE service_sid = ? AND identity = ? AND node = ? AND endpoint_id = ? AND sessions <= 0`,
		e.ServiceSID, e.Identity, e.Node, e.EndpointID); err != nil {
		return fail(err)
	}
	if _, err := t.exec(ctx, `UPDATE presence_identities SET offline_since = ?
		WHERE service_sid = ? AND identity = ? AND offline_since IS NULL AND NOT EXISTS (
			SELECT 1 FROM presence_endpoints AS p
			WHERE p.service_sid = presence_identities.service_sid AND p.identity = presence_identities.identity)`,
		sqlrow.Nanos(now), e.ServiceSID, e.Identity); err != nil {
		return fail(err)
	}
	return nil
}

func (t *tx) GoneOffline(ctx context.Context, serviceSID, identity string, before time.Time) (bool, error) {
	res, err := t.exec(ctx, `DELETE FROM presence_identities
		WHERE service_sid = ? AND identity = ? AND offline_since IS NOT NULL AND offline_since <= ?
			AND NOT EXISTS (SELECT 1 FROM presence_endpoints AS p
				WHERE p.service_sid = presence_identities.service_sid AND p.identity = presence_identities.identity)`,
		serviceSID, identity, sqlrow.Nanos(before))
	if err != nil {
		return false, fmt.Errorf("sqlite: identity %q offline: %w", identity, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sqlite: identity %q offline: %w", identity, err)
	}
	return n == 1, nil
}

func (t *tx) LiveNodes(ctx context.Context, since time.Time) ([]string, error) {
	ns, err := queryAll(ctx, t, sqlrow.ScanString, `SELECT node FROM presence_nodes WHERE heartbeat >= ? ORDER BY node`, sqlrow.Nanos(since))
	if err != nil {
		return nil, fmt.Errorf("sqlite: live nodes: %w", err)
	}
	nodes := make([]string, len(ns))
	for i, n := range ns {
		nodes[i] = *n
	}
	return nodes, nil
}

func (t *tx) NodeHeartbeat(ctx context.Context, node string, now, deadBefore time.Time) (bool, int, error) {
	fail := func(err error) error { return fmt.Errorf("sqlite: heartbeat of node %s: %w", node, err) }
	res, err := t.exec(ctx, `UPDATE presence_nodes SET heartbeat = ? WHERE node = ?`, sqlrow.Nanos(now), node)
	if err != nil {
		return false, 0, fail(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, 0, fail(err)
	}
	known := n == 1
	if !known {
		if _, err := t.exec(ctx, `INSERT INTO presence_nodes (node, heartbeat) VALUES (?, ?)
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
			SELECT node FROM presence_nodes WHERE heartbeat >= ?))`, sqlrow.Nanos(deadBefore))
	if err != nil {
		return known, 0, fail(err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return known, 0, fail(err)
	} else if n > 0 {
		if _, err := t.exec(ctx, `UPDATE presence_identities SET offline_since = ?
			WHERE offline_since IS NULL AND NOT EXISTS (SELECT 1 FROM presence_endpoints AS p
				WHERE p.service_sid = presence_identities.service_sid AND p.identity = presence_identities.identity)`,
			sqlrow.Nanos(now)); err != nil {
			return known, 0, fail(err)
		}
	}
	res, err = t.exec(ctx, `DELETE FROM presence_nodes WHERE heartbeat < ?`, sqlrow.Nanos(deadBefore))
	if err != nil {
		return known, 0, fail(err)
	}
	dead, err := res.RowsAffected()
	if err != nil {
		return known, 0, fail(err)
	}
	return known, int(dead), nil
}

func (t *tx) RemoveNode(ctx context.Context, node string) error {
	if _, err := t.exec(ctx, `DELETE FROM presence_nodes WHERE node = ?`, node); err != nil {
		return fmt.Errorf("sqlite: remove node %s: %w", node, err)
	}
	return nil
}

// deleteServiceWebhooks deletes a service's outbox and reachability rows.
func (t *tx) deleteServiceWebhooks(ctx context.Context, sid string) error {
	for _, table := range []string{"outbox", "webhooks_abandoned", "presence_endpoints", "presence_identities"} {
		if _, err := t.exec(ctx, `DELETE FROM `+table+` WHERE service_sid = ?`, sid); err != nil {
			return fmt.Errorf("sqlite: delete service %s: %s: %w", sid, table, err)
		}
	}
	return nil
}

// Now reads this machine's clock: the processes that share a database
// file share it.
func (t *tx) Now(ctx context.Context) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, fmt.Errorf("sqlite: now: %w", err)
	}
	return time.Now().UTC(), nil
}
