package servertest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/twilio/twilio-go/client"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/postgres"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// fastHooks are webhook timings for tests.
var fastHooks = webhook.Config{
	RetryBase: 200 * time.Millisecond, Attempts: 50, Poll: 200 * time.Millisecond,
	Heartbeat: 300 * time.Millisecond, NodeTimeout: 3 * time.Second,
}

// hookHit is one request to a hookReceiver.
type hookHit struct {
	form   url.Values
	status int
}

// hookReceiver is a webhook receiver on a free loopback port that checks
// X-Twilio-Signature with twilio-go's RequestValidator.
type hookReceiver struct {
	*httptest.Server
	failing atomic.Bool // answer 503
	hits    chan hookHit
}

func newHookReceiver(t testing.TB, authToken string) *hookReceiver {
	t.Helper()
	rc := &hookReceiver{hits: make(chan hookHit, 100_000)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		flat := map[string]string{}
		for k, v := range r.PostForm {
			flat[k] = v[0]
		}
		v := client.NewRequestValidator(authToken)
		if !v.Validate(rc.URL+"/hook", flat, r.Header.Get("X-Twilio-Signature")) {
			t.Errorf("twilio-go rejects the signature of %v", r.PostForm)
		}
		status := http.StatusOK
		if rc.failing.Load() {
			status = http.StatusServiceUnavailable
		}
		rc.hits <- hookHit{form: r.PostForm, status: status}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *hookReceiver) next(t testing.TB, within time.Duration) hookHit {
	t.Helper()
	select {
	case h := <-rc.hits:
		return h
	case <-time.After(within):
		t.Fatalf("no webhook within %v", within)
		return hookHit{}
	}
}

func (rc *hookReceiver) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case h := <-rc.hits:
		t.Fatalf("unexpected webhook %v", h.form)
	case <-time.After(d):
	}
}

