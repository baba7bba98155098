package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/chorus-sync/chorus/protocol"
)

// closeFrame is a server close frame; it ends the session.
type closeFrame struct {
	st        protocol.Status
	backoffMS int
}

func (e *closeFrame) Error() string {
	return fmt.Sprintf("client: server closed the session: %d %s", e.st.Code, e.st.Status)
}

// session is one initialized WebSocket. The reader alone reads, the writer
// alone writes; both end when ctx is canceled.
type session struct {
	c   *Client
	ws  *websocket.Conn
	out chan []byte

	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}

	mu      sync.Mutex
	pending map[string]pendingCall
}

// pendingCall waits for a reply; hook, if set, runs on the reader
// goroutine before the next frame is read (so a write's event id is known
// before its echo arrives).
type pendingCall struct {
	ch   chan *protocol.Frame
	hook func(*protocol.Frame)
}

func newSession(c *Client, ws *websocket.Conn) *session {
	s := &session{c: c, ws: ws, out: make(chan []byte, 512), done: make(chan struct{}),
		pending: make(map[string]pendingCall)}
	s.ctx, s.cancel = context.WithCancelCause(c.ctx)
	return s
}

// run runs the reader and the writer until either ends.
func (s *session) run() {
	defer close(s.done)
	stop := context.AfterFunc(s.ctx, func() { s.ws.CloseNow() })
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.cancel(s.readLoop()) }()
	go func() { defer wg.Done(); s.cancel(s.writeLoop()) }()
	wg.Wait()
	s.ws.CloseNow()
}

// wait blocks until the session ended and returns why.
func (s *session) wait() error {
	<-s.done
	return context.Cause(s.ctx)
}

func (s *session) writeLoop() error {
	for {
		select {
		case <-s.ctx.Done():
			return nil
		case f := <-s.out:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := s.ws.Write(ctx, websocket.MessageBinary, f)
			cancel()
			if err != nil {
				return fmt.Errorf("client: write: %w", err)
			}
		}
	}
}

func (s *session) readLoop() error {
	for {
		typ, msg, err := s.ws.Read(context.Background())
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("client: read: %w", err)
		}
		if typ != websocket.MessageBinary {
			continue
		}
		f, err := protocol.Decode(msg, int(s.c.opts.MaxFrameBytes))
		if err != nil {
			return fmt.Errorf("client: decode: %w", err)
		}
		h := &f.Header
		if h.Method == protocol.MethodReply {
			s.mu.Lock()
			p, ok := s.pending[h.ID]
			delete(s.pending, h.ID)
			s.mu.Unlock()
			if ok {
				if p.hook != nil {
					p.hook(f)
				}
				p.ch <- f
			}
			continue
		}
		// Every other frame is acked with 200.
		ack := protocol.NewReply(h.ID, protocol.StatusOK)
		ack.PayloadType = protocol.ContentTypeJSON
		if !s.enqueue(protocol.Encode(nil, ack, nil)) {
			return nil
		}
		switch h.Method {
		case protocol.MethodNotification:
			s.c.handleNotification(s, f.Payload)
		case protocol.MethodClientUpdate:
			var typ string
			if _, err := h.Get("client_update_type", &typ); err == nil && typ == protocol.ClientUpdateTokenAboutToExpire {
				s.c.tokenAboutToExpire(s)
			}
		case protocol.MethodClose:
			ce := &closeFrame{}
			if h.Status != nil {
				ce.st = *h.Status
			}
			var p struct {
				Backoff struct {
					Min int `json:"reconnect_min_ms"`
				} `json:"backoff_policy"`
			}
			if jsonUnmarshal(f.Payload, &p) == nil {
				ce.backoffMS = p.Backoff.Min
			}
			s.flush(time.Second) // let the ack out
			return ce
		}
	}
}

// enqueue hands a frame to the writer; false if the session ended.
func (s *session) enqueue(f []byte) bool {
	select {
	case s.out <- f:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// trySend enqueues without blocking.
func (s *session) trySend(f []byte) {
	select {
	case s.out <- f:
	default:
	}
}

// flush waits up to d for the writer to drain the queue.
func (s *session) flush(d time.Duration) {
	deadline := time.Now().Add(d)
	for len(s.out) > 0 && time.Now().Before(deadline) && s.ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

// call sends a request frame and waits for its reply.
func (s *session) call(ctx context.Context, h *protocol.Header, payload []byte, hook func(*protocol.Frame)) (*protocol.Frame, error) {
	ch := make(chan *protocol.Frame, 1)
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		return nil, ErrDisconnected
	}
	s.pending[h.ID] = pendingCall{ch, hook}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, h.ID)
		s.mu.Unlock()
	}()
	select {
	case s.out <- protocol.Encode(nil, h, payload):
	case <-s.ctx.Done():
		return nil, ErrDisconnected
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	t := time.NewTimer(s.c.opts.RequestTimeout)
	defer t.Stop()
	select {
	case f := <-ch:
		return f, nil
	case <-s.ctx.Done():
		// A reply that raced the end of the session still counts.
		select {
		case f := <-ch:
			return f, nil
		default:
		}
		if errors.Is(context.Cause(s.ctx), ErrClosed) || s.c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, ErrDisconnected
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, fmt.Errorf("client: no reply within %v: %w", s.c.opts.RequestTimeout, context.DeadlineExceeded)
	}
}
