package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/chorus-sync/chorus"
)

// lane delivers one service's outbox: its own goroutine and its own
// requests in flight, so that a receiver that hangs or fails delays only
// its own webhooks.
type lane struct {
	svc    string
	wake   chan struct{} // kicked: new webhooks, a service change, a sender done
	cancel context.CancelFunc

	max int // senders at most: Config.Concurrency
	// dueOnce: the webhook URL changed and no sender is at work; the
	// next round makes every entry of its page due (the lane's own
	// goroutine only).
	dueOnce bool
	senders sync.WaitGroup
	mu      sync.Mutex      // guards the fields below
	sending map[string]bool // the objects (OrderKey) a sender is working on
	// retrying are those of sending whose first entry is a retry: at most
	// max-1, so that one sender at least is left for new webhooks while
	// several objects' requests hang (take).
	retrying map[string]bool
	// ended are the objects whose sender ended since the lane last read
	// the outbox: the page read then may still hold what they delivered.
	ended   map[string]bool
	waiting []dueObject // due in the last page read, for the next free sender
	busy    int         // senders running: at most Concurrency
	sends   context.Context
	callOff context.CancelFunc // cancels sends (sendCtx)
	// What the senders saw since the lane last looked: an entry delivered
	// or given up on (progress), the earliest retry due (next).
	progress bool
	next     time.Time
}

// poke wakes the lane if it sleeps.
func (l *lane) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// kick makes sure the lane of service sid runs (while this node leads)
// and looks at its outbox again.
func (d *Dispatcher) kick(sid string) {
	if !d.leading.Load() || d.ctx.Err() != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if l := d.lanes[sid]; l != nil {
		l.poke()
		return
	}
	ctx, cancel := context.WithCancel(d.ctx)
	l := &lane{svc: sid, max: d.cfg.Concurrency, wake: make(chan struct{}, 1), cancel: cancel,
		sending: map[string]bool{}, retrying: map[string]bool{}, ended: map[string]bool{}}
	d.lanes[sid] = l
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer cancel()
		d.runLane(ctx, l)
	}()
}

// stopLanes cancels every lane (leadership lost, or Close).
func (d *Dispatcher) stopLanes() {
	d.mu.Lock()
	for sid, l := range d.lanes {
		l.cancel()
		delete(d.lanes, sid)
	}
	d.mu.Unlock()
}

// exit removes l unless it was woken meanwhile; it reports whether l
// should stop.
func (d *Dispatcher) exit(l *lane) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-l.wake:
		return false
	default:
	}
	if d.lanes[l.svc] == l {
		delete(d.lanes, l.svc)
	}
	return true
}

// outcome is what one attempt came to.
type outcome int

const (
	delivered outcome = iota
	retry             // try again later
	abandon           // never again
)

func (d *Dispatcher) runLane(ctx context.Context, l *lane) {
	defer l.senders.Wait()
	for ctx.Err() == nil {
		l.mu.Lock()
		clear(l.ended) // what the page read next shows of them is current
		l.mu.Unlock()
		var page []*chorus.OutboxEntry
		err := d.cfg.Store.View(ctx, func(tx chorus.ReadTx) (err error) {
			page, err = tx.Outbox(ctx, l.svc, perKey, pageSize)
			return err
		})
		if err != nil {
			if ctx.Err() == nil {
				d.warnRateLimited("webhook: read outbox", "service", l.svc, "err", err)
			}
			if !sleep(ctx, l, d.cfg.Poll) {
				return
			}
			continue
		}
		if len(page) == 0 {
			if d.exit(l) {
				return
			}
			continue
		}
		next := d.round(ctx, l, page)
		if next.IsZero() {
			continue // progress: read on
		}
		if !sleep(ctx, l, next.Sub(d.Now())) {
			return
		}
	}
}

// sleep waits d or until l is woken; false when ctx ended.
func sleep(ctx context.Context, l *lane, d time.Duration) bool {
	t := time.NewTimer(max(d, time.Millisecond))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-l.wake:
	}
	return true
}

