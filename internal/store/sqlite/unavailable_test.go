package sqlite

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chorus-sync/chorus"
)

// TestUnavailableErrors: SQLite's "cannot write now" errors (a full
// database, a read-only one) become 20503, which clients may retry;
// others, such as a constraint failure, stay what they are.
func TestUnavailableErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{`CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)`, `INSERT INTO t VALUES (1, x'00')`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	_, dup := db.Exec(`INSERT INTO t VALUES (1, x'00')`)
	if dup == nil || chorus.ErrorCode(unavailable(dup)) != 0 {
		t.Errorf("a constraint failure: unavailable(%v) has code %d, want none", dup, chorus.ErrorCode(unavailable(dup)))
	}
	// The disk full, as SQLite sees it: no page may be added.
	if _, err := db.Exec(`PRAGMA max_page_count = 3`); err != nil {
		t.Fatal(err)
	}
	_, full := db.Exec(`INSERT INTO t VALUES (2, randomblob(100000))`)
	if full == nil || !strings.Contains(full.Error(), "full") || chorus.ErrorCode(unavailable(full)) != chorus.ErrUnavailable.Code {
		t.Errorf("a full database: unavailable(%v) has code %d, want 20503", full, chorus.ErrorCode(unavailable(full)))
	}
	ro, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	_, readOnly := ro.Exec(`INSERT INTO t VALUES (3, x'00')`)
	if readOnly == nil || chorus.ErrorCode(unavailable(readOnly)) != chorus.ErrUnavailable.Code {
		t.Errorf("a read-only database: unavailable(%v) has code %d, want 20503", readOnly, chorus.ErrorCode(unavailable(readOnly)))
	}
	if unavailable(nil) != nil {
		t.Error("unavailable(nil) != nil")
	}
}

// TestFullDatabaseFailsWritesAndPing: with no room left for the database,
// writes fail with 20503 and Ping (readiness) fails too, until a write
// succeeds again.
func TestFullDatabaseFailsWritesAndPing(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "chorus.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// No page may be added (SQLite's view of a full disk). It is a setting
	// of the writer's connection, so it is made in a write.
	limit := func(pages string) error {
		return s.Update(ctx, func(wtx chorus.Tx) error {
			_, err := wtx.(*tx).exec(ctx, "PRAGMA max_page_count = "+pages)
			return err
		})
	}
	if err := limit("1"); err != nil { // at most the current size
		t.Fatal(err)
	}
	big := &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), AuthToken: strings.Repeat("x", 200_000)}
	err = s.Update(ctx, func(tx chorus.Tx) error { return tx.PutAccount(ctx, big) })
	if chorus.ErrorCode(err) != chorus.ErrUnavailable.Code {
		t.Fatalf("a write into a full database = %v, want 20503", err)
	}
	if n := s.WriteStats().Failed; n != 1 {
		t.Errorf("WriteStats().Failed = %d after one write refused for a full database, want 1 (chorus_store_writes_failed_total)", n)
	}
	if err := s.Ping(ctx); chorus.ErrorCode(err) != chorus.ErrUnavailable.Code || !strings.Contains(err.Error(), "full") {
		t.Errorf("Ping after the failed write = %v, want 20503 saying the database is full", err)
	}
	if err := limit("1073741823"); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after a write succeeded again = %v", err)
	}
}

// A store that cannot open on a (nearly) full disk says so: SQLite's own
// error there is "disk I/O error" (it cannot size its shared-memory file),
// which sent an operator looking for a broken disk.
func TestOpenOnFullDiskSaysSo(t *testing.T) {
	if free, ok := freeBytes(t.TempDir()); !ok || free == 0 {
		t.Fatalf("freeBytes(a temporary directory) = %d, %v; want the space left", free, ok)
	}
	defer func(f func(string) (uint64, bool)) { diskFree = f }(diskFree)
	diskFree = func(string) (uint64, bool) { return 4096, true }
	dir := t.TempDir()
	path := filepath.Join(dir, "chorus.db")
	if err := os.Mkdir(path, 0o700); err != nil { // a database that cannot open
		t.Fatal(err)
	}
	_, err := Open(context.Background(), path, nil)
	if err == nil || !strings.Contains(err.Error(), "4096 bytes free") {
		t.Errorf("Open with 4096 bytes free = %v, want an error saying so", err)
	}
	diskFree = func(string) (uint64, bool) { return 1 << 30, true }
	if _, err := Open(context.Background(), path, nil); err == nil || strings.Contains(err.Error(), "bytes free") {
		t.Errorf("Open with room = %v, want an error without the hint", err)
	}
}

// TestDiskUsage: the sizes /metrics reports for the database and its WAL
// are the files' own, the WAL's grows with a write, and the free space is
// the file system's.
func TestDiskUsage(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chorus.db")
	s, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	before, err := s.DiskUsage()
	if err != nil {
		t.Fatal(err)
	}
	big := &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), AuthToken: strings.Repeat("x", 200_000)}
	if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.PutAccount(ctx, big) }); err != nil {
		t.Fatal(err)
	}
	after, err := s.DiskUsage()
	if err != nil {
		t.Fatal(err)
	}
	db, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	wal, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	if after.DatabaseBytes != db.Size() || after.WALBytes != wal.Size() {
		t.Errorf("DiskUsage() = %d database, %d WAL bytes; the files hold %d and %d", after.DatabaseBytes, after.WALBytes, db.Size(), wal.Size())
	}
	if after.WALBytes < before.WALBytes+200_000 && after.DatabaseBytes < before.DatabaseBytes+200_000 {
		t.Errorf("DiskUsage() after a 200 KB write = %+v, before %+v: neither file grew by it", after, before)
	}
	free, ok := freeBytes(filepath.Dir(path))
	if !after.FreeKnown || !ok || after.FreeBytes == 0 || after.FreeBytes > free+(64<<20) || after.FreeBytes+(64<<20) < free {
		t.Errorf("DiskUsage().FreeBytes = %d (known %v), the file system has %d", after.FreeBytes, after.FreeKnown, free)
	}
}
