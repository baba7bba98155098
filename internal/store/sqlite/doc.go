// Package sqlite is the embedded chorus.Store: one SQLite database file in
// WAL mode, written through modernc.org/sqlite (pure Go, no cgo).
//
// Concurrency: a Store is safe for concurrent use. All writes go through a
// single writer goroutine that owns the only read-write connection. Update
// enqueues its function; the writer gathers every queued request (up to
// maxBatch) into one transaction, gives each request a SAVEPOINT so that a
// failing request rolls back alone, and commits the batch with a single
// fsync (synchronous=FULL): group commit. Functions therefore run one at a
// time, in queue order, and each sees the writes of those before it, which
// makes read-modify-write inside Update serializable. Update returns only
// after the batch is durably committed.
//
// View runs on a pool of query_only reader connections, each in its own
// read transaction, so readers see a consistent committed snapshot and never
// block the writer (WAL).
//
// Times are stored as UTC unix nanoseconds; JSON data (json.RawMessage) is
// stored as BLOB verbatim and round-trips byte for byte.
package sqlite
