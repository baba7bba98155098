package postgres

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/groupcommit"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

var _ chorus.Store = (*Store)(nil)

// Defaults of Config.
const (
	DefaultWriters        = 2
	DefaultMaxBatch       = 64
	DefaultTxTimeout      = 10 * time.Second
	DefaultConnectTimeout = 5 * time.Second
	DefaultLeaderLease    = 15 * time.Second

	// maxBatchLimit caps MaxBatch: each request of a batch runs in a
	// subtransaction, and PostgreSQL caches only 64 subtransaction ids per
	// backend; beyond that every snapshot in the cluster gets slower
	// (subxid overflow).
	maxBatchLimit = 64
	// queueLen is the capacity of the writers' request queue.
	queueLen = 1024
	// maxAttempts bounds how often a request is re-run after lock
	// conflicts, deadlocks or serialization failures.
	maxAttempts = 100
)

// Log attribute keys.
const (
	logKeyAddr  = "addr"
	logKeyBatch = "batch"
	logKeyErr   = "err"

	logKeySuppressed = "suppressed"
)

// ErrClosed is returned by calls on a closed Store.
var ErrClosed = errors.New("postgres: store closed")

// Config tunes a Store. The zero Config means the defaults.
type Config struct {
	// Writers is the number of writer goroutines, each running one batch
	// transaction at a time on its own pooled connection. Default 2 (more writers
	// overlap commits but compete for CPU; 2 measured best on a 2-core host).
	Writers int
	// MaxBatch caps how many Update requests share one transaction
	// (at most 64). Default 64.
	MaxBatch int
	// NoBatch turns group commit off: every Update runs its own
	// transaction on a pooled connection, in the caller's goroutine.
	NoBatch bool
	// MaxConns is the pool size. Default Writers+16.
	MaxConns int32
	// TxTimeout bounds every transaction (from acquiring its connection to
	// COMMIT), so that a lost server fails calls instead of hanging them.
	// Default 10s. It also sets the sessions' lock_timeout (TxTimeout/4)
	// and idle_in_transaction_session_timeout (2×TxTimeout), unless the
	// DSN sets them.
	TxTimeout time.Duration
	// ConnectTimeout bounds connecting to the server when the DSN sets no
	// connect_timeout. Default 5s.
	ConnectTimeout time.Duration
	// ReadOnly opens the store for reading: its schema is never created
	// or upgraded (Open fails on a schema other than this binary's), so a
	// command that only reads (chorus admin credentials) cannot leave
	// nodes of an earlier version unable to start. Writes are not meant.
	ReadOnly bool
	// LeaderLease is how long a leader that stops answering (a process
	// stopped with SIGSTOP, a paused VM) keeps the cluster's leadership:
	// its lock's session sets idle_session_timeout to it, so that the
	// server ends the session, and with it the lock, once the leader has
	// not pinged it for that long; a live leader pings it every
	// LeaderLease/3. Default 15s. PostgreSQL before 14 has no
	// idle_session_timeout: there a frozen leader keeps leadership until
	// it resumes or dies (a warning says so at the first election).
	LeaderLease time.Duration
	// SingleNodeCheck is how often a node without a bus checks its
	// single-node lock (LockSingleNode). Default 5s.
	SingleNodeCheck time.Duration
	// SingleNodeGrace is how long another session must hold the
	// single-node lock, after this node lost it, before this node stops
	// (Store.SingleNodeTaken); default 30 s, past the keepalives that end
	// this node's own stale session (10 s + 3 × 5 s).
	SingleNodeGrace time.Duration

	tracer pgx.QueryTracer // tests: sees every statement of every connection
}

// lockTimeout is the sessions' default lock_timeout: a quarter of
// TxTimeout. An Update whose statement waited that long for a lock (held,
// say, by a node that froze inside its transaction) fails with a clear
// error rather than eat the batch's whole TxTimeout.
func (c Config) lockTimeout() time.Duration { return c.TxTimeout / 4 }

