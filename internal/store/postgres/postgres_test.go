package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/storetest"
	"github.com/jackc/pgx/v5"
)

// defaultTestDSN is the server of the test machine (trust auth).
const defaultTestDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// testDSN is the DSN of the test server: $CHORUS_TEST_POSTGRES or the
// default.
func testDSN() string {
	if dsn := os.Getenv("CHORUS_TEST_POSTGRES"); dsn != "" {
		return dsn
	}
	return defaultTestDSN
}

// adminConn connects to the test server, failing t (never skipping) when
// the server is unreachable.
func adminConn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, testDSN())
	if err != nil {
		t.Fatalf("PostgreSQL is unreachable: %v\n"+
			"The postgres tests need a server: set CHORUS_TEST_POSTGRES (default %s),\n"+
			"or start the local one: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
			err, defaultTestDSN)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// endLockSession terminates the server session of lock l, as a database
// restart or a network cut would, and returns its backend's pid.
func endLockSession(t testing.TB, l *sessionLock) uint32 {
	t.Helper()
	l.mu.Lock() // the Store's keepers use l too
	pid := l.conn.PgConn().PID()
	l.mu.Unlock()
	var killed bool
	if err := adminConn(t).QueryRow(context.Background(), "SELECT pg_terminate_backend($1)", pid).Scan(&killed); err != nil || !killed {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, killed, err)
	}
	return pid
}

// newSchema creates an empty schema chorus_test_<random>, dropped when the
// test ends, and returns the test DSN with it as search_path.
func newSchema(t testing.TB) string {
	t.Helper()
	admin := adminConn(t)
	var b [6]byte
	rand.Read(b[:])
	schema := "chorus_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(context.Background(), "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("CREATE SCHEMA %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("DROP SCHEMA %s: %v", schema, err)
		}
	})
	return withSearchPath(t, testDSN(), schema)
}

// withSearchPath sets the search_path of dsn (a URL or key=value string);
// pgx passes it to the server as a runtime parameter.
func withSearchPath(t testing.TB, dsn, schema string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("parse CHORUS_TEST_POSTGRES: %v", err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " search_path=" + schema
}

// openDSN opens a store on dsn, closed when the test ends.
func openDSN(t testing.TB, dsn string, cfg Config) *Store {
	t.Helper()
	s, err := OpenConfig(context.Background(), dsn, cfg, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// open opens a store on a fresh schema.
func open(t testing.TB, cfg Config) *Store {
	t.Helper()
	return openDSN(t, newSchema(t), cfg)
}

func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"batch", Config{}},
		{"nobatch", Config{NoBatch: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			storetest.Run(t, func(t testing.TB) chorus.Store { return open(t, tt.cfg) })
		})
	}
}

func TestSessionSettings(t *testing.T) {
	// The DSN asks for asynchronous commit; the store overrides it.
	dsn := newSchema(t)
	dsn += "&synchronous_commit=off"
	s := openDSN(t, dsn, Config{})
	ctx := context.Background()
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	var sc string
	if err := c.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sc); err != nil {
		t.Fatal(err)
	}
	if sc != "on" {
		t.Errorf("SHOW synchronous_commit = %q, want on", sc)
	}
	if got := s.Schema(); !strings.HasPrefix(got, "chorus_test_") {
		t.Errorf("Schema() = %q, want the test schema", got)
	}
}

func TestUpdatePanic(t *testing.T) {
	for _, cfg := range []Config{{}, {NoBatch: true}} {
		s := open(t, cfg)
		func() {
			defer func() {
				if p := recover(); p != "boom" {
					t.Errorf("recover() = %v, want boom", p)
				}
			}()
			_ = s.Update(context.Background(), func(chorus.Tx) error { panic("boom") })
		}()
		if err := s.Update(context.Background(), func(chorus.Tx) error { return nil }); err != nil {
			t.Errorf("Update after a panic = %v, want nil", err)
		}
	}
}

