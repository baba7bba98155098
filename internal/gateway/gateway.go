package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/ratelog"
	"github.com/chorus-sync/chorus/token"
)

// DefaultReplayLimit is Config.ReplayLimit's default: 20 store reads of
// ReplayBatch's default per subscription request.
const DefaultReplayLimit = 10_000

// Config configures a Gateway. Zero values take the documented defaults.
type Config struct {
	// WriterPool writes sessions' sockets through the shared writer pool
	// (writer.go) instead of one writer goroutine per session: fewer
	// goroutine wake-ups per event, one goroutine less per session. The
	// server turns it on. rtbench, one CPU, two Go processors, two runs
	// each, pool vs per-session writers: saturated fan-out (1,000 × 1,000/s
	// offered) 602–622k vs 280–315k deliveries/s and 1.6 vs 3.1–3.5 s CPU
	// per million; fanout 5,000 × 10/s e2e p99 140–240 vs 325–583 ms;
	// channels 3,548–3,695 vs 3,139–3,347 writes/s.
	WriterPool bool
	// SharedStore says other nodes write the same store (a cluster): API
	// keys are then read from the store at every init and update instead
	// of a per-node cache, so a key revoked through another node is
	// refused at once, not when its keys_revoked event arrives.
	SharedStore bool

	Engine   *engine.Engine
	Verifier *token.Verifier
	// PublicURL is the base of the absolute URLs in CDS responses and
	// events, e.g. "https://sync.example.com". "" = "http://" + the host
	// the client put in its request.
	PublicURL string
	Logger    *slog.Logger // default slog.Default()

	PingInterval    time.Duration // twilsock ping period; default 30s
	MaxFrameBytes   int           // largest accepted client frame; default 256 KiB
	SendQueueFrames int           // per-connection send queue bound; default 1024
	SendQueueBytes  int           // per-connection send queue bound; default 8 MiB
	// SendQueueBudget bounds the bytes queued by all sessions together:
	// past it, the stuck sessions of the identity that holds the most,
	// over an eighth of it, are closed as slow consumers until the node is
	// under it again; such an identity may not push more past an eighth
	// more, nor anyone past a quarter more (queueBudget, evict.go).
	// Default DefaultSendQueueBudget; negative: no bound but each
	// session's.
	SendQueueBudget int64
	WriteTimeout    time.Duration // a write batch gets WriteTimeout/2 to WriteTimeout; default 10s
	// CoalesceInterval is the shortest time between two writes of live
	// events alone to one session that has fallen behind them, while the
	// writer pool is behind (coalesce.go; pool mode only). Default
	// DefaultCoalesceInterval; negative = never hold a write.
	CoalesceInterval time.Duration
	Now              func() time.Time

	// GapWait is how long an out-of-order event waits for the missing ones
	// before they are read from the store; default 30ms. GapGiveUp is when
	// a gap the store cannot fill is skipped; default 2s.
	GapWait   time.Duration
	GapGiveUp time.Duration
	// ResyncRetry is the first wait before a gap fill or a Resync pass
	// that a store error failed is tried again (doubling up to 30 s for
	// Resync); default 1s.
	ResyncRetry time.Duration
	// ReplayBatch is the number of events read per replay step; default 500.
	ReplayBatch int
	// ReplayLimit is the number of events one subscription request
	// replays at most; past it the subscription is established with
	// replay_status "interrupted" and the client subscribes again from
	// where the replay got to. Default DefaultReplayLimit.
	ReplayLimit int
	// ReplayTime bounds one subscription request's replays likewise, the
	// time spent waiting for the client to read included; default 5s.
	ReplayTime time.Duration
	// ReplaySlots bounds the replays that run at once on this gateway,
	// each holding a batch of events and filling its session's send
	// queue: a reconnect storm of clients far behind took 480 MB with 20
	// of them. A replay that waits for a slot past its ReplayTime is
	// interrupted, and its client subscribes again. Default 4 per CPU,
	// at least 8.
	ReplaySlots int
	// QueryScans bounds the Map scans of queries (instant and live) that
	// run at once on this gateway, so that queries leave the store's
	// readers to everyone else; default DefaultQueryScans. A query waits
	// for a scan at most QueryScanWait (default DefaultQueryScanWait),
	// then is answered 503, which the SDK retries.
	QueryScans    int
	QueryScanWait time.Duration
	// InitTimeout closes connections that send no init; default 30s.
	InitTimeout time.Duration
	// MaxInitBytes is the largest WebSocket message accepted before init
	// succeeded; default DefaultMaxInitBytes (32 KiB). After init the
	// limit is 4×MaxFrameBytes+1 KiB (larger requests are answered 413).
	MaxInitBytes int
	// MaxConns caps the websocket connections of this gateway; more are
	// refused with 503 before the upgrade. 0 = no cap.
	MaxConns int
	// MaxUnauthenticatedPerAddr caps the connections from one client IP
	// (an IPv6 /64) whose init has not succeeded yet; more are refused
	// with 429 before the upgrade. 0 = no cap.
	MaxUnauthenticatedPerAddr int
	// MaxSessionsPerIdentity caps the sessions (successful inits) of one
	// identity of one service on this gateway: one holder of a token
	// cannot take every connection of the node. An init beyond it is
	// answered 429 (20429), which the SDK retries with backoff, so a
	// session gets in once another of the identity's ended. 0 = no cap.
	MaxSessionsPerIdentity int
	// MaxLiveQueriesPerIdentity caps the live queries that the sessions
	// of one identity of one service hold together on this gateway (each
	// session holds at most MaxLiveQueriesPerConn): every item change of a
	// Map re-evaluates each of its live queries, so one end user's
	// sessions could make every write to a Map cost seconds of matching.
	// A query request beyond it is answered 400 54419; a subscription to
	// a live query is left pending, for the SDK to ask again. 0 = no cap.
	MaxLiveQueriesPerIdentity int

	// Presence, when set, hears of every session that starts (a successful
	// init) and ends: the reachability webhooks. Its methods must not block.
	Presence Presence

	// AwaitInit, when set, is called with the upgrade request once the
	// connection is a websocket whose init has not succeeded: it waits on
	// its client. The gateway calls the mark it returns with false while
	// it works on an init and for good once one succeeded or the session
	// ended, and with true when an init was refused and it waits on the
	// client again. The server uses it to let a newcomer at its connection
	// cap take the place of a websocket that has not authenticated (an
	// honest client sends init at once), as it does for a connection
	// still sending its request. mark must not block.
	AwaitInit func(r *http.Request) (mark func(waiting bool))
}

