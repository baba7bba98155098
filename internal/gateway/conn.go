package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/protocol"
	"github.com/chorus-sync/chorus/token"
)

// Reasons a session ends.
var (
	errClientClosed   = errors.New("gateway: client closed the session")
	errSlowConsumer   = errors.New("gateway: slow consumer")
	errNotInitialized = errors.New("gateway: request before init")
	errTokenExpired   = errors.New("gateway: token expired")
	errIdle           = errors.New("gateway: idle connection")
	errShutdown       = errors.New("gateway: shutting down")
)

// conn is one WebSocket session. Goroutines: the reader decodes frames and
// hands requests to the worker; the worker runs init, update and upstream
// requests one at a time in arrival order; the writer alone writes to the
// socket. Hub deliveries enqueue from Bus goroutines.
type conn struct {
	g   *Gateway
	ws  *websocket.Conn
	id  string
	log *slog.Logger
	q   *sendQueue

	ctx    context.Context
	cancel context.CancelCauseFunc

	work     chan *protocol.Frame
	lastRead atomic.Int64 // unix nanos of the last inbound message

	// base is the public URL base of events; written once by the worker
	// before the first subscription exists.
	base string

	// Worker-owned session state.
	initialized bool
	claims      *token.Claims
	svc         *chorus.Service
	actor       engine.Actor
	textLogged  bool

	mu        sync.Mutex // guards subs and the token timers
	subs      map[string]*subscription
	tokenGen  uint64
	warnTimer *time.Timer
	expTimer  *time.Timer
	slowOnce  sync.Once
}

func newConn(g *Gateway, ws *websocket.Conn, r *http.Request) *conn {
	c := &conn{
		g:    g,
		ws:   ws,
		id:   chorus.NewSID("EP")[2:],
		q:    newSendQueue(g.cfg.SendQueueFrames, g.cfg.SendQueueBytes),
		work: make(chan *protocol.Frame, 64),
		subs: make(map[string]*subscription),
	}
	c.log = g.log.With(slog.String(logConn, c.id))
	c.ctx, c.cancel = context.WithCancelCause(g.ctx)
	// Frames up to 4×MaxFrameBytes are read so that an oversize request
	// can be answered with 413; larger messages close the socket.
	ws.SetReadLimit(4*int64(g.cfg.MaxFrameBytes) + 1024)
	c.lastRead.Store(time.Now().UnixNano())
	return c
}

// run serves the session until it ends.
func (c *conn) run() {
	g, ctx := errgroup.WithContext(c.ctx)
	// Reads and writes use a context without Done, which spares
	// coder/websocket an AfterFunc per call; cancellation closes the
	// socket instead, which unblocks both.
	stop := context.AfterFunc(ctx, func() { c.ws.CloseNow() })
	defer stop()
	g.Go(func() error { return c.readLoop(ctx) })
	g.Go(func() error { return c.writeLoop(ctx) })
	g.Go(func() error { return c.workLoop(ctx) })
	err := g.Wait()
	if cause := context.Cause(c.ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	c.cancel(err)
	c.teardown()
	switch {
	case err == nil, errors.Is(err, errClientClosed), errors.Is(err, errTokenExpired), errors.Is(err, errShutdown):
		c.log.Debug("gateway: session ended", slog.Any(logReason, err))
		c.ws.Close(websocket.StatusNormalClosure, "")
	case errors.Is(err, errSlowConsumer):
		c.ws.CloseNow()
	default:
		c.log.Debug("gateway: session ended", slog.Any(logReason, err))
		c.ws.CloseNow()
	}
}

// teardown drops the session's subscriptions and timers.
func (c *conn) teardown() {
	c.mu.Lock()
	subs := c.subs
	c.subs = make(map[string]*subscription)
	c.tokenGen++
	if c.warnTimer != nil {
		c.warnTimer.Stop()
	}
	if c.expTimer != nil {
		c.expTimer.Stop()
	}
	c.mu.Unlock()
	for _, s := range subs {
		c.g.hub.release(s.t, s)
	}
}

// forget removes s from the connection's subscriptions and reports whether
// it was there.
func (c *conn) forget(s *subscription) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs[s.sid] != s {
		return false
	}
	delete(c.subs, s.sid)
	return true
}

