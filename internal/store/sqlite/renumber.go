package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/chorus-sync/chorus/internal/store/sqlrow"
)

// renumberEvents rebases every object's event ids of the database at
// path, as a restore must (sqlrow.RenumberStatements), in one
// transaction, and leaves the database in one file (its WAL
// checkpointed). It returns the base: every object's lowest id now.
func renumberEvents(ctx context.Context, path string, now time.Time) (base int64, err error) {
	db, err := sql.Open("sqlite", fileDSN(path, "_pragma=busy_timeout(10000)"))
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	db.SetMaxOpenConns(1)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	base = sqlrow.RenumberBase(now)
	err = sqlrow.Renumber(base, "?", "MAX",
		func(q string, args ...any) error { _, err := tx.ExecContext(ctx, q, args...); return err },
		func(q string) (n int64, err error) { err = tx.QueryRowContext(ctx, q).Scan(&n); return n, err })
	if err != nil {
		return 0, fmt.Errorf("renumber events: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("renumber events: %w", err)
	}
	if _, err := db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		return 0, fmt.Errorf("renumber events: checkpoint: %w", err)
	}
	return base, nil
}
