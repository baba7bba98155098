package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/ratelog"
)

// Defaults: the delivery schedule and limits (README "Webhooks").
const (
	DefaultAttempts    = 5                // attempts per webhook
	DefaultRetryBase   = 5 * time.Second  // first retry; each next one ×4
	DefaultMaxAge      = 15 * time.Minute // abandoned when older
	DefaultTimeout     = 10 * time.Second // per attempt
	DefaultMaxPending  = 10_000           // outbox cap per service
	DefaultConcurrency = 4                // requests in flight per service
	DefaultMaxInFlight = 512              // requests in flight on the node, all services together
	DefaultPoll        = time.Second      // outbox scan period of the delivering node
	DefaultHeartbeat   = 2 * time.Second  // node heartbeat period
	DefaultNodeTimeout = 15 * time.Second // a node silent this long is dead

	// retryFactor multiplies the delay of each further retry.
	retryFactor = 4
	// jitter spreads retries by ±jitter of their delay.
	jitter = 0.2
	// maxPause bounds how long a failing receiver is left alone.
	maxPause = 5 * time.Minute
	// failingAfter consecutive failures mark a receiver failing: it is
	// paused between rounds instead of being sent everything due.
	failingAfter = 3
	// pageSize is the number of outbox entries a service's round reads,
	// perKey of them at most per object.
	pageSize = 200
	perKey   = 20
	// serviceTTL is how long a service's webhook settings are cached.
	serviceTTL = time.Second
	// recentFailures is the number of failures kept per service for the
	// console.
	recentFailures = 20
)

// Config configures a Dispatcher.
type Config struct {
	Store  chorus.Store
	Logger *slog.Logger
	// Policy is the SSRF policy, applied again to every connection.
	Policy Policy
	// Client sends the webhooks; default NewClient(Policy, Timeout, nil).
	// Tests may set one with another resolver; it must not follow
	// redirects.
	Client *http.Client
	// Node names this process in the reachability state; it must be
	// unique to the process (a restarted node is another node).
	Node string
	// Leader, when set, reports whether this node delivers: exactly one
	// node of a cluster should. Nil means always (a single node).
	Leader func(ctx context.Context) bool

	Attempts    int           // default DefaultAttempts
	RetryBase   time.Duration // default DefaultRetryBase
	MaxAge      time.Duration // default DefaultMaxAge
	Timeout     time.Duration // default DefaultTimeout
	MaxPending  int           // default DefaultMaxPending
	Concurrency int           // default DefaultConcurrency
	// MaxInFlight bounds the requests in flight at once, all services
	// together; default DefaultMaxInFlight. Each holds a connection, a
	// file descriptor: services whose receivers hang (4 requests each)
	// must not take the descriptors the node's store, bus and listener
	// need. A request waits for its place outside its timeout.
	MaxInFlight int
	Poll        time.Duration // default DefaultPoll
	Heartbeat   time.Duration // default DefaultHeartbeat
	NodeTimeout time.Duration // default DefaultNodeTimeout
	// KeepAbandoned is how long webhooks given up on are kept to be
	// replayed (Replay); default DefaultKeepAbandoned, negative: none are.
	KeepAbandoned time.Duration
	MaxAbandoned  int // kept per service at most; default DefaultMaxAbandoned
	// ReplayInterval is the least time between two replays of a service's
	// webhooks on this node (Replay); default DefaultReplayInterval,
	// negative: none.
	ReplayInterval time.Duration
	// NodesDead, set on a node of a cluster, is called (on the run loop;
	// it must not block) when the leader presumed nodes dead that had not
	// left (Leave): they may have died between committing changes and
	// publishing them, so the other nodes must read again what their
	// sessions may have missed. Unset, the node is alone, and the dead
	// are its own earlier runs.
	NodesDead func(n int)
	// Nudge, set on a node of a cluster, tells the node that delivers
	// the cluster's webhooks (the leader) which services have new ones in
	// changes committed on this node, so that they go out at once rather
	// than at the leader's next Poll; the leader passes what it hears to
	// Nudged. It is called from one goroutine and must not block. See
	// nudge.go.
	Nudge func(services []string)
	// Clock is this node's wall clock; nil means time.Now. Tests set one
	// that is off, as a node's clock may be. The dispatcher does not stamp
	// or compare times with it directly: see Dispatcher.Now.
	Clock func() time.Time
}

