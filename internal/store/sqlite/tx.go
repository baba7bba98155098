package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/sqlrow"
	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

var _ chorus.Tx = (*tx)(nil)

// errTxDone is returned by a tx used after its View or Update returned.
var errTxDone = errors.New("sqlite: transaction already finished")

// tx implements chorus.Tx (and so chorus.ReadTx) over one connection. In
// View its connection is a query_only reader, so writes fail.
type tx struct {
	c     *conn
	write bool         // runs on the writer inside a shared batch transaction
	dirty bool         // a write statement ran (see Store.execBatch)
	objs  *objectCache // the writer's object cache; nil in View
	done  bool
}

func (t *tx) finish() { t.done = true }

// ctx returns the context to run a statement with.
//
// Writer statements never see a cancelable context: interrupting one can
// roll back the whole batch transaction, which other requests share.
//
// A read of at most one row (one indexed lookup) does not either: a done
// ctx stops it here instead. A cancelable context would cost each such
// read a watcher goroutine in the driver and another in database/sql for
// its rows (BenchmarkViewObject: ~20 % of a one-row read), and these are
// the reads on every request's path. A read of many rows (a page, or a
// whole table for an export) keeps ctx, so that a long scan ends when its
// caller goes away.
func (t *tx) ctx(ctx context.Context, oneRow bool) (context.Context, error) {
	if t.done {
		return nil, errTxDone
	}
	if t.write || ctx == nil {
		return context.Background(), nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if oneRow {
		return context.Background(), nil
	}
	return ctx, nil
}

func (t *tx) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx, err := t.ctx(ctx, true) // a write: only the writer's succeed
	if err != nil {
		return nil, err
	}
	t.dirty = true
	res, err := t.c.exec(ctx, query, args...)
	var e *msqlite.Error
	if errors.As(err, &e) && e.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY {
		// What the row refers to is gone (deleted by another process, or
		// earlier in the batch): not found, not an internal error.
		return res, chorus.Wrap(chorus.ErrNotFound, err)
	}
	return res, err
}

// execCount runs a statement and returns how many rows it changed.
func (t *tx) execCount(ctx context.Context, query string, args ...any) (int, error) {
	res, err := t.exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// execOne runs a statement that must change a row, else ErrNotFound.
func (t *tx) execOne(ctx context.Context, query string, args ...any) error {
	res, err := t.exec(ctx, query, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return chorus.ErrNotFound
	}
	return nil
}

// queryAll runs query and scans every row.
func queryAll[T any](ctx context.Context, t *tx, scan func(sqlrow.Scanner) (*T, error), query string, args ...any) ([]*T, error) {
	ctx, err := t.ctx(ctx, false)
	if err != nil {
		return nil, err
	}
	rows, err := t.c.query(ctx, query, args...)
	if err != nil {
		t.readFailed()
		return nil, err
	}
	defer rows.Close()
	out, err := sqlrow.Collect(rows, scan)
	if err != nil {
		t.readFailed()
	}
	return out, err
}

// queryOne runs query and scans its first row; no row is ErrNotFound.
func queryOne[T any](ctx context.Context, t *tx, scan func(sqlrow.Scanner) (*T, error), query string, args ...any) (*T, error) {
	ctx, err := t.ctx(ctx, true)
	if err != nil {
		return nil, err
	}
	rows, err := t.c.query(ctx, query, args...)
	if err != nil {
		t.readFailed()
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			t.readFailed()
			return nil, err
		}
		return nil, chorus.ErrNotFound
	}
	v, err := scan(rows)
	if err == nil {
		err = rows.Close()
	}
	if err != nil {
		t.readFailed()
		return nil, err
	}
	return v, nil
}

// readFailed counts a failed read on the writer as a write: SQLite rolls
// the whole transaction back on some errors (I/O, out of memory, a full
// disk), which would undo what the cache holds and leave the batch's later
// statements outside any transaction. As a write, its request's failure
// makes the batch roll back and run again with a savepoint per request.
func (t *tx) readFailed() {
	if t.write {
		t.dirty = true
	}
}

func limitArg(limit int) int {
	if limit <= 0 {
		return -1 // no limit
	}
	return limit
}

// isUniqueViolation reports whether err is a UNIQUE constraint failure on
// a column named col.
func isUniqueViolation(err error, col string) bool {
	var e *msqlite.Error
	return errors.As(err, &e) && e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE && strings.Contains(e.Error(), col)
}

// unavailable wraps chorus.ErrUnavailable around an SQLite error that says
// the database cannot be written or read now (the disk full, an I/O
// error, a read-only file, lock contention beyond the busy timeout): the
// client gets 503 and may retry, and the error is no bug of Chorus's.
// Other errors, and fn's own *chorus.Error, are returned as they are.
func unavailable(err error) error {
	switch primaryCode(err) {
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN,
		sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL:
		var ce *chorus.Error
		if !errors.As(err, &ce) {
			return chorus.Wrap(chorus.ErrUnavailable, err)
		}
	}
	return err
}

