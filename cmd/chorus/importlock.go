package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/store/postgres"
)

// importLockFile sits beside an embedded store's database; a copy into the
// store holds an exclusive lock on it (lockFile), which the kernel drops
// when the process ends, however it ends.
const importLockFile = server.DBFile + "-import.lock"

// errImportRunning is lockImport's error when another copy holds the lock.
var errImportRunning = errors.New("another chorus import or migrate is copying into this data directory: " +
	"wait for it to finish, then run again")

// lockImport makes sure that one copy at a time writes into the target st
// (the embedded store in dataDir, or PostgreSQL): two at once would each
// take the other's writes for changes made in the target and refuse them
// as conflicts. The returned func releases the lock; a PostgreSQL lock also
// goes with st.Close.
func lockImport(ctx context.Context, st chorus.Store, dataDir string) (func(), error) {
	if pg, ok := st.(*postgres.Store); ok {
		if err := pg.LockImport(ctx); err != nil {
			return nil, err
		}
		return func() {}, nil
	}
	f, err := os.OpenFile(filepath.Join(dataDir, importLockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("import lock: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, fmt.Errorf("%s: %w", dataDir, errImportRunning)
		}
		return nil, fmt.Errorf("import lock: %w", err)
	}
	return func() { f.Close() }, nil
}
