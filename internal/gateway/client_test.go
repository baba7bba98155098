package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/protocol"
	"github.com/chorus-sync/chorus/token"
)

// env is a gateway over a real engine, SQLite store and in-memory bus,
// served on 127.0.0.1.
type env struct {
	t     testing.TB
	eng   *engine.Engine
	st    chorus.Store
	bus   *mem.Bus
	gw    *Gateway
	srv   *httptest.Server
	creds engine.Credentials
	svc   *chorus.Service
	wsURL string

	hideRaw bool // serve through a listener whose conns hide their socket
	// smallSendBuffers: the server's sockets get 4 KiB send buffers, so
	// that what a client does not read stays in its session's queue.
	smallSendBuffers bool
}

// withSmallSendBuffers serves through sockets with 4 KiB send buffers.
func withSmallSendBuffers() envOption { return func(e *env, _ *Config) { e.smallSendBuffers = true } }

// smallSendListener's connections have 4 KiB send buffers; they are still
// *net.TCPConn, so sessions are written by the writer pool.
type smallSendListener struct{ net.Listener }

func (l smallSendListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.SetWriteBuffer(4096); err != nil {
			return nil, err
		}
	}
	return c, err
}

type envOption func(*env, *Config)

func withConfig(f func(*Config)) envOption { return func(_ *env, c *Config) { f(c) } }

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "chorus.db"), nil)
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	e := &env{t: t, st: st, bus: mem.New()}
	e.eng = engine.New(engine.Config{Store: st, Bus: e.bus})
	e.creds, _, err = e.eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	e.svc, err = e.eng.Service(ctx, e.creds.AccountSID, e.creds.ServiceSID)
	if err != nil {
		t.Fatalf("Service: %v", err)
	}
	cfg := Config{
		Engine:   e.eng,
		Verifier: &token.Verifier{Keys: e.eng.APIKey},
	}
	for _, o := range opts {
		o(e, &cfg)
	}
	e.gw = New(cfg)
	mux := http.NewServeMux()
	mux.Handle("/v3/wsconnect", e.gw)
	e.srv = httptest.NewUnstartedServer(mux)
	if e.smallSendBuffers {
		e.srv.Listener = smallSendListener{e.srv.Listener}
	}
	if e.hideRaw {
		e.srv.Listener = hideRawListener{e.srv.Listener}
	}
	e.srv.Start()
	e.wsURL = "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/v3/wsconnect"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.gw.Close(ctx); err != nil {
			t.Errorf("Gateway.Close: %v", err)
		}
		e.srv.Close()
		e.bus.Close()
		st.Close()
	})
	return e
}

// token mints an access token for identity that expires after ttl.
func (e *env) token(identity string, ttl time.Duration) string {
	e.t.Helper()
	return e.tokenAt(identity, ttl, time.Now(), e.creds.ServiceSID, e.creds.APISecret)
}

func (e *env) tokenAt(identity string, ttl time.Duration, now time.Time, service, secret string) string {
	e.t.Helper()
	tok, err := token.Mint(token.Params{
		AccountSID: e.creds.AccountSID, APIKeySID: e.creds.APIKeySID, APISecret: secret,
		Identity: identity, ServiceSID: service, TTL: ttl, Now: func() time.Time { return now },
	})
	if err != nil {
		e.t.Fatalf("Mint: %v", err)
	}
	return tok
}

// tclient speaks raw twilsock frames. Like the SDK, it acks every frame
// that is not a reply.
type tclient struct {
	t  testing.TB
	ws *websocket.Conn

	mu           sync.Mutex
	waiters      map[string]chan *protocol.Frame
	notes        chan *note
	control      chan *protocol.Frame // client_update, close, ping, ...
	done         chan struct{}
	err          error
	count        atomic.Int64
	counter      *atomic.Int64 // optional shared count of notifications
	keep         bool          // keep notifications in notes
	seq          int64         // frames read (reader goroutine)
	lastReplySeq atomic.Int64
	noAck        bool
	host         string // http_request.host of do; default cds.test:1
}

// note is a decoded notification.
type note struct {
	MessageType string
	seq         int64           // position among the frames read
	EventType   string          `json:"event_type"`
	Correlation json.RawMessage `json:"correlation_id"`
	Event       json.RawMessage `json:"event"`
	Events      json.RawMessage `json:"events"`
}

func (n *note) event() map[string]any {
	var m map[string]any
	json.Unmarshal(n.Event, &m)
	return m
}

func (n *note) id() int64 {
	var v struct {
		ID int64 `json:"id"`
	}
	json.Unmarshal(n.Event, &v)
	return v.ID
}

func (e *env) dial(ctx context.Context) *tclient { return e.dialWith(ctx, dialOptions{}) }

// dialOptions shape a test client.
type dialOptions struct {
	// smallReadBuffer shrinks the client's socket receive buffer, so that
	// a client that stops reading backs up quickly.
	smallReadBuffer bool
	// notes is how many notifications the client queues unread; 0 means
	// 100,000. Benchmarks that dial in a loop keep it small, so that the
	// queue's allocation does not swamp the server's work.
	notes int
}