// contended reports whether err is lock contention (another process
// holding the database past the busy timeout): a 503 for that request,
// but not a database that fails writes (readiness).
func contended(err error) bool {
	c := primaryCode(err)
	return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
}

// primaryCode is the primary result code of the SQLite error in err's
// chain (SQLITE_OK, 0, for none).
func primaryCode(err error) int {
	var e *msqlite.Error
	if !errors.As(err, &e) {
		return sqlite3.SQLITE_OK
	}
	return e.Code() & 0xff
}

// Accounts and API keys.

func (t *tx) Account(ctx context.Context, sid string) (*chorus.Account, error) {
	a, err := queryOne(ctx, t, sqlrow.ScanAccount, `SELECT `+sqlrow.AccountCols+` FROM accounts WHERE sid = ?`, sid)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get account %s: %w", sid, err)
	}
	return a, nil
}

// Accounts returns every account ordered by (DateCreated, SID).
func (t *tx) Accounts(ctx context.Context) ([]*chorus.Account, error) {
	as, err := queryAll(ctx, t, sqlrow.ScanAccount, `SELECT `+sqlrow.AccountCols+` FROM accounts ORDER BY date_created, sid`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list accounts: %w", err)
	}
	return as, nil
}

func (t *tx) PutAccount(ctx context.Context, a *chorus.Account) error {
	was, err := queryOne(ctx, t, func(r sqlrow.Scanner) (*[2]string, error) {
		var tokens [2]string
		return &tokens, r.Scan(&tokens[0], &tokens[1])
	}, `SELECT auth_token, secondary_auth_token FROM accounts WHERE sid = ?`, a.SID)
	if errors.Is(err, chorus.ErrNotFound) {
		was, err = &[2]string{}, nil
	}
	if err != nil {
		return fmt.Errorf("sqlite: put account %s: %w", a.SID, err)
	}
	_, err = t.exec(ctx, `INSERT INTO accounts (`+sqlrow.AccountCols+`) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (sid) DO UPDATE SET auth_token = excluded.auth_token,
			friendly_name = excluded.friendly_name, date_created = excluded.date_created,
			secondary_auth_token = excluded.secondary_auth_token, secondary_date_created = excluded.secondary_date_created`,
		sqlrow.AccountArgs(a)...)
	if err != nil {
		return fmt.Errorf("sqlite: put account %s: %w", a.SID, err)
	}
	if err := t.retire(ctx, sqlrow.Retired(was[:], []string{a.AuthToken, a.SecondaryAuthToken})); err != nil {
		return fmt.Errorf("sqlite: put account %s: %w", a.SID, err)
	}
	return nil
}

func (t *tx) APIKey(ctx context.Context, sid string) (*chorus.APIKey, error) {
	k, err := queryOne(ctx, t, sqlrow.ScanAPIKey, `SELECT `+sqlrow.APIKeyCols+` FROM api_keys WHERE sid = ?`, sid)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get api key %s: %w", sid, err)
	}
	return k, nil
}

// APIKeys returns the account's keys ordered by (DateCreated, SID).
func (t *tx) APIKeys(ctx context.Context, accountSID string) ([]*chorus.APIKey, error) {
	ks, err := queryAll(ctx, t, sqlrow.ScanAPIKey, `SELECT `+sqlrow.APIKeyCols+` FROM api_keys
		WHERE account_sid = ? ORDER BY date_created, sid`, accountSID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list api keys of %s: %w", accountSID, err)
	}
	return ks, nil
}

