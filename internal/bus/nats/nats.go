package nats

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/ratelog"
)

var _ chorus.Bus = (*Bus)(nil)

// Log attribute keys.
const (
	logURL    = "url"
	logError  = "err"
	logObject = "object"
)

// Defaults; see the Options.
const (
	DefaultPrefix          = "chorus"
	DefaultReconnectBuffer = 1 << 20 // bytes kept while reconnecting
	dispatchers            = 4       // delivery goroutines per Bus
	dispatchQueue          = 16384   // messages queued per dispatcher
	pingTimeout            = 2 * time.Second
	subscribeFlushTimeout  = time.Second
	// writeTimeout bounds a write to the server's socket (nats.go's
	// flusher timeout, one minute by default). A hung server stops
	// reading; once the socket buffers are full, a publish blocks in its
	// write, holding the connection's lock, and every write of the node
	// waited for the minute: a request past its client's patience was
	// dropped although its write had committed. Past it the connection is
	// dropped and redialed; the events lost meanwhile are announced at the
	// reconnect (Resync).
	writeTimeout = 5 * time.Second
	reconnectMin = 50 * time.Millisecond
	reconnectMax = 2 * time.Second
)

// Option configures Open.
type Option func(*options)

type options struct {
	prefix      string
	name        string
	reconnBuf   int
	pingEvery   time.Duration
	onReconnect func(publishesLost bool)
	drop        func(*chorus.Event) bool
	delay       func(*chorus.Event) time.Duration
	auth        Auth
	secret      []byte
	hello       time.Duration // WithHelloInterval's
	clusterID   string        // WithCluster's
	cluster     natsgo.Header // carrying clusterID, on every published message
}

// ClusterHeader is the NATS message header that carries the cluster's
// identity (WithCluster).
const ClusterHeader = "Chorus-Cluster"

// WithCluster sets the cluster's identity (the store's, e.g.
// postgres.Store.ClusterIdentity): every event goes out with it in the
// Chorus-Cluster header, and events with another one are dropped and
// counted (Stats.Foreign), so that two clusters that share a NATS server
// and subject prefix (production, and staging restored from its dump)
// never deliver each other's events. Events without the header (nodes of
// an earlier version, during a rolling upgrade) are taken.
func WithCluster(id string) Option {
	return func(o *options) {
		if id != "" {
			o.clusterID, o.cluster = id, natsgo.Header{ClusterHeader: []string{id}}
		}
	}
}

// WithPrefix sets the first subject tokens (default "chorus"): events go
// to <prefix>.ev.<serviceSID>.<objectSID>. Nodes of one cluster must use
// the same prefix; tests use a unique one each.
func WithPrefix(prefix string) Option { return func(o *options) { o.prefix = prefix } }

// WithName sets the node name, used as the NATS connection name (visible
// in the server's connz monitoring) and in logs.
func WithName(node string) Option { return func(o *options) { o.name = node } }

// WithReconnectBuffer bounds, in bytes, what a publish racing a
// disconnect may buffer for the reconnect (default 1 MiB). Publish
// rejects events outright once the Bus knows it is disconnected.
func WithReconnectBuffer(bytes int) Option { return func(o *options) { o.reconnBuf = bytes } }

// WithPingInterval sets how often the client pings the server to detect a
// dead connection (default 10s; two missed pongs disconnect).
func WithPingInterval(d time.Duration) Option { return func(o *options) { o.pingEvery = d } }

// WithReconnectHandler calls fn (on its own goroutine) after each
// reconnect, and after the server dropped messages for this slow consumer
// (at most once a second). Events published while this node was
// disconnected, or dropped, never reach it; a subscriber learns of them at
// the next event of the object (a gap), or at once if fn makes it resync.
//
// publishesLost is true after a reconnect when this node published in the
// time a dead connection can go unnoticed (three ping intervals) before it
// was found dead: those events were written into it and may be lost, and
// the other nodes' own connections never dropped.
func WithReconnectHandler(fn func(publishesLost bool)) Option {
	return func(o *options) { o.onReconnect = fn }
}