// round starts a sender (send) for each object (OrderKey) of a page of one
// service's outbox that has an entry due and none at work, up to
// Concurrency senders at once, and returns without waiting for them: an
// object whose receiver is slow holds back its own later webhooks only,
// and a sender's end wakes the lane to start the next. It returns when
// the next entry is due, or zero when senders made progress since the
// last round (read the outbox again).
func (d *Dispatcher) round(ctx context.Context, l *lane, page []*chorus.OutboxEntry) (next time.Time) {
	h := d.healthOf(l.svc)
	now := d.Now()
	svc, err := d.service(ctx, l.svc)
	if err == nil && h.newURL(&d.mu, svc.WebhookURL) {
		// Another receiver: the old one's pause and backoff are not its.
		// The requests still out to it are called off, and their senders
		// end before the outbox is read again: a sender that recorded a
		// retry just before the change (its backoff the old receiver's)
		// was skipped by a dueNow on the page read before, and its entry
		// waited out that backoff (TestNewWebhookURLEndsPause failed so
		// under load). The next round makes the fresh page due.
		l.callOffSends()
		l.senders.Wait() // only round adds senders: no Add races this
		l.dueOnce = true
		return time.Time{}
	}
	if l.dueOnce {
		l.dueOnce = false
		d.dueNow(ctx, l, page, now)
	}
	if until := h.pause(&d.mu); until.After(now) {
		return until
	}
	page, ok := d.deleteUndeleted(ctx, page)
	if !ok {
		return now.Add(d.cfg.Poll) // the store still cannot delete: send nothing again
	}
	if len(page) == 0 {
		return time.Time{} // progress: read on
	}
	var acct *chorus.Account
	if err == nil {
		err = d.cfg.Store.View(ctx, func(tx chorus.ReadTx) (err error) {
			acct, err = tx.Account(ctx, svc.AccountSID)
			return err
		})
	}
	switch {
	case errors.Is(err, chorus.ErrNotFound) || (err == nil && svc.WebhookURL == ""):
		// The service or its webhook went away: nothing to send to.
		done := &doneSet{}
		for _, e := range page {
			if !l.isSending(e.OrderKey) { // a sender finds out for itself
				d.finish(ctx, h, e, attemptResult{res: abandon, why: "the service has no webhook URL any more", drop: true}, done)
			}
		}
		if !d.remove(ctx, done) {
			return now.Add(d.cfg.Poll)
		}
		return time.Time{}
	case err != nil:
		if ctx.Err() == nil {
			d.warnRateLimited("webhook: service lookup", "service", l.svc, "err", err)
		}
		return now.Add(d.cfg.Poll)
	}

	d.applyUnrecorded(page)
	var order []string
	byKey := map[string][]*chorus.OutboxEntry{}
	for _, e := range page {
		if _, ok := byKey[e.OrderKey]; !ok {
			order = append(order, e.OrderKey)
		}
		byKey[e.OrderKey] = append(byKey[e.OrderKey], e)
	}
	note := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	var due []dueObject
	for _, key := range order {
		entries := byKey[key]
		if age := now.Sub(entries[0].DateCreated); entries[0].NextAttempt.After(now) && (age < d.cfg.MaxAge || entries[0].Attempts == 0 && age < maxUnattemptedAge) {
			note(entries[0].NextAttempt)
			continue
		}
		due = append(due, dueObject{key, entries})
	}
	if len(due) > 1 && h.failing(&d.mu) {
		// The pause of a failing receiver ended: the first request is
		// for the newest object not yet tried. The oldest due are likely
		// those that failed (a receiver that fails on some payloads
		// only), and sending only them again kept the receiver paused,
		// ever longer, while the other objects waited behind them (11
		// minutes for a tester's, behind 20 failing documents); one
		// success ends the run of failures.
		due = probeFirst(due)
	}
	// Senders take the due objects in page order, each the next as it
	// ends, so the outbox is read again only when they ran out.
	sctx := l.sendCtx(ctx)
	for _, o := range l.queue(due) {
		l.senders.Add(1)
		go func() {
			defer l.senders.Done()
			for ok := true; ok; o, ok = l.nextDue(o.key, svc.WebhookURL, h, &d.mu) {
				progress, retryAt := d.send(ctx, sctx, h, svc, acct, o.entries)
				l.noteSent(progress, retryAt)
			}
			l.poke()
		}()
	}
	progress, retryAt := l.takeNews()
	if progress {
		return time.Time{}
	}
	if !retryAt.IsZero() {
		note(retryAt)
	}
	if next.IsZero() {
		next = now.Add(d.cfg.Poll) // senders at work wake the lane when they end
	}
	return next
}

