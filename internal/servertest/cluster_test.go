package servertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	natsbus "github.com/chorus-sync/chorus/internal/bus/nats"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// sidOf decodes the sid of a REST or CDS object body.
func sidOf(t testing.TB, body []byte) string {
	t.Helper()
	var v struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.SID == "" {
		t.Fatalf("no sid in %s (%v)", body, err)
	}
	return v.SID
}

// mustREST calls n.REST and fails unless the status is want.
func mustREST(t testing.TB, n *Node, method, path string, form url.Values, want int) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := n.REST(ctx, method, path, form)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if res.Status != want {
		t.Fatalf("%s %s on %s = %d %s, want %d", method, path, n.Name, res.Status, res.Body, want)
	}
	return res.Body
}

// metric reads one counter from a node's /metrics.
func metric(t testing.TB, n *Node, name string) uint64 {
	t.Helper()
	res, err := http.Get(n.URL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics on %s: %v", n.Name, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			u, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("metric %s = %q: %v", name, v, err)
			}
			return u
		}
	}
	t.Fatalf("metric %s not in /metrics of %s", name, n.Name)
	return 0
}

// checkSequence asserts that notes are eventType events with ids
// first, first+1, ... in that order.
func checkSequence(t testing.TB, who string, notes []*note, eventType string, first int64) {
	t.Helper()
	for i, n := range notes {
		if n.EventType != eventType {
			t.Fatalf("%s: notification %d = %s, want %s", who, i, n.EventType, eventType)
		}
		if got, want := n.eventID(), first+int64(i); got != want {
			t.Fatalf("%s: notification %d has id %d, want %d (ids must be consecutive, in order, once each)", who, i, got, want)
		}
	}
}

// TestCrossNodeDelivery: subscribers on one node receive, in order, the
// writes made through the REST API and the CDS API of other nodes.
func TestCrossNodeDelivery(t *testing.T) {
	c := NewCluster(t, Config{Nodes: 3})
	a, b, cn := c.Nodes[0], c.Nodes[1], c.Nodes[2]

	doc := sidOf(t, mustREST(t, a, "POST", "/Documents", url.Values{"Data": {`{"n":0}`}}, http.StatusCreated))
	list := sidOf(t, mustREST(t, a, "POST", "/Lists", url.Values{}, http.StatusCreated))

	subB := dial(t, b.WSURL, c.Token(t, "bob"))
	subB.establish(chorus.KindDocument, doc)
	subB.establish(chorus.KindList, list)
	subC := dial(t, cn.WSURL, c.Token(t, "carol"))
	subC.establish(chorus.KindDocument, doc)

	const n = 20
	for i := 1; i <= n; i++ {
		mustREST(t, a, "POST", "/Documents/"+doc, url.Values{"Data": {fmt.Sprintf(`{"n":%d}`, i)}}, http.StatusOK)
	}
	// A write through the twilsock/CDS API of node C, seen on B.
	status, body := subC.do("POST", "/v3/Documents/"+doc, map[string]any{"data": map[string]any{"n": n + 1, "via": "cds"}})
	if status != 200 {
		t.Fatalf("CDS POST /v3/Documents/%s on %s = %d %s, want 200", doc, cn.Name, status, body)
	}

	for _, s := range []struct {
		name string
		c    *tclient
	}{{"subscriber on " + b.Name, subB}, {"subscriber on " + cn.Name, subC}} {
		notes := s.c.collect(n+1, 10*time.Second)
		checkSequence(t, s.name, notes, "document_updated", 1)
		for i, nt := range notes[:n] {
			if got, want := jsonString(nt.field("document_data")), fmt.Sprintf(`{"n":%d}`, i+1); got != want {
				t.Errorf("%s: event %d document_data = %s, want %s", s.name, i+1, got, want)
			}
		}
		if got, want := jsonString(notes[n].field("document_data")), `{"n":21,"via":"cds"}`; got != want {
			t.Errorf("%s: CDS write: document_data = %s, want %s", s.name, got, want)
		}
	}

	// List items added on A arrive on B in index order.
	for i := range 10 {
		mustREST(t, a, "POST", "/Lists/"+list+"/Items", url.Values{"Data": {fmt.Sprintf(`{"i":%d}`, i)}}, http.StatusCreated)
	}
	notes := subB.collect(10, 10*time.Second)
	checkSequence(t, "list subscriber on "+b.Name, notes, "list_item_added", 1)
	for i, nt := range notes {
		if got, want := string(nt.field("item_index")), strconv.Itoa(i); got != want {
			t.Errorf("list event %d: item_index = %s, want %s", i+1, got, want)
		}
	}
	subB.quiet(300 * time.Millisecond)
	subC.quiet(100 * time.Millisecond)
}

