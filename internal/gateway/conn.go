package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"

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
	errNoInit         = errors.New("gateway: no init within timeout")
)

// conn is one WebSocket session. Goroutines: the reader decodes frames and
// hands requests to the worker; the worker runs init, update and upstream
// requests one at a time in arrival order (it is started when a request
// arrives and exits when none is left, so an idle session has none); the
// writer alone writes to the socket, and ends the session: the gateway's
// writer pool on a plain socket (writer.go), else writeLoop. Hub deliveries
// enqueue from Bus goroutines; timers enqueue pings and token notices.
type conn struct {
	g    *Gateway
	nc   net.Conn
	br   *bufio.Reader // small: an idle session holds it while it waits
	id   string
	q    *sendQueue
	addr string // client IP, for MaxUnauthenticatedPerAddr

	// unauth: counted in Gateway.unauth; session: counted in
	// Gateway.perIdentity under that key (both guarded by Gateway.mu).
	unauth  bool
	session *identityKey
	// use is what the identity's sessions hold (set with session, kept
	// after it: live queries released at teardown count down on it).
	use *identityUse
	// initMark is Config.AwaitInit's, called while unauth and once more
	// when it is cleared (guarded by Gateway.mu).
	initMark func(waiting bool)

	ctx    context.Context // canceled, with the reason, when the session ends
	cancel context.CancelCauseFunc

	work     chan *protocol.Frame
	working  atomic.Bool    // a worker goroutine is running
	inflight atomic.Int32   // request frames taken from the socket and not yet served (idle)
	workers  sync.WaitGroup // the worker goroutines
	readDone chan struct{}  // closed when the reader returns
	lastRead atomic.Int64   // unix nanos of the last inbound message
	writing  atomic.Bool    // the writer is in a write with a deadline set
	// raw is set when the socket is written by the gateway's writer pool
	// (writer.go) rather than by a writer goroutine of the session's own;
	// sched is then held by whoever may write: a pool writer, writeRest,
	// or, once the session ended, finish.
	raw      syscall.RawConn
	sched    atomic.Bool
	deadline time.Time // the socket's write deadline (writer-owned)
	pong     atomic.Pointer[[]byte]
	// Holding back writes while the pool is behind (coalesce.go).
	deferred   atomic.Bool // held: the timer or an urgent kick takes it
	lastFanout int64       // monoNow of the last write of live events; 0: none yet
	deferTimer *time.Timer
	// eventProtocol is the event_protocol_version of the session's last
	// /v4/Subscriptions request (0 until one arrives): it picks the format
	// of subscription_* notifications (see sendSync).
	eventProtocol atomic.Int32

	// base is the public URL base of events; written once by the worker
	// before the first subscription exists.
	base string

	// Reader-owned.
	rhdr       [ws.MaxHeaderSize - 2]byte
	textLogged bool
	authed     bool // init succeeded (a cache of initialized)
	preInit    int  // requests queued before init succeeded

	// Worker-owned session state.
	claims *token.Claims
	svc    *chorus.Service // refreshed from svcLatest before each request
	actor  engine.Actor

	svcLatest  atomic.Pointer[chorus.Service] // the service as last read (access.go)
	accessGen  atomic.Uint64                  // bumped when svcLatest changes
	revokeOnce sync.Once
	// closing is set when the session's close (revoked or expired)
	// is sent: from then on requests are refused, though the socket lives
	// a grace period longer. A revoked session also gets no more events;
	// an expired one still does, because an update in its grace (sent
	// before the client saw the 410) revives it, and a client that skipped
	// events would not know to resume them.
	// The service as last read is current while its change counter
	// (svcGen, set at init) equals svcGenSeen (servicegen.go).
	svcGen      atomic.Pointer[atomic.Uint64]
	svcGenSeen  atomic.Uint64
	svcHolds    atomic.Bool // some subscription is held for a stale service
	aclTurnedOn atomic.Bool // a service read turned ACLs on: afterServiceRead re-checks

	closing     atomic.Int32
	closeReason atomic.Pointer[chorus.Error] // what requests get once closingRevoked

	mu          sync.Mutex // guards the fields below
	initialized bool
	offline     bool // teardown ran: Presence heard of the end
	online      struct {
		svc      *chorus.Service
		identity string
	} // the session Presence heard of at init
	subs    map[string]*subscription
	queries map[string]*liveQuery // by query_id (insights.go)
	account string                // the token's account (sub)
	keySID  string                // the API key that signed the token (iss)
	// tokenMark is the token's auth token mark (engine.AuthTokenMark):
	// "" but for tokens minted through the admin API with the auth token.
	tokenMark string
	// key is that API key as its verification read it, keyGen the
	// gateway's key generation then: a renewal signed with it is verified
	// against it while the store is out of reach, unless keys changed
	// since (authenticate).
	key       *chorus.APIKey
	keyGen    uint64
	tokenGen  uint64
	warnTimer *time.Timer
	expTimer  *time.Timer
	pingTimer *time.Timer
	initTimer *time.Timer
	slowOnce  sync.Once
}