// millis formats d for a PostgreSQL setting whose unit is milliseconds
// (at least 1: 0 would turn it off).
func millis(d time.Duration) string { return strconv.FormatInt(max(d.Milliseconds(), 1), 10) }

func (c Config) withDefaults() Config {
	if c.Writers <= 0 {
		c.Writers = DefaultWriters
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	c.MaxBatch = min(c.MaxBatch, maxBatchLimit)
	if c.MaxConns <= 0 {
		c.MaxConns = int32(c.Writers) + 16
	}
	if c.TxTimeout <= 0 {
		c.TxTimeout = DefaultTxTimeout
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.LeaderLease <= 0 {
		c.LeaderLease = DefaultLeaderLease
	}
	if c.SingleNodeGrace <= 0 {
		c.SingleNodeGrace = 30 * time.Second
	}
	if c.SingleNodeCheck <= 0 {
		c.SingleNodeCheck = 5 * time.Second
	}
	return c
}

// Store is a chorus.Store on PostgreSQL. See the package documentation for
// its concurrency model.
type Store struct {
	cfg     Config
	pool    *pgxpool.Pool
	logger  *slog.Logger
	addr    string // host:port, for messages
	schema  string
	connCfg *pgx.ConnConfig // for the leader connection

	base   context.Context // canceled by Close, after the writers drained
	cancel context.CancelFunc

	queue *groupcommit.Queue
	wg    sync.WaitGroup // writer goroutines

	leader  sessionLock // cluster leadership (Leader)
	single  sessionLock // the database's only node without a bus (LockSingleNode)
	keeping sync.Once   // starts keepSingleNode
	// singleTaken receives one error when another node took the
	// single-node lock this Store had held (SingleNodeTaken).
	singleTaken chan error
	imports     sessionLock // one copy into the database at a time (LockImport)

	warnMu         sync.Mutex
	warnLast       time.Time
	warnSuppressed int
}

// warnEvery rate-limits the error log of failing batches: while the server
// is down, every batch fails.
const warnEvery = 10 * time.Second

// warn logs an error at most once per warnEvery, counting the others.
func (s *Store) warn(msg string, args ...any) {
	s.warnMu.Lock()
	if time.Since(s.warnLast) < warnEvery {
		s.warnSuppressed++
		s.warnMu.Unlock()
		return
	}
	n := s.warnSuppressed
	s.warnLast, s.warnSuppressed = time.Now(), 0
	s.warnMu.Unlock()
	if n > 0 {
		args = append(args, logKeySuppressed, n)
	}
	s.logger.Error(msg, args...)
}

// parseConfig parses dsn into a pool configuration with the session
// settings every connection needs.
// quoted matches what pgx's parse errors quote: the DSN, or a token of it.
var quoted = regexp.MustCompile("`[^`]*`|\"[^\"]*\"")

// parseReason is why pgx could not parse a DSN, without the DSN or any
// part of it that pgx quotes (a token with a bad escape may be the
// password): "invalid port", "failed to configure TLS (sslmode is
// invalid)".
func parseReason(err error) string {
	r := err.Error()
	if i := strings.LastIndex(r, "`: "); i >= 0 {
		r = r[i+3:]
	}
	return quoted.ReplaceAllString(r, "…")
}

func parseConfig(dsn string, cfg Config) (*pgxpool.Config, error) {
	cfg = cfg.withDefaults()
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("invalid DSN: %s", parseReason(err))
	}
	cc := pc.ConnConfig
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = cfg.ConnectTimeout
	}
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	// Durability: COMMIT returns after the WAL is flushed, whatever the
	// server's or role's default.
	cc.RuntimeParams["synchronous_commit"] = "on"
	// Text goes over the wire as UTF-8, whatever the role's or database's
	// client_encoding (with another one, non-ASCII names would be converted).
	cc.RuntimeParams["client_encoding"] = "UTF8"
	cc.RuntimeParams["default_transaction_isolation"] = "read committed"
	// A session whose client stopped (a frozen or partitioned node) must
	// not keep its row locks: the server ends it, rolling back, after
	// idling in a transaction for twice TxTimeout (a live Store never
	// does: its transactions end within TxTimeout), or when keepalives go
	// unanswered for about 25 s (a vanished host). A statement gives up
	// waiting for a lock after lockTimeout, long before TxTimeout, so that
	// the rest of its batch still runs. Unlike synchronous_commit, which
	// durability needs, these are tuning: a DSN that sets one keeps its
	// value (0 turns a timeout off).
	for k, v := range map[string]string{
		"idle_in_transaction_session_timeout": millis(2 * cfg.TxTimeout),
		"lock_timeout":                        millis(cfg.lockTimeout()),
		"tcp_keepalives_idle":                 "10",
		"tcp_keepalives_interval":             "5",
		"tcp_keepalives_count":                "3",
	} {
		if _, ok := cc.RuntimeParams[k]; !ok {
			cc.RuntimeParams[k] = v
		}
	}
	pc.MaxConns = cfg.MaxConns
	if cfg.tracer != nil {
		cc.Tracer = cfg.tracer
	}
	return pc, nil
}

