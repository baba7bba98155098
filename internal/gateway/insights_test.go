package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/livequery"
)

func lqSub(id, index, query string) map[string]any {
	return map[string]any{"object_sid": id, "object_type": "live_query", "last_event_id": 0, "index_name": index, "query_string": query}
}

// putItem writes a map item through the CDS API and returns its reply.
func putItem(t testing.TB, c *tclient, mapURL, key string, data any) map[string]any {
	t.Helper()
	r := c.do("PUT", mapURL+"/Items/"+encodeURIComponent(key), nil, map[string]any{"data": data})
	if r.Status != 200 && r.Status != 201 {
		t.Fatalf("put %s = %d %s", key, r.Status, r.Body)
	}
	return r.json(t)
}

// queryItems decodes the items of a query reply or event as key → data.
func queryItems(t testing.TB, v any) map[string]string {
	t.Helper()
	out := map[string]string{}
	arr, ok := v.([]any)
	if !ok {
		t.Fatalf("items = %T %v, want an array", v, v)
	}
	for _, x := range arr {
		it := x.(map[string]any)
		d, _ := json.Marshal(it["data"])
		out[it["key"].(string)] = string(d)
		if _, ok := it["revision"]; !ok {
			t.Errorf("item %v has no revision", it)
		}
	}
	return out
}

func wantItems(t testing.TB, what string, got map[string]string, want ...string) {
	t.Helper()
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	if len(keys) != len(want) {
		t.Fatalf("%s = %v, want keys %v", what, got, want)
	}
	for _, k := range want {
		if _, ok := got[k]; !ok {
			t.Fatalf("%s = %v, want keys %v", what, got, want)
		}
	}
}

// establishQuery subscribes to a live query and returns the live_query_*
// notifications sent before subscription_established, and that.
func (c *tclient) establishQuery(corr int64, sub map[string]any) (before []*note, est *note) {
	c.t.Helper()
	wantStatus(c.t, "establish", c.subscribe("establish", corr, sub), 200, 0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := c.next(time.Until(deadline))
		switch {
		case n.EventType == "subscription_established":
			return before, n
		case strings.HasPrefix(n.EventType, "live_query_"):
			before = append(before, n)
		}
	}
}

// nextQueryEvent returns the next live_query_* notification.
func (c *tclient) nextQueryEvent(timeout time.Duration) *note {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := c.next(time.Until(deadline))
		if strings.HasPrefix(n.EventType, "live_query_") {
			return n
		}
	}
}

