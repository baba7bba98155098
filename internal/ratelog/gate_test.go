package ratelog

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A burst goes through, the rest of a flood is held back and counted, and
// the next line let through (an interval later) says how many.
func TestGate(t *testing.T) {
	g := New(50*time.Millisecond, 3)
	var let, heldBack int
	for range 100 {
		if _, ok := g.Allow(); ok {
			let++
		} else {
			heldBack++
		}
	}
	if let != 3 || heldBack != 97 {
		t.Fatalf("a flood of 100 let %d through and held back %d, want 3 and 97", let, heldBack)
	}
	time.Sleep(60 * time.Millisecond)
	if held, ok := g.Allow(); !ok || held != 97 {
		t.Errorf("an interval later: let %v, held %d; want let, 97", ok, held)
	}
	if held, ok := g.Allow(); ok || held != 0 {
		t.Errorf("right after: let %v, held %d; want held back", ok, held)
	}
}

// Concurrent callers lose no count: what is let through plus what is
// reported held adds up to every call.
func TestGateConcurrent(t *testing.T) {
	g := New(time.Hour, 1)
	var wg sync.WaitGroup
	var let, reported atomic.Uint64
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if held, ok := g.Allow(); ok {
					let.Add(1)
					reported.Add(held)
				}
			}
		})
	}
	wg.Wait()
	// The one call let through may come after others were held back: it
	// reports them (its held), and the rest are still counted in the gate.
	if l, sum := let.Load(), reported.Load()+g.held.Load(); l != 1 || l+sum != 8000 {
		t.Errorf("%d let through, %d held (reported or counted), want 1 and 7999", l, sum)
	}
}