// Presence is told when client endpoints come and go.
type Presence interface {
	Connected(svc *chorus.Service, identity, endpointID string)
	Disconnected(svc *chorus.Service, identity, endpointID string)
}

// Stats are live gateway counters.
type Stats struct {
	Connections   int
	Subscriptions int
	Topics        int    // objects with at least one subscriber
	Delivered     uint64 // live event frames queued to connections
	Merged        uint64 // events, live or replayed, sent inside another's notification (merge.go)
	HeldWrites    uint64 // session writes of live events held back while the writer pool was behind (coalesce.go)
	Replayed      uint64 // replayed event frames
	// ReplaysInterrupted counts replays stopped at ReplayLimit or
	// ReplayTime, for the client to subscribe again from where they got
	// to.
	ReplaysInterrupted uint64
	SlowConsumers      uint64 // connections closed for falling behind
	BudgetClosed       uint64 // of those, closed by the send-queue budget's watcher as its largest stale holders
	QueuedBytes        int64  // bytes queued for or being written to sessions (SendQueueBudget)
	Malformed          uint64 // connections closed for protocol violations
	GapFills           uint64 // out-of-order gaps filled from the store
	GapSkips           uint64 // gaps that could not be filled
	ResyncRetries      uint64 // gap fills and Resync passes run again after a store error
	Resyncs            uint64 // Resync passes completed
	Refused            uint64 // connections refused by MaxConns or MaxUnauthenticatedPerAddr
	InitsRejected      uint64 // init requests refused (a bad, expired or revoked token)
	IdentityRefused    uint64 // inits refused by MaxSessionsPerIdentity
	QueriesRefused     uint64 // live queries refused by MaxLiveQueriesPerIdentity
}

