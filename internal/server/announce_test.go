package server

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// TestAnnouncerMergesWithinInterval: the first request is sent at once;
// requests within the interval after it are merged into one sent when the
// interval is up (none dropped, none more); after close nothing is sent.
func TestAnnouncerMergesWithinInterval(t *testing.T) {
	const every = 200 * time.Millisecond
	var sent atomic.Int32
	a := &announcer{every: every, log: slog.Default(), send: func(context.Context) error {
		sent.Add(1)
		return nil
	}}
	a.request()
	if n := sent.Load(); n != 1 || a.pending() {
		t.Fatalf("first request: %d sent, pending %t; want 1, false", n, a.pending())
	}
	for range 5 {
		a.request()
	}
	if n := sent.Load(); n != 1 || !a.pending() {
		t.Fatalf("5 requests within the interval: %d sent, pending %t; want 1, true", n, a.pending())
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.pending() {
		if time.Now().After(deadline) {
			t.Fatal("the merged announcement is still pending after 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := sent.Load(); n != 2 {
		t.Fatalf("after the interval: %d sent, want 2 (the 5 requests merged into one)", n)
	}
	a.request() // within the interval of the merged one: due later
	a.close()
	time.Sleep(2 * every)
	if n := sent.Load(); n != 2 || a.pending() {
		t.Fatalf("after close: %d sent, pending %t; want 2, false", n, a.pending())
	}
}
