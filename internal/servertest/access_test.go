package servertest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	natsbus "github.com/chorus-sync/chorus/internal/bus/nats"
)

// denialBound is how soon a subscriber on another node must lose a
// subscription whose read access was withdrawn (generous: -race on a
// loaded machine; it takes milliseconds).
const denialBound = 10 * time.Second

// wantDenial waits for subscription_failed 403/54007 of sid, skipping
// data events that were already on their way.
func wantDenial(t testing.TB, c *tclient, sid string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(within)
	for {
		select {
		case n := <-c.notes:
			if n.EventType != "subscription_failed" {
				continue
			}
			var evs []struct {
				ObjectSID string `json:"object_sid"`
				Error     struct {
					Status int `json:"status"`
					Code   int `json:"code"`
				} `json:"error"`
			}
			_ = json.Unmarshal(n.Events, &evs)
			if len(evs) != 1 || evs[0].ObjectSID != sid || evs[0].Error.Status != 403 || evs[0].Error.Code != 54007 {
				t.Fatalf("subscription_failed = %s, want %s 403/54007", n.Events, sid)
			}
			return time.Since(start)
		case <-deadline:
			t.Fatalf("no subscription_failed for %s within %v", sid, within)
		}
	}
}

// TestAccessChangesAcrossNodes: permissions and the ACL switch changed
// through node A end subscriptions held on node B; granting read again
// lets the identity subscribe again; revoking an API key on A closes the
// sessions it signed on B.
func TestAccessChangesAcrossNodes(t *testing.T) {
	c := NewCluster(t, Config{Nodes: 2})
	a, b := c.Nodes[0], c.Nodes[1]
	doc := sidOf(t, mustREST(t, a, "POST", "/Documents", url.Values{"Data": {`{"n":0}`}}, http.StatusCreated))
	open := sidOf(t, mustREST(t, a, "POST", "/Documents", url.Values{"Data": {`{"n":0}`}}, http.StatusCreated))
	perm := "/Documents/" + doc + "/Permissions/alice"
	mustREST(t, a, "POST", perm, url.Values{"Read": {"true"}, "Write": {"false"}, "Manage": {"false"}}, http.StatusOK)

	// ACLs off: carol reads everything, alice too.
	carol := dial(t, b.WSURL, c.Token(t, "carol"))
	carol.establish(chorus.KindDocument, open)
	alice := dial(t, b.WSURL, c.Token(t, "alice"))
	alice.establish(chorus.KindDocument, doc)

	// ACLs on, through A: carol (no permission) loses her subscription on B;
	// alice keeps hers.
	mustREST(t, a, "POST", "", url.Values{"AclEnabled": {"true"}}, http.StatusOK)
	d := wantDenial(t, carol, open, denialBound)
	t.Logf("ACL enabled on %s: denial on %s after %v", a.Name, b.Name, d)
	mustREST(t, a, "POST", "/Documents/"+doc, url.Values{"Data": {`{"n":1}`}}, http.StatusOK)
	if n := alice.collect(1, 10*time.Second)[0]; n.EventType != "document_updated" {
		t.Fatalf("alice after ACLs on: %s, want document_updated", n.EventType)
	}

	// Permission deleted on A: alice's subscription on B ends.
	mustREST(t, a, "DELETE", perm, nil, http.StatusNoContent)
	d = wantDenial(t, alice, doc, denialBound)
	t.Logf("permission deleted on %s: denial on %s after %v", a.Name, b.Name, d)
	mustREST(t, a, "POST", "/Documents/"+doc, url.Values{"Data": {`{"n":2}`}}, http.StatusOK)
	alice.quiet(500 * time.Millisecond)

	// Granted again: alice subscribes again and gets updates.
	mustREST(t, a, "POST", perm, url.Values{"Read": {"true"}, "Write": {"false"}, "Manage": {"false"}}, http.StatusOK)
	status, body := alice.do("POST", "/v4/Subscriptions", map[string]any{
		"event_protocol_version": 4, "action": "establish", "correlation_id": 7, "retried_requests": 0, "ttl_in_s": -1,
		"requests": []map[string]any{{"object_sid": doc, "object_type": "document", "last_event_id": 2}},
	})
	if status != 200 {
		t.Fatalf("re-establish = %d %s", status, body)
	}
	if n := alice.collect(1, 10*time.Second)[0]; n.EventType != "subscription_established" {
		t.Fatalf("alice re-establish after re-grant: %s %s, want subscription_established", n.EventType, n.Events)
	}
	mustREST(t, a, "POST", "/Documents/"+doc, url.Values{"Data": {`{"n":3}`}}, http.StatusOK)
	if n := alice.collect(1, 10*time.Second)[0]; n.EventType != "document_updated" || jsonString(n.field("document_data")) != `{"n":3}` {
		t.Fatalf("alice after re-grant: %s %s, want document_updated {\"n\":3}", n.EventType, n.Event)
	}

	// Downgraded to no read: ends again.
	mustREST(t, a, "POST", perm, url.Values{"Read": {"false"}, "Write": {"true"}, "Manage": {"false"}}, http.StatusOK)
	wantDenial(t, alice, doc, denialBound)

	// The API key revoked on A: the sessions it signed on B close.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// As the key's deletion does: first the store, then the sessions.
	if err := a.Server.Engine().Store().Update(ctx, func(tx chorus.Tx) error {
		return tx.DeleteAPIKey(ctx, c.Creds.APIKeySID)
	}); err != nil {
		t.Fatalf("delete the API key: %v", err)
	}
	if err := a.Server.Gateway().RevokeKeys(ctx, c.Creds.AccountSID, c.Creds.APIKeySID); err != nil {
		t.Fatalf("RevokeKeys on %s: %v", a.Name, err)
	}
	for _, s := range []*tclient{alice, carol} {
		select {
		case <-s.done:
		case <-time.After(denialBound):
			t.Fatalf("session on %s still open %v after its key was revoked on %s", b.Name, denialBound, a.Name)
		}
	}
}

// TestLostAccessChangeRecheckedOnResync: node B's bus loses every control
// event; the access change reaches B's subscribers when the bus reports
// the loss (Resync, as on a NATS reconnect or slow-consumer drop).
func TestLostAccessChangeRecheckedOnResync(t *testing.T) {
	c := NewCluster(t, Config{Nodes: 2, BusOptions: func(i int) []natsbus.Option {
		if i == 1 {
			return []natsbus.Option{natsbus.WithFaults(func(e *chorus.Event) bool { return e.Type.Control() }, nil)}
		}
		return nil
	}})
	a, b := c.Nodes[0], c.Nodes[1]
	doc := sidOf(t, mustREST(t, a, "POST", "/Documents", url.Values{"Data": {`{"n":0}`}}, http.StatusCreated))
	carol := dial(t, b.WSURL, c.Token(t, "carol"))
	carol.establish(chorus.KindDocument, doc)
	mustREST(t, a, "POST", "", url.Values{"AclEnabled": {"true"}}, http.StatusOK)
	waitUntil(t, func() bool { return b.Bus.Stats().FaultDropped > 0 })
	carol.quiet(300 * time.Millisecond) // lost: nothing yet
	b.Server.Gateway().Resync()
	wantDenial(t, carol, doc, denialBound)
}

func waitUntil(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
