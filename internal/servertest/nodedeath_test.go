package servertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/testrelay"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// relayedCluster starts a cluster of one node connected straight to NATS;
// each node started after it reaches NATS through a relay of its own
// (relays, by node index) that a test can cut. Heartbeats run every
// 100 ms (the run loop beats at most once a Poll).
func relayedCluster(t *testing.T, nodeTimeout time.Duration) (*Cluster, map[int]*testrelay.Relay) {
	t.Helper()
	relays := map[int]*testrelay.Relay{}
	c := NewCluster(t, Config{
		Nodes:    1,
		Webhooks: webhook.Config{Heartbeat: 100 * time.Millisecond, Poll: 100 * time.Millisecond, NodeTimeout: nodeTimeout},
		NATSURL: func(i int, u string) string {
			if i == 0 {
				return u
			}
			relays[i] = testrelay.New(t, strings.TrimPrefix(u, "nats://"))
			return "nats://" + relays[i].Addr
		},
	})
	return c, relays
}

// TestDeadNodesChangesReachOtherNodes: a node that dies between committing
// a change and its reaching the bus must not leave the other nodes'
// subscribers without it. Node n2 talks to NATS through a relay that is
// cut: its REST write commits, and the event it publishes is lost on the
// way, unnoticed. n2 then stops without being able to confirm its
// publishes, so it does not leave; the leader presumes it dead after
// NodeTimeout and every node reads again what its sessions may have
// missed. A node that leaves after confirming its publishes is not
// presumed dead.
func TestDeadNodesChangesReachOtherNodes(t *testing.T) {
	// Longer than the dying node takes to stop while its bus is cut (a
	// second or two), so that only its not leaving gets it presumed dead.
	const nodeTimeout = 5 * time.Second
	c, relays := relayedCluster(t, nodeTimeout)
	a := c.Nodes[0]
	if l := leader(t, c); l != a {
		t.Fatalf("leader = %s, want %s", l.Name, a.Name)
	}
	doc := sidOf(t, mustREST(t, a, "POST", "/Documents", url.Values{"Data": {`{"n":0}`}}, http.StatusCreated))
	sub := dial(t, a.WSURL, c.Token(t, "watcher"))
	sub.establish(chorus.KindDocument, doc)

	// A node that leaves cleanly: its writes arrive, and nobody mourns it.
	clean := c.StartNode(t) // n1: through the relay, not yet cut
	mustREST(t, clean, "POST", "/Documents/"+doc, url.Values{"Data": {`{"n":1}`}}, http.StatusOK)
	checkSequence(t, "subscriber on "+a.Name, sub.collect(1, 10*time.Second), "document_updated", 1)
	if err := clean.Stop(); err != nil {
		t.Fatalf("stop %s: %v", clean.Name, err)
	}
	time.Sleep(nodeTimeout + time.Second)
	if got := metric(t, a, "chorus_cluster_nodes_presumed_dead_total"); got != 0 {
		t.Fatalf("chorus_cluster_nodes_presumed_dead_total = %d after %s left cleanly, want 0", got, clean.Name)
	}

	// A node whose last publish is lost, and which then goes away.
	dying := c.StartNode(t) // n2
	relays[2].Freeze()
	mustREST(t, dying, "POST", "/Documents/"+doc, url.Values{"Data": {`{"n":2}`}}, http.StatusOK)
	sub.quiet(500 * time.Millisecond) // the publish was lost: nothing yet
	if err := dying.Stop(); err != nil {
		t.Fatalf("stop %s: %v", dying.Name, err)
	}
	notes := sub.collect(1, nodeTimeout+10*time.Second)
	checkSequence(t, "subscriber on "+a.Name, notes, "document_updated", 2)
	var data struct {
		N int `json:"n"`
	}
	if err := json.Unmarshal(notes[0].field("document_data"), &data); err != nil || data.N != 2 {
		t.Errorf("document_data = %s, want {\"n\":2}", notes[0].field("document_data"))
	}
	if got := metric(t, a, "chorus_cluster_nodes_presumed_dead_total"); got != 1 {
		t.Errorf("chorus_cluster_nodes_presumed_dead_total = %d, want 1 (%s)", got, dying.Name)
	}
	sub.quiet(300 * time.Millisecond)
}

