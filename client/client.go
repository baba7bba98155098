package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/protocol"
)

// Transport errors. Errors from the server are *chorus.Error instead.
var (
	// ErrClosed is returned by calls on a closed Client.
	ErrClosed = errors.New("client: closed")
	// ErrDisconnected fails a request that was in flight when its
	// session ended. The request may or may not have been applied.
	ErrDisconnected = errors.New("client: disconnected")
)

// Options configure a Client. Zero values take the documented defaults.
type Options struct {
	// URL is the server: an http(s) base ("http://127.0.0.1:3000"), a
	// ws(s) base, or the full Twilsock URL ("ws://host/v3/wsconnect").
	URL string
	// TokenProvider returns a fresh access token. It is called when the
	// server announces the token is about to expire, when it closes the
	// session because the token expired (410), and when init is rejected
	// with 20104. nil: the session ends when the token expires.
	TokenProvider func(ctx context.Context) (string, error)
	Logger        *slog.Logger // default slog.Default()
	HTTPClient    *http.Client // for the WebSocket handshake; default http.DefaultClient

	RequestTimeout time.Duration // reply timeout per request (and init); default 30s
	DialTimeout    time.Duration // WebSocket handshake; default 10s
	MinBackoff     time.Duration // first reconnect delay; default 250ms
	MaxBackoff     time.Duration // reconnect delay cap; default 30s
	MaxFrameBytes  int64         // largest accepted server frame; default 32 MiB
	EventBuffer    int           // capacity of each Events channel; default 256
}

// OpenMode says how Document, List, Map and Stream find their object.
type OpenMode int

// Open modes, as in the JavaScript SDK.
const (
	OpenOrCreate OpenMode = iota // open by SID or unique name; create if missing
	OpenExisting                 // open only; 404 if missing
	CreateNew                    // create only; 409 (54301) if the name exists
)

func (m OpenMode) String() string {
	switch m {
	case OpenOrCreate:
		return "open_or_create"
	case OpenExisting:
		return "open_existing"
	case CreateNew:
		return "create_new"
	}
	return fmt.Sprintf("OpenMode(%d)", int(m))
}

// Client is one Twilsock connection with its subscriptions. Create it
// with New and release it with Close.
type Client struct {
	opts  Options
	log   *slog.Logger
	wsURL string
	base  string // http(s)://host of the CDS URLs we build
	host  string

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	done   chan struct{} // supervisor exited
	disp   *dispatcher
	corr   atomic.Int64

	mu           sync.Mutex
	token        string
	continuation string
	sess         *session                 // nil while disconnected
	ready        chan struct{}            // open iff sess == nil && terminal == nil
	terminal     error                    // why the client gave up
	objects      map[string]*entity       // live entities only
	canceling    map[string]chan struct{} // SID → closed once its cancel is answered
	lastErr      error                    // last connection error, for New's error

	// Token renewal (renewLoop): one loop at a time; renewAgain records a
	// token_about_to_expire it has not handled, renewSess the session it
	// arrived on; notBefore is the earliest renewal of the current token.
	renewing   bool
	renewAgain bool
	renewSess  *session
	notBefore  time.Time
}

