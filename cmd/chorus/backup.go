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
	"syscall"

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
	outDir, tmpPrefix := filepath.Dir(*out), "."+filepath.Base(*out)+".tmp-"
	removeAbandoned(outDir, sqlite.BackupStagePrefix)
	removeAbandoned(outDir, tmpPrefix)
	tmp, err := os.CreateTemp(outDir, stagingPrefix(tmpPrefix))
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	info, err := sqlite.Backup(ctx, db, filepath.Dir(*out), tmp)
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
			return err
		}
		return usagef("%v", err)
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
		// staging directory: nothing of it was ever named chorus.db.
		if e.IsDir() && strings.HasPrefix(e.Name(), restoreStagePrefix) {
			if err := os.RemoveAll(filepath.Join(*dataDir, e.Name())); err != nil {
				return err
			}
			continue
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
		removeAbandoned(parent, prefix)
		stage, err = os.MkdirTemp(parent, stagingPrefix(prefix))
	}
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	info, err := sqlite.Restore(ctx, f, filepath.Join(stage, server.DBFile))
	if err != nil {
		return fmt.Errorf("%s refused, %s left untouched: %w", file, *dataDir, err)
	}
	if err := installRestored(stage, *dataDir, exists); err != nil {
		return fmt.Errorf("restore into %s: %w", *dataDir, err)
	}
	_, err = fmt.Fprintf(stdout, "restored %s into %s: schema version %d, taken %s, checksum and integrity check ok\n",
		file, *dataDir, info.SchemaVersion, info.Created.Format("2006-01-02T15:04:05Z"))
	return err
}

// stagingPrefix is prefix followed by this process's ID and "-": the name
// of a backup's or restore's staging file or directory, which a later run
// removes if the process is gone (removeAbandoned).
func stagingPrefix(prefix string) string { return prefix + strconv.Itoa(os.Getpid()) + "-" }

// removeAbandoned removes the entries of dir named prefix, a process ID
// and "-", whose process no longer runs: what a backup or restore killed
// with SIGKILL left behind. One whose process runs (another backup) is
// left alone; so is everything on a system that cannot tell.
func removeAbandoned(dir, prefix string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		digits, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(digits)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() || !processGone(pid) {
			continue
		}
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

// processGone reports whether no process has ID pid (signal 0: ESRCH).
func processGone(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	return errors.Is(p.Signal(syscall.Signal(0)), os.ErrProcessDone)
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
		// rename(2) onto a directory fails unless it is empty.
		if err := os.Rename(stage, dataDir); err != nil {
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
	return fmt.Errorf("CHORUS_STORE_URL is set: the state is in PostgreSQL (back it up with pg_dump, see README; the credentials are the TWILIO_* variables); name --data-dir to use an embedded store anyway")
}
