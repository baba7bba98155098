package postgres

import (
	"context"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/testrelay"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// holdRowLock locks doc's row from a session of its own inside a
// transaction that stays open until the test ends, as a node frozen in
// the middle of a write would (its session sets no timeouts).
func holdRowLock(t *testing.T, dsn string, doc *chorus.Object) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "SELECT 1 FROM objects WHERE sid = $1 FOR UPDATE", doc.SID); err != nil {
		t.Fatal(err)
	}
}

// isLockedError reports whether err is the Store's answer to a lock wait
// that timed out: a 503 that says the resource is locked.
func isLockedError(err error) bool {
	return errors.Is(err, chorus.ErrUnavailable) && strings.Contains(chorus.AsError(err).Message, "locked")
}

// TestLockedRowDoesNotFailItsBatch: a row locked by a stalled session
// fails the writes to it, and only those. The write to the locked
// document opens a batch of 10 writes to another document: with the
// sessions' lock_timeout it gives up after TxTimeout/4 with a clear error
// and the 10 commit; with lock_timeout off (the DSN's choice) it runs
// into TxTimeout, which loses the transaction, and the 10, which never
// ran, go to the next batch rather than fail with it.
func TestLockedRowDoesNotFailItsBatch(t *testing.T) {
	const txTimeout = 2 * time.Second
	for _, tt := range []struct {
		name      string
		dsnParams string
		nobatch   bool
		wantErr   func(error) bool
		maxWait   time.Duration // for the write to the locked document
	}{
		{"lock_timeout", "", false, isLockedError, txTimeout / 2},
		{"lock_timeout/nobatch", "", true, isLockedError, txTimeout / 2},
		{"no lock_timeout", "&lock_timeout=0", false, func(err error) bool { return errors.Is(err, chorus.ErrUnavailable) }, 2 * txTimeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dsn := newSchema(t)
			s := openDSN(t, dsn+tt.dsnParams, Config{Writers: 1, NoBatch: tt.nobatch, TxTimeout: txTimeout})
			locked, other := newDoc(t, s), newDoc(t, s)
			holdRowLock(t, dsn, locked)
			ctx := context.Background()

			// Keep the only writer busy until both writes are queued,
			// the locked document's first: they make one batch.
			started, release := make(chan struct{}), make(chan struct{})
			go func() {
				_ = s.Update(ctx, func(chorus.Tx) error {
					close(started)
					<-release
					return nil
				})
			}()
			<-started
			type result struct {
				err  error
				took time.Duration
			}
			update := func(doc *chorus.Object, res chan<- result) {
				start := time.Now()
				err := s.Update(ctx, func(tx chorus.Tx) error { return bump(ctx, tx, doc) })
				res <- result{err, time.Since(start)}
			}
			waitQueued := func(n int) {
				if tt.nobatch {
					time.Sleep(50 * time.Millisecond)
					return
				}
				for s.queue.Len() < n {
					time.Sleep(time.Millisecond)
				}
			}
			lockedRes := make(chan result, 1)
			go update(locked, lockedRes)
			waitQueued(1)
			const others = 10
			otherRes := make(chan result, others)
			for range others {
				go update(other, otherRes)
			}
			waitQueued(1 + others)
			close(release)

			r := <-lockedRes
			if !tt.wantErr(r.err) {
				t.Errorf("write to the locked document = %v, want a 503 that says it is locked", r.err)
			}
			if r.took > tt.maxWait {
				t.Errorf("write to the locked document failed after %v, want at most %v", r.took, tt.maxWait)
			}
			t.Logf("write to the locked document failed after %v: %v", r.took.Round(time.Millisecond), r.err)
			var slowest time.Duration
			for range others {
				r := <-otherRes
				if r.err != nil {
					t.Errorf("write to another document of the batch = %v, want nil", r.err)
				}
				slowest = max(slowest, r.took)
			}
			t.Logf("the %d other writes took at most %v", others, slowest.Round(time.Millisecond))
			checkBumped(t, s, other, others)
			checkBumped(t, s, locked, 0)
		})
	}
}

