package servertest

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/protocol"
)

// tclient speaks raw twilsock frames, as the SDK does: it acks every frame
// that is not a reply. (Adapted from internal/gateway/client_test.go.)
type tclient struct {
	t  testing.TB
	ws *websocket.Conn

	mu      sync.Mutex
	waiters map[string]chan *protocol.Frame
	notes   chan *note
	done    chan struct{}
	err     error
}

// note is a decoded notification.
type note struct {
	MessageType string
	at          time.Time       // arrival
	EventType   string          `json:"event_type"`
	Correlation json.RawMessage `json:"correlation_id"`
	Event       json.RawMessage `json:"event"`
	Events      json.RawMessage `json:"events"`
}

// eventID returns the notification's event id.
func (n *note) eventID() int64 {
	var v struct {
		ID int64 `json:"id"`
	}
	_ = json.Unmarshal(n.Event, &v)
	return v.ID
}

// field returns a top-level field of the event.
func (n *note) field(name string) json.RawMessage {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(n.Event, &m)
	return m[name]
}

// dial connects to a node's twilsock endpoint and sends init.
func dial(t testing.TB, wsURL, tok string) *tclient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatalf("Dial(%s): %v", wsURL, err)
	}
	ws.SetReadLimit(-1)
	c := &tclient{
		t: t, ws: ws,
		waiters: make(map[string]chan *protocol.Frame),
		notes:   make(chan *note, 100000),
		done:    make(chan struct{}),
	}
	go c.readLoop()
	t.Cleanup(func() { ws.CloseNow() })
	f := c.call(map[string]any{
		"method": "init", "token": tok, "continuation_token": nil,
		"metadata":     map[string]any{"ver": "1.0.2", "osa": 64},
		"capabilities": []string{"client_update", "offline_storage", "telemetry.v1"},
	}, nil)
	if f.Header.Status == nil || f.Header.Status.Code != 200 {
		t.Fatalf("init status = %+v, want 200", f.Header.Status)
	}
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
		if typ != websocket.MessageBinary {
			c.t.Errorf("server sent a %v message, want binary", typ)
			continue
		}
		f, err := protocol.Decode(msg, 0)
		if err != nil {
			c.t.Errorf("server frame does not decode: %v: %q", err, msg)
			continue
		}
		if f.Header.Method == protocol.MethodReply {
			c.mu.Lock()
			ch := c.waiters[f.Header.ID]
			delete(c.waiters, f.Header.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- f
			}
			continue
		}
		ack, _ := protocol.HeaderOf(map[string]any{"id": f.Header.ID, "method": "reply", "payload_type": "application/json", "status": map[string]any{"code": 200, "status": "OK"}})
		_ = c.ws.Write(context.Background(), websocket.MessageBinary, protocol.Encode(nil, ack, nil))
		if f.Header.Method != protocol.MethodNotification {
			continue
		}
		n := &note{at: time.Now()}
		_, _ = f.Header.Get("message_type", &n.MessageType)
		if err := json.Unmarshal(f.Payload, n); err != nil {
			c.t.Errorf("notification payload: %v: %q", err, f.Payload)
			continue
		}
		if n.Events == nil || strings.HasPrefix(n.EventType, "subscription_") {
			c.notes <- n
			continue
		}
		// Like the SDK (acceptMessage), read an object notification's
		// "events" array as that many events, in order.
		var evs []json.RawMessage
		if err := json.Unmarshal(n.Events, &evs); err != nil {
			c.t.Errorf("notification events: %v: %q", err, n.Events)
			continue
		}
		for _, ev := range evs {
			m := *n
			m.Event, m.Events = ev, nil
			c.notes <- &m
		}
	}
}

