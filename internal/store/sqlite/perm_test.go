package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
)

// TestFileModes: in an existing 0755 directory, even with umask 0, the
// database and its -wal and -shm files are 0600; an existing 0644 database
// is narrowed; a directory Open creates is 0700.
func TestFileModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)

	dir := filepath.Join(t.TempDir(), "existing")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "chorus.db")
	s := openPath(t, path)
	ctx := context.Background()
	err := s.Update(ctx, func(tx chorus.Tx) error {
		return tx.PutAccount(ctx, &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), AuthToken: "secret"})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(p), err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s mode = %o, want 600", filepath.Base(p), m)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o755 {
		t.Errorf("existing directory mode = %o, want it left at 755", fi.Mode().Perm())
	}
	s.Close()

	// A database an older version left 0644 (and its WAL) is narrowed.
	os.Chmod(path, 0o644)
	if _, err := os.Stat(path + "-wal"); err == nil {
		os.Chmod(path+"-wal", 0o644)
	}
	openPath(t, path)
	for _, p := range []string{path, path + "-wal"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm() != 0o600 {
			t.Errorf("reopened %s mode = %o, want 600", filepath.Base(p), fi.Mode().Perm())
		}
	}

	// A new directory is 0700.
	fresh := filepath.Join(t.TempDir(), "new", "data")
	st, err := sqlite.Open(ctx, filepath.Join(fresh, "chorus.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode = %o, want 700", fi.Mode().Perm())
	}
}