// I/O sizes.
const (
	// readBufferSize is the per-session read buffer. Acks and small
	// requests fit; larger payloads are read straight into the message.
	readBufferSize = 512
	// writeBufferSize is the size of the pooled write buffers, held only
	// while a batch is written.
	writeBufferSize = 16 << 10
	// closeWait bounds the closing handshake.
	closeWait = 2 * time.Second
)

var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufferSize) }}

// prefixReader reads the bytes the HTTP server had already buffered
// before the rest of the connection.
type prefixReader struct {
	r   io.Reader
	pre []byte
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.r.Read(b)
}

// newConn wraps an upgraded connection; buffered holds what the HTTP
// server read past the handshake (nil if nothing).
func newConn(g *Gateway, nc net.Conn, buffered *bufio.Reader) *conn {
	var src io.Reader = nc
	if buffered != nil && buffered.Buffered() > 0 {
		pre, _ := buffered.Peek(buffered.Buffered())
		src = &prefixReader{r: src, pre: bytes.Clone(pre)}
	}
	c := &conn{
		g:        g,
		nc:       nc,
		br:       bufio.NewReaderSize(src, readBufferSize),
		id:       chorus.NewSID("EP")[2:],
		q:        newSendQueue(g.cfg.SendQueueFrames, g.cfg.SendQueueBytes),
		work:     make(chan *protocol.Frame, 32),
		readDone: make(chan struct{}),
		subs:     make(map[string]*subscription),
		queries:  make(map[string]*liveQuery),
	}
	if g.cfg.SendQueueBudget > 0 {
		c.q.budget = &g.queued
	}
	if g.cfg.WriterPool {
		if c.raw = rawConn(nc); c.raw != nil {
			c.q.notify = c.kick
		}
	}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	c.lastRead.Store(time.Now().UnixNano())
	return c
}

// logger returns the session's logger (built on demand: sessions are many
// and log rarely).
func (c *conn) logger() *slog.Logger { return c.g.log.With(slog.String(logConn, c.id)) }

// start runs the session's reader and writer; the writer ends the session.
func (c *conn) start() {
	cfg := &c.g.cfg
	c.mu.Lock()
	c.pingTimer = time.AfterFunc(cfg.PingInterval, c.ping)
	c.initTimer = time.AfterFunc(cfg.InitTimeout, func() {
		if !c.isInitialized() {
			c.fail(errNoInit)
		}
	})
	c.mu.Unlock()
	go c.readLoop()
	if c.raw == nil {
		go c.writeLoop()
	}
}

// ping sends a twilsock ping and closes a session that has been silent
// for more than two intervals.
func (c *conn) ping() {
	if c.ctx.Err() != nil {
		return
	}
	cfg := &c.g.cfg
	if time.Since(time.Unix(0, c.lastRead.Load())) > 2*cfg.PingInterval+cfg.WriteTimeout {
		c.fail(errIdle)
		return
	}
	c.send(protocol.Encode(nil, protocol.NewPing(protocol.NewID()), nil))
	c.mu.Lock()
	c.pingTimer.Reset(cfg.PingInterval)
	c.mu.Unlock()
}

// finish ends the session: it sends a close frame when the session ended
// normally, closes the socket, waits for the reader and the worker, and
// drops the subscriptions. The writer runs it (writeLoop, or the holder
// of sched in pool mode).
func (c *conn) finish() {
	err := context.Cause(c.ctx)
	c.mu.Lock()
	c.pingTimer.Stop()
	if c.initTimer != nil {
		c.initTimer.Stop()
	}
	c.mu.Unlock()
	if c.deferTimer != nil { // finish holds sched
		c.deferTimer.Stop()
	}
	code := closeCode(err)
	if code != 0 && c.writeClose(code) == nil {
		// Wait for the client's close frame: the reader ends on it.
		t := time.NewTimer(closeWait)
		select {
		case <-c.readDone:
		case <-t.C:
		}
		t.Stop()
	}
	c.nc.Close()
	<-c.readDone
	c.workers.Wait()
	c.teardown()
	c.q.discard() // its bytes go back to the node's budget
	if errors.Is(err, errSlowConsumer) {
		// Logged when detected.
	} else {
		c.logger().Debug("gateway: session ended", slog.Any(logReason, err))
	}
	c.g.remove(c)
}