// probeFirst moves to the front of due the newest object whose first
// entry was never attempted, if any; the others keep their order.
func probeFirst(due []dueObject) []dueObject {
	best := -1
	for i, o := range due {
		if e := o.entries[0]; e.Attempts == 0 && (best < 0 || !e.DateCreated.Before(due[best].entries[0].DateCreated)) {
			best = i
		}
	}
	if best <= 0 {
		return due
	}
	o := due[best]
	copy(due[1:best+1], due[:best])
	due[0] = o
	return due
}

// dueNow makes the entries of page that wait for a retry due at now, but
// for the objects a sender works on, which record their own.
func (d *Dispatcher) dueNow(ctx context.Context, l *lane, page []*chorus.OutboxEntry, now time.Time) {
	var waiting []*chorus.OutboxEntry
	for _, e := range page {
		if e.NextAttempt.After(now) && !l.isSending(e.OrderKey) {
			waiting = append(waiting, e)
		}
	}
	d.recordDue(ctx, waiting, now)
}

// recordDue makes entries due at now, in the outbox too (senders may take
// them only in later rounds). A store that fails to record it leaves them
// to their backoff.
func (d *Dispatcher) recordDue(ctx context.Context, entries []*chorus.OutboxEntry, now time.Time) {
	if len(entries) == 0 {
		return
	}
	for _, e := range entries {
		e.NextAttempt = now
	}
	err := d.cfg.Store.Update(ctx, func(tx chorus.Tx) error {
		for _, e := range entries {
			if err := tx.UpdateOutbox(ctx, e); err != nil && !errors.Is(err, chorus.ErrNotFound) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		d.warnRateLimited("webhook: retry at the new webhook URL", "service", entries[0].ServiceSID, "err", err)
	}
}

// sendCtx is the context of the senders a round starts: ctx's, called off
// (callOffSends) when the service's webhook URL changes.
func (l *lane) sendCtx(ctx context.Context) context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sends == nil || l.sends.Err() != nil {
		l.sends, l.callOff = context.WithCancel(ctx)
	}
	return l.sends
}

// callOffSends cancels the requests of the senders at work.
func (l *lane) callOffSends() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.callOff != nil {
		l.callOff()
	}
}

// dueObject is an object of the page with an entry due, and its entries.
type dueObject struct {
	key     string
	entries []*chorus.OutboxEntry
}

// isSending reports whether a sender works on object key, or ended since
// the page was read.
func (l *lane) isSending(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sending[key] || l.ended[key]
}

// queue replaces the objects waiting for a sender with due (a page read
// just now), less those a sender works on or ended since the read (the
// page may still hold what it delivered), and returns those to start
// senders for at once: up to max senders in all.
func (l *lane) queue(due []dueObject) []dueObject {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waiting = l.waiting[:0]
	for _, o := range due {
		if !l.sending[o.key] && !l.ended[o.key] {
			l.waiting = append(l.waiting, o)
		}
	}
	var start []dueObject
	for l.busy < l.max {
		o, ok := l.take()
		if !ok {
			break
		}
		l.busy++
		start = append(start, o)
	}
	return start
}

// take hands out the first waiting object a sender may work on: one whose
// first entry is a retry only while fewer than max-1 senders work on
// retries. A receiver that hangs for some objects would otherwise have
// their retries hold every request, and every other object wait for their
// timeouts. l.mu must be held.
func (l *lane) take() (dueObject, bool) {
	for i, o := range l.waiting {
		retry := o.entries[0].Attempts > 0
		if retry && l.max > 1 && len(l.retrying) >= l.max-1 {
			continue
		}
		l.waiting = slices.Delete(l.waiting, i, i+1)
		l.sending[o.key] = true
		if retry {
			l.retrying[o.key] = true
		}
		return o, true
	}
	return dueObject{}, false
}

// nextDue releases object done and hands its sender the next waiting
// object it may take, unless there is none or the service's webhook URL is
// no longer url (the next round starts senders for the new one); then the
// sender ends.
func (l *lane) nextDue(done, url string, h *health, hmu *sync.Mutex) (dueObject, bool) {
	same := h.sendsTo(hmu, url) // the Dispatcher's mutex, never inside the lane's
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.sending, done)
	delete(l.retrying, done)
	l.ended[done] = true
	if same {
		if o, ok := l.take(); ok {
			return o, true
		}
	}
	l.busy--
	return dueObject{}, false
}

