//go:build linux && (amd64 || arm64)

package sqlite

import (
	"context"
	"encoding/json"
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
			// A WAL past autoCheckpointPages after a batch: the writer's
			// (the store may fail during it, checked below).
			_ = writeLongWAL(s)
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
			// Fewer writes than wake the background checkpointer
			// (ckptEveryWrites), so that each subtest sees its own kind.
			var err error
			for range 200 {
				if err = s.Update(ctx, setData(ctx, doc, "1")); err != nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
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
// restarts the WAL after a transaction that made it long: here one that
// writes ~6,000 frames (a Map removed with its items is one such), then a
// few small writes. The background checkpointer, woken every
// ckptEveryWrites requests, would leave it long until 512 more writes.
func TestWALRestartsAfterALargeTransaction(t *testing.T) {
	s := openInternal(t)
	doc := seedDoc(t, s)
	ctx := context.Background()
	if err := writeLongWAL(s); err != nil {
		t.Fatal(err)
	}
	big, ok := s.walFrames()
	if !ok || big < autoCheckpointPages {
		t.Fatalf("after the large transaction the WAL has %d frames (%v), want at least %d for the test to mean anything", big, ok, autoCheckpointPages)
	}
	for i := range 5 {
		if err := s.Update(ctx, setData(ctx, doc, strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := s.walFrames(); n >= autoCheckpointPages {
		t.Errorf("the WAL still has %d frames 5 writes after a transaction of %d, want it restarted", n, big)
	}
}

// writeLongWAL commits one transaction of ~6,300 WAL frames (6,000
// documents of 3 KB), past autoCheckpointPages.
func writeLongWAL(s *Store) error {
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0).UTC()
	pad := json.RawMessage(`{"pad":"` + strings.Repeat("x", 3000) + `"}`)
	return s.Update(ctx, func(tx chorus.Tx) error {
		for range 6000 {
			o := &chorus.Object{Kind: chorus.KindDocument, SID: chorus.NewSID(chorus.PrefixDocument), AccountSID: "AC1",
				ServiceSID: "IS1", Data: pad, CreatedBy: "t", DateCreated: now, DateUpdated: now}
			if err := tx.InsertObject(ctx, o); err != nil {
				return err
			}
		}
		return nil
	})
}