// New connects to the server with token and returns once the server
// accepted it. Transient failures (connection refused, 5xx, 429) are
// retried with backoff until ctx is done; a rejected token, and another
// 4xx answer to the websocket upgrade (a wrong URL), fail at once with the
// server's *chorus.Error (e.g. 401/20104 for an expired token). ctx bounds
// only the connection attempt, not the Client's life.
func New(ctx context.Context, token string, opts Options) (*Client, error) {
	wsURL, base, host, err := parseURL(opts.URL)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 250 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.MaxFrameBytes <= 0 {
		opts.MaxFrameBytes = 32 << 20
	}
	if opts.EventBuffer <= 0 {
		opts.EventBuffer = 256
	}
	c := &Client{
		opts: opts, log: opts.Logger.With(slog.String("component", "chorus-client")),
		wsURL: wsURL, base: base, host: host,
		done: make(chan struct{}), token: token,
		ready: make(chan struct{}), objects: make(map[string]*entity), canceling: make(map[string]chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.corr.Store(time.Now().UnixMilli())
	c.disp = newDispatcher()
	go c.disp.run(c.ctx)
	go c.supervise()

	select {
	case <-c.readyOrTerminal():
	case <-ctx.Done():
	}
	c.mu.Lock()
	connected, term, last := c.sess != nil, c.terminal, c.lastErr
	c.mu.Unlock()
	switch {
	case connected:
		return c, nil
	case term != nil:
		c.Close()
		return nil, fmt.Errorf("client: connect: %w", term)
	default:
		c.Close()
		if last != nil {
			return nil, fmt.Errorf("client: connect: %w (last error: %w)", ctx.Err(), last)
		}
		return nil, fmt.Errorf("client: connect: %w", ctx.Err())
	}
}

// parseURL derives the Twilsock URL and the CDS base from u.
func parseURL(u string) (wsURL, base, host string, err error) {
	if u == "" {
		return "", "", "", errors.New("client: Options.URL is empty")
	}
	p, err := url.Parse(u)
	if err != nil {
		return "", "", "", fmt.Errorf("client: parse URL: %w", err)
	}
	if p.Host == "" {
		return "", "", "", fmt.Errorf("client: URL %q has no host", u)
	}
	var wsScheme, httpScheme string
	switch p.Scheme {
	case "http", "ws":
		wsScheme, httpScheme = "ws", "http"
	case "https", "wss":
		wsScheme, httpScheme = "wss", "https"
	default:
		return "", "", "", fmt.Errorf("client: URL %q: scheme must be http, https, ws or wss", u)
	}
	path := strings.TrimSuffix(p.Path, "/")
	if !strings.HasSuffix(path, "/v3/wsconnect") {
		path += "/v3/wsconnect"
	}
	return wsScheme + "://" + p.Host + path, httpScheme + "://" + p.Host, p.Host, nil
}

// Close ends the session and stops reconnecting. Calls in progress fail
// with ErrClosed or ErrDisconnected; Events channels are closed and no
// callback runs after Close returns. Called from a callback, Close does
// not wait for that callback: it returns, and the channels are closed
// once the callback returns.
func (c *Client) Close() error {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s != nil {
		// Tell the server, best effort (the SDK's shutdown does the same).
		s.trySend(protocol.Encode(nil, &protocol.Header{Method: protocol.MethodClose, ID: protocol.NewID()}, nil))
		s.flush(100 * time.Millisecond)
	}
	c.cancel()
	<-c.done
	if !c.disp.onDispatcher() { // a callback waits for nothing of its own
		<-c.disp.done
	}
	return nil
}

// Connected reports whether a session is live.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess != nil
}

// UpdateToken replaces the session's token: an update on the live
// session, or the token of the next init while disconnected. A Client
// that gave up (see New) returns the error it gave up with, and a closed
// one ErrClosed.
func (c *Client) UpdateToken(ctx context.Context, token string) error {
	c.mu.Lock()
	if term := c.terminal; term != nil {
		c.mu.Unlock()
		return fmt.Errorf("client: update token: %w", term)
	}
	if c.ctx.Err() != nil {
		c.mu.Unlock()
		return fmt.Errorf("client: update token: %w", ErrClosed)
	}
	s := c.sess
	c.setToken(token)
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	return c.sendUpdate(ctx, s, token)
}

func (c *Client) sendUpdate(ctx context.Context, s *session, token string) error {
	h := &protocol.Header{Method: protocol.MethodUpdate, ID: protocol.NewID()}
	if err := h.Set("token", token); err != nil {
		return fmt.Errorf("client: update token: %w", err)
	}
	f, err := s.call(ctx, h, nil, nil)
	if err != nil {
		return fmt.Errorf("client: update token: %w", err)
	}
	if st := f.Header.Status; st == nil || st.Code < 200 || st.Code > 299 {
		return fmt.Errorf("client: update token: %w", statusError(st))
	}
	return nil
}

// readyOrTerminal returns a channel closed once connected or given up.
func (c *Client) readyOrTerminal() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

// session waits for a live session.
func (c *Client) session(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		s, term, ready := c.sess, c.terminal, c.ready
		c.mu.Unlock()
		if s != nil {
			return s, nil
		}
		if term != nil {
			return nil, term
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

func (c *Client) setSession(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sess = s
	c.lastErr = nil
	close(c.ready)
}

func (c *Client) dropSession() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sess = nil
	c.ready = make(chan struct{})
}

// giveUp ends the Client for good with err: calls fail with it, and every
// open handle gets EventSubscriptionFailed with it (its Events channels
// are closed after that event and its Err reports it), so that a program
// ranging over Events learns that nothing more will come.
func (c *Client) giveUp(err *chorus.Error) {
	c.mu.Lock()
	c.terminal = err
	c.sess = nil
	close(c.ready)
	live := make([]*entity, 0, len(c.objects))
	for _, e := range c.objects {
		live = append(live, e)
	}
	c.mu.Unlock()
	for _, e := range live {
		e.failed(0, err)
	}
}

// tokenAttempts bounds the TokenProvider calls made, with backoff, to
// replace an expired token before the Client gives up: a token backend
// that is down for a while (a deploy, a restart) must not end it.
const tokenAttempts = 8

// renewWithRetry asks the TokenProvider for a new token up to
// tokenAttempts times, with the reconnect backoff between attempts (32 s
// in all with the default MinBackoff and MaxBackoff), and reports whether
// one came.
func (c *Client) renewWithRetry() bool {
	if c.opts.TokenProvider == nil {
		return false
	}
	for i := range tokenAttempts {
		if i > 0 && !c.sleep(c.backoff(i-1, 0)) {
			return false
		}
		if _, ok := c.refreshToken(); ok {
			return true
		}
	}
	return false
}

// initRejected is a non-2xx init reply.
type initRejected struct {
	st        protocol.Status
	backoffMS int
}

func (e *initRejected) Error() string {
	return fmt.Sprintf("client: init rejected: %d %s (%d %s)", e.st.Code, e.st.Status, e.st.ErrorCode, e.st.Description)
}

// dialRefused is an HTTP answer other than the websocket upgrade: the
// server's error, and the websocket library's.
type dialRefused struct {
	url    string
	twilio *chorus.Error
	err    error
}

func (e *dialRefused) Error() string {
	return fmt.Sprintf("client: dial %s: %v (%v)", e.url, e.twilio, e.err)
}

func (e *dialRefused) Unwrap() []error { return []error{e.twilio, e.err} }

// final reports whether retrying cannot help: a 4xx other than 408 and
// 429 (a wrong URL or path, a refused origin). 5xx, 408 and 429 are
// transient.
func (e *dialRefused) final() bool {
	st := e.twilio.Status
	return st >= 400 && st < 500 && st != http.StatusRequestTimeout && st != http.StatusTooManyRequests
}

// supervise connects, runs sessions and reconnects until Close.
func (c *Client) supervise() {
	defer close(c.done)
	failures := 0
	floor := time.Duration(0)
	connected := false // a session was established
	for c.ctx.Err() == nil {
		c.mu.Lock()
		tok, cont := c.token, c.continuation
		c.mu.Unlock()
		s, err := c.connect(tok, cont)
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			c.lastErr = err
			c.mu.Unlock()
			// Before the first session only: later, a 4xx is more likely
			// a proxy's during a deploy than a wrong URL.
			if refused := (*dialRefused)(nil); !connected && errors.As(err, &refused) && refused.final() {
				c.log.Warn("client: websocket refused", slog.Any("err", err))
				c.giveUp(refused.twilio)
				return
			}
			var rej *initRejected
			if errors.As(err, &rej) {
				switch code := rej.st.Code; {
				case code == 401 || code == 403:
					if rej.st.ErrorCode == chorus.ErrTokenExpired.Code && failures < 5 && c.renewWithRetry() {
						failures++
						continue
					}
					if c.ctx.Err() != nil {
						return // closed while renewing: closed, not given up
					}
					c.log.Warn("client: token rejected", slog.Any("err", err))
					c.giveUp(statusError(&rej.st))
					return
				case code == 429 && rej.backoffMS > 0:
					floor = time.Duration(rej.backoffMS) * time.Millisecond
				}
			}
			c.log.Debug("client: connect failed", slog.Any("err", err), slog.Int("failures", failures))
			if !c.sleep(c.backoff(failures, floor)) {
				return
			}
			failures++
			continue
		}
		failures, floor, connected = 0, 0, true
		c.setSession(s)
		go c.resubscribe(s)
		cause := s.wait()
		c.dropSession()
		if c.ctx.Err() != nil {
			return
		}
		c.log.Debug("client: session ended", slog.Any("cause", cause))
		var ce *closeFrame
		if errors.As(cause, &ce) {
			switch ce.st.Code {
			case 308:
				floor = time.Duration(ce.backoffMS) * time.Millisecond
			case 401, 410:
				if !c.renewWithRetry() {
					if c.ctx.Err() != nil {
						return // closed while renewing: closed, not given up
					}
					e := statusError(&ce.st)
					if ce.st.Code == 410 { // token expired while connected: 401/20104 like init
						e.Status, e.Code = chorus.ErrTokenExpired.Status, chorus.ErrTokenExpired.Code
					}
					c.giveUp(e)
					return
				}
				continue // reconnect at once with the new token
			case 406, 417:
				c.giveUp(statusError(&ce.st))
				return
			}
		}
		if !c.sleep(c.backoff(0, floor)) {
			return
		}
		floor = 0
	}
}

// refreshToken asks the TokenProvider for a new token and makes it the
// Client's.
func (c *Client) refreshToken() (string, bool) {
	if c.opts.TokenProvider == nil {
		return "", false
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.RequestTimeout)
	defer cancel()
	tok, err := c.opts.TokenProvider(ctx)
	if err != nil {
		c.log.Warn("client: token provider", slog.Any("err", err))
		return "", false
	}
	c.mu.Lock()
	c.setToken(tok)
	c.mu.Unlock()
	return tok, true
}

// setToken makes tok the Client's token (c.mu held). A token that is
// renewed is renewed no sooner than half-way through the lifetime it had
// when it arrived: the server warns at max(exp-180s, 0), at once for a
// token with less than 3 minutes left, and renewing at once each time
// would call the TokenProvider in a loop when it hands out such tokens.
func (c *Client) setToken(tok string) {
	c.token = tok
	c.notBefore = time.Time{}
	if exp, ok := tokenExpiry(tok); ok {
		now := time.Now()
		if left := exp.Sub(now); left > 0 {
			c.notBefore = now.Add(left / 2)
		}
	}
}

// tokenExpiry reads the exp claim of a JWT without verifying it.
func tokenExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(b, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	return time.Unix(int64(*claims.Exp), 0), true
}

// tokenAboutToExpire handles the server's token_about_to_expire (reader
// goroutine): it starts the renewal loop unless it runs already, in which
// case the loop handles this warning after the renewal in progress.
func (c *Client) tokenAboutToExpire(s *session) {
	if c.opts.TokenProvider == nil {
		c.log.Info("client: token about to expire and no TokenProvider")
		return
	}
	c.mu.Lock()
	c.renewAgain, c.renewSess = true, s
	start := !c.renewing
	c.renewing = true
	c.mu.Unlock()
	if start {
		go c.renewLoop()
	}
}

// renewLoop renews the token, one renewal at a time, while warnings are
// pending. A warning is about the token that was current when it arrived:
// if that token was replaced meanwhile (UpdateToken, a reconnect's
// renewal), it needs no renewal; otherwise the token is renewed once its
// notBefore has passed, and the live session updated.
func (c *Client) renewLoop() {
	for {
		c.mu.Lock()
		if !c.renewAgain || c.ctx.Err() != nil {
			c.renewing = false
			c.mu.Unlock()
			return
		}
		c.renewAgain = false
		s, tok, notBefore := c.renewSess, c.token, c.notBefore
		c.renewSess = nil
		c.mu.Unlock()
		if d := time.Until(notBefore); d > 0 && !c.sleep(d) {
			continue // closed: the loop ends above
		}
		c.mu.Lock()
		current := c.token == tok
		c.mu.Unlock()
		if !current || s.ctx.Err() != nil {
			continue // renewed meanwhile, or the session ended (the next init renews it)
		}
		fresh, ok := c.refreshToken()
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, c.opts.RequestTimeout)
		if err := c.sendUpdate(ctx, s, fresh); err != nil && s.ctx.Err() == nil {
			c.log.Warn("client: token update", slog.Any("err", err))
		}
		cancel()
	}
}

