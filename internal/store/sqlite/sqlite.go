package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/ratelog"
	"github.com/chorus-sync/chorus/internal/store/groupcommit"
	msqlite "modernc.org/sqlite" // also registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"
)

var _ chorus.Store = (*Store)(nil)

const (
	// maxBatch caps how many Update requests share one transaction.
	maxBatch = 256
	// maxLinger bounds how long the writer waits to fill a batch.
	maxLinger = 500 * time.Microsecond
	// queueLen is the capacity of the writer's request queue.
	queueLen = 1024
	// autoCheckpointPages is the WAL's length, in frames, from which the
	// writer checkpoints after a batch (restartCheckpoint, as SQLite's
	// auto-checkpoint did after a COMMIT), which lets the next transaction
	// restart the WAL. The background checkpointer runs after every
	// ckptEveryWrites requests and keeps what is left to copy then small.
	autoCheckpointPages = 4096
	ckptEveryWrites     = 512
	// walSizeLimit is the writer's journal_size_limit: the WAL file is
	// truncated to it when the writer restarts the WAL. A reader holding an
	// old snapshot (a long backup, an operator's sqlite3 shell) keeps
	// checkpoints from restarting it, and a flood meanwhile grew it to
	// 251 MB that stayed until a restart. Above the 4096 pages of the
	// steady state (~17 MB), so that the usual restart truncates nothing.
	walSizeLimit = 32 << 20
	// lowDiskBytes is the free space below which a failure to open says
	// the disk is (nearly) full.
	lowDiskBytes = 1 << 20
	// dataVersionPoll is how often the writer looks for another process's
	// writes to the file when it runs no batch (writeLoop).
	dataVersionPoll = time.Second
	// busyTimeoutMS is how long a connection waits for a lock held by
	// another process (in-process writes never contend: one writer).
	busyTimeoutMS = 10000
)

// diskFree is freeBytes; tests replace it.
var diskFree = freeBytes

// Log attribute keys.
const (
	logKeyPath  = "path"
	logKeyBatch = "batch"
	logKeyErr   = "err"
)

// ErrClosed is returned by calls on a closed Store.
var ErrClosed = errors.New("sqlite: store closed")

// Store is a chorus.Store backed by one SQLite file. See the package
// documentation for its concurrency model.
type Store struct {
	path   string
	logger *slog.Logger
	// legacy commits as the first version did: synchronous=FULL (the
	// writer waits for each batch's fsync) and a SAVEPOINT per request.
	// Benchmarks set it to compare; it is otherwise false.
	legacy bool

	wdb     *sql.DB // one connection: the writer's
	cdb     *sql.DB // one connection: the background checkpointer's
	ckpt    *conn
	ckptq   chan struct{} // wakes the checkpointer; closed when the writer exits
	rdb     *sql.DB       // the readers' pool
	writer  *conn
	readers chan *conn
	nreader int

	// Pipelined commit (see doc.go). The writer commits a batch with
	// synchronous=NORMAL (no fsync), sets pending, and hands the batch to
	// the syncer, which fdatasyncs the WAL and only then answers it and
	// advances durable. Batch sequence numbers start at 1.
	wal *walFile
	// shm is the -shm file (the WAL index), read for the WAL's length
	// (walFrames); nil in legacy mode. Never closed before every
	// connection is (closeDBs).
	shm     *os.File
	objs    *objectCache // writer's; nil in legacy mode
	dataVer int64        // PRAGMA data_version at the last batch (writer's)
	syncq   chan *batchDone
	pending atomic.Uint64 // sequence of the last batch the writer began committing
	durable atomic.Uint64 // sequence up to which every batch is durable (or rolled back)
	durMu   sync.Mutex
	durCh   chan struct{} // closed and replaced when durable advances
	syncErr atomic.Pointer[error]
	// dbFile is the database file as opened; the writer checks every
	// fileCheckEvery (at fileChecked) that the path still names it.
	dbFile      os.FileInfo
	fileChecked time.Time
	// writeFailing is the error of the last Update when the database
	// failed it (unavailable), nil after one that succeeded: Ping reports it.
	writeFailing atomic.Pointer[error]
	syncing      atomic.Int64 // batches queued to or held by the syncer
	// ioMu is held by each WAL sync that answers batches and by each
	// checkpoint, so that no batch is answered while a checkpoint that
	// may fail on its frames runs (doc.go, "Checkpoints").
	ioMu          sync.Mutex
	checkpointing atomic.Bool // a checkpoint holds ioMu

	// Writer statistics (WriteStats).
	statBatches, statRequests, statCommitNanos, statSyncs, statSyncNanos, statRetries atomic.Int64
	statFailed                                                                        atomic.Int64
	// failLog paces the log of failed batches: a full disk fails every
	// write, thousands a second.
	failLog *ratelog.Gate

	queue *groupcommit.Queue
	done  chan struct{} // closed when the writer and syncer goroutines exit
}