// fail ends the session with cause.
func (c *conn) fail(cause error) { c.cancel(cause) }

// slow ends the session as a slow consumer, once.
func (c *conn) slow() {
	c.slowOnce.Do(func() {
		c.g.slowConsumers.Add(1)
		c.log.Warn("gateway: closing slow consumer", slog.Int("queued", c.q.len()))
		c.cancel(errSlowConsumer)
	})
}

// send queues a reply or control frame.
func (c *conn) send(f []byte) {
	if !c.q.push(f) {
		c.slow()
	}
}

// sendEvent queues a notification (called by the hub under a topic lock).
func (c *conn) sendEvent(f []byte) {
	if !c.q.pushNotification(f) {
		c.slow()
	}
}

// readLoop decodes inbound frames. It never writes.
func (c *conn) readLoop(ctx context.Context) error {
	for {
		typ, msg, err := c.ws.Read(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return errClientClosed
			}
			return fmt.Errorf("gateway: read: %w", err)
		}
		c.lastRead.Store(time.Now().UnixNano())
		if typ != websocket.MessageBinary {
			if !c.textLogged {
				c.textLogged = true
				c.log.Info("gateway: ignoring text message (twilsock frames are binary)")
			}
			continue
		}
		f, err := protocol.Decode(msg, c.g.cfg.MaxFrameBytes)
		if errors.Is(err, protocol.ErrTooLarge) {
			if id, ok := oversizeRequest(msg, c.g.cfg.MaxFrameBytes); ok && c.isInitialized() {
				// A well-formed request that is merely too big: answer it
				// like the SDK expects (413 inside a 200 reply).
				c.sendHTTP(id, errorResponse(chorus.Errorf(chorus.ErrTooLarge, "Request entity too large: frame exceeds %d bytes", c.g.cfg.MaxFrameBytes)))
				continue
			}
		}
		if err != nil {
			c.g.malformed.Add(1)
			c.log.Info("gateway: closing on malformed frame", slog.Any(logError, err))
			return fmt.Errorf("gateway: decode: %w", err)
		}
		switch f.Header.Method {
		case protocol.MethodReply, protocol.MethodTelemetry:
			// Acks and telemetry need no answer.
		case protocol.MethodClose:
			return errClientClosed
		case protocol.MethodInit, protocol.MethodUpdate, protocol.MethodMessage,
			"put_notification_ctx", "delete_notification_ctx":
			select {
			case c.work <- f:
			case <-ctx.Done():
				return nil
			}
		default:
			c.log.Debug("gateway: ignoring unknown method", slog.String(logMethod, f.Header.Method))
		}
	}
}

// writeLoop alone writes to the socket: every frame that is ready, back to
// back, under one write deadline. It also sends pings and closes idle
// connections.
func (c *conn) writeLoop(ctx context.Context) error {
	cfg := &c.g.cfg
	ping := time.NewTicker(cfg.PingInterval)
	defer ping.Stop()
	initDeadline := time.NewTimer(cfg.InitTimeout)
	defer initDeadline.Stop()
	var batch [][]byte
	// One timer per connection is the write deadline: it closes the
	// socket if a batch takes longer than WriteTimeout.
	var writing, timedOut atomic.Bool
	deadline := time.AfterFunc(time.Hour, func() {
		if writing.Load() {
			timedOut.Store(true)
			c.ws.CloseNow()
		}
	})
	deadline.Stop()
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.q.wake:
		case <-initDeadline.C:
			if !c.isInitialized() {
				return errors.New("gateway: no init within timeout")
			}
			continue
		case <-ping.C:
			idle := time.Since(time.Unix(0, c.lastRead.Load()))
			if idle > 2*cfg.PingInterval+cfg.WriteTimeout {
				return errIdle
			}
			c.send(protocol.Encode(nil, protocol.NewPing(protocol.NewID()), nil))
		}
		var overflow bool
		batch, overflow = c.q.drain(batch)
		if overflow {
			c.slow()
			return errSlowConsumer
		}
		if len(batch) == 0 {
			continue
		}
		writing.Store(true)
		deadline.Reset(cfg.WriteTimeout)
		for _, f := range batch {
			if err := c.ws.Write(context.Background(), websocket.MessageBinary, f); err != nil {
				deadline.Stop()
				if timedOut.Load() {
					c.slow()
					return errSlowConsumer
				}
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("gateway: write: %w", err)
			}
		}
		deadline.Stop()
		writing.Store(false)
		clear(batch)
	}
}

