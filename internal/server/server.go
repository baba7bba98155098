package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/accountapi"
	"github.com/chorus-sync/chorus/internal/admin"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	natsbus "github.com/chorus-sync/chorus/internal/bus/nats"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/gateway"
	"github.com/chorus-sync/chorus/internal/httpapi"
	"github.com/chorus-sync/chorus/internal/ratelog"
	"github.com/chorus-sync/chorus/internal/store/postgres"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
	"github.com/chorus-sync/chorus/internal/webhook"
	"github.com/chorus-sync/chorus/token"
	"github.com/chorus-sync/chorus/web"
)

// DBFile is the name of the SQLite database inside the data directory.
const DBFile = "chorus.db"

// Defaults.
const (
	DefaultTokenTTL        = time.Hour
	DefaultShutdownTimeout = 10 * time.Second
)

// Log attribute keys.
const (
	logAddr    = "addr"
	logErr     = "err"
	logAccount = "TWILIO_ACCOUNT_SID"
	logAPIKey  = "TWILIO_API_KEY"
	logService = "TWILIO_SYNC_SERVICE_SID"
)

// Config configures a Server.
type Config struct {
	// Listen is the address the caller listens on; informational (Run
	// takes the listener).
	Listen string
	// DataDir holds chorus.db; created if missing. Required unless Store
	// is set.
	DataDir string
	// PublicURL is the externally visible base URL; "" derives it from
	// each request.
	PublicURL string
	// TokenTTL is the lifetime of tokens from GET /token; default 1h, at
	// most 24h.
	TokenTTL time.Duration
	// Creds are the credentials to make valid (from the environment); zero
	// means "generate on first start, reuse afterwards".
	Creds  engine.Credentials
	Logger *slog.Logger // default slog.Default()
	// Identities names the callers of /token who present no token to
	// renew; default RandomIdentity.
	Identities IdentitySource
	// DevTokens turns /token on or off; see DevTokensAuto.
	DevTokens DevTokens
	// DevTokensPublic lets /token (while on) answer requests addressed to
	// PublicURL's host and requests forwarded by a proxy; without it only
	// requests to a loopback Host, unforwarded, are answered.
	DevTokensPublic bool
	// MetricsPublic serves /metrics to every client; without it only to
	// loopback peers whose request no proxy forwarded.
	MetricsPublic bool

	// StoreURL selects PostgreSQL (postgres://…) instead of the embedded
	// SQLite store in DataDir; BusURL selects NATS (nats://…) instead of the
	// in-process bus. Both are needed to run several nodes as one cluster.
	StoreURL string
	BusURL   string
	// NodeName names this node in logs and to NATS; default host name.
	NodeName string

	// Store replaces the store and Bus the bus outright (tests). The
	// Server closes both.
	Store chorus.Store
	Bus   chorus.Bus

	// ShutdownTimeout bounds the graceful shutdown; default 10s.
	ShutdownTimeout time.Duration
	// Postgres tunes the PostgreSQL store of StoreURL; the zero value has
	// its defaults.
	Postgres postgres.Config

	// WebhooksAllowPrivate lets webhooks reach loopback and private
	// addresses (development, tests); see webhook.Policy.
	WebhooksAllowPrivate bool
	// Webhooks overrides the webhook dispatcher's settings (tests); its
	// Store, Logger, Policy, Node and Leader are set by New.
	Webhooks webhook.Config
	// WSMaxConns caps this node's websocket connections (503 beyond);
	// WSMaxUnauthPerAddr caps those of one client IP that have not
	// completed init (429 beyond). 0 = no cap.
	WSMaxConns         int
	WSMaxUnauthPerAddr int
	// WSMaxPerIdentity caps the sessions of one identity of a service on
	// this node (429 to an init beyond, which the SDK retries). 0 = no cap.
	WSMaxPerIdentity int
	// WSMaxQueriesPerIdentity caps the live queries of one identity of a
	// service on this node (400 54419 beyond). 0 = no cap.
	WSMaxQueriesPerIdentity int
	// WSQueueBudget is gateway.Config.SendQueueBudget, in bytes: 0 = its
	// default, negative = none.
	WSQueueBudget int64
	// WSCoalesce is gateway.Config.CoalesceInterval: 0 = its default,
	// negative = off.
	WSCoalesce time.Duration
	// WSReplayLimit is gateway.Config.ReplayLimit: 0 = its default.
	WSReplayLimit int
	// Transport sets the HTTP timeouts, connection caps and TLS
	// (transport.go); BusAuth the NATS credentials and TLS.
	Transport Transport
	BusAuth   natsbus.Auth
	// ClusterSecret, when set, signs and verifies every bus event
	// (natsbus.WithSecret); every node needs the same one.
	ClusterSecret string
	// StartWait is how long New keeps trying to reach a PostgreSQL store
	// or NATS bus that does not answer (connection refused, timeout,
	// server starting up) before it gives up: nodes started with or
	// before their dependencies (a machine's boot, a whole cluster's
	// restart) come up once those do. Other errors (authentication, TLS,
	// a bad URL) fail at once, as does everything when it is 0.
	StartWait time.Duration
	// BusPrefix is the NATS subject prefix (natsbus.WithPrefix; default
	// "chorus"): every node of a cluster uses the same, and clusters that
	// share a NATS server had better each have their own.
	BusPrefix string

	clusterID string // the store's cluster identity (New sets it)
}

