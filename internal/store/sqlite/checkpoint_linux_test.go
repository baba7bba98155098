//go:build linux && (amd64 || arm64)

package sqlite

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

// failWritesTo makes every pwrite(2) to path's open descriptors fail with
// EIO until the test ends: the database file's disk failing under a
// checkpoint, which copies WAL frames into it.
func failWritesTo(t *testing.T, path string) {
	t.Helper()
	failWritesAfter(t, path, nil)
}

// failWritesAfter is failWritesTo whose failing writes first call wait.
func failWritesAfter(t *testing.T, path string, wait func()) {
	t.Helper()
	fds := map[int32]bool{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || target != path {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		fds[int32(fd)] = true
	}
	if len(fds) == 0 {
		t.Fatalf("no descriptor open on %s", path)
	}
	f := func(fd int32) bool {
		if !fds[fd] {
			return false
		}
		if wait != nil {
			wait()
		}
		return true
	}
	writeFault.Store(&f)
	t.Cleanup(func() { writeFault.Store(nil) })
}

// A checkpoint that fails to write the database file fails the store, as a
// failed WAL sync does: the kernel may report a failed sync to the one
// descriptor that ran it, and the syncer's next fdatasync then succeed
// over frames that never reached the disk. SQLite's auto-checkpoint, which
// ran inside COMMIT, dropped such errors; the writer's own checkpoint and
// the background one report them.
func TestCheckpointFailureStopsWrites(t *testing.T) {
	for _, tt := range []struct {
		name string
		// trigger makes the store run a checkpoint of that kind soon.
		trigger func(t *testing.T, s *Store, doc *chorus.Object)
	}{
		{"writer", func(t *testing.T, s *Store, doc *chorus.Object) {
			s.restartWanted.Store(true) // as the checkpointer does for a long WAL
		}},
		{"background", func(t *testing.T, s *Store, doc *chorus.Object) {
			// The writer wakes the checkpointer every ckptEveryWrites
			// requests (the store fails during these, checked below).
			ctx := context.Background()
			for i := range ckptEveryWrites {
				if s.Update(ctx, setData(ctx, doc, strconv.Itoa(i))) != nil {
					return
				}
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, path := openFile(t)
			doc := seedDoc(t, s)
			ctx := context.Background()
			// Frames for the checkpoint to copy.
			for i := range 20 {
				if err := s.Update(ctx, setData(ctx, doc, strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
			failWritesTo(t, path)
			tt.trigger(t, s, doc)
			deadline := time.Now().Add(10 * time.Second)
			var err error
			for time.Now().Before(deadline) {
				if err = s.Update(ctx, setData(ctx, doc, "1")); err != nil {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if chorus.ErrorCode(err) != chorus.ErrUnavailable.Code {
				t.Fatalf("Update after a failed checkpoint = %v, want 20503", err)
			}
			if !strings.Contains(err.Error(), "checkpoint") {
				t.Errorf("error %q does not say a checkpoint failed", err)
			}
			if err := s.Ping(ctx); chorus.ErrorCode(err) != chorus.ErrUnavailable.Code {
				t.Errorf("Ping after a failed checkpoint = %v, want 20503", err)
			}
		})
	}
}

// A write committed while a checkpoint runs is not answered before the
// checkpoint ends: had the checkpoint's sync of the WAL failed, the
// syncer's fdatasync could succeed over the write's lost frames. Here the
// background checkpoint hangs in a write to the database file, then fails;
// the write waiting for it gets 20503, not an acknowledgement.
func TestNoWriteAnsweredDuringACheckpoint(t *testing.T) {
	s, path := openFile(t)
	doc := seedDoc(t, s)
	ctx := context.Background()
	for i := range 20 { // frames for the checkpoint to copy
		if err := s.Update(ctx, setData(ctx, doc, strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	stuck, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	failWritesAfter(t, path, func() {
		once.Do(func() { close(stuck) })
		<-release
	})
	s.ckptq <- struct{}{} // wake the checkpointer, as the writer does
	select {
	case <-stuck:
	case <-time.After(10 * time.Second):
		t.Fatal("the background checkpoint never wrote to the database file")
	}
	done := make(chan error, 1)
	go func() { done <- s.Update(ctx, setData(ctx, doc, "100")) }()
	select {
	case err := <-done:
		close(release)
		t.Fatalf("Update answered (%v) while a checkpoint was running", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-done; chorus.ErrorCode(err) != chorus.ErrUnavailable.Code {
		t.Fatalf("Update committed during a checkpoint that failed = %v, want 20503", err)
	}
}

// With SQLite's auto-checkpoint off, the writer's own checkpoint is what
// restarts the WAL: steady writes keep it near autoCheckpointPages frames
// instead of growing it (the background checkpointer alone rarely copies
// every frame before the writer appends more).
func TestWALStaysBoundedUnderSteadyWrites(t *testing.T) {
	s, path := openFile(t)
	doc := seedDoc(t, s)
	ctx := context.Background()
	// ~4 pages of WAL per write: 3,000 writes are ~3 times the restart size.
	for i := range 3000 {
		big := `"` + strings.Repeat(string(rune('a'+i%26)), 14_000) + `"`
		if err := s.Update(ctx, setData(ctx, doc, big)); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	var pageSize int64
	if err := s.writer.scanRow(ctx, "PRAGMA page_size", &pageSize); err != nil {
		t.Fatal(err)
	}
	// Restarted at autoCheckpointPages, found by a checkpoint that runs
	// every ckptEveryWrites requests: at most that many writes later.
	limit := (autoCheckpointPages + 5*ckptEveryWrites) * (pageSize + 24)
	if fi.Size() > limit {
		t.Errorf("the WAL is %d bytes after 3,000 writes of ~14 KB, want at most %d (restarted)", fi.Size(), limit)
	}
}
