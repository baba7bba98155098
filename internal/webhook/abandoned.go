package webhook

import (
	"context"
	"fmt"
	"time"

	"github.com/chorus-sync/chorus"
)

// Abandoned webhooks: those given up on (attempts used up, too old, over
// the outbox's cap) are kept for Config.KeepAbandoned, at most
// Config.MaxAbandoned per service, so that an operator whose receiver was
// down can look at them and send them again (Replay) once it is back.

const (
	// DefaultKeepAbandoned is how long abandoned webhooks are kept.
	DefaultKeepAbandoned = 7 * 24 * time.Hour
	// DefaultMaxAbandoned is how many abandoned webhooks a service keeps
	// at most (the newest).
	DefaultMaxAbandoned = 10_000
	// DefaultReplayInterval is the least time between two replays of a
	// service's abandoned webhooks on one node.
	DefaultReplayInterval = time.Minute
	// abandonedSweep is how often at most the delivering node deletes
	// abandoned webhooks past their keeping (sweepEvery).
	abandonedSweep = time.Minute
)

// sweepEvery is how often abandoned webhooks are swept: every minute,
// or twice per KeepAbandoned when that is shorter.
func (d *Dispatcher) sweepEvery() time.Duration {
	if d.keepsAbandoned() {
		return min(abandonedSweep, d.cfg.KeepAbandoned/2)
	}
	return abandonedSweep
}

// keepsAbandoned reports whether webhooks given up on are kept.
func (d *Dispatcher) keepsAbandoned() bool { return d.cfg.KeepAbandoned > 0 }

