package sqlite

import (
	"fmt"
	"os"
	"path/filepath"
)

// walFile is the store's own handle on the database's -wal file, which the
// syncer fdatasyncs to make committed batches durable. fsync(2) flushes a
// file's dirty pages whichever descriptor wrote them, so syncing this
// descriptor covers the frames SQLite wrote through its own.
//
// SQLite deletes the WAL only when the last connection to the database
// closes, and the store's writer connection stays open, so the file this
// handle names is the live WAL for the store's lifetime. (It does not
// re-check that after each sync: on this VM's ext4 a stat or fstat right
// after fdatasync costs as much as a third of the sync.)
type walFile struct {
	path string
	f    *os.File
}

func openWAL(dbPath string) (*walFile, error) {
	w := &walFile{path: dbPath + "-wal"}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

// open opens the WAL (creating it empty if SQLite has not yet: an empty
// WAL holds no frames) and syncs its directory, so that the file's name is
// as durable as the frames later synced into it.
func (w *walFile) open() error {
	f, err := os.OpenFile(w.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open wal: %w", err)
	}
	if err := SyncDir(filepath.Dir(w.path)); err != nil {
		f.Close()
		return fmt.Errorf("open wal: %w", err)
	}
	if w.f != nil {
		w.f.Close()
	}
	w.f = f
	return nil
}

// sync makes every frame written to the WAL before the call durable.
func (w *walFile) sync() error {
	if err := datasync(w.f); err != nil {
		return fmt.Errorf("sync wal: %w", err)
	}
	return nil
}

func (w *walFile) close() error {
	if w == nil || w.f == nil {
		return nil
	}
	return w.f.Close()
}

// SyncDir fsyncs a directory, making the names in it durable (the WAL's,
// a restored database's).
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