// WithFaults injects receive faults, for tests of gap filling: each
// received event for which drop returns true is discarded, and each for
// which delay returns d > 0 is handed to subscribers d later (so it
// arrives after later events). Either function may be nil. They run on
// delivery goroutines and must be safe for concurrent use.
func WithFaults(drop func(*chorus.Event) bool, delay func(*chorus.Event) time.Duration) Option {
	return func(o *options) { o.drop, o.delay = drop, delay }
}

// Bus is a chorus.Bus over a NATS core connection.
type Bus struct {
	nc     *natsgo.Conn
	log    *slog.Logger
	opts   options
	url    string // redacted
	evpre  string // "<prefix>.ev."
	seed   maphash.Seed
	queues [dispatchers]chan *natsgo.Msg
	done   chan struct{}
	wg     sync.WaitGroup
	bufs   sync.Pool

	// disconnected is set from a disconnection until the reconnect
	// (Connected): read without the connection's lock, which a write to a
	// hung server holds.
	disconnected atomic.Bool
	lastResync   atomic.Int64 // unix ns of the last lostEvents call
	// lastPublish is the unix ns of the last Publish that wrote to the
	// connection; suspect says the connection last found dead may have
	// taken some of them (set on disconnect, read on reconnect).
	lastPublish atomic.Int64
	suspect     atomic.Bool
	// disconnects and recovered count disconnections and the reconnect
	// handlers that returned after them (Settled).
	disconnects, recovered atomic.Int64

	mu     sync.RWMutex // guards topics, closed; lock order: mu → topic.mu
	topics map[string]*topic
	closed bool

	warnMu    sync.Mutex
	warnGates map[string]*ratelog.Gate // per message: one warning every warnEvery

	published, received, faultDropped, decodeErrors, forged, foreign atomic.Uint64

	// connectedAt is the unix ns of the last (re)connection (ConnectedSince).
	connectedAt atomic.Int64
	peersMu     sync.Mutex
	peers       map[string]time.Time // node → last hello (SayHello, Heard)
}

// topic is the NATS subscription of one object, shared by its local
// subscribers.
type topic struct {
	sid   string
	sub   *natsgo.Subscription
	ready chan struct{} // closed once the server has seen the SUB (or gave up)

	mu   sync.RWMutex // held for reading while calling subscribers
	subs map[*subscriber]struct{}
}

type subscriber struct{ fn func(*chorus.Event) }

// Stats are a Bus's counters since Open.
type Stats struct {
	Published    uint64 // events handed to NATS
	Received     uint64 // events received from NATS
	FaultDropped uint64 // received events discarded by WithFaults
	DecodeErrors uint64 // received payloads that did not decode
	Forged       uint64 // received events dropped for a missing or wrong cluster signature (WithSecret)
	Foreign      uint64 // received events of another cluster, dropped (WithCluster)
	Topics       int    // objects with a NATS subscription
}

