package sqlite

import "time"

// BatchStats reports how many write batches the store committed, how many
// requests they held, and the mean time of a COMMIT.
func (s *Store) BatchStats() (batches, requests int64, meanCommit time.Duration) {
	batches, requests = s.statBatches.Load(), s.statRequests.Load()
	if batches > 0 {
		meanCommit = time.Duration(s.statCommitNanos.Load() / batches)
	}
	return batches, requests, meanCommit
}
