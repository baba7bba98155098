package servertest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// TestLiveQueryAcrossNodes: a live query held on node B follows writes
// made through node A; the events reach B's Map topic through the bus.
func TestLiveQueryAcrossNodes(t *testing.T) {
	c := NewCluster(t, Config{Nodes: 2})
	a, b := c.Nodes[0], c.Nodes[1]
	m := sidOf(t, mustREST(t, a, "POST", "/Maps", url.Values{"UniqueName": {"board"}}, http.StatusCreated))
	mustREST(t, a, "POST", "/Maps/"+m+"/Items", url.Values{"Key": {"k1"}, "Data": {`{"s":"on"}`}}, http.StatusCreated)
	mustREST(t, a, "POST", "/Maps/"+m+"/Items", url.Values{"Key": {"k2"}, "Data": {`{"s":"off"}`}}, http.StatusCreated)

	sub := dial(t, b.WSURL, c.Token(t, "bob"))
	const expr = `data.s == "on"`
	status, body := sub.do("POST", "/v3/Insights/board/Items", map[string]any{"query_string": expr, "type": "live_query"})
	if status != 200 {
		t.Fatalf("liveQuery on %s = %d %s", b.Name, status, body)
	}
	var res struct {
		QueryID string `json:"query_id"`
		Items   []struct {
			Key string `json:"key"`
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &res); err != nil || res.QueryID == "" || len(res.Items) != 1 || res.Items[0].Key != "k1" {
		t.Fatalf("liveQuery reply = %s (%v), want query_id and item k1", body, err)
	}
	status, body = sub.do("POST", "/v4/Subscriptions", map[string]any{
		"event_protocol_version": 4, "action": "establish", "correlation_id": 1, "retried_requests": 0, "ttl_in_s": -1,
		"requests": []map[string]any{{"object_sid": res.QueryID, "object_type": "live_query", "last_event_id": 0, "index_name": "board", "query_string": expr}},
	})
	if status != 200 {
		t.Fatalf("establish = %d %s", status, body)
	}
	if n := sub.collect(1, 10*time.Second)[0]; n.EventType != "subscription_established" {
		t.Fatalf("got %s %s, want subscription_established", n.EventType, n.Events)
	}

	mustREST(t, a, "POST", "/Maps/"+m+"/Items/k2", url.Values{"Data": {`{"s":"on"}`}}, http.StatusOK)
	mustREST(t, a, "POST", "/Maps/"+m+"/Items/k1", url.Values{"Data": {`{"s":"off"}`}}, http.StatusOK)
	notes := sub.collect(2, 10*time.Second)
	for i, want := range []struct{ typ, key string }{{"live_query_item_updated", "k2"}, {"live_query_item_removed", "k1"}} {
		if notes[i].EventType != want.typ || jsonString(notes[i].field("item_key")) != `"`+want.key+`"` ||
			jsonString(notes[i].field("query_id")) != `"`+res.QueryID+`"` {
			t.Errorf("event %d = %s %s, want %s of %s", i, notes[i].EventType, notes[i].Event, want.typ, want.key)
		}
	}
	sub.quiet(300 * time.Millisecond)
}
