package sqlite

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestKeepFresh: while KeepFresh runs, its paths' modification times stay
// recent (a backup in use does not look abandoned); once stopped, they are
// left alone.
func TestKeepFresh(t *testing.T) {
	defer func(d time.Duration) { keepFreshEvery = d }(keepFreshEvery)
	keepFreshEvery = 20 * time.Millisecond
	dir := t.TempDir()
	file := filepath.Join(dir, "snapshot.db")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, p := range []string{dir, file} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	stop := KeepFresh(dir, file)
	time.Sleep(100 * time.Millisecond)
	stop()
	stop() // twice is fine
	for _, p := range []string{dir, file} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(fi.ModTime()) > time.Minute {
			t.Errorf("%s: modified %v ago while kept fresh", p, time.Since(fi.ModTime()))
		}
	}
	if err := os.Chtimes(file, old, old); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if fi, _ := os.Stat(file); time.Since(fi.ModTime()) < time.Hour {
		t.Error("KeepFresh touched the file after it was stopped")
	}
}

// TestBackupKeepsStagingFresh: Backup's staging directory looks in use
// (recently modified) while its checks run, however long they take.
func TestBackupKeepsStagingFresh(t *testing.T) {
	defer func(d time.Duration) { keepFreshEvery = d }(keepFreshEvery)
	keepFreshEvery = 20 * time.Millisecond
	defer func() { backupChecking = nil }()
	var age time.Duration
	backupChecking = func(stage string) {
		old := time.Now().Add(-2 * time.Hour)
		if err := os.Chtimes(stage, old, old); err != nil {
			t.Error(err)
		}
		time.Sleep(200 * time.Millisecond) // a long check writes nothing
		fi, err := os.Stat(stage)
		if err != nil {
			t.Error(err)
			return
		}
		age = time.Since(fi.ModTime())
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "chorus.db")
	st, err := Open(context.Background(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	out, err := os.Create(filepath.Join(t.TempDir(), "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := Backup(context.Background(), db, t.TempDir(), out); err != nil {
		t.Fatal(err)
	}
	if age > time.Minute {
		t.Errorf("the staging directory was last modified %v before the check ended: not kept fresh", age)
	}
}

// TestRestoreInterruptedIsNotABadBackup: a restore interrupted during its
// integrity check (Ctrl-C) says so; it blamed the file ("not a complete
// Chorus backup"), and an operator would have thrown a good backup away.
func TestRestoreInterruptedIsNotABadBackup(t *testing.T) {
	b, _ := newBackup(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Restore(ctx, bytes.NewReader(b.Bytes()), filepath.Join(t.TempDir(), "chorus.db"))
	if err == nil || errors.Is(err, ErrNotBackup) || !errors.Is(err, context.Canceled) {
		t.Errorf("Restore interrupted = %v, want context.Canceled and not ErrNotBackup", err)
	}
	if _, err := Restore(context.Background(), bytes.NewReader(b.Bytes()), filepath.Join(t.TempDir(), "chorus.db")); err != nil {
		t.Errorf("Restore of the same backup = %v", err)
	}
}
