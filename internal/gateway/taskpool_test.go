package gateway

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestTaskPoolReusesGoroutines: tasks run one after another share one
// goroutine, which is the point of the pool.
func TestTaskPoolReusesGoroutines(t *testing.T) {
	p := newTaskPool(4, time.Minute)
	for i := range 50 {
		done := make(chan struct{})
		p.Go(func() { close(done) })
		<-done
		waitFor(t, func() bool { return p.idleCount() == 1 })
		if n := p.spawned.Load(); n != 1 {
			t.Fatalf("after %d sequential tasks: %d goroutines started, want 1", i+1, n)
		}
	}
}

// TestTaskPoolIdleTimeout: an idle goroutine exits after idleTimeout, and
// the next task starts a new one.
func TestTaskPoolIdleTimeout(t *testing.T) {
	p := newTaskPool(4, 20*time.Millisecond)
	done := make(chan struct{})
	p.Go(func() { close(done) })
	<-done
	waitFor(t, func() bool { return p.idleCount() == 1 })
	waitFor(t, func() bool { return p.idleCount() == 0 })
	done = make(chan struct{})
	p.Go(func() { close(done) })
	<-done
	if n := p.spawned.Load(); n != 2 {
		t.Fatalf("%d goroutines started, want 2 (the first timed out)", n)
	}
}

// TestTaskPoolMaxIdle: no more than maxIdle goroutines stay after a burst,
// and a burst never waits for a free goroutine.
func TestTaskPoolMaxIdle(t *testing.T) {
	const maxIdle, burst = 3, 20
	p := newTaskPool(maxIdle, time.Minute)
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(burst)
	go func() { // a Go that blocked would block this goroutine, not the test's
		for range burst {
			p.Go(func() { started.Done(); <-release })
		}
	}()
	all := make(chan struct{})
	go func() { started.Wait(); close(all) }()
	select {
	case <-all: // all run at once: none waited for another
	case <-time.After(10 * time.Second):
		t.Fatalf("a burst of %d tasks did not all start: Go waited for a free goroutine", burst)
	}
	close(release)
	waitFor(t, func() bool { return p.idleCount() == maxIdle })
	time.Sleep(20 * time.Millisecond)
	if n := p.idleCount(); n != maxIdle {
		t.Fatalf("%d idle goroutines, want %d", n, maxIdle)
	}
}

// TestTaskPoolEveryTaskOnce runs many tasks from many goroutines with an
// idle timeout short enough that timeouts race with Go handing out the
// same goroutine; every task must run exactly once (run it with -race).
func TestTaskPoolEveryTaskOnce(t *testing.T) {
	p := newTaskPool(8, 50*time.Microsecond)
	const senders, each = 16, 500
	var runs [senders * each]atomic.Int32
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				n := s*each + i
				wg.Add(1)
				p.Go(func() { runs[n].Add(1); wg.Done() })
				if i%50 == 0 {
					time.Sleep(100 * time.Microsecond) // let some goroutines time out
				}
			}
		})
	}
	waitDone := make(chan struct{})
	go func() { wg.Wait(); close(waitDone) }()
	select {
	case <-waitDone:
	case <-time.After(10 * time.Second):
		lost := 0
		for i := range runs {
			if runs[i].Load() == 0 {
				lost++
			}
		}
		t.Fatalf("%d of %d tasks never ran", lost, len(runs))
	}
	for i := range runs {
		if n := runs[i].Load(); n != 1 {
			t.Fatalf("task %d ran %d times", i, n)
		}
	}
	if p.spawned.Load() >= senders*each {
		t.Errorf("every task started a goroutine (%d): nothing was reused", p.spawned.Load())
	}
}
