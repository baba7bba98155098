package webhook

import (
	"context"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/chorus-sync/chorus"
)

// health is what this node saw of a service's receiver. Its fields are
// guarded by Dispatcher.mu.
type health struct {
	sent, failed, retried, abandoned, capped uint64

	url         string    // the webhook URL the lane last sent to
	consecutive int       // failed attempts since the last success
	pausedUntil time.Time // a failing receiver is left alone until then
	lastSuccess time.Time
	failures    []Failure // the newest last, at most recentFailures
	// The last attempt of a webhook past MaxAge to a failing receiver
	// (lastChance): one at a time, one per pause.
	probing   bool
	probed1   bool      // a probe was made ...
	probedFor time.Time // ... after the pause that ended then (pausedUntil)
}

// lastChance decides the fate of an attempted webhook past MaxAge: a last
// attempt (last) when the receiver's latest attempt succeeded, or as the
// probe of a receiver failing or not yet heard from (after a restart, a
// new URL) if none was made since its pause ended (probe; call probed
// after it); wait while another sender's probe is out; else give it up.
func (h *health) lastChance(mu *sync.Mutex) (last, probe, wait bool) {
	mu.Lock()
	defer mu.Unlock()
	switch {
	case h.consecutive == 0 && !h.lastSuccess.IsZero():
		return true, false, false
	case h.probing:
		return false, false, true
	case !h.probed1 || h.probedFor.Before(h.pausedUntil):
		h.probing, h.probed1, h.probedFor = true, true, h.pausedUntil
		return true, true, false
	}
	return false, false, false
}

// probed ends the probe lastChance started.
func (h *health) probed(mu *sync.Mutex) {
	mu.Lock()
	h.probing = false
	mu.Unlock()
}

// Failure is one failed delivery attempt, for the console.
type Failure struct {
	Time      time.Time           `json:"time"`
	EventType chorus.EventType    `json:"event_type"`
	ObjectSID string              `json:"object_sid,omitempty"`
	Status    int                 `json:"status"` // HTTP status; 0: no answer
	Error     string              `json:"error"`
	Attempt   int                 `json:"attempt"`
	Outcome   string              `json:"outcome"` // "retry" or "abandoned"
	Entry     *chorus.OutboxEntry `json:"-"`
}

func (d *Dispatcher) healthOf(sid string) *health {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.health[sid]
	if h == nil {
		if len(d.health) > 10_000 {
			clear(d.health)
		}
		h = &health{}
		d.health[sid] = h
	}
	return h
}

// failing reports whether the receiver failed failingAfter times in a
// row (it was paused) and answered nothing since: once the pause ends,
// the newest object not yet tried goes first (round).
func (h *health) failing(mu *sync.Mutex) bool {
	mu.Lock()
	defer mu.Unlock()
	return h.consecutive >= failingAfter
}

// pause returns until when the receiver is paused.
func (h *health) pause(mu *sync.Mutex) time.Time {
	mu.Lock()
	defer mu.Unlock()
	return h.pausedUntil
}

// newURL notes the service's webhook URL and reports whether it changed
// since the lane last looked (not the first look): a new receiver starts
// without the old one's failures and pause, so that the fix of a broken
// URL takes effect at once rather than when the pause ends.
func (h *health) newURL(mu *sync.Mutex, url string) bool {
	mu.Lock()
	defer mu.Unlock()
	if h.url == url {
		return false
	}
	changed := h.url != ""
	h.url = url
	if changed {
		// Nothing is known of the new receiver yet.
		h.consecutive, h.pausedUntil, h.lastSuccess = 0, time.Time{}, time.Time{}
		h.probing, h.probed1 = false, false
	}
	return changed
}

// sendsTo reports whether url is the webhook URL the lane sends to now.
func (h *health) sendsTo(mu *sync.Mutex, url string) bool {
	mu.Lock()
	defer mu.Unlock()
	return h.url == url
}