func (t *tx) PutAPIKey(ctx context.Context, k *chorus.APIKey) error {
	was, err := queryOne(ctx, t, func(r sqlrow.Scanner) (*string, error) {
		var secret string
		return &secret, r.Scan(&secret)
	}, `SELECT secret FROM api_keys WHERE sid = ?`, k.SID)
	if errors.Is(err, chorus.ErrNotFound) {
		was, err = new(string), nil
	}
	if err != nil {
		return fmt.Errorf("sqlite: put api key %s: %w", k.SID, err)
	}
	_, err = t.exec(ctx, `INSERT INTO api_keys (`+sqlrow.APIKeyCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (sid) DO UPDATE SET account_sid = excluded.account_sid, secret = excluded.secret,
			friendly_name = excluded.friendly_name, date_created = excluded.date_created,
			main = excluded.main, date_updated = excluded.date_updated`,
		sqlrow.APIKeyArgs(k)...)
	if err != nil {
		return fmt.Errorf("sqlite: put api key %s: %w", k.SID, err)
	}
	if err := t.retire(ctx, sqlrow.Retired([]string{*was}, []string{k.Secret})); err != nil {
		return fmt.Errorf("sqlite: put api key %s: %w", k.SID, err)
	}
	return nil
}

func (t *tx) DeleteAPIKey(ctx context.Context, sid string) error {
	if err := t.execOne(ctx, `DELETE FROM api_keys WHERE sid = ?`, sid); err != nil {
		return fmt.Errorf("sqlite: delete api key %s: %w", sid, err)
	}
	if _, err := t.exec(ctx, `INSERT INTO revoked_api_keys (sid, date_revoked) VALUES (?, ?) ON CONFLICT (sid) DO NOTHING`, sid, sqlrow.Nanos(time.Now())); err != nil {
		return fmt.Errorf("sqlite: delete api key %s: record the revocation: %w", sid, err)
	}
	return nil
}

func (t *tx) APIKeyRevoked(ctx context.Context, sid string) (bool, error) {
	_, err := queryOne(ctx, t, sqlrow.ScanTime, `SELECT date_revoked FROM revoked_api_keys WHERE sid = ?`, sid)
	switch {
	case errors.Is(err, chorus.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("sqlite: api key %s revoked: %w", sid, err)
	}
	return true, nil
}

// retire records secrets as retired (ReadTx.SecretRetired).
func (t *tx) retire(ctx context.Context, secrets []string) error {
	for _, secret := range secrets {
		if _, err := t.exec(ctx, `INSERT INTO retired_secrets (digest, date_retired) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING`,
			sqlrow.SecretDigest(secret), sqlrow.Nanos(time.Now())); err != nil {
			return fmt.Errorf("record a retired secret: %w", err)
		}
	}
	return nil
}

func (t *tx) SecretRetired(ctx context.Context, secret string) (bool, error) {
	_, err := queryOne(ctx, t, sqlrow.ScanTime, `SELECT date_retired FROM retired_secrets WHERE digest = ?`, sqlrow.SecretDigest(secret))
	switch {
	case errors.Is(err, chorus.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("sqlite: secret retired: %w", err)
	}
	return true, nil
}

func (t *tx) SignOutConsole(ctx context.Context, credential, signIn string, until time.Time) error {
	if _, err := t.exec(ctx, `DELETE FROM console_signouts WHERE ends_at < ?`, sqlrow.Nanos(time.Now())); err != nil {
		return fmt.Errorf("sqlite: sign out console: forget past sign-outs: %w", err)
	}
	if _, err := t.exec(ctx, `INSERT INTO console_signouts (credential, sign_in, ends_at) VALUES (?, ?, ?)
		ON CONFLICT (credential, sign_in) DO UPDATE SET ends_at = excluded.ends_at`,
		credential, signIn, sqlrow.Nanos(until)); err != nil {
		return fmt.Errorf("sqlite: sign out console: %w", err)
	}
	return nil
}

func (t *tx) ConsoleSignedOut(ctx context.Context, credential, signIn string) (bool, error) {
	_, err := queryOne(ctx, t, sqlrow.ScanTime, `SELECT ends_at FROM console_signouts WHERE credential = ? AND sign_in = ?`,
		credential, signIn)
	switch {
	case errors.Is(err, chorus.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("sqlite: console signed out: %w", err)
	}
	return true, nil
}

func (t *tx) OperatorCredentials(ctx context.Context) (*chorus.OperatorCredentials, error) {
	c, err := queryOne(ctx, t, func(r sqlrow.Scanner) (*chorus.OperatorCredentials, error) {
		var c chorus.OperatorCredentials
		return &c, r.Scan(&c.AccountSID, &c.APIKeySID, &c.ServiceSID)
	}, `SELECT account_sid, api_key_sid, service_sid FROM operator_credentials`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: operator credentials: %w", err)
	}
	return c, nil
}

func (t *tx) PutOperatorCredentials(ctx context.Context, c *chorus.OperatorCredentials) error {
	if _, err := t.exec(ctx, `INSERT INTO operator_credentials (one, account_sid, api_key_sid, service_sid) VALUES (1, ?, ?, ?)
		ON CONFLICT (one) DO UPDATE SET account_sid = excluded.account_sid, api_key_sid = excluded.api_key_sid, service_sid = excluded.service_sid`,
		c.AccountSID, c.APIKeySID, c.ServiceSID); err != nil {
		return fmt.Errorf("sqlite: put operator credentials: %w", err)
	}
	return nil
}

// Services.

func (t *tx) Service(ctx context.Context, sid string) (*chorus.Service, error) {
	s, err := queryOne(ctx, t, sqlrow.ScanService, `SELECT `+sqlrow.ServiceCols+` FROM services WHERE sid = ?`, sid)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get service %s: %w", sid, err)
	}
	return s, nil
}

func (t *tx) Services(ctx context.Context, accountSID string, q chorus.ObjectQuery) ([]*chorus.Service, error) {
	where, order, args := cursorRange(q)
	ss, err := queryAll(ctx, t, sqlrow.ScanService, `SELECT `+sqlrow.ServiceCols+` FROM services
		WHERE account_sid = ?`+where+` ORDER BY `+order+` LIMIT ?`,
		append(append([]any{accountSID}, args...), limitArg(q.Limit))...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list services of %s: %w", accountSID, err)
	}
	return ss, nil
}

// cursorRange returns the condition (" AND ..." or ""), ORDER BY terms and
// arguments that select q's side of q.After in (date_created, sid) order.
func cursorRange(q chorus.ObjectQuery) (where, order string, args []any) {
	switch {
	case !q.Backward:
		return ` AND (date_created, sid) > (?, ?)`, `date_created, sid`,
			[]any{sqlrow.Nanos(q.After.DateCreated), q.After.SID}
	case q.After == (chorus.Cursor{}):
		return "", `date_created DESC, sid DESC`, nil
	default:
		return ` AND (date_created, sid) < (?, ?)`, `date_created DESC, sid DESC`,
			[]any{sqlrow.Nanos(q.After.DateCreated), q.After.SID}
	}
}

func (t *tx) PutService(ctx context.Context, s *chorus.Service) error {
	// An upsert, not INSERT OR REPLACE: replacing would delete the row and
	// cascade to the service's objects.
	_, err := t.exec(ctx, `INSERT INTO services (`+sqlrow.ServiceCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (sid) DO UPDATE SET account_sid = excluded.account_sid,
			unique_name = excluded.unique_name, friendly_name = excluded.friendly_name,
			webhook_url = excluded.webhook_url,
			webhooks_from_rest_enabled = excluded.webhooks_from_rest_enabled,
			reachability_webhooks_enabled = excluded.reachability_webhooks_enabled,
			acl_enabled = excluded.acl_enabled,
			reachability_debouncing_enabled = excluded.reachability_debouncing_enabled,
			reachability_debouncing_window = excluded.reachability_debouncing_window,
			date_created = excluded.date_created, date_updated = excluded.date_updated`,
		s.SID, s.AccountSID, s.UniqueName, s.FriendlyName, s.WebhookURL,
		s.WebhooksFromRestEnabled, s.ReachabilityWebhooksEnabled, s.ACLEnabled,
		s.ReachabilityDebouncingEnabled, s.ReachabilityDebouncingWindow,
		sqlrow.Nanos(s.DateCreated), sqlrow.Nanos(s.DateUpdated))
	if err != nil {
		return fmt.Errorf("sqlite: put service %s: %w", s.SID, err)
	}
	return nil
}

func (t *tx) DeleteService(ctx context.Context, sid string) error {
	if t.done { // before the writer's caches, which only its goroutine may touch
		return errTxDone
	}
	// Objects, items and permissions go by ON DELETE CASCADE; events have
	// no foreign key (they outlive their object) and go explicitly.
	t.objs.clear() // the cascade deletes objects behind the cache's back
	if err := t.execOne(ctx, `DELETE FROM services WHERE sid = ?`, sid); err != nil {
		return fmt.Errorf("sqlite: delete service %s: %w", sid, err)
	}
	if _, err := t.exec(ctx, `DELETE FROM events WHERE service_sid = ?`, sid); err != nil {
		return fmt.Errorf("sqlite: delete service %s: events: %w", sid, err)
	}
	return t.deleteServiceWebhooks(ctx, sid)
}

// Objects.

func (t *tx) Object(ctx context.Context, k chorus.Kind, serviceSID, sid string) (*chorus.Object, error) {
	if t.objs != nil && !t.done {
		if o, ok := t.objs.get(sid); ok {
			if o.Kind != k || (serviceSID != "" && o.ServiceSID != serviceSID) {
				return nil, fmt.Errorf("sqlite: get %s %s: %w", k, sid, chorus.ErrNotFound)
			}
			return o, nil
		}
	}
	// serviceSID "" matches any service.
	o, err := queryOne(ctx, t, sqlrow.ScanObject, `SELECT `+sqlrow.ObjectCols+` FROM objects
		WHERE sid = ? AND kind = ? AND (service_sid = ?3 OR ?3 = '')`, sid, string(k), serviceSID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get %s %s: %w", k, sid, err)
	}
	t.objs.put(o)
	return o, nil
}

func (t *tx) ObjectByName(ctx context.Context, k chorus.Kind, serviceSID, uniqueName string) (*chorus.Object, error) {
	if t.objs != nil && !t.done {
		if o, ok := t.objs.byName(k, serviceSID, uniqueName); ok {
			return o, nil
		}
	}
	o, err := queryOne(ctx, t, sqlrow.ScanObject, `SELECT `+sqlrow.ObjectCols+` FROM objects
		WHERE service_sid = ? AND kind = ? AND unique_name = ?`, serviceSID, string(k), uniqueName)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get %s named %q: %w", k, uniqueName, err)
	}
	t.objs.put(o)
	return o, nil
}

