package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
	msqlite "modernc.org/sqlite" // also registers the "sqlite" database/sql driver
)

var _ chorus.Store = (*Store)(nil)

const (
	// maxBatch caps how many Update requests share one transaction.
	maxBatch = 256
	// maxLinger bounds how long the writer waits to fill a batch.
	maxLinger = 500 * time.Microsecond
	// queueLen is the capacity of the writer's request queue.
	queueLen = 1024
	// busyTimeoutMS is how long a connection waits for a lock held by
	// another process (in-process writes never contend: one writer).
	busyTimeoutMS = 10000
)

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

	wdb     *sql.DB // one connection: the writer's
	rdb     *sql.DB // the readers' pool
	writer  *conn
	readers chan *conn
	nreader int

	// Writer statistics, for tests and benchmarks.
	statBatches, statRequests, statCommitNanos atomic.Int64

	mu     sync.RWMutex // guards closed and sends on queue
	closed bool
	queue  chan *request
	done   chan struct{} // closed when the writer goroutine exits
}

// Request states.
const (
	stateQueued int32 = iota
	stateRunning
	stateCanceled
)

// request is one Update waiting for the writer.
type request struct {
	ctx   context.Context
	fn    func(chorus.Tx) error
	state atomic.Int32
	err   error
	panic any
	done  chan struct{}
}

// Open opens (creating if needed) the database file at path, with its
// parent directory, and brings its schema up to date. A nil logger means
// slog.Default().
func Open(ctx context.Context, path string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if path == "" {
		return nil, errors.New("sqlite: open: empty path")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("sqlite: open %s: create directory: %w", path, err)
		}
	}
	s := &Store{
		path:    path,
		logger:  logger.With(logKeyPath, path),
		nreader: max(4, runtime.GOMAXPROCS(0)),
		queue:   make(chan *request, queueLen),
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
	go s.writeLoop()
	return s, nil
}

// dsn builds the connection string of modernc.org/sqlite.
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
	}
	u := url.URL{Scheme: "file", Opaque: (&url.URL{Path: path}).EscapedPath(), RawQuery: q.Encode()}
	return u.String()
}