func TestLiveQuery(t *testing.T) {
	e := newEnv(t)
	a, b := e.session("alice"), e.session("bob")
	m := wantStatus(t, "create map", a.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "tasks"}), 201, 0)
	mapURL := m["url"].(string)
	putItem(t, a, mapURL, "t1", map[string]any{"status": "open", "who": "ann"})
	putItem(t, a, mapURL, "t2", map[string]any{"status": "done"})
	putItem(t, a, mapURL, "t3", map[string]any{"status": "open", "who": "bo"})

	const expr = `data.status == "open"`
	res := wantStatus(t, "liveQuery", b.do("POST", "/v3/Insights/tasks/Items", nil, map[string]any{"query_string": expr, "type": "live_query"}), 200, 0)
	id, _ := res["query_id"].(string)
	if id == "" || res["last_event_id"] == nil {
		t.Fatalf("liveQuery reply = %v, want query_id and last_event_id", res)
	}
	wantItems(t, "liveQuery items", queryItems(t, res["items"]), "t1", "t3")

	// The same query by SID is another index name for the same Map.
	bySID := wantStatus(t, "instantQuery", b.do("POST", "/v3/Insights/"+m["sid"].(string)+"/Items", nil, map[string]any{"query_string": expr}), 200, 0)
	if _, ok := bySID["query_id"]; ok {
		t.Errorf("instant query reply has a query_id: %v", bySID)
	}
	wantItems(t, "instantQuery items", queryItems(t, bySID["items"]), "t1", "t3")

	// A change before the SDK subscribes reaches it when it does.
	putItem(t, a, mapURL, "t2", map[string]any{"status": "open"})
	pending, est := b.establishQuery(7, lqSub(id, "tasks", expr))
	var evs []map[string]any
	json.Unmarshal(est.Events, &evs)
	if len(evs) != 1 || evs[0]["object_sid"] != id || evs[0]["object_type"] != "live_query" || evs[0]["replay_status"] != "completed" {
		t.Fatalf("subscription_established = %s", est.Events)
	}
	if len(pending) != 1 {
		t.Fatalf("events before subscription_established = %d, want 1", len(pending))
	}
	n := pending[0]
	ev := n.event()
	if n.EventType != "live_query_item_updated" || ev["query_id"] != id || ev["item_key"] != "t2" {
		t.Fatalf("pending event = %s %s, want t2 updated", n.EventType, n.Event)
	}

	// Live: entering, changing within, leaving, and changes that do not
	// concern the result.
	putItem(t, a, mapURL, "t4", map[string]any{"status": "done"}) // never matches: no event
	up := putItem(t, a, mapURL, "t5", map[string]any{"status": "open"})
	n = b.nextQueryEvent(5 * time.Second)
	ev = n.event()
	if n.EventType != "live_query_item_updated" || ev["item_key"] != "t5" || num(ev["item_revision"]) != num(up["last_event_id"]) {
		t.Fatalf("event = %s %s, want t5 updated at revision %v", n.EventType, n.Event, up["last_event_id"])
	}
	if d, _ := json.Marshal(ev["item_data"]); string(d) != `{"status":"open"}` {
		t.Fatalf("item_data = %s", d)
	}
	putItem(t, a, mapURL, "t1", map[string]any{"status": "open", "who": "ann2"})
	if n = b.nextQueryEvent(5 * time.Second); n.EventType != "live_query_item_updated" || n.event()["item_key"] != "t1" {
		t.Fatalf("event = %s %s, want t1 updated", n.EventType, n.Event)
	}
	putItem(t, a, mapURL, "t3", map[string]any{"status": "done"})
	if n = b.nextQueryEvent(5 * time.Second); n.EventType != "live_query_item_removed" || n.event()["item_key"] != "t3" {
		t.Fatalf("event = %s %s, want t3 removed", n.EventType, n.Event)
	}
	if _, ok := n.event()["item_revision"]; !ok {
		t.Errorf("live_query_item_removed has no item_revision: %s", n.Event)
	}
	wantStatus(t, "delete t5", a.do("DELETE", mapURL+"/Items/t5", nil, nil), 200, 0)
	if n = b.nextQueryEvent(5 * time.Second); n.EventType != "live_query_item_removed" || n.event()["item_key"] != "t5" {
		t.Fatalf("event = %s %s, want t5 removed", n.EventType, n.Event)
	}

	// Each Map's events reach only that Map's queries.
	other := wantStatus(t, "create map", a.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "other"}), 201, 0)
	wantStatus(t, "liveQuery other", b.do("POST", "/v3/Insights/other/Items", nil, map[string]any{"query_string": expr, "type": "live_query"}), 200, 0)
	e.gw.hub.mu.Lock()
	for sid, tp := range e.gw.hub.topics {
		tp.mu.Lock()
		for lq := range tp.queries {
			if lq.mapSID != sid {
				t.Errorf("topic %s holds a query of %s", sid, lq.mapSID)
			}
		}
		tp.mu.Unlock()
	}
	e.gw.hub.mu.Unlock()
	if got := e.gw.hub.liveQueries(); got != 2 {
		t.Fatalf("live queries = %d, want 2", got)
	}
	putItem(t, a, other["url"].(string), "x", map[string]any{"status": "open"})

	// Cancel: the query is gone from the server.
	wantStatus(t, "cancel", b.subscribe("cancel", 8, map[string]any{"object_sid": id, "object_type": "live_query"}), 200, 0)
	b.nextOf("subscription_canceled", 5*time.Second)
	if got := e.gw.hub.liveQueries(); got != 1 {
		t.Fatalf("live queries after cancel = %d, want 1", got)
	}
	b.ws.CloseNow()
	waitFor(t, func() bool { return e.gw.hub.liveQueries() == 0 })
}