func (t *tx) Objects(ctx context.Context, k chorus.Kind, serviceSID string, q chorus.ObjectQuery) ([]*chorus.Object, error) {
	where, order, cargs := cursorRange(q)
	query := `SELECT ` + sqlrow.ObjectCols + ` FROM objects
		WHERE service_sid = ? AND kind = ?` + where
	args := append([]any{serviceSID, string(k)}, cargs...)
	if !q.Now.IsZero() {
		query += ` AND (date_expires IS NULL OR date_expires > ?)`
		args = append(args, sqlrow.Nanos(q.Now))
	}
	query += ` ORDER BY ` + order + ` LIMIT ?`
	args = append(args, limitArg(q.Limit))
	os, err := queryAll(ctx, t, sqlrow.ScanObject, query, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list %ss of %s: %w", k, serviceSID, err)
	}
	return os, nil
}

func (t *tx) ExpiredObjects(ctx context.Context, now time.Time, limit int) ([]*chorus.Object, error) {
	os, err := queryAll(ctx, t, sqlrow.ScanObject, `SELECT `+sqlrow.ObjectCols+` FROM objects
		WHERE date_expires IS NOT NULL AND date_expires <= ?
		ORDER BY date_expires LIMIT ?`, sqlrow.Nanos(now), limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlite: list expired objects: %w", err)
	}
	return os, nil
}

