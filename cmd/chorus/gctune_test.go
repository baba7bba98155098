package main

import (
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	for _, tc := range []struct {
		scanned, headroom uint64
		want              int64
	}{
		{0, 32 << 20, gcMaxPercent},
		{1 << 20, 32 << 20, gcMaxPercent},
		{10 << 20, 32 << 20, 320},
		{32 << 20, 32 << 20, 100},
		{500 << 20, 32 << 20, 100},
	} {
		if got := gcPercentFor(tc.scanned, tc.headroom); got != tc.want {
			t.Errorf("gcPercentFor(%d, %d) = %d, want %d", tc.scanned, tc.headroom, got, tc.want)
		}
	}
}

// TestGCTuner: with a small live heap the tuner raises the GC percent
// after a collection; once the live heap outgrows the headroom it is back
// at Go's default; stop restores the percent it found and no collection
// after stop changes it; the operator's GOGC keeps it off.
func TestGCTuner(t *testing.T) {
	t.Cleanup(func() { debug.SetGCPercent(100) })
	gcPercent := func() int { // read without setting it (SetGCPercent would race with the tuner)
		s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
		metrics.Read(s)
		return int(s[0].Value.Uint64())
	}
	waitPercent := func(ok func(int) bool) int {
		deadline := time.Now().Add(10 * time.Second)
		for {
			runtime.GC()
			p := gcPercent()
			if ok(p) || time.Now().After(deadline) {
				return p
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	debug.SetGCPercent(150) // what the tuner finds, and restores when stopped
	tuner := newGCTuner(64 << 20)
	t.Cleanup(tuner.stop)
	if p := waitPercent(func(p int) bool { return p > 150 }); p <= 150 {
		t.Fatalf("GC percent %d with a small live heap, want > 150", p)
	}
	big := make([][]byte, 0, 96)
	for range 96 {
		big = append(big, make([]byte, 1<<20)) // 96 MiB live > 64 MiB headroom
	}
	if p := waitPercent(func(p int) bool { return p == 100 }); p != 100 {
		t.Fatalf("GC percent %d with 96 MiB live and 64 MiB headroom, want 100", p)
	}
	runtime.KeepAlive(big)
	tuner.stop()
	big = nil
	for range 3 {
		runtime.GC() // a small live heap again: a running tuner would raise the percent
		time.Sleep(10 * time.Millisecond)
	}
	if p := gcPercent(); p != 150 {
		t.Fatalf("GC percent %d after stop and collections, want 150 (as before the tuner)", p)
	}

	old := getenv
	t.Cleanup(func() { getenv = old })
	getenv = func(k string) string { return map[string]string{"GOGC": "50"}[k] }
	if tuneGC(slog.New(slog.NewTextHandler(io.Discard, nil))) != nil {
		t.Fatal("tuner started although GOGC is set")
	}
}