// TestLiveQueryResubscribe: after a reconnect the SDK subscribes without
// asking first; the server rebuilds the query and sends the whole result.
func TestLiveQueryResubscribe(t *testing.T) {
	e := newEnv(t)
	a, b := e.session("alice"), e.session("bob")
	m := wantStatus(t, "create map", a.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "people"}), 201, 0)
	putItem(t, a, m["url"].(string), "p1", map[string]any{"team": "eng"})
	putItem(t, a, m["url"].(string), "p2", map[string]any{"team": "ops"})
	const expr = `data.team in ["eng", "qa"] || key == "p9"`
	pending, _ := b.establishQuery(3, lqSub("QYsomething", "people", expr))
	if len(pending) != 1 {
		t.Fatalf("events before subscription_established = %d, want 1", len(pending))
	}
	n := pending[0]
	if n.EventType != "live_query_updated" || string(n.Correlation) != "3" {
		t.Fatalf("first event = %s corr %s, want live_query_updated with the correlation id", n.EventType, n.Correlation)
	}
	ev := n.event()
	if ev["query_id"] != "QYsomething" {
		t.Fatalf("live_query_updated = %s", n.Event)
	}
	wantItems(t, "live_query_updated items", queryItems(t, ev["items"]), "p1")
	putItem(t, a, m["url"].(string), "p9", map[string]any{})
	if n = b.nextQueryEvent(5 * time.Second); n.EventType != "live_query_item_updated" || n.event()["item_key"] != "p9" {
		t.Fatalf("event = %s %s, want p9 updated", n.EventType, n.Event)
	}

	// The Map goes away: the result empties and the query ends.
	wantStatus(t, "remove map", a.do("DELETE", m["url"].(string), nil, nil), 200, 0)
	n = b.nextQueryEvent(5 * time.Second)
	if n.EventType != "live_query_updated" || len(queryItems(t, n.event()["items"])) != 0 {
		t.Fatalf("after map removal: %s %s, want an empty live_query_updated", n.EventType, n.Event)
	}
	waitFor(t, func() bool { return e.gw.hub.liveQueries() == 0 })
	wantStatus(t, "establish", b.subscribe("establish", 4, lqSub("QYsomething", "people", expr)), 200, 0)
	f := b.nextOf("subscription_failed", 5*time.Second)
	if !strings.Contains(string(f.Events), "54502") {
		t.Fatalf("subscription_failed = %s, want 54502", f.Events)
	}
}

