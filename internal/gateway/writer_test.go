package gateway

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/protocol"
)

// TestPoolWriteBackpressure: events larger than the socket takes at once,
// to a client that pauses reading, arrive whole, once and in order once it
// reads again (the pool hands the rest of a write to the session's own
// goroutine), and the client is not closed as a slow consumer.
func TestPoolWriteBackpressure(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.WriterPool = true }))
	ctx := context.Background()
	a := e.session("alice")
	doc := wantStatus(t, "create", a.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	sid := doc["sid"].(string)
	start := num(doc["last_event_id"])

	c := dialRcvBuf(e, ctx, 256<<10)
	c.mustInit(e.token("reader", time.Hour))
	c.establish(1, docSub(sid, start))
	stopReading(c)

	const n = 100
	pad := strings.Repeat("y", 60000)
	for i := 1; i <= n; i++ {
		data, _ := json.Marshal(map[string]any{"i": i, "pad": pad})
		e.bus.Publish(ctx, &chorus.Event{Type: chorus.EventDocumentUpdated, ID: start + int64(i), ObjectSID: sid, ServiceSID: e.svc.SID,
			Kind: chorus.KindDocument, Revision: "1", Data: data, DateCreated: time.Now()})
	}
	waitFor(t, func() bool { return e.gw.writers.rests.Load() > 0 })

	got := 0
	deadline := time.After(30 * time.Second)
	for got < n {
		select {
		case note := <-c.notes:
			if note.MessageType == "" {
				continue // stopReading's filler
			}
			got++
			if id := note.id(); id != start+int64(got) {
				t.Fatalf("event %d has id %d, want %d", got, id, start+int64(got))
			}
			var ev struct {
				Data struct {
					I   int    `json:"i"`
					Pad string `json:"pad"`
				} `json:"document_data"`
			}
			if err := json.Unmarshal(note.Event, &ev); err != nil || ev.Data.I != got || ev.Data.Pad != pad {
				t.Fatalf("event %d: i = %d, pad %d bytes (%v); want i = %d, %d bytes", got, ev.Data.I, len(ev.Data.Pad), err, got, len(pad))
			}
		case <-deadline:
			t.Fatalf("got %d of %d events; stats %+v", got, n, e.gw.Stats())
		}
	}
	if st := e.gw.Stats(); st.SlowConsumers != 0 {
		t.Fatalf("slow consumers = %d, want 0", st.SlowConsumers)
	}
}

// dialRcvBuf dials with the client's socket receive buffer set to size
// (dialBuf's 4 KiB is below the loopback MSS: TCP would then wait for its
// persist timer rather than advertise the reopened window).
func dialRcvBuf(e *env, ctx context.Context, size int) *tclient {
	e.t.Helper()
	d := &net.Dialer{}
	opts := &websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(size)
		}
		return c, err
	}}}}
	ws, _, err := websocket.Dial(ctx, e.wsURL, opts)
	if err != nil {
		e.t.Fatalf("Dial: %v", err)
	}
	ws.SetReadLimit(-1)
	c := &tclient{
		t: e.t, ws: ws, keep: true,
		waiters: make(map[string]chan *protocol.Frame),
		notes:   make(chan *note, 100000),
		control: make(chan *protocol.Frame, 100),
		done:    make(chan struct{}),
	}
	go c.readLoop()
	e.t.Cleanup(func() { ws.CloseNow() })
	return c
}

// hideRawListener's connections do not expose their socket (like a TLS
// connection), so sessions keep a writer goroutine of their own.
type hideRawListener struct{ net.Listener }

func (l hideRawListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return struct{ net.Conn }{c}, nil
}

// TestOwnWriter: without a raw socket a session writes on its own
// goroutine: replies, events in order, and a clean close.
func TestOwnWriter(t *testing.T) {
	e := newEnv(t, func(e *env, c *Config) { e.hideRaw, c.WriterPool = true, true })
	a := e.session("alice")
	doc := wantStatus(t, "create", a.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	sid := doc["sid"].(string)
	start := num(doc["last_event_id"])
	b := e.session("bob")
	b.establish(1, docSub(sid, start))
	e.gw.mu.Lock()
	for c := range e.gw.conns {
		if c.raw != nil {
			t.Errorf("session %s has a raw socket, want none", c.id)
		}
	}
	e.gw.mu.Unlock()
	const n = 20
	for i := 1; i <= n; i++ {
		wantStatus(t, "update", a.do("POST", "/v3/Documents/"+sid, nil, map[string]any{"data": map[string]any{"i": i}}), 200, 0)
	}
	for i := 1; i <= n; i++ {
		note := b.nextOf("document_updated", 10*time.Second)
		if got, want := note.id(), start+int64(i); got != want {
			t.Fatalf("event %d has id %d, want %d", i, got, want)
		}
	}
}

// TestWritersOrder: connections with a reply go first, but never more
// than urgentStreak in a row while others wait.
func TestWritersOrder(t *testing.T) {
	w := &writers{} // max 0: no writer goroutine starts
	var urgent, events []*conn
	for i := 0; i < urgentStreak+2; i++ {
		c := &conn{}
		urgent = append(urgent, c)
		w.push(c, true)
	}
	for i := 0; i < 2; i++ {
		c := &conn{}
		events = append(events, c)
		w.push(c, false)
	}
	want := append(append(append(append([]*conn{}, urgent[:urgentStreak]...), events[0]), urgent[urgentStreak:]...), events[1])
	for i, c := range want {
		if got := w.pop(); got != c {
			t.Fatalf("pop %d: got another connection than expected", i)
		}
	}
	if c := w.pop(); c != nil {
		t.Fatal("pop after the last connection is not nil")
	}
}