// closeError is a WebSocket protocol violation to answer with a close
// frame.
type closeError struct {
	code ws.StatusCode
	err  error
}

func (e *closeError) Error() string { return e.err.Error() }
func (e *closeError) Unwrap() error { return e.err }

// closeCode returns the WebSocket close status to send for a session that
// ended with err; 0 = close the socket without one.
func closeCode(err error) ws.StatusCode {
	var ce *closeError
	switch {
	case errors.Is(err, errClientClosed), errors.Is(err, errTokenExpired), errors.Is(err, errShutdown),
		errors.Is(err, errRevoked):
		return ws.StatusNormalClosure
	case errors.As(err, &ce):
		return ce.code
	}
	return 0
}

// writeClose writes a close frame with code.
func (c *conn) writeClose(code ws.StatusCode) error {
	c.nc.SetWriteDeadline(time.Now().Add(closeWait))
	_, err := c.nc.Write([]byte{0x80 | byte(ws.OpClose), 2, byte(code >> 8), byte(code)})
	return err
}

// teardown drops the session's subscriptions and timers.
func (c *conn) teardown() {
	c.mu.Lock()
	online := c.initialized && !c.offline
	svc, identity := c.online.svc, c.online.identity
	c.offline = true
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
	c.dropLiveQueries()
	if p := c.g.cfg.Presence; online && p != nil {
		p.Disconnected(svc, identity, c.id)
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

// refuseDraining answers a request that arrived after the gateway began
// to shut down: 503, as the request was not served.
func (c *conn) refuseDraining(f *protocol.Frame) {
	if f.Header.Method == protocol.MethodInit {
		c.reply(f.Header.ID, statusUnavailable)
		return
	}
	c.sendHTTP(f.Header.ID, errorResponse(errDraining))
}

// errDraining is what requests get while the server shuts down.
var errDraining = chorus.Errorf(chorus.ErrUnavailable, "Service unavailable: this server is shutting down; retry")

// idle reports whether the session has no request in flight or queued and
// nothing left to write: none queued, none taken for a write (writing, or
// sched in pool mode, are set before the queue is drained).
func (c *conn) idle() bool {
	return c.inflight.Load() == 0 && c.q.len() == 0 && !c.writing.Load() && !c.sched.Load()
}

// fail ends the session with cause (the first cause wins). A write in
// flight is cut short.
func (c *conn) fail(cause error) {
	c.cancel(cause)
	c.q.signal()
	if c.writing.Load() {
		c.nc.SetWriteDeadline(time.Now())
	}
}

// slow ends the session as a slow consumer, once; it reports whether this
// call did.
func (c *conn) slow() (closed bool) {
	c.slowOnce.Do(func() {
		c.g.slowConsumers.Add(1)
		c.logger().Warn("gateway: closing slow consumer", slog.Int("queued", c.q.len()))
		c.fail(errSlowConsumer)
		closed = true
	})
	return closed
}

// send queues a reply or control frame.
func (c *conn) send(f []byte) {
	if !c.q.push(f) {
		c.slow()
	}
}

// sendEvent queues a notification that is not an object event: a live
// query's (called under a topic lock) or a subscription's denial. It is
// parked like the object events while a write is in flight, so it keeps
// its place after those queued before it; otherwise it is signaled like a
// reply, which ends a hold (coalesce.go). It is never merged.
func (c *conn) sendEvent(f []byte) {
	if !c.q.pushNotification(outFrame{b: f}) {
		c.slow()
	}
}

// sendReplay queues a replayed event like a reply (in order with the
// subscription's replies); the writer may merge it with its neighbours.
func (c *conn) sendReplay(e *liveEvent) {
	if !c.q.pushFrame(outFrame{b: e.frame, live: e}) {
		c.slow()
	}
}

// sendLive queues a live object event, which the writer may merge with
// the live events next to it (merge.go).
func (c *conn) sendLive(e *liveEvent) {
	if !c.q.pushNotification(outFrame{b: e.frame, live: e, fanout: true}) {
		c.slow()
	}
}

// mergesEvents reports whether the session reads "events" arrays in object
// notifications: its last /v4/Subscriptions asked for event protocol 4 or
// later.
func (c *conn) mergesEvents() bool { return c.eventProtocol.Load() >= 4 }

// readLoop reads WebSocket frames until the connection fails or the client
// closes it. It never writes.
func (c *conn) readLoop() {
	defer close(c.readDone)
	c.fail(c.read())
}

// readerAuthed reports whether init succeeded; the reader caches the
// answer once it is yes.
func (c *conn) readerAuthed() bool {
	if !c.authed {
		c.authed = c.isInitialized()
	}
	return c.authed
}

// messageLimit is the largest message the reader accepts now: a token's
// worth before init succeeded, the frame limit (with room to answer an
// oversize request with 413) after.
func (c *conn) messageLimit() int64 {
	if !c.readerAuthed() {
		return int64(c.g.cfg.MaxInitBytes)
	}
	return 4*int64(c.g.cfg.MaxFrameBytes) + 1024
}

// read reads messages until the connection fails. A message's buffer
// grows with the bytes that arrive (appendRead), never from the length a
// header announces, and a message over messageLimit, as announced, closes
// the session with 1009 before its payload is read.
func (c *conn) read() error {
	var (
		msg        []byte
		op         ws.OpCode // of the message being assembled
		fragmented bool
		limit      int64 // of the message being assembled
	)
	for {
		h, err := ws.ReadHeaderBuffer(c.br, c.rhdr[:])
		if err != nil {
			return fmt.Errorf("gateway: read: %w", err)
		}
		state := ws.StateServerSide
		if fragmented {
			state |= ws.StateFragmented
		}
		if err := ws.CheckHeader(h, state); err != nil {
			return &closeError{ws.StatusProtocolError, fmt.Errorf("gateway: read: %w", err)}
		}
		if h.OpCode.IsControl() {
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(c.br, p); err != nil {
				return fmt.Errorf("gateway: read: %w", err)
			}
			ws.Cipher(p, h.Mask, 0)
			switch h.OpCode {
			case ws.OpClose:
				return errClientClosed
			case ws.OpPing:
				c.pong.Store(&p)
				c.q.signalAs(true)
			}
			c.lastRead.Store(time.Now().UnixNano())
			continue
		}
		if !fragmented {
			op = h.OpCode
		}
		if !fragmented && h.Fin && h.Length <= readBufferSize {
			// Small message (an ack, mostly): decode it in place in the
			// read buffer, with no copy and no allocation.
			m, err := c.br.Peek(int(h.Length))
			if err != nil {
				return fmt.Errorf("gateway: read: %w", err)
			}
			ws.Cipher(m, h.Mask, 0)
			c.lastRead.Store(time.Now().UnixNano())
			err = c.dispatch(op, m, true)
			c.br.Discard(len(m))
			if err != nil {
				return err
			}
			continue
		}
		if !fragmented {
			limit = c.messageLimit()
		}
		n := int64(len(msg))
		if h.Length > limit-n { // not n+h.Length: a length near 2^63 would wrap it negative (n <= limit)
			return &closeError{ws.StatusMessageTooBig, fmt.Errorf("gateway: read: message exceeds %d bytes", limit)}
		}
		if msg, err = appendRead(c.br, msg, h.Length); err != nil {
			return fmt.Errorf("gateway: read: %w", err)
		}
		ws.Cipher(msg[n:], h.Mask, 0)
		if fragmented = !h.Fin; fragmented {
			continue
		}
		c.lastRead.Store(time.Now().UnixNano())
		m := msg
		msg = nil // the worker may keep it
		if err := c.dispatch(op, m, false); err != nil {
			return err
		}
	}
}

// dispatch decodes one WebSocket message, a twilsock frame, and
// passes requests to the worker. borrowed means msg is only valid during
// the call.
func (c *conn) dispatch(op ws.OpCode, msg []byte, borrowed bool) error {
	if c.ctx.Err() != nil {
		return nil // closing: discard until the client's close frame
	}
	if op != ws.OpBinary {
		if !c.textLogged {
			c.textLogged = true
			c.g.noisy.log(c.logger(), slog.LevelInfo, "gateway: ignoring text message (twilsock frames are binary)")
		}
		return nil
	}
	if isPlainAck(msg, c.g.cfg.MaxFrameBytes) {
		return nil // the common case: an ack needs no answer
	}
	authed := c.readerAuthed()
	limit := c.g.cfg.MaxFrameBytes
	if !authed {
		// Before init, payload_size is held to the init limit too (the
		// whole message already is; Decode never allocates by it).
		limit = min(limit, c.g.cfg.MaxInitBytes)
	}
	f, err := protocol.Decode(msg, limit)
	if errors.Is(err, protocol.ErrTooLarge) {
		if id, ok := oversizeRequest(msg, limit); ok && authed {
			// A well-formed request that is merely too big: answer it
			// like the SDK expects (413 inside a 200 reply).
			c.sendHTTP(id, errorResponse(chorus.Errorf(chorus.ErrTooLarge, "Request entity too large: frame exceeds %d bytes", c.g.cfg.MaxFrameBytes)))
			return nil
		}
	}
	if err != nil {
		c.g.malformed.Add(1)
		c.g.noisy.log(c.logger(), slog.LevelInfo, "gateway: closing on malformed frame", slog.Any(logError, err))
		return fmt.Errorf("gateway: decode: %w", err)
	}
	switch f.Header.Method {
	case protocol.MethodReply, protocol.MethodTelemetry:
		// Acks and telemetry need no answer.
	case protocol.MethodClose:
		// End the session but keep reading: the WebSocket close frame
		// that the client sends next completes the closing handshake.
		c.fail(errClientClosed)
	case protocol.MethodInit, protocol.MethodUpdate, protocol.MethodMessage,
		"put_notification_ctx", "delete_notification_ctx":
		// Counted before the check, so that Close, which sets draining
		// and then waits for inflight to reach 0, never misses it.
		c.inflight.Add(1)
		if c.g.draining.Load() && (f.Header.Method == protocol.MethodMessage || f.Header.Method == protocol.MethodInit) {
			// The server is shutting down: the request is not served,
			// and the client is told so (it retries on another node).
			c.refuseDraining(f)
			c.inflight.Add(-1)
			return nil
		}
		if !authed {
			if c.preInit++; c.preInit > maxPreInitRequests {
				return &closeError{ws.StatusPolicyViolation, fmt.Errorf("gateway: more than %d requests before init", maxPreInitRequests)}
			}
		}
		if borrowed && f.Payload != nil {
			f.Payload = bytes.Clone(f.Payload) // header values are copies already
		}
		select {
		case c.work <- f:
		case <-c.ctx.Done():
			c.inflight.Add(-1)
			return nil
		}
		if c.working.CompareAndSwap(false, true) {
			c.workers.Add(1)
			c.g.tasks.Go(c.workLoop)
		}
	default:
		c.logger().Debug("gateway: ignoring unknown method", slog.String(logMethod, f.Header.Method))
	}
	return nil
}

// writeLoop alone writes to the socket: every frame that is ready goes
// into one buffered write with one flush, under one write deadline. When
// the session ends it runs finish.
func (c *conn) writeLoop() {
	defer c.finish()
	var batch []outFrame
	for {
		<-c.q.wake
		if c.ctx.Err() != nil {
			return
		}
		var overflow bool
		c.writing.Store(true) // before the drain: idle must not see an empty queue while its frames are unwritten
		batch, overflow = c.q.drain(batch)
		if overflow {
			c.slow()
			return
		}
		pong := c.pong.Swap(nil)
		if len(batch) == 0 && pong == nil {
			c.writing.Store(false)
			continue
		}
		err := c.writeBatch(pong, batch)
		c.q.wrote()
		if err != nil {
			switch {
			case c.ctx.Err() != nil: // cut short by fail
			case errors.Is(err, os.ErrDeadlineExceeded):
				c.slow()
			default:
				c.fail(fmt.Errorf("gateway: write: %w", err))
			}
			return
		}
		clear(batch)
		if cap(batch) > 64 {
			batch = nil // do not keep a burst's storage
		} else {
			batch = batch[:0]
		}
	}
}

// writeBatch writes an optional pong and frames with one flush.
//
// The write deadline is moved only when less than half of WriteTimeout
// is left, which spares a timer update per batch: a batch gets between
// WriteTimeout/2 and WriteTimeout.
func (c *conn) writeBatch(pong *[]byte, frames []outFrame) error {
	timeout := c.g.cfg.WriteTimeout
	if now := time.Now(); c.deadline.Sub(now) < timeout/2 {
		c.deadline = now.Add(timeout)
		c.nc.SetWriteDeadline(c.deadline)
	}
	c.writing.Store(true)
	defer c.writing.Store(false)
	if c.ctx.Err() != nil {
		return context.Cause(c.ctx)
	}
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(c.nc)
	if pong != nil {
		writeFrameHeader(bw, ws.OpPong, len(*pong))
		bw.Write(*pong)
	}
	if saved := eachWireFrame(frames, c.mergesEvents(), func(f []byte) {
		writeFrameHeader(bw, ws.OpBinary, len(f))
		bw.Write(f)
	}); saved > 0 {
		c.g.merged.Add(uint64(saved))
	}
	err := bw.Flush()
	bw.Reset(nil)
	writerPool.Put(bw)
	return err
}

// writeFrameHeader writes the header of an unmasked final frame.
func writeFrameHeader(bw *bufio.Writer, op ws.OpCode, n int) {
	bw.WriteByte(0x80 | byte(op))
	switch {
	case n < 126:
		bw.WriteByte(byte(n))
	case n <= 0xffff:
		bw.WriteByte(126)
		bw.WriteByte(byte(n >> 8))
		bw.WriteByte(byte(n))
	default:
		bw.WriteByte(127)
		for s := 56; s >= 0; s -= 8 {
			bw.WriteByte(byte(uint64(n) >> s))
		}
	}
}

// isInitialized is read by the reader and timers; the worker sets it.
func (c *conn) isInitialized() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.initialized
}

// workLoop runs requests one at a time, in arrival order, and exits when
// none is left.
func (c *conn) workLoop() {
	defer c.workers.Done()
	ctx := c.ctx
	for {
		var f *protocol.Frame
		select {
		case f = <-c.work:
		default:
			c.working.Store(false)
			if len(c.work) == 0 || !c.working.CompareAndSwap(false, true) {
				return
			}
			continue
		}
		c.serve(ctx, f)
		c.inflight.Add(-1) // its reply, if any, is queued
	}
}

// serve handles one request frame of the session.
func (c *conn) serve(ctx context.Context, f *protocol.Frame) {
	if ctx.Err() != nil {
		return // the session is ending: drop it
	}
	if f.Header.Method == protocol.MethodMessage && c.isInitialized() && c.g.deaf() {
		// The control events that would end or change the session may be
		// lost: check its key and service in the store first.
		if err := c.checkDeaf(ctx); err != nil {
			c.sendHTTP(f.Header.ID, errorResponse(chorus.AsError(err)))
			return
		}
	} else if f.Header.Method == protocol.MethodMessage && c.serviceStale() { // false before init
		// Changed since the session read it (its ACL switch among
		// others): read it again before the request is served.
		if err := c.loadService(ctx); err != nil {
			c.sendHTTP(f.Header.ID, errorResponse(chorus.AsError(err)))
			return
		}
	}
	c.refreshService()
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
		c.fail(err)
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
	statusInternal    = protocol.Status{Code: 500, Status: "INTERNAL_SERVER_ERROR", ErrorCode: chorus.ErrInternal.Code, Description: chorus.ErrInternal.Message}
	statusUnavailable = protocol.Status{Code: 503, Status: "SERVICE_UNAVAILABLE", ErrorCode: chorus.ErrUnavailable.Code, Description: chorus.ErrUnavailable.Message}
)

// serverStatus is the status of a server-side error: 503 (20503) when the
// store is out of reach, which is the client's to retry, else 500.
func serverStatus(e *chorus.Error) *protocol.Status {
	if e.Status == http.StatusServiceUnavailable {
		return &statusUnavailable
	}
	return &statusInternal
}

// verified is what a token's verification found: its claims, its
// service, and the API key that signed it, as read then (keyGen: the
// gateway's key generation before the read).
type verified struct {
	claims *token.Claims
	svc    *chorus.Service
	key    *chorus.APIKey
	keyGen uint64
	mark   string // engine.AuthTokenMark of the token
}

// keyGen is the number of changes of keys this node has heard of
// (forgetKeys), with or without a key cache.
func (g *Gateway) keyGen() uint64 {
	return g.keysHeard.Load()
}

// heardAllKeyChanges reports whether a change of keys made now on another
// node would reach this one: always without other nodes; in a cluster
// only while the Bus answers. A revocation published while the Bus was
// away is heard of at its reconnect (Resync moves keyGen), but until then
// it is not, and a partition often takes the store with the bus.
func (g *Gateway) heardAllKeyChanges(ctx context.Context) bool {
	if !g.cfg.SharedStore {
		return true
	}
	b := g.cfg.Engine.Bus()
	return b != nil && b.Ping(ctx) == nil
}

// authenticate verifies a token and resolves its service. A non-nil status
// is the rejection to send. renew is set for a token update of this
// session: while the store is out of reach, a token signed with the key
// that signed the session's current token is verified against that key
// as last read (unless a revocation or another change of keys was heard
// since: keyGen moved), and its service is the
// session's if it is of the session's account and names the service as
// the session's token did. The renewal then grants nothing the live
// session does not hold already, and the session, which stays open
// through a store outage, is not dropped because its token's time came
// during one. The caller records the key (adopt) once it accepts the
// token.
func (c *conn) authenticate(ctx context.Context, raw string, renew bool) (verified, *protocol.Status) {
	var out verified
	v := *c.g.cfg.Verifier
	keys := v.Keys
	stale := false
	v.Keys = func(ctx context.Context, sid string) (*chorus.APIKey, error) {
		gen := c.g.keyGen()
		k, err := keys(ctx, sid)
		if err != nil && renew && chorus.AsError(err).Status == http.StatusServiceUnavailable {
			c.mu.Lock()
			last, lastGen, current := c.key, c.keyGen, c.keySID
			c.mu.Unlock()
			if last != nil && last.SID == sid && current == sid && lastGen == gen && c.g.heardAllKeyChanges(ctx) {
				k, err, stale = last, nil, true
			}
		}
		if err == nil {
			out.key, out.keyGen = k, gen
		}
		return k, err
	}
	claims, err := v.Verify(ctx, raw)
	if err != nil {
		e := chorus.AsError(err)
		if e.Status >= 500 {
			c.logger().Error("gateway: verify token", slog.Any(logError, err))
			return verified{}, serverStatus(e)
		}
		st := statusUnauthorized(e)
		return verified{}, &st
	}
	if claims.Sync == nil {
		st := statusForbidden(chorus.Errorf(chorus.ErrServiceNotFound, "Access Token has no data_sync grant"))
		return verified{}, &st
	}
	out.mark = engine.AuthTokenMark(claims.ID, claims.Issuer, claims.IssuedAt)
	if ok, err := c.g.cfg.Engine.AuthTokenMarkValid(ctx, claims.Subject, out.mark, keySecret(out.key)); err != nil {
		// A renewal while the store is out of reach keeps the session's
		// mark as last checked, as it keeps its key: it grants nothing
		// the session does not hold.
		if !renew || chorus.AsError(err).Status != http.StatusServiceUnavailable || !c.sameMark(claims, out.mark) {
			c.logger().Error("gateway: verify token", slog.Any(logError, err))
			return verified{}, serverStatus(chorus.AsError(err))
		}
		stale = true
	} else if !ok {
		st := statusUnauthorized(errAuthTokenRotated)
		return verified{}, &st
	}
	sid := claims.Sync.ServiceSID
	if sid == "" {
		sid = "default"
	}
	svc, err := c.g.cfg.Engine.Service(ctx, claims.Subject, sid)
	if err != nil {
		e := chorus.AsError(err)
		if renew && e.Status == http.StatusServiceUnavailable {
			c.mu.Lock()
			account := c.account
			c.mu.Unlock()
			if cur := c.svcLatest.Load(); cur != nil && claims.Subject == account && cur.AccountSID == account &&
				c.claims.Sync != nil && grantService(c.claims) == sid {
				svc, err = cur, nil
			}
		}
		if err != nil && e.Status >= 500 {
			c.logger().Error("gateway: resolve service", slog.Any(logError, err))
			return verified{}, serverStatus(e)
		}
		if err != nil {
			st := statusForbidden(e)
			return verified{}, &st
		}
	}
	if stale {
		c.logger().Warn("gateway: token renewed against the session's key as last read: the store is out of reach")
	}
	out.claims, out.svc = claims, svc
	return out, nil
}

// sameMark reports whether a renewal's token, of mark, has the session's
// account, key and auth-token mark.
func (c *conn) sameMark(claims *token.Claims, mark string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return claims.Subject == c.account && claims.Issuer == c.keySID && mark == c.tokenMark
}

// grantService is the service a token's data_sync grant names ("default"
// when it names none).
func grantService(claims *token.Claims) string {
	if claims.Sync.ServiceSID == "" {
		return "default"
	}
	return claims.Sync.ServiceSID
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
	// The server works on it from here: the time its checks take (a slow
	// store) is not the client's. Refused, it waits on the client again.
	c.awaitingInit(false)
	defer c.awaitingInit(true)
	in, err := protocol.ParseInit(&f.Header)
	if err != nil {
		c.reply(id, statusUnauthorized(chorus.Errorf(chorus.ErrTokenInvalid, "Invalid Access Token: %v", err)))
		return nil
	}
	epoch := c.g.controlEpoch.Load()
	auth, st := c.authenticate(ctx, in.Token, false)
	claims, svc := auth.claims, auth.svc
	if st != nil {
		c.g.initsRejected.Add(1)
		c.g.noisy.log(c.logger(), slog.LevelInfo, "gateway: init rejected", slog.Int("code", st.ErrorCode), slog.String("description", st.Description))
		c.reply(id, *st)
		return nil
	}
	if !c.g.countSession(c, identityKey{svc.SID, claims.Identity}) {
		c.g.identityRefused.Add(1)
		e := chorus.Errorf(chorus.ErrTooManyRequests, "Too many connections for this identity: the limit is %d on this server", c.g.cfg.MaxSessionsPerIdentity)
		c.g.noisy.log(c.logger(), slog.LevelWarn, "gateway: init refused: too many sessions for the identity", slog.String(logIdentity, claims.Identity), slog.String(logService, svc.SID))
		h := protocol.NewReply(id, protocol.Status{Code: 429, Status: "TOO_MANY_REQUESTS", ErrorCode: e.Code, Description: e.Message})
		h.PayloadType = protocol.ContentTypeJSON
		c.send(protocol.Encode(nil, h, identityBackoff))
		return nil
	}
	c.claims, c.svc = claims, svc
	c.actor = engine.Actor{Identity: claims.Identity, EndpointID: c.id}
	c.svcLatest.Store(svc)
	// A change between the read above and this is caught by
	// checkNewSession (the control epoch) and the change's own pass.
	ctr := c.g.serviceCounter(svc.SID)
	c.markServiceRead(ctr.Load())
	c.svcGen.Store(ctr)
	c.mu.Lock()
	c.account, c.keySID, c.tokenMark = claims.Subject, claims.Issuer, auth.mark
	c.key, c.keyGen = auth.key, auth.keyGen
	c.initialized = true
	c.online.svc, c.online.identity = svc, claims.Identity
	if c.initTimer != nil {
		c.initTimer.Stop()
		c.initTimer = nil
	}
	c.mu.Unlock()
	c.g.authenticated(c)
	c.logger().Debug("gateway: session started", slog.String(logIdentity, claims.Identity), slog.String(logService, svc.SID))
	c.send(protocol.Encode(nil, protocol.NewInitReply(id, "ct_"+protocol.NewID()[2:], []string{protocol.CapabilityClientUpdate}), nil))
	c.armTokenTimers(claims.Expires)
	if p := c.g.cfg.Presence; p != nil {
		p.Connected(svc, claims.Identity, c.id)
	}
	c.checkNewSession(ctx, epoch)
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
	epoch := c.g.controlEpoch.Load()
	auth, st := c.authenticate(ctx, up.Token, true)
	claims, svc := auth.claims, auth.svc
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
	c.mu.Lock()
	c.account, c.keySID, c.tokenMark = claims.Subject, claims.Issuer, auth.mark
	c.key, c.keyGen = auth.key, auth.keyGen
	c.mu.Unlock()
	c.closing.CompareAndSwap(closingExpired, closingNone) // revived in its grace
	c.reply(id, protocol.StatusOK)
	c.armTokenTimers(claims.Expires) // calls the expired session's end off
	c.checkNewSession(ctx, epoch)
	return nil
}

// Values of conn.closing.
const (
	closingNone int32 = iota
	closingExpired
	closingRevoked
)

// refusedWhileClosing answers a request that arrived after the session's
// close was sent: false when the session is open.
func (c *conn) refusedWhileClosing(id string) bool {
	switch c.closing.Load() {
	case closingNone:
		return false
	case closingExpired:
		c.sendHTTP(id, errorResponse(chorus.ErrTokenExpired))
	default:
		c.sendHTTP(id, errorResponse(c.closeReason.Load()))
	}
	return true
}

// heldBack reports whether live events must not reach the session: its
// key was revoked (or its service deleted) and its close sent.
func (c *conn) heldBack() bool {
	return c.closing.Load() == closingRevoked
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
		c.logger().Info("gateway: token expired; closing session")
		c.closing.CompareAndSwap(closingNone, closingExpired)
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
