package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/httpapi"
	"github.com/chorus-sync/chorus/internal/ratelog"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// Transport defaults. The timeouts bound what one client can hold: an idle
// keep-alive connection, a request whose headers or body trickle in, a
// response nobody reads. Websockets are not bound by them: the upgrade
// (gobwas/ws) clears the connection's deadlines and the gateway sets its
// own.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second  // headers and body of one request
	DefaultWriteTimeout      = 60 * time.Second  // from the end of the headers to the end of the response
	DefaultIdleTimeout       = 120 * time.Second // a keep-alive connection between requests
	DefaultShedIdleAfter     = 5 * time.Second   // at the connection cap, idle keep-alives this old are closed
	DefaultHandlerTimeout    = 30 * time.Second  // the context of one HTTP handler (not websockets)
	// DefaultMaxBodyBytes bounds every request body; REST and the admin API
	// have tighter limits of their own.
	DefaultMaxBodyBytes = 160 << 10
	// MaxHeaderBytes bounds a request's headers before anything else is
	// read: an access token (at most token.MaxTokenBytes, 64 KiB, in
	// X-Twilio-Token) with room to spare. net/http's default, 1 MiB, let
	// 1,500 unfinished requests from one address hold 2.4 GB.
	MaxHeaderBytes = 128 << 10
)

// Transport is the HTTP transport configuration of a Server: timeouts,
// connection caps and TLS. The zero value means the defaults, no caps and
// plain HTTP.
type Transport struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	HandlerTimeout    time.Duration
	MaxBodyBytes      int64

	// MaxConns caps the open connections (HTTP and websocket) of the node,
	// MaxConnsPerIP those from one client address (an IPv6 /64 counts as
	// one address). 0 means no cap. A connection over a cap is closed as
	// soon as it is accepted. Behind a reverse proxy every client has the
	// proxy's address: leave MaxConnsPerIP at 0 there.
	MaxConns      int
	MaxConnsPerIP int
	// ShedIdleAfter: at the MaxConns cap, keep-alive connections idle at
	// least this long are closed (capListener.shedIdle); default
	// DefaultShedIdleAfter.
	ShedIdleAfter time.Duration

	// TrustedProxies are the addresses of reverse proxies (nginx, a load
	// balancer) whose X-Forwarded-For names the client. The login throttle
	// counts per client, so behind a proxy it needs this; without it every
	// client has the proxy's address. The connection caps always count the
	// TCP peer.
	TrustedProxies []netip.Prefix

	// TLSCert and TLSKey are PEM files; both set serves HTTPS and WSS on
	// the listener. ReloadTLS reads them again.
	TLSCert string
	TLSKey  string
}

func (t *Transport) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&t.ShedIdleAfter, DefaultShedIdleAfter)
	def(&t.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&t.ReadTimeout, DefaultReadTimeout)
	def(&t.WriteTimeout, DefaultWriteTimeout)
	def(&t.IdleTimeout, DefaultIdleTimeout)
	def(&t.HandlerTimeout, DefaultHandlerTimeout)
	if t.MaxBodyBytes == 0 {
		t.MaxBodyBytes = DefaultMaxBodyBytes
	}
}

func (t *Transport) check() error {
	switch {
	case (t.TLSCert == "") != (t.TLSKey == ""):
		return errors.New("server: TLS needs both a certificate and a key file")
	case t.MaxConns < 0 || t.MaxConnsPerIP < 0:
		return errors.New("server: connection caps must not be negative")
	case t.ReadHeaderTimeout < 0 || t.ReadTimeout < 0 || t.WriteTimeout < 0 || t.IdleTimeout < 0 || t.HandlerTimeout < 0 || t.MaxBodyBytes < 0 || t.ShedIdleAfter < 0:
		return errors.New("server: timeouts and limits must not be negative")
	}
	return nil
}

// httpServer is the net/http server for the handler, with the timeouts.
func (s *Server) httpServer(base context.Context) *http.Server {
	t := s.cfg.Transport
	unused := &unusedConns{conns: map[net.Conn]struct{}{}}
	hs := &http.Server{
		Handler:           connBusy(s.handler),
		ReadHeaderTimeout: t.ReadHeaderTimeout,
		ReadTimeout:       t.ReadTimeout,
		WriteTimeout:      t.WriteTimeout,
		IdleTimeout:       t.IdleTimeout,
		ConnState: func(c net.Conn, st http.ConnState) {
			unused.track(c, st)
			connState(c, st)
		},
		ConnContext:    withConn,
		MaxHeaderBytes: MaxHeaderBytes,
		BaseContext:    func(net.Listener) context.Context { return base },
		ErrorLog:       slog.NewLogLogger(newPacedHandler(s.log.Handler()), slog.LevelWarn),
	}
	hs.RegisterOnShutdown(unused.closeAll)
	return hs
}

