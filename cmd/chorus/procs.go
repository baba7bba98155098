package main

import (
	"log/slog"
	"runtime"
)

// minServeProcs is the fewest Go processors (GOMAXPROCS) serve runs with.
//
// On one CPU Go's default is one processor, and a goroutine that blocks in
// a system call holds it until the runtime's monitor takes it back (up to
// 10 ms later when it has been idle); the goroutine then comes back on the
// global run queue, which a busy processor serves once in 61 turns. The
// SQLite store's WAL sync (fdatasync, milliseconds) answers every write, so
// on one processor each sync stalled all writes behind it. Measured with
// rtbench on one pinned CPU: channels (1,000 documents x 5 subscribers,
// 32 REST writers) 1,848 -> 2,824 writes/s, delivery p99 190 -> 42 ms,
// worst 3.0 s -> 78 ms; publish 5,964 -> 6,443 writes/s, worst 519 -> 26 ms.
// The price was then paid by saturated fan-out on that one CPU (1,000
// subscribers x 1,000 writes/s offered: 360-390k -> 170-270k deliveries/s).
//
// Measured again on 2026-12-05, after the WAL sync moved off the writer
// (two alternated pairs each, one against two processors): channels about
// the same (4,790 vs 5,000 writes/s, delivery p99 23 vs 24 ms); saturated
// fan-out now favours two (305k vs 600k deliveries/s, 3.1 vs 1.6 s of CPU
// per million); fanout 5,000 x 10/s favours one (delivery p99 84 vs 107 ms,
// three pairs). No single setting wins every row, so two stays; GOMAXPROCS=1
// suits a node that mostly fans out light traffic to many connections.
const minServeProcs = 2

// raiseProcs raises GOMAXPROCS to minServeProcs unless the operator set
// GOMAXPROCS, and reports what it did.
func raiseProcs(logger *slog.Logger) {
	if getenv("GOMAXPROCS") != "" {
		return
	}
	if n := runtime.GOMAXPROCS(0); n < minServeProcs {
		runtime.GOMAXPROCS(minServeProcs)
		logger.Debug("GOMAXPROCS raised", "from", n, "to", minServeProcs)
	}
}
