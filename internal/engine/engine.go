package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/ratelog"
)

// Config configures an Engine.
type Config struct {
	Store chorus.Store
	Bus   chorus.Bus
	// Unposted, when set, is called (on the writing goroutine; it must
	// not block) when a committed change could not be published, the
	// first time since the last announcement (AnnounceResync): a Bus
	// that is back already will not report a loss to cover it.
	Unposted func()
	// SharedStore says other nodes write the same store (a cluster). The
	// credential and service caches are then off: another node's change
	// reaches this one only when the bus delivers its control event, a
	// few milliseconds after that node answered, and a revoked key or a
	// deleted service must take effect at once on every node.
	SharedStore bool
	Logger      *slog.Logger     // default slog.Default()
	Now         func() time.Time // default time.Now

	EventRetention time.Duration // how long events stay replayable; default 24h
	EventKeep      int           // newest events kept per object regardless of age; default 1000
	// TrimChunk is how many events one transaction of the hourly
	// whole-log trim looks at (more only when more were created at one
	// instant); default 10,000.
	TrimChunk     int
	SweepInterval time.Duration // TTL sweeper / log trimmer period; default 5s
	// MessageConfirmWait is how long a stream message's publish waits for
	// the bus to confirm it (a stalled NATS server) before 503; default
	// DefaultMessageConfirmWait.
	MessageConfirmWait time.Duration

	// Observe, when set, receives every batch of committed events after
	// they were published (webhooks). It must not block.
	Observe func(events []*chorus.Event)

	// Outbox, when set, is the webhook outbox: it writes the webhooks of
	// every change in the change's own transaction.
	Outbox Outbox

	// CheckWebhookURL, when set, vets a service's WebhookURL (the SSRF
	// policy); it returns a 54051 *chorus.Error.
	CheckWebhookURL func(string) error

	// Leader, when set, is asked before each sweep whether this node should
	// do the cluster's background work. Nil means always (a single node).
	Leader func(ctx context.Context) bool
}

// Outbox is the webhook outbox (internal/webhook's Dispatcher).
type Outbox interface {
	// Wants reports whether e may need a webhook; false only when surely
	// not. It must be cheap.
	Wants(e *chorus.Event) bool
	// Append writes the webhooks of events in tx, the transaction that
	// commits them.
	Append(ctx context.Context, tx chorus.Tx, events []*chorus.Event) error
}

// ServiceCache is an Outbox that caches services' webhook settings: the
// engine calls ServiceChanged after it commits a change of a service, and
// when another node announces one, before the change is answered.
type ServiceCache interface {
	ServiceChanged(serviceSID string)
}

// Engine applies Sync's rules to a Store and publishes committed events on
// a Bus. It is safe for concurrent use.
type Engine struct {
	cfg   Config
	log   *slog.Logger
	start time.Time

	writes atomic.Uint64
	posted atomic.Uint64
	// unposted: a committed change could not be published since the last
	// announcement (AnnounceResync): the Bus was down.
	unposted atomic.Bool
	// busStalled: a stream message's publish was not confirmed, and no
	// ping since answered (confirmPublished).
	busStalled atomic.Bool
	probing    atomic.Bool // a ping of a stalled bus runs (probeBus)
	// unpublishedGate spaces the warnings about changes the bus refused
	// (warnUnpublished).
	unpublishedGate *ratelog.Gate

	lastCreated atomic.Int64 // unix ms of the newest creation time given (createdAt)

	creds    cache[secretsOf]       // by account or API key SID (cache.go)
	services cache[*chorus.Service] // by service SID

	// The log trim's progress (trimEvents), under trimMu: the Before of
	// the last trim (older events have been looked at) and when the last
	// trim that looked at the whole log ran.
	trimMu       sync.Mutex
	trimmedTo    time.Time
	lastFullTrim time.Time
}

// New returns an Engine.
func New(cfg Config) *Engine {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.EventRetention == 0 {
		cfg.EventRetention = 24 * time.Hour
	}
	if cfg.EventKeep == 0 {
		cfg.EventKeep = 1000
	}
	if cfg.TrimChunk <= 0 {
		cfg.TrimChunk = 10_000
	}
	if cfg.MessageConfirmWait == 0 {
		cfg.MessageConfirmWait = DefaultMessageConfirmWait
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = 5 * time.Second
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, start: cfg.Now(), unpublishedGate: ratelog.New(publishWarnEvery, 1)}
	e.subscribeControl()
	if cfg.SharedStore {
		e.creds.off, e.services.off = true, true
	}
	return e
}

// Store is the engine's store.
func (e *Engine) Store() chorus.Store { return e.cfg.Store }

// Bus is the engine's bus.
func (e *Engine) Bus() chorus.Bus { return e.cfg.Bus }

// Stats returns live counters.
func (e *Engine) Stats() Stats {
	return Stats{Writes: e.writes.Load(), EventsPosted: e.posted.Load(), Started: e.start}
}

// now is the engine's clock, truncated to milliseconds: the precision the
// realtime protocol shows, and one every backend stores exactly.
func (e *Engine) now() time.Time { return e.cfg.Now().UTC().Truncate(time.Millisecond) }

