package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/sqlrow"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

var _ chorus.Tx = (*tx)(nil)

// errTxDone is returned by a tx used after its View or Update returned.
var errTxDone = errors.New("postgres: transaction already finished")

// tx implements chorus.Tx (and so chorus.ReadTx) on one connection inside
// an open transaction. In View the transaction is READ ONLY, so writes
// fail.
type tx struct {
	c      *pgx.Conn
	ctx    context.Context // statements run under it: the transaction's deadline
	write  bool            // Update: lock rows that Object/ObjectByName read
	nowait bool            // lock with NOWAIT (not the first request of a batch)
	done   bool

	// pending are statements to run before the next one, pipelined with
	// it in one round trip: the transaction's BEGIN and the request's
	// SAVEPOINT, sent only once fn talks to the database. sent reports
	// that they were.
	pending []string
	sent    bool
	// deferred are the Update's AppendEvents and AppendOutboxes, whose
	// outcome fn does not need at once: held back to go after pending in
	// the round trip of the next statement, or of flush when fn returns.
	// A held write's error is returned by the method whose round trip
	// carried it, and fails the Update either way.
	deferred []heldWrite

	// What went wrong beyond fn's control; the Store acts on it whatever
	// fn returns.
	conflict error // lock conflict, deadlock, serialization failure: re-run
	broken   error // lost connection: fail
	failed   error // a statement failed: the transaction is aborted
	// lockTimedOut: conflict is a lock wait that ran out of lock_timeout,
	// not a NOWAIT conflict. The lock's holder has been at it for long
	// (a frozen node, until the server ends its session): the request is
	// answered with lockedError rather than re-run to wait again.
	lockTimedOut bool
	// unsaved: a round trip failed before pending ran (pgx fails a whole
	// pipeline when one of its statements fails to prepare), so this
	// request's SAVEPOINT does not exist and the transaction is aborted.
	unsaved error
}

func (t *tx) finish() { t.done = true }

// check returns the error to fail a statement with before running it.
func (t *tx) check(ctx context.Context) error {
	if t.done {
		return errTxDone
	}
	if t.broken != nil {
		return t.broken
	}
	if ctx != nil {
		return ctx.Err()
	}
	return nil
}

// note records what a failed statement means for the transaction.
func (t *tx) note(err error) error {
	if err == nil || errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	var pe *pgconn.PgError
	switch {
	case isConflict(err):
		if t.conflict == nil {
			t.conflict = err
			// Without NOWAIT, lock_not_available is lock_timeout's.
			t.lockTimedOut = !t.nowait && errors.As(err, &pe) && pe.Code == codeLockNotAvailable
		}
		if t.lockTimedOut {
			return lockedError(err)
		}
	case errors.As(err, &pe) && t.write && pe.Code == codeReadOnly:
		// A write on a server that takes none now (a standby, or a primary
		// set read-only: a failover under way): the client may retry, and
		// the connection goes, so that the next one may reach the primary.
		// In a read-only View it would be a bug, and stays a 500.
		if t.broken == nil {
			t.broken = err
		}
		return chorus.Wrap(chorus.ErrUnavailable, err)
	case errors.As(err, &pe) && !isConnError(err):
		// The server rejected the statement, which aborted the
		// transaction (or the request's savepoint).
		if t.failed == nil {
			t.failed = err
		}
		switch pe.Code {
		case codeDiskFull, codeOutOfMemory:
			// Not a bug of the request; the client may retry.
			return chorus.Wrap(chorus.ErrUnavailable, err)
		case codeForeignKeyViolation:
			// What the row refers to was deleted meanwhile (an object
			// created while its service is deleted on another node):
			// not found, as it would be a moment later, not a 500.
			return chorus.Wrap(chorus.ErrNotFound, err)
		}
	case errors.As(err, &pe), t.c.IsClosed(), pgconn.Timeout(err),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		if t.broken == nil {
			t.broken = err
		}
		return unavailable(err)
	}
	// Otherwise a client-side error (encoding, scanning): the connection
	// and the transaction are fine.
	return err
}

// runFn runs an Update's fn on t and sends what fn left deferred: its
// error is the Update's.
func (t *tx) runFn(fn func(chorus.Tx) error) error {
	err := fn(t)
	if err == nil {
		err = t.flush()
	}
	return t.fnError(err)
}

// fnError is the outcome of fn, which returned err: a statement that failed
// aborted the transaction, so fn cannot succeed after one even if it
// ignored the error.
func (t *tx) fnError(err error) error {
	if err == nil && t.failed != nil {
		return fmt.Errorf("postgres: update went on after a failed statement: %w", t.failed)
	}
	return err
}

// heldWrite is an AppendEvent or an AppendOutbox held back: its INSERT's
// arguments, and what its error names.
type heldWrite struct {
	outbox bool  // an AppendOutbox; else an AppendEvent
	id     int64 // the event's id (AppendEvent)
	obj    string
	args   []any
}

func (h heldWrite) query() string {
	if h.outbox {
		return sqlInsertOutbox
	}
	return sqlInsertEvent
}