// WriteStats are a store's write path totals since Open: what group commit
// achieves (writes per batch) and what durability costs (time in COMMIT and
// in the WAL syncs that answer the batches).
type WriteStats struct {
	Batches    int64         // write transactions the writer ran
	Writes     int64         // Update requests they ran
	CommitTime time.Duration // spent in COMMIT (WAL appends)
	Syncs      int64         // fdatasyncs of the WAL that made batches durable
	SyncTime   time.Duration // spent in them
	Retries    int64         // batches run again with a savepoint per request
	Failed     int64         // writes answered 20503: the store could not write (a full disk, I/O errors, another process's lock)
}

// WriteStats returns the write path totals. It is safe to call at any
// time; each field is read atomically, not all of them together.
func (s *Store) WriteStats() WriteStats {
	return WriteStats{
		Batches:    s.statBatches.Load(),
		Writes:     s.statRequests.Load(),
		CommitTime: time.Duration(s.statCommitNanos.Load()),
		Syncs:      s.statSyncs.Load(),
		SyncTime:   time.Duration(s.statSyncNanos.Load()),
		Retries:    s.statRetries.Load(),
		Failed:     s.statFailed.Load(),
	}
}

// DiskUsage is what the store takes on disk and what its file system has
// left: the figures an operator alerts on before writes fail with 20503.
type DiskUsage struct {
	DatabaseBytes int64  // the database file
	WALBytes      int64  // its -wal file (0 when there is none)
	FreeBytes     uint64 // space an unprivileged process may still use there
	FreeKnown     bool   // false where the free space cannot be read
}

// DiskUsage reads the sizes of the database and WAL files and the free
// space of their directory. It is safe to call at any time; each figure is
// read separately, so they need not be from one instant.
func (s *Store) DiskUsage() (DiskUsage, error) {
	db, err := os.Stat(s.path)
	if err != nil {
		return DiskUsage{}, fmt.Errorf("sqlite: disk usage: %w", err)
	}
	u := DiskUsage{DatabaseBytes: db.Size()}
	if wal, err := os.Stat(s.path + "-wal"); err == nil {
		u.WALBytes = wal.Size()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return DiskUsage{}, fmt.Errorf("sqlite: disk usage: %w", err)
	}
	u.FreeBytes, u.FreeKnown = diskFree(filepath.Dir(s.path))
	return u, nil
}

// batchDone is a batch whose transaction ended: its requests are answered
// once every batch up to seq is durable. wrote is false when the batch
// committed nothing (all its requests failed, or its commit failed).
type batchDone struct {
	seq   uint64
	wrote bool
	reqs  []*groupcommit.Request
}

// Open opens (creating if needed) the database file at path, with its
// parent directory, and brings its schema up to date. A nil logger means
// slog.Default().
func Open(ctx context.Context, path string, logger *slog.Logger) (*Store, error) {
	s, err := open(ctx, path, logger, false)
	if err != nil {
		if free, ok := diskFree(filepath.Dir(path)); ok && free < lowDiskBytes {
			// SQLite says "disk I/O error" when it cannot size its
			// shared-memory file on a full disk.
			return nil, fmt.Errorf("%w (the file system holding it has %d bytes free: free some space)", err, free)
		}
		return nil, err
	}
	return s, nil
}

func open(ctx context.Context, path string, logger *slog.Logger, legacy bool) (*Store, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if path == "" {
		return nil, errors.New("sqlite: open: empty path")
	}
	if err := restrictFiles(path); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s := &Store{
		path:    path,
		logger:  logger.With(logKeyPath, path),
		failLog: ratelog.New(time.Second, 5),
		legacy:  legacy,
		syncq:   make(chan *batchDone, queueLen),
		ckptq:   make(chan struct{}, 1),
		durCh:   make(chan struct{}),
		nreader: max(4, runtime.GOMAXPROCS(0)),
		queue:   groupcommit.NewQueue(queueLen),
		done:    make(chan struct{}),
	}
	// Commit with fdatasync(2) like stock SQLite builds on Linux: as
	// durable as fsync (it syncs the data and the size needed to read it
	// back) without waiting for timestamp metadata. Process-wide; a no-op
	// where unavailable.
	_, _ = msqlite.Fdatasync(true)
	if err := s.open(ctx); err != nil {
		s.closeDBs()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	writerDone, syncerDone, ckptDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() { s.writeLoop(); close(s.ckptq); close(s.syncq); close(writerDone) }()
	go func() { s.syncLoop(); close(syncerDone) }()
	go func() { s.checkpointLoop(); close(ckptDone) }()
	go func() { <-writerDone; <-syncerDone; <-ckptDone; close(s.done) }()
	return s, nil
}

// dsn builds the connection string of modernc.org/sqlite.
func dsn(path string, readOnly bool, sync string, pragmas ...string) string {
	q := url.Values{}
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous("+sync+")")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
	}
	return fileDSN(path, q.Encode())
}

