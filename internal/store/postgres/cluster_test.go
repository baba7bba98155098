package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

func TestMigrateConcurrent(t *testing.T) {
	dsn := newSchema(t)
	ctx := context.Background()
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = Migrate(ctx, dsn) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate #%d = %v, want nil", i, err)
		}
	}
	// Once more: nothing to do.
	if err := Migrate(ctx, dsn); err != nil {
		t.Errorf("Migrate(up to date) = %v, want nil", err)
	}
	s := openDSN(t, dsn, Config{})
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	var rows, maxVersion int
	if err := c.QueryRow(ctx, "SELECT count(*), max(version) FROM schema_migrations").Scan(&rows, &maxVersion); err != nil {
		t.Fatal(err)
	}
	if rows != len(migrations) || maxVersion != len(migrations) {
		t.Errorf("schema_migrations: %d rows up to version %d, want %d up to %d", rows, maxVersion, len(migrations), len(migrations))
	}
	// The schema works.
	acc := &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), DateCreated: time.Now()}
	if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.PutAccount(ctx, acc) }); err != nil {
		t.Errorf("Update after concurrent Migrate: %v", err)
	}

	// A schema newer than the binary is refused.
	if _, err := c.Exec(ctx, "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)", len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, dsn); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Migrate(newer schema) = %v, want a newer-version error", err)
	}
}

func TestMigrateMissingSchema(t *testing.T) {
	adminConn(t) // fail clearly if the server is down
	dsn := withSearchPath(t, testDSN(), "chorus_test_does_not_exist")
	if err := Migrate(context.Background(), dsn); err == nil || !strings.Contains(err.Error(), "chorus_test_does_not_exist") {
		t.Errorf("Migrate(missing schema) = %v, want an error naming the schema", err)
	}
}

// waitLeader polls until exactly one of stores is leader and returns it.
func waitLeader(t *testing.T, stores ...*Store) *Store {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var leaders []*Store
		for _, s := range stores {
			if s.Leader(context.Background()) {
				leaders = append(leaders, s)
			}
		}
		if len(leaders) > 1 {
			t.Fatalf("%d stores are leader at once, want 1", len(leaders))
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader among %d stores after 15s", len(stores))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestLeader(t *testing.T) {
	dsn := newSchema(t)
	a := openDSN(t, dsn, Config{})
	b := openDSN(t, dsn, Config{})
	// Another schema elects its own leader.
	other := open(t, Config{})
	if !other.Leader(context.Background()) {
		t.Errorf("Leader() of the only store of a schema = false, want true")
	}

	first := waitLeader(t, a, b)
	second := b
	if first == b {
		second = a
	}
	// Leadership is stable while the leader lives.
	for i := range 5 {
		if !first.Leader(context.Background()) || second.Leader(context.Background()) {
			t.Fatalf("round %d: leadership moved without a failure", i)
		}
	}
	// The leader goes away: the other takes over.
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := waitLeader(t, first, second); got != second {
		t.Errorf("leader after closing the first = the closed store, want the other")
	}
}

func TestLeaderReacquire(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	if !s.Leader(ctx) {
		t.Fatalf("Leader() = false, want true")
	}
	// Kill the leader's session, as a server restart or network cut would.
	pid := endLockSession(t, &s.leader)
	deadline := time.Now().Add(10 * time.Second)
	for !s.Leader(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("Leader() still false 10s after the lock's session died")
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.leader.mu.Lock()
	got := s.leader.conn.PgConn().PID()
	s.leader.mu.Unlock()
	if got == pid {
		t.Errorf("leader session pid = %d after it was killed, want a new session", got)
	}
}

// newDoc creates an account, a service and a document in s.
func newDoc(t testing.TB, s chorus.Store) *chorus.Object {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	acc := &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), DateCreated: now}
	svc := &chorus.Service{SID: chorus.NewSID(chorus.PrefixService), AccountSID: acc.SID, DateCreated: now, DateUpdated: now}
	doc := &chorus.Object{Kind: chorus.KindDocument, SID: chorus.NewSID(chorus.PrefixDocument),
		AccountSID: acc.SID, ServiceSID: svc.SID, Data: json.RawMessage(`{}`), DateCreated: now, DateUpdated: now}
	if err := s.Update(ctx, func(tx chorus.Tx) error {
		return errors.Join(tx.PutAccount(ctx, acc), tx.PutService(ctx, svc), tx.InsertObject(ctx, doc))
	}); err != nil {
		t.Fatalf("create document: %v", err)
	}
	return doc
}