// addr names the server of c for messages, without credentials.
func addr(c *pgx.ConnConfig) string {
	return net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))
}

// Open connects to the PostgreSQL database of dsn (a URL or key=value
// string; its search_path selects the schema), brings the schema up to date
// and starts the writers, with the default Config. A nil logger means
// slog.Default().
func Open(ctx context.Context, dsn string, logger *slog.Logger) (*Store, error) {
	return OpenConfig(ctx, dsn, Config{}, logger)
}

// OpenConfig is Open with a Config.
func OpenConfig(ctx context.Context, dsn string, cfg Config, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.Default()
	}
	cfg = cfg.withDefaults()
	pc, err := parseConfig(dsn, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	a := addr(pc.ConnConfig)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: open %s: %w", a, err)
	}
	s := &Store{
		cfg:     cfg,
		pool:    pool,
		logger:  logger.With(logKeyAddr, a),
		addr:    a,
		connCfg: pc.ConnConfig.Copy(),
		queue:   groupcommit.NewQueue(queueLen),
	}
	if err := s.init(ctx); err != nil {
		pool.Close()
		if tlsRefused(err) {
			// The server answered: waiting for it (ErrUnavailable) cannot help.
			return nil, fmt.Errorf("postgres: open %s: TLS as the URL's sslmode asks failed: %v", a, err)
		}
		return nil, fmt.Errorf("postgres: open %s: %w", a, err)
	}
	s.base, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.leader.key, s.leader.app = lockKey("leader", s.schema), "chorus-leader"
	s.leader.lease = cfg.LeaderLease
	go s.keepLeadership()
	// Named for this Store alone: a session of its own that outlived its
	// connection is told from another node's by the name (endOwnStaleLock).
	s.single.key, s.single.app = lockKey("single-node", s.schema), "chorus-single-node-"+chorus.NewSID("")[:16]
	s.singleTaken = make(chan error, 1)
	s.imports.key, s.imports.app = lockKey("import", s.schema), "chorus-import"
	if !cfg.NoBatch {
		for range cfg.Writers {
			s.wg.Go(s.writeLoop)
		}
	}
	return s, nil
}

// init checks the connection and migrates.
func (s *Store) init(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.TxTimeout+s.cfg.ConnectTimeout)
	defer cancel()
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return unavailable(err)
	}
	defer c.Release()
	if s.schema, err = currentSchema(ctx, c.Conn()); err != nil {
		return err
	}
	var sc string
	if err := c.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sc); err != nil {
		return fmt.Errorf("read synchronous_commit: %w", err)
	}
	if sc != "on" {
		return fmt.Errorf("synchronous_commit is %q, want on", sc)
	}
	if s.cfg.ReadOnly {
		return checkSchema(ctx, c.Conn(), s.schema)
	}
	if err := migrate(ctx, c.Conn()); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// checkEncoding refuses a database whose server encoding cannot hold every