// net/http's error log (failed TLS handshakes, panics in handlers, accept
// errors) writes a line per connection, before any authentication: a
// client made 2,300 lines from 2,300 plain-HTTP requests to the TLS port.
// It gets httpErrorBurst lines, then httpErrorRate a second.
const (
	httpErrorRate  = 10
	httpErrorBurst = 20
)

// pacedHandler lets through what its gates allow, and says how many
// records it left out on the next it lets through. Failed handshakes,
// which any client can cause, have a gate of their own, so that a flood of
// them does not hide the server's own errors ("too many open files").
// Safe for concurrent use.
type pacedHandler struct {
	slog.Handler
	handshakes, others *ratelog.Gate
}

func newPacedHandler(h slog.Handler) pacedHandler {
	return pacedHandler{h, ratelog.New(time.Second/httpErrorRate, httpErrorBurst), ratelog.New(time.Second/httpErrorRate, httpErrorBurst)}
}

func (h pacedHandler) Handle(ctx context.Context, r slog.Record) error {
	gate := h.others
	if strings.HasPrefix(r.Message, "http: TLS handshake error") {
		gate = h.handshakes
	}
	held, ok := gate.Allow()
	if !ok {
		return nil
	}
	if held > 0 {
		r.AddAttrs(slog.Uint64("suppressed", held))
	}
	return h.Handler.Handle(ctx, r)
}

func (h pacedHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return pacedHandler{h.Handler.WithAttrs(attrs), h.handshakes, h.others}
}

func (h pacedHandler) WithGroup(name string) slog.Handler {
	return pacedHandler{h.Handler.WithGroup(name), h.handshakes, h.others}
}

// unusedConns are the connections on which no request has begun
// (http.StateNew). Shutdown closes the idle keep-alives at once but waits
// for these as for requests, up to 5 s (net/http counts one as idle only
// then), and clients make them: an HTTP client dials a connection for a
// request, and leaves it unused in its pool when another connection freed
// first. A node stopping gracefully waited out its shutdown timeout on
// them and left as if it had crashed ("requests were cut short"). On
// Shutdown, after the listeners closed, they are closed: no request is
// lost, and a client that sends one on such a connection just then
// retries it elsewhere, as after any closed keep-alive.
type unusedConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// track is the http.Server.ConnState hook. A connection turns idle only
// after a request (StateActive), so it is no longer tracked then: no lock
// for it, once per request.
func (u *unusedConns) track(c net.Conn, st http.ConnState) {
	if st == http.StateIdle {
		return
	}
	u.mu.Lock()
	if st == http.StateNew {
		u.conns[c] = struct{}{}
	} else {
		delete(u.conns, c)
	}
	u.mu.Unlock()
}

// closeAll closes the unused connections, now and once more shortly
// after: one accepted just before the listener closed may reach
// StateNew a moment later.
func (u *unusedConns) closeAll() {
	for pass := range 2 {
		if pass > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		u.mu.Lock()
		for c := range u.conns {
			_ = c.Close()
			delete(u.conns, c)
		}
		u.mu.Unlock()
	}
}

// listener wraps ln with the connection caps and TLS.
func (s *Server) listener(ln net.Listener) net.Listener {
	t := s.cfg.Transport
	if t.MaxConns > 0 || t.MaxConnsPerIP > 0 {
		ln = s.capped(ln, t.MaxConns, t.MaxConnsPerIP)
	}
	if s.cert != nil {
		ln = tls.NewListener(ln, &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: s.cert.get,
			// HTTP/1.1 only: websockets need it, REST gains nothing from h2.
			NextProtos: []string{"http/1.1"},
		})
	}
	return ln
}

// limits is the middleware for everything but the websocket endpoint: a
// deadline on the handler's context and a bound on the request body.
func (s *Server) limits(next http.Handler) http.Handler {
	t := s.cfg.Transport
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), t.HandlerTimeout)
		defer cancel()
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, t.MaxBodyBytes)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// HasTLS reports whether the server serves HTTPS (Transport.TLSCert).
func (s *Server) HasTLS() bool { return s.cert != nil }