func (t *tx) InsertObject(ctx context.Context, o *chorus.Object) error {
	_, err := t.exec(ctx, `INSERT INTO objects (`+sqlrow.ObjectCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		string(o.Kind), o.SID, o.AccountSID, o.ServiceSID, sqlrow.NullString(o.UniqueName), o.Revision,
		sqlrow.Blob(o.Data), o.LastEventID, o.NextIndex, o.CreatedBy,
		sqlrow.Nanos(o.DateCreated), sqlrow.Nanos(o.DateUpdated), sqlrow.NullNanos(o.DateExpires))
	if isUniqueViolation(err, "unique_name") {
		err = chorus.ErrUniqueNameExists
	}
	if err != nil {
		return fmt.Errorf("sqlite: insert %s %s: %w", o.Kind, o.SID, err)
	}
	t.objs.put(o)
	return nil
}

func (t *tx) UpdateObject(ctx context.Context, o *chorus.Object) error {
	// The usual update changes only the data, counters and date_updated:
	// leaving the indexed columns and the foreign key out of the SET spares
	// SQLite rewriting three index entries and checking the service. If
	// any of them changed (or the row is missing) no row matches, and the
	// full update below runs.
	res, err := t.exec(ctx, `UPDATE objects SET revision = ?, data = ?, last_event_id = ?,
			next_index = ?, date_updated = ?
		WHERE sid = ? AND kind = ? AND account_sid = ? AND service_sid = ? AND unique_name IS ?
			AND created_by = ? AND date_created = ? AND date_expires IS ?`,
		o.Revision, sqlrow.Blob(o.Data), o.LastEventID, o.NextIndex, sqlrow.Nanos(o.DateUpdated),
		o.SID, string(o.Kind), o.AccountSID, o.ServiceSID, sqlrow.NullString(o.UniqueName),
		o.CreatedBy, sqlrow.Nanos(o.DateCreated), sqlrow.NullNanos(o.DateExpires))
	if err != nil {
		return fmt.Errorf("sqlite: update %s %s: %w", o.Kind, o.SID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: update %s %s: %w", o.Kind, o.SID, err)
	} else if n == 1 {
		t.objs.put(o)
		return nil
	}
	err = t.execOne(ctx, `UPDATE objects SET kind = ?, account_sid = ?, service_sid = ?,
			unique_name = ?, revision = ?, data = ?, last_event_id = ?, next_index = ?,
			created_by = ?, date_created = ?, date_updated = ?, date_expires = ?
		WHERE sid = ?`,
		string(o.Kind), o.AccountSID, o.ServiceSID, sqlrow.NullString(o.UniqueName), o.Revision,
		sqlrow.Blob(o.Data), o.LastEventID, o.NextIndex, o.CreatedBy,
		sqlrow.Nanos(o.DateCreated), sqlrow.Nanos(o.DateUpdated), sqlrow.NullNanos(o.DateExpires), o.SID)
	if isUniqueViolation(err, "unique_name") {
		err = chorus.ErrUniqueNameExists
	}
	if err != nil {
		return fmt.Errorf("sqlite: update %s %s: %w", o.Kind, o.SID, err)
	}
	t.objs.put(o)
	return nil
}

func (t *tx) DeleteObject(ctx context.Context, sid string) error {
	if t.done { // before the writer's caches, which only its goroutine may touch
		return errTxDone
	}
	// Items and permissions go by ON DELETE CASCADE (their cached rows go
	// here); events stay.
	t.objs.del(sid) // before: a failed statement leaves the row, which a miss rereads
	if t.objs != nil {
		t.objs.items.dropObject(sid)
		t.objs.perms.dropObject(sid)
	}
	if err := t.execOne(ctx, `DELETE FROM objects WHERE sid = ?`, sid); err != nil {
		return fmt.Errorf("sqlite: delete object %s: %w", sid, err)
	}
	return nil
}

// Items. A list item has Key "", a map item Index 0: (object, index, key)
// is the primary key of both.

func (t *tx) Item(ctx context.Context, objectSID string, ref chorus.ItemRef) (*chorus.Item, error) {
	if t.objs != nil && !t.done {
		if it, ok := t.objs.items.get(objectSID, ref); ok {
			return it, nil
		}
	}
	it, err := queryOne(ctx, t, sqlrow.ScanItem, `SELECT `+sqlrow.ItemCols+` FROM items
		WHERE object_sid = ? AND idx = ? AND key = ?`, objectSID, ref.Index, ref.Key)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get item %s %d %q: %w", objectSID, ref.Index, ref.Key, err)
	}
	if t.objs != nil {
		t.objs.items.fill(it)
	}
	return it, nil
}

