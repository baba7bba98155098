package sqlite

import (
	"context"
	"path/filepath"
	"testing"
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
		{s.writer, "synchronous", "2"}, // FULL
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
