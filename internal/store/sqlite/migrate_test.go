package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/chorus-sync/chorus"
)

func userVersion(t *testing.T, s *Store) int {
	t.Helper()
	var v int
	if err := s.writer.c.QueryRowContext(context.Background(), "PRAGMA user_version").Scan(&v); err != nil {
		t.Fatalf("user_version: %v", err)
	}
	return v
}

func TestMigrateIdempotent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chorus.db")
	for i := range 3 { // open, close, reopen: migrations run once
		s, err := Open(ctx, path, nil)
		if err != nil {
			t.Fatalf("Open #%d: %v", i, err)
		}
		if got := userVersion(t, s); got != len(migrations) {
			t.Errorf("Open #%d: user_version = %d, want %d", i, got, len(migrations))
		}
		// Running them again on a current database is a no-op.
		if err := migrate(ctx, s.writer); err != nil {
			t.Errorf("migrate on a current database: %v", err)
		}
		if got := userVersion(t, s); got != len(migrations) {
			t.Errorf("after migrate: user_version = %d, want %d", got, len(migrations))
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

func TestMigrateRejectsNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chorus.db")
	s, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.writer.c.ExecContext(ctx, "PRAGMA user_version = 1000"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(ctx, path, nil); err == nil {
		s.Close()
		t.Errorf("Open(schema from the future) = nil error, want one")
	}
}

func TestPragmas(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "chorus.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	tests := []struct {
		c      *conn
		pragma string
		want   string
	}{
		{s.writer, "journal_mode", "wal"},
		{s.writer, "synchronous", "1"}, // NORMAL: the syncer fdatasyncs the WAL; never OFF (0)
		{s.writer, "foreign_keys", "1"},
		{s.writer, "query_only", "0"},
	}
	r := <-s.readers
	defer func() { s.readers <- r }()
	tests = append(tests, []struct {
		c      *conn
		pragma string
		want   string
	}{
		{r, "query_only", "1"},
		{r, "foreign_keys", "1"},
		{r, "journal_mode", "wal"},
	}...)
	for _, tt := range tests {
		var got string
		if err := tt.c.c.QueryRowContext(ctx, "PRAGMA "+tt.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tt.pragma, err)
		}
		if got != tt.want {
			t.Errorf("PRAGMA %s = %s, want %s", tt.pragma, got, tt.want)
		}
	}
}

// TestMigrateEventsToRowidOrder checks migration 2 on a database written
// by version 1: events keep their content and order, ids stay unique per
// object.
func TestMigrateEventsToRowidOrder(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chorus.db")
	db, err := sql.Open("sqlite", dsn(path, false, "FULL"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		migrations[0],
		"PRAGMA user_version = 1",
		`INSERT INTO events (object_sid, id, service_sid, created_at, body, data, item_data) VALUES
			('ET2', 1, 'IS1', 30, '{"id":1,"object_sid":"ET2"}', NULL, NULL),
			('ET1', 2, 'IS1', 20, '{"id":2,"object_sid":"ET1"}', x'7b7d', NULL),
			('ET1', 1, 'IS1', 10, '{"id":1,"object_sid":"ET1"}', x'5b5d', x'31')`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("version 1 setup: %v", err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatalf("Open(version 1 database): %v", err)
	}
	defer s.Close()
	if got := userVersion(t, s); got != len(migrations) {
		t.Errorf("user_version = %d, want %d", got, len(migrations))
	}
	var got []*chorus.Event
	if err := s.View(ctx, func(tx chorus.ReadTx) (err error) {
		got, err = tx.Events(ctx, "ET1", 0, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != 1 || got[1].ID != 2 ||
		string(got[0].Data) != "[]" || string(got[0].ItemData) != "1" || string(got[1].Data) != "{}" {
		t.Errorf("Events(ET1) after migration = %+v, want ids 1, 2 with their data", got)
	}
	err = s.Update(ctx, func(tx chorus.Tx) error {
		return tx.AppendEvent(ctx, &chorus.Event{ID: 2, ObjectSID: "ET1", ServiceSID: "IS1", Type: chorus.EventDocumentUpdated})
	})
	if err == nil {
		t.Errorf("AppendEvent(duplicate id) after migration = nil error, want one")
	}
}
