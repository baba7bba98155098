package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/protocol"
)

func docSub(sid string, last any) map[string]any {
	return map[string]any{"object_sid": sid, "object_type": "document", "last_event_id": last}
}

// establish subscribes and waits for subscription_established.
func (c *tclient) establish(corr int64, sub map[string]any) *note {
	c.t.Helper()
	r := c.subscribe("establish", corr, sub)
	m := wantStatus(c.t, "establish", r, 200, 0)
	if num(m["estimated_delivery_in_ms"]) <= 0 {
		c.t.Fatalf("estimated_delivery_in_ms = %v, want > 0", m["estimated_delivery_in_ms"])
	}
	n := c.nextOf("subscription_established", 5*time.Second)
	if string(n.Correlation) != fmt.Sprint(corr) {
		c.t.Fatalf("subscription_established correlation_id = %s, want %d", n.Correlation, corr)
	}
	return n
}

func TestSubscribeLiveAndReplay(t *testing.T) {
	e := newEnv(t)
	a, b := e.session("alice"), e.session("bob")
	doc := wantStatus(t, "create", a.do("POST", "/v3/Documents", nil, map[string]any{"unique_name": "d", "data": map[string]any{"n": 0}}), 201, 0)
	sid, url := doc["sid"].(string), doc["url"].(string)
	start := num(doc["last_event_id"])

	est := b.establish(1795897931583, docSub(sid, start))
	var evs []map[string]any
	json.Unmarshal(est.Events, &evs)
	if len(evs) != 1 || evs[0]["replay_status"] != "completed" || evs[0]["object_sid"] != sid || num(evs[0]["last_event_id"]) != start {
		t.Fatalf("subscription_established events = %s", est.Events)
	}

	// Live: the writer gets its reply, both get the event.
	a.establish(2, docSub(sid, start))
	up := wantStatus(t, "update", a.do("POST", url, nil, map[string]any{"data": map[string]any{"n": 1}}), 200, 0)
	id1 := num(up["last_event_id"])
	n := b.nextOf("document_updated", 5*time.Second)
	ev := n.event()
	if n.MessageType != protocol.MessageTypeDocument || n.id() != id1 || ev["document_sid"] != sid ||
		ev["document_revision"] != up["revision"] || ev["document_unique_name"] != "d" {
		t.Fatalf("live event = %s %s, want id %d revision %v", n.MessageType, n.Event, id1, up["revision"])
	}
	if d, _ := json.Marshal(ev["document_data"]); string(d) != `{"n":1}` {
		t.Errorf("document_data = %s", d)
	}
	if !strings.HasSuffix(ev["date_created"].(string), "Z") || len(ev["date_created"].(string)) != len("2026-01-05T10:00:00.123Z") {
		t.Errorf("date_created = %v, want ms ISO", ev["date_created"])
	}

	// B drops; A writes twice; B comes back at its position and gets both,
	// as twilio.sync.event with the new correlation id, then established.
	b.ws.CloseNow()
	wantStatus(t, "update 2", a.do("POST", url, nil, map[string]any{"data": map[string]any{"n": 2}}), 200, 0)
	up3 := wantStatus(t, "update 3", a.do("POST", url, nil, map[string]any{"data": map[string]any{"n": 3}}), 200, 0)
	b2 := e.session("bob")
	wantStatus(t, "re-establish", b2.subscribe("establish", 77, docSub(sid, id1)), 200, 0)
	var ids []int64
	for {
		n := b2.next(5 * time.Second)
		if n.EventType == "subscription_established" {
			json.Unmarshal(n.Events, &evs)
			if num(evs[0]["last_event_id"]) != num(up3["last_event_id"]) {
				t.Errorf("established last_event_id = %v, want %v", evs[0]["last_event_id"], up3["last_event_id"])
			}
			break
		}
		if n.EventType != "document_updated" || n.MessageType != protocol.MessageTypeSyncEvent || string(n.Correlation) != "77" {
			t.Fatalf("replay = %s %s corr %s", n.MessageType, n.EventType, n.Correlation)
		}
		ids = append(ids, n.id())
	}
	if len(ids) != 2 || ids[0] != id1+1 || ids[1] != id1+2 {
		t.Fatalf("replayed ids = %v, want [%d %d]", ids, id1+1, id1+2)
	}

	// Re-establishing is idempotent: nothing is re-sent.
	b2.establish(78, docSub(sid, id1))
	wantStatus(t, "update 4", a.do("POST", url, nil, map[string]any{"data": map[string]any{"n": 4}}), 200, 0)
	if n := b2.nextOf("document_updated", 5*time.Second); n.id() != id1+3 {
		t.Errorf("after re-establish got id %d, want %d", n.id(), id1+3)
	}

	// Cancel: reply, subscription_canceled, then silence.
	wantStatus(t, "cancel", b2.subscribe("cancel", 79, map[string]any{"object_sid": sid, "object_type": "document"}), 200, 0)
	if n := b2.nextOf("subscription_canceled", 5*time.Second); string(n.Correlation) != "79" {
		t.Errorf("subscription_canceled correlation = %s", n.Correlation)
	}
	wantStatus(t, "update 5", a.do("POST", url, nil, map[string]any{"data": map[string]any{"n": 5}}), 200, 0)
	a.nextOf("document_updated", 5*time.Second) // id1+3 on a
	a.nextOf("document_updated", 5*time.Second) // id1+4 on a: delivered by now
	select {
	case n := <-b2.notes:
		t.Errorf("after cancel got %s %s", n.EventType, n.Event)
	case <-time.After(200 * time.Millisecond):
	}

	// Removal reaches subscribers and ends their subscriptions.
	before := e.gw.Stats().Subscriptions
	wantStatus(t, "delete", b2.do("DELETE", url, nil, []byte("data_sync")), 200, 0)
	if n := a.nextOf("document_removed", 5*time.Second); n.event()["document_sid"] != sid {
		t.Errorf("document_removed = %s", n.Event)
	}
	waitFor(t, func() bool { return e.gw.Stats().Subscriptions < before })

	// Subscribing to a deleted document fails with 404.
	wantStatus(t, "establish deleted", b2.subscribe("establish", 80, docSub(sid, 0)), 200, 0)
	n = b2.nextOf("subscription_failed", 5*time.Second)
	json.Unmarshal(n.Events, &evs)
	if len(evs) != 1 || num(evs[0]["error"].(map[string]any)["status"]) != 404 || string(n.Correlation) != "80" {
		t.Errorf("subscription_failed = %s corr %s", n.Events, n.Correlation)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReplyBeforeEvent(t *testing.T) {
	e := newEnv(t)
	c := e.session("alice")
	doc := wantStatus(t, "create", c.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	c.establish(1, docSub(doc["sid"].(string), num(doc["last_event_id"])))
	for i := 0; i < 20; i++ {
		wantStatus(t, "update", c.do("POST", doc["url"].(string), nil, map[string]any{"data": map[string]any{"i": i}}), 200, 0)
		replySeq := c.lastReplySeq.Load()
		if n := c.nextOf("document_updated", 5*time.Second); n.seq < replySeq {
			t.Fatalf("update %d: event read as frame %d, before its reply (frame %d)", i, n.seq, replySeq)
		}
	}
}

func TestOrderingUnderConcurrency(t *testing.T) {
	const writers, writes, subscribers = 8, 100, 5
	e := newEnv(t)
	ctx := context.Background()
	c0 := e.session("alice")
	doc := wantStatus(t, "create", c0.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	sid := doc["sid"].(string)
	start := num(doc["last_event_id"])
	subs := make([]*tclient, subscribers)
	for i := range subs {
		subs[i] = e.session(fmt.Sprint("sub", i))
		subs[i].establish(int64(i+1), docSub(sid, start))
	}
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < writes; i++ {
				_, err := e.eng.UpdateObject(ctx, engine.SystemActor(), e.svc, chorus.KindDocument, sid,
					engine.UpdateObject{Data: json.RawMessage(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))})
				if err != nil {
					t.Errorf("UpdateObject: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i, c := range subs {
		want := start + 1
		for want <= start+writers*writes {
			n := c.next(10 * time.Second)
			if n.EventType != "document_updated" {
				continue
			}
			if got := n.id(); got != want {
				t.Fatalf("subscriber %d: event id %d, want %d (strictly increasing, no gaps)", i, got, want)
			}
			want++
		}
	}
	t.Logf("stats: %+v", e.gw.Stats())
}

// slowFixture is a document with one subscriber that keeps up (fast) and
// some that never read, whose events are published straight on the bus
// (the fan-out path without the store) in bursts of 15 KB events.
type slowFixture struct {
	e         *env
	sid       string
	fast      *tclient
	start, id int64 // the document's first event; the last published
	base      int64 // fast's notifications before the first burst
	data      json.RawMessage
}

func newSlowFixture(t *testing.T, e *env, slowOnes int) *slowFixture {
	t.Helper()
	a := e.session("alice")
	doc := wantStatus(t, "create", a.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	f := &slowFixture{e: e, sid: doc["sid"].(string), start: num(doc["last_event_id"])}
	f.id = f.start
	f.fast = e.session("fast")
	f.fast.establish(1, docSub(f.sid, f.start))
	f.fast.mu.Lock()
	f.fast.keep = false
	f.fast.mu.Unlock()
	for i := range slowOnes {
		neverReading(e, e.token(fmt.Sprint("slow", i), time.Hour), f.sid, f.start)
	}
	f.base = f.fast.count.Load()
	f.data = json.RawMessage(`{"pad":"` + strings.Repeat("x", 15000) + `"}`)
	return f
}

// burst publishes n events and waits for the fast subscriber to have them
// all.
func (f *slowFixture) burst(t *testing.T, n int) {
	t.Helper()
	for range n {
		f.id++
		f.e.bus.Publish(context.Background(), &chorus.Event{Type: chorus.EventDocumentUpdated, ID: f.id, ObjectSID: f.sid, ServiceSID: f.e.svc.SID,
			Kind: chorus.KindDocument, Revision: "1", Data: f.data, DateCreated: time.Now()})
	}
	want := f.base + f.id - f.start
	for deadline := time.Now().Add(5 * time.Second); f.fast.count.Load() < want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("fast subscriber has %d notifications, want %d; stats %+v", f.fast.count.Load(), want, f.e.gw.Stats())
		}
	}
}

func TestSlowConsumer(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) {
		c.SendQueueFrames = 64
		c.SendQueueBytes = 1 << 20
		c.WriteTimeout = 2 * time.Second
	}))
	f := newSlowFixture(t, e, 1)
	for e.gw.Stats().SlowConsumers == 0 && f.id < f.start+5000 {
		f.burst(t, 16) // bursts the fast subscriber can absorb
	}
	if st := e.gw.Stats(); st.SlowConsumers != 1 {
		t.Fatalf("slow consumers = %d after %d events, want 1", st.SlowConsumers, f.id-f.start)
	}
	f.burst(t, 1) // the fast subscriber keeps receiving
	waitFor(t, func() bool { return e.gw.Stats().Connections == 2 })
	t.Logf("slow consumer closed after %d events of %d bytes", f.id-f.start, len(f.data))
}

// TestSendQueueBudget: the sessions of a node together hold at most
// about SendQueueBudget: past it, a session that holds something and
// would queue more than 64 KiB is closed as a slow consumer, long before
// its own 8 MiB; one that keeps up goes on, and what the closed sessions
// held is counted back. Before, each of up to 1,000 sessions of one
// identity could hold its 8 MiB (a tester's 300 sessions that never read
// took 4 GB).
func TestSendQueueBudget(t *testing.T) {
	for _, pool := range []bool{false, true} {
		t.Run(fmt.Sprintf("pool=%v", pool), func(t *testing.T) { testSendQueueBudget(t, pool) })
	}
}

// testSendQueueBudget is TestSendQueueBudget with the session writer
// goroutines or the writer pool (as serve runs).
func testSendQueueBudget(t *testing.T, pool bool) {
	const budget, slowOnes = 512 << 10, 4
	e := newEnv(t, withConfig(func(c *Config) {
		c.SendQueueBytes = 8 << 20
		c.SendQueueBudget = budget
		c.WriteTimeout = 2 * time.Second
		c.WriterPool = pool
	}))
	f := newSlowFixture(t, e, slowOnes)
	var most int64
	for e.gw.Stats().SlowConsumers < slowOnes && f.id < f.start+2000 {
		f.burst(t, 2) // a burst the fast subscriber holds well under 64 KiB of
		most = max(most, e.gw.Stats().QueuedBytes)
	}
	st := e.gw.Stats()
	if st.SlowConsumers != slowOnes {
		t.Fatalf("slow consumers = %d after %d events of 15 KB, want the %d that never read", st.SlowConsumers, f.id-f.start, slowOnes)
	}
	// The budget, and what each session may hold past it with one frame.
	if limit := int64(budget + (slowOnes+1)*(64<<10+16<<10)); most > limit {
		t.Errorf("the sessions held %d bytes at most, want at most %d", most, limit)
	}
	waitFor(t, func() bool { return e.gw.Stats().Connections == 2 })
	waitFor(t, func() bool { return e.gw.Stats().QueuedBytes == 0 }) // all written, or given back
	t.Logf("%d sessions that never read closed after %d events; %d bytes queued at most", slowOnes, f.id-f.start, most)
}

// TestIdentityShareOfTheBudget: the sessions of one identity that never
// read, and fill the node's send-queue budget alone, are closed an eighth
// past it at the latest (heavyHeadroom), long before their own 8 MiB
// each, and the node is back under its budget once they are gone: her
// sessions are refused there whether they count as stuck yet or not.
func TestIdentityShareOfTheBudget(t *testing.T) {
	const budget, mallorys = 16 << 20, 8 // mallory's share: 2 MiB past 64 KiB each
	e := newEnv(t, withConfig(func(c *Config) {
		c.SendQueueBytes = 8 << 20
		c.SendQueueBudget = budget
		c.WriteTimeout = time.Minute // sessions are closed by the budget alone
		c.WriterPool = true
	}))
	f := newSlowFixture(t, e, 0)
	mallory := e.token("mallory", time.Hour)
	for range mallorys {
		neverReading(e, mallory, f.sid, f.start)
	}
	var most, node int64
	for e.gw.Stats().SlowConsumers < mallorys-1 && f.id < f.start+2000 {
		f.burst(t, 1)
		most = max(most, heldBy(e.gw, "mallory"))
		node = max(node, e.gw.Stats().QueuedBytes)
	}
	if st := e.gw.Stats(); st.SlowConsumers < mallorys-1 {
		t.Fatalf("slow consumers = %d after %d events of 15 KB, want at least %d of mallory's %d", st.SlowConsumers, f.id-f.start, mallorys-1, mallorys)
	}
	// An eighth past the budget, and what each session may hold past it:
	// 64 KiB and the frame that took it over.
	if limit := int64(budget + budget/8 + mallorys*(budgetShare+16<<10)); most > limit {
		t.Errorf("mallory's sessions held %d bytes at most, want at most %d (the node held %d of its %d)", most, limit, node, budget)
	}
	waitFor(t, func() bool { return e.gw.Stats().QueuedBytes <= budget })
	t.Logf("%d of mallory's sessions closed after %d events; she held %d bytes at most, the node %d", e.gw.Stats().SlowConsumers, f.id-f.start, most, node)
}

// TestIdentityShareProtectsOthers: with the node's budget full of one
// identity's bytes, that identity's queues, stuck, are refused past
// 64 KiB while another identity's queue still takes what it is sent, far
// past 64 KiB, stuck or not; only past the backstop, a quarter more than
// the budget, is every queue held to 64 KiB again. Before, the first
// filled the budget and the second, one user falling a little behind, was
// closed once it held 64 KiB.
func TestIdentityShareProtectsOthers(t *testing.T) {
	b := &queueBudget{max: 8 << 20, perIdentity: identityShareOf(8 << 20)}
	var mallory, bob atomic.Int64
	frame := make([]byte, 15<<10)
	var hers []*sendQueue
	var held int64
	for range 8 {
		q := newSendQueue(1<<20, 8<<20)
		q.budget = b
		q.chargeIdentity(&mallory)
		q.push(frame)
		held += int64(len(frame))
		q.look(monoNow() - staleAfter) // stuck for a second now
		hers = append(hers, q)
	}
	for refused := 0; refused < len(hers); {
		refused = 0
		for _, q := range hers {
			if q.overflow {
				refused++
			} else if q.push(frame) {
				held += int64(len(frame))
			}
		}
	}
	if limit := b.max + 8*(budgetShare+int64(len(frame))); held > limit {
		t.Errorf("mallory's queues took %d bytes, want at most %d: the budget and what each may hold past it", held, limit)
	}
	q := newSendQueue(1<<20, 8<<20)
	q.budget = b
	q.chargeIdentity(&bob)
	for i := range 60 { // 900 KiB: under bob's own share
		if i == 30 {
			q.look(monoNow() - staleAfter) // bob stops reading too
		}
		if !q.push(frame) {
			t.Fatalf("bob's queue was refused its frame %d (%d bytes held) with mallory holding %d of the node's %d",
				i, i*len(frame), held, b.max)
		}
	}
	// Others, each under their share, fill the room up to the backstop:
	// past it, every queue is held to 64 KiB.
	var others []*sendQueue
	for i := 0; ; i++ {
		o := newSendQueue(1<<20, 8<<20)
		o.budget = b
		o.chargeIdentity(new(atomic.Int64))
		others = append(others, o)
		for o.push(frame) {
		}
		if used := b.used.Load(); used > b.backstop() {
			break
		}
		if i > 100 {
			t.Fatalf("the node holds %d bytes, its backstop %d: nothing is refused", b.used.Load(), b.backstop())
		}
	}
	if !q.push(make([]byte, 1)) && q.overflow {
		// bob holds 900 KiB past the backstop: refused, as everyone.
	} else {
		t.Errorf("bob's queue took more with the node at %d bytes, past its backstop %d", b.used.Load(), b.backstop())
	}
	// The last queue crossed it: it may hold 64 KiB and a frame past it.
	if limit := b.backstop() + budgetShare + int64(len(frame)); b.used.Load() > limit {
		t.Errorf("the node holds %d bytes, want at most %d: the backstop and what the last queue may hold past it", b.used.Load(), limit)
	}
	for _, q := range append(append(hers, q), others...) {
		q.discard()
	}
	if b.used.Load() != 0 || mallory.Load() != 0 || bob.Load() != 0 {
		t.Errorf("after every queue was discarded: node %d, mallory %d, bob %d; want 0", b.used.Load(), mallory.Load(), bob.Load())
	}
}

// TestIdentityShareKeepsOthersPastTheBudget: with real sessions. Mallory's
// sessions that never read hold nearly the whole send-queue budget; bob,
// who pauses reading, then takes the node past the budget with his own
// backlog of several hundred KB, and is not closed: his identity holds
// less than its share. The budget's watcher closes mallory's stuck
// sessions instead, until the node is back under its budget, and bob
// reads on and gets every event in order. Under the rule before 5616248,
// any session past 64 KiB was closed once the node was past its budget;
// under 5616248's, mallory's idle sessions kept the budget full.
func TestIdentityShareKeepsOthersPastTheBudget(t *testing.T) {
	const budget, mallorys = 8 << 20, 8
	e := newEnv(t, withConfig(func(c *Config) {
		c.SendQueueBytes = 8 << 20
		c.SendQueueBudget = budget
		c.WriteTimeout = time.Minute // sessions are closed by the budget alone
		c.WriterPool = true
	}))
	a := e.session("alice")
	newDoc := func() (string, int64) {
		doc := wantStatus(t, "create", a.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
		return doc["sid"].(string), num(doc["last_event_id"])
	}
	hers, herStart := newDoc()
	his, hisStart := newDoc()
	mallory := e.token("mallory", time.Hour)
	for range mallorys {
		m := neverReading(e, mallory, hers, herStart)
		defer m.ws.CloseNow() // her writers are blocked for a minute otherwise
	}
	// Bob's socket buffers are the system's: a 4 KiB window would take
	// minutes to read his backlog through.
	bob := e.dialWith(context.Background(), dialOptions{notes: 16})
	bob.mustInit(e.token("bob", time.Hour))
	bob.establish(3, docSub(his, hisStart))
	stopReading(bob) // bob pauses; he reads on below
	pad := json.RawMessage(`{"pad":"` + strings.Repeat("x", 15000) + `"}`)
	publish := func(sid string, id int64) {
		e.bus.Publish(context.Background(), &chorus.Event{Type: chorus.EventDocumentUpdated, ID: id, ObjectSID: sid, ServiceSID: e.svc.SID,
			Kind: chorus.KindDocument, Revision: "1", Data: pad, DateCreated: time.Now()})
	}
	// Mallory fills 96 % of the budget (her sessions' socket buffers
	// first), one event of 8 × 15 KB at a time, without crossing it.
	herID := herStart
	for e.gw.Stats().QueuedBytes < budget*96/100 {
		if herID-herStart > 3000 {
			t.Fatalf("mallory's sessions hold %d bytes after %d events", e.gw.Stats().QueuedBytes, herID-herStart)
		}
		herID++
		publish(hers, herID)
		time.Sleep(time.Millisecond)
	}
	if n := e.gw.Stats().SlowConsumers; n != 0 {
		t.Fatalf("%d sessions closed while mallory filled the budget's first 96 %%", n)
	}
	// Bob's backlog takes the node past the budget.
	hisID := hisStart
	var node, bobs int64
	for bobs < 600<<10 && hisID-hisStart < 3000 && e.gw.Stats().SlowConsumers == 0 {
		hisID++
		publish(his, hisID)
		time.Sleep(time.Millisecond)
		node, bobs = max(node, e.gw.Stats().QueuedBytes), max(bobs, heldBy(e.gw, "bob"))
	}
	if node <= budget || bobs <= budgetShare {
		t.Fatalf("the node held %d bytes at most and bob %d: not past the budget and 64 KiB, so this proves nothing", node, bobs)
	}
	// The watcher closes mallory's sessions, stuck for a second, until
	// the node is back under its budget.
	for deadline := time.Now().Add(10 * time.Second); e.gw.Stats().QueuedBytes > budget; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the node still holds %d bytes of its %d budget, mallory %d, 10 s after bob took it past", e.gw.Stats().QueuedBytes, budget, heldBy(e.gw, "mallory"))
		}
	}
	if n := openSessions(e.gw, "bob"); n != 1 {
		t.Fatalf("bob's session was closed when he held %d bytes and the node %d of its %d: his identity holds less than its share", bobs, node, budget)
	}
	if n, closed := openSessions(e.gw, "mallory"), e.gw.Stats().BudgetClosed; n == mallorys || closed == 0 {
		t.Fatalf("mallory keeps %d of her %d sessions, %d closed by the budget's watcher", n, mallorys, closed)
	}
	for range cap(bob.notes) {
		<-bob.notes // the placeholders: bob reads on
	}
	for want := hisStart + 1; want <= hisID; {
		n := bob.next(20 * time.Second)
		if n.EventType != "document_updated" {
			continue
		}
		if n.id() != want {
			t.Fatalf("bob got event %d, want %d", n.id(), want)
		}
		want++
	}
	t.Logf("bob held %d bytes with the node at %d of its %d budget, and got his %d events; the watcher closed %d of mallory's sessions",
		bobs, node, budget, hisID-hisStart, e.gw.Stats().BudgetClosed)
}

