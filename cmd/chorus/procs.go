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
// The price is paid by saturated fan-out on that one CPU (1,000 subscribers
// x 1,000 writes/s offered: 360-390k -> 170-270k deliveries/s), where two
// processors take turns on the CPU.
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
