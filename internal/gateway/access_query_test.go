package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/protocol"
)

// aclMap sets the service's ACL switch and creates the Map "tasks" as the
// system, with identities granted read on it.
func (e *env) aclMap(acl bool, readers ...string) *chorus.Object {
	e.t.Helper()
	ctx := context.Background()
	svc, err := e.eng.UpdateService(ctx, e.creds.AccountSID, e.svc.SID, engine.ServiceParams{ACLEnabled: &acl})
	if err != nil {
		e.t.Fatalf("UpdateService: %v", err)
	}
	m, err := e.eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindMap, engine.CreateObject{UniqueName: "tasks"})
	if err != nil {
		e.t.Fatalf("CreateObject: %v", err)
	}
	for _, who := range readers {
		e.grantMap(m.SID, who, true)
	}
	return m
}

func (e *env) grantMap(sid, identity string, read bool) {
	e.t.Helper()
	if _, err := e.eng.SetPermission(context.Background(), e.service(), chorus.KindMap, sid, chorus.Permission{Identity: identity, Read: read}); err != nil {
		e.t.Fatalf("SetPermission: %v", err)
	}
}

// putMapItem writes a Map item as the system.
func (e *env) putMapItem(sid, key, status string) {
	e.t.Helper()
	if _, _, err := e.eng.WriteItem(context.Background(), engine.SystemActor(), e.service(), chorus.KindMap, sid, chorus.ItemRef{Key: key},
		engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(`{"status":"` + status + `"}`)}); err != nil {
		e.t.Fatalf("WriteItem: %v", err)
	}
}

const openExpr = `data.status == "open"`

// openQuery opens the live query openExpr over "tasks" and returns its id.
func openQuery(t testing.TB, c *tclient) string {
	t.Helper()
	res := wantStatus(t, "liveQuery", c.do("POST", "/v3/Insights/tasks/Items", nil, map[string]any{"query_string": openExpr, "type": "live_query"}), 200, 0)
	id, _ := res["query_id"].(string)
	if id == "" {
		t.Fatalf("liveQuery reply = %v, want a query_id", res)
	}
	return id
}

// wantQueryItem waits for the live_query_item_updated of key.
func wantQueryItem(t testing.TB, c *tclient, key string) {
	t.Helper()
	n := c.nextQueryEvent(10 * time.Second)
	if n.EventType != "live_query_item_updated" || n.event()["item_key"] != key {
		t.Fatalf("live query event = %s %s, want live_query_item_updated of %s", n.EventType, n.Event, key)
	}
}

// wantNoQueryEvent checks that no live query event arrives before a
// marker document's event does.
func wantNoQueryEvent(t testing.TB, e *env, c *tclient, marker string) {
	t.Helper()
	e.write(marker, 9)
	for {
		n := c.next(10 * time.Second)
		if n.event()["document_sid"] == marker {
			return
		}
		if strings.HasPrefix(n.EventType, "live_query_") {
			t.Fatalf("%s %s after the denial", n.EventType, n.Event)
		}
	}
}