func (h heldWrite) fail(err error) error {
	if h.outbox {
		return outboxError(h.obj, err)
	}
	return eventError(h.id, h.obj, err)
}

// eventError is AppendEvent's error for event id of object obj.
func eventError(id int64, obj string, err error) error {
	return fmt.Errorf("postgres: append event %d to %s: %w", id, obj, err)
}

// sqlInsertEvent is AppendEvent's statement.
const sqlInsertEvent = `INSERT INTO events (object_sid, id, service_sid, created_at, body, data, item_data)
	VALUES ($1, $2, $3, $4, $5, $6, $7)`

// queued reports whether statements wait for the next round trip.
func (t *tx) queued() bool { return len(t.pending) > 0 || len(t.deferred) > 0 }

// send runs the pending and deferred statements and starts query ("" for
// none) in one round trip. The caller reads query's result from the
// returned BatchResults and closes it.
func (t *tx) send(query string, args []any) (pgx.BatchResults, error) {
	b := &pgx.Batch{}
	for _, p := range t.pending {
		b.Queue(p)
	}
	for _, h := range t.deferred {
		b.Queue(h.query(), h.args...)
	}
	if query != "" {
		b.Queue(query, args...)
	}
	pending, deferred := len(t.pending), t.deferred
	t.pending, t.deferred, t.sent = nil, nil, true
	br := t.c.SendBatch(t.ctx, b)
	for range pending {
		if _, err := br.Exec(); err != nil {
			br.Close()
			t.unsaved = err
			return nil, err
		}
	}
	for _, h := range deferred {
		if _, err := br.Exec(); err != nil {
			br.Close()
			// The method that carried the write wraps this error in its
			// own words: say whose statement failed.
			err = h.fail(fmt.Errorf("held back and sent with the next statement: %w", err))
			if t.failed == nil {
				// The write was promised to fn: its failure fails the
				// Update even if fn ignores the error it got (a
				// client-side one would not abort the transaction).
				t.failed = err
			}
			return nil, err
		}
	}
	return br, nil
}

// flush sends the deferred statements, if any, with what is pending. The
// Store calls it when fn returns nil, before COMMIT or the next request.
func (t *tx) flush() error {
	if len(t.deferred) == 0 {
		return nil
	}
	if t.failed != nil || t.conflict != nil || t.broken != nil {
		// fn went on after a failed statement: the transaction is
		// aborted, and the Update fails with that statement's error
		// (fnError), not with this one's.
		t.deferred = nil
		return nil
	}
	if err := t.check(t.ctx); err != nil {
		return err
	}
	br, err := t.send("", nil)
	if err == nil {
		err = br.Close()
	}
	return t.note(err)
}

// hold runs h, a write whose outcome fn does not need at once. In Update,
// where nothing fn does next depends on it but its success, h rides in the
// round trip of the statement after it (the object's UPDATE, in every
// engine write), or of flush: a round trip less per write. fn's later
// statements still see its row, which runs before them.
func (t *tx) hold(ctx context.Context, h heldWrite) error {
	if !t.write {
		if _, err := t.exec(ctx, h.query(), h.args...); err != nil {
			return h.fail(err)
		}
		return nil
	}
	if err := t.check(ctx); err != nil {
		return h.fail(err)
	}
	t.deferred = append(t.deferred, h)
	return nil
}

