package groupcommit

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/chorus-sync/chorus"
)

// Request states.
const (
	queued int32 = iota
	running
	canceled
)

// Request is one Update waiting for a writer.
type Request struct {
	Ctx context.Context
	Fn  func(chorus.Tx) error

	// Set by the writer before Answer.
	Err   error
	Panic any // re-raised in the caller's goroutine
	// Attempts counts runs of a request that a store moved to a later
	// batch after a conflict.
	Attempts int

	state atomic.Int32
	done  chan struct{}
}

// Claim makes the request the writer's to run. It reports false when the
// caller gave up while the request was queued: skip it, it is answered.
func (r *Request) Claim() bool { return r.state.CompareAndSwap(queued, running) }

// Requeue returns a claimed request to the queued state, to be claimed
// again in a later batch (its caller may now give up on it).
func (r *Request) Requeue() { r.state.Store(queued) }

// Answer hands Err and Panic to the waiting caller. Call it once.
func (r *Request) Answer() { close(r.done) }

// Queue holds submitted requests for the writers.
type Queue struct {
	mu     sync.RWMutex // guards closed and sends on c
	closed bool
	c      chan *Request
}

// NewQueue returns a queue that buffers up to size requests.
func NewQueue(size int) *Queue { return &Queue{c: make(chan *Request, size)} }

// C is what writers receive from; it is closed by Close.
func (q *Queue) C() <-chan *Request { return q.c }

// Len is the number of requests waiting.
func (q *Queue) Len() int { return len(q.c) }

// Closed reports whether Close was called.
func (q *Queue) Closed() bool {
	q.mu.RLock()
	defer q.mu.RUnlock()
	return q.closed
}

// Close stops new submissions and closes C, so that writers drain what is
// queued and stop. It reports false when the queue was closed already.
func (q *Queue) Close() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.closed = true
	close(q.c)
	return true
}

// Submit queues fn and waits for its outcome. It returns errClosed after
// Close, and ctx.Err() when ctx ends before a writer claimed the request.
func (q *Queue) Submit(ctx context.Context, fn func(chorus.Tx) error, errClosed error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &Request{Ctx: ctx, Fn: fn, done: make(chan struct{})}
	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		return errClosed
	}
	select {
	case q.c <- r:
	case <-ctx.Done():
		q.mu.RUnlock()
		return ctx.Err()
	}
	q.mu.RUnlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		if r.state.CompareAndSwap(queued, canceled) {
			return ctx.Err()
		}
		<-r.done // fn runs or ran: its outcome is the answer
	}
	if r.Panic != nil {
		panic(r.Panic)
	}
	return r.Err
}