// itemsOfChunk bounds the refs of one ItemsOf statement (2 parameters
// each, within SQLite's 32,766).
const itemsOfChunk = 1000

func (t *tx) ItemsOf(ctx context.Context, objectSID string, refs []chorus.ItemRef) ([]*chorus.Item, error) {
	if len(refs) > itemsOfChunk { // one chunk's IN ignores repeats; across chunks they would return twice
		seen := make(map[chorus.ItemRef]struct{}, len(refs))
		uniq := make([]chorus.ItemRef, 0, len(refs))
		for _, ref := range refs {
			if _, ok := seen[ref]; !ok {
				seen[ref] = struct{}{}
				uniq = append(uniq, ref)
			}
		}
		refs = uniq
	}
	var out []*chorus.Item
	for len(refs) > 0 {
		chunk := refs[:min(len(refs), itemsOfChunk)]
		refs = refs[len(chunk):]
		var b strings.Builder
		b.WriteString(`SELECT ` + sqlrow.ItemCols + ` FROM items WHERE object_sid = ? AND (idx, key) IN (VALUES `)
		args := make([]any, 0, 1+2*len(chunk))
		args = append(args, objectSID)
		for i, ref := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?)")
			args = append(args, ref.Index, ref.Key)
		}
		b.WriteString(")")
		its, err := queryAll(ctx, t, sqlrow.ScanItem, b.String(), args...)
		if err != nil {
			return nil, fmt.Errorf("sqlite: items of %s: %w", objectSID, err)
		}
		out = append(out, its...)
	}
	return out, nil
}

func (t *tx) Items(ctx context.Context, objectSID string, q chorus.ItemQuery) ([]*chorus.Item, error) {
	col, from := "idx", any(q.FromIndex)
	if q.Kind == chorus.KindMap {
		col, from = "key", q.FromKey
	}
	var b strings.Builder
	b.WriteString(`SELECT ` + sqlrow.ItemCols + ` FROM items WHERE object_sid = ?`)
	args := []any{objectSID}
	if q.HasFrom {
		op := ">"
		if q.Desc {
			op = "<"
		}
		if q.Inclusive {
			op += "="
		}
		b.WriteString(` AND ` + col + ` ` + op + ` ?`)
		args = append(args, from)
	}
	if !q.Now.IsZero() {
		b.WriteString(` AND (date_expires IS NULL OR date_expires > ?)`)
		args = append(args, sqlrow.Nanos(q.Now))
	}
	b.WriteString(` ORDER BY ` + col)
	if q.Desc {
		b.WriteString(` DESC`)
	}
	b.WriteString(` LIMIT ?`)
	args = append(args, limitArg(q.Limit))
	its, err := queryAll(ctx, t, sqlrow.ScanItem, b.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list items of %s: %w", objectSID, err)
	}
	return its, nil
}

func (t *tx) ItemsChangedSince(ctx context.Context, objectSID string, eventID int64, limit int) ([]*chorus.Item, error) {
	its, err := queryAll(ctx, t, sqlrow.ScanItem, `SELECT `+sqlrow.ItemCols+` FROM items
		WHERE object_sid = ? AND last_event_id > ?
		ORDER BY last_event_id LIMIT ?`, objectSID, eventID, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlite: list items of %s changed since %d: %w", objectSID, eventID, err)
	}
	return its, nil
}

func (t *tx) ExpiredItems(ctx context.Context, now time.Time, limit int) ([]*chorus.Item, error) {
	its, err := queryAll(ctx, t, sqlrow.ScanItem, `SELECT `+sqlrow.ItemCols+` FROM items
		WHERE date_expires IS NOT NULL AND date_expires <= ?
		ORDER BY date_expires LIMIT ?`, sqlrow.Nanos(now), limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlite: list expired items: %w", err)
	}
	return its, nil
}

