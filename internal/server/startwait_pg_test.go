package server_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chorus-sync/chorus/internal/logtest"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/servertest"
	"github.com/chorus-sync/chorus/internal/testrelay"
)

// TestStartWaitsForPostgres: likewise for the PostgreSQL store.
func TestStartWaitsForPostgres(t *testing.T) {
	db := servertest.NewDatabase(t)
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	relay := testrelay.New(t, u.Host)
	relay.Kill()
	u.Host = relay.Addr
	s, err := server.NewWhenUp(t, server.Config{StoreURL: u.String(), StartWait: time.Minute}, "PostgreSQL", relay.Restart)
	if err != nil {
		t.Fatalf("New = %v, want it to open the store once PostgreSQL is up", err)
	}
	server.CheckReady(t, s)
}

// TestStartWaitRefusedByPostgres: a database that does not exist fails
// New at once, although StartWait is set.
func TestStartWaitRefusedByPostgres(t *testing.T) {
	missing, err := url.Parse(servertest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	missing.Path = "/chorus_no_such_database"
	server.NewRefused(t, server.Config{StoreURL: missing.String()})
}

// servedDatabase is a new database that a node has migrated and left.
func servedDatabase(t *testing.T) string {
	t.Helper()
	db := servertest.NewDatabase(t)
	first, err := server.New(context.Background(), server.Config{StoreURL: db, Creds: creds, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	return db
}

// startOn starts a node on the PostgreSQL database db and returns it with
// its log; it is closed when the test ends.
func startOn(t *testing.T, db string) (*server.Server, *logtest.Buffer) {
	t.Helper()
	logs := &logtest.Buffer{}
	s, err := server.New(context.Background(), server.Config{StoreURL: db, Creds: creds, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, logs
}

// adoptedCopy reports whether a node that started on a restored copy made it
// its own: the cluster identity changed from before, and the log says so.
func adoptedCopy(t *testing.T, c *pgx.Conn, before string, logs *logtest.Buffer) bool {
	t.Helper()
	var after string
	if err := c.QueryRow(context.Background(), `SELECT id FROM cluster_identity`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	return after != before && strings.Contains(logs.String(), "was restored from a dump")
}

// TestNodeAdoptsRestoredCopy: a node starting on a PostgreSQL database
// restored from a dump without migrate --after-restore (its identity was
// made in another database) does what that command does, and says so.
func TestNodeAdoptsRestoredCopy(t *testing.T) {
	ctx := context.Background()
	db := servedDatabase(t)
	c := servertest.Connect(t, db, nil)
	var before string
	if err := c.QueryRow(ctx, `UPDATE cluster_identity SET db_oid = 1 RETURNING id`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	// The dump was taken while the original's nodes ran: a fresh heartbeat
	// came with it.
	if _, err := c.Exec(ctx, `INSERT INTO presence_nodes (node, heartbeat) VALUES ('original', (extract(epoch FROM clock_timestamp()) * 1e9)::bigint)`); err != nil {
		t.Fatal(err)
	}
	if _, logs := startOn(t, db); !adoptedCopy(t, c, before, logs) {
		t.Errorf("a node on a restored copy did not adopt it (identity was %q); log:\n%s", before, logs.String())
	}
}

// TestNodeAdoptsCleanRestore: a dump restored with pg_restore --clean into
// the very database it was taken from (same database OID; its tables made
// anew) is noticed too: a node starting on it adopts it, so that clients
// that saw events after the dump are caught up rather than ignoring the
// restored store's new events as ones they have.
func TestNodeAdoptsCleanRestore(t *testing.T) {
	ctx := context.Background()
	db := servedDatabase(t)
	c := servertest.Connect(t, db, nil)
	var before string
	if err := c.QueryRow(ctx, `SELECT id FROM cluster_identity`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	dump := filepath.Join(t.TempDir(), "chorus.dump")
	if out, err := exec.Command("pg_dump", "--format=custom", "--no-owner", "--file", dump, "--dbname", db).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	if out, err := exec.Command("pg_restore", "--clean", "--if-exists", "--no-owner", "--exit-on-error", "--dbname", db, dump).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore --clean: %v\n%s", err, out)
	}
	s, logs := startOn(t, db)
	if !adoptedCopy(t, c, before, logs) {
		t.Errorf("a node on a database restored into itself did not adopt it (identity was %q); log:\n%s", before, logs.String())
	}
	// Adopted once: the next node finds nothing to do.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, again := startOn(t, db); strings.Contains(again.String(), "was restored from a dump") {
		t.Errorf("the next node adopted the database again:\n%s", again.String())
	}
}

// TestNodeStartsOnReadOnlyServer: a node starts on a PostgreSQL server
// that takes no writes now (a failover under way) when the schema is up to
// date, serves reads, and says it is not ready.
func TestNodeStartsOnReadOnlyServer(t *testing.T) {
	ctx := context.Background()
	db := servedDatabase(t)
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("default_transaction_read_only", "on")
	u.RawQuery = q.Encode()
	s, err := server.New(ctx, server.Config{StoreURL: u.String(), Creds: creds, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New on a read-only server = %v, want it to start", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 {
		t.Errorf("/readyz on a read-only server = %d %s, want 503", rec.Code, rec.Body)
	}
	// It serves reads.
	req := httptest.NewRequest("GET", "/v1/Services/"+creds.ServiceSID, nil)
	req.SetBasicAuth(creds.AccountSID, creds.AuthToken)
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Errorf("a REST read on a read-only server = %d %s, want 200", rec.Code, rec.Body)
	}
}