// record notes the outcome r of an entry's attempt (its attempt-th). A
// receiver failing failingAfter times in a row is paused, longer with every
// further failure. Not every failure counts: one while the receiver is
// paused was an attempt that began before the pause (up to Concurrency run
// at once): it tells nothing new, and does not lengthen the pause (four
// requests failing together once paused a receiver for 5 minutes within a
// second). One whose request was out while another request to the
// receiver succeeded is its object's, not the receiver's: the receiver
// answers (a few objects whose requests hang used to pause the healthy
// rest for minutes). Neither does an entry given up on without an attempt
// (too old). It returns how long the receiver is paused when this attempt
// paused it. now is Dispatcher.Now.
func (h *health) record(mu *sync.Mutex, now time.Time, e *chorus.OutboxEntry, attempt int, r attemptResult, base time.Duration) (paused time.Duration) {
	mu.Lock()
	defer mu.Unlock()
	switch r.res {
	case delivered:
		h.sent++
		h.consecutive = 0
		h.pausedUntil = time.Time{}
		h.lastSuccess = now
		return 0
	case retry:
		h.retried++
	case abandon:
		h.abandoned++
	}
	if r.status == 0 && r.why == "" {
		return 0
	}
	h.failed++
	receivers := r.res == retry || r.transient || r.status >= 500 || r.status == 429
	if !r.unattempted && receivers && !now.Before(h.pausedUntil) && !h.lastSuccess.After(r.started) {
		h.consecutive++
		if n := h.consecutive - failingAfter + 1; n > 0 {
			paused = min(backoff(base, min(n, 8)), maxPause)
			h.pausedUntil = now.Add(paused)
		}
	}
	out := "retry"
	if r.res == abandon {
		out = "abandoned"
	}
	h.failures = append(h.failures, Failure{
		Time: now, EventType: e.Event.Type, ObjectSID: e.Event.ObjectSID, Status: r.status, Error: r.why,
		Attempt: attempt, Outcome: out,
	})
	if len(h.failures) > recentFailures {
		h.failures = h.failures[len(h.failures)-recentFailures:]
	}
	return paused
}

// ServiceHealth is the state of a service's webhooks: the cluster-wide
// backlog, and what this node saw when it delivered them.
type ServiceHealth struct {
	ServiceSID string `json:"service_sid"`
	WebhookURL string `json:"webhook_url"` // without query and credentials
	// State is "idle" (nothing pending), "healthy", "retrying" (some
	// attempts failed) or "failing" (paused after failing repeatedly).
	State            string  `json:"state"`
	Pending          int     `json:"pending"`
	OldestPendingAge float64 `json:"oldest_pending_age_seconds"`
	Sent             uint64  `json:"sent"`
	Failed           uint64  `json:"failed"`
	Retried          uint64  `json:"retried"`
	Abandoned        uint64  `json:"abandoned"`
	// AbandonedKept is how many abandoned webhooks the service keeps to
	// be replayed (cluster-wide).
	AbandonedKept      int        `json:"abandoned_kept"`
	ConsecutiveFailing int        `json:"consecutive_failures"`
	PausedUntil        *time.Time `json:"paused_until"`
	LastSuccess        *time.Time `json:"last_success"`
	RecentFailures     []Failure  `json:"recent_failures"`
}

// Health reports the webhooks of the given services (nil: every service
// this node knows of, or has a backlog), newest failures first.
func (d *Dispatcher) Health(ctx context.Context, services []*chorus.Service) ([]ServiceHealth, error) {
	backlog, err := d.Backlog(ctx)
	if err != nil {
		return nil, err
	}
	pending := map[string]*chorus.OutboxBacklog{}
	for _, b := range backlog {
		pending[b.ServiceSID] = b
	}
	sids := make([]string, len(services))
	for i, svc := range services {
		sids[i] = svc.SID
	}
	kept, err := d.AbandonedCounts(ctx, sids)
	if err != nil {
		return nil, err
	}
	now := d.Now()
	out := make([]ServiceHealth, 0, len(services))
	for _, svc := range services {
		sh := ServiceHealth{ServiceSID: svc.SID, WebhookURL: displayURL(svc.WebhookURL), State: "idle", RecentFailures: []Failure{},
			AbandonedKept: kept[svc.SID]}
		if b := pending[svc.SID]; b != nil {
			sh.Pending, sh.State = b.Pending, "healthy"
			sh.OldestPendingAge = max(0, now.Sub(b.Oldest).Seconds())
		}
		d.mu.Lock()
		if h := d.health[svc.SID]; h != nil {
			sh.Sent, sh.Failed, sh.Retried, sh.Abandoned = h.sent, h.failed, h.retried, h.abandoned
			sh.ConsecutiveFailing = h.consecutive
			if !h.lastSuccess.IsZero() {
				t := h.lastSuccess
				sh.LastSuccess = &t
			}
			if h.pausedUntil.After(now) {
				t := h.pausedUntil.UTC()
				sh.PausedUntil = &t
				sh.State = "failing"
			} else if h.consecutive > 0 {
				sh.State = "retrying"
			}
			for i := len(h.failures) - 1; i >= 0; i-- {
				sh.RecentFailures = append(sh.RecentFailures, h.failures[i])
			}
		}
		d.mu.Unlock()
		out = append(out, sh)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ServiceSID < out[j].ServiceSID })
	return out, nil
}

// displayURL is a webhook URL without credentials, query or fragment.
func displayURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		return ""
	}
	u.User, u.RawQuery, u.Fragment, u.RawFragment = nil, "", "", ""
	return u.String()
}