func TestQueryErrors(t *testing.T) {
	e := newEnv(t)
	a := e.session("alice")
	wantStatus(t, "create map", a.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "m"}), 201, 0)
	long := strings.Repeat(`key == "a" or `, 15) + `key == "b"`
	arr := `key in [` + strings.Repeat(`"a",`, 30) + `"b"]`
	for _, c := range []struct {
		path   string
		body   any
		status int
		code   int
	}{
		{"/v3/Insights/m/Items", map[string]any{"query_string": `key = "a"`}, 400, 54507},
		{"/v3/Insights/m/Items", map[string]any{"query_string": `key == "a"`, "type": "live_query"}, 200, 0},
		{"/v3/Insights/m/Items", map[string]any{"query_string": ``, "type": "live_query"}, 400, 54507},
		{"/v3/Insights/m/Items", map[string]any{}, 400, 54507},
		{"/v3/Insights/m/Items", map[string]any{"query_string": long}, 400, 54509},
		{"/v3/Insights/m/Items", map[string]any{"query_string": arr}, 400, 54510},
		{"/v3/Insights/nope/Items", map[string]any{"query_string": `key == "a"`}, 400, 54502},
		{"/v3/Insights/MP00000000000000000000000000000000/Items", map[string]any{"query_string": `key == "a"`}, 400, 54502},
		{"/v3/Insights/m/Items", []byte("{"), 400, 54008},
		{"/v3/Insights/m/Items", map[string]any{"query_string": `key == "a"`, "type": "other"}, 400, 54060},
		{"/v3/Insights/m", map[string]any{"query_string": `key == "a"`}, 404, 20404},
		{"/v3/Services/" + e.svc.SID + "/Insights/m/Items", map[string]any{"query_string": `key == "a"`}, 200, 0},
	} {
		wantStatus(t, fmt.Sprintf("POST %s %v", c.path, c.body), a.do("POST", c.path, nil, c.body), c.status, c.code)
	}
	wantStatus(t, "GET", a.do("GET", "/v3/Insights/m/Items", nil, nil), 405, 20004)

	// The per-connection cap.
	for i := 0; i < MaxLiveQueriesPerConn; i++ {
		r := a.do("POST", "/v3/Insights/m/Items", nil, map[string]any{"query_string": fmt.Sprintf(`key == "%d"`, i), "type": "live_query"})
		if i < MaxLiveQueriesPerConn-1 {
			wantStatus(t, "live query", r, 200, 0) // one is open already
		} else {
			wantStatus(t, "live query over the cap", r, 400, 54419)
		}
	}
}

// TestLiveQueriesPerIdentity: the sessions of one identity hold at most
// MaxLiveQueriesPerIdentity live queries together, whether opened with a
// query request (refused 400 54419) or by subscribing to one, the SDK's
// path after a reconnect (left pending, for the SDK to ask again: a
// subscription_failed would end the query in the SDK for good, though the
// old session's queries are let go of once it is seen gone). Another
// identity is not held by them, and a session that ends gives its
// queries' places back. Without the cap only each session's 20 bound
// them: 200 sessions of one identity held 4,000 live queries on one Map,
// and every write to it cost 1.36 s of matching.
func TestLiveQueriesPerIdentity(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.MaxLiveQueriesPerIdentity = 3 }))
	a1, a2, b := e.session("alice"), e.session("alice"), e.session("bob")
	wantStatus(t, "create map", a1.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "m"}), 201, 0)
	open := func(c *tclient, i int) httpResp {
		return c.do("POST", "/v3/Insights/m/Items", nil, map[string]any{"query_string": fmt.Sprintf(`key == "%d"`, i), "type": "live_query"})
	}
	wantStatus(t, "alice's 1st live query", open(a1, 1), 200, 0)
	wantStatus(t, "alice's 2nd live query", open(a1, 2), 200, 0)
	wantStatus(t, "alice's 3rd live query, in another session", open(a2, 3), 200, 0)
	r := open(a2, 4)
	wantStatus(t, "alice's 4th live query", r, 400, 54419)
	if !strings.Contains(string(r.Body), "identity") {
		t.Errorf("the refusal says %s; want it to name the identity's limit", r.Body)
	}
	resubscribe := lqSub("QY00000000000000000000000000000004", "m", `key == "t5"`)
	wantStatus(t, "alice subscribing to a 4th live query", a2.subscribe("establish", 7, resubscribe), 200, 0)
	wantStatus(t, "bob's live query", open(b, 1), 200, 0)
	if got := e.gw.Stats().QueriesRefused; got != 2 {
		t.Errorf("QueriesRefused = %d, want 2", got)
	}
	select {
	case n := <-a2.notes:
		t.Fatalf("the subscription over the cap got %s %s; want it left pending", n.EventType, n.Events)
	case <-time.After(300 * time.Millisecond):
	}

	a1.ws.CloseNow() // its two queries go
	waitFor(t, func() bool { return e.gw.hub.liveQueries() == 2 })
	// The SDK asks again for what is pending; now it gets in.
	wantStatus(t, "alice subscribing again", a2.subscribe("establish", 8, resubscribe), 200, 0)
	if n := a2.nextOf("subscription_established", 5*time.Second); string(n.Correlation) != "8" {
		t.Errorf("subscription_established correlation_id = %s, want 8", n.Correlation)
	}
	wantStatus(t, "alice's live query once a session ended", open(a2, 4), 200, 0)
	wantStatus(t, "alice's one too many", open(a2, 6), 400, 54419)
}