// backoff is MinBackoff·2^n capped at MaxBackoff, at least floor, ±20 %.
func (c *Client) backoff(n int, floor time.Duration) time.Duration {
	d := c.opts.MinBackoff
	for i := 0; i < n && d < c.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.opts.MaxBackoff)
	d = max(d, floor)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func (c *Client) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// connect dials and runs the init handshake.
func (c *Client) connect(tok, continuation string) (*session, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.DialTimeout+c.opts.RequestTimeout)
	defer cancel()
	dctx, dcancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	ws, resp, err := websocket.Dial(dctx, c.wsURL, &websocket.DialOptions{
		HTTPClient:      c.opts.HTTPClient,
		CompressionMode: websocket.CompressionDisabled,
	})
	dcancel()
	var refusal *chorus.Error
	if resp != nil && resp.Body != nil {
		if err != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			// The server's answer instead of the upgrade (a Twilio error
			// body, of which the websocket library keeps 1 KB).
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
			refusal = decodeError(resp.StatusCode, body)
		}
		resp.Body.Close()
	}
	if err != nil {
		if refusal != nil {
			return nil, &dialRefused{url: c.wsURL, twilio: refusal, err: err}
		}
		return nil, fmt.Errorf("client: dial %s: %w", c.wsURL, err)
	}
	ws.SetReadLimit(c.opts.MaxFrameBytes)
	h := &protocol.Header{Method: protocol.MethodInit, ID: protocol.NewID()}
	_ = h.Set("token", tok)
	if continuation != "" {
		_ = h.Set("continuation_token", continuation)
	}
	_ = h.SetRaw("metadata", []byte(`{"ver":"1.0.2","env":"Go","type":"sync","sdk":"Go","sdkv":"0.1"}`))
	_ = h.SetRaw("registrations", []byte(`[{"product":"data_sync","type":"ers","notification_protocol_version":0,"message_types":["twilio.sync.event","com.twilio.rtd.cds.document","com.twilio.rtd.cds.list","com.twilio.rtd.cds.map"]}]`))
	_ = h.SetRaw("capabilities", []byte(`["client_update"]`))
	if err := ws.Write(ctx, websocket.MessageBinary, protocol.Encode(nil, h, nil)); err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("client: send init: %w", err)
	}
	for {
		typ, msg, err := ws.Read(ctx)
		if err != nil {
			ws.CloseNow()
			return nil, fmt.Errorf("client: read init reply: %w", err)
		}
		if typ != websocket.MessageBinary {
			continue
		}
		f, err := protocol.Decode(msg, int(c.opts.MaxFrameBytes))
		if err != nil {
			ws.CloseNow()
			return nil, fmt.Errorf("client: init reply: %w", err)
		}
		if f.Header.Method != protocol.MethodReply || f.Header.ID != h.ID {
			continue // nothing else is expected before the reply
		}
		st := f.Header.Status
		if st == nil {
			ws.CloseNow()
			return nil, errors.New("client: init reply without status")
		}
		if st.Code < 200 || st.Code > 299 {
			rej := &initRejected{st: *st}
			var p struct {
				Backoff struct {
					Min int `json:"reconnect_min_ms"`
				} `json:"backoff_policy"`
			}
			if jsonUnmarshal(f.Payload, &p) == nil {
				rej.backoffMS = p.Backoff.Min
			}
			ws.Close(websocket.StatusNormalClosure, "")
			return nil, rej
		}
		var ct string
		if ok, _ := f.Header.Get("continuation_token", &ct); ok {
			c.mu.Lock()
			c.continuation = ct
			c.mu.Unlock()
		}
		s := newSession(c, ws)
		go s.run()
		return s, nil
	}
}

// statusError turns a twilsock status into a *chorus.Error.
func statusError(st *protocol.Status) *chorus.Error {
	if st == nil {
		return &chorus.Error{Message: "reply without status"}
	}
	msg := st.Description
	if msg == "" {
		msg = st.Status
	}
	return &chorus.Error{Status: st.Code, Code: st.ErrorCode, Message: msg}
}
