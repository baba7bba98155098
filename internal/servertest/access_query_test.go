package servertest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/token"
)

// TestLiveQueryAccessAcrossNodes: a permission deleted through node A ends
// a live query held on node B with subscription_failed 403/54007; deleting
// a service through A closes the sessions of that service on B.
func TestLiveQueryAccessAcrossNodes(t *testing.T) {
	c := NewCluster(t, Config{Nodes: 2})
	a, b := c.Nodes[0], c.Nodes[1]
	mustREST(t, a, "POST", "", url.Values{"AclEnabled": {"true"}}, http.StatusOK)
	m := sidOf(t, mustREST(t, a, "POST", "/Maps", url.Values{"UniqueName": {"board"}}, http.StatusCreated))
	perm := "/Maps/" + m + "/Permissions/bob"
	mustREST(t, a, "POST", perm, url.Values{"Read": {"true"}, "Write": {"false"}, "Manage": {"false"}}, http.StatusOK)

	sub := dial(t, b.WSURL, c.Token(t, "bob"))
	const expr = `data.s == "on"`
	status, body := sub.do("POST", "/v3/Insights/board/Items", map[string]any{"query_string": expr, "type": "live_query"})
	var res struct {
		QueryID string `json:"query_id"`
	}
	if err := json.Unmarshal(body, &res); status != 200 || err != nil || res.QueryID == "" {
		t.Fatalf("liveQuery on %s = %d %s", b.Name, status, body)
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

	mustREST(t, a, "DELETE", perm, nil, http.StatusNoContent)
	d := wantDenial(t, sub, res.QueryID, denialBound)
	t.Logf("permission deleted on %s: live query denied on %s after %v", a.Name, b.Name, d)
	mustREST(t, a, "POST", "/Maps/"+m+"/Items", url.Values{"Key": {"k1"}, "Data": {`{"s":"on"}`}}, http.StatusCreated)
	sub.quiet(500 * time.Millisecond)

	// A service deleted through A: its sessions on B close.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	svc, err := a.Server.Engine().CreateService(ctx, c.Creds.AccountSID, engine.ServiceParams{})
	if err != nil {
		t.Fatalf("CreateService: %v", err)
	}
	tok, err := token.Mint(token.Params{
		AccountSID: c.Creds.AccountSID, APIKeySID: c.Creds.APIKeySID, APISecret: c.Creds.APISecret,
		Identity: "carol", ServiceSID: svc.SID, TTL: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	carol := dial(t, b.WSURL, tok)
	if status, body := carol.do("GET", "/v3/Documents/nope", nil); status != 404 {
		t.Fatalf("GET in the new service = %d %s, want 404", status, body)
	}
	if err := a.Server.Engine().DeleteService(ctx, c.Creds.AccountSID, svc.SID); err != nil {
		t.Fatalf("DeleteService: %v", err)
	}
	select {
	case <-carol.done:
	case <-time.After(denialBound):
		t.Fatalf("session on %s still open %v after its service was deleted on %s", b.Name, denialBound, a.Name)
	}
	if status, body := sub.do("GET", "/v3/Documents/nope", nil); status != 404 {
		t.Fatalf("session of the default service: GET = %d %s, want 404 (alive)", status, body)
	}
}