func (e *env) dialWith(ctx context.Context, o dialOptions) *tclient {
	e.t.Helper()
	if o.notes == 0 {
		o.notes = 100000
	}
	opts := &websocket.DialOptions{}
	if o.smallReadBuffer {
		d := &net.Dialer{}
		opts.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetReadBuffer(4096)
			}
			return c, err
		}}}
	}
	ws, _, err := websocket.Dial(ctx, e.wsURL, opts)
	if err != nil {
		e.t.Fatalf("Dial: %v", err)
	}
	ws.SetReadLimit(-1)
	c := &tclient{
		t: e.t, ws: ws, keep: true,
		waiters: make(map[string]chan *protocol.Frame),
		notes:   make(chan *note, o.notes),
		control: make(chan *protocol.Frame, 100),
		done:    make(chan struct{}),
	}
	go c.readLoop()
	e.t.Cleanup(func() { ws.CloseNow() })
	return c
}

func (c *tclient) readLoop() {
	defer close(c.done)
	for {
		typ, msg, err := c.ws.Read(context.Background())
		if err != nil {
			c.err = err
			return
		}
		c.mu.Lock()
		fastCount := c.counter != nil && !c.keep
		c.mu.Unlock()
		if fastCount { // benchmark subscriber: count only
			c.counter.Add(int64(eventsIn(msg)))
			continue
		}
		if typ != websocket.MessageBinary {
			c.t.Errorf("server sent a %v message, want binary", typ)
			continue
		}
		f, err := protocol.Decode(msg, 0)
		if err != nil {
			c.t.Errorf("server frame does not decode: %v: %q", err, msg)
			continue
		}
		c.seq++
		if f.Header.Method == protocol.MethodReply {
			c.lastReplySeq.Store(c.seq)
			c.mu.Lock()
			ch := c.waiters[f.Header.ID]
			delete(c.waiters, f.Header.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- f
			}
			continue
		}
		c.mu.Lock()
		noAck := c.noAck
		c.mu.Unlock()
		if !noAck {
			ack, _ := protocol.HeaderOf(map[string]any{"id": f.Header.ID, "method": "reply", "payload_type": "application/json", "status": map[string]any{"code": 200, "status": "OK"}})
			c.ws.Write(context.Background(), websocket.MessageBinary, protocol.Encode(nil, ack, nil))
		}
		if f.Header.Method != protocol.MethodNotification {
			c.control <- f
			continue
		}
		n := &note{seq: c.seq}
		f.Header.Get("message_type", &n.MessageType)
		if err := json.Unmarshal(f.Payload, n); err != nil {
			c.t.Errorf("notification payload: %v: %q", err, f.Payload)
			continue
		}
		// Like the SDK (acceptMessage), read an object notification's
		// "events" array as that many events, in order (merge.go).
		notes := []*note{n}
		if n.Events != nil && !strings.HasPrefix(n.EventType, "subscription_") {
			var evs []json.RawMessage
			if err := json.Unmarshal(n.Events, &evs); err != nil {
				c.t.Errorf("notification events: %v: %q", err, n.Events)
				continue
			}
			notes = notes[:0]
			for _, ev := range evs {
				notes = append(notes, &note{seq: n.seq, MessageType: n.MessageType, EventType: n.EventType, Correlation: n.Correlation, Event: ev})
			}
		}
		c.count.Add(int64(len(notes)))
		c.mu.Lock()
		keep, counter := c.keep, c.counter
		c.mu.Unlock()
		if counter != nil {
			counter.Add(int64(len(notes)))
		}
		if !keep {
			continue
		}
		for _, n := range notes {
			c.notes <- n
		}
	}
}

// eventsIn returns the number of object events a notification frame
// carries: the length of its "events" array when merged, else 1.
func eventsIn(msg []byte) int {
	if !bytes.Contains(msg, []byte(`"events":[`)) {
		return 1
	}
	f, err := protocol.Decode(msg, 0)
	if err != nil {
		return 1
	}
	var p struct {
		EventType string            `json:"event_type"`
		Events    []json.RawMessage `json:"events"`
	}
	if json.Unmarshal(f.Payload, &p) != nil || strings.HasPrefix(p.EventType, "subscription_") {
		return 1
	}
	return len(p.Events)
}