func TestQueryResultLimit(t *testing.T) {
	e := newEnv(t)
	a, b := e.session("alice"), e.session("bob")
	m := wantStatus(t, "create map", a.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "big"}), 201, 0)
	ctx := context.Background()
	sys := engine.Actor{System: true}
	for i := 0; i < MaxQueryResult; i++ {
		if _, _, err := e.eng.WriteItem(ctx, sys, e.svc, chorus.KindMap, "big", chorus.ItemRef{Key: fmt.Sprintf("k%04d", i)},
			engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(`{"on":"y"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	res := wantStatus(t, "at the limit", b.do("POST", "/v3/Insights/big/Items", nil, map[string]any{"query_string": `data.on == "y"`, "type": "live_query"}), 200, 0)
	if got := len(queryItems(t, res["items"])); got != MaxQueryResult {
		t.Fatalf("items = %d, want %d", got, MaxQueryResult)
	}
	b.establish(1, lqSub(res["query_id"].(string), "big", `data.on == "y"`))
	putItem(t, a, m["url"].(string), "more", map[string]any{"on": "y"})
	wantStatus(t, "over the limit", a.do("POST", "/v3/Insights/big/Items", nil, map[string]any{"query_string": `data.on == "y"`}), 413, 54006)
	// The live result grew past the limit: the session ends, and the
	// SDK's re-subscription fails with 54006.
	if err := b.closed(10 * time.Second); err != nil {
		t.Fatalf("live query over the limit: %v", err)
	}
	c := e.session("bob")
	wantStatus(t, "resubscribe", c.subscribe("establish", 2, lqSub(res["query_id"].(string), "big", `data.on == "y"`)), 200, 0)
	if f := c.nextOf("subscription_failed", 5*time.Second); !strings.Contains(string(f.Events), "54006") {
		t.Fatalf("subscription_failed = %s, want 54006", f.Events)
	}
}

// TestQueryACL: a Map is queryable by the identities that may read it.
func TestQueryACL(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	on := true
	svc, err := e.eng.UpdateService(ctx, e.creds.AccountSID, e.svc.SID, engine.ServiceParams{ACLEnabled: &on})
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	m, err := e.eng.CreateObject(ctx, engine.Actor{System: true}, svc, chorus.KindMap, engine.CreateObject{UniqueName: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.eng.WriteItem(ctx, engine.Actor{System: true}, svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: "k"},
		engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(`{"v":"1"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.eng.SetPermission(ctx, svc, chorus.KindMap, m.SID, chorus.Permission{Identity: "alice", Read: true}); err != nil {
		t.Fatal(err)
	}
	a, mallory := e.session("alice"), e.session("mallory")
	body := map[string]any{"query_string": `key == "k"`, "type": "live_query"}
	res := wantStatus(t, "alice", a.do("POST", "/v3/Insights/secret/Items", nil, body), 200, 0)
	wantItems(t, "alice's items", queryItems(t, res["items"]), "k")
	wantStatus(t, "mallory", mallory.do("POST", "/v3/Insights/secret/Items", nil, body), 403, 54007)
	wantStatus(t, "mallory instant", mallory.do("POST", "/v3/Insights/"+m.SID+"/Items", nil, map[string]any{"query_string": `key == "k"`}), 403, 54007)
	wantStatus(t, "mallory establish", mallory.subscribe("establish", 1, lqSub(res["query_id"].(string), "secret", `key == "k"`)), 200, 0)
	if f := mallory.nextOf("subscription_failed", 5*time.Second); !strings.Contains(string(f.Events), "54007") {
		t.Fatalf("subscription_failed = %s, want 54007", f.Events)
	}
}

// TestLiveQueryBacklog: more changes than a live query keeps before the SDK
// subscribes; the subscription then sends the whole result instead.
func TestLiveQueryBacklog(t *testing.T) {
	e := newEnv(t)
	a, b := e.session("alice"), e.session("bob")
	m := wantStatus(t, "create map", a.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "log"}), 201, 0)
	putItem(t, a, m["url"].(string), "gone", map[string]any{"on": "y"})
	const expr = `data.on == "y"`
	res := wantStatus(t, "liveQuery", b.do("POST", "/v3/Insights/log/Items", nil, map[string]any{"query_string": expr, "type": "live_query"}), 200, 0)
	big := strings.Repeat("x", 15<<10)
	n := maxQueryBacklogBytes/len(big) + 2
	for i := 0; i < n; i++ {
		putItem(t, a, m["url"].(string), fmt.Sprint("k", i), map[string]any{"on": "y", "pad": big})
	}
	wantStatus(t, "delete", a.do("DELETE", m["url"].(string)+"/Items/gone", nil, nil), 200, 0)
	before, _ := b.establishQuery(2, lqSub(res["query_id"].(string), "log", expr))
	if len(before) != 1 || before[0].EventType != "live_query_updated" {
		t.Fatalf("before subscription_established: %d events, want one live_query_updated", len(before))
	}
	if got := queryItems(t, before[0].event()["items"]); len(got) != n {
		t.Fatalf("live_query_updated has %d items, want %d", len(got), n)
	}
	putItem(t, a, m["url"].(string), "k0", map[string]any{"on": "n"})
	if ev := b.nextQueryEvent(5 * time.Second); ev.EventType != "live_query_item_removed" || ev.event()["item_key"] != "k0" {
		t.Fatalf("event = %s %s, want k0 removed", ev.EventType, ev.Event)
	}
}

func BenchmarkLiveQueryOffer(b *testing.B) {
	q := mustParse(b, `(data.status == "open" OR data.team IN ["eng", "ops"]) AND key != "x"`)
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("queries=%d", n), func(b *testing.B) {
			t := &topic{queries: map[*liveQuery]struct{}{}}
			c := &conn{q: newSendQueue(1<<30, 1<<40)}
			for i := 0; i < n; i++ {
				lq := &liveQuery{c: c, t: t, id: fmt.Sprint("QY", i), q: q, state: lqLive, keys: map[string]int64{}}
				t.queries[lq] = struct{}{}
			}
			e := &chorus.Event{Type: chorus.EventMapItemUpdated, Kind: chorus.KindMap, ItemKey: "k",
				ItemData: json.RawMessage(`{"status":"open","team":"eng","n":3,"who":{"name":"Ann"}}`)}
			var id int64
			b.ReportAllocs()
			for b.Loop() {
				id++
				e.ID = id
				t.offerQueriesLocked(e)
				c.q.drain(nil)
			}
		})
	}
}