// ReloadTLS reads the certificate and key files again (on SIGHUP); the
// next handshake uses them. On error the old certificate stays. Without
// TLS it does nothing.
func (s *Server) ReloadTLS() error {
	if s.cert == nil {
		return nil
	}
	if err := s.cert.load(); err != nil {
		s.log.Error("tls: reload certificate", logErr, err)
		return err
	}
	s.log.Info("tls: certificate reloaded", "cert", s.cfg.Transport.TLSCert)
	return nil
}

// Listen opens the TCP listener chorus serve hands to Run. Accepted
// connections get no TCP keepalive: Go's default would cost four
// setsockopt calls on every accept (3.8 % of the server's CPU in rtbench's
// idle profile) to find dead peers that the transport's timeouts and the
// gateway's pings already close: an HTTP connection is closed after
// IdleTimeout between requests, a websocket session once two ping periods
// and a write timeout pass without a read.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("server: listen: %w", err)
	}
	return ln, nil
}

// certificate holds the current TLS certificate.
type certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

func (c *certificate) load() error {
	kp, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("server: load TLS certificate: %w", err)
	}
	c.cur.Store(&kp)
	return nil
}

func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil }

// capListener closes accepted connections over the caps.
type capListener struct {
	net.Listener
	max, perIP int
	srv        *Server

	mu    sync.Mutex
	total int
	byIP  map[string]int
	conns map[*capConn]struct{} // open ones, for shedIdle

	refused  atomic.Uint64
	lastWarn atomic.Int64 // unix ns
	lastShed atomic.Int64 // unix ns, shedIdle
}

// capped wraps ln with the connection caps max and perIP (0: none).
func (s *Server) capped(ln net.Listener, max, perIP int) *capListener {
	return &capListener{Listener: ln, max: max, perIP: perIP, byIP: map[string]int{}, conns: map[*capConn]struct{}{}, srv: s}
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := addrKey(c.RemoteAddr().String())
		cc := &capConn{Conn: c, l: l, ip: ip}
		cc.waitForClient(clientGrace) // until its first request starts
		ok, full := l.acquire(cc)
		if !ok && full {
			if v := l.victim(); v != nil {
				_ = v.Close() // gives its slot back
				ok, full = l.acquire(cc)
			}
		}
		if ok {
			return cc, nil
		}
		_ = c.Close()
		if full {
			l.shedIdle()
		}
		l.refused.Add(1)
		l.srv.connsRefused.Add(1)
		if now := time.Now().UnixNano(); now-l.lastWarn.Load() > int64(10*time.Second) {
			l.lastWarn.Store(now)
			l.srv.log.Warn("connection refused: over the connection cap", "client", ip,
				"max_conns", l.max, "max_conns_per_ip", l.perIP, "refused_total", l.refused.Load())
		}
	}
}

// acquire takes a slot for c; full reports a refusal for the cap on all
// connections.
func (l *capListener) acquire(c *capConn) (ok, full bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// The per-address cap first: a client at its own cap must not make a
	// full node evict someone else (victim) only to be refused anyway.
	if l.perIP > 0 && l.byIP[c.ip] >= l.perIP {
		return false, false
	}
	if l.max > 0 && l.total >= l.max {
		return false, true
	}
	l.total++
	l.byIP[c.ip]++
	l.conns[c] = struct{}{}
	return true, false
}

// Eviction at the cap (capListener.victim).
const (
	// clientGrace is how long the server may wait on a client's bytes (a
	// first request after the accept, the rest of a request's header, a
	// request body) before a newcomer at the cap may take the
	// connection's place: an honest client sends them at once.
	clientGrace = time.Second
	// victimSample bounds the connections victim looks at per accept.
	victimSample = 64
)

// victim picks a connection to close so that a newcomer at the MaxConns
// cap gets its place: among up to victimSample open connections, the one
// evictable longest (capConn.evictableAt): waiting on its client for
// clientGrace (nothing sent since the accept, a header or a body
// trickling in, a websocket without init) or idle between requests for
// ShedIdleAfter; nil if none
// of them is. Without it, one client holding the cap full with
// connections that send nothing, or send a request slowly, kept every
// other client out. Requests the server works on, websocket sessions
// (authenticated, or whose init the server is checking) and
// connections that have waited less keep their places, so an honest
// client, which sends its request at once, is not evicted by a flood of
// dials; the map's random iteration order makes the sample random.
func (l *capListener) victim() *capConn {
	now := time.Now().UnixNano()
	var (
		pick   *capConn
		oldest int64
		seen   int
	)
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		if seen++; seen > victimSample {
			break
		}
		if at := c.evictableAt.Load(); at != 0 && at <= now && (pick == nil || at < oldest) {
			pick, oldest = c, at
		}
	}
	return pick
}

