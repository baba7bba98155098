package servertest

import (
	"encoding/json"
	"net/url"
	"testing"
)

// TestServiceChangesAcrossNodes: a service read through node B (and so
// cached there) shows a change made through node A, and its deletion, as
// soon as A answered.
func TestServiceChangesAcrossNodes(t *testing.T) {
	c := NewCluster(t, Config{Nodes: 2})
	a, b := c.Nodes[0], c.Nodes[1]
	cr := c.Creds
	status, body := basicDo(t, "POST", a.URL+"/v1/Services", cr.AccountSID, cr.AuthToken, url.Values{"FriendlyName": {"one"}})
	var svc struct {
		SID          string `json:"sid"`
		FriendlyName string `json:"friendly_name"`
	}
	if err := json.Unmarshal(body, &svc); status != 201 || err != nil {
		t.Fatalf("create service on %s = %d %s", a.Name, status, body)
	}
	onB := b.URL + "/v1/Services/" + svc.SID
	for range 2 { // the second read comes from B's cache
		if status, body := basicDo(t, "GET", onB+"/Documents", cr.AccountSID, cr.AuthToken, nil); status != 200 {
			t.Fatalf("list documents on %s = %d %s", b.Name, status, body)
		}
	}
	if status, body := basicDo(t, "POST", a.URL+"/v1/Services/"+svc.SID, cr.AccountSID, cr.AuthToken, url.Values{"FriendlyName": {"two"}}); status != 200 {
		t.Fatalf("rename on %s = %d %s", a.Name, status, body)
	}
	status, body = basicDo(t, "GET", onB, cr.AccountSID, cr.AuthToken, nil)
	if err := json.Unmarshal(body, &svc); status != 200 || err != nil || svc.FriendlyName != "two" {
		t.Errorf("service on %s after the rename on %s = %d %s, want friendly_name two", b.Name, a.Name, status, body)
	}
	if status, body := basicDo(t, "DELETE", a.URL+"/v1/Services/"+svc.SID, cr.AccountSID, cr.AuthToken, nil); status != 204 {
		t.Fatalf("delete on %s = %d %s", a.Name, status, body)
	}
	if status, body := basicDo(t, "GET", onB+"/Documents", cr.AccountSID, cr.AuthToken, nil); status != 404 {
		t.Errorf("documents of the deleted service on %s = %d %s, want 404", b.Name, status, body)
	}
}