// Gateway is the Twilsock V3.0 endpoint. Mount it at /v3/wsconnect.
type Gateway struct {
	cfg Config
	log *slog.Logger
	hub *hub
	// queued counts the bytes in every session's send queue, bounded by
	// Config.SendQueueBudget.
	queued queueBudget
	// watch is the budget watcher's scratch storage (evict.go).
	watch watchScratch
	// writers write the queues of sessions on plain sockets (writer.go).
	writers *writers
	// tasks runs the sessions' request workers (taskpool.go).
	tasks *taskPool
	// keys caches the Verifier's key lookups (keys.go); nil without a
	// Verifier.
	keys *keyCache

	// draining is set when Close begins: requests are refused (503)
	// while those in flight end.
	draining atomic.Bool

	ctx    context.Context
	cancel context.CancelFunc

	mu          sync.Mutex
	conns       map[*conn]struct{}
	upgrading   int                          // admitted connections not yet in conns
	unauth      map[string]int               // connections without a successful init, by client IP
	perIdentity map[identityKey]*identityUse // sessions and queued bytes by identity
	closed      bool
	wg          sync.WaitGroup

	// replaySlots holds a token per replay step running (ReplaySlots).
	replaySlots chan struct{}
	// scanSlots holds a token per query scan running (QueryScans).
	scanSlots          chan struct{}
	replayed           atomic.Uint64
	replaysInterrupted atomic.Uint64
	merged             atomic.Uint64
	heldWrites         atomic.Uint64
	slowConsumers      atomic.Uint64
	budgetClosed       atomic.Uint64 // by the budget's watcher (evict.go)
	malformed          atomic.Uint64
	refused            atomic.Uint64
	identityRefused    atomic.Uint64
	queriesRefused     atomic.Uint64

	refusalLog    *ratelog.Gate // spaces the refused connections' warnings
	initsRejected atomic.Uint64
	// noisy bounds the log lines clients can cause at will (noisylog.go).
	noisy *noisyLog

	// Resync's single flight: a pass is wanted, a loop runs it.
	resyncWanted, resyncRunning atomic.Bool

	// Service change counters, bumped in the Bus callback
	// (noteServiceChange): service SID → *atomic.Uint64.
	svcGens sync.Map
	// serviceChangedMerged's passes: a service is in svcPass while a pass
	// runs, true when another was asked for meanwhile.
	svcPassMu sync.Mutex
	svcPass   map[string]bool
	svcPasses atomic.Uint64 // serviceChanged passes run (tests)
	// recheckSecretsMerged's pass: running, and asked for again meanwhile.
	keyPassMu                    sync.Mutex
	keyPassRunning, keyPassAgain bool
	// controlDelay (ns) delays the control handlers: tests show that
	// access changes do not wait for them.
	controlDelay  atomic.Int64
	controlCancel func()        // the control topic's Bus subscription
	svcMu         sync.Mutex    // orders service re-reads with their stores (access.go)
	controlEpoch  atomic.Uint64 // control events handled (access.go)
	keysHeard     atomic.Uint64 // changes of keys heard of (keyGen)
}

var _ http.Handler = (*Gateway)(nil)

// New returns a Gateway. cfg.Engine and cfg.Verifier are required.
func New(cfg Config) *Gateway {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 30 * time.Second
	}
	if cfg.MaxFrameBytes <= 0 {
		cfg.MaxFrameBytes = 256 << 10
	}
	if cfg.SendQueueFrames <= 0 {
		cfg.SendQueueFrames = 1024
	}
	if cfg.SendQueueBytes <= 0 {
		cfg.SendQueueBytes = 8 << 20
	}
	if cfg.SendQueueBudget == 0 {
		cfg.SendQueueBudget = DefaultSendQueueBudget
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.CoalesceInterval == 0 {
		cfg.CoalesceInterval = DefaultCoalesceInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.GapWait <= 0 {
		cfg.GapWait = 30 * time.Millisecond
	}
	if cfg.GapGiveUp <= 0 {
		cfg.GapGiveUp = 2 * time.Second
	}
	if cfg.ResyncRetry <= 0 {
		cfg.ResyncRetry = time.Second
	}
	if cfg.ReplayLimit <= 0 {
		cfg.ReplayLimit = DefaultReplayLimit
	}
	if cfg.ReplayTime <= 0 {
		cfg.ReplayTime = 5 * time.Second
	}
	if cfg.ReplayBatch <= 0 {
		cfg.ReplayBatch = 500
	}
	if cfg.QueryScans <= 0 {
		cfg.QueryScans = DefaultQueryScans
	}
	if cfg.QueryScanWait <= 0 {
		cfg.QueryScanWait = DefaultQueryScanWait
	}
	if cfg.ReplaySlots <= 0 {
		cfg.ReplaySlots = max(8, 4*runtime.GOMAXPROCS(0))
	}
	if cfg.InitTimeout <= 0 {
		cfg.InitTimeout = 30 * time.Second
	}
	if cfg.MaxInitBytes <= 0 {
		cfg.MaxInitBytes = DefaultMaxInitBytes
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, conns: make(map[*conn]struct{}), unauth: make(map[string]int), perIdentity: make(map[identityKey]*identityUse), noisy: newNoisyLog(),
		refusalLog: ratelog.New(refusalLogEvery, 1), replaySlots: make(chan struct{}, cfg.ReplaySlots),
		scanSlots: make(chan struct{}, cfg.QueryScans)}
	if cfg.Verifier != nil && cfg.Verifier.Keys != nil && !cfg.SharedStore {
		v := *cfg.Verifier
		g.keys = newKeyCache(v.Keys)
		v.Keys = g.keys.get
		g.cfg.Verifier = &v
	}
	g.queued.max = cfg.SendQueueBudget
	g.queued.perIdentity = identityShareOf(cfg.SendQueueBudget)
	g.ctx, g.cancel = context.WithCancel(context.Background())
	if cfg.SendQueueBudget > 0 {
		g.queued.watch = make(chan struct{}, 1)
		go g.watchLoop()
	}
	g.hub = newHub(g)
	g.writers = newWriters()
	g.tasks = newTaskPool(taskPoolIdle, taskPoolIdleTimeout)
	g.subscribeControl()
	return g
}

// upgrader accepts any Origin, selects no subprotocol and negotiates no
// extension (so no permessage-deflate).
var upgrader = ws.HTTPUpgrader{Timeout: 10 * time.Second}

// ServeHTTP upgrades the request to a WebSocket and starts the session,
// which runs on its own goroutines after ServeHTTP returns (so the HTTP
// server's per-request state is released). Any Origin is accepted;
// authentication happens in the protocol. Connections over MaxConns or
// MaxUnauthenticatedPerAddr are refused before the upgrade.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		// A plain HTTP request: say what this endpoint speaks.
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		http.Error(w, "this is the Twilsock websocket endpoint: connect with a websocket client", http.StatusUpgradeRequired)
		return
	}
	addr := clientAddr(r)
	if !g.admit(w, addr) {
		return
	}
	nc, rw, _, err := upgrader.Upgrade(r, w)
	if err != nil {
		g.unadmit(addr)
		g.log.Debug("gateway: websocket upgrade", slog.Any(logError, err))
		if nc != nil {
			nc.Close()
		}
		return
	}
	// Deadlines the HTTP server set (ReadTimeout, WriteTimeout) stay on a
	// hijacked connection; the session manages its own.
	_ = nc.SetDeadline(time.Time{})
	c := newConn(g, nc, rw.Reader)
	c.addr, c.unauth = addr, true
	if g.cfg.AwaitInit != nil {
		c.initMark = g.cfg.AwaitInit(r)
	}
	g.mu.Lock()
	g.upgrading--
	if g.closed {
		g.dropUnauthLocked(addr)
		c.endAwaitInitLocked()
		g.mu.Unlock()
		nc.Close()
		return
	}
	g.conns[c] = struct{}{}
	g.wg.Add(1)
	g.mu.Unlock()
	c.start()
}

