package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
// messages. It refuses while a node heartbeats, and returns the shift.
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
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		// The store's clock, as the heartbeats are written with it.
		var running int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM presence_nodes
			WHERE heartbeat > (extract(epoch FROM clock_timestamp()) * 1e9)::bigint - $1`, nodeQuiet.Nanoseconds()).Scan(&running); err != nil {
			return err
		}
		if running > 0 {
			return ErrNodesRunning
		}
		var maxID int64
		if err := tx.QueryRow(ctx, sqlrow.RenumberQuery).Scan(&maxID); err != nil {
			return err
		}
		shift = sqlrow.RenumberShift(maxID, now)
		for _, q := range sqlrow.RenumberStatements {
			if _, err := tx.Exec(ctx, strings.Replace(q, "%s", "$1", 1), shift); err != nil {
				return err
			}
		}
		// A restored copy is another cluster than the one it was dumped
		// from, which may share its NATS.
		_, err := tx.Exec(ctx, newClusterID)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: renumber events: %s: %w", addr(cfg.ConnConfig), err)
	}
	return shift, nil
}

// newClusterID is the statement that gives the cluster a new identity in
// the database it is in now (ClusterIdentity).
const newClusterID = `UPDATE cluster_identity SET
	id = md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text),
	db_oid = (SELECT oid::bigint FROM pg_database WHERE datname = current_database())`

// ClusterIdentity returns the cluster's identity, which its nodes put on
// their bus messages (natsbus.WithCluster), and whether the database looks
// copied from another (restored from a dump without migrate
// --after-restore): it is not the database the identity was made in.
func (s *Store) ClusterIdentity(ctx context.Context) (id string, copied bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.TxTimeout)
	defer cancel()
	err = s.pool.QueryRow(ctx, `SELECT id, db_oid <> (SELECT oid::bigint FROM pg_database WHERE datname = current_database())
		FROM cluster_identity`).Scan(&id, &copied)
	if err != nil {
		return "", false, fmt.Errorf("postgres: cluster identity %s: %w", s.addr, unavailable(err))
	}
	return id, copied, nil
}
