package ratelog

import (
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Gate decides which of a repeated event's log lines to write.
type Gate struct {
	lim  *rate.Limiter
	held atomic.Uint64
}

// New returns a Gate that lets burst lines through at once, then one per
// every (burst 1: one per every from the first).
func New(every time.Duration, burst int) *Gate {
	return &Gate{lim: rate.NewLimiter(rate.Every(every), max(burst, 1))}
}

// Allow reports whether to write this line, and if so how many lines it
// held back since the last one it let through.
func (g *Gate) Allow() (held uint64, ok bool) {
	if !g.lim.Allow() {
		g.held.Add(1)
		return 0, false
	}
	return g.held.Swap(0), true
}