// TestLostPublishesAnnouncedOnReconnect: node n1's connection to NATS is
// cut without either side noticing (a relay drops every byte), so the
// event of its REST write is written into the connection and lost. When
// the cut is found (the relay closes) and n1 reconnects, every node must
// read again what its sessions missed, not only n1: the subscriber on n0,
// whose own connection never dropped, gets the event.
func TestLostPublishesAnnouncedOnReconnect(t *testing.T) {
	c, relays := relayedCluster(t, webhook.DefaultNodeTimeout)
	a, b := c.Nodes[0], c.StartNode(t)
	relay := relays[1]
	doc := sidOf(t, mustREST(t, a, "POST", "/Documents", url.Values{"Data": {`{"n":0}`}}, http.StatusCreated))
	sub := dial(t, a.WSURL, c.Token(t, "watcher"))
	sub.establish(chorus.KindDocument, doc)

	relay.Freeze()
	mustREST(t, b, "POST", "/Documents/"+doc, url.Values{"Data": {`{"n":1}`}}, http.StatusOK)
	sub.quiet(500 * time.Millisecond) // lost on the way: nothing yet
	relay.Kill()
	relay.Restart()
	notes := sub.collect(1, 15*time.Second)
	checkSequence(t, "subscriber on "+a.Name, notes, "document_updated", 1)
	if got := jsonString(notes[0].field("document_data")); got != `{"n":1}` {
		t.Errorf("document_data = %s, want {\"n\":1}", got)
	}
	sub.quiet(300 * time.Millisecond)
}

// TestReconnectedNodeLeavesCleanly: node n1 commits a write while it knows
// it is cut off from NATS, so the publish fails; once back it has every
// node read again, and the subscriber on n0 gets the event. That done, n1
// must be able to leave cleanly: it is not presumed dead when it stops.
func TestReconnectedNodeLeavesCleanly(t *testing.T) {
	const nodeTimeout = 3 * time.Second
	c, relays := relayedCluster(t, nodeTimeout)
	a := c.Nodes[0]
	doc := sidOf(t, mustREST(t, a, "POST", "/Documents", url.Values{"Data": {`{"n":0}`}}, http.StatusCreated))
	sub := dial(t, a.WSURL, c.Token(t, "watcher"))
	sub.establish(chorus.KindDocument, doc)
	b := c.StartNode(t)

	settled := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for b.Bus.Settled() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: Bus.Settled() still %t after 10s", b.Name, !want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	relays[1].Kill()
	settled(false) // n1 knows it is disconnected
	mustREST(t, b, "POST", "/Documents/"+doc, url.Values{"Data": {`{"n":1}`}}, http.StatusOK)
	relays[1].Restart()
	notes := sub.collect(1, 15*time.Second)
	checkSequence(t, "subscriber on "+a.Name, notes, "document_updated", 1)
	settled(true)

	if err := b.Stop(); err != nil {
		t.Fatalf("stop %s: %v", b.Name, err)
	}
	time.Sleep(nodeTimeout + time.Second)
	if got := metric(t, a, "chorus_cluster_nodes_presumed_dead_total"); got != 0 {
		t.Errorf("chorus_cluster_nodes_presumed_dead_total = %d after %s stopped cleanly, want 0: "+
			"a node that announced its unposted changes must be able to leave", got, b.Name)
	}
	sub.quiet(300 * time.Millisecond)
}

