package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// sessionLock is a session-level advisory lock held on a connection of its
// own, outside the pool (a pooled connection would hand the lock to
// whoever acquires it next). The server releases it when the session ends:
// when the lock is closed, when the process dies (the kernel closes its
// socket), or when the host vanishes (the keepalives of parseConfig).
type sessionLock struct {
	key   int64
	app   string        // application_name of the lock's connection
	lease time.Duration // idle_session_timeout of the lock's session; 0: none

	mu      sync.Mutex // guards the fields below and serializes their users
	conn    *pgx.Conn
	held    bool
	closed  bool
	noLease bool      // the server has no idle_session_timeout (warned once)
	warned  time.Time // last connection warning, for rate limiting
}

// connectLocked opens the lock's connection, with the pool's session
// settings (keepalives included).
func (l *sessionLock) connectLocked(ctx context.Context, s *Store) error {
	cfg := s.connCfg.Copy()
	cfg.RuntimeParams["application_name"] = l.app
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	if l.lease > 0 {
		// Set after connecting: a server without the setting would refuse
		// it as a startup parameter, and the connection with it.
		_, err := c.Exec(ctx, "SELECT set_config('idle_session_timeout', $1, false)", millis(l.lease))
		var pe *pgconn.PgError
		switch {
		case errors.As(err, &pe) && pe.Code == codeUndefinedObject: // before PostgreSQL 14
			if !l.noLease {
				l.noLease = true
				s.logger.Warn("postgres: this server has no idle_session_timeout (new in PostgreSQL 14): " +
					"a leader that freezes (SIGSTOP, a paused VM) keeps leadership until it resumes or dies")
			}
		case err != nil:
			c.Close(context.WithoutCancel(ctx))
			return err
		}
	}
	l.conn = c
	return nil
}

// takeLocked tries to take the lock on its open connection and reports
// whether it is held. On error it drops the connection.
func (l *sessionLock) takeLocked(ctx context.Context) (bool, error) {
	var ok bool
	if err := l.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", l.key).Scan(&ok); err != nil {
		l.dropLocked()
		return false, err
	}
	l.held = ok
	return ok, nil
}

// dropLocked closes the lock's connection, which releases the lock.
func (l *sessionLock) dropLocked() {
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		l.conn.Close(ctx)
		cancel()
	}
	l.conn, l.held = nil, false
}

// close releases the lock for good. A held lock is unlocked explicitly
// first: closing the connection alone releases it only when the server's
// backend has noticed the end of the session, which is after Close
// returns, so a Store opened right after this one closed could still find
// the lock taken.
func (l *sessionLock) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.held && l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		// An error leaves the release to the end of the session.
		_, _ = l.conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", l.key)
		cancel()
	}
	l.dropLocked()
}

// leaderWarnEvery rate-limits the warning about an unreachable server.
const leaderWarnEvery = time.Minute

// Leader reports whether this Store is the cluster's leader: whether it
// holds the session advisory lock of its schema. It checks the lock's
// connection (and, when it is not held, tries to take it) on every call,
// reconnecting after a lost connection, so call it before each round of
// cluster-wide background work (TTL sweeping): exactly one Store of a
// database schema answers true at a time, and when the leader's process or
// connection dies the server releases the lock and the next Leader call
// of another Store takes it over. It returns false on any error, and after
// Close.
func (s *Store) Leader(ctx context.Context) bool {
	l := &s.leader
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	if l.conn != nil {
		// A live session still holds its lock; a dead one lost it.
		if err := l.conn.Ping(ctx); err == nil {
			if l.held {
				return true
			}
		} else {
			if l.held {
				s.logger.Warn("postgres: lost cluster leadership: connection failed", logKeyErr, err)
			}
			l.dropLocked()
		}
	}
	if l.conn == nil {
		if err := l.connectLocked(ctx, s); err != nil {
			if time.Since(l.warned) > leaderWarnEvery {
				l.warned = time.Now()
				s.logger.Warn("postgres: leader election: connect failed", logKeyErr, err)
			}
			return false
		}
	}
	wasHeld := l.held
	ok, err := l.takeLocked(ctx)
	if err != nil {
		s.logger.Warn("postgres: leader election failed", logKeyErr, err)
		return false
	}
	if ok && !wasHeld {
		s.logger.Info("postgres: became cluster leader")
	}
	return ok
}