// bump is one read-modify-write of a document: lock, increment, log.
func bump(ctx context.Context, tx chorus.Tx, doc *chorus.Object) error {
	return writeDocument(ctx, tx, doc, 0, nil)
}

func checkBumped(t *testing.T, s chorus.Store, doc *chorus.Object, want int64) {
	t.Helper()
	ctx := context.Background()
	if err := s.View(ctx, func(tx chorus.ReadTx) error {
		o, err := tx.Object(ctx, chorus.KindDocument, doc.ServiceSID, doc.SID)
		if err != nil {
			return err
		}
		if o.Revision != want || o.LastEventID != want {
			t.Errorf("%s: Revision = %d, LastEventID = %d, want %d", doc.SID, o.Revision, o.LastEventID, want)
		}
		events, err := tx.Events(ctx, doc.SID, 0, 0)
		if err != nil {
			return err
		}
		if int64(len(events)) != want {
			t.Errorf("%s: %d events, want %d", doc.SID, len(events), want)
		}
		for i, e := range events {
			if e.ID != int64(i+1) {
				t.Fatalf("%s: Events[%d].ID = %d, want %d", doc.SID, i, e.ID, i+1)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// TestTwoNodes runs read-modify-writes of one document from two Stores on
// one schema, as two nodes would: row locks must serialize them across
// stores (and across each store's writers) without losing an update.
func TestTwoNodes(t *testing.T) {
	dsn := newSchema(t)
	nodes := []*Store{openDSN(t, dsn, Config{}), openDSN(t, dsn, Config{NoBatch: true})}
	doc := newDoc(t, nodes[0])
	const workers, per = 16, 20
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		s := nodes[w%2]
		wg.Go(func() {
			for i := range per {
				err := s.Update(context.Background(), func(tx chorus.Tx) error {
					return bump(context.Background(), tx, doc)
				})
				if err != nil {
					errc <- fmt.Errorf("worker %d update %d: %w", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	checkBumped(t, nodes[1], doc, workers*per)
}

// TestDeadlockRetried makes two Updates on two Stores lock two documents
// in opposite orders, each waiting for the other to hold its first lock:
// a certain deadlock. PostgreSQL aborts one (40P01); the Store must re-run
// it rather than fail or lose it.
func TestDeadlockRetried(t *testing.T) {
	for _, cfg := range []Config{{}, {NoBatch: true}} {
		t.Run(fmt.Sprintf("nobatch=%t", cfg.NoBatch), func(t *testing.T) {
			dsn := newSchema(t)
			nodes := []*Store{openDSN(t, dsn, cfg), openDSN(t, dsn, cfg)}
			x, y := newDoc(t, nodes[0]), newDoc(t, nodes[0])
			var locked sync.WaitGroup
			locked.Add(2)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			runs := make([]int, 2)
			for w := range 2 {
				first, second := x, y
				if w == 1 {
					first, second = y, x
				}
				wg.Go(func() {
					ctx := context.Background()
					errs[w] = nodes[w].Update(ctx, func(tx chorus.Tx) error {
						runs[w]++
						if err := bump(ctx, tx, first); err != nil {
							return err
						}
						if runs[w] == 1 { // first run: wait until both hold a lock
							locked.Done()
							locked.Wait()
						}
						return bump(ctx, tx, second)
					})
				})
			}
			wg.Wait()
			for w, err := range errs {
				if err != nil {
					t.Errorf("Update %d = %v, want nil", w, err)
				}
			}
			if runs[0]+runs[1] < 3 {
				t.Errorf("fn runs = %v, want one of them re-run after the deadlock", runs)
			}
			checkBumped(t, nodes[0], x, 2)
			checkBumped(t, nodes[0], y, 2)
		})
	}
}