// TestBurstPastTheBudgetKeepsReaders: an idle identity's sessions that
// never read hold 78 % of the budget when a burst of 8 events of 60 KB
// reaches the 20 sessions of a shared identity, which pause reading for
// a moment: it then holds far more than its share (an eighth of the
// budget) past the budget, and none of its sessions is closed: none is
// stuck, and the node stays under an eighth past the budget. A reviewer
// found that under the rule before, such a burst past the budget closed
// all of them (TestIdentityShareKeepsOthersPastTheBudget has the watcher
// close the idle sessions when the node stays past the budget).
func TestBurstPastTheBudgetKeepsReaders(t *testing.T) {
	const budget, mallorys, guests, events = 32 << 20, 8, 20, 8
	e := newEnv(t, withConfig(func(c *Config) {
		c.SendQueueBytes = 8 << 20
		c.SendQueueBudget = budget
		c.WriteTimeout = time.Minute // sessions are closed by the budget alone
		c.WriterPool = true
		c.MaxSessionsPerIdentity = 0
	}), withSmallSendBuffers())
	a := e.session("alice")
	newDoc := func() (string, int64) {
		doc := wantStatus(t, "create", a.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
		return doc["sid"].(string), num(doc["last_event_id"])
	}
	hers, herID := newDoc()
	shared, start := newDoc()
	mallory := e.token("mallory", time.Hour)
	for range mallorys {
		m := neverReading(e, mallory, hers, herID)
		defer m.ws.CloseNow() // her writers are blocked for a minute otherwise
	}
	guest := e.token("guest", time.Hour)
	var paused []*tclient
	for range guests {
		c := e.dialWith(context.Background(), dialOptions{smallReadBuffer: true, notes: 16})
		c.mustInit(guest)
		c.establish(1, docSub(shared, start))
		stopReading(c) // for a moment, below
		paused = append(paused, c)
	}
	publish := func(sid string, id int64, data json.RawMessage) {
		e.bus.Publish(context.Background(), &chorus.Event{Type: chorus.EventDocumentUpdated, ID: id, ObjectSID: sid, ServiceSID: e.svc.SID,
			Kind: chorus.KindDocument, Revision: "1", Data: data, DateCreated: time.Now()})
	}
	pad := json.RawMessage(`{"pad":"` + strings.Repeat("x", 15000) + `"}`)
	for start := herID; e.gw.Stats().QueuedBytes < budget*78/100; time.Sleep(time.Millisecond) {
		if herID-start > 5000 {
			t.Fatalf("mallory's sessions hold %d bytes after %d events", e.gw.Stats().QueuedBytes, herID-start)
		}
		herID++
		publish(hers, herID, pad)
	}
	time.Sleep(time.Duration(staleAfter) + 2*watchEvery) // mallory's sessions are stuck now
	data := json.RawMessage(`{"pad":"` + strings.Repeat("x", 60000) + `"}`)
	id := start
	for range events {
		id++
		publish(shared, id, data)
	}
	var most, guestMost int64
	for range 10 { // 100 ms: the guests, paused, stay under staleAfter
		most, guestMost = max(most, e.gw.Stats().QueuedBytes), max(guestMost, heldBy(e.gw, "guest"))
		time.Sleep(10 * time.Millisecond)
	}
	if n := openSessions(e.gw, "guest"); n != guests {
		t.Fatalf("%d of the %d guest sessions were closed; they held %d bytes at most, the node %d of its %d budget", guests-n, guests, guestMost, most, budget)
	}
	if most <= budget || guestMost-guests*budgetShare <= budget/8 {
		t.Fatalf("the node held %d bytes at most and the guests %d: not past the budget and the guests' share, so this proves nothing", most, guestMost)
	}
	for _, c := range paused {
		c.ws.CloseNow()
	}
	t.Logf("the guests held %d bytes at most, the node %d of its %d budget; none was closed", guestMost, most, budget)
}

// TestBudgetClosesTheLargestStaleHolder: two identities whose sessions
// never read take the node just past its budget, both holding more than
// their share: the watcher closes the one session of the larger holder
// that brings the node back under the budget, and nothing of the smaller.
func TestBudgetClosesTheLargestStaleHolder(t *testing.T) {
	const budget, mallorys, trudys = 8 << 20, 6, 2
	e := newEnv(t, withConfig(func(c *Config) {
		c.SendQueueBytes = 8 << 20
		c.SendQueueBudget = budget
		c.WriteTimeout = time.Minute // sessions are closed by the budget alone
		c.WriterPool = true
	}), withSmallSendBuffers())
	a := e.session("alice")
	newDoc := func() (string, int64) {
		doc := wantStatus(t, "create", a.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
		return doc["sid"].(string), num(doc["last_event_id"])
	}
	hers, herID := newDoc()
	his, hisID := newDoc()
	for range mallorys {
		defer neverReading(e, e.token("mallory", time.Hour), hers, herID).ws.CloseNow()
	}
	for range trudys {
		defer neverReading(e, e.token("trudy", time.Hour), his, hisID).ws.CloseNow()
	}
	pad := json.RawMessage(`{"pad":"` + strings.Repeat("x", 15000) + `"}`)
	publish := func(sid string, id int64) {
		e.bus.Publish(context.Background(), &chorus.Event{Type: chorus.EventDocumentUpdated, ID: id, ObjectSID: sid, ServiceSID: e.svc.SID,
			Kind: chorus.KindDocument, Revision: "1", Data: pad, DateCreated: time.Now()})
	}
	// Trudy's sessions fill first, under half the budget, so that the
	// watcher, which looks from half the budget on, sees both identities'
	// sessions stuck from the same pass on.
	filled := time.Now()
	for heldBy(e.gw, "trudy") < 2_600_000 {
		hisID++
		publish(his, hisID)
	}
	for e.gw.Stats().QueuedBytes < budget+200_000 {
		herID++
		publish(hers, herID)
	}
	if took := time.Since(filled); took > time.Duration(staleAfter)/2 {
		t.Fatalf("filling took %v: the watcher may have held the sessions as stuck meanwhile", took)
	}
	mallorySome, trudySome := heldBy(e.gw, "mallory"), heldBy(e.gw, "trudy")
	if n := e.gw.Stats().SlowConsumers; n != 0 || trudySome-trudys*budgetShare <= budget/8 {
		t.Fatalf("%d sessions closed, trudy holds %d: want none closed yet, and trudy past her share", n, trudySome)
	}
	waitFor(t, func() bool { return e.gw.Stats().QueuedBytes <= budget })
	if m, tr := openSessions(e.gw, "mallory"), openSessions(e.gw, "trudy"); m != mallorys-1 || tr != trudys {
		t.Fatalf("mallory (who held %d) keeps %d of her %d sessions, trudy (%d) %d of his %d: want mallory to lose one, trudy none",
			mallorySome, m, mallorys, trudySome, tr, trudys)
	}
	if n := e.gw.Stats().BudgetClosed; n != 1 {
		t.Errorf("the watcher closed %d sessions, want 1", n)
	}
}

// openSessions returns the sessions of identity that have not ended.
func openSessions(g *Gateway, identity string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for c := range g.conns {
		if c.session != nil && c.session.identity == identity && c.ctx.Err() == nil {
			n++
		}
	}
	return n
}

// TestSharedIdentityBurst: a burst of events to the many sessions of one
// identity that all read closes none of them, though each holds more than
// 64 KiB until the writers get round to it: under the budget no identity
// is held. A reviewer found that with the share always enforced, 300 such
// sessions sent 8 events of 60 KB at once were all closed, the node
// holding 87 MB of its 512 MiB.
func TestSharedIdentityBurst(t *testing.T) {
	const sessions, events = 300, 8
	e := newEnv(t, withConfig(func(c *Config) {
		c.WriterPool = true // as serve runs
		c.MaxSessionsPerIdentity = 0
	}))
	a := e.session("alice")
	doc := wantStatus(t, "create", a.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	sid, start := doc["sid"].(string), num(doc["last_event_id"])
	guest := e.token("guest", time.Hour)
	got := make([]atomic.Int64, sessions) // events each session read
	for i := range sessions {
		c := e.dialWith(context.Background(), dialOptions{notes: 16})
		c.mustInit(guest)
		c.establish(1, docSub(sid, start))
		c.mu.Lock()
		c.keep, c.counter = false, &got[i] // count only
		c.mu.Unlock()
	}
	data := json.RawMessage(`{"pad":"` + strings.Repeat("x", 60000) + `"}`)
	var most int64
	for i := range events {
		e.bus.Publish(context.Background(), &chorus.Event{Type: chorus.EventDocumentUpdated, ID: start + int64(i) + 1, ObjectSID: sid,
			ServiceSID: e.svc.SID, Kind: chorus.KindDocument, Revision: "1", Data: data, DateCreated: time.Now()})
		most = max(most, e.gw.Stats().QueuedBytes)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		most = max(most, e.gw.Stats().QueuedBytes)
		behind := 0
		for i := range got {
			if got[i].Load() < events {
				behind++
			}
		}
		if behind == 0 || e.gw.Stats().SlowConsumers > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d sessions still behind after 60 s", behind, sessions)
		}
	}
	if n := e.gw.Stats().SlowConsumers; n != 0 {
		t.Fatalf("%d of the %d sessions that read were closed as slow consumers; the node held %d bytes at most", n, sessions, most)
	}
	t.Logf("%d sessions of one identity got %d events of 60 KB each; the node held %d bytes at most", sessions, events, most)
}

// heldBy returns the bytes that the sessions of identity hold in their
// send queues, queued or being written.
func heldBy(g *Gateway, identity string) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	var n int64
	for c := range g.conns {
		if c.session != nil && c.session.identity == identity {
			c.q.mu.Lock()
			n += int64(c.q.bytes + c.q.writing)
			c.q.mu.Unlock()
		}
	}
	return n
}

// neverReading opens a session with token, subscribed to the document
// sid from event start, that reads nothing after the subscription is
// established and acknowledges nothing: its socket buffers are small, so
// the server's queue for it fills soon.
func neverReading(e *env, token, sid string, start int64) *tclient {
	c := e.dialWith(context.Background(), dialOptions{smallReadBuffer: true})
	c.noAck = true
	c.mustInit(token)
	c.establish(2, docSub(sid, start))
	stopReading(c)
	return c
}

// stopReading makes c stop reading from its socket: its read loop blocks
// on a full notes channel.
func stopReading(c *tclient) {
	for len(c.notes) < cap(c.notes) {
		c.notes <- &note{}
	}
}

func TestSubscriptionLimit(t *testing.T) {
	e := newEnv(t)
	c := e.session("alice")
	_ = c // the session whose server-side table is filled below
	// Fill the table without objects: the limit is checked first.
	var conn *conn
	e.gw.mu.Lock()
	for cc := range e.gw.conns {
		conn = cc
	}
	e.gw.mu.Unlock()
	conn.mu.Lock()
	for i := 0; i < chorus.MaxSubscriptionsPerWS; i++ {
		conn.subs[fmt.Sprint("fake", i)] = &subscription{}
	}
	conn.mu.Unlock()
	doc := wantStatus(t, "create", c.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	wantStatus(t, "establish", c.subscribe("establish", 5, docSub(doc["sid"].(string), 0)), 200, 0)
	n := c.nextOf("subscription_failed", 5*time.Second)
	var evs []map[string]any
	json.Unmarshal(n.Events, &evs)
	if len(evs) != 1 || num(evs[0]["error"].(map[string]any)["code"]) != 54419 {
		t.Errorf("subscription_failed = %s, want 54419", n.Events)
	}
	conn.mu.Lock()
	for i := 0; i < chorus.MaxSubscriptionsPerWS; i++ {
		delete(conn.subs, fmt.Sprint("fake", i))
	}
	conn.mu.Unlock()
}

func TestCollectionEvents(t *testing.T) {
	e := newEnv(t)
	a, b := e.session("alice"), e.session("bob")
	list := wantStatus(t, "create list", a.do("POST", "/v3/Lists", nil, map[string]any{}), 201, 0)
	m := wantStatus(t, "create map", a.do("POST", "/v3/Maps", nil, map[string]any{}), 201, 0)
	b.establish(1, map[string]any{"object_sid": list["sid"], "object_type": "list", "last_event_id": num(list["last_event_id"])})
	b.establish(2, map[string]any{"object_sid": m["sid"], "object_type": "map", "last_event_id": num(m["last_event_id"])})

	pushed := wantStatus(t, "push", a.do("POST", list["links"].(map[string]any)["items"].(string), nil, map[string]any{"data": map[string]any{"n": 1}}), 201, 0)
	n := b.nextOf("list_item_added", 5*time.Second)
	ev := n.event()
	if n.MessageType != protocol.MessageTypeList || ev["list_sid"] != list["sid"] || num(ev["item_index"]) != 0 ||
		ev["item_url"] != pushed["url"] || ev["item_revision"] != pushed["revision"] || n.id() != num(pushed["last_event_id"]) {
		t.Errorf("list_item_added = %s %s, want item %v", n.MessageType, n.Event, pushed)
	}
	if _, ok := ev["list_revision"]; !ok {
		t.Errorf("list_item_added has no list_revision: %s", n.Event)
	}
	wantStatus(t, "remove item", a.do("DELETE", pushed["url"].(string), nil, []byte("data_sync")), 200, 0)
	n = b.nextOf("list_item_removed", 5*time.Second)
	if d, _ := json.Marshal(n.event()["item_data"]); string(d) != `{"n":1}` {
		t.Errorf("list_item_removed item_data = %s, want the old data", d)
	}

	key := "a b/c"
	put := wantStatus(t, "map put", a.do("PUT", m["links"].(map[string]any)["items"].(string)+"/"+encodeURIComponent(key), nil, map[string]any{"data": map[string]any{"v": 1}}), 201, 0)
	n = b.nextOf("map_item_added", 5*time.Second)
	ev = n.event()
	if n.MessageType != protocol.MessageTypeMap || ev["item_key"] != key || ev["item_url"] != put["url"] || ev["map_sid"] != m["sid"] {
		t.Errorf("map_item_added = %s, want key %q url %v", n.Event, key, put["url"])
	}
	wantStatus(t, "remove map", a.do("DELETE", m["url"].(string), nil, []byte("data_sync")), 200, 0)
	if n := b.nextOf("map_removed", 5*time.Second); n.event()["map_sid"] != m["sid"] {
		t.Errorf("map_removed = %s", n.Event)
	}
}

// TestCatchUpAcrossBatches: a subscriber whose position is older than the
// event log (trimmed, or an imported object) is caught up from current
// state, over as many replay batches as the changed items need — not only
// the first batch.
func TestCatchUpAcrossBatches(t *testing.T) {
	for _, kind := range []string{"list", "map"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, withConfig(func(c *Config) { c.ReplayBatch = 4 }))
			a, b := e.session("alice"), e.session("bob")
			coll := "/v3/Lists"
			if kind == "map" {
				coll = "/v3/Maps"
			}
			obj := wantStatus(t, "create", a.do("POST", coll, nil, map[string]any{}), 201, 0)
			start := num(obj["last_event_id"])
			items := obj["links"].(map[string]any)["items"].(string)
			const n = 19
			for i := range n {
				body := map[string]any{"data": map[string]any{"i": i}}
				if kind == "list" {
					wantStatus(t, "push", a.do("POST", items, nil, body), 201, 0)
				} else {
					wantStatus(t, "put", a.do("PUT", items+"/k"+strconv.Itoa(i), nil, body), 201, 0)
				}
			}
			ctx := context.Background()
			if err := e.st.Update(ctx, func(tx chorus.Tx) error {
				_, err := tx.TrimEvents(ctx, chorus.EventTrim{Before: time.Now().Add(time.Hour)})
				return err
			}); err != nil {
				t.Fatalf("TrimEvents: %v", err)
			}

			wantStatus(t, "establish", b.subscribe("establish", 5, map[string]any{
				"object_sid": obj["sid"], "object_type": kind, "last_event_id": start}), 200, 0)
			seen := map[float64]bool{}
			var last int64
			for {
				nt := b.next(10 * time.Second)
				if nt.EventType == "subscription_established" {
					var evs []map[string]any
					json.Unmarshal(nt.Events, &evs)
					if got := num(evs[0]["last_event_id"]); got != last {
						t.Errorf("established at %d, want the last replayed id %d", got, last)
					}
					break
				}
				if id := nt.id(); id <= last {
					t.Fatalf("replayed id %d after %d", id, last)
				} else {
					last = id
				}
				data, _ := nt.event()["item_data"].(map[string]any)
				seen[data["i"].(float64)] = true
			}
			if len(seen) != n {
				t.Fatalf("caught up with %d of %d items (batch of 4)", len(seen), n)
			}
		})
	}
}

