package engine

import "time"

// SetResolveWait sets how long a write whose commit's outcome is unknown
// waits for the store to tell, until the test ends (restore).
func SetResolveWait(d time.Duration) (restore func()) {
	old := resolveWait
	resolveWait = d
	return func() { resolveWait = old }
}