// keepLeadership pings the leader lock's session every LeaderLease/3
// until Close, so that a live leader's session is never idle for its
// lease (Config.LeaderLease), whoever calls Leader and how often. A frozen
// process pings nothing: the server ends its session, and another Store's
// next Leader call takes the lock over. Once the process resumes, the
// ping finds the session gone and leadership lost.
func (s *Store) keepLeadership() {
	t := time.NewTicker(s.cfg.LeaderLease / 3)
	defer t.Stop()
	for {
		select {
		case <-s.base.Done():
			return
		case <-t.C:
		}
		s.pingLeader()
	}
}

// pingLeader pings the leader lock's session, if it has one, and drops it
// when the ping fails.
func (s *Store) pingLeader() {
	s.pingLock(&s.leader, "postgres: lost cluster leadership: connection failed")
}

// pingLock pings l's session, if it has one, and drops it when the ping
// fails, logging lost if l was held (the lock went with the session). It
// reports whether l needs nothing: closed, or held on a live session.
func (s *Store) pingLock(l *sessionLock, lost string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.conn == nil {
		return l.closed
	}
	ctx, cancel := context.WithTimeout(s.base, s.cfg.ConnectTimeout)
	defer cancel()
	if err := l.conn.Ping(ctx); err != nil {
		if l.held {
			s.logger.Warn(lost, logKeyErr, err)
		}
		l.dropLocked()
		return false
	}
	return l.held
}

// ErrSingleNodeInUse is the error of LockSingleNode when another Store
// holds the single-node lock.
var ErrSingleNodeInUse = errors.New("another Chorus node without a bus is using this database: " +
	"run every node with --bus nats://… (cluster) or only one node")

// LockSingleNode claims the store's schema for a node that runs alone: one
// without a bus, which caches credentials and never hears of other
// nodes' writes. It takes the schema's single-node lock, a session
// advisory lock on a connection of its own held until Close (or until the
// process or its host dies, when the server ends the session), and
// returns an error wrapping ErrSingleNodeInUse when another Store holds
// it. Nodes that share the database through a bus must not call it.
//
// Until Close, the lock's session is checked every Config.SingleNodeCheck, and
// the lock taken again when its connection was lost (a database restart
// or a terminated backend releases it): otherwise a second node without a
// bus could start on the database and serve beside this one, neither
// hearing of the other's writes. If another node took it meanwhile,
// SingleNodeTaken says so: the node must stop serving.
func (s *Store) LockSingleNode(ctx context.Context) error {
	if err := s.claim(ctx, &s.single, "single-node lock", ErrSingleNodeInUse); err != nil {
		return err
	}
	s.keeping.Do(func() { go s.keepSingleNode() })
	return nil
}

// keepSingleNode checks the single-node lock until Close (LockSingleNode),
// or until another node took it.
//
// Finding the lock held is not yet proof of another node: after a network
// blip this node's old session may live on in the server (until it sees
// the connection close, or its keepalives give up), holding the lock. A
// holder that is such a session (its application_name is this Store's) is
// ended (pg_terminate_backend), and the lock taken again at once. Any other
// holder must still hold it after Config.SingleNodeGrace, longer than the
// keepalives' (10 s + 3 × 5 s), before this node stops.
func (s *Store) keepSingleNode() {
	t := time.NewTicker(s.cfg.SingleNodeCheck)
	defer t.Stop()
	var warned, conflictSince time.Time
	for {
		select {
		case <-s.base.Done():
			return
		case <-t.C:
		}
		err := s.recheckSingleNode()
		if errors.Is(err, ErrSingleNodeInUse) && s.endOwnStaleLock() {
			s.logger.Warn("postgres: single-node lock held by this node's own earlier session, lost in a network failure: ended it; taking the lock again")
			err = s.retakeSingleNode()
		}
		switch {
		case err == nil:
			conflictSince = time.Time{}
		case errors.Is(err, ErrSingleNodeInUse):
			if conflictSince.IsZero() {
				conflictSince = time.Now()
				s.logger.Warn("postgres: single-node lock held by another session; this node stops if it still is in "+s.cfg.SingleNodeGrace.String(), logKeyErr, err)
			}
			if time.Since(conflictSince) < s.cfg.SingleNodeGrace {
				continue
			}
			s.logger.Error("postgres: another node without a bus took this database's single-node lock while this node's "+
				"connection was down; the two would not hear of each other's writes: this node stops", logKeyErr, err)
			s.singleTaken <- fmt.Errorf("postgres: the single-node lock was taken by another node: %w", err)
			return
		default:
			// Whose the lock is cannot be told now: a conflict seen
			// after this starts its grace again.
			conflictSince = time.Time{}
			if time.Since(warned) > leaderWarnEvery {
				warned = time.Now()
				s.logger.Warn("postgres: single-node lock: cannot take it again yet", logKeyErr, err)
			}
		}
	}
}

