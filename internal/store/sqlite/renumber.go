package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/chorus-sync/chorus/internal/store/sqlrow"
)

// renumberEvents moves every event id of the database at path up, as a
// restore must (sqlrow.RenumberShift), in one transaction, and leaves the
// database in one file (its WAL checkpointed). It returns the shift.
func renumberEvents(ctx context.Context, path string, now time.Time) (shift int64, err error) {
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
	var maxID int64
	if err := tx.QueryRowContext(ctx, sqlrow.RenumberQuery).Scan(&maxID); err != nil {
		return 0, fmt.Errorf("renumber events: %w", err)
	}
	shift = sqlrow.RenumberShift(now)
	if err := sqlrow.RenumberCheck(maxID, shift); err != nil {
		return 0, err
	}
	for _, q := range sqlrow.RenumberStatements("?") {
		if _, err := tx.ExecContext(ctx, q, shift); err != nil {
			return 0, fmt.Errorf("renumber events: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("renumber events: %w", err)
	}
	if _, err := db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		return 0, fmt.Errorf("renumber events: checkpoint: %w", err)
	}
	return shift, nil
}