// noteSent notes what a sender saw: an entry delivered or given up on
// (progress), when its object's next entry is due.
func (l *lane) noteSent(progress bool, retryAt time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.progress = l.progress || progress
	if !retryAt.IsZero() && (l.next.IsZero() || retryAt.Before(l.next)) {
		l.next = retryAt
	}
}

// takeNews returns and clears what the senders saw.
func (l *lane) takeNews() (progress bool, next time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	progress, next = l.progress, l.next
	l.progress, l.next = false, time.Time{}
	return progress, next
}

// send attempts the entries of one object in order, up to the first that
// is not due or fails, and deletes those delivered or given up on before
// it returns (so that the lane, which may start another sender for the
// object then, never sees them again). It reports whether any left the
// outbox and when the next one is due (zero: none known).
func (d *Dispatcher) send(ctx, sctx context.Context, h *health, svc *chorus.Service, acct *chorus.Account, entries []*chorus.OutboxEntry) (progress bool, next time.Time) {
	done := &doneSet{}
	defer func() {
		if !d.remove(ctx, done) {
			progress, next = false, d.Now().Add(d.cfg.Poll) // the next round deletes them first
		}
	}()
	for _, e := range entries {
		if ctx.Err() != nil || !h.sendsTo(&d.mu, svc.WebhookURL) {
			return progress, time.Time{} // shutting down, or the lane sends elsewhere now
		}
		if until := h.pause(&d.mu); until.After(d.Now()) {
			return progress, until
		}
		// Too old, but only once attempted: a webhook whose event
		// committed is sent at least once, even after the server was
		// down for longer than MaxAge, unless it is older than
		// maxUnattemptedAge (a backlog of days is not news to any
		// receiver). Past MaxAge, an attempted one gets a last attempt
		// when its receiver looks healthy, or as the probe of a failing
		// one (one per pause): the pause of a receiver that came back
		// must not use up the webhooks' time unsent.
		last, probe := false, false
		if age := d.Now().Sub(e.DateCreated); age >= d.cfg.MaxAge && (e.Attempts > 0 || age >= maxUnattemptedAge) {
			var wait bool
			if age < maxUnattemptedAge {
				last, probe, wait = h.lastChance(&d.mu)
			}
			if wait {
				return progress, d.Now().Add(d.cfg.Poll) // another sender's probe tells
			}
			if !last {
				d.finish(ctx, h, e, attemptResult{res: abandon, status: e.LastStatus, why: "gave up: older than " + d.cfg.MaxAge.String(), unattempted: true}, done)
				progress = true
				continue
			}
		}
		if !last && e.NextAttempt.After(d.Now()) {
			return progress, e.NextAttempt
		}
		// A place among the node's requests in flight: waiting for one
		// is not the receiver's time, and counts as no attempt.
		release, ok := d.requestSlot(ctx)
		if !ok || !d.stillLeading(ctx) {
			release()
			if probe {
				h.probed(&d.mu)
			}
			return progress, time.Time{} // shutting down, or the entry stays for the leader
		}
		r := d.attempt(sctx, svc, acct, e)
		release()
		if ctx.Err() != nil {
			if probe {
				h.probed(&d.mu)
			}
			return progress, time.Time{} // shutting down: the entry stays for later
		}
		if r.res != delivered && !h.sendsTo(&d.mu, r.url) {
			// The URL changed while the request was out (and called it
			// off): it was the old receiver's; the webhook is the new
			// one's, due at once, its attempts untouched.
			if probe {
				h.probed(&d.mu)
			}
			d.recordDue(ctx, []*chorus.OutboxEntry{e}, d.Now())
			return progress, e.NextAttempt
		}
		switch {
		case r.res == retry && last:
			r.res, r.transient, r.why = abandon, true, fmt.Sprintf("gave up: older than %s, and its last attempt failed: %s", d.cfg.MaxAge, r.why)
		case r.res == retry && e.Attempts+1 >= d.cfg.Attempts:
			r.res, r.transient, r.why = abandon, true, fmt.Sprintf("gave up after %d attempts: %s", e.Attempts+1, r.why)
		}
		recorded := d.finish(ctx, h, e, r, done)
		if f := afterRecord.Load(); f != nil {
			(*f)()
		}
		if probe {
			h.probed(&d.mu) // after finish: its outcome is the receiver's health now
		}
		if !recorded {
			return progress, d.Now().Add(d.cfg.Poll)
		}
		if r.res == retry {
			return progress, e.NextAttempt
		}
		progress = true
	}
	return progress, time.Time{}
}

