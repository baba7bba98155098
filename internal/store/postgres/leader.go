package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// leader holds the cluster-wide leadership lock: a session-level advisory
// lock on a connection of its own, outside the pool (a pooled connection
// would hand the lock to whoever acquires it next).
type leader struct {
	key int64

	mu     sync.Mutex // guards the fields below and serializes Leader calls
	conn   *pgx.Conn
	held   bool
	closed bool
	warned time.Time // last connection warning, for rate limiting
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
		cfg := s.connCfg.Copy()
		cfg.RuntimeParams["application_name"] = "chorus-leader"
		// Let the server notice a vanished leader (and free the lock)
		// within half a minute even without a clean disconnect.
		cfg.RuntimeParams["tcp_keepalives_idle"] = "10"
		cfg.RuntimeParams["tcp_keepalives_interval"] = "5"
		cfg.RuntimeParams["tcp_keepalives_count"] = "3"
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			if time.Since(l.warned) > leaderWarnEvery {
				l.warned = time.Now()
				s.logger.Warn("postgres: leader election: connect failed", logKeyErr, err)
			}
			return false
		}
		l.conn = c
	}
	var ok bool
	if err := l.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", l.key).Scan(&ok); err != nil {
		s.logger.Warn("postgres: leader election failed", logKeyErr, err)
		l.dropLocked()
		return false
	}
	if ok && !l.held {
		s.logger.Info("postgres: became cluster leader")
	}
	l.held = ok
	return ok
}

// dropLocked closes the lock's connection, which releases the lock.
func (l *leader) dropLocked() {
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		l.conn.Close(ctx)
		cancel()
	}
	l.conn, l.held = nil, false
}

// close gives up leadership for good.
func (l *leader) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.dropLocked()
}
