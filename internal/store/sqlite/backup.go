package sqlite

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	sqlite3 "modernc.org/sqlite/lib"
)

// A backup file is a header followed by a plain SQLite database:
//
//	chorus-backup 1\n
//	{"created":"…","schema_version":2,"size":N,"sha256":"…"}\n
//	N bytes of the database
//
// The header tells restore that the file is a Chorus backup, and the size
// and checksum that it is complete.
const backupMagic = "chorus-backup 1\n"

// maxBackupHeader bounds the JSON header line.
const maxBackupHeader = 4096

// BackupInfo is a backup's header.
type BackupInfo struct {
	Created       time.Time `json:"created"`
	SchemaVersion int       `json:"schema_version"`
	Size          int64     `json:"size"`
	SHA256        string    `json:"sha256"`
	// EventIDBase is every object's lowest event id after Restore
	// rebased them (sqlrow.RenumberStatements); not in a backup's header.
	EventIDBase int64 `json:"-"`
}

// ErrNotBackup is returned (wrapped) by Restore for a file that is not a
// complete, intact Chorus backup.
var ErrNotBackup = errors.New("not a complete Chorus backup")

// BackupStagePrefix begins the name of the directory in which Backup
// stages its snapshot (followed by the process ID and "-"): a backup
// killed with SIGKILL leaves it behind, for the next one to remove.
const BackupStagePrefix = ".chorus-backup-"

// keepFreshEvery is KeepFresh's interval; tests shorten it.
var keepFreshEvery = time.Minute

// backupChecking, when set (tests), is called with Backup's staging
// directory before the snapshot's integrity check.
var backupChecking func(stage string)

// KeepFresh sets the modification time of paths to now every minute until
// the returned function is called: a staging file or directory in use
// looks in use (recently modified) to whoever cleans up abandoned ones,
// also through long stretches that write nothing (an integrity check).
func KeepFresh(paths ...string) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(keepFreshEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				for _, p := range paths {
					_ = os.Chtimes(p, now, now)
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		<-exited // no touch after stop returns (the caller removes the paths)
	}
}

// Backup writes a consistent snapshot of the database at dbPath to w,
// while other connections (a running server) keep writing: VACUUM INTO
// copies one read transaction's view into a temporary file next to tmpDir,
// which is integrity-checked before it is written out with its header.
func Backup(ctx context.Context, dbPath, tmpDir string, w io.Writer) (BackupInfo, error) {
	if _, err := os.Stat(dbPath); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: %w", err)
	}
	tmp, err := os.MkdirTemp(tmpDir, BackupStagePrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: %w", err)
	}
	defer os.RemoveAll(tmp)
	defer KeepFresh(tmp)() // the checks below write nothing for a while
	snap := filepath.Join(tmp, "snapshot.db")

	// The snapshot's read transaction begins after this: every write
	// acknowledged before it is in the backup, which is what its time
	// tells an operator. The time after the copy and its checks would
	// claim writes of the seconds they took.
	taken := time.Now().UTC()
	if err := vacuumInto(ctx, dbPath, snap); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: %w", err)
	}
	if backupChecking != nil {
		backupChecking(tmp)
	}
	version, err := checkDatabase(ctx, snap)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: snapshot: %w", err)
	}
	f, err := os.Open(snap)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, f})
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: %w", err)
	}
	info := BackupInfo{Created: taken, SchemaVersion: version, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	hdr, err := json.Marshal(info)
	if err != nil {
		return BackupInfo{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: %w", err)
	}
	if _, err := io.WriteString(w, backupMagic+string(hdr)+"\n"); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: write: %w", err)
	}
	if m, err := io.Copy(w, ctxReader{ctx, f}); err != nil || m != n {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: write: %d of %d bytes: %w", m, n, err)
	}
	return info, nil
}

// Restore reads a backup written by Backup from r into a new database file
// at dbPath, which must not exist. It checks the header, the size, the
// checksum and SQLite's integrity check before the file gets its name; on
// any error dbPath does not exist afterwards.
func Restore(ctx context.Context, r io.Reader, dbPath string) (BackupInfo, error) {
	br := bufio.NewReader(r)
	magic := make([]byte, len(backupMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != backupMagic {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w: no Chorus backup header", ErrNotBackup)
	}
	line, err := br.ReadSlice('\n')
	if err != nil || len(line) > maxBackupHeader {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w: unreadable header", ErrNotBackup)
	}
	var info BackupInfo
	if err := json.Unmarshal(bytes.TrimSpace(line), &info); err != nil || info.Size <= 0 || len(info.SHA256) != 64 {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w: bad header", ErrNotBackup)
	}
	if info.SchemaVersion < 1 || info.SchemaVersion > len(migrations) {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: backup schema version %d: this binary knows 1 to %d", info.SchemaVersion, len(migrations))
	}
	if _, err := os.Lstat(dbPath); !errors.Is(err, os.ErrNotExist) {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %s already exists", dbPath)
	}
	tmp := dbPath + ".restoring"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), ctxReader{ctx, io.LimitReader(br, info.Size+1)})
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w", err)
	}
	if n < info.Size {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w: %d bytes of database, header says %d (truncated?)", ErrNotBackup, n, info.Size)
	}
	if n > info.Size {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w: more than the %d bytes of database its header says (something appended to the file?)", ErrNotBackup, info.Size)
	}
	if hex.EncodeToString(h.Sum(nil)) != info.SHA256 {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w: checksum mismatch", ErrNotBackup)
	}
	if err := f.Sync(); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w", err)
	}
	if err := f.Close(); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w", err)
	}
	version, err := checkDatabase(ctx, tmp)
	switch {
	case err == nil:
	case ctx.Err() != nil: // interrupted, not a bad file
		return BackupInfo{}, fmt.Errorf("sqlite: restore: integrity check interrupted: %w", ctx.Err())
	case errors.Is(err, errBadDatabase):
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w: %w", ErrNotBackup, err)
	default: // the disk, memory: not the file's fault
		return BackupInfo{}, fmt.Errorf("sqlite: restore: check the database: %w", err)
	}
	// The header is outside the checksum: what it says must agree with
	// the database it describes.
	if version != info.SchemaVersion {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w: the header says schema version %d, the database is at %d (header edited?)",
			ErrNotBackup, info.SchemaVersion, version)
	}
	// Clients that saw events after the backup was taken must not take the
	// restored store's events for ones they have (sqlrow.RenumberShift).
	if info.EventIDBase, err = renumberEvents(ctx, tmp, time.Now()); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w", err)
	}
	if err := os.Rename(tmp, dbPath); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w", err)
	}
	ok = true
	if err := SyncDir(filepath.Dir(dbPath)); err != nil {
		return info, fmt.Errorf("sqlite: restore: %w", err)
	}
	return info, nil
}