// afterRecord, set by tests only, runs after a sender recorded an
// attempt: it widens the window in which the webhook URL can change under
// a sender that is about to end.
var afterRecord atomic.Pointer[func()]

// doneSet collects the entries of a round that leave the outbox: one
// transaction deletes them when the round ends (a crash before that sends
// them again: at least once), and moves those given up on to the
// abandoned webhooks.
type doneSet struct {
	mu     sync.Mutex
	seqs   []int64
	gaveUp map[int64]*givenUp // of seqs, those kept as abandoned
}

// givenUp is an entry given up on, to be kept among the abandoned
// webhooks (chorus.Tx.AbandonOutbox): Seq, Attempts (made in all),
// LastStatus and LastError (why), and when.
type givenUp struct {
	entry chorus.OutboxEntry // without Event
	at    time.Time
}

func (s *doneSet) add(seq int64) {
	s.mu.Lock()
	s.seqs = append(s.seqs, seq)
	s.mu.Unlock()
}

// abandon adds an entry that is kept as abandoned, for g.
func (s *doneSet) abandon(seq int64, g *givenUp) {
	s.mu.Lock()
	s.seqs = append(s.seqs, seq)
	if s.gaveUp == nil {
		s.gaveUp = map[int64]*givenUp{}
	}
	s.gaveUp[seq] = g
	s.mu.Unlock()
}

// remove deletes the entries of done from the outbox and reports whether
// the store did. What it failed to delete is kept in d.undeleted, so that
// the next rounds delete those entries again rather than send them again.
func (d *Dispatcher) remove(ctx context.Context, done *doneSet) bool {
	if len(done.seqs) == 0 {
		return true
	}
	if err := d.deleteOutbox(ctx, done.seqs, done.gaveUp); err != nil {
		d.warnRateLimited("webhook: delete delivered webhooks (deleted again before anything is sent)", "err", err)
		d.mu.Lock()
		for _, seq := range done.seqs {
			if len(d.undeleted) < maxUnrecorded {
				d.undeleted[seq] = done.gaveUp[seq] // past the bound: sent again, at least once
			}
		}
		d.mu.Unlock()
		return false
	}
	return true
}