func mustParse(t testing.TB, s string) *livequery.Query {
	t.Helper()
	q, err := livequery.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestLiveQueryConcurrentWrites: writers change a Map while a client opens
// a live query and subscribes. Applying the reply and the events as the SDK
// does (per-key revisions) must end with exactly the query's result.
func TestLiveQueryConcurrentWrites(t *testing.T) {
	e := newEnv(t)
	a, b := e.session("alice"), e.session("bob")
	m := wantStatus(t, "create map", a.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "race"}), 201, 0)
	ctx := context.Background()
	sys := engine.Actor{System: true}
	write := func(i int) {
		k := fmt.Sprintf("k%02d", i%40)
		var err error
		if i%7 == 3 {
			_, err = e.eng.DeleteItem(ctx, sys, e.svc, chorus.KindMap, "race", chorus.ItemRef{Key: k}, "")
			if errors.Is(err, chorus.ErrMapItemNotFound) {
				err = nil
			}
		} else {
			on := []string{"y", "n"}[(i/3)%2]
			_, _, err = e.eng.WriteItem(ctx, sys, e.svc, chorus.KindMap, "race", chorus.ItemRef{Key: k},
				engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(fmt.Sprintf(`{"on":%q,"i":%d}`, on, i))})
		}
		if err != nil {
			t.Error(err)
		}
	}
	for i := 0; i < 40; i++ {
		write(i)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 40; i < 400; i++ {
			write(i)
		}
	}()

	type entry struct {
		rev     int64
		present bool
	}
	cache := map[string]entry{}
	apply := func(key string, rev int64, present bool) {
		if c, ok := cache[key]; ok && c.rev >= rev {
			return
		}
		cache[key] = entry{rev, present}
	}
	const expr = `data.on == "y"`
	res := wantStatus(t, "liveQuery", b.do("POST", "/v3/Insights/race/Items", nil, map[string]any{"query_string": expr, "type": "live_query"}), 200, 0)
	for _, x := range res["items"].([]any) {
		it := x.(map[string]any)
		apply(it["key"].(string), num(it["revision"]), true)
	}
	wantStatus(t, "establish", b.subscribe("establish", 1, lqSub(res["query_id"].(string), "race", expr)), 200, 0)
	<-done
	marker := putItem(t, a, m["url"].(string), "zz", map[string]any{"on": "y"})
	for {
		n := b.next(10 * time.Second)
		if !strings.HasPrefix(n.EventType, "live_query_") {
			continue
		}
		ev := n.event()
		switch n.EventType {
		case "live_query_item_updated":
			apply(ev["item_key"].(string), num(ev["item_revision"]), true)
		case "live_query_item_removed":
			apply(ev["item_key"].(string), num(ev["item_revision"]), false)
		case "live_query_updated":
			t.Fatalf("unexpected live_query_updated: %s", n.Event)
		}
		if ev["item_key"] == "zz" && num(ev["item_revision"]) == num(marker["last_event_id"]) {
			break
		}
	}
	got := map[string]string{}
	for k, c := range cache {
		if c.present {
			got[k] = ""
		}
	}
	want := wantStatus(t, "instant", a.do("POST", "/v3/Insights/race/Items", nil, map[string]any{"query_string": expr}), 200, 0)
	wantKeys := queryItems(t, want["items"])
	if len(got) != len(wantKeys) {
		t.Fatalf("live result %v, want %v", got, wantKeys)
	}
	for k := range wantKeys {
		if _, ok := got[k]; !ok {
			t.Fatalf("live result %v, want %v", got, wantKeys)
		}
	}
}