// TestAccessChangeEndsLiveQuery: a live query whose identity loses read
// access to its Map ends like a subscription (subscription_failed 403 /
// 54007, correlation null) and sends nothing more; the query of an
// identity that keeps access goes on; re-subscribing fails until access
// is granted again.
func TestAccessChangeEndsLiveQuery(t *testing.T) {
	for _, tc := range []struct {
		name string
		acl  bool // ACLs on from the start
		// revoke withdraws alice's read access (bob keeps his).
		revoke func(e *env, mapSID string)
		regain func(e *env, mapSID string)
	}{
		{"deleted", true, func(e *env, sid string) {
			if err := e.eng.DeletePermission(context.Background(), e.service(), chorus.KindMap, sid, "alice"); err != nil {
				t.Fatalf("DeletePermission: %v", err)
			}
		}, func(e *env, sid string) { e.grantMap(sid, "alice", true) }},
		{"downgraded", true, func(e *env, sid string) { e.grantMap(sid, "alice", false) },
			func(e *env, sid string) { e.grantMap(sid, "alice", true) }},
		{"acl-enabled", false, func(e *env, sid string) {
			e.grantMap(sid, "alice", false) // no effect while ACLs are off
			e.aclDoc(true)
		}, func(e *env, sid string) { e.grantMap(sid, "alice", true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			m := e.aclMap(tc.acl, "alice", "bob")
			marker := e.aclDoc(tc.acl)
			for _, who := range []string{"alice", "bob"} {
				e.grant(marker.SID, who, true)
			}
			e.putMapItem(m.SID, "t1", "open")
			alice, bob := e.session("alice"), e.session("bob")
			var id string
			for _, c := range []*tclient{alice, bob} {
				id = openQuery(t, c)
				c.establishQuery(1, lqSub(id, "tasks", openExpr))
				c.establish(2, docSub(marker.SID, nil))
			}
			e.putMapItem(m.SID, "t2", "open")
			wantQueryItem(t, alice, "t2")
			wantQueryItem(t, bob, "t2")

			tc.revoke(e, m.SID)
			wantDenied(t, alice, id)
			waitFor(t, func() bool { return e.gw.hub.liveQueries() == 1 })
			e.putMapItem(m.SID, "t3", "open")
			wantQueryItem(t, bob, "t3")
			wantNoQueryEvent(t, e, alice, marker.SID)

			// The SDK's re-subscription (a new session, or after a
			// reconnect) is refused while access is missing.
			alice.subscribe("establish", 3, lqSub(id, "tasks", openExpr))
			if n := alice.nextOf("subscription_failed", 10*time.Second); string(n.Correlation) != "3" || !strings.Contains(string(n.Events), "54007") {
				t.Fatalf("re-subscribe without access = %s correlation %s, want 54007 with correlation 3", n.Events, n.Correlation)
			}
			wantStatus(t, "liveQuery without access", alice.do("POST", "/v3/Insights/tasks/Items", nil, map[string]any{"query_string": openExpr, "type": "live_query"}), 403, 54007)

			tc.regain(e, m.SID)
			before, _ := alice.establishQuery(4, lqSub(id, "tasks", openExpr))
			if len(before) != 1 || before[0].EventType != "live_query_updated" {
				t.Fatalf("re-subscription after the grant sent %d events, want the whole result", len(before))
			}
			wantItems(t, "result after the grant", queryItems(t, before[0].event()["items"]), "t1", "t2", "t3")
			e.putMapItem(m.SID, "t4", "open")
			wantQueryItem(t, alice, "t4")
		})
	}
}

// TestAccessChangeEndsPendingLiveQuery: a live query opened but not yet
// subscribed to is dropped when access goes; the SDK's subscription then
// fails with the denial.
func TestAccessChangeEndsPendingLiveQuery(t *testing.T) {
	e := newEnv(t)
	m := e.aclMap(true, "alice")
	alice := e.session("alice")
	id := openQuery(t, alice)
	if n := e.gw.hub.liveQueries(); n != 1 {
		t.Fatalf("live queries = %d, want 1", n)
	}
	e.grantMap(m.SID, "alice", false)
	waitFor(t, func() bool { return e.gw.hub.liveQueries() == 0 })
	alice.subscribe("establish", 1, lqSub(id, "tasks", openExpr))
	if n := alice.nextOf("subscription_failed", 10*time.Second); string(n.Correlation) != "1" || !strings.Contains(string(n.Events), "54007") {
		t.Fatalf("subscription_failed = %s correlation %s, want 54007 with correlation 1", n.Events, n.Correlation)
	}
}

// TestAccessChangeDuringLiveQuery: access withdrawn while live queries are
// being opened and subscribed never leaves one on the connection.
func TestAccessChangeDuringLiveQuery(t *testing.T) {
	e := newEnv(t)
	m := e.aclMap(true)
	for i := 0; i < 20; i++ {
		e.grantMap(m.SID, "alice", true)
		alice := e.session("alice")
		done := make(chan struct{})
		go func() {
			defer close(done)
			alice.do("POST", "/v3/Insights/tasks/Items", nil, map[string]any{"query_string": openExpr, "type": "live_query"})
		}()
		if err := e.eng.DeletePermission(context.Background(), e.service(), chorus.KindMap, m.SID, "alice"); err != nil {
			t.Fatal(err)
		}
		<-done
		waitFor(t, func() bool { return e.gw.hub.liveQueries() == 0 })
		alice.ws.CloseNow()
	}
}

// TestDeleteServiceEndsSessions: deleting a service closes the sessions
// whose token names it (close 401 / 54050) and not the others, and a new
// session with such a token is refused.
func TestDeleteServiceEndsSessions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	doomed, err := e.eng.CreateService(ctx, e.creds.AccountSID, engine.ServiceParams{})
	if err != nil {
		t.Fatalf("CreateService: %v", err)
	}
	tok := e.tokenAt("alice", time.Hour, time.Now(), doomed.SID, e.creds.APISecret)
	gone := e.dial(ctx)
	gone.mustInit(tok)
	if r := gone.do("GET", "/v3/Documents/nope", nil, nil); r.Status != 404 {
		t.Fatalf("GET in the service to delete = %d, want 404", r.Status)
	}
	other := e.session("bob")

	if err := e.eng.DeleteService(ctx, e.creds.AccountSID, doomed.SID); err != nil {
		t.Fatalf("DeleteService: %v", err)
	}
	f := gone.nextControl(10 * time.Second)
	if f.Header.Method != protocol.MethodClose || f.Header.Status == nil || f.Header.Status.Code != 401 || f.Header.Status.ErrorCode != chorus.ErrServiceNotFound.Code {
		t.Fatalf("frame after the deletion = %s %+v, want close 401 54050", f.Header.Method, f.Header.Status)
	}
	if err := gone.closed(15 * time.Second); err != nil {
		t.Fatalf("session of the deleted service: %v", err)
	}
	again := e.dial(ctx)
	if f := again.init(tok); f.Header.Status == nil || f.Header.Status.Code != 403 {
		t.Fatalf("init naming the deleted service = %+v, want 403", f.Header.Status)
	}
	if r := other.do("GET", "/v3/Documents/nope", nil, nil); r.Status != 404 {
		t.Errorf("session of another service: GET = %d, want 404 (alive)", r.Status)
	}
}

// TestServiceChangedEventChecksTheStore: a service_changed event for a
// service that still exists (or named with another account) closes
// nothing.
func TestServiceChangedEventChecksTheStore(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	alice := e.session("alice")
	for _, account := range []string{e.creds.AccountSID, chorus.NewSID("AC")} {
		ev := &chorus.Event{Type: chorus.EventServiceChanged, AccountSID: account, ServiceSID: e.svc.SID,
			ObjectSID: chorus.ControlTopic, DateCreated: time.Now()}
		if err := e.bus.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := alice.closed(500 * time.Millisecond); err == nil {
		t.Fatal("a service_changed event for an existing service closed the session")
	}
	if r := alice.do("GET", "/v3/Documents/nope", nil, nil); r.Status != 404 {
		t.Fatalf("GET = %d, want 404 (alive)", r.Status)
	}
}
