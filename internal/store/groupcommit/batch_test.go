package groupcommit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/groupcommit"
)

var errClosed = errors.New("closed")

// writer answers every request with fn's result, calling fn with a nil Tx.
func writer(q *groupcommit.Queue) {
	for r := range q.C() {
		if !r.Claim() {
			continue
		}
		func() {
			defer func() { r.Panic = recover() }()
			r.Err = r.Fn(nil)
		}()
		r.Answer()
	}
}

func TestSubmitRunsAndAnswers(t *testing.T) {
	q := groupcommit.NewQueue(4)
	go writer(q)
	want := errors.New("fn failed")
	if err := q.Submit(context.Background(), func(chorus.Tx) error { return want }, errClosed); err != want {
		t.Errorf("Submit = %v, want fn's error", err)
	}
	defer func() {
		if p := recover(); p != "boom" {
			t.Errorf("recover() = %v, want the fn's panic re-raised", p)
		}
		if !q.Close() || q.Close() {
			t.Error("Close: want true once, then false")
		}
		if err := q.Submit(context.Background(), func(chorus.Tx) error { return nil }, errClosed); err != errClosed {
			t.Errorf("Submit after Close = %v", err)
		}
	}()
	_ = q.Submit(context.Background(), func(chorus.Tx) error { panic("boom") }, errClosed)
}

func TestCanceledWhileQueuedNeverRuns(t *testing.T) {
	q := groupcommit.NewQueue(4)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	ran := false
	if err := q.Submit(ctx, func(chorus.Tx) error { ran = true; return nil }, errClosed); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Submit = %v, want the context's error", err)
	}
	q.Close()
	writer(q) // drains the canceled request
	if ran {
		t.Error("a request canceled while queued ran")
	}
}

func TestCanceledAfterClaimWaitsForTheOutcome(t *testing.T) {
	q := groupcommit.NewQueue(1)
	ctx, cancel := context.WithCancel(context.Background())
	claimed := make(chan *groupcommit.Request)
	go func() {
		r := <-q.C()
		if !r.Claim() {
			t.Error("Claim of a live request = false")
		}
		claimed <- r
	}()
	res := make(chan error)
	go func() { res <- q.Submit(ctx, func(chorus.Tx) error { return nil }, errClosed) }()
	r := <-claimed
	cancel()
	select {
	case err := <-res:
		t.Fatalf("Submit returned %v before its claimed request was answered", err)
	case <-time.After(50 * time.Millisecond):
	}
	r.Err = errors.New("committed anyway")
	r.Answer()
	if err := <-res; err == nil || err.Error() != "committed anyway" {
		t.Errorf("Submit = %v, want the writer's answer", err)
	}
}
