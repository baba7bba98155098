package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
)

// cmdBackup writes a consistent snapshot of the embedded store to --out,
// also while `chorus serve` runs on the same data directory.
func cmdBackup(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("backup")
	dataDir := fs.String("data-dir", defaultDataDir(), "data directory of the embedded store")
	out := fs.String("out", "", "the backup file to write (required; must not exist)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usagef("--out FILE is required (for PostgreSQL use pg_dump, see README)")
	}
	if err := embeddedStoreMeant(fs); err != nil {
		return err
	}
	db := filepath.Join(*dataDir, server.DBFile)
	if _, err := os.Stat(db); err != nil {
		return fmt.Errorf("no database to back up: %w", err)
	}
	if _, err := os.Lstat(*out); err == nil {
		return usagef("--out %s exists: a backup never replaces a file; name a new one", *out)
	}
	// Written under a temporary name and renamed once complete and synced:
	// a failed backup leaves no file that looks like one. What a backup
	// killed with SIGKILL left (a full copy of the database, secrets
	// included) goes first.
	// Backups are usually named by date, so those of every name go, not
	// only this name's (and this name's of the form before the marker).
	outDir := filepath.Dir(*out)
	removeAbandoned(outDir, func(name string) bool {
		return strings.HasPrefix(name, sqlite.BackupStagePrefix) ||
			strings.HasPrefix(name, ".") && strings.Contains(name, backupTmpMarker) ||
			strings.HasPrefix(name, "."+filepath.Base(*out)+".tmp-")
	})
	tmp, err := os.CreateTemp(outDir, stagingPrefix("."+filepath.Base(*out)+backupTmpMarker))
	if err != nil {
		return err
	}
	defer scratch.add(tmp.Name())()
	defer sqlite.KeepFresh(tmp.Name())() // written only once the snapshot is checked
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// The snapshot is staged in a directory of this command's own, so that
	// a second signal can remove it.
	stage, err := os.MkdirTemp(outDir, stagingPrefix(sqlite.BackupStagePrefix))
	if err != nil {
		return err
	}
	defer scratch.add(stage)()
	defer os.RemoveAll(stage)
	info, err := sqlite.Backup(ctx, db, stage, tmp)
	if err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// Link, not rename: it fails instead of replacing an existing file.
	if err := os.Link(tmp.Name(), *out); err != nil {
		return fmt.Errorf("write %s: %w", *out, err)
	}
	os.Remove(tmp.Name())
	done = true
	// The new name is durable once its directory is: a power cut after
	// "written" must not take the backup back.
	if err := sqlite.SyncDir(outDir); err != nil {
		return fmt.Errorf("write %s: sync its directory: %w", *out, err)
	}
	_, err = fmt.Fprintf(stdout, "backup of %s written to %s: %d bytes, schema version %d, sha256 %s, integrity check ok\n",
		*dataDir, *out, info.Size, info.SchemaVersion, info.SHA256)
	return err
}

// cmdRestore restores a backup into an empty (or new) data directory. The
// database is assembled and verified in a staging directory first (inside
// an existing data directory, next to a new one), so a refused file leaves
// --data-dir exactly as it was.
func cmdRestore(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("restore")
	dataDir := fs.String("data-dir", defaultDataDir(), "the data directory to restore into (must be empty or missing)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return helpError{fs}
		}
		return usagef("%v", err)
	}
	if err := embeddedStoreMeant(fs); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("restore: expected one backup FILE")
	}
	file := fs.Arg(0)
	entries, err := os.ReadDir(*dataDir)
	exists := err == nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		// A restore killed while staging (SIGKILL, power loss) left its
		// staging directory: nothing of it was ever named chorus.db. One
		// modified lately is a running restore's (it touches its own every
		// minute): it is left alone, and this one refused.
		if e.IsDir() && strings.HasPrefix(e.Name(), restoreStagePrefix) {
			stage := filepath.Join(*dataDir, e.Name())
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) < restoreRunningWithin {
				return fmt.Errorf("another restore into %s is running (its staging directory %s was modified %s ago): wait for it to finish; "+
					"if none runs, remove that directory", *dataDir, stage, time.Since(fi.ModTime()).Round(time.Second))
			}
			if err := os.RemoveAll(stage); err != nil {
				return err
			}
			continue
		}
		if name := e.Name(); !e.IsDir() && (name == server.ServeLockFile || name == importLockFile) {
			continue // what a server or import that ran there left: no data
		}
		if e.IsDir() && e.Name() == "lost+found" {
			continue // a new ext4 volume's, mounted as the data directory
		}
		return fmt.Errorf("%s is not empty; restore only into an empty or new data directory", *dataDir)
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	// An existing directory may be a mounted volume, another filesystem
	// than its parent: the database is staged inside it then.
	var stage string
	if exists {
		stage, err = os.MkdirTemp(*dataDir, restoreStagePrefix)
	} else {
		parent, prefix := filepath.Dir(filepath.Clean(*dataDir)), "."+filepath.Base(filepath.Clean(*dataDir))+".restore-"
		removeAbandoned(parent, func(name string) bool { return strings.HasPrefix(name, prefix) })
		stage, err = os.MkdirTemp(parent, stagingPrefix(prefix))
	}
	if err != nil {
		return err
	}
	defer scratch.add(stage)()
	defer os.RemoveAll(stage)
	defer sqlite.KeepFresh(stage)()
	info, err := sqlite.Restore(ctx, f, filepath.Join(stage, server.DBFile))
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return fmt.Errorf("restore of %s interrupted, %s left untouched: %w", file, *dataDir, err)
	case errors.Is(err, sqlite.ErrNotBackup):
		return fmt.Errorf("%s refused, %s left untouched: %w", file, *dataDir, err)
	default: // the disk, the file's reading, a newer schema: not a bad file
		return fmt.Errorf("restore of %s into %s failed, %s left untouched: %w", file, *dataDir, *dataDir, err)
	}
	if err := installRestored(stage, *dataDir, exists); err != nil {
		return fmt.Errorf("restore into %s: %w", *dataDir, err)
	}
	_, err = fmt.Fprintf(stdout, "restored %s into %s: schema version %d, taken %s, checksum and integrity check ok; "+
		"event ids moved up to %d and above, so that clients that saw later events catch up\n",
		file, *dataDir, info.SchemaVersion, info.Created.Format("2006-01-02T15:04:05Z"), info.EventIDBase)
	return err
}