// Unicode character. Unique names, item keys, event bodies and webhook
// failure reasons (which may carry U+FFFD) are text columns, sent as UTF-8
// (parseConfig): in a LATIN1 database, say, the first write of a name
// outside LATIN1 would fail, long after the store opened. UTF8 holds them
// all; SQL_ASCII stores the bytes unchecked (the server still checks that
// the client's UTF-8 is valid). Open and Migrate check it (migrate) before
// any DDL, so that `chorus migrate` fails as the nodes would.
//
// Releases before this check connected with pgx's default, the database's
// encoding, so a LATIN1 database holds Chorus's UTF-8 bytes labelled as
// LATIN1; README ("Running a cluster") shows how to move it to UTF8
// without converting them twice.
func checkEncoding(ctx context.Context, c *pgx.Conn) error {
	var enc string
	if err := c.QueryRow(ctx, "SHOW server_encoding").Scan(&enc); err != nil {
		return fmt.Errorf("read server_encoding: %w", err)
	}
	switch enc {
	case "UTF8", "SQL_ASCII":
		return nil
	}
	return fmt.Errorf("the database's encoding is %s, want UTF8: names, keys and events are Unicode text "+
		"(create the database with ENCODING 'UTF8' TEMPLATE template0; to move an existing one, "+
		"see \"Running a cluster\" in the README)", enc)
}

// Addr returns the server's host:port.
func (s *Store) Addr() string { return s.addr }

// Schema returns the schema the store works in.
func (s *Store) Schema() string { return s.schema }

// Close finishes every queued Update, releases leadership and the
// single-node lock, and closes the pool (waiting for running Views). Calls
// after Close fail.
func (s *Store) Close() error {
	if !s.queue.Close() {
		return ErrClosed
	}
	s.wg.Wait()
	// The locks first: a leader ping under way (keepLeadership) ends
	// before its context is canceled, which would drop the connection
	// without the explicit unlock.
	s.leader.close()
	s.single.close()
	s.imports.close()
	s.cancel()
	s.pool.Close()
	return nil
}

func (s *Store) isClosed() bool { return s.queue.Closed() }

// Ping checks that the server answers and takes writes: a standby, or a
// primary set read-only (a failover under way), fails it with an error
// wrapping chorus.ErrUnavailable, as it fails every write.
func (s *Store) Ping(ctx context.Context) error {
	if s.isClosed() {
		return ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.TxTimeout)
	defer cancel()
	var readOnly bool
	if err := s.pool.QueryRow(ctx, "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'").Scan(&readOnly); err != nil {
		return fmt.Errorf("postgres: ping %s: %w", s.addr, unavailable(err))
	}
	if readOnly {
		return fmt.Errorf("postgres: ping %s: %w", s.addr, chorus.Wrap(chorus.ErrUnavailable,
			errors.New("the server takes no writes (a standby, or read-only)")))
	}
	return nil
}

// View runs fn in a REPEATABLE READ READ ONLY transaction: one snapshot.
func (s *Store) View(ctx context.Context, fn func(chorus.ReadTx) error) (err error) {
	if s.isClosed() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, s.cfg.TxTimeout)
	defer cancel()
	c, err := s.pool.Acquire(tctx)
	if err != nil {
		return s.connError(ctx, "view: acquire", err)
	}
	defer c.Release()
	t := &tx{c: c.Conn(), ctx: tctx, pending: []string{sqlBeginView}}
	defer func() {
		t.finish()
		if !t.sent {
			return
		}
		// Ending a read-only transaction cannot lose data: if it fails,
		// the connection is broken and pgx discards it.
		if _, rerr := c.Exec(context.WithoutCancel(tctx), "ROLLBACK"); rerr != nil && err == nil && t.broken == nil {
			err = s.connError(ctx, "view: end", rerr)
		}
	}()
	err = fn(t)
	if t.broken != nil {
		return s.connError(ctx, "view", t.broken)
	}
	return err
}