func (s *Store) open(ctx context.Context) error {
	var err error
	// The writer first: it creates the file, switches it to WAL and
	// migrates before any reader looks at the schema.
	if s.wdb, err = sql.Open("sqlite", dsn(s.path, false)); err != nil {
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

	if s.rdb, err = sql.Open("sqlite", dsn(s.path, true)); err != nil {
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
	if s.writer != nil {
		errs = append(errs, s.writer.close())
	}
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	if s.wdb != nil {
		errs = append(errs, s.wdb.Close())
	}
	return errors.Join(errs...)
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// Close finishes every queued Update, then closes the database. Calls
// after Close fail.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	close(s.queue)
	s.mu.Unlock()
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

// Ping checks that a reader connection answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.View(ctx, func(chorus.ReadTx) error { return nil })
}

// View runs fn in a read transaction on a reader connection.
func (s *Store) View(ctx context.Context, fn func(chorus.ReadTx) error) (err error) {
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
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
	if _, err := c.exec(ctx, "BEGIN"); err != nil {
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
	defer t.finish()
	return fn(t)
}

// Update queues fn for the writer and waits until its batch is committed.
// If ctx is done before fn starts, fn does not run and Update returns
// ctx.Err(). A panic in fn is re-raised in the caller's goroutine.
func (s *Store) Update(ctx context.Context, fn func(chorus.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &request{ctx: ctx, fn: fn, done: make(chan struct{})}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.queue <- r:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		if r.state.CompareAndSwap(stateQueued, stateCanceled) {
			return ctx.Err()
		}
		<-r.done // fn runs or ran: its outcome is the answer
	}
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

// writeLoop is the writer goroutine: it takes everything queued, runs it as
// one batch, and repeats until Close closes the queue and it is drained.
//
// Batches grow to the number of concurrent writers: callers answered by a
// commit usually come straight back, so before running a batch the writer
// waits briefly (a quarter of the last commit's time, at most maxLinger)
// for as many requests as were in flight when it last answered. With one
// writer it never waits.
func (s *Store) writeLoop() {
	defer close(s.done)
	batch := make([]*request, 0, maxBatch)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	target := 1                  // requests in flight at the last answer
	var lastCommit time.Duration // duration of the last batch's commit
	for {
		r, ok := <-s.queue
		if !ok {
			return
		}
		batch = append(batch[:0], r)
		open := true
		waited := false
	gather:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-s.queue:
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
				case r, ok := <-s.queue:
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
		target = min(len(batch)+len(s.queue), maxBatch)
		clear(batch)
		if !open {
			return
		}
	}
}

// Savepoint statements; one name suffices as requests never nest.
const (
	sqlSavepoint  = "SAVEPOINT req"
	sqlRelease    = "RELEASE req"
	sqlRollbackTo = "ROLLBACK TO req"
)

// runBatch runs the requests of one batch in one transaction and answers
// each of them.
func (s *Store) runBatch(batch []*request) {
	// Claim the requests whose callers still wait; answer the others.
	run := batch[:0:0]
	for _, r := range batch {
		if !r.state.CompareAndSwap(stateQueued, stateRunning) {
			continue // canceled: Update already returned
		}
		if err := r.ctx.Err(); err != nil {
			r.err = err
			close(r.done)
			continue
		}
		run = append(run, r)
	}
	if len(run) == 0 {
		return
	}
	ctx := context.Background() // never interrupt a statement of a shared transaction
	w := s.writer
	failAll := func(err error) {
		s.logger.Error("sqlite: write batch failed", logKeyBatch, len(run), logKeyErr, err)
		for _, r := range run {
			if r.err == nil && r.panic == nil {
				r.err = err
			}
			close(r.done)
		}
	}
	if _, err := w.exec(ctx, "BEGIN IMMEDIATE"); err != nil {
		failAll(fmt.Errorf("sqlite: update: begin: %w", err))
		return
	}
	ok := 0 // requests whose writes are in the transaction
	if len(run) == 1 {
		// Alone in the batch: the transaction is the request's unit.
		r := run[0]
		s.runFn(r)
		if r.err != nil || r.panic != nil {
			if _, err := w.exec(ctx, "ROLLBACK"); err != nil {
				s.logger.Error("sqlite: rollback failed", logKeyErr, err)
			}
			close(r.done)
			return
		}
		ok = 1
	} else {
		for _, r := range run {
			if _, err := w.exec(ctx, sqlSavepoint); err != nil {
				s.abort(ctx)
				failAll(fmt.Errorf("sqlite: update: savepoint: %w", err))
				return
			}
			s.runFn(r)
			if r.err != nil || r.panic != nil {
				if _, err := w.exec(ctx, sqlRollbackTo); err != nil {
					s.abort(ctx)
					failAll(fmt.Errorf("sqlite: update: rollback to savepoint: %w", err))
					return
				}
			} else {
				ok++
			}
			if _, err := w.exec(ctx, sqlRelease); err != nil {
				s.abort(ctx)
				failAll(fmt.Errorf("sqlite: update: release savepoint: %w", err))
				return
			}
		}
	}
	s.statBatches.Add(1)
	s.statRequests.Add(int64(len(run)))
	start := time.Now()
	if ok == 0 {
		s.abort(ctx)
	} else if _, err := w.exec(ctx, "COMMIT"); err != nil {
		s.abort(ctx)
		failAll(fmt.Errorf("sqlite: update: commit: %w", err))
		return
	}
	s.statCommitNanos.Add(int64(time.Since(start)))
	for _, r := range run {
		close(r.done)
	}
}

// runFn runs one request's fn on the writer connection, catching a panic.
func (s *Store) runFn(r *request) {
	t := &tx{c: s.writer, write: true}
	defer func() {
		t.finish()
		if p := recover(); p != nil {
			r.panic = p
		}
	}()
	r.err = r.fn(t)
}

// abort rolls the writer's transaction back, if one is open.
func (s *Store) abort(ctx context.Context) {
	if _, err := s.writer.exec(ctx, "ROLLBACK"); err != nil {
		s.logger.Debug("sqlite: rollback", logKeyErr, err)
	}
}