func (t *tx) PutItem(ctx context.Context, it *chorus.Item) error {
	_, err := t.exec(ctx, `INSERT INTO items (`+sqlrow.ItemCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (object_sid, idx, key) DO UPDATE SET kind = excluded.kind, data = excluded.data,
			revision = excluded.revision, last_event_id = excluded.last_event_id,
			created_by = excluded.created_by, date_created = excluded.date_created,
			date_updated = excluded.date_updated, date_expires = excluded.date_expires`,
		string(it.Kind), it.ObjectSID, it.Index, it.Key, sqlrow.Blob(it.Data), it.Revision, it.LastEventID,
		it.CreatedBy, sqlrow.Nanos(it.DateCreated), sqlrow.Nanos(it.DateUpdated), sqlrow.NullNanos(it.DateExpires))
	if err != nil {
		return fmt.Errorf("sqlite: put item %s %d %q: %w", it.ObjectSID, it.Index, it.Key, err)
	}
	if t.objs != nil {
		t.objs.items.wrote(it)
	}
	return nil
}

func (t *tx) DeleteItem(ctx context.Context, objectSID string, ref chorus.ItemRef) error {
	if t.done { // before the writer's caches, which only its goroutine may touch
		return errTxDone
	}
	if t.objs != nil { // before: a failed statement leaves the row, which a miss rereads
		t.objs.items.del(itemKey{objectSID, ref})
	}
	if err := t.execOne(ctx, `DELETE FROM items WHERE object_sid = ? AND idx = ? AND key = ?`,
		objectSID, ref.Index, ref.Key); err != nil {
		return fmt.Errorf("sqlite: delete item %s %d %q: %w", objectSID, ref.Index, ref.Key, err)
	}
	return nil
}

// Permissions.

func (t *tx) Permission(ctx context.Context, objectSID, identity string) (*chorus.Permission, error) {
	if t.objs != nil && !t.done {
		if p, ok := t.objs.perms.get(objectSID, identity); ok {
			return p, nil
		}
	}
	p, err := queryOne(ctx, t, sqlrow.ScanPermission, `SELECT `+sqlrow.PermissionCols+` FROM permissions
		WHERE object_sid = ? AND identity = ?`, objectSID, identity)
	if err != nil {
		return nil, fmt.Errorf("sqlite: get permission %s %q: %w", objectSID, identity, err)
	}
	if t.objs != nil {
		t.objs.perms.put(p)
	}
	return p, nil
}

func (t *tx) Permissions(ctx context.Context, objectSID string, q chorus.PermissionQuery) ([]*chorus.Permission, error) {
	// identity is TEXT with the default BINARY collation: byte order.
	where, order := ` AND identity > ?`, `identity`
	args := []any{objectSID, q.After}
	if q.Backward {
		where, order = ` AND identity < ?`, `identity DESC`
		if q.After == "" {
			where, args = "", args[:1]
		}
	}
	ps, err := queryAll(ctx, t, sqlrow.ScanPermission, `SELECT `+sqlrow.PermissionCols+` FROM permissions
		WHERE object_sid = ?`+where+` ORDER BY `+order+` LIMIT ?`,
		append(args, limitArg(q.Limit))...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list permissions of %s: %w", objectSID, err)
	}
	return ps, nil
}

func (t *tx) PutPermission(ctx context.Context, p *chorus.Permission) error {
	_, err := t.exec(ctx, `INSERT INTO permissions (`+sqlrow.PermissionCols+`) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (object_sid, identity) DO UPDATE SET read = excluded.read,
			write = excluded.write, manage = excluded.manage`,
		p.ObjectSID, p.Identity, p.Read, p.Write, p.Manage)
	if err != nil {
		return fmt.Errorf("sqlite: put permission %s %q: %w", p.ObjectSID, p.Identity, err)
	}
	if t.objs != nil {
		t.objs.perms.put(p)
	}
	return nil
}

func (t *tx) DeletePermission(ctx context.Context, objectSID, identity string) error {
	if t.done { // before the writer's caches, which only its goroutine may touch
		return errTxDone
	}
	if t.objs != nil { // before: a failed statement leaves the row, which a miss rereads
		t.objs.perms.del(objectSID, identity)
	}
	if err := t.execOne(ctx, `DELETE FROM permissions WHERE object_sid = ? AND identity = ?`,
		objectSID, identity); err != nil {
		return fmt.Errorf("sqlite: delete permission %s %q: %w", objectSID, identity, err)
	}
	return nil
}

// Events, stored as sqlrow.EncodeEvent encodes them.

func (t *tx) Events(ctx context.Context, objectSID string, afterID int64, limit int) ([]*chorus.Event, error) {
	es, err := queryAll(ctx, t, sqlrow.ScanEvent, `SELECT `+sqlrow.EventCols+` FROM events
		WHERE object_sid = ? AND id > ? ORDER BY id LIMIT ?`, objectSID, afterID, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlite: list events of %s: %w", objectSID, err)
	}
	return es, nil
}

func (t *tx) LastEventIDs(ctx context.Context, objectSIDs []string) (map[string]int64, error) {
	if len(objectSIDs) == 0 {
		return map[string]int64{}, nil
	}
	list, err := json.Marshal(objectSIDs)
	if err != nil {
		return nil, fmt.Errorf("sqlite: last event ids: %w", err)
	}
	// One seek of events_object per object (SQLite's min/max optimization).
	ids, err := queryAll(ctx, t, sqlrow.ScanLastEventID, `SELECT j.value, (SELECT MAX(e.id) FROM events AS e WHERE e.object_sid = j.value)
		FROM json_each(?) AS j`, string(list))
	if err != nil {
		return nil, fmt.Errorf("sqlite: last event ids: %w", err)
	}
	return sqlrow.LastEventIDMap(ids), nil
}

func (t *tx) EventsOfType(ctx context.Context, serviceSID, objectSID string, types []chorus.EventType, afterID, throughID int64, limit int) ([]*chorus.Event, error) {
	if len(types) == 0 {
		return nil, nil
	}
	var args []any
	arg := func(v any) string { args = append(args, v); return "?" }
	q := `SELECT ` + sqlrow.EventCols + ` FROM events WHERE object_sid = ` + arg(objectSID) + ` AND service_sid = ` + arg(serviceSID) +
		` AND id > ` + arg(afterID) + ` AND id <= ` + arg(throughID) + ` AND (`
	for i, typ := range types {
		if i > 0 {
			q += ` OR `
		}
		// A prefix compare: no LIKE, whose escapes depend on settings.
		prefix := sqlrow.EventTypePrefix(typ)
		q += `substr(body, 1, ` + arg(len(prefix)) + `) = ` + arg(prefix)
	}
	q += `) ORDER BY id LIMIT ` + arg(limitArg(limit))
	es, err := queryAll(ctx, t, sqlrow.ScanEvent, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list %v events of %s: %w", types, objectSID, err)
	}
	return es, nil
}

func (t *tx) AppendEvent(ctx context.Context, e *chorus.Event) error {
	if e.ID <= 0 {
		return fmt.Errorf("sqlite: append event to %s: id %d is not a log id", e.ObjectSID, e.ID)
	}
	body, data, itemData, err := sqlrow.EncodeEvent(e)
	if err != nil {
		return fmt.Errorf("sqlite: append event %d to %s: %w", e.ID, e.ObjectSID, err)
	}
	if _, err := t.exec(ctx, `INSERT INTO events (object_sid, id, service_sid, created_at, body, data, item_data)
		VALUES (?, ?, ?, ?, ?, ?, ?)`,
		e.ObjectSID, e.ID, e.ServiceSID, sqlrow.Nanos(e.DateCreated), body, data, itemData); err != nil {
		return fmt.Errorf("sqlite: append event %d to %s: %w", e.ID, e.ObjectSID, err)
	}
	return nil
}

func (t *tx) EventTime(ctx context.Context, from time.Time, n int) (time.Time, bool, error) {
	ts, err := queryOne(ctx, t, sqlrow.ScanTime, `SELECT created_at FROM events WHERE created_at >= ? ORDER BY created_at LIMIT 1 OFFSET ?`, sqlrow.Nanos(from), int64(n))
	if errors.Is(err, chorus.ErrNotFound) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("sqlite: event time: %w", err)
	}
	return *ts, true, nil
}

func (t *tx) TrimEvents(ctx context.Context, p chorus.EventTrim) (int, error) {
	var args []any
	arg := func(v any) string { args = append(args, v); return "?" }
	q := `DELETE FROM events WHERE created_at < ` + arg(sqlrow.Nanos(p.Before))
	if !p.After.IsZero() {
		q += ` AND created_at >= ` + arg(sqlrow.Nanos(p.After))
	}
	if p.Keep > 0 {
		// An existing object keeps the events of its Keep newest IDs: its
		// event IDs count up by one, so those are its newest Keep events
		// but for holes the trim itself made. MAX is one index lookup (an
		// OFFSET Keep-1 walked Keep index entries for every old row). A
		// deleted object's events go by age alone: a client that
		// subscribes to it is told it is gone, so nothing of its log is
		// replayed past the retention, and kept by Keep they would
		// outlive it for good.
		q += ` AND (NOT EXISTS (SELECT 1 FROM objects WHERE objects.sid = events.object_sid)
			OR id <= (SELECT MAX(e2.id) FROM events AS e2 WHERE e2.object_sid = events.object_sid) - ` + arg(p.Keep) + `)`
	}
	res, err := t.exec(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("sqlite: trim events: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("sqlite: trim events: %w", err)
	}
	return int(n), nil
}