// Server is one Chorus node.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store chorus.Store
	bus   chorus.Bus
	eng   *engine.Engine
	// unlockDir releases the data directory's serve lock (SQLite; nil
	// otherwise).
	unlockDir func()
	creds     engine.Credentials
	verifier  *token.Verifier
	gw        *gateway.Gateway // nil only if New failed before creating it
	hooks     *webhook.Dispatcher
	// ann sends this node's resync announcements (BusLost, dead nodes).
	ann      *announcer
	handler  http.Handler
	cert     *certificate // nil without TLS
	throttle *throttle

	connsRefused  atomic.Uint64
	nodeID        string        // this node in the store's heartbeats (webhook.Config.Node)
	busUnheard    atomic.Int64  // nodes of the store not heard on the bus (watchBusPeers)
	warnedForward atomic.Bool   // warnUntrustedForward logged
	readyLog      *ratelog.Gate // spaces the readyz warnings (notReady)
	// devTokens: /token is served (DevTokens).
	devTokens bool

	// storeTaken receives an error when the store was taken by another
	// node: this one stops serving (nil: never).
	storeTaken <-chan error

	ran       atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// New opens the store and bus, bootstraps the credentials (logging their
// SIDs, never secrets, when it generated them) and builds the HTTP
// handler. On error everything opened is closed again.
func New(ctx context.Context, cfg Config) (_ *Server, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.TokenTTL < time.Second || cfg.TokenTTL > token.MaxTTL {
		return nil, fmt.Errorf("server: token TTL %v is not between 1s and %v", cfg.TokenTTL, token.MaxTTL)
	}
	if c := cfg.Creds; c != (engine.Credentials{}) && (len(c.AuthToken) < engine.MinSecretLen || len(c.APISecret) < engine.MinSecretLen) {
		return nil, fmt.Errorf("server: the auth token and API secret must be at least %d characters long", engine.MinSecretLen)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	devTokens := devTokensOn(cfg)
	if cfg.Identities == nil {
		cfg.Identities = RandomIdentity{}
	}
	if err := cfg.Transport.check(); err != nil {
		return nil, err
	}
	cfg.Transport.setDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger, store: cfg.Store, bus: cfg.Bus, throttle: newThrottle(), devTokens: devTokens,
		readyLog: ratelog.New(readyLogEvery, 1)}
	if t := cfg.Transport; t.TLSCert != "" {
		s.cert = &certificate{certFile: t.TLSCert, keyFile: t.TLSKey}
		if err := s.cert.load(); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()

	if cfg.NodeName == "" {
		cfg.NodeName, _ = os.Hostname()
		s.cfg.NodeName = cfg.NodeName
	}
	if cfg.NodeName != "" {
		s.log = s.log.With("node", cfg.NodeName)
		s.cfg.Logger = s.log
		cfg.Logger = s.log
	}
	var leader func(context.Context) bool
	if s.store == nil {
		what := "the store"
		if cfg.StoreURL != "" {
			what = "PostgreSQL"
		}
		opened, err := untilAvailable(ctx, s.log, what, cfg.StartWait, func(ctx context.Context) (openedStore, error) {
			return openStore(ctx, cfg)
		})
		if err != nil {
			return nil, err
		}
		s.store, leader, s.unlockDir = opened.store, opened.leader, opened.unlock
	}
	pg, onPostgres := s.store.(*postgres.Store)
	if onPostgres {
		if err := s.adoptCopy(ctx, pg); err != nil {
			return nil, err
		}
	}
	if s.bus == nil {
		if onPostgres && cfg.BusURL != "" {
			id, _, err := pg.ClusterIdentity(ctx)
			if err != nil {
				return nil, fmt.Errorf("server: %w", err)
			}
			cfg.clusterID = id
		}
		b, err := untilAvailable(ctx, s.log, "NATS", cfg.StartWait, func(ctx context.Context) (chorus.Bus, error) {
			return openBus(ctx, cfg, s.BusLost)
		})
		if err != nil {
			return nil, err
		}
		s.bus = b
	}
	policy := webhook.Policy{AllowPrivate: cfg.WebhooksAllowPrivate, Self: cfg.PublicURL}
	hooks := cfg.Webhooks
	hooks.Store, hooks.Logger, hooks.Policy, hooks.Leader = s.store, cfg.Logger, policy, leader
	hooks.Node = cfg.NodeName + "-" + chorus.NewSID("")[:8]
	s.nodeID = hooks.Node
	_, oneNode := s.bus.(*mem.Bus) // an in-process bus: no other node shares the store
	s.ann = &announcer{every: announceEvery, log: s.log, send: func(ctx context.Context) error {
		return s.eng.AnnounceResync(ctx)
	}}
	if !oneNode {
		// A node that died between committing and publishing left the
		// other nodes' sessions without those events.
		hooks.NodesDead = func(int) { go s.ann.request() }
	}
	nb, _ := s.bus.(*natsbus.Bus)
	if nb != nil {
		hooks.Nudge = nb.NudgeWebhooks // the leader sends this node's webhooks at once
	}
	s.hooks = webhook.New(hooks)
	if nb != nil {
		if err := nb.OnWebhookNudge(s.hooks.Nudged); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
	}
	if pg, ok := s.store.(*postgres.Store); ok && oneNode {
		// Make sure of it: a second node without a bus on the database
		// would serve stale credentials and miss this node's events.
		if err := pg.LockSingleNode(ctx); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		s.storeTaken = pg.SingleNodeTaken()
	}
	unposted := func() {
		// A publish that failed just as the bus came back, after
		// BusLost looked: announce it now.
		if nb, ok := s.bus.(*natsbus.Bus); ok && nb.Settled() {
			go s.ann.request()
		}
	}
	s.eng = engine.New(engine.Config{
		Store: s.store, Bus: s.bus, Logger: cfg.Logger, Leader: leader, SharedStore: !oneNode,
		Observe: s.hooks.Observe, Outbox: s.hooks, CheckWebhookURL: policy.CheckURL,
		Unposted: unposted,
	})

	creds, created, err := s.eng.Bootstrap(ctx, cfg.Creds)
	var stale *engine.StaleCredentialsError
	if errors.As(err, &stale) {
		// A node that missed a rotation (restarted by its supervisor
		// with the old environment) serves with the store's credentials
		// and says so; applying its own would undo the rotation on every
		// node.
		s.log.Warn("this node's TWILIO_* credentials were replaced since (a rotation it missed): not applied, serving with the stored ones; give this node the current credentials",
			"replaced", stale.Replaced, logAccount, cfg.Creds.AccountSID, logAPIKey, cfg.Creds.APIKeySID)
		// Read only: this node changes nothing of the credentials (not
		// even a new main key, were the recorded one revoked).
		creds, created = cfg.Creds, false
		if stored, serr := s.eng.StoredCredentials(ctx); serr == nil {
			creds = stored
		}
		cfg.Creds, err = engine.Credentials{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("server: bootstrap credentials: %w", err)
	}
	s.creds = creds
	switch {
	case created && cfg.Creds != (engine.Credentials{}):
		s.log.Info("stored the credentials from the environment", logAccount, creds.AccountSID,
			logAPIKey, creds.APIKeySID, logService, creds.ServiceSID)
	case created:
		// Never the secrets: logs are shipped and kept where the data
		// directory's 0600 files are not.
		how := "run `chorus admin credentials` (with this node's --data-dir)"
		if cfg.StoreURL != "" {
			how = "run `chorus admin credentials` with this node's --store or CHORUS_STORE_URL"
		}
		s.log.Info("generated credentials; "+how+" to print the auth token and API secret",
			logAccount, creds.AccountSID, logAPIKey, creds.APIKeySID, logService, creds.ServiceSID)
	}
	s.logDefaultService(ctx, creds)
	s.verifier = &token.Verifier{Keys: s.eng.APIKey, RequireSync: true}

	s.gw = gateway.New(gateway.Config{
		Engine: s.eng, Verifier: s.verifier, PublicURL: cfg.PublicURL, Logger: cfg.Logger, Presence: s.hooks,
		MaxConns: cfg.WSMaxConns, MaxUnauthenticatedPerAddr: cfg.WSMaxUnauthPerAddr,
		MaxSessionsPerIdentity:    cfg.WSMaxPerIdentity,
		MaxLiveQueriesPerIdentity: cfg.WSMaxQueriesPerIdentity,
		CoalesceInterval:          cfg.WSCoalesce,
		SendQueueBudget:           cfg.WSQueueBudget,
		ReplayLimit:               cfg.WSReplayLimit,
		SharedStore:               !oneNode,
		WriterPool:                true,
		AwaitInit:                 awaitInit,
	})
	if cfg.Creds != (engine.Credentials{}) {
		if err := s.revokeOthers(ctx, creds); err != nil {
			return nil, err
		}
	}

	if s.devTokens {
		s.log.Warn("the /token endpoint is on: whoever reaches this server gets an access token for a new random identity " +
			"(a development convenience; --dev-tokens=false turns it off, and a production app mints tokens in its backend)")
	}
	s.handler = s.edge(refuseWebhooks(s.routes()))
	return s, nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// only serves path with h for methods, and answers any other method
	// 405 20004 (without it, "/" below would take them).
	only := func(path string, h http.HandlerFunc, methods ...string) {
		for _, m := range methods {
			mux.HandleFunc(m+" "+path, h)
		}
		if slices.Contains(methods, http.MethodGet) {
			methods = append(methods, http.MethodHead) // GET patterns serve HEAD
		}
		allow := strings.Join(methods, ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			twiliohttp.WriteError(w, r, s.log, chorus.ErrMethod)
		})
	}
	only("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	}, http.MethodGet)
	only("/token", s.serveToken, http.MethodGet, http.MethodPost)
	only("/readyz", s.serveReady, http.MethodGet)
	only("/metrics", s.serveMetrics, http.MethodGet)

	// Mount point: REST v1 (internal/httpapi), full paths.
	mux.Handle("/v1/", httpapi.New(httpapi.Config{Engine: s.eng, PublicURL: s.cfg.PublicURL, Logger: s.cfg.Logger}))

	// Twilio's credential APIs: API v2010 Keys, auth token rotation
	// (internal/accountapi).
	acctAPI := accountapi.New(accountapi.Config{
		Engine: s.eng, Revoker: s.sessionRevoker(), PublicURL: s.cfg.PublicURL, Logger: s.cfg.Logger,
	})
	mux.Handle("/2010-04-01/", acctAPI)
	mux.Handle("/v1/AuthTokens/", acctAPI)

	// The admin API behind the console (internal/admin).
	mux.Handle("/admin/", admin.New(admin.Config{
		Engine: s.eng, Gateway: s.gw, Webhooks: s.hooks, OperatorAccount: s.creds.AccountSID, Logger: s.cfg.Logger,
	}))

	// Mount point: Twilsock/CDS gateway (internal/gateway).
	if s.gw != nil {
		mux.Handle("/v3/wsconnect", s.gw)
		mux.HandleFunc("POST /v1/token", s.gw.ServeEMSToken) // twilio-sync 0.5–0.7 token exchange
		mux.HandleFunc("OPTIONS /v1/token", s.gw.ServeEMSToken)
		mux.HandleFunc("/v3/", s.gw.ServeCDS) // the same, plain HTTP: 0.5–0.7 while their socket is down
	} else {
		mux.HandleFunc("/v3/wsconnect", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "realtime gateway not available", http.StatusServiceUnavailable)
		})
	}

	// The quickstart app. Any other path is answered as the APIs answer
	// one they do not know (404, 20404, in JSON), so that a client that
	// got an API path wrong (/V1/…, /v2/…) is told so in its own terms.
	files := web.FS()
	static := http.FileServerFS(files)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !staticPath(files, r.URL.Path) {
			twiliohttp.WriteError(w, r, s.log, chorus.Errorf(chorus.ErrNotFound, "The requested resource %s was not found", twiliohttp.Clip(r.URL.Path)))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			twiliohttp.WriteError(w, r, s.log, chorus.ErrMethod)
			return
		}
		static.ServeHTTP(w, r)
	})
	return mux
}

