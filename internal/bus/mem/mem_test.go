package mem_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/bustest"
	"github.com/chorus-sync/chorus/internal/bus/mem"
)

func TestConformance(t *testing.T) {
	bustest.Run(t, func(t testing.TB) chorus.Bus {
		b := mem.New()
		t.Cleanup(func() { b.Close() })
		return b
	})
}

// TestSlowObjectHoldsBackOnlyItself: while a publish of one object is in
// its subscribers (a map's writes matched against thousands of live
// queries), another object can be subscribed to and published; a cancel
// of the slow object's subscriber returns only once that publish no longer
// calls it. With one lock for the whole bus, the subscription waited for
// the slow publish, and every later publish of the node behind it.
func TestSlowObjectHoldsBackOnlyItself(t *testing.T) {
	b := mem.New()
	t.Cleanup(func() { b.Close() })
	ctx := context.Background()
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	cancelSlow, err := b.Subscribe("slow", func(*chorus.Event) {
		calls.Add(1)
		close(entered)
		<-release
	})
	if err != nil {
		t.Fatal(err)
	}
	published := make(chan struct{})
	go func() {
		defer close(published)
		_ = b.Publish(ctx, &chorus.Event{ObjectSID: "slow", ID: 1})
	}()
	<-entered

	got := make(chan int64, 1)
	done := make(chan error, 1)
	go func() {
		cancel, err := b.Subscribe("other", func(e *chorus.Event) { got <- e.ID })
		if err == nil {
			defer cancel()
			err = b.Publish(ctx, &chorus.Event{ObjectSID: "other", ID: 7})
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		if id := <-got; id != 7 {
			t.Fatalf("other object got event %d, want 7", id)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("subscribing to and publishing another object waited for the slow object's publish")
	}

	cancelled := make(chan struct{})
	go func() { cancelSlow(); close(cancelled) }()
	select {
	case <-cancelled:
		t.Fatal("cancel returned while a publish was still calling its subscriber")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-published
	<-cancelled
	_ = b.Publish(ctx, &chorus.Event{ObjectSID: "slow", ID: 2})
	if n := calls.Load(); n != 1 {
		t.Errorf("the cancelled subscriber was called %d times, want once", n)
	}
}