// shedIdle closes the evictable connections (victim: keep-alives idle for
// Transport.ShedIdleAfter, connections the server has waited on for
// clientGrace) when the node is at its connection cap, at most once a
// second: a client that made a request on each of many connections
// and holds them open without another (120 s each) must not keep every
// other client out. Their clients reconnect when they have something to
// send. Connections idle for less, requests in flight and websocket
// sessions are not touched, so a client that fills the cap with sessions or busy
// requests and dials once a second does not evict the others' fresh
// keep-alives.
func (l *capListener) shedIdle() {
	now := time.Now().UnixNano()
	last := l.lastShed.Load()
	if now-last < int64(time.Second) || !l.lastShed.CompareAndSwap(last, now) {
		return
	}
	var old []*capConn
	l.mu.Lock()
	for c := range l.conns {
		if at := c.evictableAt.Load(); at != 0 && at <= now {
			old = append(old, c)
		}
	}
	l.mu.Unlock()
	// One whose client sends a request just now loses it, as with any
	// server closing an idle keep-alive (clients retry idempotent requests
	// on a new connection).
	for _, c := range old {
		_ = c.Close()
	}
}

// connState keeps a capped connection's evictableAt
// (http.Server.ConnState): the server waits on the client from when a
// request's first bytes arrive (the rest of its header), and between
// requests (a keep-alive, ShedIdleAfter); a hijacked connection (a
// websocket) is not evictable until the gateway says it waits on its
// client's init (awaitInit). One atomic store per state change; the
// handler (connBusy), the body (waitedBody) and awaitInit do the rest.
func connState(c net.Conn, st http.ConnState) {
	cc := capConnOf(c)
	if cc == nil {
		return
	}
	switch st {
	case http.StateNew: // waited on since the accept
	case http.StateActive:
		cc.waitForClient(clientGrace)
	case http.StateIdle:
		cc.waitForClient(cc.l.srv.cfg.Transport.ShedIdleAfter)
	default:
		cc.evictableAt.Store(0)
	}
}

// capConnOf is the capped connection under c (TLS unwrapped), or nil.
func capConnOf(c net.Conn) *capConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	cc, _ := c.(*capConn)
	return cc
}

// connKey is the request context's key of its capped connection
// (http.Server.ConnContext).
type connKey struct{}

// withConn is http.Server.ConnContext: requests on a capped connection
// carry it, for connBusy and waitedBody.
func withConn(ctx context.Context, c net.Conn) context.Context {
	if cc := capConnOf(c); cc != nil {
		return context.WithValue(ctx, connKey{}, cc)
	}
	return ctx
}