// TestWebhookFailover: webhooks written on any node are delivered by the
// node that leads; when it stops with webhooks pending, another node
// takes the delivery over, and every webhook arrives, in order per object.
func TestWebhookFailover(t *testing.T) {
	c := NewCluster(t, Config{Nodes: 3, Webhooks: fastHooks})
	rc := newHookReceiver(t, c.Creds.AuthToken)
	rc.failing.Store(true)
	mustREST(t, c.Nodes[0], "POST", "", url.Values{"WebhookUrl": {rc.URL + "/hook"}, "WebhooksFromRestEnabled": {"true"}}, http.StatusOK)
	time.Sleep(1100 * time.Millisecond) // nodes cache service settings for a second

	const docs, updates = 6, 5
	for i := range docs {
		n := c.Nodes[i%len(c.Nodes)]
		sid := sidOf(t, mustREST(t, n, "POST", "/Documents", url.Values{"Data": {`{"n":0}`}}, http.StatusCreated))
		for j := 1; j <= updates; j++ {
			mustREST(t, n, "POST", "/Documents/"+sid, url.Values{"Data": {fmt.Sprintf(`{"n":%d}`, j)}}, http.StatusOK)
		}
	}
	rc.next(t, 15*time.Second) // delivery is under way, failing
	old := leader(t, c)
	// Every node reports the cluster-wide backlog.
	for _, n := range c.Nodes {
		res, err := http.Get(n.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		m := regexp.MustCompile(`(?m)^chorus_webhooks_pending\{service="` + c.Creds.ServiceSID + `"\} (\d+)$`).FindSubmatch(b)
		if m == nil || string(m[1]) == "0" {
			t.Errorf("%s: /metrics has no pending webhooks of the service:\n%s", n.Name, b)
		}
		if !regexp.MustCompile(`(?m)^chorus_webhooks_oldest_pending_age_seconds [0-9.]+$`).Match(b) {
			t.Errorf("%s: /metrics has no chorus_webhooks_oldest_pending_age_seconds", n.Name)
		}
	}
	if err := old.Stop(); err != nil {
		t.Fatalf("stop %s: %v", old.Name, err)
	}
	rc.failing.Store(false)
	t.Logf("stopped %s, which delivered the webhooks", old.Name)

	created := map[string]bool{}
	last := map[string]int{} // EventId delivered (200) per document
	for done := 0; done < docs*(updates+1); {
		h := rc.next(t, 30*time.Second)
		sid := h.form.Get("DocumentSid")
		switch h.form.Get("EventType") {
		case "document_created":
			if h.status == http.StatusOK && !created[sid] {
				created[sid] = true
				done++
			}
		case "document_updated":
			id, _ := strconv.Atoi(h.form.Get("EventId"))
			if !created[sid] && h.status == http.StatusOK {
				t.Errorf("%s: update %d delivered before its document_created", sid, id)
			}
			if id > last[sid]+1 {
				t.Fatalf("%s: event %d sent before %d was delivered", sid, id, last[sid]+1)
			}
			if id == last[sid]+1 && h.status == http.StatusOK {
				last[sid] = id
				done++
			}
		}
	}
	next := leader(t, c)
	if next == old {
		t.Fatalf("leader is still %s", old.Name)
	}
	t.Logf("%s took the delivery over", next.Name)
}

// TestWebhooksOfOtherNodesAtOnce: the leader delivers the webhooks of a
// change committed on another node at once, because that node nudges it
// over NATS, not at its next poll of the outbox, a minute away here (a
// second by default): REST writes, and an identity's first connection
// (endpoint_connected).
func TestWebhooksOfOtherNodesAtOnce(t *testing.T) {
	hooks := fastHooks
	hooks.Poll = time.Minute
	c := NewCluster(t, Config{Nodes: 2, Webhooks: hooks})
	if !c.Nodes[0].Leader(context.Background()) {
		t.Fatal("node 0 does not lead")
	}
	rc := newHookReceiver(t, c.Creds.AuthToken)
	mustREST(t, c.Nodes[0], "POST", "", url.Values{
		"WebhookUrl": {rc.URL + "/hook"}, "WebhooksFromRestEnabled": {"true"}, "ReachabilityWebhooksEnabled": {"true"},
	}, http.StatusOK)
	time.Sleep(1100 * time.Millisecond) // nodes cache service settings for a second
	for i := range 3 {
		sid := sidOf(t, mustREST(t, c.Nodes[1], "POST", "/Documents", url.Values{"Data": {fmt.Sprintf(`{"n":%d}`, i)}}, http.StatusCreated))
		h := rc.next(t, 10*time.Second)
		if got := h.form.Get("DocumentSid"); got != sid || h.form.Get("EventType") != "document_created" {
			t.Fatalf("webhook %s for %s, want document_created for %s", h.form.Get("EventType"), got, sid)
		}
	}
	dial(t, c.Nodes[1].WSURL, c.Token(t, "alice"))
	h := rc.next(t, 10*time.Second)
	if got := h.form.Get("EventType") + " " + h.form.Get("Identity"); got != "endpoint_connected alice" {
		t.Fatalf("webhook %q, want endpoint_connected of alice", got)
	}
}

// TestReachabilityAcrossNodes: an identity with endpoints on two nodes
// is online while either is connected: one endpoint_connected, and one
// endpoint_disconnected after the last left and the debouncing window
// passed; an identity whose node died goes offline too.
func TestReachabilityAcrossNodes(t *testing.T) {
	c := NewCluster(t, Config{Nodes: 2, Webhooks: fastHooks})
	rc := newHookReceiver(t, c.Creds.AuthToken)
	mustREST(t, c.Nodes[0], "POST", "", url.Values{
		"WebhookUrl": {rc.URL + "/hook"}, "ReachabilityWebhooksEnabled": {"true"},
		"ReachabilityDebouncingEnabled": {"true"}, "ReachabilityDebouncingWindow": {"1000"},
	}, http.StatusOK)
	time.Sleep(1100 * time.Millisecond) // nodes cache service settings for a second
	want := func(typ, identity string) {
		t.Helper()
		h := rc.next(t, 15*time.Second)
		if got := h.form.Get("EventType") + " " + h.form.Get("Identity"); got != typ+" "+identity {
			t.Fatalf("webhook %q, want %q", got, typ+" "+identity)
		}
	}
	a := dial(t, c.Nodes[0].WSURL, c.Token(t, "alice"))
	want("endpoint_connected", "alice")
	b := dial(t, c.Nodes[1].WSURL, c.Token(t, "alice"))
	rc.none(t, 1500*time.Millisecond)
	a.ws.Close(websocket.StatusNormalClosure, "")
	rc.none(t, 2500*time.Millisecond) // window 1s: still online on the other node
	start := time.Now()
	b.ws.Close(websocket.StatusNormalClosure, "")
	want("endpoint_disconnected", "alice")
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("endpoint_disconnected after %v, within the debouncing window", took)
	}

	// A node that dies with an endpoint on it stops heartbeating; its
	// endpoints go when the others notice (NodeTimeout 3s).
	st := c.Nodes[0].Server.Engine().Store().(*postgres.Store)
	ctx := context.Background()
	ghost := chorus.Endpoint{ServiceSID: c.Creds.ServiceSID, AccountSID: c.Creds.AccountSID, Identity: "zoe", EndpointID: "ep-z", Node: "ghost"}
	if err := st.Update(ctx, func(tx chorus.Tx) error {
		_, err := tx.ConnectEndpoint(ctx, ghost, time.Now().UTC())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	want("endpoint_disconnected", "zoe")
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("endpoint_disconnected of a dead node's identity after %v, before the node timeout", took)
	}
}

// TestReachabilityTurnedOnWhileConnected: a session opened before its
// service turned reachability webhooks on is heard when it ends (an
// identity online then left only an endpoint_connected, never its
// endpoint_disconnected), on the node the change was made on and on
// another; and its identity is told online once, not counted twice.
func TestReachabilityTurnedOnWhileConnected(t *testing.T) {
	c := NewCluster(t, Config{Nodes: 2, Webhooks: fastHooks})
	rc := newHookReceiver(t, c.Creds.AuthToken)
	mustREST(t, c.Nodes[0], "POST", "", url.Values{"WebhookUrl": {rc.URL + "/hook"}}, http.StatusOK)
	a := dial(t, c.Nodes[0].WSURL, c.Token(t, "alice"))
	b := dial(t, c.Nodes[1].WSURL, c.Token(t, "bob"))
	mustREST(t, c.Nodes[0], "POST", "", url.Values{"ReachabilityWebhooksEnabled": {"true"}}, http.StatusOK)
	got := map[string]int{}
	for range 2 {
		h := rc.next(t, 15*time.Second)
		got[h.form.Get("EventType")+" "+h.form.Get("Identity")]++
	}
	if got["endpoint_connected alice"] != 1 || got["endpoint_connected bob"] != 1 {
		t.Fatalf("webhooks when reachability turned on: %v, want alice's and bob's endpoint_connected", got)
	}
	a.ws.Close(websocket.StatusNormalClosure, "")
	b.ws.Close(websocket.StatusNormalClosure, "")
	got = map[string]int{}
	for range 2 {
		h := rc.next(t, 15*time.Second)
		got[h.form.Get("EventType")+" "+h.form.Get("Identity")]++
	}
	if got["endpoint_disconnected alice"] != 1 || got["endpoint_disconnected bob"] != 1 {
		t.Fatalf("webhooks when the sessions ended: %v, want alice's and bob's endpoint_disconnected", got)
	}
	rc.none(t, time.Second)
}

// TestSkewedNodeClocks: nodes whose clocks are off (the leader's 20
// minutes ahead, another's 16 minutes behind, a third's a minute ahead;
// webhooks older than 15 minutes are given up on) are not presumed dead,
// their identities' debouncing neither ends early nor late, the webhooks
// of their writes are neither held back nor given up on as too old, and
// the leader reports pending webhooks' true age: what one node records and
// another compares does not depend on the nodes' clocks agreeing.
func TestSkewedNodeClocks(t *testing.T) {
	skews := []time.Duration{20 * time.Minute, -16 * time.Minute, time.Minute}
	c := NewCluster(t, Config{Nodes: len(skews), Webhooks: fastHooks, Clock: func(i int) func() time.Time {
		return func() time.Time { return time.Now().Add(skews[i]) }
	}})
	lead := c.Nodes[0]
	if l := leader(t, c); l != lead {
		t.Fatalf("leader = %s, want %s", l.Name, lead.Name)
	}
	rc := newHookReceiver(t, c.Creds.AuthToken)
	mustREST(t, lead, "POST", "", url.Values{
		"WebhookUrl": {rc.URL + "/hook"}, "WebhooksFromRestEnabled": {"true"}, "ReachabilityWebhooksEnabled": {"true"},
		"ReachabilityDebouncingEnabled": {"true"}, "ReachabilityDebouncingWindow": {"2000"},
	}, http.StatusOK)
	// The leader presumes nodes dead once it has beaten for NodeTimeout
	// (3 s); give it a few of its beats after that. The nodes also need a
	// second to see the service's new settings.
	time.Sleep(fastHooks.NodeTimeout + 1500*time.Millisecond)
	if got := metric(t, lead, "chorus_cluster_nodes_presumed_dead_total"); got != 0 {
		t.Fatalf("chorus_cluster_nodes_presumed_dead_total = %d on the leader", got)
	}
	want := func(typ, what string, within time.Duration) {
		t.Helper()
		h := rc.next(t, within)
		if got := h.form.Get("EventType"); got != typ {
			t.Fatalf("%s: webhook %v, want %s", what, h.form, typ)
		}
	}
	for i, n := range c.Nodes {
		what := fmt.Sprintf("%s, clock %v off", n.Name, skews[i])
		mustREST(t, n, "POST", "/Documents", url.Values{"Data": {`{}`}}, http.StatusCreated)
		want("document_created", "REST write on "+what, 5*time.Second)

		ws := dial(t, n.WSURL, c.Token(t, "id-"+n.Name))
		want("endpoint_connected", "connection to "+what, 5*time.Second)
		start := time.Now()
		ws.ws.Close(websocket.StatusNormalClosure, "")
		want("endpoint_disconnected", "disconnection from "+what, 6*time.Second)
		if took := time.Since(start); took < 1900*time.Millisecond {
			t.Errorf("endpoint_disconnected %v after the endpoint left %s, within the 2 s debouncing window", took, what)
		}
	}
	rc.none(t, time.Second)

	// A webhook the receiver refuses stays pending: its age on the leader
	// is the time since its write, not the writer's skew from the leader.
	rc.failing.Store(true)
	start := time.Now()
	mustREST(t, c.Nodes[1], "POST", "/Documents", url.Values{"Data": {`{}`}}, http.StatusCreated)
	rc.next(t, 5*time.Second)
	res, err := http.Get(lead.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	m := regexp.MustCompile(`(?m)^chorus_webhooks_oldest_pending_age_seconds ([0-9.]+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no chorus_webhooks_oldest_pending_age_seconds in /metrics of %s", lead.Name)
	}
	if age, _ := strconv.ParseFloat(string(m[1]), 64); age > time.Since(start).Seconds()+1 {
		t.Errorf("chorus_webhooks_oldest_pending_age_seconds = %s on the leader, %v after the write", m[1], time.Since(start))
	}
	if got := metric(t, lead, "chorus_cluster_nodes_presumed_dead_total"); got != 0 {
		t.Errorf("chorus_cluster_nodes_presumed_dead_total = %d on the leader at the end", got)
	}
}