func (s *Store) open(ctx context.Context) error {
	var err error
	// The writer first: it creates the file, switches it to WAL and
	// migrates before any reader looks at the schema.
	// synchronous=NORMAL: a commit writes its WAL frames without an fsync
	// (the syncer makes them durable before anyone is answered), while a
	// checkpoint still syncs the WAL before copying it into the database
	// and the database before the WAL may be reset. Never OFF: see doc.go.
	sync := "NORMAL"
	pragmas := []string{fmt.Sprintf("journal_size_limit(%d)", walSizeLimit)}
	if s.legacy {
		sync = "FULL"
	} else {
		// No auto-checkpoint: SQLite runs it inside COMMIT and drops its
		// error, so a failed sync in it went unseen and the syncer then
		// answered frames that may not be on the disk. The writer runs
		// the same checkpoint itself (restartCheckpoint).
		pragmas = append(pragmas, "wal_autocheckpoint(0)")
	}
	if s.wdb, err = sql.Open("sqlite", dsn(s.path, false, sync, pragmas...)); err != nil {
		return err
	}
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	s.wdb.SetConnMaxIdleTime(0)
	wc, err := s.wdb.Conn(ctx)
	if err != nil {
		return err
	}
	s.writer = newConn(wc)
	var mode string
	if err := wc.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("read journal_mode: %w", err)
	}
	if mode != "wal" {
		return fmt.Errorf("journal_mode is %q, want wal", mode)
	}
	if err := migrate(ctx, s.writer); err != nil {
		return err
	}

	if s.wal, err = openWAL(s.path); err != nil {
		return err
	}
	if !s.legacy {
		// Made by the writer's first WAL access above; walFrames reads it.
		if s.shm, err = os.Open(s.path + "-shm"); err != nil {
			return fmt.Errorf("open the WAL index: %w", err)
		}
	}
	if s.dbFile, err = os.Stat(s.path); err != nil {
		return err
	}
	if !s.legacy {
		s.objs = newObjectCache()
	}
	// The checkpointer's connection syncs the WAL before copying it into
	// the database, and the database after: synchronous must not be OFF.
	if s.cdb, err = sql.Open("sqlite", dsn(s.path, false, "NORMAL")); err != nil {
		return err
	}
	s.cdb.SetMaxOpenConns(1)
	s.cdb.SetMaxIdleConns(1)
	s.cdb.SetConnMaxLifetime(0)
	s.cdb.SetConnMaxIdleTime(0)
	cc, err := s.cdb.Conn(ctx)
	if err != nil {
		return err
	}
	s.ckpt = newConn(cc)
	if s.rdb, err = sql.Open("sqlite", dsn(s.path, true, "FULL")); err != nil {
		return err
	}
	s.rdb.SetMaxOpenConns(s.nreader)
	s.rdb.SetMaxIdleConns(s.nreader)
	s.rdb.SetConnMaxLifetime(0)
	s.rdb.SetConnMaxIdleTime(0)
	s.readers = make(chan *conn, s.nreader)
	for range s.nreader {
		rc, err := s.rdb.Conn(ctx)
		if err != nil {
			return err
		}
		s.readers <- newConn(rc)
	}
	return nil
}