// Open connects to the NATS server(s) at url (comma-separated for a
// cluster) and returns a Bus. It fails, naming the URL without
// credentials, if no server is reachable (an error wrapping
// chorus.ErrUnavailable) or the server refuses the client (one that does
// not); after that it reconnects forever.
func Open(ctx context.Context, url string, logger *slog.Logger, opts ...Option) (*Bus, error) {
	if logger == nil {
		logger = slog.Default()
	}
	o := options{prefix: DefaultPrefix, name: "chorus", reconnBuf: DefaultReconnectBuffer, pingEvery: 10 * time.Second, hello: HelloInterval}
	for _, opt := range opts {
		opt(&o)
	}
	if err := checkSubject(o.prefix); err != nil {
		return nil, fmt.Errorf("nats: open: prefix %q: %w", o.prefix, err)
	}
	b := &Bus{
		opts:      o,
		url:       redact(url),
		evpre:     o.prefix + ".ev.",
		seed:      maphash.MakeSeed(),
		done:      make(chan struct{}),
		topics:    make(map[string]*topic),
		warnGates: make(map[string]*ratelog.Gate),
	}
	b.log = logger.With(slog.String(logURL, b.url)) // the caller's logger names the node (server.New)
	b.bufs.New = func() any { p := make([]byte, 0, 2048); return &p }

	nopts := []natsgo.Option{
		natsgo.Name(o.name),
		natsgo.MaxReconnects(-1),
		natsgo.CustomReconnectDelay(backoff),
		natsgo.ReconnectBufSize(o.reconnBuf),
		natsgo.PingInterval(o.pingEvery),
		natsgo.FlusherTimeout(writeTimeout),
		natsgo.MaxPingsOutstanding(2),
		natsgo.NoCallbacksAfterClientClose(),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			b.disconnected.Store(true)
			b.disconnects.Add(1)
			// A dead connection is found at most MaxPingsOutstanding+1
			// ping intervals after it died.
			unnoticed := 3 * o.pingEvery
			b.suspect.Store(time.Since(time.Unix(0, b.lastPublish.Load())) < unnoticed+time.Second)
			b.log.Warn("nats: disconnected", slog.Any(logError, err))
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			b.disconnected.Store(false)
			b.connectedAt.Store(time.Now().UnixNano())
			b.log.Info("nats: reconnected", slog.String("server", nc.ConnectedUrlRedacted()))
			fn := b.opts.onReconnect
			if fn == nil {
				b.recovered.Add(1)
				return
			}
			lost := b.suspect.Swap(false) // before the next disconnection sets it again
			go func() {
				defer b.recovered.Add(1)
				fn(lost)
			}()
		}),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, sub *natsgo.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			b.warn("nats: async error", slog.String("subject", subj), slog.Any(logError, err))
			if errors.Is(err, natsgo.ErrSlowConsumer) && !b.control(subj) {
				b.lostEvents()
			}
		}),
	}
	if err := checkSecret(o.secret); err != nil {
		return nil, err
	}
	aopts, err := o.auth.options()
	if err != nil {
		return nil, err
	}
	nopts = append(nopts, aopts...)
	if dl, ok := ctx.Deadline(); ok {
		nopts = append(nopts, natsgo.Timeout(max(time.Until(dl), time.Millisecond)))
	}
	type result struct {
		nc  *natsgo.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		nc, err := natsgo.Connect(url, nopts...)
		ch <- result{nc, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, fmt.Errorf("nats: connect %s: %w", b.url, chorus.Wrap(chorus.ErrUnavailable, ctx.Err()))
	}
	if r.err != nil {
		err := scrub(r.err, url)
		if unreachable(r.err) {
			err = chorus.Wrap(chorus.ErrUnavailable, err)
		}
		return nil, fmt.Errorf("nats: connect %s: %w", b.url, err)
	}
	b.nc = r.nc
	b.connectedAt.Store(time.Now().UnixNano())
	if b.opts.cluster != nil && !b.nc.HeadersSupported() {
		// A server before 2.2, or one with no_header_support, refuses
		// every message with a header: publish without the identity.
		b.log.Warn("nats: the server does not support message headers: events go out without the cluster's identity " +
			"(clusters sharing this server are told apart only by --bus-prefix)")
		b.opts.cluster, b.opts.clusterID = nil, ""
	}
	for i := range b.queues {
		b.queues[i] = make(chan *natsgo.Msg, dispatchQueue)
		b.wg.Add(1)
		go b.dispatch(b.queues[i])
	}
	b.log.Debug("nats: connected", slog.String("server", b.nc.ConnectedUrlRedacted()))
	return b, nil
}

// unreachable reports whether a failed Connect found no server to talk to
// (refused, timed out, a name that did not resolve), as opposed to one
// that refused this client (authentication, TLS, protocol): only the
// first may go away by itself.
func unreachable(err error) bool {
	var ne net.Error
	return errors.Is(err, natsgo.ErrNoServers) || errors.Is(err, natsgo.ErrTimeout) || errors.As(err, &ne)
}

// backoff is the reconnect delay after a full pass over the server list:
// exponential from 50ms to 2s, with 20% jitter.
func backoff(attempts int) time.Duration {
	d := reconnectMax
	if attempts < 8 {
		d = min(reconnectMin<<attempts, reconnectMax)
	}
	return d + rand.N(d/5+1)
}

