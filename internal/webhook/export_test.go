package webhook

import (
	"context"
	"time"
)

// SetAfterRecord makes every sender call f after it recorded an attempt,
// until the returned function restores the default (none).
func SetAfterRecord(f func()) (restore func()) {
	afterRecord.Store(&f)
	return func() { afterRecord.Store(nil) }
}

// SweepAbandoned runs the delivering node's sweep of abandoned webhooks
// now.
func (d *Dispatcher) SweepAbandoned(ctx context.Context) error { return d.sweepAbandoned(ctx) }

// FlushPresence waits until the queued presence changes are recorded.
func (d *Dispatcher) FlushPresence(ctx context.Context) error { return d.presence.flush(ctx) }

// SetBeforePresenceRecord makes the presence queue call f before it
// records each change, until the returned function restores the default.
func SetBeforePresenceRecord(f func()) (restore func()) {
	beforeRecord.Store(&f)
	return func() { beforeRecord.Store(nil) }
}

// AgeLeadership makes the last leadership answer older by by, as a
// process stopped for that long finds it when it resumes.
func (d *Dispatcher) AgeLeadership(by time.Duration) { d.leaderAt.Add(-int64(by)) }

// CheckURLAsSet is the check of a URL set before (at delivery).
func (p Policy) CheckURLAsSet(raw string) error { return p.checkURL(raw, false) }