// TestStalledSessionEnded: a node frozen inside a write transaction (here:
// a pooled connection that began one, locked a document and went quiet)
// loses its session after idle_in_transaction_session_timeout, 2×TxTimeout,
// and with it the lock: another node's writes to the document, failing
// fast meanwhile, succeed again.
func TestStalledSessionEnded(t *testing.T) {
	const txTimeout = time.Second
	dsn := newSchema(t)
	frozen := openDSN(t, dsn, Config{TxTimeout: txTimeout})
	live := openDSN(t, dsn, Config{TxTimeout: txTimeout})
	doc := newDoc(t, live)
	ctx := context.Background()

	c, err := frozen.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "SELECT 1 FROM objects WHERE sid = $1 FOR UPDATE", doc.SID); err != nil {
		t.Fatal(err)
	}
	pid := c.Conn().PgConn().PID()
	start := time.Now()

	failures := 0
	for {
		err := live.Update(ctx, func(tx chorus.Tx) error { return bump(ctx, tx, doc) })
		if err == nil {
			break
		}
		if !isLockedError(err) {
			t.Fatalf("write while the frozen session holds the lock = %v, want a 503 that says it is locked", err)
		}
		failures++
		if time.Since(start) > 4*txTimeout {
			t.Fatalf("the document is still locked %v after its session went idle in its transaction", time.Since(start))
		}
	}
	t.Logf("the write succeeded %v after the session froze (%d failed before)", time.Since(start).Round(time.Millisecond), failures)
	if failures == 0 {
		t.Errorf("the first write succeeded at once: the lock was not held")
	}
	var alive bool
	if err := adminConn(t).QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", pid).Scan(&alive); err != nil {
		t.Fatal(err)
	}
	if alive {
		t.Errorf("the frozen session (pid %d) is still there", pid)
	}
	checkBumped(t, live, doc, 1)
}

func TestSessionTimeouts(t *testing.T) {
	show := func(t *testing.T, s *Store) map[string]string {
		t.Helper()
		ctx := context.Background()
		c, err := s.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
		got := map[string]string{}
		for _, k := range []string{"lock_timeout", "idle_in_transaction_session_timeout",
			"tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count"} {
			var v string
			if err := c.QueryRow(ctx, "SHOW "+k).Scan(&v); err != nil {
				t.Fatal(err)
			}
			got[k] = v
		}
		return got
	}
	check := func(t *testing.T, got, want map[string]string) {
		t.Helper()
		for k, v := range want {
			if got[k] != v {
				t.Errorf("SHOW %s = %q, want %q", k, got[k], v)
			}
		}
	}
	// Open's migration lifts lock_timeout on the pool's first connection
	// and must put it back.
	t.Run("defaults", func(t *testing.T) {
		check(t, show(t, open(t, Config{MaxConns: 1})), map[string]string{
			"lock_timeout": "2500ms", "idle_in_transaction_session_timeout": "20s",
			"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3",
		})
		check(t, show(t, open(t, Config{MaxConns: 1, TxTimeout: 2 * time.Second})), map[string]string{
			"lock_timeout": "500ms", "idle_in_transaction_session_timeout": "4s",
		})
	})
	t.Run("dsn", func(t *testing.T) {
		s := openDSN(t, newSchema(t)+"&lock_timeout=7s&tcp_keepalives_idle=60&idle_in_transaction_session_timeout=0",
			Config{MaxConns: 1})
		check(t, show(t, s), map[string]string{
			"lock_timeout": "7s", "idle_in_transaction_session_timeout": "0", "tcp_keepalives_idle": "60",
			"tcp_keepalives_interval": "5",
		})
	})
}