// Publish sends each event on its object's subject. The events are
// written to the connection's buffer and flushed in the background; it
// does not wait for the server. It fails with an error wrapping
// chorus.ErrUnavailable, without buffering, while the connection is down.
func (b *Bus) Publish(ctx context.Context, events ...*chorus.Event) error {
	if err := b.usable("publish"); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nats: publish: %w", err)
	}
	bp := b.bufs.Get().(*[]byte)
	defer b.bufs.Put(bp)
	var first error
	for _, e := range events {
		if err := checkToken(e.ObjectSID); err != nil {
			first = cmpOr(first, fmt.Errorf("nats: publish: object SID %q: %w", e.ObjectSID, err))
			continue
		}
		svc := e.ServiceSID
		if svc == "" {
			svc = "_"
		} else if err := checkToken(svc); err != nil {
			first = cmpOr(first, fmt.Errorf("nats: publish: service SID %q: %w", svc, err))
			continue
		}
		subject := b.evpre + svc + "." + e.ObjectSID
		*bp = appendEvent((*bp)[:0], e)
		if b.opts.secret != nil {
			*bp = appendMAC(b.opts.secret, subject, *bp)
		}
		var err error
		if b.opts.cluster != nil {
			err = b.nc.PublishMsg(&natsgo.Msg{Subject: subject, Data: *bp, Header: b.opts.cluster})
		} else {
			err = b.nc.Publish(subject, *bp)
		}
		if err != nil {
			switch {
			case errors.Is(err, natsgo.ErrConnectionClosed), errors.Is(err, natsgo.ErrReconnectBufExceeded),
				errors.Is(err, natsgo.ErrConnectionDraining):
				return fmt.Errorf("nats: publish: %w", chorus.Wrap(chorus.ErrUnavailable, err))
			}
			first = cmpOr(first, fmt.Errorf("nats: publish: %w", err))
			continue
		}
		b.published.Add(1)
	}
	b.lastPublish.Store(time.Now().UnixNano())
	return first
}

// Settled reports whether the connection is up and the reconnect handler
// returned after every disconnection so far: what it had to tell the
// other nodes was told (or its failure recorded by the handler).
func (b *Bus) Settled() bool {
	return b.nc.Status() == natsgo.CONNECTED && b.recovered.Load() == b.disconnects.Load()
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// usable returns an error wrapping chorus.ErrUnavailable unless the Bus
// is open and connected.
func (b *Bus) usable(op string) error {
	b.mu.RLock()
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return fmt.Errorf("nats: %s: %w", op, chorus.Wrap(chorus.ErrUnavailable, errors.New("bus closed")))
	}
	if st := b.nc.Status(); st != natsgo.CONNECTED {
		return fmt.Errorf("nats: %s: %w", op, chorus.Wrap(chorus.ErrUnavailable, fmt.Errorf("%s is %s", b.url, st)))
	}
	return nil
}

// Subscribe calls fn for the object's events until cancel is called. All
// local subscribers of an object share one NATS subscription to
// <prefix>.ev.*.<objectSID>. When the subscription is new and the
// connection is up, Subscribe waits (up to 1s) for the server to confirm
// it, so that events published on other nodes after Subscribe returns
// are delivered. While disconnected it succeeds, and the subscription
// starts with the reconnect.
//
// fn runs on one of the Bus's delivery goroutines, which an object's
// events always share, so events published in order by one node arrive
// in order unless lost. fn must not block and must not call the returned
// cancel. Once cancel returns, fn is not called again; cancel is
// idempotent.
func (b *Bus) Subscribe(objectSID string, fn func(*chorus.Event)) (cancel func(), err error) {
	if err := checkToken(objectSID); err != nil {
		return nil, fmt.Errorf("nats: subscribe: object SID %q: %w", objectSID, err)
	}
	s := &subscriber{fn: fn}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, fmt.Errorf("nats: subscribe: %w", chorus.Wrap(chorus.ErrUnavailable, errors.New("bus closed")))
	}
	t := b.topics[objectSID]
	isNew := t == nil
	if isNew {
		q := b.queues[maphash.String(b.seed, objectSID)%dispatchers]
		sub, err := b.nc.ChanSubscribe(b.evpre+"*."+objectSID, q)
		if err != nil {
			b.mu.Unlock()
			return nil, fmt.Errorf("nats: subscribe %s: %w", objectSID, chorus.Wrap(chorus.ErrUnavailable, err))
		}
		t = &topic{sid: objectSID, sub: sub, ready: make(chan struct{}), subs: make(map[*subscriber]struct{})}
		b.topics[objectSID] = t
	}
	t.mu.Lock()
	t.subs[s] = struct{}{}
	t.mu.Unlock()
	b.mu.Unlock()

	if isNew {
		if b.nc.Status() == natsgo.CONNECTED {
			if err := b.nc.FlushTimeout(subscribeFlushTimeout); err != nil {
				b.warn("nats: subscribe: flush", slog.String(logObject, objectSID), slog.Any(logError, err))
			}
		}
		close(t.ready)
	} else {
		select {
		case <-t.ready:
		case <-time.After(subscribeFlushTimeout):
		}
	}

	var once sync.Once
	return func() { once.Do(func() { b.cancel(t, s) }) }, nil
}