// call sends a frame and waits for the reply with its id.
func (c *tclient) call(fields map[string]any, payload []byte) *protocol.Frame {
	c.t.Helper()
	id := "TM" + chorus.NewSID("XX")[2:]
	fields["id"] = id
	h, err := protocol.HeaderOf(fields)
	if err != nil {
		c.t.Fatalf("HeaderOf: %v", err)
	}
	ch := make(chan *protocol.Frame, 1)
	c.mu.Lock()
	c.waiters[id] = ch
	c.mu.Unlock()
	if err := c.ws.Write(context.Background(), websocket.MessageBinary, protocol.Encode(nil, h, payload)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
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

// do sends an upstream (CDS) request and returns the HTTP status and body.
func (c *tclient) do(method, path string, body any) (int, []byte) {
	c.t.Helper()
	var payload []byte
	if body != nil {
		payload, _ = json.Marshal(body)
	}
	f := c.call(map[string]any{
		"method": "message", "active_grant": "data_sync", "payload_type": "application/json",
		"http_request": map[string]any{"host": "cds.test:1", "path": path, "method": method, "params": map[string]any{},
			"headers": map[string]any{"Content-Type": "application/json", "Twilio-Request-Id": "RQ0"}},
	}, payload)
	if f.Header.Status == nil || f.Header.Status.Code != 200 {
		c.t.Fatalf("%s %s: twilsock status = %+v, want 200", method, path, f.Header.Status)
	}
	var hs protocol.Status
	if ok, err := f.Header.Get("http_status", &hs); !ok || err != nil {
		c.t.Fatalf("%s %s: no http_status (%v)", method, path, err)
	}
	return hs.Code, append([]byte(nil), f.Payload...)
}

// establish subscribes to objects (kind, sid) from event id 0 and waits
// for subscription_established of each.
func (c *tclient) establish(kind chorus.Kind, sids ...string) {
	c.t.Helper()
	corr := time.Now().UnixNano()
	reqs := make([]map[string]any, len(sids))
	for i, sid := range sids {
		reqs[i] = map[string]any{"object_sid": sid, "object_type": string(kind), "last_event_id": 0}
	}
	status, body := c.do("POST", "/v4/Subscriptions", map[string]any{
		"event_protocol_version": 4, "action": "establish", "correlation_id": corr,
		"retried_requests": 0, "ttl_in_s": -1, "requests": reqs,
	})
	if status != 200 {
		c.t.Fatalf("POST /v4/Subscriptions = %d %s, want 200", status, body)
	}
	want := map[string]bool{}
	for _, s := range sids {
		want[s] = true
	}
	deadline := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case n := <-c.notes:
			if n.EventType != "subscription_established" {
				c.t.Fatalf("before subscription_established: got %s %s", n.EventType, n.Event)
			}
			var evs []struct {
				ObjectSID string `json:"object_sid"`
			}
			if err := json.Unmarshal(n.Events, &evs); err != nil {
				c.t.Fatalf("subscription_established events %s: %v", n.Events, err)
			}
			for _, e := range evs {
				delete(want, e.ObjectSID)
			}
		case <-deadline:
			c.t.Fatalf("no subscription_established for %v within 10s", want)
		}
	}
}

// collect returns the next n notifications of eventType, in arrival order,
// failing on any other notification or after timeout.
func (c *tclient) collect(n int, timeout time.Duration) []*note {
	c.t.Helper()
	out := make([]*note, 0, n)
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case nt := <-c.notes:
			out = append(out, nt)
		case <-deadline:
			c.t.Fatalf("received %d notifications within %v, want %d", len(out), timeout, n)
		}
	}
	return out
}

// quiet fails if any notification arrives within d.
func (c *tclient) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case n := <-c.notes:
		c.t.Errorf("unexpected notification %s (id %d) after the expected ones", n.EventType, n.eventID())
	case <-time.After(d):
	}
}

// jsonString compacts raw for comparisons.
func jsonString(raw json.RawMessage) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return strings.TrimSpace(string(raw))
	}
	b, _ := json.Marshal(v)
	return string(b)
}