func TestTxAfterUpdate(t *testing.T) {
	s := open(t, Config{})
	var leaked chorus.Tx
	if err := s.Update(context.Background(), func(tx chorus.Tx) error { leaked = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := leaked.Accounts(context.Background()); err == nil {
		t.Errorf("Accounts on a finished tx = nil error, want one")
	}
}

func TestViewIsReadOnly(t *testing.T) {
	s := open(t, Config{})
	err := s.View(context.Background(), func(rtx chorus.ReadTx) error {
		tx, ok := rtx.(chorus.Tx)
		if !ok {
			return nil
		}
		return tx.PutAccount(context.Background(), &chorus.Account{SID: "AC1"})
	})
	if err == nil {
		t.Errorf("write through View = nil error, want one")
	}
}

func TestClosed(t *testing.T) {
	s := open(t, Config{})
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	ctx := context.Background()
	tests := []struct {
		name string
		err  error
	}{
		{"Close", s.Close()},
		{"Update", s.Update(ctx, func(chorus.Tx) error { return nil })},
		{"View", s.View(ctx, func(chorus.ReadTx) error { return nil })},
		{"Ping", s.Ping(ctx)},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", tt.name, tt.err)
		}
	}
	if s.Leader(ctx) {
		t.Errorf("Leader after Close = true, want false")
	}
}

// TestSwallowedStatementError checks that an Update whose fn ignores a
// failed statement (which aborts the transaction in PostgreSQL) fails
// alone, without spoiling the requests batched with it.
func TestSwallowedStatementError(t *testing.T) {
	for _, cfg := range []Config{{}, {NoBatch: true}} {
		t.Run(fmt.Sprintf("nobatch=%t", cfg.NoBatch), func(t *testing.T) {
			s := open(t, cfg)
			ctx := context.Background()
			const n = 16
			accs := make([]*chorus.Account, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				accs[i] = &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), DateCreated: time.Now()}
				wg.Go(func() {
					errs[i] = s.Update(ctx, func(tx chorus.Tx) error {
						if err := tx.PutAccount(ctx, accs[i]); err != nil {
							return err
						}
						if i%2 == 1 {
							// An item of a missing object: a foreign key violation.
							_ = tx.PutItem(ctx, &chorus.Item{Kind: chorus.KindMap, ObjectSID: chorus.NewSID(chorus.PrefixMap), Key: "k"})
						}
						return nil
					})
				})
			}
			wg.Wait()
			for i, err := range errs {
				var got *chorus.Account
				verr := s.View(ctx, func(tx chorus.ReadTx) error {
					var err error
					got, err = tx.Account(ctx, accs[i].SID)
					return err
				})
				if i%2 == 1 {
					if err == nil {
						t.Errorf("Update %d (swallowed a failed statement) = nil, want an error", i)
					}
					if !errors.Is(verr, chorus.ErrNotFound) {
						t.Errorf("Account of failed Update %d: %v, want ErrNotFound", i, verr)
					}
					continue
				}
				if err != nil || verr != nil || got == nil {
					t.Errorf("Update %d = %v, Account = %v; want both nil", i, err, verr)
				}
			}
		})
	}
}

func TestUpdateObjectNameClash(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	a := newDoc(t, s)
	b := *a
	b.SID = chorus.NewSID(chorus.PrefixDocument)
	a.UniqueName, b.UniqueName = "one", "two"
	err := s.Update(ctx, func(tx chorus.Tx) error {
		return errors.Join(tx.UpdateObject(ctx, a), tx.InsertObject(ctx, &b))
	})
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	err = s.Update(ctx, func(tx chorus.Tx) error {
		clash := b
		clash.UniqueName = "one"
		if err := tx.UpdateObject(ctx, &clash); !errors.Is(err, chorus.ErrUniqueNameExists) {
			return fmt.Errorf("UpdateObject(rename onto a taken name) = %v, want ErrUniqueNameExists", err)
		}
		// The transaction goes on: keeping one's own name, then a free one.
		b.Revision = 5
		if err := tx.UpdateObject(ctx, &b); err != nil {
			return fmt.Errorf("UpdateObject(same name) = %v, want nil", err)
		}
		b.UniqueName = "three"
		return tx.UpdateObject(ctx, &b)
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	err = s.View(ctx, func(tx chorus.ReadTx) error {
		got, err := tx.ObjectByName(ctx, chorus.KindDocument, b.ServiceSID, "three")
		if err != nil {
			return err
		}
		if got.SID != b.SID || got.Revision != 5 {
			t.Errorf("ObjectByName(three) = %s rev %d, want %s rev 5", got.SID, got.Revision, b.SID)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
}
