package sqlite_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/store/storetest"
)

// open opens a store in a fresh temporary directory and closes it when the
// test ends.
func open(t testing.TB) *sqlite.Store {
	t.Helper()
	return openPath(t, filepath.Join(t.TempDir(), "chorus.db"))
}

func openPath(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, sqlite.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t testing.TB) chorus.Store { return open(t) })
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dir", "chorus.db")
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	acc := &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), AuthToken: "tok", DateCreated: time.Unix(0, 1_700_000_000_123_456_789)}
	if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.PutAccount(ctx, acc) }); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); !errors.Is(err, sqlite.ErrClosed) {
		t.Errorf("second Close() = %v, want ErrClosed", err)
	}
	if err := s.Update(ctx, func(chorus.Tx) error { return nil }); !errors.Is(err, sqlite.ErrClosed) {
		t.Errorf("Update after Close = %v, want ErrClosed", err)
	}

	s2 := openPath(t, path)
	var got *chorus.Account
	if err := s2.View(ctx, func(tx chorus.ReadTx) error {
		var err error
		got, err = tx.Account(ctx, acc.SID)
		return err
	}); err != nil {
		t.Fatalf("Account after reopen: %v", err)
	}
	// Nanoseconds survive (the shared suite only requires microseconds).
	if got.AuthToken != "tok" || !got.DateCreated.Equal(acc.DateCreated) {
		t.Errorf("Account after reopen = %+v, want %+v", got, acc)
	}
}

func TestOpenUnwritable(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
	}{
		{"parent is a file", filepath.Join(file, "chorus.db")},
		{"path is a directory", dir},
		{"empty", ""},
	}
	if os.Getuid() != 0 { // root ignores permissions
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		tests = append(tests, struct{ name, path string }{"read-only directory", filepath.Join(ro, "chorus.db")})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := sqlite.Open(context.Background(), tt.path, nil)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) = nil error, want one", tt.path)
			}
			t.Logf("Open(%q) = %v", tt.path, err)
		})
	}
}

func TestUpdatePanic(t *testing.T) {
	s := open(t)
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recover() = %v, want boom", p)
			}
		}()
		_ = s.Update(context.Background(), func(chorus.Tx) error { panic("boom") })
	}()
	// The writer survives.
	if err := s.Update(context.Background(), func(chorus.Tx) error { return nil }); err != nil {
		t.Errorf("Update after a panic = %v, want nil", err)
	}
}

func TestTxAfterUpdate(t *testing.T) {
	s := open(t)
	var leaked chorus.Tx
	if err := s.Update(context.Background(), func(tx chorus.Tx) error { leaked = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := leaked.Accounts(context.Background()); err == nil {
		t.Errorf("Accounts on a finished tx = nil error, want one")
	}
}

func TestViewIsReadOnly(t *testing.T) {
	s := open(t)
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

func TestCloseDrainsQueue(t *testing.T) {
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "chorus.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- s.Update(context.Background(), func(tx chorus.Tx) error {
				return tx.PutAccount(context.Background(), &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), DateCreated: time.Unix(int64(i), 0)})
			})
		}()
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ok := 0
	for range n {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, sqlite.ErrClosed):
		default:
			t.Errorf("Update during Close = %v, want nil or ErrClosed", err)
		}
	}
	s2 := openPath(t, s.Path())
	var accs []*chorus.Account
	if err := s2.View(context.Background(), func(tx chorus.ReadTx) error {
		var err error
		accs, err = tx.Accounts(context.Background())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(accs) != ok {
		t.Errorf("accounts after Close = %d, want %d (the Updates that returned nil)", len(accs), ok)
	}
}
