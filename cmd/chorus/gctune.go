package main

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// GC headroom for serve.
//
// Go's default (GOGC=100) lets the heap grow by as much as was live after
// the last collection before it collects again. A Chorus node's live heap
// is small until it holds many connections (10-20 MB), while every REST
// write allocates ~35 KB, so under write load the collector ran many times
// a second: 9.5 % of the CPU of rtbench publish (32 REST writers) went to
// marking, sweeping and assists. gcTuner gives the heap a floor of
// headroom instead: after each collection it sets the GC percent to
// 100 x gcHeadroom / live heap, at least 100 (Go's default) and at most
// gcMaxPercent, so a small heap may grow by gcHeadroom before the next
// collection, and a heap whose live part exceeds gcHeadroom is collected
// exactly as Go's default would. Measured with rtbench, server on one
// pinned CPU, tuner vs Go's default, alternated pairs: publish (4 pairs)
// 95.8-102 vs 113-119 µs of server CPU per durable write, 8,310-8,770 vs
// 7,030-7,780 writes/s; channels (3 pairs) 42.3-43.9 vs 43.5-46.2 s CPU
// per million deliveries, e2e p99 26.3-26.6 vs 26.6-28.2 ms; idle 5,000
// connections (2 pairs) 13.7-14.4 vs 16.4-16.7 KB RSS per connection,
// 0.32 vs 0.34-0.35 ms CPU per connect. The operator's GOGC or GOMEMLIMIT
// turns it off.
const (
	gcHeadroom   = 32 << 20
	gcMaxPercent = 500
)

// gcTuner adjusts the GC percent after every collection (a finalizer on
// a sentinel object that is garbage at once runs after each cycle and
// re-arms itself). adjust runs on the runtime's finalizer goroutine; stop
// may be called from any goroutine, and no adjustment follows it.
type gcTuner struct {
	headroom uint64
	percent  atomic.Int64 // the GC percent last set

	mu      sync.Mutex // orders adjust and stop
	stopped bool
	live    []metrics.Sample
}

// gcSentinel is large enough not to share a tiny-allocator block, whose
// finalizers run only when the whole block is free.
type gcSentinel struct{ _ [32]byte }

// tuneGC starts the tuner unless the operator set GOGC or GOMEMLIMIT.
func tuneGC(logger *slog.Logger) *gcTuner {
	if getenv("GOGC") != "" || getenv("GOMEMLIMIT") != "" {
		return nil
	}
	t := newGCTuner(gcHeadroom)
	logger.Debug("GC headroom floor on", "bytes", gcHeadroom)
	return t
}

func newGCTuner(headroom uint64) *gcTuner {
	t := &gcTuner{headroom: headroom, live: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	t.percent.Store(100)
	t.arm()
	return t
}

func (t *gcTuner) arm() {
	runtime.SetFinalizer(&gcSentinel{}, func(*gcSentinel) {
		if t.adjust() {
			t.arm()
		}
	})
}

// adjust sets the GC percent for the live heap of the last collection,
// and reports false once the tuner is stopped. It changes the percent only
// when it moves by more than a tenth: SetGCPercent stops the world
// briefly.
func (t *gcTuner) adjust() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	metrics.Read(t.live)
	if t.live[0].Value.Kind() != metrics.KindUint64 {
		return true
	}
	p := gcPercentFor(t.live[0].Value.Uint64(), t.headroom)
	if cur := t.percent.Load(); p*10 > cur*11 || p*10 < cur*9 || (p == 100 && cur != 100) {
		debug.SetGCPercent(int(p))
		t.percent.Store(p)
	}
	return true
}

// gcPercentFor is the GC percent that lets a heap of live bytes grow by
// headroom: between 100 and gcMaxPercent.
func gcPercentFor(live, headroom uint64) int64 {
	if live == 0 {
		return gcMaxPercent
	}
	return min(max(int64(headroom*100/live), 100), gcMaxPercent)
}

// stop ends the tuning and restores Go's default.
func (t *gcTuner) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		debug.SetGCPercent(100)
	}
}