// isInitialized is read by the writer; the worker sets it.
func (c *conn) isInitialized() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.initialized
}

// workLoop runs requests one at a time, in arrival order.
func (c *conn) workLoop(ctx context.Context) error {
	for {
		var f *protocol.Frame
		select {
		case <-ctx.Done():
			return nil
		case f = <-c.work:
		}
		var err error
		switch f.Header.Method {
		case protocol.MethodInit:
			err = c.handleInit(ctx, f)
		case protocol.MethodUpdate:
			err = c.handleUpdate(ctx, f)
		case protocol.MethodMessage:
			err = c.handleMessage(ctx, f)
		default: // push notification registrations: not used by Sync
			if !c.isInitialized() {
				err = errNotInitialized
				break
			}
			c.send(protocol.Encode(nil, protocol.NewReply(f.Header.ID, protocol.StatusOK), nil))
		}
		if err != nil {
			return err
		}
	}
}

// Twilsock statuses.
var (
	statusUnauthorized = func(e *chorus.Error) protocol.Status {
		return protocol.Status{Code: 401, Status: "UNAUTHORIZED", ErrorCode: e.Code, Description: e.Message}
	}
	statusForbidden = func(e *chorus.Error) protocol.Status {
		return protocol.Status{Code: 403, Status: "FORBIDDEN", ErrorCode: e.Code, Description: e.Message}
	}
	statusInternal = protocol.Status{Code: 500, Status: "INTERNAL_SERVER_ERROR", ErrorCode: chorus.ErrInternal.Code, Description: chorus.ErrInternal.Message}
)

// authenticate verifies a token and resolves its service. A non-nil status
// is the rejection to send.
func (c *conn) authenticate(ctx context.Context, raw string) (*token.Claims, *chorus.Service, *protocol.Status) {
	claims, err := c.g.cfg.Verifier.Verify(ctx, raw)
	if err != nil {
		e := chorus.AsError(err)
		if e.Status >= 500 {
			c.log.Error("gateway: verify token", slog.Any(logError, err))
			return nil, nil, &statusInternal
		}
		st := statusUnauthorized(e)
		return nil, nil, &st
	}
	if claims.Sync == nil {
		st := statusForbidden(chorus.Errorf(chorus.ErrServiceNotFound, "Access Token has no data_sync grant"))
		return nil, nil, &st
	}
	sid := claims.Sync.ServiceSID
	if sid == "" {
		sid = "default"
	}
	svc, err := c.g.cfg.Engine.Service(ctx, claims.Subject, sid)
	if err != nil {
		e := chorus.AsError(err)
		if e.Status >= 500 {
			c.log.Error("gateway: resolve service", slog.Any(logError, err))
			return nil, nil, &statusInternal
		}
		st := statusForbidden(e)
		return nil, nil, &st
	}
	return claims, svc, nil
}

func (c *conn) reply(id string, st protocol.Status) {
	c.send(protocol.Encode(nil, protocol.NewReply(id, st), nil))
}

func (c *conn) handleInit(ctx context.Context, f *protocol.Frame) error {
	id := f.Header.ID
	if c.isInitialized() {
		c.reply(id, protocol.Status{Code: 400, Status: "BAD_REQUEST", Description: "session already initialized"})
		return nil
	}
	in, err := protocol.ParseInit(&f.Header)
	if err != nil {
		c.reply(id, statusUnauthorized(chorus.Errorf(chorus.ErrTokenInvalid, "Invalid Access Token: %v", err)))
		return nil
	}
	claims, svc, st := c.authenticate(ctx, in.Token)
	if st != nil {
		c.log.Info("gateway: init rejected", slog.Int("code", st.ErrorCode), slog.String("description", st.Description))
		c.reply(id, *st)
		return nil
	}
	c.claims, c.svc = claims, svc
	c.actor = engine.Actor{Identity: claims.Identity, EndpointID: c.id}
	c.mu.Lock()
	c.initialized = true
	c.mu.Unlock()
	c.log.Debug("gateway: session started", slog.String(logIdentity, claims.Identity), slog.String(logService, svc.SID))
	c.send(protocol.Encode(nil, protocol.NewInitReply(id, "ct_"+protocol.NewID()[2:], []string{protocol.CapabilityClientUpdate}), nil))
	c.armTokenTimers(claims.Expires)
	return nil
}