func (t *tx) exec(ctx context.Context, query string, args ...any) (pgconn.CommandTag, error) {
	if err := t.check(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	if !t.queued() {
		tag, err := t.c.Exec(t.ctx, query, args...)
		return tag, t.note(err)
	}
	br, err := t.send(query, args)
	if err != nil {
		return pgconn.CommandTag{}, t.note(err)
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, t.note(err)
}

// execOne runs a statement that must change a row, else ErrNotFound.
func (t *tx) execOne(ctx context.Context, query string, args ...any) error {
	tag, err := t.exec(ctx, query, args...)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return chorus.ErrNotFound
	}
	return nil
}

// queryAll runs query and scans every row.
func queryAll[T any](ctx context.Context, t *tx, scan func(sqlrow.Scanner) (*T, error), query string, args ...any) ([]*T, error) {
	if err := t.check(ctx); err != nil {
		return nil, err
	}
	var rows pgx.Rows
	var br pgx.BatchResults
	var err error
	if !t.queued() {
		rows, err = t.c.Query(t.ctx, query, args...)
	} else if br, err = t.send(query, args); err == nil {
		rows, err = br.Query()
	}
	out, err := scanAll(rows, err, scan)
	if br != nil {
		if cerr := br.Close(); err == nil && cerr != nil {
			out, err = nil, cerr
		}
	}
	if err != nil {
		return nil, t.note(err)
	}
	return out, nil
}

func scanAll[T any](rows pgx.Rows, err error, scan func(sqlrow.Scanner) (*T, error)) ([]*T, error) {
	if err != nil {
		if rows != nil {
			rows.Close()
		}
		return nil, err
	}
	defer rows.Close()
	return sqlrow.Collect(rows, scan)
}

// queryOne runs query and scans its first row; no row is ErrNotFound.
func queryOne[T any](ctx context.Context, t *tx, scan func(sqlrow.Scanner) (*T, error), query string, args ...any) (*T, error) {
	if err := t.check(ctx); err != nil {
		return nil, err
	}
	var v *T
	var err error
	if !t.queued() {
		v, err = scan(t.c.QueryRow(t.ctx, query, args...))
	} else {
		var br pgx.BatchResults
		if br, err = t.send(query, args); err == nil {
			v, err = scan(br.QueryRow())
			if cerr := br.Close(); err == nil || errors.Is(err, pgx.ErrNoRows) {
				if cerr != nil {
					err = cerr
				}
			}
		}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, chorus.ErrNotFound
	}
	if err != nil {
		return nil, t.note(err)
	}
	return v, nil
}

// lock is the locking clause of Object and ObjectByName.
func (t *tx) lock() string {
	switch {
	case !t.write:
		return ""
	case t.nowait:
		return " FOR NO KEY UPDATE NOWAIT"
	}
	// NO KEY UPDATE: serializes writers of the object like FOR UPDATE,
	// without blocking inserts of items and permissions that reference it.
	return " FOR NO KEY UPDATE"
}

// limitArg is a LIMIT argument: NULL (no limit) for limit <= 0.
func limitArg(limit int) *int64 {
	if limit <= 0 {
		return nil
	}
	n := int64(limit)
	return &n
}

// isUniqueViolation reports whether err is a unique violation of the
// index named constraint.
func isUniqueViolation(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == constraint
}

// Accounts and API keys.

func (t *tx) Account(ctx context.Context, sid string) (*chorus.Account, error) {
	a, err := queryOne(ctx, t, sqlrow.ScanAccount, `SELECT `+sqlrow.AccountCols+` FROM accounts WHERE sid = $1`, sid)
	if err != nil {
		return nil, fmt.Errorf("postgres: get account %s: %w", sid, err)
	}
	return a, nil
}

// Accounts returns every account ordered by (DateCreated, SID).
func (t *tx) Accounts(ctx context.Context) ([]*chorus.Account, error) {
	as, err := queryAll(ctx, t, sqlrow.ScanAccount, `SELECT `+sqlrow.AccountCols+` FROM accounts ORDER BY date_created, sid`)
	if err != nil {
		return nil, fmt.Errorf("postgres: list accounts: %w", err)
	}
	return as, nil
}

func (t *tx) PutAccount(ctx context.Context, a *chorus.Account) error {
	was, err := queryOne(ctx, t, func(r sqlrow.Scanner) (*[2]string, error) {
		var tokens [2]string
		return &tokens, r.Scan(&tokens[0], &tokens[1])
	}, `SELECT auth_token, secondary_auth_token FROM accounts WHERE sid = $1`, a.SID)
	if errors.Is(err, chorus.ErrNotFound) {
		was, err = &[2]string{}, nil
	}
	if err != nil {
		return fmt.Errorf("postgres: put account %s: %w", a.SID, err)
	}
	_, err = t.exec(ctx, `INSERT INTO accounts (`+sqlrow.AccountCols+`) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (sid) DO UPDATE SET auth_token = excluded.auth_token,
			friendly_name = excluded.friendly_name, date_created = excluded.date_created,
			secondary_auth_token = excluded.secondary_auth_token, secondary_date_created = excluded.secondary_date_created`,
		sqlrow.AccountArgs(a)...)
	if err != nil {
		return fmt.Errorf("postgres: put account %s: %w", a.SID, err)
	}
	if err := t.retire(ctx, sqlrow.Retired(was[:], []string{a.AuthToken, a.SecondaryAuthToken})); err != nil {
		return fmt.Errorf("postgres: put account %s: %w", a.SID, err)
	}
	return nil
}

func (t *tx) APIKey(ctx context.Context, sid string) (*chorus.APIKey, error) {
	k, err := queryOne(ctx, t, sqlrow.ScanAPIKey, `SELECT `+sqlrow.APIKeyCols+` FROM api_keys WHERE sid = $1`, sid)
	if err != nil {
		return nil, fmt.Errorf("postgres: get api key %s: %w", sid, err)
	}
	return k, nil
}

// APIKeys returns the account's keys ordered by (DateCreated, SID).
func (t *tx) APIKeys(ctx context.Context, accountSID string) ([]*chorus.APIKey, error) {
	ks, err := queryAll(ctx, t, sqlrow.ScanAPIKey, `SELECT `+sqlrow.APIKeyCols+` FROM api_keys
		WHERE account_sid = $1 ORDER BY date_created, sid`, accountSID)
	if err != nil {
		return nil, fmt.Errorf("postgres: list api keys of %s: %w", accountSID, err)
	}
	return ks, nil
}

func (t *tx) PutAPIKey(ctx context.Context, k *chorus.APIKey) error {
	was, err := queryOne(ctx, t, func(r sqlrow.Scanner) (*string, error) {
		var secret string
		return &secret, r.Scan(&secret)
	}, `SELECT secret FROM api_keys WHERE sid = $1`, k.SID)
	if errors.Is(err, chorus.ErrNotFound) {
		was, err = new(string), nil
	}
	if err != nil {
		return fmt.Errorf("postgres: put api key %s: %w", k.SID, err)
	}
	_, err = t.exec(ctx, `INSERT INTO api_keys (`+sqlrow.APIKeyCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (sid) DO UPDATE SET account_sid = excluded.account_sid, secret = excluded.secret,
			friendly_name = excluded.friendly_name, date_created = excluded.date_created,
			main = excluded.main, date_updated = excluded.date_updated`,
		sqlrow.APIKeyArgs(k)...)
	if err != nil {
		return fmt.Errorf("postgres: put api key %s: %w", k.SID, err)
	}
	if err := t.retire(ctx, sqlrow.Retired([]string{*was}, []string{k.Secret})); err != nil {
		return fmt.Errorf("postgres: put api key %s: %w", k.SID, err)
	}
	return nil
}

func (t *tx) DeleteAPIKey(ctx context.Context, sid string) error {
	if err := t.execOne(ctx, `DELETE FROM api_keys WHERE sid = $1`, sid); err != nil {
		return fmt.Errorf("postgres: delete api key %s: %w", sid, err)
	}
	if _, err := t.exec(ctx, `INSERT INTO revoked_api_keys (sid, date_revoked) VALUES ($1, $2) ON CONFLICT (sid) DO NOTHING`, sid, sqlrow.Nanos(time.Now())); err != nil {
		return fmt.Errorf("postgres: delete api key %s: record the revocation: %w", sid, err)
	}
	return nil
}

func (t *tx) APIKeyRevoked(ctx context.Context, sid string) (bool, error) {
	_, err := queryOne(ctx, t, sqlrow.ScanTime, `SELECT date_revoked FROM revoked_api_keys WHERE sid = $1`, sid)
	switch {
	case errors.Is(err, chorus.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("postgres: api key %s revoked: %w", sid, err)
	}
	return true, nil
}

// retire records secrets as retired (ReadTx.SecretRetired).
func (t *tx) retire(ctx context.Context, secrets []string) error {
	for _, secret := range secrets {
		if _, err := t.exec(ctx, `INSERT INTO retired_secrets (digest, date_retired) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING`,
			sqlrow.SecretDigest(secret), sqlrow.Nanos(time.Now())); err != nil {
			return fmt.Errorf("record a retired secret: %w", err)
		}
	}
	return nil
}

func (t *tx) SecretRetired(ctx context.Context, secret string) (bool, error) {
	_, err := queryOne(ctx, t, sqlrow.ScanTime, `SELECT date_retired FROM retired_secrets WHERE digest = $1`, sqlrow.SecretDigest(secret))
	switch {
	case errors.Is(err, chorus.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("postgres: secret retired: %w", err)
	}
	return true, nil
}

func (t *tx) SignOutConsole(ctx context.Context, credential, signIn string, until time.Time) error {
	if _, err := t.exec(ctx, `DELETE FROM console_signouts WHERE ends_at < $1`, sqlrow.Nanos(time.Now())); err != nil {
		return fmt.Errorf("postgres: sign out console: forget past sign-outs: %w", err)
	}
	if _, err := t.exec(ctx, `INSERT INTO console_signouts (credential, sign_in, ends_at) VALUES ($1, $2, $3)
		ON CONFLICT (credential, sign_in) DO UPDATE SET ends_at = excluded.ends_at`,
		credential, signIn, sqlrow.Nanos(until)); err != nil {
		return fmt.Errorf("postgres: sign out console: %w", err)
	}
	return nil
}

func (t *tx) ConsoleSignedOut(ctx context.Context, credential, signIn string) (bool, error) {
	_, err := queryOne(ctx, t, sqlrow.ScanTime, `SELECT ends_at FROM console_signouts WHERE credential = $1 AND sign_in = $2`,
		credential, signIn)
	switch {
	case errors.Is(err, chorus.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("postgres: console signed out: %w", err)
	}
	return true, nil
}

func (t *tx) OperatorCredentials(ctx context.Context) (*chorus.OperatorCredentials, error) {
	c, err := queryOne(ctx, t, func(r sqlrow.Scanner) (*chorus.OperatorCredentials, error) {
		var c chorus.OperatorCredentials
		return &c, r.Scan(&c.AccountSID, &c.APIKeySID, &c.ServiceSID)
	}, `SELECT account_sid, api_key_sid, service_sid FROM operator_credentials`)
	if err != nil {
		return nil, fmt.Errorf("postgres: operator credentials: %w", err)
	}
	return c, nil
}

func (t *tx) PutOperatorCredentials(ctx context.Context, c *chorus.OperatorCredentials) error {
	if _, err := t.exec(ctx, `INSERT INTO operator_credentials (one, account_sid, api_key_sid, service_sid) VALUES (true, $1, $2, $3)
		ON CONFLICT (one) DO UPDATE SET account_sid = excluded.account_sid, api_key_sid = excluded.api_key_sid, service_sid = excluded.service_sid`,
		c.AccountSID, c.APIKeySID, c.ServiceSID); err != nil {
		return fmt.Errorf("postgres: put operator credentials: %w", err)
	}
	return nil
}

// Services.

func (t *tx) Service(ctx context.Context, sid string) (*chorus.Service, error) {
	s, err := queryOne(ctx, t, sqlrow.ScanService, `SELECT `+sqlrow.ServiceCols+` FROM services WHERE sid = $1`, sid)
	if err != nil {
		return nil, fmt.Errorf("postgres: get service %s: %w", sid, err)
	}
	return s, nil
}

func (t *tx) Services(ctx context.Context, accountSID string, q chorus.ObjectQuery) ([]*chorus.Service, error) {
	args := []any{accountSID}
	where, order := cursorRange(q, &args)
	args = append(args, limitArg(q.Limit))
	ss, err := queryAll(ctx, t, sqlrow.ScanService, `SELECT `+sqlrow.ServiceCols+` FROM services
		WHERE account_sid = $1`+where+` ORDER BY `+order+` LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list services of %s: %w", accountSID, err)
	}
	return ss, nil
}

// cursorRange returns the condition (" AND ..." or "") and ORDER BY terms
// that select q's side of q.After in (date_created, sid) order, appending
// its arguments to args. sid is COLLATE "C": byte order.
func cursorRange(q chorus.ObjectQuery, args *[]any) (where, order string) {
	if q.Backward && q.After == (chorus.Cursor{}) {
		return "", `date_created DESC, sid DESC`
	}
	*args = append(*args, sqlrow.Nanos(q.After.DateCreated), q.After.SID)
	n := len(*args)
	params := ` ($` + strconv.Itoa(n-1) + `, $` + strconv.Itoa(n) + `)`
	if q.Backward {
		return ` AND (date_created, sid) <` + params, `date_created DESC, sid DESC`
	}
	return ` AND (date_created, sid) >` + params, `date_created, sid`
}

func (t *tx) PutService(ctx context.Context, s *chorus.Service) error {
	_, err := t.exec(ctx, `INSERT INTO services (`+sqlrow.ServiceCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
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
		s.ReachabilityDebouncingEnabled, int64(s.ReachabilityDebouncingWindow),
		sqlrow.Nanos(s.DateCreated), sqlrow.Nanos(s.DateUpdated))
	if err != nil {
		return fmt.Errorf("postgres: put service %s: %w", s.SID, err)
	}
	return nil
}

func (t *tx) DeleteService(ctx context.Context, sid string) error {
	// Objects, items and permissions go by ON DELETE CASCADE; events have
	// no foreign key (they outlive their object) and go explicitly.
	if err := t.execOne(ctx, `DELETE FROM services WHERE sid = $1`, sid); err != nil {
		return fmt.Errorf("postgres: delete service %s: %w", sid, err)
	}
	if _, err := t.exec(ctx, `DELETE FROM events WHERE service_sid = $1`, sid); err != nil {
		return fmt.Errorf("postgres: delete service %s: events: %w", sid, err)
	}
	return t.deleteServiceWebhooks(ctx, sid)
}

// Objects.

func (t *tx) Object(ctx context.Context, k chorus.Kind, serviceSID, sid string) (*chorus.Object, error) {
	var o *chorus.Object
	var err error
	if serviceSID == "" { // any service
		o, err = queryOne(ctx, t, sqlrow.ScanObject, `SELECT `+sqlrow.ObjectCols+` FROM objects
			WHERE sid = $1 AND kind = $2`+t.lock(), sid, string(k))
	} else {
		o, err = queryOne(ctx, t, sqlrow.ScanObject, `SELECT `+sqlrow.ObjectCols+` FROM objects
			WHERE sid = $1 AND kind = $2 AND service_sid = $3`+t.lock(), sid, string(k), serviceSID)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get %s %s: %w", k, sid, err)
	}
	return o, nil
}

func (t *tx) ObjectByName(ctx context.Context, k chorus.Kind, serviceSID, uniqueName string) (*chorus.Object, error) {
	o, err := queryOne(ctx, t, sqlrow.ScanObject, `SELECT `+sqlrow.ObjectCols+` FROM objects
		WHERE service_sid = $1 AND kind = $2 AND unique_name = $3`+t.lock(), serviceSID, string(k), uniqueName)
	if err != nil {
		return nil, fmt.Errorf("postgres: get %s named %q: %w", k, uniqueName, err)
	}
	return o, nil
}

func (t *tx) Objects(ctx context.Context, k chorus.Kind, serviceSID string, q chorus.ObjectQuery) ([]*chorus.Object, error) {
	args := []any{serviceSID, string(k)}
	where, order := cursorRange(q, &args)
	query := `SELECT ` + sqlrow.ObjectCols + ` FROM objects
		WHERE service_sid = $1 AND kind = $2` + where
	if !q.Now.IsZero() {
		args = append(args, sqlrow.Nanos(q.Now))
		query += ` AND (date_expires IS NULL OR date_expires > $` + strconv.Itoa(len(args)) + `)`
	}
	args = append(args, limitArg(q.Limit))
	query += ` ORDER BY ` + order + ` LIMIT $` + strconv.Itoa(len(args))
	os, err := queryAll(ctx, t, sqlrow.ScanObject, query, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list %ss of %s: %w", k, serviceSID, err)
	}
	return os, nil
}

func (t *tx) ExpiredObjects(ctx context.Context, now time.Time, limit int) ([]*chorus.Object, error) {
	os, err := queryAll(ctx, t, sqlrow.ScanObject, `SELECT `+sqlrow.ObjectCols+` FROM objects
		WHERE date_expires IS NOT NULL AND date_expires <= $1
		ORDER BY date_expires LIMIT $2`, sqlrow.Nanos(now), limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("postgres: list expired objects: %w", err)
	}
	return os, nil
}

func (t *tx) InsertObject(ctx context.Context, o *chorus.Object) error {
	// ON CONFLICT on the unique-name index, not a caught unique violation:
	// a failed statement would abort the transaction, and the caller may
	// go on after ErrUniqueNameExists. A concurrent insert of the same name
	// makes this wait for that transaction, then conflict if it committed.
	tag, err := t.exec(ctx, `INSERT INTO objects (`+sqlrow.ObjectCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
		ON CONFLICT (service_sid, kind, unique_name) DO NOTHING`,
		string(o.Kind), o.SID, o.AccountSID, o.ServiceSID, sqlrow.NullString(o.UniqueName), o.Revision,
		sqlrow.Blob(o.Data), o.LastEventID, o.NextIndex, o.CreatedBy,
		sqlrow.Nanos(o.DateCreated), sqlrow.Nanos(o.DateUpdated), sqlrow.NullNanos(o.DateExpires))
	if err == nil && tag.RowsAffected() == 0 {
		err = chorus.ErrUniqueNameExists
	}
	if err != nil {
		return fmt.Errorf("postgres: insert %s %s: %w", o.Kind, o.SID, err)
	}
	return nil
}

func (t *tx) UpdateObject(ctx context.Context, o *chorus.Object) error {
	query := `UPDATE objects SET kind = $1, account_sid = $2, service_sid = $3,
			unique_name = $4, revision = $5, data = $6, last_event_id = $7, next_index = $8,
			created_by = $9, date_created = $10, date_updated = $11, date_expires = $12
		WHERE sid = $13`
	if o.UniqueName != "" {
		// Check the name first rather than catch the unique violation,
		// which would abort the transaction (see InsertObject). A name
		// taken by a concurrent transaction still ends in the violation.
		query += ` AND NOT EXISTS (SELECT 1 FROM objects AS o2
			WHERE o2.service_sid = $3 AND o2.kind = $1 AND o2.unique_name = $4 AND o2.sid <> $13)`
	}
	tag, err := t.exec(ctx, query,
		string(o.Kind), o.AccountSID, o.ServiceSID, sqlrow.NullString(o.UniqueName), o.Revision,
		sqlrow.Blob(o.Data), o.LastEventID, o.NextIndex, o.CreatedBy,
		sqlrow.Nanos(o.DateCreated), sqlrow.Nanos(o.DateUpdated), sqlrow.NullNanos(o.DateExpires), o.SID)
	switch {
	case isUniqueViolation(err, "objects_unique_name"):
		err = chorus.Wrap(chorus.ErrUniqueNameExists, err)
	case err == nil && tag.RowsAffected() == 0:
		err = chorus.ErrNotFound
		if o.UniqueName != "" {
			var exists bool
			if qerr := t.c.QueryRow(t.ctx, `SELECT EXISTS (SELECT 1 FROM objects WHERE sid = $1)`, o.SID).Scan(&exists); qerr != nil {
				err = t.note(qerr)
			} else if exists {
				err = chorus.ErrUniqueNameExists
			}
		}
	}
	if err != nil {
		return fmt.Errorf("postgres: update %s %s: %w", o.Kind, o.SID, err)
	}
	return nil
}

func (t *tx) DeleteObject(ctx context.Context, sid string) error {
	// Items and permissions go by ON DELETE CASCADE; events stay.
	if err := t.execOne(ctx, `DELETE FROM objects WHERE sid = $1`, sid); err != nil {
		return fmt.Errorf("postgres: delete object %s: %w", sid, err)
	}
	return nil
}

// Items. A list item has Key "", a map item Index 0: (object, index, key)
// is the primary key of both.

func (t *tx) Item(ctx context.Context, objectSID string, ref chorus.ItemRef) (*chorus.Item, error) {
	it, err := queryOne(ctx, t, sqlrow.ScanItem, `SELECT `+sqlrow.ItemCols+` FROM items
		WHERE object_sid = $1 AND idx = $2 AND key = $3`, objectSID, ref.Index, ref.Key)
	if err != nil {
		return nil, fmt.Errorf("postgres: get item %s %d %q: %w", objectSID, ref.Index, ref.Key, err)
	}
	return it, nil
}

func (t *tx) ItemsOf(ctx context.Context, objectSID string, refs []chorus.ItemRef) ([]*chorus.Item, error) {
	idx := make([]int64, len(refs))
	keys := make([]string, len(refs))
	for i, ref := range refs {
		idx[i], keys[i] = ref.Index, ref.Key
	}
	its, err := queryAll(ctx, t, sqlrow.ScanItem, `SELECT `+sqlrow.ItemCols+` FROM items
		WHERE object_sid = $1 AND (idx, key) IN (SELECT * FROM unnest($2::bigint[], $3::text[]))`, objectSID, idx, keys)
	if err != nil {
		return nil, fmt.Errorf("postgres: items of %s: %w", objectSID, err)
	}
	return its, nil
}

func (t *tx) Items(ctx context.Context, objectSID string, q chorus.ItemQuery) ([]*chorus.Item, error) {
	col, from := "idx", any(q.FromIndex)
	if q.Kind == chorus.KindMap {
		col, from = "key", q.FromKey
	}
	var b strings.Builder
	b.WriteString(`SELECT ` + sqlrow.ItemCols + ` FROM items WHERE object_sid = $1`)
	args := []any{objectSID}
	param := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.HasFrom {
		op := ">"
		if q.Desc {
			op = "<"
		}
		if q.Inclusive {
			op += "="
		}
		b.WriteString(` AND ` + col + ` ` + op + ` ` + param(from))
	}
	if !q.Now.IsZero() {
		b.WriteString(` AND (date_expires IS NULL OR date_expires > ` + param(sqlrow.Nanos(q.Now)) + `)`)
	}
	b.WriteString(` ORDER BY ` + col)
	if q.Desc {
		b.WriteString(` DESC`)
	}
	b.WriteString(` LIMIT ` + param(limitArg(q.Limit)))
	its, err := queryAll(ctx, t, sqlrow.ScanItem, b.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list items of %s: %w", objectSID, err)
	}
	return its, nil
}

func (t *tx) ItemsChangedSince(ctx context.Context, objectSID string, eventID int64, limit int) ([]*chorus.Item, error) {
	its, err := queryAll(ctx, t, sqlrow.ScanItem, `SELECT `+sqlrow.ItemCols+` FROM items
		WHERE object_sid = $1 AND last_event_id > $2
		ORDER BY last_event_id LIMIT $3`, objectSID, eventID, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("postgres: list items of %s changed since %d: %w", objectSID, eventID, err)
	}
	return its, nil
}

func (t *tx) ExpiredItems(ctx context.Context, now time.Time, limit int) ([]*chorus.Item, error) {
	its, err := queryAll(ctx, t, sqlrow.ScanItem, `SELECT `+sqlrow.ItemCols+` FROM items
		WHERE date_expires IS NOT NULL AND date_expires <= $1
		ORDER BY date_expires LIMIT $2`, sqlrow.Nanos(now), limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("postgres: list expired items: %w", err)
	}
	return its, nil
}

func (t *tx) PutItem(ctx context.Context, it *chorus.Item) error {
	_, err := t.exec(ctx, `INSERT INTO items (`+sqlrow.ItemCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (object_sid, idx, key) DO UPDATE SET kind = excluded.kind, data = excluded.data,
			revision = excluded.revision, last_event_id = excluded.last_event_id,
			created_by = excluded.created_by, date_created = excluded.date_created,
			date_updated = excluded.date_updated, date_expires = excluded.date_expires`,
		string(it.Kind), it.ObjectSID, it.Index, it.Key, sqlrow.Blob(it.Data), it.Revision, it.LastEventID,
		it.CreatedBy, sqlrow.Nanos(it.DateCreated), sqlrow.Nanos(it.DateUpdated), sqlrow.NullNanos(it.DateExpires))
	if err != nil {
		return fmt.Errorf("postgres: put item %s %d %q: %w", it.ObjectSID, it.Index, it.Key, err)
	}
	return nil
}

func (t *tx) DeleteItem(ctx context.Context, objectSID string, ref chorus.ItemRef) error {
	if err := t.execOne(ctx, `DELETE FROM items WHERE object_sid = $1 AND idx = $2 AND key = $3`,
		objectSID, ref.Index, ref.Key); err != nil {
		return fmt.Errorf("postgres: delete item %s %d %q: %w", objectSID, ref.Index, ref.Key, err)
	}
	return nil
}

// Permissions.

func (t *tx) Permission(ctx context.Context, objectSID, identity string) (*chorus.Permission, error) {
	p, err := queryOne(ctx, t, sqlrow.ScanPermission, `SELECT `+sqlrow.PermissionCols+` FROM permissions
		WHERE object_sid = $1 AND identity = $2`, objectSID, identity)
	if err != nil {
		return nil, fmt.Errorf("postgres: get permission %s %q: %w", objectSID, identity, err)
	}
	return p, nil
}

func (t *tx) Permissions(ctx context.Context, objectSID string, q chorus.PermissionQuery) ([]*chorus.Permission, error) {
	// identity is COLLATE "C": byte order.
	where, order := ` AND identity > $2`, `identity`
	args := []any{objectSID, q.After}
	if q.Backward {
		where, order = ` AND identity < $2`, `identity DESC`
		if q.After == "" {
			where, args = "", args[:1]
		}
	}
	args = append(args, limitArg(q.Limit))
	ps, err := queryAll(ctx, t, sqlrow.ScanPermission, `SELECT `+sqlrow.PermissionCols+` FROM permissions
		WHERE object_sid = $1`+where+` ORDER BY `+order+` LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list permissions of %s: %w", objectSID, err)
	}
	return ps, nil
}

func (t *tx) PutPermission(ctx context.Context, p *chorus.Permission) error {
	_, err := t.exec(ctx, `INSERT INTO permissions (`+sqlrow.PermissionCols+`) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (object_sid, identity) DO UPDATE SET read = excluded.read,
			write = excluded.write, manage = excluded.manage`,
		p.ObjectSID, p.Identity, p.Read, p.Write, p.Manage)
	if err != nil {
		return fmt.Errorf("postgres: put permission %s %q: %w", p.ObjectSID, p.Identity, err)
	}
	return nil
}

func (t *tx) DeletePermission(ctx context.Context, objectSID, identity string) error {
	if err := t.execOne(ctx, `DELETE FROM permissions WHERE object_sid = $1 AND identity = $2`,
		objectSID, identity); err != nil {
		return fmt.Errorf("postgres: delete permission %s %q: %w", objectSID, identity, err)
	}
	return nil
}

// Events, stored as sqlrow.EncodeEvent encodes them.

func (t *tx) Events(ctx context.Context, objectSID string, afterID int64, limit int) ([]*chorus.Event, error) {
	es, err := queryAll(ctx, t, sqlrow.ScanEvent, `SELECT `+sqlrow.EventCols+` FROM events
		WHERE object_sid = $1 AND id > $2 ORDER BY id LIMIT $3`, objectSID, afterID, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("postgres: list events of %s: %w", objectSID, err)
	}
	return es, nil
}

func (t *tx) LastEventIDs(ctx context.Context, objectSIDs []string) (map[string]int64, error) {
	if len(objectSIDs) == 0 {
		return map[string]int64{}, nil
	}
	// One backward scan of the primary key per object, stopped at its
	// first row (PostgreSQL's min/max optimization); COLLATE "C" is the
	// key's.
	ids, err := queryAll(ctx, t, sqlrow.ScanLastEventID, `SELECT s.sid, (SELECT MAX(e.id) FROM events AS e WHERE e.object_sid = s.sid COLLATE "C")
		FROM unnest($1::text[]) AS s (sid)`, objectSIDs)
	if err != nil {
		return nil, fmt.Errorf("postgres: last event ids: %w", err)
	}
	return sqlrow.LastEventIDMap(ids), nil
}

func (t *tx) EventsOfType(ctx context.Context, serviceSID, objectSID string, types []chorus.EventType, afterID, throughID int64, limit int) ([]*chorus.Event, error) {
	if len(types) == 0 {
		return nil, nil
	}
	var args []any
	arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
	q := `SELECT ` + sqlrow.EventCols + ` FROM events WHERE object_sid = ` + arg(objectSID) + ` AND service_sid = ` + arg(serviceSID) +
		` AND id > ` + arg(afterID) + ` AND id <= ` + arg(throughID) + ` AND (`
	for i, typ := range types {
		if i > 0 {
			q += ` OR `
		}
		// A prefix compare: no LIKE, whose escapes depend on settings.
		prefix := sqlrow.EventTypePrefix(typ)
		q += `starts_with(body, ` + arg(prefix) + `)`
	}
	q += `) ORDER BY id LIMIT ` + arg(limitArg(limit))
	es, err := queryAll(ctx, t, sqlrow.ScanEvent, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list %v events of %s: %w", types, objectSID, err)
	}
	return es, nil
}

func (t *tx) AppendEvent(ctx context.Context, e *chorus.Event) error {
	if e.ID <= 0 {
		return fmt.Errorf("postgres: append event to %s: id %d is not a log id", e.ObjectSID, e.ID)
	}
	body, data, itemData, err := sqlrow.EncodeEvent(e)
	if err != nil {
		return eventError(e.ID, e.ObjectSID, err)
	}
	return t.hold(ctx, heldWrite{id: e.ID, obj: e.ObjectSID,
		args: []any{e.ObjectSID, e.ID, e.ServiceSID, sqlrow.Nanos(e.DateCreated), body, data, itemData}})
}

func (t *tx) EventTime(ctx context.Context, from time.Time, n int) (time.Time, bool, error) {
	ts, err := queryOne(ctx, t, sqlrow.ScanTime, `SELECT created_at FROM events WHERE created_at >= $1 ORDER BY created_at LIMIT 1 OFFSET $2`, sqlrow.Nanos(from), int64(n))
	if errors.Is(err, chorus.ErrNotFound) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("postgres: event time: %w", err)
	}
	return *ts, true, nil
}

func (t *tx) TrimEvents(ctx context.Context, p chorus.EventTrim) (int, error) {
	var args []any
	arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
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
			OR id <= (SELECT MAX(e2.id) FROM events AS e2 WHERE e2.object_sid = events.object_sid) - ` + arg(int64(p.Keep)) + `)`
	}
	tag, err := t.exec(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("postgres: trim events: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