// sendFrame writes a frame built from fields.
func (c *tclient) sendFrame(fields map[string]any, payload []byte) string {
	c.t.Helper()
	id, _ := fields["id"].(string)
	if id == "" {
		id = "TM" + chorus.NewSID("XX")[2:]
		fields["id"] = id
	}
	h, err := protocol.HeaderOf(fields)
	if err != nil {
		c.t.Fatalf("HeaderOf: %v", err)
	}
	if err := c.ws.Write(context.Background(), websocket.MessageBinary, protocol.Encode(nil, h, payload)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	return id
}

// call sends a frame and waits for the reply with its id.
func (c *tclient) call(fields map[string]any, payload []byte) *protocol.Frame {
	c.t.Helper()
	id, _ := fields["id"].(string)
	if id == "" {
		id = "TM" + chorus.NewSID("XX")[2:]
		fields["id"] = id
	}
	ch := make(chan *protocol.Frame, 1)
	c.mu.Lock()
	c.waiters[id] = ch
	c.mu.Unlock()
	c.sendFrame(fields, payload)
	select {
	case f := <-ch:
		return f
	case <-c.done:
		c.t.Fatalf("connection closed waiting for reply to %v: %v", fields["method"], c.err)
	case <-time.After(10 * time.Second):
		c.t.Fatalf("no reply to %v", fields["method"])
	}
	return nil
}

func (c *tclient) init(tok string) *protocol.Frame {
	c.t.Helper()
	return c.call(map[string]any{
		"method": "init", "token": tok, "continuation_token": nil,
		"metadata":     map[string]any{"ver": "1.0.2", "osa": 64},
		"capabilities": []string{"client_update", "offline_storage", "telemetry.v1"},
	}, nil)
}

func (c *tclient) mustInit(tok string) {
	c.t.Helper()
	f := c.init(tok)
	if f.Header.Status == nil || f.Header.Status.Code != 200 {
		c.t.Fatalf("init status = %+v, want 200", f.Header.Status)
	}
}

// httpResp is an upstream reply.
type httpResp struct {
	Status int
	Body   []byte
}

func (r httpResp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	d := json.NewDecoder(strings.NewReader(string(r.Body)))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatalf("reply body %q: %v", r.Body, err)
	}
	return m
}

// do sends an upstream request. path may carry a query string, whose raw
// values become params; body is marshaled unless it is []byte.
func (c *tclient) do(method, path string, headers map[string]string, body any) httpResp {
	c.t.Helper()
	params := map[string]any{}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		for _, kv := range strings.Split(path[i+1:], "&") {
			k, v, _ := strings.Cut(kv, "=")
			params[k] = v
		}
		path = path[:i]
	}
	if i := strings.Index(path, "://"); i >= 0 { // absolute URL from a response
		path = path[i+3:]
		path = path[strings.IndexByte(path, '/'):]
	}
	hdr := map[string]any{"Content-Type": "application/json", "Twilio-Request-Id": "RQ0"}
	for k, v := range headers {
		hdr[k] = v
	}
	var payload []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		payload = b
	default:
		payload, _ = json.Marshal(b)
	}
	host := c.host
	if host == "" {
		host = "cds.test:1"
	}
	f := c.call(map[string]any{
		"method": "message", "active_grant": "data_sync", "payload_type": "application/json",
		"http_request": map[string]any{"host": host, "path": path, "method": method, "params": params, "headers": hdr},
	}, payload)
	if f.Header.Status == nil || f.Header.Status.Code != 200 {
		c.t.Fatalf("%s %s: twilsock status = %+v, want 200", method, path, f.Header.Status)
	}
	var hs protocol.Status
	if ok, err := f.Header.Get("http_status", &hs); !ok || err != nil {
		c.t.Fatalf("%s %s: no http_status (%v)", method, path, err)
	}
	return httpResp{hs.Code, append([]byte(nil), f.Payload...)}
}

// subscribe sends a /v4/Subscriptions request.
func (c *tclient) subscribe(action string, corr int64, reqs ...map[string]any) httpResp {
	c.t.Helper()
	return c.do("POST", "/v4/Subscriptions", nil, map[string]any{
		"event_protocol_version": 4, "action": action, "correlation_id": corr,
		"retried_requests": 0, "ttl_in_s": -1, "requests": reqs,
	})
}

// next returns the next notification, failing after timeout.
func (c *tclient) next(timeout time.Duration) *note {
	c.t.Helper()
	select {
	case n := <-c.notes:
		return n
	case <-time.After(timeout):
		c.t.Fatalf("no notification within %v", timeout)
	}
	return nil
}

// nextOf skips notifications until one of type eventType.
func (c *tclient) nextOf(eventType string, timeout time.Duration) *note {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case n := <-c.notes:
			if n.EventType == eventType {
				return n
			}
		case <-time.After(time.Until(deadline)):
			c.t.Fatalf("no %s within %v", eventType, timeout)
			return nil
		}
	}
}

// nextControl returns the next non-notification frame.
func (c *tclient) nextControl(timeout time.Duration) *protocol.Frame {
	c.t.Helper()
	select {
	case f := <-c.control:
		return f
	case <-time.After(timeout):
		c.t.Fatalf("no control frame within %v", timeout)
	}
	return nil
}

// closed waits for the server to close the connection.
func (c *tclient) closed(timeout time.Duration) error {
	select {
	case <-c.done:
		return nil
	case <-time.After(timeout):
		return errors.New("connection still open")
	}
}

func num(v any) int64 {
	switch n := v.(type) {
	case json.Number:
		i, _ := n.Int64()
		return i
	case float64:
		return int64(n)
	}
	panic(fmt.Sprintf("not a number: %T %v", v, v))
}