func (c *conn) handleUpdate(ctx context.Context, f *protocol.Frame) error {
	if !c.isInitialized() {
		return errNotInitialized
	}
	id := f.Header.ID
	up, err := protocol.ParseUpdate(&f.Header)
	if err != nil {
		c.reply(id, statusUnauthorized(chorus.Errorf(chorus.ErrTokenInvalid, "Invalid Access Token: %v", err)))
		return nil
	}
	claims, svc, st := c.authenticate(ctx, up.Token)
	if st != nil {
		if st.Code == 403 { // the SDK maps only "UNAUTHORIZED" to its 51130
			st.Code, st.Status = 401, "UNAUTHORIZED"
		}
		c.reply(id, *st)
		return nil
	}
	if claims.Identity != c.claims.Identity || svc.SID != c.svc.SID {
		c.reply(id, statusUnauthorized(chorus.Errorf(chorus.ErrTokenInvalid, "Invalid Access Token: identity or service differs from the session's")))
		return nil
	}
	c.claims = claims
	c.reply(id, protocol.StatusOK)
	c.armTokenTimers(claims.Expires)
	return nil
}

// armTokenTimers schedules token_about_to_expire at exp-180s (at once if
// less remains) and the 410 close at exp, replacing earlier timers.
func (c *conn) armTokenTimers(exp time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tokenGen++
	gen := c.tokenGen
	if c.warnTimer != nil {
		c.warnTimer.Stop()
	}
	if c.expTimer != nil {
		c.expTimer.Stop()
	}
	left := exp.Sub(c.g.cfg.Now())
	c.warnTimer = time.AfterFunc(max(left-180*time.Second, 0), func() {
		if c.currentGen(gen) {
			c.send(protocol.Encode(nil, protocol.NewClientUpdate(protocol.NewID(), protocol.ClientUpdateTokenAboutToExpire), nil))
		}
	})
	c.expTimer = time.AfterFunc(max(left, 0), func() {
		if !c.currentGen(gen) {
			return
		}
		c.log.Info("gateway: token expired; closing session")
		e := chorus.ErrTokenExpired
		c.send(protocol.Encode(nil, protocol.NewClose(protocol.NewID(), protocol.Status{
			Code: 410, Status: "TOKEN_EXPIRED", ErrorCode: e.Code, Description: e.Message,
		}), nil))
		time.AfterFunc(3*time.Second, func() {
			if c.currentGen(gen) { // an update in flight answered in time
				c.fail(errTokenExpired)
			}
		})
	})
}

func (c *conn) currentGen(gen uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokenGen == gen
}

// oversizeRequest reports the id of msg if it is a complete, well-formed
// message frame whose header fits in limit but whose payload does not.
func oversizeRequest(msg []byte, limit int) (string, bool) {
	const preamble = "TWILSOCK V3.0 "
	if !bytes.HasPrefix(msg, []byte(preamble)) {
		return "", false
	}
	rest := msg[len(preamble):]
	i := bytes.Index(rest, []byte("\r\n"))
	if i <= 0 {
		return "", false
	}
	hlen, err := strconv.Atoi(string(rest[:i]))
	rest = rest[i+2:]
	if err != nil || hlen <= 0 || hlen > limit || hlen > len(rest) {
		return "", false
	}
	var h protocol.Header
	if err := h.UnmarshalJSON(rest[:hlen]); err != nil || h.Method != protocol.MethodMessage || h.ID == "" {
		return "", false
	}
	// The payload must really be there: a frame that only claims a huge
	// payload_size is malformed.
	if len(rest)-hlen-2 < h.PayloadSize {
		return "", false
	}
	return h.ID, true
}