// retakeSingleNode takes the single-node lock again once the session that
// held it was ended: at once, not at the next check, when another node
// could take it first. The lock goes when the ended backend exits, a few
// milliseconds after pg_terminate_backend returns.
func (s *Store) retakeSingleNode() error {
	var err error
	for range 20 {
		if err = s.recheckSingleNode(); !errors.Is(err, ErrSingleNodeInUse) {
			return err
		}
		select {
		case <-s.base.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
	return err
}

// endOwnStaleLock ends the server sessions of this Store's single-node
// lock connections (their application_name is this Store's own) that hold
// the lock, and reports whether there was one. Any of them may: one whose
// connection was lost after the server granted the lock, before its answer
// arrived, holds it too.
func (s *Store) endOwnStaleLock() bool {
	l := &s.single
	ctx, cancel := context.WithTimeout(s.base, s.cfg.ConnectTimeout)
	defer cancel()
	k := uint64(l.key)
	rows, err := s.pool.Query(ctx, `SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid
			AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND a.application_name = $3`,
		int64(k>>32), int64(k&0xffffffff), l.app)
	if err != nil {
		return false
	}
	ended := false
	for rows.Next() {
		var ok bool
		if rows.Scan(&ok) == nil && ok {
			ended = true
		}
	}
	rows.Close()
	return ended && rows.Err() == nil
}

// SingleNodeTaken receives an error, once, when another node without a
// bus took the single-node lock this Store held (LockSingleNode) after its
// session was lost: two such nodes on one database each serve their own
// caches and never hear of the other's writes, so this one must stop.
func (s *Store) SingleNodeTaken() <-chan error { return s.singleTaken }

// recheckSingleNode pings the single-node lock's session and takes the
// lock again when it was lost.
func (s *Store) recheckSingleNode() error {
	if s.pingLock(&s.single, "postgres: single-node lock lost with its connection; taking it again") {
		return nil
	}
	if err := s.claim(s.base, &s.single, "single-node lock", ErrSingleNodeInUse); err != nil {
		return err
	}
	s.logger.Info("postgres: single-node lock taken again")
	return nil
}

// ErrImportRunning is the error of LockImport when another Store holds the
// import lock.
var ErrImportRunning = errors.New("another chorus import or migrate is copying into this database: " +
	"wait for it to finish, then run again")

// LockImport claims the store's schema for one copy into it (chorus import,
// migrate --from-data-dir): two at once would each take the other's writes
// for changes made in the target and refuse them as conflicts. Like
// LockSingleNode it takes a session advisory lock on a connection of its
// own, held until Close or the process's death, and returns an error
// wrapping ErrImportRunning when another Store holds it. Serving nodes do
// not take it.
func (s *Store) LockImport(ctx context.Context) error {
	return s.claim(ctx, &s.imports, "import lock", ErrImportRunning)
}

// claim takes the session lock l once, for the Store's life: an error
// wrapping inUse when another Store holds it, one wrapping
// chorus.ErrUnavailable when the server cannot be asked. A lock whose
// connection is lost later (a database restart) is not taken again.
func (s *Store) claim(ctx context.Context, l *sessionLock, what string, inUse error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return ErrClosed
	case l.held:
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	if l.conn == nil {
		if err := l.connectLocked(ctx, s); err != nil {
			return fmt.Errorf("postgres: %s %s: %w", what, s.addr, unavailable(err))
		}
	}
	ok, err := l.takeLocked(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %s %s: %w", what, s.addr, unavailable(err))
	}
	if !ok {
		l.dropLocked()
		return fmt.Errorf("postgres: %s (schema %s): %w", s.addr, s.schema, inUse)
	}
	return nil
}