// sweepAbandoned deletes the abandoned webhooks kept longer than
// KeepAbandoned (all of them when none are kept) and each service's
// oldest beyond MaxAbandoned.
func (d *Dispatcher) sweepAbandoned(ctx context.Context) error {
	var before time.Time // zero: all
	if d.keepsAbandoned() {
		before = d.Now().Add(-d.cfg.KeepAbandoned)
	}
	var counts map[string]int
	err := d.cfg.Store.Update(ctx, func(tx chorus.Tx) error {
		if _, err := tx.PurgeAbandoned(ctx, "", before); err != nil {
			return err
		}
		var err error
		counts, err = tx.AbandonedCounts(ctx, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("webhook: delete old abandoned webhooks: %w", err)
	}
	for svc, n := range counts {
		if n <= d.cfg.MaxAbandoned {
			continue
		}
		err := d.cfg.Store.Update(ctx, func(tx chorus.Tx) error {
			_, err := tx.TrimAbandoned(ctx, svc, d.cfg.MaxAbandoned)
			return err
		})
		if err != nil {
			return fmt.Errorf("webhook: trim abandoned webhooks of %s: %w", svc, err)
		}
	}
	return nil
}

// AbandonedPage is a page of a service's abandoned webhooks, newest
// first.
type AbandonedPage struct {
	Webhooks []*chorus.AbandonedWebhook
	// Next is the beforeSeq of the next page; 0: none.
	Next int64
}

// AbandonedWebhooks returns up to limit of service sid's abandoned webhooks kept
// with a Seq below beforeSeq (0: the newest), newest first.
func (d *Dispatcher) AbandonedWebhooks(ctx context.Context, sid string, beforeSeq int64, limit int) (*AbandonedPage, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("webhook: abandoned webhooks of %s: limit %d: want 1 or more", sid, limit)
	}
	var ws []*chorus.AbandonedWebhook
	err := d.cfg.Store.View(ctx, func(tx chorus.ReadTx) (err error) {
		ws, err = tx.AbandonedWebhooks(ctx, sid, beforeSeq, limit+1)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: abandoned webhooks of %s: %w", sid, err)
	}
	page := &AbandonedPage{Webhooks: ws}
	if len(ws) > limit {
		page.Webhooks = ws[:limit]
		page.Next = ws[limit-1].Seq
	}
	return page, nil
}

// Replay puts service sid's abandoned webhooks back in its outbox, oldest
// first, as many as its outbox has room for (MaxPending): they are sent
// again from now on, with their attempts and age anew, after the
// webhooks already pending for their objects. It returns how many it put
// back and how many are left. The delivering node sends them: at once if
// it is this one, whose pause of a failing receiver ends; another within
// Poll, after its pause of the receiver, if any, ran out.
//
// A service's webhooks are replayed at most once per ReplayInterval on
// this node (ErrTooManyRequests until then): one request puts back up to
// MaxPending webhooks and ends the receiver's pause, and a receiver that
// refuses them (4xx) has them abandoned again at once, so an account
// calling Replay in a loop would otherwise have this host send as many
// requests as it liked to any URL (a reviewer had 5 calls send 10,015).
func (d *Dispatcher) Replay(ctx context.Context, sid string) (replayed, left int, err error) {
	release, err := d.reserveReplay(sid)
	if err != nil {
		return 0, 0, err
	}
	defer func() { release(replayed > 0) }()
	err = d.cfg.Store.Update(ctx, func(tx chorus.Tx) error {
		pending := 0
		backlog, err := tx.OutboxBacklog(ctx)
		if err != nil {
			return err
		}
		for _, b := range backlog {
			if b.ServiceSID == sid {
				pending = b.Pending
			}
		}
		room := d.cfg.MaxPending - pending
		counts, err := tx.AbandonedCounts(ctx, []string{sid})
		if err != nil {
			return err
		}
		if counts[sid] == 0 {
			return nil
		}
		if room <= 0 {
			return chorus.Errorf(chorus.ErrTooManyRequests,
				"The service's outbox is full (%d webhooks pending): let it drain before replaying", pending)
		}
		if replayed, err = tx.ReplayAbandoned(ctx, sid, d.Now(), room); err != nil {
			return err
		}
		left = counts[sid] - replayed
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("webhook: replay abandoned webhooks of %s: %w", sid, err)
	}
	if replayed > 0 {
		// The operator says the receiver is back: its pause on this node
		// ends (on the delivering node, if it is another, the pause runs
		// out first: at most maxPause).
		h := d.healthOf(sid)
		d.mu.Lock()
		h.consecutive, h.pausedUntil = 0, time.Time{}
		d.mu.Unlock()
		d.deliverSoon(sid)
	}
	return replayed, left, nil
}

// maxReplayedAt bounds Dispatcher.replayedAt: past it, replays older than
// ReplayInterval are forgotten.
const maxReplayedAt = 10_000

// reserveReplay takes service sid's replay slot on this node, or refuses
// with ErrTooManyRequests when it was taken less than ReplayInterval ago:
// taken before the replay runs, so that concurrent calls do not all pass.
// release(kept) keeps the slot when the replay put webhooks back, and
// gives it back otherwise.
func (d *Dispatcher) reserveReplay(sid string) (release func(kept bool), err error) {
	if d.cfg.ReplayInterval <= 0 {
		return func(bool) {}, nil
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	last, seen := d.replayedAt[sid]
	if wait := d.cfg.ReplayInterval - now.Sub(last); seen && wait > 0 {
		return nil, chorus.Errorf(chorus.ErrTooManyRequests,
			"This service's abandoned webhooks were replayed less than %s ago: try again in %s",
			d.cfg.ReplayInterval, wait.Truncate(time.Second)+time.Second)
	}
	if len(d.replayedAt) >= maxReplayedAt {
		d.forgetReplaysLocked()
	}
	d.replayedAt[sid] = now
	return func(kept bool) {
		if kept {
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if at, ok := d.replayedAt[sid]; ok && at.Equal(now) {
			if seen {
				d.replayedAt[sid] = last
			} else {
				delete(d.replayedAt, sid)
			}
		}
	}, nil
}

// forgetReplaysLocked deletes the replay times that no longer hold a
// replay back. d.mu is held.
func (d *Dispatcher) forgetReplaysLocked() {
	for sid, at := range d.replayedAt {
		if time.Since(at) >= d.cfg.ReplayInterval {
			delete(d.replayedAt, sid)
		}
	}
}

// AbandonedCounts returns how many abandoned webhooks each of the services
// sids (nil: every service) keeps, cluster-wide.
func (d *Dispatcher) AbandonedCounts(ctx context.Context, sids []string) (map[string]int, error) {
	var counts map[string]int
	err := d.cfg.Store.View(ctx, func(tx chorus.ReadTx) (err error) {
		counts, err = tx.AbandonedCounts(ctx, sids)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: count abandoned webhooks: %w", err)
	}
	return counts, nil
}

// Purge deletes service sid's abandoned webhooks and returns how many.
// Its caller logs who asked (as Replay's does).
func (d *Dispatcher) Purge(ctx context.Context, sid string) (int, error) {
	var n int
	err := d.cfg.Store.Update(ctx, func(tx chorus.Tx) (err error) {
		n, err = tx.PurgeAbandoned(ctx, sid, time.Time{})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("webhook: purge abandoned webhooks of %s: %w", sid, err)
	}
	return n, nil
}