// connError wraps err, from talking to the server, with op; errors of a
// lost or unusable connection wrap chorus.ErrUnavailable unless the
// caller's own ctx ended.
func (s *Store) connError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	return fmt.Errorf("postgres: %s %s: %w", op, s.addr, unavailable(err))
}

// unavailable wraps err in chorus.ErrUnavailable when it means that the
// server cannot be reached or used right now.
func unavailable(err error) error {
	var pe *pgconn.PgError
	readOnly := errors.As(err, &pe) && pe.Code == codeReadOnly // a write's (tx.note)
	if err == nil || !isConnError(err) && !readOnly {
		return err
	}
	return chorus.Wrap(chorus.ErrUnavailable, err)
}

// tlsRefused reports whether err is a server's refusal of TLS (sslmode
// require or verify-* against a server without it) or a certificate that
// fails verification: a server that answered, which no retry changes.
func tlsRefused(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return strings.Contains(err.Error(), "server refused TLS connection") ||
		errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

// isConnError reports whether err comes from a lost, unreachable or
// unusable connection rather than from a statement the server rejected.
func isConnError(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case len(pe.Code) == 5 && pe.Code[:2] == "08", // connection exception
			pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", // shutdown, crash, starting up
			pe.Code == "53300": // too many connections
			return true
		}
		return false
	}
	return true
}

// SQLSTATEs of a server that cannot take a write now.
const (
	codeReadOnly    = "25006" // read_only_sql_transaction
	codeDiskFull    = "53100" // disk_full
	codeOutOfMemory = "53200" // out_of_memory
)

// codeForeignKeyViolation is foreign_key_violation: a row refers to one
// that a concurrent transaction deleted.
const codeForeignKeyViolation = "23503"

// codeLockNotAvailable is lock_not_available: a NOWAIT lock found the row
// busy, or a lock wait ran out of lock_timeout.
const codeLockNotAvailable = "55P03"

// codeUndefinedObject is undefined_object: among others, a setting this
// server does not have.
const codeUndefinedObject = "42704"

// isConflict reports whether err is a lock conflict, deadlock or
// serialization failure, after which the transaction is worth re-running.
func isConflict(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "40001", "40P01", codeLockNotAvailable:
		return true
	}
	return false
}

// lockedError is the answer to a request whose statement waited for a lock
// longer than lock_timeout (err): a 503 that says why and to retry.
func lockedError(err error) error {
	return &chorus.Error{Status: chorus.ErrUnavailable.Status, Code: chorus.ErrUnavailable.Code,
		Message: "Service unavailable: the resource is locked by another write that has not finished; retry later",
		Err:     err}
}