// maxCreateLead bounds how far createdAt runs ahead of the clock.
const maxCreateLead = 50 * time.Millisecond

// createdAt is a new object's creation time: now, or a millisecond after
// the newest this engine gave if now is not later. Listings order objects
// by (date_created, sid) and times are kept to the millisecond, so two
// objects created one after the other within a millisecond (a REST create
// takes about that) would otherwise list in the order of their random
// SIDs. A flood of creations can push it at most maxCreateLead ahead of
// the clock; past that it gives the newest time again (ties with it)
// rather than run further ahead. Per engine: creations on different nodes
// are ordered by their clocks only.
func (e *Engine) createdAt(now time.Time) time.Time {
	t := now.UnixMilli()
	for {
		last := e.lastCreated.Load()
		next := t
		if next <= last {
			if last+1-t > maxCreateLead.Milliseconds() {
				return time.UnixMilli(last).UTC()
			}
			next = last + 1
		}
		if e.lastCreated.CompareAndSwap(last, next) {
			return time.UnixMilli(next).UTC()
		}
	}
}

// change collects the events of one Store.Update.
type change struct {
	actor  Actor
	now    time.Time
	events []*chorus.Event
	outbox Outbox // Config.Outbox: emit writes each event's webhooks
}

// emit fills in ev's object fields, allocates its id from obj when the
// event is logged (realtime events of documents, lists and maps), appends
// it to the log, writes its webhooks to the outbox (in tx, when there is
// one) and queues it for publishing. ev must be complete: the store may
// encode it at once. The caller persists obj (whose LastEventID emit
// advanced) afterwards.
func (c *change) emit(ctx context.Context, tx chorus.Tx, obj *chorus.Object, ev *chorus.Event) error {
	ev.AccountSID = obj.AccountSID
	ev.ServiceSID = obj.ServiceSID
	ev.ObjectSID = obj.SID
	ev.Kind = obj.Kind
	ev.UniqueName = obj.UniqueName
	ev.DateCreated = c.now
	ev.Identity = c.actor.Identity
	ev.EndpointID = c.actor.EndpointID
	ev.FromREST = c.actor.System
	if ev.Type.Realtime() && obj.Kind != chorus.KindStream {
		obj.LastEventID++
		ev.ID = obj.LastEventID
		if err := tx.AppendEvent(ctx, ev); err != nil {
			return err
		}
	}
	c.events = append(c.events, ev)
	if c.outbox != nil && tx != nil {
		// In the transaction, before the statement that persists obj:
		// a store that holds writes back (PostgreSQL) sends the event,
		// its webhooks and obj's row in one round trip.
		return c.outbox.Append(ctx, tx, c.events[len(c.events)-1:])
	}
	return nil
}

// update runs fn in a store transaction and, once it committed, publishes
// the events fn emitted.
func (e *Engine) update(ctx context.Context, a Actor, fn func(tx chorus.Tx, c *change) error) error {
	return e.write(ctx, a, false, fn)
}

// upkeep is update for the engine's own upkeep (TTL sweeps, log trims),
// as the system: it counts as a write (Stats.Writes) only when it made
// events, an expiry's removals; an idle node's sweeps every 5 s counted.
// A log trim never counts: it removes history, no object or item.
func (e *Engine) upkeep(ctx context.Context, fn func(tx chorus.Tx, c *change) error) error {
	return e.write(ctx, SystemActor(), true, fn)
}

func (e *Engine) write(ctx context.Context, a Actor, upkeep bool, fn func(tx chorus.Tx, c *change) error) error {
	c := &change{actor: a, outbox: e.cfg.Outbox}
	err := e.cfg.Store.Update(ctx, func(tx chorus.Tx) error {
		c.now = e.now()
		c.events = c.events[:0]
		return fn(tx, c)
	})
	if err != nil && errors.Is(err, chorus.ErrCommitUnknown) {
		err = e.resolveCommit(ctx, c.events, err)
	}
	if err != nil {
		return err
	}
	if !upkeep || len(c.events) > 0 {
		e.writes.Add(1)
	}
	e.publish(ctx, c.events)
	return nil
}

// resolveWait bounds how long a write whose commit's outcome is unknown
// waits for the store to tell (a restarted PostgreSQL recovers in seconds).
var resolveWait = 5 * time.Second