// staticPath reports whether the quickstart app has a file (or, for a
// directory, an index.html) at URL path p.
func staticPath(files fs.FS, p string) bool {
	name := strings.TrimPrefix(path.Clean("/"+p), "/")
	if name == "" {
		name = "."
	}
	fi, err := fs.Stat(files, name)
	if err != nil {
		return false
	}
	if fi.IsDir() {
		_, err = fs.Stat(files, path.Join(name, "index.html"))
		return err == nil
	}
	return true
}

// Handler is the whole HTTP surface.
func (s *Server) Handler() http.Handler { return s.handler }

// Credentials are the bootstrapped account, key and default service.
func (s *Server) Credentials() engine.Credentials { return s.creds }

// Gateway is the server's realtime gateway.
func (s *Server) Gateway() *gateway.Gateway { return s.gw }

// Engine is the server's engine.
func (s *Server) Engine() *engine.Engine { return s.eng }

// Verifier verifies access tokens against the server's API keys.
func (s *Server) Verifier() *token.Verifier { return s.verifier }

// Run serves on ln until ctx is done, then shuts down gracefully: HTTP
// (bounded by ShutdownTimeout), the gateway, the engine's background work,
// the bus and the store. It returns nil after a clean shutdown. Run may be
// called once; the Server is closed when it returns. A node without a bus
// on PostgreSQL also stops, with an error, when another such node took the
// database's single-node lock while its own connection was down.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("server: Run called twice")
	}
	base, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	// Known to the store before it writes anything, so that if it dies
	// before publishing a change, it is presumed dead (the leader then
	// has every node read again).
	if err := s.hooks.Heartbeat(base); err != nil {
		s.log.Warn("first heartbeat; the webhook loop retries", logErr, err)
	}

	engDone := make(chan struct{})
	go func() {
		defer close(engDone)
		if err := s.eng.Run(base); err != nil && !errors.Is(err, context.Canceled) {
			s.log.Error("engine stopped", logErr, err)
		}
	}()

	hs := s.httpServer(base)
	ln = s.listener(ln)
	hooksDone := make(chan struct{})
	go func() {
		defer close(hooksDone)
		if err := s.hooks.Run(base); err != nil {
			s.log.Error("webhooks stopped", logErr, err)
		}
	}()
	if nb, ok := s.bus.(*natsbus.Bus); ok {
		go s.watchBusPeers(base, nb)
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()

	var errs []error
	select {
	case <-ctx.Done():
	case err := <-served:
		errs = append(errs, fmt.Errorf("server: serve: %w", err))
	case err := <-s.storeTaken:
		errs = append(errs, fmt.Errorf("server: stopped: %w", err))
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	drained := true // every request that could write ended
	cutShort := func(what string, err error) {
		drained = false
		if errors.Is(err, context.DeadlineExceeded) {
			// What the timeout is for: stragglers (a client trickling
			// its body) are cut; the stop itself went as planned.
			s.log.Warn("shutdown: "+what+" still running after the shutdown timeout were cut short", "timeout", s.cfg.ShutdownTimeout)
			return
		}
		errs = append(errs, fmt.Errorf("server: %s: %w", what, err))
	}
	// The websocket sessions close beside the HTTP drain, once their
	// requests in flight are answered (at most 3 s, gateway.Close): a
	// client trickling a request body must not hold them open for the
	// whole timeout (their clients reconnect, to another node or to this
	// one restarted, and resume from the log).
	gwClosed := make(chan error, 1)
	if s.gw != nil {
		go func() { gwClosed <- s.gw.Close(sctx) }()
	} else {
		gwClosed <- nil
	}
	if err := hs.Shutdown(sctx); err != nil {
		cutShort("HTTP requests", err)
		_ = hs.Close()
	}
	if err := <-gwClosed; err != nil {
		cutShort("websocket requests", err)
	}
	cancelBase()
	// Their own time: the drain may have used up sctx.
	stopCtx, stopCancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer stopCancel()
	if err := s.hooks.Close(stopCtx); err != nil {
		errs = append(errs, fmt.Errorf("server: stop webhooks: %w", err))
	}
	select {
	case <-hooksDone:
	case <-stopCtx.Done():
	}
	select {
	case <-engDone:
	case <-stopCtx.Done():
		errs = append(errs, errors.New("server: engine did not stop in time"))
		drained = false
	}
	// Its own time: the shutdown may have used up sctx.
	lctx, lcancel := context.WithTimeout(context.WithoutCancel(ctx), leaveTimeout)
	s.leave(lctx, drained)
	lcancel()
	if err := s.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// BusLost is the handler of a Bus that can lose events (NATS core): call
// it after the Bus reconnected or dropped events it received. This node's
// sessions read again what they missed. The other nodes' own connections
// never dropped, so they are told to as well (a resync announcement,
// rate-limited) when this node's events may be lost: changes it committed
// while it could not publish, and when publishesLost, the events it wrote
// into a connection before it was found dead.
func (s *Server) BusLost(publishesLost bool) {
	if s.gw != nil {
		s.gw.Resync()
	}
	if s.eng != nil && s.ann != nil && (publishesLost || s.eng.Unposted()) {
		s.ann.request()
	}
}

// leaveTimeout bounds leave: a bus ping and one store transaction.
const leaveTimeout = 5 * time.Second

// stopTimeout bounds the stop of the webhook senders and the engine's
// background work, after the requests' drain (ShutdownTimeout).
const stopTimeout = 5 * time.Second

// leave forgets this node in the store, so that the other nodes do not
// presume it dead and read again what their sessions may have missed
// (webhook.Config.NodesDead), if and only if everything it committed
// reached them: its requests all ended (drained), no change is unposted,
// no resync announcement waits, its bus handled every reconnect and
// confirmed every publish. Otherwise it stays, and is presumed dead.
func (s *Server) leave(ctx context.Context, drained bool) {
	why := ""
	switch {
	case s.alone():
		// No other node to read anything again.
	case !drained:
		why = "requests were cut short"
	case s.eng.Unposted():
		why = "changes could not be published"
	case s.ann.pending():
		why = "a resync announcement is still due"
	}
	if nb, ok := s.bus.(*natsbus.Bus); ok && why == "" {
		if !nb.Settled() {
			why = "the bus has not recovered from its last disconnection"
		} else if err := nb.Ping(ctx); err != nil {
			why = "the bus did not confirm the last publishes: " + err.Error()
		}
	}
	if why != "" {
		s.log.Warn("leaving without a goodbye: the other nodes will presume this node dead and read again what their sessions may have missed", "reason", why)
		return
	}
	if err := s.hooks.Leave(ctx); err != nil {
		s.log.Warn("leaving: the other nodes will presume this node dead", logErr, err)
	}
}

// alone reports a node that shares its store with no other: its bus is
// in-process.
func (s *Server) alone() bool {
	_, ok := s.bus.(*mem.Bus)
	return ok
}

// Close closes the bus and the store without serving; Run does it itself.
// It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.ann != nil {
			s.ann.close()
		}
		if s.hooks != nil {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
			_ = s.hooks.Close(ctx) // Run flushed already; this stops the senders
			cancel()
		}
		if s.bus != nil {
			if err := s.bus.Close(); err != nil {
				errs = append(errs, fmt.Errorf("server: close bus: %w", err))
			}
		}
		if s.store != nil {
			if err := s.store.Close(); err != nil {
				errs = append(errs, fmt.Errorf("server: close store: %w", err))
			}
		}
		if s.unlockDir != nil {
			s.unlockDir() // after the store: the next server may open it
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// adoptCopy makes a PostgreSQL database restored from a dump (or copied)
// without migrate --after-restore what that command makes it
// (postgres.Store.AdoptCopy), and says so.
func (s *Server) adoptCopy(ctx context.Context, pg *postgres.Store) error {
	// Said before the work, which reads every object and takes a while on
	// a large database: a node silent for it looked hung to a tester.
	if _, copied, err := pg.ClusterIdentity(ctx); err == nil && copied {
		s.log.Warn("server: this database was restored from a dump or copied from another: moving its event ids up " +
			"before listening, as chorus migrate --after-restore does (this reads every object)")
	}
	shift, err := pg.AdoptCopy(ctx, time.Now())
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if shift > 0 {
		s.log.Warn("server: this database was restored from a dump or copied from another: its event ids moved up, "+
			"as chorus migrate --after-restore does, and it has a cluster identity of its own", "shift", shift)
	}
	return nil
}

// openStore opens PostgreSQL when cfg.StoreURL names it, else SQLite in
// the data directory. For PostgreSQL it also returns the cluster leader
// test that keeps background work to one node; for SQLite it holds the
// data directory's serve lock.
func openStore(ctx context.Context, cfg Config) (openedStore, error) {
	switch {
	case strings.HasPrefix(cfg.StoreURL, "postgres://") || strings.HasPrefix(cfg.StoreURL, "postgresql://"):
		st, err := postgres.OpenConfig(ctx, cfg.StoreURL, cfg.Postgres, cfg.Logger)
		if err != nil {
			return openedStore{}, fmt.Errorf("server: open PostgreSQL store: %w", err)
		}
		return openedStore{store: st, leader: st.Leader}, nil
	case cfg.StoreURL != "":
		return openedStore{}, fmt.Errorf("server: store URL %q: want postgres://… (or none for the embedded SQLite store)", redact(cfg.StoreURL))
	}
	if cfg.DataDir == "" {
		return openedStore{}, errors.New("server: no data directory")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return openedStore{}, fmt.Errorf("server: create data directory: %w", err)
	}
	warnOpenDataDir(cfg.DataDir, cfg.Logger)
	// A second server on the directory would serve the same database
	// without hearing the first one's events (its subscribers would miss
	// every write made through the other), and both would sweep and send
	// webhooks.
	unlock, err := lockDataDir(cfg.DataDir, cfg.Logger)
	if err != nil {
		return openedStore{}, err
	}
	st, err := sqlite.Open(ctx, filepath.Join(cfg.DataDir, DBFile), cfg.Logger)
	if err != nil {
		unlock()
		return openedStore{}, fmt.Errorf("server: open store: %w", err)
	}
	return openedStore{store: st, unlock: unlock}, nil
}

// warnOpenDataDir warns when dir, which Chorus creates 0700, was made
// earlier writable by others: its files are 0600, but whoever may write
// the directory may replace them (the database, its WAL, the lock). Read
// and search access (0755, systemd's StateDirectoryMode) shows only names.
func warnOpenDataDir(dir string, logger *slog.Logger) {
	fi, err := os.Stat(dir)
	if err != nil || runtime.GOOS == "windows" {
		return
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		logger.Warn("the data directory is writable by other users, who may replace the database (credentials and every object) in it; chmod go-w it",
			"dir", dir, "mode", fmt.Sprintf("%#o", perm))
	}
}

// lockDataDir takes the serve lock on dir: its lock file, which older
// versions take too, and the directory itself, which stays locked when an
// operator deletes the lock file (a tester's second server then took a new
// one and served the same database). A file system that cannot lock a
// directory (NFS emulates flock with write locks, which a directory
// cannot take) leaves the lock file alone, with a warning.
func lockDataDir(dir string, logger *slog.Logger) (unlock func(), err error) {
	unlockFile, err := sqlite.LockFile(filepath.Join(dir, ServeLockFile))
	if err == nil {
		unlockDir, derr := sqlite.LockDir(dir)
		switch {
		case derr == nil:
			return func() { unlockDir(); unlockFile() }, nil
		case !errors.Is(derr, sqlite.ErrLocked):
			logger.Warn("cannot lock the data directory; its lock file alone keeps a second server out", "err", derr)
			return unlockFile, nil
		}
		unlockFile()
		err = derr
	}
	if errors.Is(err, sqlite.ErrLocked) {
		return nil, fmt.Errorf("server: %s: %w", dir, ErrDataDirInUse)
	}
	return nil, fmt.Errorf("server: %w", err)
}

// ServeLockFile is the file in the data directory that a server on the
// embedded store holds a lock on while it runs.
const ServeLockFile = DBFile + "-serve.lock"

// ErrDataDirInUse is New's error when another server runs on the data
// directory.
var ErrDataDirInUse = errors.New("another chorus serve is using this data directory: " +
	"stop it first, or run a cluster on PostgreSQL and NATS for more than one node")

type openedStore struct {
	store  chorus.Store
	leader func(context.Context) bool // PostgreSQL's cluster leader test
	unlock func()                     // releases SQLite's serve lock
}

// startRetryMax caps the pause between untilAvailable's attempts.
const startRetryMax = 5 * time.Second

// untilAvailable calls open until it succeeds, fails with an error that
// does not wrap chorus.ErrUnavailable, ctx ends, or wait has passed since
// the first attempt, logging each failure: what New does with the store
// and bus it has to reach (Config.StartWait).
func untilAvailable[T any](ctx context.Context, log *slog.Logger, what string, wait time.Duration, open func(context.Context) (T, error)) (T, error) {
	giveUp := time.Now().Add(wait)
	pause := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		v, err := open(ctx)
		if err == nil || !errors.Is(err, chorus.ErrUnavailable) || ctx.Err() != nil {
			return v, err
		}
		left := time.Until(giveUp)
		if left <= 0 {
			if wait > 0 {
				err = fmt.Errorf("%w (still unreachable after %v)", err, wait)
			}
			return v, err
		}
		pause = min(pause, left)
		log.Warn("server: waiting for "+what, slog.Int("attempt", attempt),
			slog.Duration("retry_in", pause), slog.Duration("gives_up_in", left.Round(time.Second)), slog.Any("error", err))
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, err
		case <-t.C:
		}
		pause = min(2*pause, startRetryMax)
	}
}