// Update runs fn in a read-write transaction and returns after COMMIT; see
// the package documentation. If ctx is done before fn starts, fn does not
// run and Update returns ctx.Err(). A panic in fn is re-raised in the
// caller's goroutine.
func (s *Store) Update(ctx context.Context, fn func(chorus.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.cfg.NoBatch {
		if s.isClosed() {
			return ErrClosed
		}
		return s.updateDirect(ctx, fn)
	}
	return s.queue.Submit(ctx, fn, ErrClosed)
}

// updateDirect runs fn in its own transaction (Config.NoBatch).
func (s *Store) updateDirect(ctx context.Context, fn func(chorus.Tx) error) error {
	for attempt := 1; ; attempt++ {
		conflict, err := s.updateOnce(ctx, fn)
		if conflict == nil {
			return err
		}
		if attempt >= maxAttempts {
			return fmt.Errorf("postgres: update: gave up after %d conflicts: %w", attempt, unavailableConflict(conflict))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// unavailableConflict is the error of a request that kept conflicting.
func unavailableConflict(err error) error { return chorus.Wrap(chorus.ErrUnavailable, err) }

// updateOnce runs one attempt of updateDirect; a non-nil conflict asks for
// another.
func (s *Store) updateOnce(ctx context.Context, fn func(chorus.Tx) error) (conflict, err error) {
	tctx, cancel := context.WithTimeout(ctx, s.cfg.TxTimeout)
	defer cancel()
	c, err := s.pool.Acquire(tctx)
	if err != nil {
		return nil, s.connError(ctx, "update: acquire", err)
	}
	defer c.Release()
	t := &tx{c: c.Conn(), ctx: tctx, write: true, pending: []string{sqlBegin}}
	var p any
	func() {
		defer func() {
			t.finish()
			p = recover()
		}()
		err = t.runFn(fn)
		if err == nil && t.unsaved != nil && t.conflict == nil {
			err = fmt.Errorf("postgres: update: %w", t.unsaved) // BEGIN never ran
		}
	}()
	if p != nil || err != nil || t.conflict != nil || t.broken != nil {
		if t.sent {
			if _, rerr := c.Exec(context.WithoutCancel(tctx), "ROLLBACK"); rerr != nil {
				s.logger.Debug("postgres: rollback", logKeyErr, rerr)
			}
		}
		switch {
		case p != nil:
			panic(p)
		case t.broken != nil:
			return nil, s.connError(ctx, "update", t.broken)
		case t.lockTimedOut:
			return nil, fmt.Errorf("postgres: update: %w", lockedError(t.conflict))
		case t.conflict != nil:
			return t.conflict, nil
		}
		return nil, err
	}
	if !t.sent {
		return nil, nil // fn wrote nothing
	}
	if err := commit(tctx, c.Conn()); err != nil {
		if isConflict(err) {
			return err, nil
		}
		return nil, s.connError(ctx, "update: commit", s.commitUnknown(err, c.Conn()))
	}
	return nil, nil
}

// writeLoop is a writer goroutine: it takes what is queued, runs it as one
// batch, and repeats until Close closes the queue and it is drained.
// Requests deferred by a batch (lock conflicts) open the next one.
func (s *Store) writeLoop() {
	batch := make([]*groupcommit.Request, 0, s.cfg.MaxBatch)
	var carry []*groupcommit.Request
	spared := map[*groupcommit.Request]bool{} // see runBatch
	open := true
	for open || len(carry) > 0 {
		batch = append(batch[:0], carry...)
		carry = carry[:0]
		if len(batch) == 0 {
			r, ok := <-s.queue.C()
			if !ok {
				return
			}
			batch = append(batch, r)
		}
	gather:
		for open && len(batch) < s.cfg.MaxBatch {
			select {
			case r, ok := <-s.queue.C():
				if !ok {
					open = false
					break gather
				}
				batch = append(batch, r)
			default:
				break gather
			}
		}
		carry = s.runBatch(batch, carry, spared)
		for r := range spared {
			if !slices.Contains(carry, r) {
				delete(spared, r) // answered, or given up by its caller
			}
		}
		clear(batch)
	}
}

// Transaction statements. Requests of a batch nest their savepoints (no
// RELEASE): ROLLBACK TO rolls back to the innermost one, the failing
// request's, and COMMIT releases them all.
const (
	sqlBegin      = "BEGIN"
	sqlBeginView  = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
	sqlSavepoint  = "SAVEPOINT req"
	sqlRollbackTo = "ROLLBACK TO SAVEPOINT req"
)

// runBatch runs the requests of one batch in one transaction and answers
// each of them, except those that hit a lock conflict: it appends them to
// carry, for the next batch, and returns carry.
//
// When the transaction is lost while a request runs (its connection
// broke, or the batch's TxTimeout ran out), that request fails; the
// requests before it, rolled back, and those after it, which never ran,
// go to the next batch instead of failing with it, and are recorded in
// spared. A spared request fails with the next batch that is lost, so that
// while the server does not answer every request still fails within about
// two TxTimeouts.
func (s *Store) runBatch(batch, carry []*groupcommit.Request, spared map[*groupcommit.Request]bool) []*groupcommit.Request {
	// Claim the requests whose callers still wait; answer the others.
	run := batch[:0:0]
	for _, r := range batch {
		if !r.Claim() {
			continue // canceled: Update already returned
		}
		if err := r.Ctx.Err(); err != nil {
			r.Err = err
			r.Answer()
			continue
		}
		run = append(run, r)
	}
	if len(run) == 0 {
		return carry
	}
	// Statements of a shared transaction never see a caller's ctx: one
	// caller giving up must not break the others' transaction.
	ctx, cancel := context.WithTimeout(s.base, s.cfg.TxTimeout)
	defer cancel()
	failAll := func(op string, err error) {
		err = fmt.Errorf("postgres: update: %s %s: %w", op, s.addr, unavailable(err))
		s.warn("postgres: write batch failed", logKeyBatch, len(run), logKeyErr, err)
		for _, r := range run {
			if r.Err == nil && r.Panic == nil {
				r.Err = err
			}
			r.Answer()
		}
	}
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		failAll("acquire", err)
		return carry
	}
	defer c.Release()
	began := false // BEGIN was sent
	abort := func() {
		if !began {
			return
		}
		if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
			s.logger.Debug("postgres: rollback", logKeyErr, err)
		}
	}
	// lose ends the batch, whose transaction is lost, after run[i] failed
	// with err in step op; done ran before it. Nothing committed.
	lose := func(i int, done []*groupcommit.Request, op string, err error) []*groupcommit.Request {
		abort()
		err = fmt.Errorf("postgres: update: %s %s: %w", op, s.addr, unavailable(err))
		s.warn("postgres: write batch failed", logKeyBatch, len(run), logKeyErr, err)
		fail := func(r *groupcommit.Request) {
			if r.Err == nil && r.Panic == nil {
				r.Err = err
			}
			r.Answer()
		}
		fail(run[i])
		for _, r := range slices.Concat(done, run[i+1:]) {
			if spared[r] {
				fail(r)
				continue
			}
			spared[r] = true
			r.Err, r.Panic = nil, nil
			r.Requeue()
			carry = append(carry, r)
		}
		return carry
	}
	// deferReq moves a conflicted request to the next batch (or fails it
	// after too many attempts), or answers it after a lock timeout.
	deferReq := func(r *groupcommit.Request, t *tx) {
		conflict := t.conflict
		if t.lockTimedOut {
			r.Err, r.Panic = fmt.Errorf("postgres: update: %w", lockedError(conflict)), nil
			r.Answer()
			return
		}
		r.Attempts++
		if r.Attempts >= maxAttempts {
			r.Err = fmt.Errorf("postgres: update: gave up after %d conflicts: %w", r.Attempts, unavailableConflict(conflict))
			r.Answer()
			return
		}
		r.Err, r.Panic = nil, nil
		r.Requeue()
		carry = append(carry, r)
	}

	// Alone in the batch, the transaction is the request's unit: no
	// savepoint.
	alone := len(run) == 1
	done := run[:0:0] // requests to answer after COMMIT
	for i, r := range run {
		var pending []string
		if !began {
			pending = append(pending, sqlBegin)
		}
		if !alone {
			pending = append(pending, sqlSavepoint)
		}
		// Only the first request may wait for row locks: a later one
		// waiting while the batch holds its predecessors' locks could
		// close a lock cycle with another transaction.
		t := s.runFn(ctx, c.Conn(), r, pending, i > 0)
		began = began || t.sent
		if t.unsaved != nil && t.broken == nil {
			// r's SAVEPOINT never ran and the transaction is aborted:
			// ROLLBACK TO would undo the request before r, which would
			// then be answered as committed. Roll everything back, fail
			// or re-run r, and run the others again in the next batch.
			abort()
			if r.Err == nil && r.Panic == nil && t.conflict == nil {
				r.Err = fmt.Errorf("postgres: update: %w", t.unsaved)
			}
			for _, d := range done {
				d.Err, d.Panic = nil, nil
				d.Requeue()
				carry = append(carry, d)
			}
			if t.conflict != nil {
				deferReq(r, t)
			} else {
				r.Answer()
			}
			for _, d := range run[i+1:] {
				d.Requeue()
				carry = append(carry, d)
			}
			return carry
		}
		if t.broken != nil {
			return lose(i, done, "run", t.broken)
		}
		if t.conflict != nil || r.Err != nil || r.Panic != nil {
			switch {
			case !t.sent: // fn wrote nothing
			case alone:
				abort()
				began = false
			default:
				if _, err := c.Exec(ctx, sqlRollbackTo); err != nil {
					return lose(i, done, "rollback to savepoint", err)
				}
			}
			if t.conflict != nil {
				deferReq(r, t)
				continue
			}
		}
		done = append(done, r)
	}
	run = done
	if began {
		if err := commit(ctx, c.Conn()); err != nil {
			// A COMMIT the server refused rolled everything back; one
			// whose answer was lost may have committed.
			failAll("commit", s.commitUnknown(err, c.Conn()))
			return carry
		}
	}
	for _, r := range run {
		r.Answer()
	}
	return carry
}

// runFn runs one request's fn on c, catching a panic.
func (s *Store) runFn(ctx context.Context, c *pgx.Conn, r *groupcommit.Request, pending []string, nowait bool) (t *tx) {
	t = &tx{c: c, ctx: ctx, write: true, nowait: nowait, pending: pending}
	defer func() {
		t.finish()
		if p := recover(); p != nil {
			r.Panic = p
		}
	}()
	r.Err = t.runFn(r.Fn)
	return t
}

// errCommitRolledBack is the error of a COMMIT that rolled back: the
// transaction had failed.
var errCommitRolledBack = errors.New("transaction was aborted: COMMIT rolled back")

// commitUnknown marks the error of a COMMIT whose outcome is unknown (it
// was sent, and the connection failed before the server answered) with
// chorus.ErrCommitUnknown, and makes it a chorus.CommitSettler for the
// backend of c that ran it. A COMMIT the server answered (a PgError, a
// rollback) or never got (pgconn.SafeToRetry) did not commit.
func (s *Store) commitUnknown(err error, c *pgx.Conn) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) || errors.Is(err, errCommitRolledBack) || pgconn.SafeToRetry(err) {
		return err
	}
	lc := &lostCommit{err: err, s: s}
	if c != nil && c.PgConn() != nil {
		lc.pid = c.PgConn().PID()
	}
	return lc
}