func (b *Bus) cancel(t *topic, s *subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t.mu.Lock()
	delete(t.subs, s)
	empty := len(t.subs) == 0
	t.mu.Unlock()
	if !empty || b.topics[t.sid] != t {
		return
	}
	delete(b.topics, t.sid)
	if err := t.sub.Unsubscribe(); err != nil && !errors.Is(err, natsgo.ErrConnectionClosed) {
		b.warn("nats: unsubscribe", slog.String(logObject, t.sid), slog.Any(logError, err))
	}
}

// dispatch decodes received messages and hands them to subscribers. Each
// object's messages go to one dispatcher, in arrival order.
func (b *Bus) dispatch(q chan *natsgo.Msg) {
	defer b.wg.Done()
	for {
		select {
		case <-b.done:
			return
		case m := <-q:
			b.receive(m)
		}
	}
}

func (b *Bus) receive(m *natsgo.Msg) {
	b.received.Add(1)
	if b.opts.cluster != nil {
		if id := m.Header.Get(ClusterHeader); id != "" && id != b.opts.clusterID {
			b.foreign.Add(1)
			b.warn("nats: drop another cluster's event (two clusters share this NATS server and subject prefix: "+
				"give each its own, see --bus-prefix)", slog.String("subject", m.Subject))
			return
		}
	}
	data := m.Data
	if b.opts.secret != nil {
		payload, ok := verifyMAC(b.opts.secret, m.Subject, data)
		if !ok {
			b.forged.Add(1)
			b.warn("nats: drop event without a valid cluster signature", slog.String("subject", m.Subject))
			return
		}
		data = payload
	}
	e, err := decodeEvent(data)
	if err != nil {
		b.decodeErrors.Add(1)
		b.warn("nats: drop undecodable event", slog.String("subject", m.Subject), slog.Any(logError, err))
		return
	}
	if f := b.opts.drop; f != nil && f(e) {
		b.faultDropped.Add(1)
		return
	}
	if f := b.opts.delay; f != nil {
		if d := f(e); d > 0 {
			time.AfterFunc(d, func() { b.deliver(m.Sub, e) })
			return
		}
	}
	b.deliver(m.Sub, e)
}

// deliver calls the subscribers of the topic whose NATS subscription
// received e, if that subscription is still current.
func (b *Bus) deliver(sub *natsgo.Subscription, e *chorus.Event) {
	b.mu.RLock()
	t := b.topics[e.ObjectSID]
	b.mu.RUnlock()
	if t == nil || t.sub != sub {
		return // canceled, or an event for another object on a wildcard
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	for s := range t.subs {
		s.fn(e)
	}
}

// lostEvents runs the reconnect handler after the server dropped events,
// at most once a second.
func (b *Bus) lostEvents() {
	fn := b.opts.onReconnect
	now := time.Now().UnixNano()
	last := b.lastResync.Load()
	if fn == nil || now-last < int64(time.Second) || !b.lastResync.CompareAndSwap(last, now) {
		return
	}
	go fn(false)
}

// Disconnects counts the connections to the server the Bus lost: a
// publish buffered before one may have been lost with it, even if a Ping
// after the reconnect succeeds.
func (b *Bus) Disconnects() uint64 { return uint64(b.disconnects.Load()) }

// Ping fails unless the connection is up and the server answers a ping
// within ctx's deadline or 2s, whichever is sooner.
// Connected reports whether the connection to the server is up, as far
// as this client knows: false from a disconnection (or Close) until the
// reconnect. A hung server goes unnoticed until a write times out or pings
// go unanswered. It never blocks.
func (b *Bus) Connected() bool {
	b.mu.RLock()
	closed := b.closed
	b.mu.RUnlock()
	return !closed && !b.disconnected.Load()
}

func (b *Bus) Ping(ctx context.Context) error {
	if err := b.usable("ping"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := b.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("nats: ping %s: %w", b.url, chorus.Wrap(chorus.ErrUnavailable, err))
	}
	return nil
}

// Stats returns the Bus's counters.
func (b *Bus) Stats() Stats {
	b.mu.RLock()
	n := len(b.topics)
	b.mu.RUnlock()
	return Stats{
		Published:    b.published.Load(),
		Received:     b.received.Load(),
		FaultDropped: b.faultDropped.Load(),
		DecodeErrors: b.decodeErrors.Load(),
		Forged:       b.forged.Load(),
		Foreign:      b.foreign.Load(),
		Topics:       n,
	}
}

// Close drops every subscription and closes the connection, discarding
// events not yet flushed. It is idempotent.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.topics = make(map[string]*topic)
	b.mu.Unlock()
	b.nc.Close()
	close(b.done)
	b.wg.Wait()
	return nil
}