// openBus connects to NATS when cfg.BusURL names it, else returns the
// in-process bus. resync runs after NATS reconnects, when events published
// meanwhile may have been lost.
func openBus(ctx context.Context, cfg Config, resync func(publishesLost bool)) (chorus.Bus, error) {
	switch {
	case strings.HasPrefix(cfg.BusURL, "nats://") || strings.HasPrefix(cfg.BusURL, "tls://"):
		opts := []natsbus.Option{natsbus.WithName(cfg.NodeName), natsbus.WithReconnectHandler(resync), natsbus.WithAuth(cfg.BusAuth),
			natsbus.WithCluster(cfg.clusterID)}
		if cfg.BusPrefix != "" {
			opts = append(opts, natsbus.WithPrefix(cfg.BusPrefix))
		}
		if cfg.ClusterSecret != "" {
			opts = append(opts, natsbus.WithSecret([]byte(cfg.ClusterSecret)))
		}
		b, err := natsbus.Open(ctx, cfg.BusURL, cfg.Logger, opts...)
		if err != nil {
			return nil, fmt.Errorf("server: connect to NATS: %w", err)
		}
		if cfg.ClusterSecret == "" {
			// Once connected: not at each retry of --start-wait.
			cfg.Logger.Warn("nats: no cluster secret: anything NATS lets publish on this cluster's subjects can put " +
				"events into its clients' subscriptions; set CHORUS_CLUSTER_SECRET (the same on every node) and NATS authentication")
		}
		return b, nil
	case cfg.BusURL != "":
		return nil, fmt.Errorf("server: bus URL %q: want nats://… (or none for the in-process bus)", redact(cfg.BusURL))
	}
	return mem.New(), nil
}

