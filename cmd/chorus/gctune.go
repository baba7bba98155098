package main

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
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
// 100 x gcHeadroom / (live heap + goroutine stacks + globals), at least
// 100 (Go's default) and at most gcMaxPercent. Go's heap goal is
// live + (live + stacks + globals) x percent/100, so a small heap may grow
// by about gcHeadroom before the next collection (never more than Go's
// default plus gcHeadroom), and a node whose live heap and stacks exceed
// gcHeadroom is collected exactly as Go's default would. Measured with
// rtbench, server on one pinned CPU, tuner vs Go's default, alternated
// pairs: publish (3 pairs) 94.6-97.2 vs 109-115 µs of server CPU per
// durable write, 8,950-9,250 vs 7,750-8,170 writes/s; channels (2 pairs,
// 5,000 connections whose stacks already exceed the headroom) unchanged,
// 40.6-44.1 vs 41.4-44.2 s CPU per million deliveries; idle 5,000
// connections 13.1 vs 17.7 KB RSS per connection. The operator's GOGC or
// GOMEMLIMIT turns it off.
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
	prev     int64 // the GC percent before the tuner started, restored by stop

	mu      sync.Mutex // orders adjust and stop
	stopped bool
	samples []metrics.Sample
}

// The runtime metrics the tuner reads, in gcReading's order. Go's heap
// goal is live + (live + stacks + globals) x GOGC/100, so all three count.
var gcMetrics = []string{
	"/gc/heap/live:bytes",
	"/gc/scan/stack:bytes",
	"/gc/scan/globals:bytes",
	"/gc/gogc:percent",
}

// gcReading is one sample of gcMetrics; a metric the runtime lacks reads 0.
type gcReading struct {
	live, stacks, globals uint64
	percent               int64
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
	t := &gcTuner{headroom: headroom, samples: make([]metrics.Sample, len(gcMetrics))}
	for i, name := range gcMetrics {
		t.samples[i].Name = name
	}
	t.prev = t.read().percent
	t.arm()
	return t
}

// read samples gcMetrics.
func (t *gcTuner) read() gcReading {
	metrics.Read(t.samples)
	var v [4]uint64
	for i, s := range t.samples {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	return gcReading{live: v[0], stacks: v[1], globals: v[2], percent: int64(min(v[3], 1<<31))}
}

func (t *gcTuner) arm() {
	runtime.SetFinalizer(&gcSentinel{}, func(*gcSentinel) {
		if t.adjust() {
			t.arm()
		}
	})
}

// adjust sets the GC percent for the heap of the last collection, and
// reports false once the tuner is stopped. It changes the percent only
// when it moves by more than a tenth: SetGCPercent stops the world
// briefly.
func (t *gcTuner) adjust() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	v := t.read()
	p := gcPercentFor(v.live+v.stacks+v.globals, t.headroom)
	// Within a tenth is close enough, except that Go's default is set
	// exactly once the heap no longer needs the floor.
	if cur := v.percent; p*10 > cur*11 || p*10 < cur*9 || (p == 100 && cur != 100) {
		debug.SetGCPercent(int(p))
	}
	return true
}

// gcPercentFor is the GC percent that lets the heap grow by headroom past
// its live part when scanned bytes (live heap, stacks, globals) are
// scanned: between 100 and gcMaxPercent.
func gcPercentFor(scanned, headroom uint64) int64 {
	if scanned == 0 {
		return gcMaxPercent
	}
	return min(max(int64(headroom*100/scanned), 100), gcMaxPercent)
}

// stop ends the tuning and restores the GC percent the tuner found.
func (t *gcTuner) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		debug.SetGCPercent(int(t.prev))
	}
}