// TestStoreOutagePresumesNoNodeDead: while PostgreSQL is unreachable, no
// node can heartbeat, nor commit. When it is back, the leader must not
// presume the others dead before they had the time to beat again: nothing
// can have gone unpublished, and a cluster-wide re-read is the last thing
// a recovering database needs. The database comes back for the leader
// first, after an outage longer than the node timeout or a short one, and
// for the others later (past the node timeout since their last beat).
func TestStoreOutagePresumesNoNodeDead(t *testing.T) {
	const nodeTimeout = 3 * time.Second
	for _, tc := range []struct {
		name              string
		leaderOut, others time.Duration // the others come back this long after the leader
	}{
		{"long", nodeTimeout + 2*time.Second, time.Second},
		// Back 2 s after the leader: within the node timeout of its return
		// (1 s to spare), and 4 s after the outage began, past the node
		// timeout since their last beat (1 s to spare): a leader counting
		// its short outage as unbroken would presume them dead.
		{"short for the leader", 2 * time.Second, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			relays := map[int]*testrelay.Relay{}
			c := NewCluster(t, Config{
				Nodes:    3,
				Webhooks: webhook.Config{Heartbeat: 200 * time.Millisecond, Poll: 200 * time.Millisecond, NodeTimeout: nodeTimeout},
				StoreURL: func(i int, dsn string) string {
					u, err := url.Parse(dsn)
					if err != nil {
						t.Fatalf("database URL %q: %v", dsn, err)
					}
					relays[i] = testrelay.New(t, u.Host)
					u.Host = relays[i].Addr
					return u.String()
				},
			})
			lead := leader(t, c)
			time.Sleep(nodeTimeout) // the leader may presume nodes dead from now on

			for _, r := range relays {
				r.Kill()
			}
			time.Sleep(tc.leaderOut)
			for i, n := range c.Nodes {
				if n == lead {
					relays[i].Restart()
				}
			}
			time.Sleep(tc.others)
			for i, n := range c.Nodes {
				if n != lead {
					relays[i].Restart()
				}
			}
			time.Sleep(2 * nodeTimeout)
			for _, n := range c.Nodes {
				if got := metric(t, n, "chorus_cluster_nodes_presumed_dead_total"); got != 0 {
					t.Errorf("%s presumed %d nodes dead after a store outage, want 0", n.Name, got)
				}
			}
		})
	}
}

// TestStreamMessageDuringACutIsRefused: a stream message is kept nowhere,
// so its publisher must not be told 201 when the bus never got it. Node
// n1's relay to NATS is cut, unnoticed (the connection looks up); a
// message published through n1 used to be answered 201 and reach no
// subscriber (a cluster tester lost 859 acknowledged messages during a
// NATS stall). The publish now waits for the bus to confirm it, for
// engine.DefaultMessageConfirmWait: 503, which says the message may
// still reach subscribers. A stall that ends within the wait (a NATS
// server stopped, then resumed) is answered 201: a 503 there had the SDK
// publish again while the first copy was on its way.
func TestStreamMessageDuringACutIsRefused(t *testing.T) {
	c, relays := relayedCluster(t, webhook.DefaultNodeTimeout)
	a, b := c.Nodes[0], c.StartNode(t)
	stream := sidOf(t, mustREST(t, a, "POST", "/Streams", nil, http.StatusCreated))
	mustREST(t, b, "POST", "/Streams/"+stream+"/Messages", url.Values{"Data": {`{"n":0}`}}, http.StatusCreated)

	relays[1].Stall()
	time.AfterFunc(2*time.Second, relays[1].Resume)
	start := time.Now()
	mustREST(t, b, "POST", "/Streams/"+stream+"/Messages", url.Values{"Data": {`{"n":1}`}}, http.StatusCreated)
	if took := time.Since(start); took < time.Second {
		t.Errorf("a publish during a 2 s stall was answered after %v: not confirmed by the bus", took)
	}

	relays[1].Freeze()
	start = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), engine.DefaultMessageConfirmWait+10*time.Second)
	defer cancel()
	res, err := b.REST(ctx, "POST", "/Streams/"+stream+"/Messages", url.Values{"Data": {`{"n":2}`}})
	if err != nil {
		t.Fatalf("a publish during a cut: %v after %v", err, time.Since(start))
	}
	if res.Status != http.StatusServiceUnavailable || !strings.Contains(string(res.Body), "may still reach subscribers") {
		t.Errorf("a publish during a cut = %d %s; want 503 saying the message may still reach subscribers", res.Status, res.Body)
	}
	if took := time.Since(start); took > engine.DefaultMessageConfirmWait+5*time.Second {
		t.Errorf("the refused publish took %v", took)
	}
}