// Dispatcher delivers the webhook outbox. See the package documentation.
type Dispatcher struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wake   chan struct{} // the run loop: something to look at
	// inFlight holds a token per request in flight (Config.MaxInFlight).
	inFlight chan struct{}
	wg       sync.WaitGroup
	runs     atomic.Bool

	leading atomic.Bool // this node delivers
	// leaderAt is when (sinceStart) Config.Leader last said this node
	// leads; senders ask again before an attempt once it is older than
	// leaderFresh (stillLeading).
	leaderAt atomic.Int64 // time.Duration
	beats    atomic.Int64 // heartbeats the store did not know this node at
	// beatingSince is when (sinceStart) the first of this node's
	// unbroken run of heartbeats started (none failed, none missed for
	// NodeTimeout), lastBeat the last one; 0 before any and after a
	// failure. Only a leader that has been beating for NodeTimeout
	// presumes others dead: after a store outage the others need that long
	// to beat again.
	beatingSince, lastBeat atomic.Int64 // time.Duration
	started                time.Time    // New's time, monotonic
	// skew is the store's clock minus Config.Clock, in ns, as the last
	// heartbeat read them (Now); skewKnown once one has (or Append did,
	// before any heartbeat succeeded).
	skew      atomic.Int64
	skewKnown atomic.Bool
	// warnGate spaces the warnings of failing deliveries (warnRateLimited).
	warnGate *ratelog.Gate

	mu       sync.Mutex
	services map[string]cachedService // by SID
	lanes    map[string]*lane         // by service SID, while leading
	health   map[string]*health       // by service SID
	// unrecorded are retries the store failed to record (UpdateOutbox),
	// by Seq: rounds apply them to the entries they read, so that the
	// receiver still sees the backoff and the attempt limit.
	unrecorded map[int64]unrecordedRetry
	// undeleted are entries delivered or given up on that the store failed
	// to delete, by Seq: rounds delete them again instead of sending them
	// again (a store that reads but cannot write would otherwise have each
	// round post the same page once more, without pause).
	// A given-up entry's value says why: it is kept as abandoned.
	undeleted map[int64]*givenUp
	// replayedAt is when each service's webhooks were last replayed on
	// this node (Replay), at most maxReplayedAt.
	replayedAt map[string]time.Time

	presence presenceQueue
	nudges   nudges
	// nudgeSweep is when (sinceStart) Nudged last asked for a sweep;
	// sweepWaits while one more waits for its turn (sweepSoon).
	nudgeSweep atomic.Int64 // time.Duration
	sweepWaits atomic.Bool

	Sent, Failed, Retried, Abandoned atomic.Uint64
	// DeadNodes counts the nodes this node presumed dead as the leader.
	DeadNodes atomic.Uint64
}

type cachedService struct {
	svc     *chorus.Service
	fetched time.Time
}

