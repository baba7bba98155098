package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

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
	db := filepath.Join(*dataDir, server.DBFile)
	if _, err := os.Stat(db); err != nil {
		return fmt.Errorf("no database to back up: %w", err)
	}
	// Written under a temporary name and renamed once complete and synced:
	// a failed backup leaves no file that looks like one.
	tmp, err := os.CreateTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".tmp-")
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
// database is assembled and verified in a sibling directory first, so a
// refused file leaves --data-dir exactly as it was.
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
	switch {
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return err
	case len(entries) > 0:
		return fmt.Errorf("%s is not empty; restore only into an empty or new data directory", *dataDir)
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	parent := filepath.Dir(filepath.Clean(*dataDir))
	stage, err := os.MkdirTemp(parent, "."+filepath.Base(filepath.Clean(*dataDir))+".restore-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	info, err := sqlite.Restore(ctx, f, filepath.Join(stage, server.DBFile))
	if err != nil {
		return fmt.Errorf("%s refused, %s left untouched: %w", file, *dataDir, err)
	}
	if exists {
		err = os.Rename(filepath.Join(stage, server.DBFile), filepath.Join(*dataDir, server.DBFile))
	} else {
		err = os.Rename(stage, *dataDir)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "restored %s into %s: schema version %d, taken %s, checksum and integrity check ok\n",
		file, *dataDir, info.SchemaVersion, info.Created.Format("2006-01-02T15:04:05Z"))
	return err
}