// remove forgets a finished session.
func (g *Gateway) remove(c *conn) {
	g.mu.Lock()
	delete(g.conns, c)
	if c.unauth {
		c.unauth = false
		g.dropUnauthLocked(c.addr)
		c.endAwaitInitLocked()
	}
	g.uncountSessionLocked(c)
	g.mu.Unlock()
	g.wg.Done()
}

// drainTimeout bounds how long Close waits for requests in flight.
const drainTimeout = 3 * time.Second

// Close ends every session and waits for them to finish, or for ctx. It
// first lets the requests in flight end and their replies go out (at most
// drainTimeout), refusing new ones with 503.
func (g *Gateway) Close(ctx context.Context) error {
	g.mu.Lock()
	g.closed = true
	conns := make([]*conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	// Drain: new requests are refused (503), and those in flight end and
	// their replies go out before the sessions close, for at most
	// drainTimeout. A write that committed used to be cut off from its
	// answer, so a client told it failed retried it (a duplicate list
	// item in a tester's rolling restart).
	g.draining.Store(true)
	dctx, dcancel := context.WithTimeout(ctx, drainTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	for _, c := range conns {
		for !c.idle() && dctx.Err() == nil {
			select {
			case <-dctx.Done():
			case <-tick.C:
			}
		}
	}
	tick.Stop()
	dcancel()
	g.cancel()
	if g.controlCancel != nil {
		g.controlCancel()
	}
	for _, c := range conns {
		c.fail(errShutdown)
	}
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.Join(errors.New("gateway: close: sessions still running"), ctx.Err())
	}
}

// Stats returns live counters.
func (g *Gateway) Stats() Stats {
	g.mu.Lock()
	n := len(g.conns)
	g.mu.Unlock()
	topics, subs := g.hub.counts()
	return Stats{
		Connections:        n,
		Subscriptions:      subs,
		Topics:             topics,
		Delivered:          g.hub.delivered.Load(),
		Replayed:           g.replayed.Load(),
		ReplaysInterrupted: g.replaysInterrupted.Load(),
		Merged:             g.merged.Load(),
		HeldWrites:         g.heldWrites.Load(),
		SlowConsumers:      g.slowConsumers.Load(),
		BudgetClosed:       g.budgetClosed.Load(),
		QueuedBytes:        g.queued.used.Load(),
		Malformed:          g.malformed.Load(),
		GapFills:           g.hub.gapFills.Load(),
		GapSkips:           g.hub.gapSkips.Load(),
		ResyncRetries:      g.hub.resyncRetries.Load(),
		Resyncs:            g.hub.resyncs.Load(),
		Refused:            g.refused.Load(),
		IdentityRefused:    g.identityRefused.Load(),
		QueriesRefused:     g.queriesRefused.Load(),
		InitsRejected:      g.initsRejected.Load(),
	}
}