// TestWritesDuringABusStall: a hung NATS server (SIGSTOP) stops reading;
// once the socket buffers are full, a node's publish blocks in its write.
// Writes commit in the store before they publish, so they must still be
// answered, and soon: they used to wait for nats.go's one-minute flusher
// timeout, and a client past its own timeout saw the connection dropped
// for writes that were in the store (a cluster tester's 3 of 356).
func TestWritesDuringABusStall(t *testing.T) {
	c, relays := relayedCluster(t, webhook.DefaultNodeTimeout)
	a, b := c.Nodes[0], c.StartNode(t)
	doc := sidOf(t, mustREST(t, b, "POST", "/Documents", url.Values{"Data": {`{"n":0}`}}, http.StatusCreated))
	sub := dial(t, a.WSURL, c.Token(t, "watcher"))
	sub.establish(chorus.KindDocument, doc)
	relays[1].Stall()
	big := strings.Repeat("x", 14_000)
	var wg sync.WaitGroup
	var slowest, writes atomic.Int64
	deadline := time.Now().Add(4 * time.Second) // enough to fill the buffers
	for w := range 8 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				start := time.Now()
				data := fmt.Sprintf(`{"w":%d,"i":%d,"pad":%q}`, w, i, big)
				res, err := b.REST(context.Background(), "POST", "/Documents/"+doc, url.Values{"Data": {data}})
				took := time.Since(start)
				for old := slowest.Load(); took > time.Duration(old) && !slowest.CompareAndSwap(old, int64(took)); old = slowest.Load() {
				}
				if err != nil || res.Status != http.StatusOK {
					t.Errorf("write during the stall: %v %d", err, res.Status)
					return
				}
				writes.Add(1)
			}
		})
	}
	wg.Wait()
	relays[1].Resume()
	if s := time.Duration(slowest.Load()); s > 15*time.Second {
		t.Errorf("the slowest write during the stall took %v, want well under nats.go's default one-minute flusher timeout", s)
	}
	// Every write reaches the other node's subscriber, in order, once the
	// bus is back (announced as lost, read again from the store).
	checkSequence(t, "subscriber on "+a.Name, sub.collect(int(writes.Load()), 30*time.Second), "document_updated", 1)
	sub.quiet(300 * time.Millisecond)
}

// TestAccessChangesReachADeafNode: node n1 is cut off from NATS (the relay
// killed: it knows), so it hears no control event. An ACL switched on and
// a key revoked on n0 must still stop n1's sessions at their next request:
// a cluster tester's session wrote with a revoked key into a service with
// ACLs on for as long as NATS was away. While deaf, n1 reads a session's
// key and service from the store before each request.
func TestAccessChangesReachADeafNode(t *testing.T) {
	c, relays := relayedCluster(t, webhook.DefaultNodeTimeout)
	a, b := c.Nodes[0], c.StartNode(t)
	doc := sidOf(t, mustREST(t, a, "POST", "/Documents", url.Values{"Data": {`{"n":0}`}}, http.StatusCreated))
	carol := dial(t, b.WSURL, c.Token(t, "carol"))
	if status, body := carol.do("POST", "/v3/Documents/"+doc, map[string]any{"data": map[string]any{"n": 1}}); status != http.StatusOK {
		t.Fatalf("write before the cut = %d %s", status, body)
	}
	relays[1].Kill()
	bus := b.Server.Engine().Bus().(interface{ Connected() bool })
	for deadline := time.Now().Add(10 * time.Second); bus.Connected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("n1 never noticed that NATS was gone")
		}
	}
	mustREST(t, a, "POST", "", url.Values{"AclEnabled": {"true"}}, http.StatusOK)
	if status, body := carol.do("POST", "/v3/Documents/"+doc, map[string]any{"data": map[string]any{"n": 2}}); status != http.StatusForbidden {
		t.Errorf("write without permission after ACLs went on = %d %s, want 403", status, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Server.Engine().Store().Update(ctx, func(tx chorus.Tx) error {
		return tx.DeleteAPIKey(ctx, c.Creds.APIKeySID)
	}); err != nil {
		t.Fatal(err)
	}
	_ = a.Server.Gateway().RevokeKeys(ctx, c.Creds.AccountSID, c.Creds.APIKeySID) // n1 does not hear it
	if status, body := carol.do("GET", "/v3/Documents/"+doc, nil); status != http.StatusUnauthorized {
		t.Errorf("request after the key was revoked = %d %s, want 401", status, body)
	}
	select {
	case <-carol.done:
	case <-time.After(10 * time.Second):
		t.Error("the session of the revoked key is still open on the deaf node")
	}
}