// lostCommit is the error of a COMMIT whose answer was lost.
type lostCommit struct {
	err error
	s   *Store
	pid uint32 // the backend that ran it
}

func (e *lostCommit) Error() string   { return e.err.Error() + ": " + chorus.ErrCommitUnknown.Error() }
func (e *lostCommit) Unwrap() []error { return []error{e.err, chorus.ErrCommitUnknown} }

// Settle waits until the backend that ran the COMMIT has ended, asking the
// server to end it: the server may still be running that COMMIT after the
// connection failed (a slow sync, a replica's confirmation), and a read
// before it ends would not see a transaction about to commit. A backend
// ends only after its COMMIT has: then a read sees the outcome. It reports
// false when the server cannot tell before ctx ends.
func (e *lostCommit) Settle(ctx context.Context) bool {
	if e.pid == 0 {
		return false
	}
	for {
		var alive bool
		err := e.s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", int64(e.pid)).Scan(&alive)
		if err == nil && !alive {
			return true
		}
		if err == nil {
			_, _ = e.s.pool.Exec(ctx, "SELECT pg_terminate_backend($1)", int64(e.pid))
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// commit commits the transaction open on c.
func commit(ctx context.Context, c *pgx.Conn) error {
	tag, err := c.Exec(ctx, "COMMIT")
	if err != nil {
		return err
	}
	if tag.String() != "COMMIT" {
		return errCommitRolledBack
	}
	return nil
}