// TestSingleNodeLock: one Store per schema holds the single-node lock,
// until it closes or its session dies; leadership is another lock.
func TestSingleNodeLock(t *testing.T) {
	ctx := context.Background()
	dsn := newSchema(t)
	a, b := openDSN(t, dsn, Config{}), openDSN(t, dsn, Config{})
	if err := a.LockSingleNode(ctx); err != nil {
		t.Fatalf("LockSingleNode = %v, want nil", err)
	}
	if err := a.LockSingleNode(ctx); err != nil {
		t.Errorf("LockSingleNode again = %v, want nil", err)
	}
	err := b.LockSingleNode(ctx)
	if !errors.Is(err, ErrSingleNodeInUse) {
		t.Fatalf("LockSingleNode of a second store = %v, want ErrSingleNodeInUse", err)
	}
	t.Logf("second store: %v", err)
	if !a.Leader(ctx) && !b.Leader(ctx) {
		t.Errorf("no leader while one store holds the single-node lock")
	}
	// Another schema is another deployment.
	if err := open(t, Config{}).LockSingleNode(ctx); err != nil {
		t.Errorf("LockSingleNode in another schema = %v, want nil", err)
	}

	// Close releases it.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.LockSingleNode(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("LockSingleNode after Close = %v, want ErrClosed", err)
	}
	if err := b.LockSingleNode(ctx); err != nil {
		t.Fatalf("LockSingleNode after the holder closed = %v, want nil", err)
	}

	// A dead process's session ends, and its lock with it.
	c := openDSN(t, dsn, Config{})
	if err := c.LockSingleNode(ctx); !errors.Is(err, ErrSingleNodeInUse) {
		t.Fatalf("LockSingleNode of a third store = %v, want ErrSingleNodeInUse", err)
	}
	endLockSession(t, &b.single)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.LockSingleNode(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("LockSingleNode 10s after the holder's session died = %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFrozenLeaderIsReplaced: a leader whose process stops (here its
// connections stall: nothing it sends reaches the server, as under
// SIGSTOP) loses its lock within about its lease, and another Store takes
// over; a live leader keeps it however rarely Leader is called, and a
// resumed one finds it lost.
func TestFrozenLeaderIsReplaced(t *testing.T) {
	ctx := context.Background()
	dsn := newSchema(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	relay := testrelay.New(t, u.Host)
	cfg := Config{LeaderLease: time.Second, ConnectTimeout: time.Second}
	a := openDSN(t, viaProxy(t, dsn, relay.Addr), cfg)
	b := openDSN(t, dsn, cfg)
	if !a.Leader(ctx) {
		t.Fatal("the first store to ask is not the leader")
	}
	// Alive, a keeps its lock for three leases without calling Leader.
	for end := time.Now().Add(3 * cfg.LeaderLease); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if b.Leader(ctx) {
			t.Fatal("another store took the lead from a live leader")
		}
	}

	relay.Stall()
	frozen := time.Now()
	for !b.Leader(ctx) {
		if time.Since(frozen) > 10*cfg.LeaderLease {
			t.Fatalf("no other leader %v after the leader froze, with a lease of %v", time.Since(frozen), cfg.LeaderLease)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("another store leads %v after the leader froze", time.Since(frozen).Round(time.Millisecond))

	relay.Resume()
	if a.Leader(ctx) {
		t.Error("the resumed leader still leads, beside the one that took over")
	}
	if !b.Leader(ctx) {
		t.Error("the store that took over no longer leads")
	}
}

// TestCommitUnknown: a COMMIT's error says its outcome is unknown only when
// the COMMIT may have reached the server and its answer was lost: not when
// the server answered it (an error, a rollback) or never got it.
func TestCommitUnknown(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection lost", io.ErrUnexpectedEOF, true},
		{"server error", &pgconn.PgError{Code: "40001"}, false},
		{"rolled back", errCommitRolledBack, false},
	} {
		if got := errors.Is((&Store{}).commitUnknown(tc.err, nil), chorus.ErrCommitUnknown); got != tc.want {
			t.Errorf("%s: unknown = %t, want %t", tc.name, got, tc.want)
		}
	}
}

// TestSingleNodeLockTakenAgain: a node without a bus whose lock session is
// lost (a database restart, a terminated backend) takes the lock again, so
// that a second such node is still refused; an operator's restart of
// PostgreSQL let a second node start and serve beside the first.
func TestSingleNodeLockTakenAgain(t *testing.T) {
	ctx := context.Background()
	dsn := newSchema(t)
	a, b := openDSN(t, dsn, Config{SingleNodeCheck: 50 * time.Millisecond}), openDSN(t, dsn, Config{})
	if err := a.LockSingleNode(ctx); err != nil {
		t.Fatalf("LockSingleNode = %v, want nil", err)
	}
	waitRetaken(t, a, endLockSession(t, &a.single))
	if err := b.LockSingleNode(ctx); !errors.Is(err, ErrSingleNodeInUse) {
		t.Fatalf("LockSingleNode of a second store after the first's session was lost = %v, want ErrSingleNodeInUse", err)
	}
}

// TestLostCommitSettles: Settle waits until the backend that ran a COMMIT
// whose answer was lost has ended (it asks the server to end it), so that
// a read after it sees whether the transaction committed; a reviewer's
// slow COMMIT committed 3 s after a read had called it not made.
func TestLostCommitSettles(t *testing.T) {
	ctx := context.Background()
	s := open(t, Config{})
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	lost := s.commitUnknown(io.ErrUnexpectedEOF, c.Conn())
	var settler chorus.CommitSettler
	if !errors.As(lost, &settler) || !errors.Is(lost, chorus.ErrCommitUnknown) {
		t.Fatalf("commitUnknown = %v, want a chorus.CommitSettler wrapping ErrCommitUnknown", lost)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !settler.Settle(sctx) {
		t.Fatal("Settle = false while the server answers")
	}
	var one int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err == nil {
		t.Error("the backend that ran the COMMIT still answers after Settle")
	}
	down, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	if (&lostCommit{s: s}).Settle(down) {
		t.Error("Settle without a backend to wait for = true, want false (unknown)")
	}
}

// TestSingleNodeEndsItsOwnStaleLock: after a network failure the server
// may keep this node's old lock session (it has not seen the connection
// close) while the node reconnects: the lock is held, by the node itself.
// The node ends that session and takes the lock again, rather than stop
// for "another node" (a reviewer's 13 s network cut stopped a lone node).
func TestSingleNodeEndsItsOwnStaleLock(t *testing.T) {
	ctx := context.Background()
	dsn := newSchema(t)
	a := openDSN(t, dsn, Config{SingleNodeCheck: 50 * time.Millisecond, SingleNodeGrace: time.Minute})
	if err := a.LockSingleNode(ctx); err != nil {
		t.Fatal(err)
	}
	// The node loses its lock connection; the server keeps the session.
	stale := detachLockConn(a)
	stalePID := stale.PgConn().PID()
	defer stale.Close(context.Background())

	waitRetaken(t, a, stalePID)
	if err := stale.Ping(ctx); err == nil {
		t.Error("the stale session still answers: it was not ended")
	}

	// The lock is taken again on a new connection, and the answer lost:
	// the server has granted it to a session the node never heard from.
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = a.single.app
	lost, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer lost.Close(context.Background())
	// Under a's lock mutex, so that its checks cannot take the lock back
	// between the close and the grant.
	a.single.mu.Lock()
	own := a.single.conn
	a.single.conn, a.single.held = nil, false
	own.Close(ctx)
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	var got bool
	err = lost.QueryRow(lctx, "SELECT pg_advisory_lock($1) IS NOT NULL", a.single.key).Scan(&got)
	cancel()
	a.single.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	waitRetaken(t, a, lost.PgConn().PID())
	if err := lost.Ping(ctx); err == nil {
		t.Error("the session whose grant was lost still answers: it was not ended")
	}
}

// detachLockConn takes a's single-node lock connection away from it, as a
// lost connection would, and returns it: the caller decides whether the
// server's session lives on (kept open) or ends (closed).
func detachLockConn(a *Store) *pgx.Conn {
	a.single.mu.Lock()
	defer a.single.mu.Unlock()
	c := a.single.conn
	a.single.conn, a.single.held = nil, false
	return c
}

// waitRetaken waits until a holds its single-node lock again on a session
// other than pid's, failing if a reports the lock taken by another node.
func waitRetaken(t *testing.T, a *Store, pid uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a.single.mu.Lock()
		again := a.single.held && a.single.conn != nil && a.single.conn.PgConn().PID() != pid
		a.single.mu.Unlock()
		if again {
			break
		}
		select {
		case err := <-a.SingleNodeTaken():
			t.Fatalf("the node stopped for its own stale session: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the single-node lock was not taken again within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSingleNodeStopsAfterGrace: another session that holds the lock the
// node lost stops the node only once it has held it for SingleNodeGrace.
func TestSingleNodeStopsAfterGrace(t *testing.T) {
	ctx := context.Background()
	dsn := newSchema(t)
	const grace = time.Second
	// Checks far enough apart for the other to take the lock between two.
	a := openDSN(t, dsn, Config{SingleNodeCheck: 500 * time.Millisecond, SingleNodeGrace: grace})
	if err := a.LockSingleNode(ctx); err != nil {
		t.Fatal(err)
	}
	detachLockConn(a).Close(ctx) // lost, as after a restart: the server ends the session, the lock is free
	b := openDSN(t, dsn, Config{})
	var err error
	for range 20 { // the server ends the session at once; a checks again in 500 ms
		if err = b.LockSingleNode(ctx); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("the other store could not take the lock the node lost: %v", err)
	}
	start := time.Now()
	select {
	case err := <-a.SingleNodeTaken():
		if took := time.Since(start); took < grace-100*time.Millisecond {
			t.Errorf("stopped %v after the other took the lock, before the %v grace", took, grace)
		}
		if !errors.Is(err, ErrSingleNodeInUse) {
			t.Errorf("SingleNodeTaken = %v, want ErrSingleNodeInUse", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the node did not report its lock taken 10 s after another node took it")
	}
	// The other node's session was left alone.
	b.single.mu.Lock()
	held := b.single.held && b.single.conn != nil && b.single.conn.Ping(ctx) == nil
	b.single.mu.Unlock()
	if !held {
		t.Error("the other node's lock session was ended")
	}
}
