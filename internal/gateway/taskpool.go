package gateway

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// taskPool runs short tasks on reused goroutines.
//
// A session's worker (conn.workLoop) exists only while the session has
// requests, so a connecting SDK used to start one goroutine for init and
// another for its first subscription. A new goroutine's stack starts at a
// few KiB and is copied each time it doubles; token verification, JSON
// decoding and a SQLite read grow it to tens of KiB, and those copies
// were about a tenth of a connection's setup CPU (runtime.newstack in a
// profile of rtbench idle). A pooled goroutine keeps the stack it grew.
//
// Idle goroutines are kept last-in first-out, so the busiest few stay warm,
// at most maxIdle of them, each for at most idleTimeout; the garbage
// collector shrinks the stacks of those that stay idle. Go never blocks
// and never waits for a goroutine to become free: with none idle it starts
// a new one. It is safe for concurrent use.
type taskPool struct {
	maxIdle     int
	idleTimeout time.Duration

	spawned atomic.Uint64 // goroutines started (tests)

	mu   sync.Mutex
	idle []*taskWorker
}

// taskWorker is a pooled goroutine; next carries its next task (capacity
// one, so handing it a task never blocks).
type taskWorker struct {
	next chan func()
}

const (
	// taskPoolIdle bounds the goroutines, and so the grown stacks, kept
	// idle between requests.
	taskPoolIdle = 128
	// taskPoolIdleTimeout is how long an idle worker goroutine waits for
	// a task before it exits.
	taskPoolIdleTimeout = 5 * time.Second
)

func newTaskPool(maxIdle int, idleTimeout time.Duration) *taskPool {
	return &taskPool{maxIdle: maxIdle, idleTimeout: idleTimeout}
}

// Go runs task on an idle pooled goroutine, or on a new one.
func (p *taskPool) Go(task func()) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.next <- task
		return
	}
	p.mu.Unlock()
	w := &taskWorker{next: make(chan func(), 1)}
	p.spawned.Add(1)
	go w.run(p, task)
}

// run runs task, then whatever the pool hands it, until it has waited
// idleTimeout for a task or the pool has no room for it.
func (w *taskWorker) run(p *taskPool, task func()) {
	var timer *time.Timer
	for {
		task()
		task = nil // not kept alive while idle
		if !p.park(w) {
			return
		}
		if timer == nil {
			timer = time.NewTimer(p.idleTimeout)
		} else {
			timer.Reset(p.idleTimeout)
		}
		select {
		case task = <-w.next:
			timer.Stop()
		case <-timer.C:
			if p.unpark(w) {
				return
			}
			// Go took w off the idle list before the timeout: its task
			// is on the way.
			task = <-w.next
		}
	}
}

// park puts w on the idle list; false if the list is full.
func (p *taskPool) park(w *taskWorker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) >= p.maxIdle {
		return false
	}
	p.idle = append(p.idle, w)
	return true
}

// unpark takes w off the idle list; false if Go took it already.
func (p *taskPool) unpark(w *taskWorker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := slices.Index(p.idle, w)
	if i < 0 {
		return false
	}
	p.idle = slices.Delete(p.idle, i, i+1) // zeroes the freed slot
	return true
}

// idleCount returns how many goroutines wait for a task (tests).
func (p *taskPool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}