// warnEvery spaces the warnings of one message (warn).
const warnEvery = 10 * time.Second

// warn logs at most one warning per message every warnEvery, with how
// many it held back since the last.
func (b *Bus) warn(msg string, attrs ...any) {
	b.warnMu.Lock()
	g := b.warnGates[msg]
	if g == nil {
		g = ratelog.New(warnEvery, 1)
		b.warnGates[msg] = g
	}
	b.warnMu.Unlock()
	held, ok := g.Allow()
	if !ok {
		return
	}
	if held > 0 {
		attrs = append(attrs, slog.Uint64("suppressed", held))
	}
	b.log.Warn(msg, attrs...)
}

// checkToken reports whether s can be one subject token.
func checkToken(s string) error {
	if s == "" {
		return errors.New("empty subject token")
	}
	if strings.ContainsAny(s, ".*> \t\r\n") {
		return errors.New("subject token contains '.', '*', '>' or white space")
	}
	return nil
}

// checkSubject reports whether s is a literal subject of one or more
// tokens.
// CheckPrefix reports whether prefix can be WithPrefix's: NATS subject
// tokens joined by dots.
func CheckPrefix(prefix string) error {
	if err := checkSubject(prefix); err != nil {
		return fmt.Errorf("nats: prefix %q: %w", prefix, err)
	}
	return nil
}

func checkSubject(s string) error {
	for tok := range strings.SplitSeq(s, ".") {
		if err := checkToken(tok); err != nil {
			return err
		}
	}
	return nil
}

// scrub returns err, or a copy of its message without the user
// information of urls if it contains any (a URL parse error quotes the
// URL).
func scrub(err error, urls string) error {
	msg := err.Error()
	for p := range strings.SplitSeq(urls, ",") {
		p = strings.TrimSpace(p)
		at := strings.LastIndex(p, "@")
		if at < 0 {
			continue
		}
		start := strings.Index(p, "://") + 3 // 2 when there is no scheme
		if start > at {
			start = 0
		}
		if user := p[start:at]; user != "" && strings.Contains(msg, user) {
			msg = strings.ReplaceAll(msg, user, "REDACTED")
		}
	}
	for p := range strings.SplitSeq(urls, ",") {
		if q := strings.IndexAny(p, "?#"); q >= 0 && strings.Contains(msg, p[q+1:]) && len(p) > q+1 {
			msg = strings.ReplaceAll(msg, p[q+1:], "REDACTED")
		}
	}
	if msg == err.Error() {
		return err
	}
	return errors.New(msg)
}

// redact returns the server URLs without user information.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		if q := strings.IndexAny(p, "?#"); q >= 0 {
			p = p[:q] // NATS URLs take no query: whatever is there is not shown
		}
		switch {
		case err == nil && u.Host != "":
			u.User, u.RawQuery, u.Fragment, u.RawFragment = nil, "", "", ""
			parts[i] = u.String()
		case strings.Contains(p, "@"):
			parts[i] = p[strings.LastIndex(p, "@")+1:]
		default:
			parts[i] = p
		}
	}
	return strings.Join(parts, ",")
}