// redact returns a URL for error messages: without its password and query
// values (libpq takes ?password=), and not at all when it is no
// scheme:// URL (a key=value DSN, "user:secret@host"), whose password
// this cannot find.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Opaque != "" { // postgres:///db?host=/run/postgresql is one
		return "(not shown: not a scheme://host URL)"
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"REDACTED"}
		}
		u.RawQuery = q.Encode()
	}
	u.Fragment, u.RawFragment = "", ""
	return u.Redacted()
}

// logDefaultService says so when the service alias "default" (REST's, and
// that of tokens minted without a service) names the configured service
// while the account has an older one, which it named before this version
// (engine.Service): an upgrade changes what such tokens reach there.
func (s *Server) logDefaultService(ctx context.Context, creds engine.Credentials) {
	if creds.ServiceSID == "" {
		return
	}
	var oldest string
	err := s.store.View(ctx, func(tx chorus.ReadTx) error {
		svcs, err := tx.Services(ctx, creds.AccountSID, chorus.ObjectQuery{Limit: 1})
		if err == nil && len(svcs) > 0 {
			oldest = svcs[0].SID
		}
		return err
	})
	if err == nil && oldest != "" && oldest != creds.ServiceSID {
		s.log.Info("the service alias default (of tokens minted without a service) names the configured service, "+
			"not the account's oldest, which it named before version 2026-12-06", logService, creds.ServiceSID, "oldest_service", oldest)
	}
}