// stagingPrefix is prefix followed by this process's ID and "-": the name
// of a backup's or restore's staging file or directory (the ID tells an
// operator whose it was; removeAbandoned goes by age).
func stagingPrefix(prefix string) string { return prefix + strconv.Itoa(os.Getpid()) + "-" }

// abandonedAfter is how long a staging entry goes unmodified before the
// next backup or restore takes it for a killed one's. A running one writes
// its files all along; a process ID would not tell (another PID namespace,
// another host sharing the directory, every container's PID 1).
const abandonedAfter = time.Hour

// restoreRunningWithin: a restore's staging directory modified this
// recently is a running restore's (sqlite.KeepFresh touches it every
// minute); an older one is a killed restore's, which the next removes.
const restoreRunningWithin = 3 * time.Minute

// backupTmpMarker is in the name of a backup's output while it is written
// (.NAME.chorus-tmp-PID-RANDOM beside NAME).
const backupTmpMarker = ".chorus-tmp-"

// removeAbandoned removes the entries of dir whose name staging accepts
// and that nothing has modified for abandonedAfter: what a backup or
// restore killed with SIGKILL left behind (a full copy of the database,
// secrets included).
func removeAbandoned(dir string, staging func(name string) bool) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	cutoff := time.Now().Add(-abandonedAfter)
	for _, e := range entries {
		if !staging(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if lastModified(path).Before(cutoff) {
			_ = os.RemoveAll(path)
		}
	}
}

// lastModified is the newest modification time of path and, for a
// directory, of what is in it (a snapshot being written); a path that
// cannot be read counts as modified now.
func lastModified(path string) time.Time {
	newest := time.Time{}
	err := filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.ModTime().After(newest) {
			newest = info.ModTime()
		}
		return nil
	})
	if err != nil {
		return time.Now()
	}
	return newest
}

// restoreStagePrefix names the staging directory of a restore inside an
// existing data directory.
const restoreStagePrefix = ".restore-"

// installRestored gives the verified database staged in stage its name in
// dataDir, never replacing a file there: a server started on the directory
// during the restore keeps its database, and the restore fails. Then it
// syncs the directory that gained the name, so that a restore reported
// done survives a power loss.
func installRestored(stage, dataDir string, exists bool) error {
	if !exists {
		// rename(2) onto a directory fails unless it is empty. The
		// staging directory becomes the data directory: a second signal
		// must not remove it half-way through.
		if err := scratch.settle(stage, func() error { return os.Rename(stage, dataDir) }); err != nil {
			return err
		}
		return sqlite.SyncDir(filepath.Dir(filepath.Clean(dataDir)))
	}
	staged, dst := filepath.Join(stage, server.DBFile), filepath.Join(dataDir, server.DBFile)
	switch err := os.Link(staged, dst); {
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: something wrote to the data directory during the restore", err)
	case err != nil:
		// A filesystem without hard links (SMB, exFAT, some FUSE): check
		// again, then rename (a database that appears in between would
		// be replaced; the window is this one call).
		if _, serr := os.Lstat(dst); !errors.Is(serr, fs.ErrNotExist) {
			return fmt.Errorf("%s exists: something wrote to the data directory during the restore", dst)
		}
		if err := os.Rename(staged, dst); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(stage); err != nil {
		return err
	}
	return sqlite.SyncDir(dataDir)
}

// embeddedStoreMeant refuses a command that reads the embedded store's data
// directory when CHORUS_STORE_URL says the deployment keeps its state in
// PostgreSQL and --data-dir was not named: ./chorus-data is then a leftover
// from before a migration, and backing it up or printing its credentials
// would look like success.
func embeddedStoreMeant(fs *flag.FlagSet) error {
	if getenv("CHORUS_STORE_URL") == "" {
		return nil
	}
	named := false
	fs.Visit(func(f *flag.Flag) { named = named || f.Name == "data-dir" })
	if named {
		return nil
	}
	return fmt.Errorf("CHORUS_STORE_URL is set: the state is in PostgreSQL (back it up and restore it with pg_dump and pg_restore, see README; the credentials are the TWILIO_* variables); name --data-dir to use an embedded store anyway")
}
