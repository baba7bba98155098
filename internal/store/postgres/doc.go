// Package postgres is the clustered chorus.Store: PostgreSQL through
// github.com/jackc/pgx/v5 (pgxpool), shared by every node of a cluster.
//
// Concurrency: a Store is safe for concurrent use, and several Stores (on
// several nodes) may share one database. Update queues its function for
// one of a few writer goroutines (Config.Writers). A writer takes
// everything queued (up to Config.MaxBatch) and runs it in one READ
// COMMITTED transaction on a pooled connection, each request inside its own
// SAVEPOINT so that a failing request rolls back alone, and commits once
// per batch with synchronous_commit=on: group commit. Update returns only
// after COMMIT. Functions in one batch run one at a time, in queue order,
// and see each other's writes. BEGIN and each SAVEPOINT are pipelined with
// the first statement fn runs, so a request costs no extra round trip, and
// an AppendEvent or AppendOutbox inside Update is held back to ride with
// fn's next statement (the engine's UPDATE of the object), or with a last
// round trip when fn returns nil: an engine write costs one round trip for
// its event, its webhooks and its object together. A held write's error
// then comes from the method that carried it, and fails the Update.
//
// In PostgreSQL a failed statement aborts the transaction (here: the
// request's savepoint). When a request's round trip fails before its
// SAVEPOINT ran (pgx fails a whole pipeline when one of its statements does
// not prepare, as after a schema change under an old node), there is no
// savepoint of its own: the batch is rolled back, that request fails and
// the requests before it run again in the next batch, since ROLLBACK TO
// would undo the previous request, already counted as committed. The
// expected failures are therefore avoided rather than caught: InsertObject
// uses ON CONFLICT DO NOTHING and UpdateObject checks the unique name
// first, so fn may go on after ErrUniqueNameExists as with sqlite. If fn
// ignores any other failed statement and returns nil, its Update fails
// anyway.
//
// Object and ObjectByName inside Update lock the row (SELECT ... FOR NO KEY
// UPDATE), which serializes read-modify-write across writers and nodes. So
// that batching cannot create lock cycles, only the first request of a
// batch waits for a row lock; later requests lock with NOWAIT and, when the
// row is busy, are rolled back to their savepoint and moved to the next
// batch. Deadlocks (40P01), serialization failures (40001) and busy locks
// (55P03) therefore re-run the function: the Store contract allows it.
// A lock wait, though, lasts at most the session's lock_timeout
// (TxTimeout/4 unless the DSN sets it): a row locked that long is held by
// a transaction that is not finishing (a frozen node), so its request is
// rolled back to its savepoint and answered with a 503 that says the
// resource is locked, and the rest of the batch runs. When a batch's
// transaction is lost all the same (its connection broke, or TxTimeout ran
// out), only the request that was running fails: those before it (rolled
// back) and after it (never run) go to the next batch, once.
//
// A node that stops inside a transaction (frozen, or cut off) must not
// keep its row locks: every session sets idle_in_transaction_session_timeout
// (2×TxTimeout), after which the server ends it and rolls back, and TCP
// keepalives (idle 10 s, 3 probes 5 s apart) that end it when the host is
// gone. A DSN that sets any of these, or lock_timeout, keeps its value.
//
// View runs fn on a pooled connection in a REPEATABLE READ READ ONLY
// transaction: a consistent snapshot that never blocks writers.
//
// Every transaction runs under Config.TxTimeout, so that a lost server
// makes Update and View fail (with an error wrapping chorus.ErrUnavailable)
// instead of hanging; pgxpool reconnects once the server is back.
//
// Leader reports whether this Store holds the cluster-wide session advisory
// lock of its schema, on a dedicated connection: background work such as
// TTL sweeping runs on one node at a time and moves when that node dies,
// or when it freezes: the lock's session has an idle_session_timeout of
// Config.LeaderLease, which a goroutine of the Store keeps from running
// out by pinging it (keepLeadership).
// LockSingleNode takes another such lock, held until Close, for a node
// that runs without a bus and so must be the schema's only node.
//
// Times are stored as BIGINT UTC unix nanoseconds and JSON data as BYTEA,
// verbatim, exactly as the sqlite backend stores them.
package postgres