// New returns a Dispatcher; Run delivers, Close stops it.
func New(cfg Config) *Dispatcher {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defi := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defi(&cfg.Attempts, DefaultAttempts)
	def(&cfg.RetryBase, DefaultRetryBase)
	def(&cfg.MaxAge, DefaultMaxAge)
	def(&cfg.Timeout, DefaultTimeout)
	defi(&cfg.MaxPending, DefaultMaxPending)
	defi(&cfg.Concurrency, DefaultConcurrency)
	defi(&cfg.MaxInFlight, DefaultMaxInFlight)
	def(&cfg.Poll, DefaultPoll)
	def(&cfg.Heartbeat, DefaultHeartbeat)
	def(&cfg.NodeTimeout, DefaultNodeTimeout)
	if cfg.KeepAbandoned == 0 {
		cfg.KeepAbandoned = DefaultKeepAbandoned
	}
	defi(&cfg.MaxAbandoned, DefaultMaxAbandoned)
	if cfg.ReplayInterval == 0 {
		cfg.ReplayInterval = DefaultReplayInterval
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Client == nil {
		cfg.Client = NewClient(cfg.Policy, cfg.Timeout, nil)
	}
	if cfg.Node == "" {
		cfg.Node = "node-" + strconv.FormatUint(rand.Uint64(), 36)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{
		cfg: cfg, log: cfg.Logger.With("component", "webhook"), started: time.Now(),
		ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), inFlight: make(chan struct{}, cfg.MaxInFlight),
		services: make(map[string]cachedService), lanes: make(map[string]*lane), health: make(map[string]*health),
		unrecorded: make(map[int64]unrecordedRetry),
		undeleted:  make(map[int64]*givenUp),
		replayedAt: make(map[string]time.Time),
		warnGate:   ratelog.New(time.Second, 1),
		nudges:     nudges{pending: make(map[string]struct{}), wake: make(chan struct{}, 1)},
	}
	d.presence.init(d)
	return d
}

// Wants reports whether e may need a webhook: false only when its
// service's cached settings say no. The engine asks it before writing a
// transaction for an event that writes nothing else (stream messages).
func (d *Dispatcher) Wants(e *chorus.Event) bool {
	svc, fresh := d.cached(e.ServiceSID)
	return !fresh || wants(svc, e)
}

// Append writes the outbox entries of the events that their service wants
// a webhook of, in tx: the transaction that commits the events. It is the
// engine's outbox.
func (d *Dispatcher) Append(ctx context.Context, tx chorus.Tx, events []*chorus.Event) error {
	for _, e := range events {
		svc, err := d.serviceIn(ctx, tx, e.ServiceSID)
		if errors.Is(err, chorus.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("webhook: append: %w", err)
		}
		if !wants(svc, e) {
			continue
		}
		now, err := d.storeNow(ctx, tx)
		if err != nil {
			return fmt.Errorf("webhook: append: %w", err)
		}
		if err := tx.AppendOutbox(ctx, newEntry(e, now)); err != nil {
			return fmt.Errorf("webhook: append: %w", err)
		}
	}
	return nil
}

// newEntry is e's outbox entry, due at its creation, now (storeNow).
func newEntry(e *chorus.Event, now time.Time) *chorus.OutboxEntry {
	key := e.ObjectSID
	if e.ObjectSID == "" {
		key = "identity:" + e.Identity
	}
	return &chorus.OutboxEntry{ServiceSID: e.ServiceSID, OrderKey: key, Event: e, NextAttempt: now, DateCreated: now}
}

// storeNow is the store's time for what tx records: Now, or, while no
// heartbeat has read the store's clock yet (the store was away at start),
// that clock read in tx (learnSkew), so that nothing is dated on this
// node's own clock.
func (d *Dispatcher) storeNow(ctx context.Context, tx chorus.ReadTx) (time.Time, error) {
	if d.skewKnown.Load() {
		return d.Now(), nil
	}
	return d.learnSkew(ctx, tx)
}

// learnSkew reads the store's clock in tx and records how far this node's
// is from it (Now); it returns the store's time.
func (d *Dispatcher) learnSkew(ctx context.Context, tx chorus.ReadTx) (time.Time, error) {
	local := d.cfg.Clock()
	now, err := tx.Now(ctx)
	if err != nil {
		return time.Time{}, err
	}
	d.skew.Store(int64(now.Sub(local)))
	d.skewKnown.Store(true)
	return now, nil
}

// HeartbeatEvery is the period of this node's heartbeats (Config.Heartbeat).
func (d *Dispatcher) HeartbeatEvery() time.Duration { return d.cfg.Heartbeat }

// Now is the time on the store's clock, as far as this node knows it:
// Config.Clock corrected by the difference between the two that the last
// heartbeat read (chorus.OutboxReader.Now). Every time the dispatcher
// stores or compares with a stored time is on it, so that a node whose
// own clock is off neither has its webhooks held back (NextAttempt),
// given up on as too old (DateCreated, MaxAge) nor shown with a wrong age
// on another node, nor cuts an identity's debouncing short. Only the
// heartbeat reads the store's clock itself, every Heartbeat.
func (d *Dispatcher) Now() time.Time {
	return d.cfg.Clock().Add(time.Duration(d.skew.Load())).UTC()
}

// Observe hears of committed events; it is the engine's Config.Observe.
// It wakes the delivery of their services' outboxes on this node.
func (d *Dispatcher) Observe(events []*chorus.Event) {
	var last string
	for _, e := range events {
		if e.ServiceSID == last {
			continue
		}
		last = e.ServiceSID
		if svc, fresh := d.cached(e.ServiceSID); fresh && !wants(svc, e) {
			continue
		}
		d.deliverSoon(e.ServiceSID)
	}
}

// wants reports whether svc's settings ask for a webhook of e.
func wants(svc *chorus.Service, e *chorus.Event) bool {
	switch {
	case svc.WebhookURL == "", e.FromREST && !svc.WebhooksFromRestEnabled:
		return false
	case e.Type == chorus.EventEndpointConnected || e.Type == chorus.EventEndpointDisconnected:
		return svc.ReachabilityWebhooksEnabled
	}
	return true
}

// cached returns the cached settings of service sid and whether they are
// fresh.
func (d *Dispatcher) cached(sid string) (*chorus.Service, bool) {
	d.mu.Lock()
	c, ok := d.services[sid]
	d.mu.Unlock()
	return c.svc, ok && time.Since(c.fetched) < serviceTTL
}

// ServiceChanged forgets the cached settings of service sid: the engine
// calls it after committing a change of the service (and when another node
// announces one), so that a write answered after the change is appended
// with the new settings (engine.ServiceCache).
func (d *Dispatcher) ServiceChanged(sid string) {
	d.mu.Lock()
	delete(d.services, sid)
	d.mu.Unlock()
	d.kick(sid) // a new webhook URL ends a pause at once (round)
}

func (d *Dispatcher) remember(svc *chorus.Service) {
	d.mu.Lock()
	if len(d.services) > 10_000 {
		clear(d.services)
	}
	d.services[svc.SID] = cachedService{svc: svc, fetched: time.Now()}
	d.mu.Unlock()
}

// serviceIn returns a service's settings, read in tx when not cached.
func (d *Dispatcher) serviceIn(ctx context.Context, tx chorus.ReadTx, sid string) (*chorus.Service, error) {
	if svc, fresh := d.cached(sid); fresh {
		return svc, nil
	}
	svc, err := tx.Service(ctx, sid)
	if err != nil {
		return nil, err
	}
	d.remember(svc)
	return svc, nil
}

// service returns a service's settings, read from the store when not
// cached.
func (d *Dispatcher) service(ctx context.Context, sid string) (*chorus.Service, error) {
	var svc *chorus.Service
	err := d.cfg.Store.View(ctx, func(tx chorus.ReadTx) (err error) {
		svc, err = d.serviceIn(ctx, tx, sid)
		return err
	})
	return svc, err
}

// warnRateLimited logs at most once a second, with how many warnings it
// held back since the last.
func (d *Dispatcher) warnRateLimited(msg string, args ...any) {
	held, ok := d.warnGate.Allow()
	if !ok {
		return
	}
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	d.log.Warn(msg, args...)
}

// poke wakes the run loop.
func (d *Dispatcher) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx is done or Close: it heartbeats this node, and
// while this node leads, it runs a delivery lane per service with pending
// webhooks, sends endpoint_disconnected when identities go offline, and
// keeps each service's outbox under its cap.
func (d *Dispatcher) Run(ctx context.Context) error {
	if !d.runs.CompareAndSwap(false, true) {
		return errors.New("webhook: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(d.ctx, cancel)
	defer stop()
	defer d.stopLanes()
	if d.cfg.Nudge != nil {
		var nudging sync.WaitGroup
		defer nudging.Wait()
		defer cancel() // before the Wait
		nudging.Go(func() { d.sendNudges(ctx) })
	}

	tick := time.NewTicker(d.cfg.Poll)
	defer tick.Stop()
	var lastBeat, lastLead, lastAbandonedSweep time.Time
	due := time.NewTimer(time.Hour)
	defer due.Stop()
	for {
		now := time.Now()
		if now.Sub(lastBeat) >= d.cfg.Heartbeat {
			lastBeat = now
			if err := d.heartbeat(ctx); err != nil && ctx.Err() == nil {
				d.warnRateLimited("webhook: heartbeat", "err", err)
			}
		}
		if now.Sub(lastLead) >= d.cfg.Poll || !d.leading.Load() {
			lastLead = now
			// Not before the store's clock is known: the lanes compare it
			// with the times the outbox holds.
			lead := d.skewKnown.Load() && (d.cfg.Leader == nil || d.cfg.Leader(ctx))
			if lead {
				d.leaderAt.Store(int64(d.sinceStart()))
			}
			if d.leading.Swap(lead) != lead {
				if lead {
					d.log.Info("webhook: delivering the cluster's webhooks")
				} else {
					d.log.Info("webhook: no longer delivering")
					d.stopLanes()
				}
			}
		}
		if d.leading.Load() {
			next, err := d.reachability(ctx)
			if err != nil && ctx.Err() == nil {
				d.warnRateLimited("webhook: reachability", "err", err)
			}
			if err := d.sweepBacklog(ctx); err != nil && ctx.Err() == nil {
				d.warnRateLimited("webhook: outbox", "err", err)
			}
			if now.Sub(lastAbandonedSweep) >= d.sweepEvery() {
				lastAbandonedSweep = now
				if err := d.sweepAbandoned(ctx); err != nil && ctx.Err() == nil {
					d.warnRateLimited("webhook: abandoned webhooks", "err", err)
				}
			}
			if !next.IsZero() {
				due.Reset(max(next.Sub(d.Now()), time.Millisecond))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-d.wake:
		case <-due.C:
		}
	}
}

// Heartbeat records that this node is alive, as Run does every
// Config.Heartbeat: call it before the node first writes, so that the
// store knows it from then on.
func (d *Dispatcher) Heartbeat(ctx context.Context) error {
	return d.heartbeat(ctx)
}

// heartbeat records that this node is alive; the leader also disconnects
// the endpoints of dead nodes. When the store had presumed this node dead
// (it could not heartbeat for NodeTimeout), its endpoints are recorded
// again.
//
// Heartbeats are stamped, and compared, on the store's clock: a node
// whose own clock is behind the leader's by more than NodeTimeout would
// otherwise be presumed dead at every beat of the leader. The run of beats
// is timed on this process's monotonic clock.
func (d *Dispatcher) heartbeat(ctx context.Context) error {
	start := d.sinceStart()
	since := time.Duration(d.beatingSince.Load())
	if last := time.Duration(d.lastBeat.Load()); last == 0 || start-last > d.cfg.NodeTimeout {
		since = 0 // the run is broken: this beat starts another
	}
	presume := d.leading.Load() && since != 0 && start-since >= d.cfg.NodeTimeout
	var known bool
	var dead int
	var deadBefore time.Time
	err := d.cfg.Store.Update(ctx, func(tx chorus.Tx) error {
		now, err := d.learnSkew(ctx, tx)
		if err != nil {
			return err
		}
		deadBefore = time.Time{}
		if presume {
			deadBefore = now.Add(-d.cfg.NodeTimeout)
		}
		known, dead, err = tx.NodeHeartbeat(ctx, d.cfg.Node, now, deadBefore)
		return err
	})
	if err != nil {
		d.lastBeat.Store(0) // the store was out of reach: the next beat starts another run
		return fmt.Errorf("webhook: heartbeat: %w", err)
	}
	if since == 0 {
		since = start
	}
	d.beatingSince.Store(int64(since))
	d.lastBeat.Store(int64(start))
	// The store does not know this node: it never beat (its first beat),
	// or it was presumed dead, which dropped its endpoints. Recording a
	// connection also records the node, so a node that recorded one was
	// presumed dead even at its first beat (a leader may presume so before
	// it: a test saw alice announced gone and never back). Connections
	// tracked but not yet recorded are not evidence: recording them again
	// counted their sessions twice, and their identities never went
	// offline (1 run in 12 of TestReachabilityWithDebouncing).
	if !known && (d.beats.Add(1) > 1 || d.presence.connected.Load()) {
		d.log.Warn("webhook: this node was presumed dead; recording its endpoints again")
		d.presence.reconnectAll()
	}
	if dead > 0 {
		d.DeadNodes.Add(uint64(dead))
		if fn := d.cfg.NodesDead; fn != nil {
			d.log.Warn("cluster: nodes presumed dead: no heartbeat in the last "+d.cfg.NodeTimeout.String()+" (since before "+deadBefore.Format(time.RFC3339)+"): every node reads again what its sessions may have missed",
				"nodes", dead)
			fn(dead)
		} else {
			// A node alone: the records are its own earlier runs'.
			d.log.Info("webhook: forgot earlier runs of this node that stopped without leaving (killed, or cut short); their sessions' endpoints are disconnected",
				"runs", dead)
		}
	}
	return nil
}

// sinceStart is the time since New on the monotonic clock, at least 1ns
// (0 marks "none" in beatingSince and lastBeat).
func (d *Dispatcher) sinceStart() time.Duration {
	return max(time.Since(d.started), 1)
}

// Leave forgets this node in the store without its being presumed dead
// (Config.NodesDead): call it after Close, once everything the node
// committed has reached the other nodes. A node that does not leave is
// presumed dead NodeTimeout after its last heartbeat.
func (d *Dispatcher) Leave(ctx context.Context) error {
	err := d.cfg.Store.Update(ctx, func(tx chorus.Tx) error {
		return tx.RemoveNode(ctx, d.cfg.Node)
	})
	if err != nil {
		return fmt.Errorf("webhook: leave: %w", err)
	}
	return nil
}

// sweepBacklog starts a lane for every service with pending webhooks and
// trims outboxes over their cap: the oldest pending webhooks of the
// service are abandoned.
func (d *Dispatcher) sweepBacklog(ctx context.Context) error {
	var backlog []*chorus.OutboxBacklog
	err := d.cfg.Store.View(ctx, func(tx chorus.ReadTx) (err error) {
		backlog, err = tx.OutboxBacklog(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("webhook: backlog: %w", err)
	}
	for _, b := range backlog {
		if b.Pending > d.cfg.MaxPending {
			var n int
			err := d.cfg.Store.Update(ctx, func(tx chorus.Tx) (err error) {
				reason := fmt.Sprintf("gave up: over the outbox's cap of %d pending webhooks", d.cfg.MaxPending)
				if n, err = tx.TrimOutbox(ctx, b.ServiceSID, d.cfg.MaxPending, d.Now(), reason); err != nil || d.keepsAbandoned() {
					return err
				}
				_, err = tx.PurgeAbandoned(ctx, b.ServiceSID, time.Time{}) // none are kept
				return err
			})
			if err != nil {
				return fmt.Errorf("webhook: trim outbox of %s: %w", b.ServiceSID, err)
			}
			// The service's health first, so that whoever sees the
			// dispatcher's total sees the service's share too.
			h := d.healthOf(b.ServiceSID)
			d.mu.Lock()
			h.abandoned += uint64(n)
			h.capped += uint64(n)
			d.mu.Unlock()
			d.Abandoned.Add(uint64(n))
			d.warnRateLimited("webhook: outbox over its cap: oldest webhooks abandoned",
				"service", b.ServiceSID, "abandoned", n, "cap", d.cfg.MaxPending)
		}
		d.kick(b.ServiceSID)
	}
	return nil
}

// Backlog returns the pending webhooks of every service, cluster-wide.
func (d *Dispatcher) Backlog(ctx context.Context) ([]*chorus.OutboxBacklog, error) {
	var backlog []*chorus.OutboxBacklog
	err := d.cfg.Store.View(ctx, func(tx chorus.ReadTx) (err error) {
		backlog, err = tx.OutboxBacklog(ctx)
		return err
	})
	return backlog, err
}

// Close stops delivering: it records the presence changes already
// reported (until ctx ends) and cancels deliveries in flight, which stay
// in the outbox and are sent again later (at least once).
func (d *Dispatcher) Close(ctx context.Context) error {
	err := d.presence.flush(ctx)
	d.cancel()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return err
}

// backoff is the delay before retry n (1, 2, …) with jitter.
func backoff(base time.Duration, n int) time.Duration {
	d := float64(base)
	for range n - 1 {
		d *= retryFactor
	}
	d *= 1 - jitter + 2*jitter*rand.Float64()
	return time.Duration(d)
}

// Signature computes X-Twilio-Signature for a form POST to fullURL.
func Signature(authToken, fullURL string, params url.Values) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(fullURL)
	for _, k := range keys {
		vs := append([]string(nil), params[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	mac := hmac.New(sha1.New, []byte(authToken))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// prefixes names each kind's parameters: DocumentSid, ListUniqueName, …
var prefixes = map[chorus.Kind]string{
	chorus.KindDocument: "Document", chorus.KindList: "List", chorus.KindMap: "Map", chorus.KindStream: "Stream",
}

// Params are the webhook form parameters of an event, with Twilio's names.
func Params(e *chorus.Event) url.Values {
	p := url.Values{}
	p.Set("AccountSid", e.AccountSID)
	p.Set("ServiceSid", e.ServiceSID)
	p.Set("EventType", string(e.Type))
	identity := e.Identity
	if identity == "" {
		identity = chorus.SystemIdentity
	}
	p.Set("Identity", identity)
	if e.EndpointID != "" {
		p.Set("EndpointId", e.EndpointID)
	}
	if pre, ok := prefixes[e.Kind]; ok {
		p.Set(pre+"Sid", e.ObjectSID)
		p.Set(pre+"UniqueName", e.UniqueName)
		if e.Revision != "" {
			p.Set(pre+"Revision", e.Revision)
		}
	}
	if e.ID > 0 {
		p.Set("EventId", strconv.FormatInt(e.ID, 10))
	}
	switch e.Type {
	case chorus.EventDocumentCreated, chorus.EventDocumentUpdated:
		p.Set("DocumentData", string(e.Data))
	case chorus.EventListContextUpdated:
		p.Set("ListContext", string(e.Data))
	case chorus.EventListItemAdded, chorus.EventListItemUpdated, chorus.EventListItemRemoved:
		p.Set("ItemIndex", strconv.FormatInt(e.ItemIndex, 10))
		setItem(p, e)
	case chorus.EventMapItemAdded, chorus.EventMapItemUpdated, chorus.EventMapItemRemoved:
		p.Set("ItemKey", e.ItemKey)
		setItem(p, e)
	case chorus.EventStreamMessagePublished:
		p.Set("MessageSid", e.MessageSID)
		p.Set("MessageData", string(e.Data))
	}
	return p
}

func setItem(p url.Values, e *chorus.Event) {
	p.Set("ItemRevision", e.ItemRevision)
	if e.ItemData != nil {
		p.Set("ItemData", string(e.ItemData))
	}
}
