//go:build unix

package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
)

// TestSecondSignalRemovesRestoreStaging: a restore stuck reading its file
// (here a FIFO whose writer stalls) outlives the first SIGINT; the second
// ends it, and must not leave the staging copy of the database behind (a
// whole database, secrets included). It used to stay until a later
// restore found it an hour old.
func TestSecondSignalRemovesRestoreStaging(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := filepath.Join(dir, "src", server.DBFile)
	if err := os.Mkdir(filepath.Dir(db), 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	var backup strings.Builder
	if _, err := sqlite.Backup(ctx, db, dir, &backup); err != nil {
		t.Fatal(err)
	}
	st.Close()
	fifo := filepath.Join(dir, "backup.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	parent := filepath.Join(dir, "restores")
	if err := os.Mkdir(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	into := filepath.Join(parent, "data")
	cmd := exec.Command(binary, "restore", "--data-dir", into, fifo)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer cmd.Process.Kill()
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0) // blocks until restore opens it
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	half := backup.String()[:backup.Len()/2]
	if _, err := io.WriteString(w, half); err != nil {
		t.Fatal(err)
	}
	staged := func() []string {
		entries, _ := os.ReadDir(parent)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	// Stuck: all that was written is in the staging file (past the two
	// header lines), and the next read waits on the FIFO.
	header := len("chorus-backup 1\n") + strings.Index(backup.String()[len("chorus-backup 1\n"):], "\n") + 1
	stuck := func() bool {
		files, _ := filepath.Glob(filepath.Join(parent, "*", server.DBFile+".restoring"))
		if len(files) != 1 {
			return false
		}
		fi, err := os.Stat(files[0])
		return err == nil && fi.Size() == int64(len(half)-header)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !stuck() {
		if time.Now().After(deadline) {
			t.Fatalf("the staging file does not hold the %d bytes written 10 s into the restore (%v): %s",
				len(half)-header, staged(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range 2 {
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			select {
			case err := <-done:
				t.Fatalf("the restore ended at the first signal while blocked reading (%v): the test needs it stuck", err)
			case <-time.After(300 * time.Millisecond):
			}
		}
	}
	select {
	case err := <-done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("restore ended with %v, want killed by the signal", err)
		}
		if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
			t.Errorf("restore ended with %v, want killed by SIGINT (as the default action does)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("restore still runs 5 s after the second SIGINT")
	}
	if left := staged(); len(left) != 0 {
		t.Errorf("left in %s after the second signal: %v", parent, left)
	}
}
