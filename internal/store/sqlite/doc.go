// Package sqlite is the embedded chorus.Store: one SQLite database file in
// WAL mode, written through modernc.org/sqlite (pure Go, no cgo).
//
// # Concurrency
//
// A Store is safe for concurrent use. All writes go through a single
// writer goroutine that owns the only read-write connection. Update
// enqueues its function; the writer gathers every queued request (up to
// maxBatch) into one transaction and commits the batch once: group commit.
// On one CPU (or with GOMAXPROCS 1), the writer woken by a request first
// yields once (runtime.Gosched), so that callers already runnable submit
// theirs before the batch is cut; the first request otherwise went alone.
// Functions therefore run one at a time, in queue order, and each sees the
// writes of those before it, which makes read-modify-write inside Update
// serializable. Update returns only after the batch is durable.
//
// A request that fails without having run a write statement (a missing
// object, a revision or permission check) has nothing to undo, so requests
// run without savepoints. If one fails after writing, the writer rolls the
// batch back and runs it again with a SAVEPOINT around each request, so
// that the failing one rolls back alone (chorus.Store allows fn to run more
// than once).
//
// View runs on a pool of query_only reader connections, each in its own
// read transaction, so readers see a consistent committed snapshot and never
// block the writer (WAL). Before returning, View waits until every batch it
// could have seen is durable (below), so it never hands out a write that a
// crash could still take back.
//
// Three more goroutines belong to a Store: the syncer (below), the
// background checkpointer, and a watcher that closes done once the others
// exit.
//
// # Durability: pipelined commit
//
// An acknowledged write survives kill -9 and power loss: no Update returns
// nil before the WAL frames of its batch are on stable storage. The writer
// does not wait for that itself, so that batch N+1 executes while batch N's
// sync runs:
//
//  1. The writer connection runs with synchronous=NORMAL: COMMIT appends
//     the batch's frames to the -wal file with write(2), without fsync.
//     Before COMMIT (which publishes the batch to readers) the writer
//     stores the batch's sequence number in pending.
//  2. After COMMIT returns, the writer queues the batch for the syncer.
//     Batches that committed nothing (all requests failed) are queued
//     too, so that every answer, errors included, goes out in order and
//     only once what it was based on is durable.
//  3. The syncer takes every queued batch, calls fdatasync(2) on the WAL
//     once, then sets durable to the highest sequence and answers their
//     requests. Every COMMIT of those batches returned before the batch was
//     queued, so its write(2)s completed before the sync began, and a sync
//     flushes all of a file's dirty pages, whichever descriptor wrote them.
//     When the syncer holds no batch and no request is queued, there is
//     nothing to overlap the sync with: the writer does step 3 itself
//     (every earlier batch is answered, so the order holds).
//  4. A failed fdatasync leaves the WAL's state unknown: its requests get
//     the error, and the store refuses all later writes and durable-waits.
//
// What the WAL file holds when the sync runs is the only question, and
// SQLite changes it in two ways besides appending:
//
//   - Checkpoints copy WAL frames into the database file. Under
//     synchronous=NORMAL (and FULL) a checkpoint fsyncs the WAL before
//     copying and the database file after, whichever connection runs it (the
//     writer's own or the background checkpointer's, both NORMAL;
//     never OFF, which would skip those syncs and break this argument).
//   - A WAL reset (the next write transaction after a checkpoint copied
//     every frame) rewrites the WAL from its start, overwriting old frames.
//     It happens only after a complete checkpoint, so every frame it
//     overwrites is already durable in the database file.
//
// So each committed batch is durable either in the WAL, by the syncer's
// fdatasync, or in the database file, by a checkpoint, before it is
// answered. SQLite deletes the WAL only when the last connection closes,
// and the writer's stays open, so the syncer's descriptor names the live
// WAL. Open fsyncs the WAL's directory once so that its name is durable
// too (SQLite would have done so on its first sync under FULL). Recovery after a crash replays the WAL's valid prefix
// of committed transactions: a batch whose frames are only partly written
// (not yet answered) is dropped whole, with those after it.
//
// Readers may see batch N before it is durable. View therefore reads
// pending after fn (an upper bound on what fn's snapshot saw, since pending
// was stored before COMMIT) and waits for durable to reach it, at most one
// sync when writes are in flight.
//
// # Checkpoints
//
// Every ckptEveryWrites requests the writer wakes a checkpointer goroutine
// that runs a PASSIVE checkpoint on its own connection, so most copying and
// its two fsyncs happen off the writer. When the WAL is autoCheckpointPages
// frames long or more after a batch (its length read from the WAL index in
// the -shm file), the writer runs one itself: it finds little left to copy,
// and, running between the writer's transactions, is what lets the next one
// reset the WAL (a concurrent checkpoint alone rarely catches up with a
// busy writer). SQLite's own auto-checkpoint, which made the same test
// after each COMMIT, is off: it runs inside COMMIT and drops its error
// (legacy mode, for benchmarks only, keeps it).
//
// A checkpoint syncs the WAL and the database file. If such a sync fails,
// the kernel may report it to that descriptor alone, and the syncer's next
// fdatasync succeed over frames that never reached the disk. A lost write in
// a checkpoint (lostWrite) therefore fails the store, and every checkpoint
// and every answering sync hold ioMu: a batch is answered only by a sync
// that ran after any checkpoint that could have failed on its frames, and
// that sync sees the failure first. Checkpoints and syncs contend for the
// same disk anyway.
//
// # WAL writes
//
// On Linux (amd64, arm64) the store replaces the unix VFS's pwrite (and
// pread, fstat, ftruncate, close and fcntl) through
// sqlite3_vfs.xSetSystemCall, so that a commit's WAL frames reach the file
// in one write(2) instead of two per frame (walwrite_linux.go). The commit
// frame's page triggers the write, before COMMIT returns, so everything
// above holds unchanged: what COMMIT returned is in the file when the
// syncer's fdatasync starts. Frames of a transaction that rolls back are
// dropped when the WAL write lock is released, never written after it.
// The state is process-wide and keyed by descriptor; it is installed at
// init, before any connection opens.
//
// # Object cache
//
// Every write reads its object first, by SID or by unique name. The
// writer keeps the object rows it has read or written (objectCache),
// indexed both ways, and serves those reads from memory, as it does the
// item read of every list and map item write (up to maxCachedItems rows)
// and, with ACLs on, the permission read of every write by an identity
// (up to maxCachedPermissions rows); see objectCache for why it stays
// coherent with the database. Readers (View) never see these rows: a
// permission check outside Update reads SQLite. After each
// COMMIT it hands the rows of that batch to recentObjects (with their
// data while those fit in maxRecentData), from which RecentObject (the
// gateway's subscription check) and CachedObject (REST and CDS fetches,
// by SID or unique name) serve readers without a read transaction; see
// recentObjects for what a reader may and may not see there. Another
// process's writes to the file reach those rows late: they are cleared at
// the writer's next batch, or within dataVersionPoll when it runs none.
//
// # Backups
//
// Backup (backup.go) opens its own connection to the database file, in any
// process, and copies one read transaction's snapshot with VACUUM INTO: it
// never blocks the writer (WAL), and the snapshot holds every batch
// committed before it began. Restore writes a new file under a temporary
// name and renames it only after the checksum and the integrity check.
//
// # Storage
//
// Times are stored as UTC unix nanoseconds; JSON data (json.RawMessage) is
// stored as BLOB verbatim and round-trips byte for byte. Package sqlrow,
// shared with the postgres backend, holds these encodings and the row
// scanning. Events are kept in insertion (rowid) order with a unique
// (object_sid, id) index, so that the events of a batch share the table's
// last pages.
package sqlite