// TestGapFill: node B's bus drops about 30% of the events it receives and
// delays (reorders) a third of the rest; four writers on node A update one
// document 500 times at a steady pace. Every subscriber on B must receive
// ids 1..500 exactly once, in order, the missing ones read from the
// store's log while the writes go on (bounded delivery lag).
//
// The last event (id 500) is never dropped: an object's final event lost
// on a core NATS bus, with no later event to reveal the gap, is only
// recovered on reconnect (Gateway.Resync) or at the object's next write,
// by design (see internal/bus/nats).
func TestGapFill(t *testing.T) {
	const writes, writers = 500, 4
	const pace = 5 * time.Millisecond     // between one writer's writes: a steady stream of ~2s
	const maxLag = 500 * time.Millisecond // gap wait (30ms) + a log read, with room for -race on 2 cores
	var dropped, delayed atomic.Int64
	drop := func(e *chorus.Event) bool {
		if e.ID >= writes || rand.Float64() >= 0.3 {
			return false
		}
		dropped.Add(1)
		return true
	}
	delay := func(e *chorus.Event) time.Duration {
		if rand.IntN(3) != 0 {
			return 0
		}
		delayed.Add(1)
		return time.Duration(1+rand.IntN(40)) * time.Millisecond
	}
	c := NewCluster(t, Config{Nodes: 2, BusOptions: func(i int) []natsbus.Option {
		if i == 1 {
			return []natsbus.Option{natsbus.WithFaults(drop, delay)}
		}
		return nil
	}})
	a, b := c.Nodes[0], c.Nodes[1]
	doc := sidOf(t, mustREST(t, a, "POST", "/Documents", url.Values{"UniqueName": {"gap"}}, http.StatusCreated))

	subs := []*tclient{dial(t, b.WSURL, c.Token(t, "s1")), dial(t, b.WSURL, c.Token(t, "s2"))}
	for _, s := range subs {
		s.establish(chorus.KindDocument, doc)
	}

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, writes)
	var doneMu sync.Mutex
	var doneAt []time.Time // completion times of the writes, in completion order
	for w := range writers {
		wg.Go(func() {
			for k := range writes / writers {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				res, err := a.REST(ctx, "POST", "/Documents/"+doc, url.Values{"Data": {fmt.Sprintf(`{"w":%d,"k":%d}`, w, k)}})
				cancel()
				switch {
				case err != nil:
					errs <- err
				case res.Status != http.StatusOK:
					errs <- fmt.Errorf("writer %d, write %d: %d %s", w, k, res.Status, res.Body)
				default:
					doneMu.Lock()
					doneAt = append(doneAt, time.Now())
					doneMu.Unlock()
				}
				time.Sleep(pace)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("write: %v", err)
	}
	writeTime := time.Since(start)

	final := mustREST(t, a, "GET", "/Documents/"+doc, nil, http.StatusOK)
	var current struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(final, &current); err != nil {
		t.Fatalf("GET document: %v", err)
	}
	for i, s := range subs {
		notes := s.collect(writes, 20*time.Second)
		checkSequence(t, fmt.Sprintf("subscriber %d on %s", i, b.Name), notes, "document_updated", 1)
		// When the k-th write completed, events 1..k were committed: the
		// lag of event k is its arrival minus that moment.
		var worst time.Duration
		worstID := 0
		for k, nt := range notes {
			if lag := nt.at.Sub(doneAt[k]); lag > worst {
				worst, worstID = lag, k+1
			}
		}
		t.Logf("subscriber %d: worst delivery lag %v (event %d)", i, worst.Round(time.Millisecond), worstID)
		if worst > maxLag {
			t.Errorf("subscriber %d: event %d arrived %v after it was committed, want at most %v: "+
				"a lost event must be filled from the log while writes go on, not after they stop",
				i, worstID, worst.Round(time.Millisecond), maxLag)
		}
		if got, want := jsonString(notes[writes-1].field("document_data")), jsonString(current.Data); got != want {
			t.Errorf("subscriber %d: last document_data = %s, want the stored %s", i, got, want)
		}
		s.quiet(500 * time.Millisecond)
	}
	t.Logf("%d writes by %d writers in %v (%.0f/s); on %s the bus dropped %d and delayed %d; gap fills %d",
		writes, writers, writeTime.Round(time.Millisecond), writes/writeTime.Seconds(), b.Name,
		dropped.Load(), delayed.Load(), metric(t, b, "chorus_gap_fills_total"))
	if dropped.Load() == 0 || delayed.Load() == 0 {
		t.Fatalf("fault injection dropped %d and delayed %d events, want both > 0", dropped.Load(), delayed.Load())
	}
	if st := b.Bus.Stats(); st.FaultDropped != uint64(dropped.Load()) {
		t.Errorf("Bus.Stats().FaultDropped = %d, want %d", st.FaultDropped, dropped.Load())
	}
	if got := metric(t, b, "chorus_gap_fills_total"); got == 0 {
		t.Errorf("chorus_gap_fills_total on %s = 0, want > 0 (events were dropped)", b.Name)
	}
	if got := metric(t, b, "chorus_gap_skips_total"); got != 0 {
		t.Errorf("chorus_gap_skips_total on %s = %d, want 0", b.Name, got)
	}
}

// removals counts the removal events in the store log of each object.
func removals(t testing.TB, n *Node, sids []string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := make(map[string]int, len(sids))
	for _, sid := range sids {
		var evs []*chorus.Event
		err := n.Server.Engine().Store().View(ctx, func(tx chorus.ReadTx) (err error) {
			evs, err = tx.Events(ctx, sid, 0, 1000)
			return err
		})
		if err != nil {
			t.Fatalf("Events(%s) on %s: %v", sid, n.Name, err)
		}
		for _, e := range evs {
			if e.Type.Removal() {
				out[sid]++
			}
		}
	}
	return out
}

// createExpiring creates count documents with a TTL of 1s through n.
func createExpiring(t testing.TB, n *Node, count int) []string {
	t.Helper()
	sids := make([]string, count)
	for i := range sids {
		sids[i] = sidOf(t, mustREST(t, n, "POST", "/Documents", url.Values{"Data": {`{}`}, "Ttl": {"1"}}, http.StatusCreated))
	}
	return sids
}

// waitSwept waits until every object has a removal event in the log, then
// one more sweep period, and checks that each has exactly one.
func waitSwept(t testing.TB, n *Node, sids []string) {
	t.Helper()
	const sweepEvery = 5 * time.Second // engine.Config.SweepInterval default
	deadline := time.Now().Add(3*sweepEvery + 2*time.Second)
	for {
		got := removals(t, n, sids)
		if len(got) == len(sids) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %d of %d expired documents have a removal event", 3*sweepEvery, len(got), len(sids))
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(sweepEvery + time.Second) // every node has had its turn
	for sid, k := range removals(t, n, sids) {
		if k != 1 {
			t.Errorf("document %s has %d removal events in the log, want exactly 1", sid, k)
		}
	}
	for _, sid := range sids {
		mustREST(t, n, "GET", "/Documents/"+sid, nil, http.StatusNotFound)
	}
}

// leader waits until exactly one running node is the cluster leader.
func leader(t testing.TB, c *Cluster) *Node {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var leaders []*Node
		for _, n := range c.Nodes {
			if n.Running() && n.Leader(context.Background()) {
				leaders = append(leaders, n)
			}
		}
		if len(leaders) > 1 {
			t.Fatalf("%d nodes are leader at once, want 1", len(leaders))
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader among the running nodes after 15s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBackgroundWorkOncePerCluster: expired documents are swept by one
// node of the three, so each gets exactly one removal event; when the
// leader stops, another node takes the sweeping over.
func TestBackgroundWorkOncePerCluster(t *testing.T) {
	c := NewCluster(t, Config{Nodes: 3})
	first := createExpiring(t, c.Nodes[0], 6)
	waitSwept(t, c.Nodes[1], first)

	old := leader(t, c)
	if err := old.Stop(); err != nil {
		t.Fatalf("stop leader %s: %v", old.Name, err)
	}
	var survivor *Node
	for _, n := range c.Nodes {
		if n.Running() {
			survivor = n
			break
		}
	}
	second := createExpiring(t, survivor, 6)
	waitSwept(t, survivor, second)
	next := leader(t, c)
	if next == old {
		t.Fatalf("leader after stopping %s is still %s", old.Name, next.Name)
	}
	t.Logf("leader %s stopped; %s took over the sweeping", old.Name, next.Name)
}

// TestWrongBusPrefixIsReported: a node started with another --bus-prefix
// shares the database but not the events. Every node reports it, as an
// error naming the nodes it does not hear and in
// chorus_cluster_nodes_unheard, while the nodes that share the bus count
// each other as heard; once the odd node stops, nothing is unheard.
func TestWrongBusPrefixIsReported(t *testing.T) {
	other := "chorus_st_" + randomHex(6)
	c := NewCluster(t, Config{
		Nodes: 3,
		BusOptions: func(i int) []natsbus.Option {
			opts := []natsbus.Option{natsbus.WithHelloInterval(100 * time.Millisecond)}
			if i == 2 {
				opts = append(opts, natsbus.WithPrefix(other))
			}
			return opts
		},
		Webhooks: webhook.Config{Heartbeat: 200 * time.Millisecond},
	})
	want := []uint64{1, 1, 2} // n0 and n1 miss n2; n2 misses both
	nodes := c.Nodes
	unheard := func() []uint64 {
		got := make([]uint64, len(nodes))
		for i, n := range nodes {
			got[i] = metric(t, n, "chorus_cluster_nodes_unheard")
		}
		return got
	}
	deadline := time.Now().Add(20 * time.Second)
	for got := unheard(); !slices.Equal(got, want); got = unheard() {
		if time.Now().After(deadline) {
			t.Fatalf("chorus_cluster_nodes_unheard of n0, n1, n2 = %v, want %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := strings.Count(c.Logs(), "is not heard on its bus"); n != 4 {
		t.Errorf("%d reports of an unheard node, want 4 (n0 and n1 of n2, n2 of each):\n%s", n, c.Logs())
	}
	// They stay at that: nothing flaps while the nodes run.
	time.Sleep(time.Second)
	if got := unheard(); !slices.Equal(got, want) {
		t.Errorf("a second later: unheard = %v, want %v", got, want)
	}
	if err := c.Nodes[2].Stop(); err != nil {
		t.Fatal(err)
	}
	nodes = c.Nodes[:2]
	deadline = time.Now().Add(20 * time.Second)
	for got := unheard(); !slices.Equal(got, []uint64{0, 0}); got = unheard() {
		if time.Now().After(deadline) {
			t.Fatalf("after the odd node stopped: unheard of n0, n1 = %v, want 0, 0", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
