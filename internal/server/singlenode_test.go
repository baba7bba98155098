package server_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/servertest"
	"github.com/chorus-sync/chorus/internal/store/postgres"
)

// TestSingleNodeOnPostgres: a node on PostgreSQL without a bus runs alone
// (it caches credentials and hears only its own events), so a second one
// on the same database refuses to start, until the first closes. Nodes
// with a bus share the database and take no such lock.
func TestSingleNodeOnPostgres(t *testing.T) {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	start := func(cfg server.Config) (*server.Server, error) {
		cfg.Logger, cfg.Creds = quiet, creds
		s, err := server.New(ctx, cfg)
		if err == nil {
			t.Cleanup(func() { _ = s.Close() })
		}
		return s, err
	}

	db := servertest.NewDatabase(t)
	first, err := start(server.Config{StoreURL: db})
	if err != nil {
		t.Fatalf("first node: %v", err)
	}
	if n := lockSessions(t, db); n != 1 {
		t.Errorf("%d sessions hold the single-node lock, want 1", n)
	}
	_, err = start(server.Config{StoreURL: db})
	const want = "another Chorus node without a bus is using this database: run every node with --bus nats://… (cluster) or only one node"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second node without a bus = %v, want an error saying %q", err, want)
	}
	t.Logf("second node: %v", err)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := start(server.Config{StoreURL: db}); err != nil {
		t.Fatalf("node after the first closed: %v", err)
	}

	// Two nodes with a bus on another database: neither takes the lock.
	db = servertest.NewDatabase(t)
	bus := servertest.CheckNATS(t)
	for _, node := range []string{"n1", "n2"} {
		if _, err := start(server.Config{StoreURL: db, BusURL: bus, NodeName: node}); err != nil {
			t.Fatalf("node %s with a bus: %v", node, err)
		}
	}
	if n := lockSessions(t, db); n != 0 {
		t.Errorf("%d single-node lock sessions among nodes with a bus, want 0", n)
	}
}

// TestSingleNodeStopsWhenItsLockIsTaken: a node without a bus whose lock
// session ended (a database restart) and whose lock another node took
// meanwhile, and still holds after the grace (Postgres.SingleNodeGrace),
// stops serving, with an error that says why, instead of serving beside
// that node, neither hearing of the other's writes.
func TestSingleNodeStopsWhenItsLockIsTaken(t *testing.T) {
	ctx := context.Background()
	db := servertest.NewDatabase(t)
	s, err := server.New(ctx, server.Config{StoreURL: db, Logger: slog.New(slog.DiscardHandler), Creds: creds,
		Postgres: postgres.Config{SingleNodeCheck: 500 * time.Millisecond, SingleNodeGrace: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx, ln) }()

	// The other node: end the lock's session and take the lock at once,
	// before the node's next check takes it again.
	other := servertest.Connect(t, db, nil)
	var key int64
	if err := other.QueryRow(ctx, `SELECT (l.classid::bigint << 32) | l.objid::bigint FROM pg_locks l
		JOIN pg_stat_activity a USING (pid)
		WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()
			AND a.application_name LIKE 'chorus-single-node%'`).Scan(&key); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name LIKE 'chorus-single-node%'`); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		const want = "the single-node lock was taken by another node"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Run = %v, want an error saying %q", err, want)
		}
		t.Logf("Run: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("the node still serves 15 s after another node took its single-node lock")
	}
}

// lockSessions counts the sessions on db that hold the single-node lock
// (the store names its connection).
func lockSessions(t *testing.T, db string) int {
	t.Helper()
	var n int
	if err := servertest.Connect(t, db, nil).QueryRow(context.Background(), `SELECT count(*) FROM pg_locks l
		JOIN pg_stat_activity a USING (pid)
		WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()
			AND a.application_name LIKE 'chorus-single-node%'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

var creds = servertest.NewCredentials()
