package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chorus-sync/chorus/internal/store/sqlrow"
)

// ErrNodesRunning is RenumberEvents' error while nodes serve the database.
var ErrNodesRunning = errors.New("nodes are serving this database (a heartbeat in the last 15 s): stop them first")

// nodeQuiet is how long a node's heartbeat must be old for RenumberEvents
// to take it for stopped: the cluster's node timeout.
const nodeQuiet = 15 * time.Second

// RenumberEvents moves every event id of the store at dsn up, as a restore
// must (sqlrow.RenumberShift), and gives it a new cluster identity
// (ClusterIdentity): run it on a database restored from a dump
// (pg_restore), before the nodes start, so that clients that saw events
// after the dump was taken catch up instead of ignoring new events, and
// the copy's nodes and the original's never take each other's bus
// messages. It refuses while a node heartbeats, and returns the base (every object's lowest id now).
func RenumberEvents(ctx context.Context, dsn string, now time.Time) (int64, error) {
	cfg, err := parseConfig(dsn, Config{})
	if err != nil {
		return 0, fmt.Errorf("postgres: renumber events: %w", err)
	}
	c, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return 0, fmt.Errorf("postgres: renumber events: %s: %w", addr(cfg.ConnConfig), unavailable(err))
	}
	defer c.Close(context.WithoutCancel(ctx))
	var shift int64
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) (err error) {
		shift, err = renumber(ctx, tx, now, false)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: renumber events: %s: %w", addr(cfg.ConnConfig), err)
	}
	return shift, nil
}

// renumber moves the event ids up and makes a new cluster identity in tx,
// unless a node heartbeats on a database that is no copy
// (ErrNodesRunning) or, with onlyCopied, the database is the one its
// identity was made in (a shift of 0). It locks the identity's row first:
// of two nodes adopting one copy at once, the second finds it adopted.
func renumber(ctx context.Context, tx pgx.Tx, now time.Time, onlyCopied bool) (int64, error) {
	// A whole-store update, which a second node adopting the same copy
	// waits for (then finds it adopted): the sessions' lock_timeout, meant
	// for row locks of requests, is lifted.
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = 0"); err != nil {
		return 0, err
	}
	var copied bool
	if err := tx.QueryRow(ctx, `SELECT `+isCopy+` FROM cluster_identity FOR UPDATE`).Scan(&copied); err != nil {
		return 0, err
	}
	if onlyCopied && !copied {
		return 0, nil
	}
	// The store's clock, as the heartbeats are written with it. In a copy,
	// they are the original's nodes' (a dump taken while they ran), not
	// this database's.
	if !copied {
		var running int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM presence_nodes
			WHERE heartbeat > (extract(epoch FROM clock_timestamp()) * 1e9)::bigint - $1`, nodeQuiet.Nanoseconds()).Scan(&running); err != nil {
			return 0, err
		}
		if running > 0 {
			return 0, ErrNodesRunning
		}
	}
	base := sqlrow.RenumberBase(now)
	err := sqlrow.Renumber(base, "$1", "GREATEST",
		func(q string, args ...any) error { _, err := tx.Exec(ctx, q, args...); return err },
		func(q string) (n int64, err error) { err = tx.QueryRow(ctx, q).Scan(&n); return n, err })
	if err != nil {
		return 0, err
	}
	// A restored copy is another cluster than the one it was dumped from,
	// which may share its NATS.
	if _, err := tx.Exec(ctx, newClusterID); err != nil {
		return 0, err
	}
	if copied {
		// Its heartbeats are the original's nodes' (a dump of a live
		// cluster): none of them serves the copy, whose own nodes start
		// only once it is adopted. Kept, they made a second --after-restore
		// wait 15 s for them to age, as for nodes serving it.
		if _, err := tx.Exec(ctx, `DELETE FROM presence_nodes`); err != nil {
			return 0, err
		}
	}
	return base, nil
}

// AdoptCopy does what RenumberEvents does when the database looks restored
// from a dump or copied (ClusterIdentity): a node starting on a copy whose
// operator did not run migrate --after-restore. The heartbeats in a copy
// are the original's nodes' (a dump taken while they ran), so they do not
// stop it. It returns the base (0: nothing to do). Of nodes starting
// together on one copy, one adopts it and the others wait for it.
func (s *Store) AdoptCopy(ctx context.Context, now time.Time) (int64, error) {
	// Read first, without a row lock: a node must start on a server that
	// takes no writes now (a failover under way) when there is nothing to
	// adopt.
	if _, copied, err := s.ClusterIdentity(ctx); err != nil || !copied {
		return 0, err
	}
	var shift int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) (err error) {
		shift, err = renumber(ctx, tx, now, true)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: adopt a copied database %s: %w", s.addr, unavailable(err))
	}
	return shift, nil
}

// newClusterID is the statement that gives the cluster a new identity in
// the database it is in now (ClusterIdentity).
const newClusterID = `UPDATE cluster_identity SET id = ` + newIdentity + `, db_oid = ` + thisDatabase + `, table_oid = ` + thisTable

// newIdentity is SQL for a new random cluster identity (as schema
// migration 5 makes the first, in text of its own: migrations do not
// change); thisDatabase for the OID of the database the session is in.
const (
	newIdentity  = `md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text)`
	thisDatabase = `(SELECT oid::bigint FROM pg_database WHERE datname = current_database())`
	// thisTable is the OID of the identity's own table, which a restore
	// makes anew (pg_restore --clean into the same database): a copy the
	// database OID alone does not show.
	thisTable = `'cluster_identity'::regclass::oid::bigint`
	// isCopy is true when the identity was made in another database or
	// another incarnation of its table.
	isCopy = `(db_oid <> ` + thisDatabase + ` OR table_oid IS DISTINCT FROM ` + thisTable + `)`
)

// ClusterIdentity returns the cluster's identity, which its nodes put on
// their bus messages (natsbus.WithCluster), and whether the database looks
// copied from another (restored from a dump without migrate
// --after-restore): it is not the database the identity was made in.
func (s *Store) ClusterIdentity(ctx context.Context) (id string, copied bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.TxTimeout)
	defer cancel()
	err = s.pool.QueryRow(ctx, `SELECT id, `+isCopy+` FROM cluster_identity`).Scan(&id, &copied)
	if err != nil {
		return "", false, fmt.Errorf("postgres: cluster identity %s: %w", s.addr, unavailable(err))
	}
	return id, copied, nil
}