// ctxReader is r, which fails with ctx's error once ctx is done: a copy of
// a large file stops at an interrupt instead of running to its end.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Check runs SQLite's integrity check on the database at path and checks
// that it holds a Chorus schema this binary knows.
func Check(ctx context.Context, path string) error {
	_, err := checkDatabase(ctx, path)
	return err
}

// errBadDatabase marks checkDatabase's errors that blame the database
// itself (corrupt, or not a Chorus database), not the disk or the process.
var errBadDatabase = errors.New("bad database")

// badDatabase wraps errBadDatabase around err when err is SQLite's report
// of a corrupt file or of one that is no database.
func badDatabase(err error) error {
	if c := primaryCode(err); c == sqlite3.SQLITE_CORRUPT || c == sqlite3.SQLITE_NOTADB {
		return fmt.Errorf("%w: %w", errBadDatabase, err)
	}
	return err
}

// checkDatabase opens path read-only (without creating it) and returns its
// schema version after PRAGMA integrity_check passed. Its errors that
// blame the file wrap errBadDatabase.
func checkDatabase(ctx context.Context, path string) (int, error) {
	if _, err := os.Stat(path); err != nil {
		return 0, err
	}
	db, err := sql.Open("sqlite", readOnlyDSN(path))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	rows, err := db.QueryContext(ctx, `PRAGMA integrity_check`)
	if err != nil {
		return 0, fmt.Errorf("integrity check: %w", badDatabase(err))
	}
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return 0, fmt.Errorf("integrity check: %w", badDatabase(err))
		}
		if s != "ok" {
			problems = append(problems, s)
		}
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		return 0, fmt.Errorf("integrity check: %w", badDatabase(err))
	}
	rows.Close()
	if len(problems) > 0 {
		if len(problems) > 3 {
			problems = append(problems[:3], "…")
		}
		return 0, fmt.Errorf("%w: integrity check failed: %v", errBadDatabase, problems)
	}
	var version, tables int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return 0, badDatabase(err)
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'table'
		AND name IN ('accounts', 'api_keys', 'services', 'objects', 'items', 'permissions', 'events')`).Scan(&tables); err != nil {
		return 0, badDatabase(err)
	}
	if version < 1 || version > len(migrations) || tables != 7 {
		return 0, fmt.Errorf("%w: not a Chorus database (schema version %d, %d of 7 tables)", errBadDatabase, version, tables)
	}
	return version, nil
}

// vacuumInto copies one read transaction's view of the database at dbPath
// into the new file dst, while other connections keep writing.
func vacuumInto(ctx context.Context, dbPath, dst string) error {
	db, err := sql.Open("sqlite", dsn(dbPath, false, "NORMAL"))
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	_, err = db.ExecContext(ctx, `VACUUM INTO ?`, dst)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("VACUUM INTO: %w", err)
	}
	return nil
}

// readOnlyDSN opens path read-only, never creating it.
func readOnlyDSN(path string) string { return fileDSN(path, "mode=ro&_pragma=busy_timeout(10000)") }

// fileDSN is the driver's DSN of the database file at path (any
// characters) with the URL query rawQuery.
func fileDSN(path, rawQuery string) string {
	u := url.URL{Scheme: "file", Opaque: (&url.URL{Path: path}).EscapedPath(), RawQuery: rawQuery}
	return u.String()
}

// SchemaBehind reports how many of this binary's schema migrations the
// database at path lacks, reading it without writing to it: Open would
// apply them. The error wraps os.ErrNotExist when there is no database.
func SchemaBehind(ctx context.Context, path string) (int, error) {
	if _, err := os.Stat(path); err != nil {
		return 0, fmt.Errorf("sqlite: %w", err)
	}
	db, err := sql.Open("sqlite", readOnlyDSN(path))
	if err != nil {
		return 0, fmt.Errorf("sqlite: %w", err)
	}
	defer db.Close()
	var version int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return 0, fmt.Errorf("sqlite: read schema version of %s: %w", path, err)
	}
	if version > len(migrations) {
		return 0, fmt.Errorf("sqlite: database schema version %d is newer than this binary's %d", version, len(migrations))
	}
	return len(migrations) - version, nil
}

// Snapshot writes a consistent copy of the database at dbPath to the new
// file dst, while other connections (a running server) keep writing.
func Snapshot(ctx context.Context, dbPath, dst string) error {
	if err := vacuumInto(ctx, dbPath, dst); err != nil {
		return fmt.Errorf("sqlite: snapshot %s: %w", dbPath, err)
	}
	return nil
}