// closeDBs closes every connection. The writer goroutine must have exited.
func (s *Store) closeDBs() error {
	var errs []error
	if s.readers != nil {
	drain:
		for {
			select {
			case c := <-s.readers:
				errs = append(errs, c.close())
			default:
				break drain
			}
		}
	}
	if s.ckpt != nil {
		errs = append(errs, s.ckpt.close())
	}
	if s.cdb != nil {
		errs = append(errs, s.cdb.Close())
	}
	if s.writer != nil {
		errs = append(errs, s.writer.close())
	}
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	if s.wdb != nil {
		errs = append(errs, s.wdb.Close())
	}
	errs = append(errs, s.wal.close())
	if s.shm != nil {
		// Last: closing a descriptor of the -shm file drops every lock this
		// process holds on it, SQLite's included.
		errs = append(errs, s.shm.Close())
	}
	return errors.Join(errs...)
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// Close finishes every queued Update, then closes the database. Calls
// after Close fail.
func (s *Store) Close() error {
	if !s.queue.Close() {
		return ErrClosed
	}
	<-s.done
	// Wait for running Views to hand their connections back.
	readers := make([]*conn, 0, s.nreader)
	for range s.nreader {
		readers = append(readers, <-s.readers)
	}
	for _, c := range readers {
		s.readers <- c
	}
	if err := s.closeDBs(); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}

// Ping checks that a reader connection answers and that the last write
// did not fail for want of the database (the disk full, an I/O error, a
// read-only file), which a successful write clears.
func (s *Store) Ping(ctx context.Context) error {
	s.checkFileNow()
	if p := s.syncErr.Load(); p != nil {
		return fmt.Errorf("sqlite: store failed, restart needed: %w", *p)
	}
	if p := s.writeFailing.Load(); p != nil {
		return fmt.Errorf("sqlite: writes failing: %w", *p)
	}
	return s.View(ctx, func(chorus.ReadTx) error { return nil })
}

// View runs fn in a read transaction on a reader connection.
func (s *Store) View(ctx context.Context, fn func(chorus.ReadTx) error) (err error) {
	defer func() { err = unavailable(err) }()
	if s.queue.Closed() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var c *conn
	select {
	case c = <-s.readers:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { s.readers <- c }()
	if _, err := c.exec(context.Background(), "BEGIN"); err != nil { // not cancelable: see tx.ctx
		return fmt.Errorf("sqlite: view: begin: %w", err)
	}
	// Rolling back a read transaction only releases its snapshot; do it
	// even if ctx is done, so that the connection goes back clean.
	defer func() {
		if _, rerr := c.exec(context.Background(), "ROLLBACK"); rerr != nil && err == nil {
			err = fmt.Errorf("sqlite: view: end: %w", rerr)
		}
	}()
	t := &tx{c: c}
	err = fn(t)
	t.finish()
	// fn may have read a batch that is committed but not yet durable: do
	// not let what it read out before that batch is. The writer sets
	// pending before a batch's COMMIT can make it visible, so every batch
	// fn could have seen is at most the pending read now.
	if werr := s.waitDurable(ctx, s.pending.Load()); werr != nil && err == nil {
		err = fmt.Errorf("sqlite: view: %w", werr)
	}
	return err
}

// RecentObject returns the object sid of kind k (in service serviceSID;
// "" matches any) from memory if a recent batch wrote or read it, else
// ok=false. The object has no Data. It may lack changes committed just
// before the call, but only changes whose writes are answered after the
// call began (see recentObjects); use View for a read that must see every
// committed write. Like View, it never returns what is not yet durable.
func (s *Store) RecentObject(ctx context.Context, k chorus.Kind, serviceSID, sid string) (o *chorus.Object, ok bool, err error) {
	e, ok, err := s.recentRow(ctx, k, serviceSID, sid, "")
	if !ok || err != nil {
		return nil, false, err
	}
	meta := *e.o
	meta.Data = nil // the caller wants metadata: do not copy the data
	return copyObject(&meta), true, nil
}

// CachedObject is RecentObject for a reader that wants the whole row: it
// returns the object of kind k in service serviceSID with SID sid, or, if
// sid is "", the one named name, Data included, if it is in memory with
// its data (maxRecentData), else ok=false. The same guarantees hold: it
// may lack only changes whose writes are answered after the call began,
// and never returns what is not yet durable. Writes by another process to
// the same file are the exception: they are seen at the writer's next
// batch or data_version poll (dataVersionPoll), not at once.
func (s *Store) CachedObject(ctx context.Context, k chorus.Kind, serviceSID, sid, name string) (o *chorus.Object, ok bool, err error) {
	if serviceSID == "" {
		return nil, false, nil
	}
	e, ok, err := s.recentRow(ctx, k, serviceSID, sid, name)
	if !ok || err != nil || !e.full {
		return nil, false, err
	}
	return copyObject(e.o), true, nil
}

// recentRow finds a row in recentObjects (by sid, or by name when sid is
// "") of kind k in service serviceSID ("" matches any), and waits until
// its batch is durable.
func (s *Store) recentRow(ctx context.Context, k chorus.Kind, serviceSID, sid, name string) (recentObject, bool, error) {
	if s.objs == nil || s.queue.Closed() {
		return recentObject{}, false, nil
	}
	e, ok := s.objs.recent.get(k, serviceSID, sid, name)
	if !ok || e.o.Kind != k || (serviceSID != "" && e.o.ServiceSID != serviceSID) {
		return recentObject{}, false, nil
	}
	if err := s.waitDurable(ctx, e.seq); err != nil {
		return recentObject{}, false, fmt.Errorf("sqlite: recent object %s: %w", e.o.SID, err)
	}
	return e, true, nil
}

// waitDurable waits until every batch up to seq is durable or rolled back.
func (s *Store) waitDurable(ctx context.Context, seq uint64) error {
	for {
		if s.durable.Load() >= seq {
			return nil
		}
		s.durMu.Lock()
		ch := s.durCh
		s.durMu.Unlock()
		if s.durable.Load() >= seq {
			return nil
		}
		if perr := s.syncErr.Load(); perr != nil {
			return *perr
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// setDurable advances durable to seq and wakes waitDurable.
func (s *Store) setDurable(seq uint64) {
	s.durMu.Lock()
	s.durable.Store(seq)
	close(s.durCh)
	s.durCh = make(chan struct{})
	s.durMu.Unlock()
}

// wakeDurable wakes the durable-waiters without moving durable (which only
// the syncer advances), so that they see syncErr.
func (s *Store) wakeDurable() {
	s.durMu.Lock()
	close(s.durCh)
	s.durCh = make(chan struct{})
	s.durMu.Unlock()
}

// Update queues fn for the writer and waits until its batch is committed.
// If ctx is done before fn starts, fn does not run and Update returns
// ctx.Err(). A panic in fn is re-raised in the caller's goroutine.
func (s *Store) Update(ctx context.Context, fn func(chorus.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := unavailable(s.queue.Submit(ctx, fn, ErrClosed))
	switch {
	case err == nil:
		if s.writeFailing.Load() != nil { // no shared write on the hot path
			s.writeFailing.Store(nil)
		}
	case chorus.ErrorCode(err) == chorus.ErrUnavailable.Code && !errors.Is(err, ErrClosed):
		s.statFailed.Add(1)
		if !contended(err) {
			s.writeFailing.Store(&err) // the disk full, say: Ping reports it
		}
	}
	return err
}

// writeLoop is the writer goroutine: it takes everything queued, runs it as
// one batch, and repeats until Close closes the queue and it is drained.
//
// Batches grow to the number of concurrent writers: callers answered by a
// commit usually come straight back, so before running a batch the writer
// waits briefly (a quarter of the last commit's time, at most maxLinger)
// for as many requests as were in flight when it last answered. With one
// writer it never waits.
//
// Every dataVersionPoll it also checks whether another process wrote the
// file (checkDataVersion), so that the rows the readers' recentObjects
// serve do not outlive such a write by more than that while no batch runs.
func (s *Store) writeLoop() {
	batch := make([]*groupcommit.Request, 0, maxBatch)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	poll := time.NewTicker(dataVersionPoll)
	defer poll.Stop()
	target := 1                  // requests in flight at the last answer
	var lastCommit time.Duration // duration of the last batch's commit
	var nwrites int              // requests since the checkpointer was last woken
	var pollFailing bool         // the last data_version poll failed
	for {
		var r *groupcommit.Request
		ok := true
		select {
		case r, ok = <-s.queue.C():
		case <-poll.C:
			err := s.checkDataVersion(context.Background())
			if err != nil && !pollFailing {
				// Once a streak: the next batch fails on it too.
				s.logger.Warn("sqlite: checking for other processes' writes", logKeyErr, err)
			}
			pollFailing = err != nil
			continue
		}
		if !ok {
			return
		}
		// A request wakes the writer at once (a channel send readies its
		// receiver to run next), often while the handlers of the other
		// clients are runnable, a moment from submitting their own. With
		// one processor they cannot run until the writer blocks, so
		// batches stayed small (rtbench publish: ~5 REST writes per
		// COMMIT with 32 writers). Yielding once lets them submit first;
		// with nothing else runnable it costs well under a microsecond.
		// Serve runs two processors on one CPU (cmd/chorus/procs.go),
		// which behaves alike. With more CPUs the handlers run beside the
		// writer, and the yield only delayed it (BenchmarkCDS, 32
		// sessions, -cpu 2: +11 %).
		if oneCPU() {
			runtime.Gosched()
		}
		batch = append(batch[:0], r)
		open := true
		waited := false
	gather:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-s.queue.C():
				if !ok {
					open = false
					break gather
				}
				batch = append(batch, r)
				continue
			default:
			}
			if waited || len(batch) >= target {
				break
			}
			// Linger for the callers of the last batch.
			waited = true
			linger.Reset(min(maxLinger, lastCommit/4))
			for len(batch) < target && len(batch) < maxBatch {
				select {
				case r, ok := <-s.queue.C():
					if !ok {
						open = false
						linger.Stop()
						break gather
					}
					batch = append(batch, r)
					continue
				case <-linger.C:
				}
				break
			}
			linger.Stop()
		}
		start := time.Now()
		s.runBatch(batch)
		lastCommit = time.Since(start)
		if !s.legacy && s.walLong() {
			s.restartCheckpoint()
		}
		if nwrites += len(batch); nwrites >= ckptEveryWrites && !s.legacy {
			nwrites = 0
			select {
			case s.ckptq <- struct{}{}:
			default: // one is running or due
			}
		}
		target = min(len(batch)+s.queue.Len(), maxBatch)
		clear(batch)
		if !open {
			return
		}
	}
}

// oneCPU reports whether the process runs on one CPU (its affinity at
// start) or with one Go processor. A CPU quota (cgroup) below two CPUs on a
// larger machine is not seen once GOMAXPROCS has been set explicitly.
func oneCPU() bool { return runtime.NumCPU() == 1 || runtime.GOMAXPROCS(0) == 1 }

// Savepoint statements; one name suffices as requests never nest.
const (
	sqlSavepoint  = "SAVEPOINT req"
	sqlRelease    = "RELEASE req"
	sqlRollbackTo = "ROLLBACK TO req"
)

// runBatch runs the requests of one batch in one transaction and hands
// them to the syncer (legacy: answers them), which answers them once the
// batch is durable.
func (s *Store) runBatch(batch []*groupcommit.Request) {
	// Claim the requests whose callers still wait; answer the others.
	run := batch[:0:0]
	for _, r := range batch {
		if !r.Claim() {
			continue // canceled: Update already returned
		}
		if err := r.Ctx.Err(); err != nil {
			r.Err = err
			r.Answer()
			continue
		}
		run = append(run, r)
	}
	if len(run) == 0 {
		return
	}
	seq := s.pending.Load() // the batches this one may have read
	wrote := false
	s.checkFile()
	if perr := s.syncErr.Load(); perr != nil {
		// A failed fsync leaves the WAL's durability unknown: write no more.
		for _, r := range run {
			r.Err = *perr
		}
	} else {
		var retry bool
		seq, wrote, retry = s.execBatch(run, false)
		if retry {
			// A request failed after writing: run the batch again with a
			// savepoint around each request so that it rolls back alone.
			s.statRetries.Add(1)
			for _, r := range run {
				r.Err, r.Panic = nil, nil
			}
			seq, wrote, _ = s.execBatch(run, true)
		}
	}
	if s.legacy {
		// synchronous=FULL: COMMIT returned after the fsync.
		s.setDurable(seq)
		for _, r := range run {
			r.Answer()
		}
		return
	}
	b := &batchDone{seq: seq, wrote: wrote, reqs: run}
	if s.syncing.Load() == 0 && s.queue.Len() == 0 && !s.checkpointing.Load() {
		// Nothing to overlap the sync with, and no batch before this one
		// unanswered (only the writer adds to syncing): sync and answer
		// here, saving the hand-off to the syncer. Not while a checkpoint
		// runs: the sync waits for it (ioMu), and the writer would too.
		s.finish([]*batchDone{b})
		return
	}
	s.syncing.Add(1)
	s.syncq <- b
}

// execBatch runs run in one transaction and commits it. Each request's
// outcome is left in its err and panic fields. seq is the batch's sequence
// number (the current one if it committed nothing); wrote reports whether
// it tried to commit.
//
// Without savepoints a failing request that wrote nothing leaves nothing
// to undo, which is the usual way to fail (a missing object, a revision
// or permission check); one that did write makes execBatch roll the whole
// transaction back and return retry (only with more than one request:
// alone, the transaction is the request's unit). Store.Update allows fn to
// run more than once.
func (s *Store) execBatch(run []*groupcommit.Request, savepoints bool) (seq uint64, wrote, retry bool) {
	savepoints = savepoints || s.legacy
	seq = s.pending.Load()
	ctx := context.Background() // never interrupt a statement of a shared transaction
	w := s.writer
	failAll := func(err error) {
		if held, ok := s.failLog.Allow(); ok {
			s.logger.Error("sqlite: write batch failed", logKeyBatch, len(run), logKeyErr, err, "failed_before_not_logged", held)
		}
		for _, r := range run {
			if r.Err == nil && r.Panic == nil {
				r.Err = err
			}
		}
	}
	if _, err := w.exec(ctx, "BEGIN IMMEDIATE"); err != nil {
		failAll(fmt.Errorf("sqlite: update: begin: %w", err))
		return seq, false, false
	}
	if err := s.checkDataVersion(ctx); err != nil {
		s.abort(ctx, true)
		failAll(fmt.Errorf("sqlite: update: %w", err))
		return seq, false, false
	}
	ok := 0        // requests whose writes are in the transaction
	dirty := false // some request ran a write statement
	if len(run) == 1 || !savepoints {
		for _, r := range run {
			d := s.runFn(r)
			dirty = dirty || d
			if r.Err == nil && r.Panic == nil {
				ok++
				continue
			}
			if d && len(run) > 1 {
				s.abort(ctx, true)
				return seq, false, true
			}
		}
	} else {
		for _, r := range run {
			if _, err := w.exec(ctx, sqlSavepoint); err != nil {
				s.abort(ctx, true)
				failAll(fmt.Errorf("sqlite: update: savepoint: %w", err))
				return seq, false, false
			}
			d := s.runFn(r)
			dirty = dirty || d
			if r.Err != nil || r.Panic != nil {
				if d {
					s.objs.clear()
				}
				if _, err := w.exec(ctx, sqlRollbackTo); err != nil {
					s.abort(ctx, true)
					failAll(fmt.Errorf("sqlite: update: rollback to savepoint: %w", err))
					return seq, false, false
				}
			} else {
				ok++
			}
			if _, err := w.exec(ctx, sqlRelease); err != nil {
				s.abort(ctx, true)
				failAll(fmt.Errorf("sqlite: update: release savepoint: %w", err))
				return seq, false, false
			}
		}
	}
	s.statBatches.Add(1)
	s.statRequests.Add(int64(len(run)))
	if ok == 0 {
		s.abort(ctx, dirty)
		return seq, false, false
	}
	// Readers may see the batch as soon as COMMIT publishes it: announce it
	// first (View waits for pending to be durable).
	seq++
	s.pending.Store(seq)
	start := time.Now()
	if _, err := w.exec(ctx, "COMMIT"); err != nil {
		s.abort(ctx, true)
		failAll(fmt.Errorf("sqlite: update: commit: %w", err))
		return seq, true, false
	}
	s.statCommitNanos.Add(int64(time.Since(start)))
	s.objs.publish(seq)
	return seq, true, false
}

// syncLoop is the syncer goroutine: it takes every batch the writer has
// committed, makes them durable with one fdatasync of the WAL, and answers
// their requests, in commit order. It exits when the writer closes syncq.
func (s *Store) syncLoop() {
	var pend []*batchDone
	for {
		b, ok := <-s.syncq
		if !ok {
			return
		}
		pend = append(pend[:0], b)
	drain:
		for {
			select {
			case b, ok := <-s.syncq:
				if !ok {
					break drain // answer these; the next receive returns
				}
				pend = append(pend, b)
			default:
				break drain
			}
		}
		s.finish(pend)
		s.syncing.Add(-int64(len(pend)))
		clear(pend)
	}
}

// finish makes the batches of pend durable with one fdatasync of the WAL
// (if any of them committed), advances durable and answers their requests.
// pend is in commit order and every batch before it is answered.
func (s *Store) finish(pend []*batchDone) {
	var seq uint64
	wrote := false
	for _, b := range pend {
		seq = max(seq, b.seq)
		wrote = wrote || b.wrote
	}
	var err error
	// Under ioMu: a checkpoint that failed on these frames has failed the
	// store by now, and none runs during the sync (doc.go, "Checkpoints").
	s.ioMu.Lock()
	if perr := s.syncErr.Load(); perr != nil {
		err = *perr
	} else if wrote {
		// Every COMMIT of pend returned before finish was called, so its
		// frames were written to the WAL before this sync starts.
		s.statSyncs.Add(1)
		start := time.Now()
		err = s.wal.sync()
		s.statSyncNanos.Add(int64(time.Since(start)))
		if err != nil {
			err = s.fail(fmt.Errorf("sqlite: update: %w", err), "WAL sync")
		}
	}
	s.ioMu.Unlock()
	if err == nil {
		s.setDurable(seq)
	} else {
		s.setDurable(s.durable.Load()) // wake waiters to see syncErr
	}
	for _, b := range pend {
		for _, r := range b.reqs {
			if err != nil && r.Err == nil && r.Panic == nil {
				r.Err = err
			}
			r.Answer()
		}
	}
}

// runFn runs one request's fn on the writer connection, catching a panic.
// dirty reports whether fn ran a write statement (successful or not), so
// that a failure may have left writes to undo.
func (s *Store) runFn(r *groupcommit.Request) (dirty bool) {
	t := &tx{c: s.writer, write: true, objs: s.objs}
	defer func() {
		t.finish()
		dirty = t.dirty
		if p := recover(); p != nil {
			r.Panic = p
		}
	}()
	r.Err = r.Fn(t)
	return t.dirty
}

// checkDataVersion clears the object cache if another connection (another
// process) committed to the database since the writer's last batch.
func (s *Store) checkDataVersion(ctx context.Context) error {
	if s.objs == nil {
		return nil
	}
	var v int64
	if err := s.writer.scanRow(ctx, "PRAGMA data_version", &v); err != nil {
		return fmt.Errorf("data_version: %w", err)
	}
	if v != s.dataVer {
		s.objs.clear()
		s.dataVer = v
	}
	return nil
}

// abort rolls the writer's transaction back, if one is open. undo says
// that it may undo writes, which the object cache may hold.
func (s *Store) abort(ctx context.Context, undo bool) {
	if undo {
		s.objs.clear()
	}
	if _, err := s.writer.exec(ctx, "ROLLBACK"); err != nil {
		s.logger.Debug("sqlite: rollback", logKeyErr, err)
	}
}

// checkpointLoop is the background checkpointer: woken by the writer, it
// copies the WAL into the database (PASSIVE: it never blocks the writer or
// readers) on its own connection, so that the writer's own checkpoint
// (restartCheckpoint) finds little left to copy.
func (s *Store) checkpointLoop() {
	for range s.ckptq {
		s.checkpoint(s.ckpt, "background checkpoint")
	}
}

// walLong reports whether the WAL holds autoCheckpointPages frames or
// more: SQLite's auto-checkpoint's test, made after every batch.
func (s *Store) walLong() bool {
	n, ok := s.walFrames()
	return ok && n >= autoCheckpointPages
}

// walFrames is the WAL's length in frames: mxFrame in the WAL index
// header's first copy, at offset 16 of the -shm file, in native byte
// order (https://sqlite.org/walformat.html). Only the writer changes it.
// One pread per batch.
func (s *Store) walFrames() (int64, bool) {
	var b [4]byte
	if _, err := s.shm.ReadAt(b[:], 16); err != nil {
		return 0, false
	}
	return int64(binary.NativeEndian.Uint32(b[:])), true
}

// restartCheckpoint runs a PASSIVE checkpoint on the writer, between two of
// its transactions: with no frame added meanwhile it copies the whole WAL
// (unless a reader holds an old snapshot), so that the next transaction
// restarts the WAL from its beginning instead of growing it. This is what
// SQLite's auto-checkpoint did inside COMMIT, minus dropping the error.
func (s *Store) restartCheckpoint() {
	s.checkpoint(s.writer, "checkpoint")
}

// checkpoint runs PRAGMA wal_checkpoint(PASSIVE) on c under ioMu. A lost
// write in it fails the store: a sync (or a write) of the WAL or the
// database file failed, and the kernel may report that once, to this
// connection alone, and the syncer's own sync of the WAL then succeed over
// frames that never reached the disk (a tester lost an acknowledged write
// so). The files' state is unknown: the store refuses writes, as after a
// failed WAL sync. Holding ioMu, the checkpoint fails the store before any
// batch whose frames it synced is answered. what names it in logs.
func (s *Store) checkpoint(c *conn, what string) {
	s.ioMu.Lock()
	s.checkpointing.Store(true)
	defer func() {
		s.checkpointing.Store(false)
		s.ioMu.Unlock()
	}()
	if s.syncErr.Load() != nil {
		return // failed already: the files are left as they are
	}
	var busy, frames, checkpointed int64
	err := c.scanRow(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)", &busy, &frames, &checkpointed)
	switch {
	case err == nil:
	case lostWrite(err):
		s.fail(fmt.Errorf("sqlite: %s: %w", what, err), what)
	default:
		s.logger.Warn("sqlite: "+what, logKeyErr, err)
	}
}

// lostWrite reports whether err is SQLite's report of a sync or a write of
// the database's files that failed: what reached the disk is unknown. A
// lock, shared-memory or allocation failure (IOERR_LOCK, _SHMMAP, _NOMEM)
// is transient and says nothing of that.
func lostWrite(err error) bool {
	var e *msqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code() {
	case sqlite3.SQLITE_IOERR_FSYNC, sqlite3.SQLITE_IOERR_DIR_FSYNC, sqlite3.SQLITE_IOERR_WRITE, sqlite3.SQLITE_IOERR_TRUNCATE:
		return true
	}
	return false
}

// fileCheckEvery is how often at most the writer checks that the database
// path still names the file it writes (checkFile).
const fileCheckEvery = time.Second

// checkFile fails the store (fail) when the database file was removed or
// replaced under it (rm, or a restored copy moved over it): its writes
// would go on into a file that no restart reads, and be lost (a tester's
// 5 acknowledged writes were, and the restart generated new
// credentials). It runs on the writer, at most every fileCheckEvery.
func (s *Store) checkFile() {
	now := time.Now()
	if now.Sub(s.fileChecked) < fileCheckEvery {
		return
	}
	s.fileChecked = now
	s.checkFileNow()
}

// checkFileNow is checkFile's check, unpaced; any goroutine may call it
// (Ping does, so that /readyz fails without waiting for a write).
func (s *Store) checkFileNow() {
	if s.dbFile == nil {
		return
	}
	fi, err := os.Stat(s.path)
	switch {
	case err == nil && os.SameFile(fi, s.dbFile):
		return
	case errors.Is(err, os.ErrNotExist):
		s.fail(fmt.Errorf("sqlite: the database file %s was removed under the running server", s.path), "the database file check")
	case err == nil:
		s.fail(fmt.Errorf("sqlite: the database file %s was replaced under the running server", s.path), "the database file check")
	}
}

// fail makes cause, a failure that leaves the durability of the
// database's files unknown, the store's sticky error (syncErr): from now
// on writes and durable-waits fail with 503, until a restart lets SQLite
// recover the files from what is on the disk. It returns the sticky
// error, the first one's if several failed.
func (s *Store) fail(cause error, what string) error {
	err := error(chorus.Wrap(chorus.ErrUnavailable, cause))
	if s.syncErr.CompareAndSwap(nil, &err) {
		s.logger.Error("sqlite: "+what+" failed; the store refuses writes until the server is restarted (with the disk fixed)", logKeyErr, cause)
		s.wakeDurable() // durable-waiters see it
	}
	return *s.syncErr.Load()
}