// connBusy marks the request's connection busy while the server works on
// it (its header has arrived): not evictable, but while the handler waits
// on the body (waitedBody).
func connBusy(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cc, ok := r.Context().Value(connKey{}).(*capConn); ok {
			cc.evictableAt.Store(0)
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = &waitedBody{ReadCloser: r.Body, cc: cc}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// awaitInit is gateway.Config.AwaitInit: a websocket whose init has not
// succeeded is waited on like a request still arriving, so a newcomer at
// the cap may take its place after clientGrace (an honest client sends
// init at once). Without it, websockets that never sent init held their
// places for the gateway's whole init timeout (30 s), and clients from a
// few hundred addresses (64 each) kept everyone else out. While the
// gateway works on an init (mark(false): its token's checks may wait on a
// slow store) and once one succeeded, the connection is not evictable; a
// refused init makes it wait on its client again (mark(true)), within the
// grace that began at the upgrade.
func awaitInit(r *http.Request) (mark func(waiting bool)) {
	cc, ok := r.Context().Value(connKey{}).(*capConn)
	if !ok {
		return func(bool) {}
	}
	// The grace runs from the upgrade: a refused init does not renew it,
	// or garbage inits, refused at once, would keep a socket out of reach.
	deadline := time.Now().Add(clientGrace).UnixNano()
	cc.evictableAt.Store(deadline)
	return func(waiting bool) {
		if waiting {
			cc.evictableAt.Store(deadline)
			return
		}
		cc.evictableAt.Store(0)
	}
}

// waitedBody marks its connection as waiting on the client while a read
// of the request body blocks: a body that trickles in (one byte of a
// declared 100,000, say) lets a newcomer at the cap take its place after
// clientGrace, as a header that trickles in does.
type waitedBody struct {
	io.ReadCloser
	cc *capConn
}

func (b *waitedBody) Read(p []byte) (int, error) {
	b.cc.waitForClient(clientGrace)
	n, err := b.ReadCloser.Read(p)
	b.cc.evictableAt.Store(0)
	return n, err
}

func (l *capListener) release(c *capConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byIP[c.ip]--; l.byIP[c.ip] <= 0 {
		delete(l.byIP, c.ip)
	}
	delete(l.conns, c)
}

// capConn gives its slot back on the first Close.
type capConn struct {
	net.Conn
	l    *capListener
	ip   string
	once sync.Once
	// evictableAt is the unix ns from which a newcomer at the cap may take
	// its place (victim, shedIdle): the server has waited on the client
	// long enough; 0 while the server works on a request, and for a
	// websocket once its init is being checked or has succeeded
	// (connState, connBusy, waitedBody, awaitInit).
	evictableAt atomic.Int64
}

// waitForClient marks c as waiting on its client from now: evictable
// after grace.
func (c *capConn) waitForClient(grace time.Duration) {
	c.evictableAt.Store(time.Now().Add(grace).UnixNano())
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
}

// SyscallConn hands out the socket under the connection, as a *net.TCPConn
// would. The gateway writes events to a websocket through it with its
// shared writer pool; without it, a node started with --max-conns gave
// every websocket session a writer goroutine of its own.
func (c *capConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("server: connection has no socket")
	}
	return sc.SyscallConn()
}

// addrKey is the client address of a remote "host:port" as the caps and
// the login throttle count it: the IP, or for IPv6 its /64 (one host
// usually has a whole /64).
func addrKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if ip.To4() != nil {
		return ip.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// edge is the middleware in front of every route: security headers and the
// cross-site check, then (except for the websocket endpoint, whose
// connection outlives any handler deadline) the handler deadline and body
// bound, then for the APIs the text check and the login throttle.
func (s *Server) edge(mux http.Handler) http.Handler {
	// checkText before the throttle: its 400s must not count as logins.
	// checkBody inside it: it reads the store to authenticate.
	apis := s.checkText(s.loginThrottle(s.checkBody(mux)))
	limited := s.limits(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isAPI(r) {
			apis.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	return s.browserGuard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpapi.KeepKeyPath(r) // before the mux, which would clean a key's "//" and ".."
		if redirectedAPIPath(r) {
			twiliohttp.WriteError(w, r, s.log, chorus.Errorf(chorus.ErrNotFound, "The requested resource %s was not found", twiliohttp.Clip(r.URL.Path)))
			return
		}
		if r.URL.Path == "/v3/wsconnect" {
			mux.ServeHTTP(w, r)
			return
		}
		limited.ServeHTTP(w, r)
	}))
}

// restMounts are the REST APIs' subtrees in routes.
var restMounts = []string{"/v1/", "/v1/AuthTokens/", "/2010-04-01/", "/admin/"}

// redirectedAPIPath reports a REST request that ServeMux would answer
// with a redirect and an HTML body: a path under an API that is not clean
// ("//", ".", ".." segments; a map key's are escaped by then,
// httpapi.KeepKeyPath), or an API's bare name ("/v1"). Twilio answers
// those 404 in JSON, and twilio-go, which does not follow redirects, took
// the 307 for a success with an undecodable body (an unset SID in a path
// makes "//"). Slashes before the API's name ("//v1/…", a base URL that
// ends in "/") are still redirected, as clients that follow redirects
// have always been. The CDS paths (/v3/) are the SDK's, and left alone.
func redirectedAPIPath(r *http.Request) bool {
	p := r.URL.EscapedPath()
	for _, m := range restMounts {
		if p+"/" == m || (strings.HasPrefix(p, m) && cleanPath(p) != p) {
			return true
		}
	}
	return false
}

// cleanPath is ServeMux's canonical form of a path (net/http's
// cleanPath): path.Clean, keeping a trailing slash.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// clientAddr is the client address of r as the login throttle counts it
// (addrKey): the TCP peer, or, when that is a trusted proxy, the rightmost
// address in X-Forwarded-For that is not a trusted proxy.
func (s *Server) clientAddr(r *http.Request) string {
	peer := addrKey(r.RemoteAddr)
	if len(s.cfg.Transport.TrustedProxies) == 0 || !s.trustedProxy(hostOf(r.RemoteAddr)) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.TrimSpace(hops[i])
		if h == "" {
			continue
		}
		if _, err := netip.ParseAddr(h); err != nil {
			return peer // not an address: the proxy does not append the client's
		}
		if !s.trustedProxy(h) {
			return addrKey(h)
		}
	}
	return peer
}

func hostOf(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

func (s *Server) trustedProxy(host string) bool {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range s.cfg.Transport.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
