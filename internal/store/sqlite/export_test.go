package sqlite

import (
	"context"
	"log/slog"
	"time"
)

// OpenLegacy opens a store that commits as the first version did
// (synchronous=FULL, the writer waits for each fsync, a SAVEPOINT per
// request), for before/after benchmarks.
func OpenLegacy(ctx context.Context, path string, logger *slog.Logger) (*Store, error) {
	return open(ctx, path, logger, true)
}

// BatchStats reports how many write batches the store committed, how many
// requests they held, and the mean time of a COMMIT.
func (s *Store) BatchStats() (batches, requests int64, meanCommit time.Duration) {
	st := s.WriteStats()
	if st.Batches > 0 {
		meanCommit = st.CommitTime / time.Duration(st.Batches)
	}
	return st.Batches, st.Writes, meanCommit
}

// SyncStats reports how many WAL syncs the syncer ran, their mean time,
// and how many batches were run again with savepoints.
func (s *Store) SyncStats() (syncs int64, meanSync time.Duration, retries int64) {
	st := s.WriteStats()
	if st.Syncs > 0 {
		meanSync = st.SyncTime / time.Duration(st.Syncs)
	}
	return st.Syncs, meanSync, st.Retries
}