// deleteOutbox deletes entries seqs from the outbox; those in gaveUp are
// kept as abandoned webhooks (unless Config.KeepAbandoned is negative).
func (d *Dispatcher) deleteOutbox(ctx context.Context, seqs []int64, gaveUp map[int64]*givenUp) error {
	ctx = context.WithoutCancel(ctx) // they were sent: record it
	return d.cfg.Store.Update(ctx, func(tx chorus.Tx) error {
		for _, seq := range seqs {
			var err error
			if g := gaveUp[seq]; g != nil && d.keepsAbandoned() {
				err = tx.AbandonOutbox(ctx, &g.entry, g.at)
			} else {
				err = tx.DeleteOutbox(ctx, seq)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// deleteUndeleted deletes the entries of page that an earlier round sent
// but could not delete, and returns the rest of the page; false when the
// store still fails (the caller sends nothing and waits).
func (d *Dispatcher) deleteUndeleted(ctx context.Context, page []*chorus.OutboxEntry) ([]*chorus.OutboxEntry, bool) {
	d.mu.Lock()
	if len(d.undeleted) == 0 {
		d.mu.Unlock()
		return page, true
	}
	var seqs []int64
	gaveUp := map[int64]*givenUp{}
	rest := page[:0:0]
	for _, e := range page {
		if g, ok := d.undeleted[e.Seq]; ok {
			seqs = append(seqs, e.Seq)
			if g != nil {
				gaveUp[e.Seq] = g
			}
		} else {
			rest = append(rest, e)
		}
	}
	d.mu.Unlock()
	if len(seqs) == 0 {
		return page, true
	}
	if err := d.deleteOutbox(ctx, seqs, gaveUp); err != nil {
		d.warnRateLimited("webhook: delete delivered webhooks (deleted again before anything is sent)", "err", err)
		return nil, false
	}
	d.mu.Lock()
	for _, seq := range seqs {
		delete(d.undeleted, seq)
	}
	d.mu.Unlock()
	return rest, true
}

// finish records the outcome of an attempt in the service's health and,
// for a retry, in the outbox (false when the store failed); delivered and
// abandoned entries go to done.
func (d *Dispatcher) finish(ctx context.Context, h *health, e *chorus.OutboxEntry, r attemptResult, done *doneSet) bool {
	ctx = context.WithoutCancel(ctx) // the attempt happened: record it
	r.why = reasonText(r.why)
	res, status, why := r.res, r.status, r.why
	attempt := e.Attempts + 1
	var err error
	switch {
	case res == delivered, res == abandon && r.drop:
		done.add(e.Seq)
	case res == abandon:
		attempts := e.Attempts
		if !r.unattempted {
			attempts++
		}
		done.abandon(e.Seq, &givenUp{at: d.Now(), entry: chorus.OutboxEntry{
			Seq: e.Seq, Attempts: attempts, LastStatus: status, LastError: why}})
	case res == retry:
		e.Attempts++
		// A Retry-After is the least the receiver asks for: a short one
		// must not use up the attempts faster than the backoff would.
		e.NextAttempt = d.Now().Add(max(backoff(d.cfg.RetryBase, e.Attempts), r.retryAfter))
		e.LastStatus, e.LastError = status, why
		err = d.cfg.Store.Update(ctx, func(tx chorus.Tx) error { return tx.UpdateOutbox(ctx, e) })
		if errors.Is(err, chorus.ErrNotFound) {
			err = nil // trimmed meanwhile (the service's cap)
		}
	}
	if err != nil {
		d.warnRateLimited("webhook: record delivery", "service", e.ServiceSID, "err", err)
		d.noteUnrecorded(e)
		return false
	}
	d.forgetUnrecorded(e.Seq)
	switch res {
	case delivered:
		d.Sent.Add(1)
	case retry:
		d.Retried.Add(1)
	case abandon:
		d.Abandoned.Add(1)
		d.warnRateLimited("webhook: abandoned", "service", e.ServiceSID, "event", e.Event.Type, "object", e.Event.ObjectSID,
			"token", IdempotencyToken(e), "status", status, "reason", why)
	}
	if r.url != "" && !h.sendsTo(&d.mu, r.url) {
		return true // to a URL the service no longer has: says nothing of its receiver now
	}
	if paused := h.record(&d.mu, d.Now(), e, attempt, r, d.cfg.RetryBase); paused > 0 {
		d.log.Warn("webhook: receiver failing: paused", "service", e.ServiceSID, "status", status,
			"reason", why, "paused", paused.Round(time.Millisecond))
	}
	return true
}

// maxUnattemptedAge is the age past which a webhook is given up on
// without an attempt (MaxAge applies only once attempted).
const maxUnattemptedAge = 24 * time.Hour

// attemptResult is how one attempt went.
type attemptResult struct {
	res        outcome
	status     int           // the receiver's HTTP status; 0: none
	why        string        // for a failure
	retryAfter time.Duration // the receiver's Retry-After, for this entry's retry
	// unattempted: given up on without a request (too old), which says
	// nothing of the receiver.
	unattempted bool
	// drop: given up on for want of a receiver (the service or its
	// webhook URL is gone): not kept among the abandoned webhooks, as
	// there is nowhere to send them again.
	drop bool
	// transient: the request failed as a retry would (no answer, 429,
	// 5xx), though the webhook is given up on (its last attempt).
	transient bool
	url       string    // the webhook URL the request went to ("" if none)
	started   time.Time // when the request began (Dispatcher.Now)
}

// requestSlot waits under ctx for a place among the node's requests in
// flight (Config.MaxInFlight); release gives it back. False when ctx ended
// first.
func (d *Dispatcher) requestSlot(ctx context.Context) (release func(), ok bool) {
	select {
	case d.inFlight <- struct{}{}:
		return func() { <-d.inFlight }, true
	case <-ctx.Done():
		return func() {}, false
	}
}

// attempt posts one outbox entry. It never logs the URL's secrets
// (user:password@, a token in the query): errors are redacted and the URL
// is never part of a reason.
func (d *Dispatcher) attempt(ctx context.Context, svc *chorus.Service, acct *chorus.Account, e *chorus.OutboxEntry) attemptResult {
	started := d.Now()
	r := d.post(ctx, svc, acct, e)
	r.url, r.started = svc.WebhookURL, started
	return r
}

// post makes the request of one attempt.
func (d *Dispatcher) post(ctx context.Context, svc *chorus.Service, acct *chorus.Account, e *chorus.OutboxEntry) attemptResult {
	target := svc.WebhookURL
	if err := d.cfg.Policy.checkURL(target, false); err != nil {
		d.Failed.Add(1)
		return attemptResult{res: abandon, why: chorus.AsError(err).Message}
	}
	params := Params(e.Event)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(params.Encode()))
	if err != nil {
		d.Failed.Add(1)
		return attemptResult{res: abandon, why: "invalid webhook URL"}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "Chorus-Sync-Webhooks/1")
	req.Header.Set(LoopHeader, "1")
	req.Header.Set("I-Twilio-Idempotency-Token", IdempotencyToken(e))
	if u := req.URL.User; u != nil {
		// Twilio's user:password@ in a webhook URL: HTTP Basic
		// authentication, sent with the first request (Twilio sends it
		// after the receiver's 401 asks for it).
		password, _ := u.Password()
		req.SetBasicAuth(u.Username(), password)
	}
	req.Header.Set("X-Twilio-Signature", Signature(acct.AuthToken, requestedURL(target, req.URL), params))
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		d.Failed.Add(1)
		if errors.Is(err, ErrRefusedAddress) {
			// The address goes to the operator's log only: the reason is
			// shown to the service's account, which could otherwise learn
			// what this host's resolver makes of internal names.
			d.warnRateLimited("webhook: address refused", "service", e.ServiceSID, "err", redactErr(err))
			return attemptResult{res: abandon, why: refusedAddressWhy}
		}
		return attemptResult{res: retry, why: redactErr(err)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return attemptResult{res: delivered, status: code, why: ""}
	case code == http.StatusLoopDetected:
		d.Failed.Add(1)
		return attemptResult{res: abandon, status: code, why: "the webhook URL points at a Chorus server (loop refused)"}
	case code == http.StatusTooManyRequests || code >= 500:
		d.Failed.Add(1)
		return attemptResult{res: retry, status: code, why: "answered " + resp.Status, retryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	case code >= 300 && code < 400:
		d.Failed.Add(1)
		return attemptResult{res: abandon, status: code, why: "answered " + resp.Status + " (redirects are not followed)"}
	default:
		d.Failed.Add(1)
		return attemptResult{res: abandon, status: code, why: "answered " + resp.Status}
	}
}

// LoopHeader marks the requests of webhooks: a Chorus server refuses a
// request that carries it (508), so that a webhook never calls Chorus.
const LoopHeader = "X-Chorus-Webhook"

// requestedURL is the webhook URL as its receiver sees it requested, which
// is what a validator (twilio's validateRequest) signs again: without its
// fragment (never sent), with "/" for an empty path (what goes on the
// wire), percent-encoded as on the wire. For an ordinary URL it is the URL
// as configured. It keeps user:password@ exactly as configured (raw, the
// URL u was parsed from): Twilio signs the URL set in it, and twilio-node's
// validateRequest keeps them as given when it tries the URL with and
// without its port, where u.String() would re-encode them ("pa!ss" as
// "pa%21ss").
func requestedURL(raw string, u *url.URL) string {
	c := *u
	c.Fragment, c.RawFragment = "", ""
	if c.Path == "" {
		c.Path, c.RawPath = "/", ""
	}
	if c.User == nil {
		return c.String()
	}
	c.User = nil
	s := c.String()
	prefix := c.Scheme + "://"
	return prefix + rawUserinfo(raw) + "@" + strings.TrimPrefix(s, prefix)
}

// rawUserinfo is the user:password of an absolute URL as written: the
// authority (after "//", up to the first "/", "?" or "#") up to its last
// "@", as url.Parse splits it.
func rawUserinfo(raw string) string {
	_, rest, _ := strings.Cut(raw, "//")
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		return rest[:i]
	}
	return ""
}

// IdempotencyToken (I-Twilio-Idempotency-Token) names an outbox entry's
// event for its receiver's deduplication: the same for every attempt and
// for a replay of an abandoned webhook, different for every event. It is
// derived from the event, not from the outbox's Seq, which starts again
// at 1 in a store the data was migrated or restored into (and changes on
// a replay) and would then name new events like ones already delivered.
func IdempotencyToken(e *chorus.OutboxEntry) string {
	ev := e.Event
	h := sha256.New()
	for _, s := range []string{e.ServiceSID, e.OrderKey, string(ev.Type), ev.ObjectSID, ev.Identity, ev.EndpointID,
		strconv.FormatInt(ev.ID, 10), strconv.FormatInt(ev.DateCreated.UnixNano(), 10)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return e.ServiceSID + "-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// retryAfter reads a receiver's Retry-After (seconds, at most maxPause)
// for the retry of the entry it answered; 0 when absent.
func retryAfter(v string) time.Duration {
	secs, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || secs <= 0 {
		return 0
	}
	return min(time.Duration(secs)*time.Second, maxPause)
}

// maxUnrecorded bounds Dispatcher.unrecorded; past it the store's state
// (an earlier attempt count and due time) applies again.
const maxUnrecorded = 10_000

// unrecordedRetry is what the store failed to record of a retry.
type unrecordedRetry struct {
	attempts int
	next     time.Time
}

// noteUnrecorded remembers e's retry, which the store did not record.
func (d *Dispatcher) noteUnrecorded(e *chorus.OutboxEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.unrecorded) >= maxUnrecorded {
		clear(d.unrecorded)
	}
	d.unrecorded[e.Seq] = unrecordedRetry{attempts: e.Attempts, next: e.NextAttempt}
}

func (d *Dispatcher) forgetUnrecorded(seq int64) {
	d.mu.Lock()
	delete(d.unrecorded, seq)
	d.mu.Unlock()
}

// applyUnrecorded gives the entries of page the retries the store failed
// to record: without them an entry stays due and is sent again at every
// poll, without backoff and without ever reaching the attempt limit.
func (d *Dispatcher) applyUnrecorded(page []*chorus.OutboxEntry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.unrecorded) == 0 {
		return
	}
	for _, e := range page {
		if u, ok := d.unrecorded[e.Seq]; ok && u.attempts > e.Attempts {
			e.Attempts, e.NextAttempt = u.attempts, u.next
		}
	}
}

// maxReason bounds the reason an outbox entry records for its last attempt.
const maxReason = 256

// reasonText is why as the outbox records it and the log shows it: valid
// UTF-8 without control or format characters (a bidirectional override
// would garble the console's list of failures), at most maxReason bytes.
// It may quote a receiver's status line, which is arbitrary bytes, and
// PostgreSQL refuses a NUL or invalid UTF-8 in text: a retry it cannot
// record would be sent again at every poll, without backoff.
func reasonText(why string) string {
	why = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(why, "\uFFFD"))
	if len(why) <= maxReason {
		return why
	}
	cut := maxReason
	for cut > 0 && !utf8.RuneStart(why[cut]) {
		cut--
	}
	return why[:cut]
}

// refusedAddressWhy is the reason recorded for a webhook whose URL's
// host resolved to an address the policy refuses (Policy.checkAddr).
const refusedAddressWhy = "webhook: address not allowed: the URL's host resolves to a loopback, private or reserved address"

// redactErr describes a delivery error without the URL's query (which may
// carry a receiver's secret), and a failed name lookup without the
// resolver's address (an internal one, shown to the service's account).
func redactErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return "lookup " + de.Name + ": " + de.Err
	}
	s := err.Error()
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// leaderFresh is how long a leadership answer holds for senders: the run
// loop asks every Poll, so a live leader's answer is never older than
// that for long. A node that froze (SIGSTOP) for longer than the store's
// lease wakes with senders mid-round and an answer older than this, on
// the monotonic clock, which runs on while a process is stopped.
func (d *Dispatcher) leaderFresh() time.Duration { return min(2*d.cfg.Poll, 5*time.Second) }

// stillLeading reports whether this node may send now: its last
// leadership answer is fresh, or Config.Leader says yes again. On no, it
// stops the lanes at once rather than at the run loop's next check: a
// node that resumed after losing leadership must not send what the new
// leader has sent since, out of order.
func (d *Dispatcher) stillLeading(ctx context.Context) bool {
	if d.cfg.Leader == nil || d.sinceStart()-time.Duration(d.leaderAt.Load()) < d.leaderFresh() {
		return true
	}
	if d.cfg.Leader(ctx) {
		d.leaderAt.Store(int64(d.sinceStart()))
		return true
	}
	d.log.Info("webhook: leadership lost while delivering; stopping")
	d.stopLanes()
	return false
}
