package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/store/postgres"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
)

// importLockFile sits beside an embedded store's database; a copy into the
// store holds an exclusive lock on it (sqlite.LockFile).
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
	unlock, err := sqlite.LockFile(filepath.Join(dataDir, importLockFile))
	if errors.Is(err, sqlite.ErrLocked) {
		return nil, fmt.Errorf("%s: %w", dataDir, errImportRunning)
	}
	return unlock, err
}