// Sessions that subscribe from "now" while writes commit, when the
// subscription check may read an object row a commit older than the store
// (engine.SubscribableRecent), get every event after the position their
// subscription_established reports, in order and without gaps.
func TestSubscribeDuringWrites(t *testing.T) {
	const writes, joiners = 300, 8
	e := newEnv(t)
	ctx := context.Background()
	c0 := e.session("alice")
	doc := wantStatus(t, "create", c0.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	sid := doc["sid"].(string)
	final := num(doc["last_event_id"]) + writes
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range writes {
			_, err := e.eng.UpdateObject(ctx, engine.SystemActor(), e.svc, chorus.KindDocument, sid,
				engine.UpdateObject{Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
			if err != nil {
				t.Errorf("UpdateObject: %v", err)
				return
			}
		}
	}()
	subs := make([]*tclient, joiners)
	for i := range subs {
		subs[i] = e.session(fmt.Sprint("joiner", i))
		wantStatus(t, "establish", subs[i].subscribe("establish", int64(i+1), docSub(sid, nil)), 200, 0)
		time.Sleep(2 * time.Millisecond) // spread the joins over the writes
	}
	<-done
	for i, c := range subs {
		last := int64(-1) // the last event id seen; -1: none yet
		established := false
		for last < final || !established {
			n := c.next(10 * time.Second)
			switch n.EventType {
			case "subscription_established":
				var evs []map[string]any
				json.Unmarshal(n.Events, &evs)
				if len(evs) != 1 {
					t.Fatalf("joiner %d: subscription_established events = %s", i, n.Events)
				}
				pos := num(evs[0]["last_event_id"])
				if last >= 0 && last != pos {
					t.Fatalf("joiner %d: replayed up to %d, established at %d", i, last, pos)
				}
				last, established = pos, true
			case "document_updated":
				id := n.id()
				if last >= 0 && id != last+1 {
					t.Fatalf("joiner %d: event %d after %d (want consecutive ids)", i, id, last)
				}
				last = id
			}
		}
	}
}
