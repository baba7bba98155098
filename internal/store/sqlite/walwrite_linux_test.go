//go:build linux && (amd64 || arm64)

package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

// crashCopy copies the database and its WAL as a kill -9 at this moment
// would leave them (the page cache: what write(2) handed the kernel), and
// opens the copy without the shared-memory index, so SQLite recovers from
// the WAL alone.
func crashCopy(t *testing.T, s *Store) *sql.DB {
	t.Helper()
	dir := t.TempDir()
	for _, suffix := range []string{"", "-wal"} {
		src, err := os.Open(s.path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(dir, "chorus.db"+suffix))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		dst.Close()
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "chorus.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestWALWritesGathered checks that a commit's WAL frames reach the file
// in few writes, and that every acknowledged write is in the file when
// Update returns: a copy of the files opened without the process's
// memory holds it.
func TestWALWritesGathered(t *testing.T) {
	s := openInternal(t)
	doc := seedDoc(t, s)
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0).UTC()
	pad := strings.Repeat("p", 3000)
	gathered0, flushes0 := walWrites.gathered.Load(), walWrites.flushes.Load()
	for i := 1; i <= 20; i++ {
		err := s.Update(ctx, func(tx chorus.Tx) error {
			o, err := tx.Object(ctx, chorus.KindDocument, "IS1", doc.SID)
			if err != nil {
				return err
			}
			o.Revision++
			o.Data = json.RawMessage(fmt.Sprintf(`{"v":%d}`, i))
			if err := tx.UpdateObject(ctx, o); err != nil {
				return err
			}
			// Three more pages of the objects table: a commit of ≥ 4 frames.
			for range 3 {
				err := tx.InsertObject(ctx, &chorus.Object{
					Kind: chorus.KindDocument, SID: chorus.NewSID(chorus.PrefixDocument),
					AccountSID: "AC1", ServiceSID: "IS1", Data: json.RawMessage(`"` + pad + `"`),
					CreatedBy: "t", DateCreated: now, DateUpdated: now,
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var rev int64
		var data string
		if err := crashCopy(t, s).QueryRowContext(ctx,
			`SELECT revision, data FROM objects WHERE sid = ?`, doc.SID).Scan(&rev, &data); err != nil {
			t.Fatalf("write %d: read the crash copy: %v", i, err)
		}
		if rev != int64(i) || data != fmt.Sprintf(`{"v":%d}`, i) {
			t.Fatalf("write %d: crash copy holds revision %d %s", i, rev, data)
		}
	}
	gathered, flushes := walWrites.gathered.Load()-gathered0, walWrites.flushes.Load()-flushes0
	// Each commit writes at least four frames, a header and a page each.
	if flushes < 20 || gathered < 8*20 || gathered < 6*flushes {
		t.Errorf("%d WAL writes gathered into %d writes for 20 commits, want ≥ 8 per commit and ≥ 6 per write", gathered, flushes)
	}
}

// TestWALWritesSpill runs a transaction larger than SQLite's page cache,
// which writes frames to the WAL before its commit and reads them back:
// the reads must see the buffered frames, and the result must pass the
// integrity check, in the store and in a crash copy.
func TestWALWritesSpill(t *testing.T) {
	s := openInternal(t)
	seedDoc(t, s)
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0).UTC()
	const n = 3000 // × ~4 KiB: well over the default 2 MiB page cache
	big := strings.Repeat("x", 4000)
	sids := make([]string, n)
	err := s.Update(ctx, func(tx chorus.Tx) error {
		for i := range n {
			sids[i] = chorus.NewSID(chorus.PrefixDocument)
			err := tx.InsertObject(ctx, &chorus.Object{
				Kind: chorus.KindDocument, SID: sids[i], AccountSID: "AC1", ServiceSID: "IS1",
				Data:      json.RawMessage(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, big)),
				CreatedBy: "t", DateCreated: now, DateUpdated: now,
			})
			if err != nil {
				return err
			}
		}
		for i := 0; i < n; i += 97 { // read back pages written before the commit
			o, err := tx.Object(ctx, chorus.KindDocument, "IS1", sids[i])
			if err != nil {
				return fmt.Errorf("read back %d: %w", i, err)
			}
			if !strings.HasPrefix(string(o.Data), fmt.Sprintf(`{"i":%d,`, i)) {
				return fmt.Errorf("read back %d: %.20s", i, o.Data)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range []*sql.DB{crashCopy(t, s)} {
		var count int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM objects`).Scan(&count); err != nil {
			t.Fatal(err)
		}
		if count != n+1 {
			st1, _ := os.Stat(s.path)
			st2, _ := os.Stat(s.path + "-wal")
			var mode string
			db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode)
			t.Errorf("crash copy holds %d objects, want %d (db %d wal %d mode %s)", count, n+1, st1.Size(), st2.Size(), mode)
		}
		var check string
		if err := db.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
			t.Errorf("crash copy integrity_check = %q, %v", check, err)
		}
	}
	if err := s.View(ctx, func(tx chorus.ReadTx) error {
		o, err := tx.Object(ctx, chorus.KindDocument, "IS1", sids[n-1])
		if err == nil && !strings.HasPrefix(string(o.Data), fmt.Sprintf(`{"i":%d,`, n-1)) {
			t.Errorf("reader sees %.20s", o.Data)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestWALWritesRollbackDropped: a transaction spills frames to the WAL
// and rolls back; another connection (another process, in production)
// then commits frames at the same offsets. The first connection's next
// read must not write the rolled-back frames over that commit.
func TestWALWritesRollbackDropped(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "x.db")
	conn := func() *sql.Conn {
		db, err := sql.Open("sqlite", dsn(path, false, "NORMAL"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := conn(), conn()
	exec := func(c *sql.Conn, q string, args ...any) {
		t.Helper()
		if _, err := c.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(a, "CREATE TABLE t (x BLOB)")
	exec(a, "CREATE TABLE t2 (k INTEGER PRIMARY KEY, v TEXT)")
	exec(a, "INSERT INTO t2 VALUES (1, 'seed')")
	exec(a, "PRAGMA cache_size = 20")
	exec(a, "PRAGMA wal_checkpoint(TRUNCATE)")
	dropped0 := walWrites.dropped.Load()
	exec(a, "BEGIN IMMEDIATE")
	for range 400 { // ~1.2 MB over a 20-page cache: spills, under walBufferMax
		exec(a, "INSERT INTO t VALUES (?)", strings.Repeat("a", 3000))
	}
	exec(a, "ROLLBACK")
	if walWrites.dropped.Load() == dropped0 {
		t.Error("no pending frames were dropped at the rollback")
	}
	exec(b, "BEGIN IMMEDIATE")
	for i := 2; i <= 50; i++ {
		exec(b, "INSERT INTO t2 VALUES (?, ?)", i, strings.Repeat("b", 500))
	}
	exec(b, "COMMIT")
	count := func(c interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}, who string) {
		t.Helper()
		var n int
		if err := c.QueryRowContext(ctx, "SELECT count(*) FROM t2").Scan(&n); err != nil || n != 50 {
			t.Errorf("%s: t2 holds %d rows (%v), want 50", who, n, err)
		}
	}
	count(a, "a") // a's read of the WAL
	count(b, "b")
	var check string
	if err := b.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Errorf("integrity_check = %q, %v", check, err)
	}
	dir := t.TempDir()
	for _, suffix := range []string{"", "-wal"} {
		data, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "x.db"+suffix), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	crash, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer crash.Close()
	count(crash, "crash copy")
}