// TestLiveQueryOfferRules: which events change a live query's result,
// around a scan that read the Map between events floor and ceil.
func TestLiveQueryOfferRules(t *testing.T) {
	q := mustParse(t, `data.on == "y"`)
	on, off := json.RawMessage(`{"on":"y"}`), json.RawMessage(`{"on":"n"}`)
	ev := func(id int64, typ chorus.EventType, key string, data json.RawMessage) *chorus.Event {
		return &chorus.Event{ID: id, Type: typ, Kind: chorus.KindMap, ItemKey: key, ItemData: data}
	}
	upd, rem := chorus.EventMapItemUpdated, chorus.EventMapItemRemoved
	for _, tc := range []struct {
		name string
		e    *chorus.Event
		want string // "updated", "removed" or ""
	}{
		{"before the scan", ev(10, upd, "b", on), ""},
		{"in the window, seen by the scan", ev(12, upd, "w", on), ""},
		{"in the window, before the scan saw the key out", ev(12, upd, "s", on), ""},
		{"in the window, after the scan saw the key out", ev(14, upd, "s", on), "updated"},
		{"in the window, after the scan read the key", ev(13, upd, "w", off), "removed"},
		{"in the window, key not read", ev(12, upd, "n", on), "updated"},
		{"after the scan, enters", ev(20, upd, "n", on), "updated"},
		{"after the scan, stays out", ev(20, upd, "x", off), ""},
		{"after the scan, leaves", ev(20, upd, "in", off), "removed"},
		{"after the scan, changes within", ev(20, upd, "in", on), "updated"},
		{"after the scan, removed", ev(20, rem, "in", nil), "removed"},
		{"older than the key's revision", ev(14, upd, "in", off), ""},
		{"removal of a key not in the result", ev(20, rem, "x", nil), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &conn{q: newSendQueue(100, 1<<20)}
			tp := &topic{queries: map[*liveQuery]struct{}{}}
			lq := &liveQuery{c: c, t: tp, id: "QY1", q: q, state: lqLive, floor: 10, ceil: 15,
				keys: map[string]int64{"w": 12, "in": 15}, window: map[string]int64{"w": 12, "in": 15, "s": 13}}
			tp.queries[lq] = struct{}{}
			tp.offerQueriesLocked(tc.e)
			frames, _ := c.q.drain(nil)
			got := ""
			if len(frames) == 1 {
				switch s := string(frames[0].b); {
				case strings.Contains(s, "live_query_item_updated"):
					got = "updated"
				case strings.Contains(s, "live_query_item_removed"):
					got = "removed"
				}
			} else if len(frames) > 1 {
				got = fmt.Sprint(len(frames), " frames")
			}
			if got != tc.want {
				t.Errorf("offer(%d %s %s %s) sent %q, want %q", tc.e.ID, tc.e.Type, tc.e.ItemKey, tc.e.ItemData, got, tc.want)
			}
		})
	}
}