// resolveCommit finds out whether a change whose COMMIT lost its answer
// (err wraps chorus.ErrCommitUnknown) committed: its first event is in the
// log, with this change's time, or it is not. Committed, it is answered
// and published like any other (nil); not committed, the write is refused
// as unavailable and may be retried. A cluster tester's writes answered
// 503 had been stored, and their subscribers never saw them; the SDK's own
// retry of such a list push stored it twice. When the store cannot tell
// within resolveWait, the answer says the write may have been stored, and
// every node is told to re-read what its sessions may have missed.
func (e *Engine) resolveCommit(ctx context.Context, events []*chorus.Event, err error) error {
	var first *chorus.Event // the first event the log keeps (creations and access changes are not logged)
	for _, ev := range events {
		if ev.ID > 0 {
			first = ev
			break
		}
	}
	if first == nil {
		return e.commitUnknown(err)
	}
	// Not the caller's context: a write made must be published even if
	// its client went away meanwhile.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resolveWait)
	defer cancel()
	// Until the COMMIT has ended on the server, a read would not see a
	// transaction about to commit, and call it not made.
	var settler chorus.CommitSettler
	if errors.As(err, &settler) && !settler.Settle(rctx) {
		return e.commitUnknown(err)
	}
	for {
		var stored []*chorus.Event
		verr := e.view(rctx, func(tx chorus.ReadTx) (err error) {
			stored, err = tx.Events(rctx, first.ObjectSID, first.ID-1, 1)
			return err
		})
		switch {
		case verr == nil && len(stored) == 1 && sameEvent(stored[0], first):
			e.log.Warn("a write's commit lost its answer, and it committed: answered as made", "object", first.ObjectSID, "event", first.ID, "err", err)
			return nil
		case verr == nil:
			return err // not committed: a retry makes it once
		}
		select {
		case <-rctx.Done():
			return e.commitUnknown(err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// commitUnknown answers a write whose commit's outcome stays unknown, and
// has every node re-read what its sessions may have missed: it may have
// been made, with events no one published.
func (e *Engine) commitUnknown(err error) error {
	e.markUnposted()
	return chorus.Wrap(chorus.Errorf(chorus.ErrUnavailable,
		"Service unavailable: the database connection was lost while committing; the write may have been made"), err)
}

// sameEvent reports whether the logged event a is b: another write may
// have taken b's id after b's commit failed, at another time or with other
// data.
func sameEvent(a, b *chorus.Event) bool {
	return a.ID == b.ID && a.Type == b.Type && a.DateCreated.Equal(b.DateCreated) &&
		string(a.Data) == string(b.Data) && string(a.ItemData) == string(b.ItemData) && a.ItemKey == b.ItemKey && a.ItemIndex == b.ItemIndex
}

func (e *Engine) publish(ctx context.Context, events []*chorus.Event) {
	if len(events) == 0 {
		return
	}
	if e.cfg.Observe != nil {
		defer e.cfg.Observe(events)
	}
	if e.cfg.Bus == nil {
		return
	}
	// The write is committed: publishing must not be cut short by the
	// caller going away. Subscribers recover lost events from the log.
	if err := e.cfg.Bus.Publish(context.WithoutCancel(ctx), events...); err != nil {
		e.markUnposted()
		e.warnUnpublished(err)
		return
	}
	e.posted.Add(uint64(len(events)))
}

// publishWarnEvery spaces the warnings about changes the bus did not take:
// while it is down, every write fails to publish.
const publishWarnEvery = 10 * time.Second

// warnUnpublished logs that the bus refused a committed change's events,
// at most every publishWarnEvery, with how many changes it refused since
// the last warning (this one's included).
func (e *Engine) warnUnpublished(err error) {
	held, ok := e.unpublishedGate.Allow()
	if !ok {
		return
	}
	e.log.Warn("publish events: the bus did not take committed changes; subscribers get them from the log once it is back",
		"err", err, "changes", held+1)
}

// AnnounceResync tells every node, this one included, to read again what
// its sessions may have missed (chorus.EventResync): call it when events
// may have been lost on their way (a node presumed dead, a connection
// found dead), and when the Bus reconnects while Unposted (the other
// nodes' own connections never dropped, so without it they would learn of
// this node's unposted events only at the object's next write, and of lost
// access changes never). It covers this node's unposted changes. If it
// fails, Unposted reports true, and the server announces again at the
// bus's next reconnect (Server.BusLost).
func (e *Engine) AnnounceResync(ctx context.Context) error {
	if e.cfg.Bus == nil {
		return nil
	}
	e.unposted.Store(false) // what was committed before is re-read
	ev := &chorus.Event{Type: chorus.EventResync, ObjectSID: chorus.ControlTopic, DateCreated: e.now(), FromREST: true}
	if err := e.cfg.Bus.Publish(context.WithoutCancel(ctx), ev); err != nil {
		e.unposted.Store(true)
		return fmt.Errorf("engine: announce resync: %w", err)
	}
	return nil
}

// markUnposted records that a committed change could not be published,
// and tells Config.Unposted the first time since the last announcement.
func (e *Engine) markUnposted() {
	if !e.unposted.Swap(true) && e.cfg.Unposted != nil {
		e.cfg.Unposted()
	}
}

// Unposted reports whether a committed change could not be published
// since the last successful announcement: the other nodes may lack it.
func (e *Engine) Unposted() bool { return e.unposted.Load() }

func (e *Engine) view(ctx context.Context, fn func(tx chorus.ReadTx) error) error {
	return e.cfg.Store.View(ctx, fn)
}

// isNotFound reports whether a store error means a missing row.
func isNotFound(err error) bool { return errors.Is(err, chorus.ErrNotFound) }

// notFoundAs turns a store not-found error into want; other errors pass.
func notFoundAs(err error, want *chorus.Error) error {
	if isNotFound(err) {
		return want
	}
	return err
}