// TestQueryScansShareSlots: a query's scan of its Map waits for one of the
// gateway's scan slots (QueryScans), so that queries leave the store's
// readers to everyone else, and runs once one is free; other sessions'
// requests do not wait for it. One that waits longer than QueryScanWait
// is answered 503, which the SDK retries, instead of holding its
// session's other requests (they run one at a time). Before, 20 sessions
// querying a Map of 5,000 items of 16 KiB kept all 4 SQLite readers busy
// and other users' reads waited p99 376 ms.
func TestQueryScansShareSlots(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.QueryScans, c.QueryScanWait = 1, time.Minute }))
	a := e.session("alice")
	wantStatus(t, "map", a.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "m"}), 201, 0)
	wantStatus(t, "item", a.do("PUT", "/v3/Maps/m/Items/k", nil, map[string]any{"data": map[string]any{"v": 1}}), 201, 0)
	e.gw.scanSlots <- struct{}{} // another scan runs
	answered := make(chan httpResp, 1)
	b := e.session("bob")
	go func() {
		answered <- b.do("POST", "/v3/Insights/m/Items", nil, map[string]any{"query_string": `key == "k"`})
	}()
	wantStatus(t, "another session's read", a.do("GET", "/v3/Maps/m/Items/k", nil, nil), 200, 0)
	select {
	case r := <-answered:
		t.Fatalf("the query was answered (%d) while the only scan slot was taken", r.Status)
	case <-time.After(300 * time.Millisecond):
	}
	<-e.gw.scanSlots
	select {
	case r := <-answered:
		res := wantStatus(t, "instantQuery", r, 200, 0)
		if items, _ := res["items"].([]any); len(items) != 1 {
			t.Errorf("instant query result %v, want the one item", res)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the query was not answered once the scan slot was free")
	}
}

// TestQueryScanWaitIsBounded: a query that waits for a scan slot longer
// than QueryScanWait is answered 503 20503, which the SDK retries, and its
// session's next request is served.
func TestQueryScanWaitIsBounded(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.QueryScans, c.QueryScanWait = 1, 200*time.Millisecond }))
	a := e.session("alice")
	wantStatus(t, "map", a.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "m"}), 201, 0)
	e.gw.scanSlots <- struct{}{} // another scan runs, and keeps running
	t.Cleanup(func() { <-e.gw.scanSlots })
	wantStatus(t, "instantQuery while the scans are busy", a.do("POST", "/v3/Insights/m/Items", nil, map[string]any{"query_string": `key == "k"`}), 503, 20503)
	wantStatus(t, "the session's next request", a.do("GET", "/v3/Maps/m", nil, nil), 200, 0)
}
