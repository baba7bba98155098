package servertest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/token"
)

// basicDo sends one request with Basic credentials and returns the status
// and body.
func basicDo(t *testing.T, method, u, user, pass string, form url.Values) (int, []byte) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, u, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.SetBasicAuth(user, pass)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// TestKeyRevocationAcrossNodes: a key deleted through one node stops
// authenticating REST and verifying tokens on another node at once (the
// REST credential cache is dropped through the bus before the delete is
// answered).
func TestKeyRevocationAcrossNodes(t *testing.T) {
	c := NewCluster(t, Config{Nodes: 2})
	a, b := c.Nodes[0], c.Nodes[1]
	cr := c.Creds
	keys := a.URL + "/2010-04-01/Accounts/" + cr.AccountSID + "/Keys"

	status, body := basicDo(t, "POST", keys+".json", cr.AccountSID, cr.AuthToken, url.Values{"FriendlyName": {"backend"}})
	var k struct{ SID, Secret string }
	if err := json.Unmarshal(body, &k); status != 201 || err != nil || k.Secret == "" {
		t.Fatalf("create key on %s = %d %s", a.Name, status, body)
	}
	svc := b.URL + "/v1/Services/" + cr.ServiceSID
	if status, body := basicDo(t, "GET", svc, k.SID, k.Secret, nil); status != 200 {
		t.Fatalf("REST on %s with the new key = %d %s", b.Name, status, body)
	}
	tok, err := token.Mint(token.Params{AccountSID: cr.AccountSID, APIKeySID: k.SID, APISecret: k.Secret,
		Identity: "alice", ServiceSID: cr.ServiceSID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Server.Verifier().Verify(context.Background(), tok); err != nil {
		t.Fatalf("Verify on %s = %v", b.Name, err)
	}

	if status, body := basicDo(t, "DELETE", keys+"/"+k.SID+".json", cr.APIKeySID, cr.APISecret, nil); status != 204 {
		t.Fatalf("delete key on %s = %d %s", a.Name, status, body)
	}
	if status, _ := basicDo(t, "GET", svc, k.SID, k.Secret, nil); status != 401 {
		t.Errorf("REST on %s with the deleted key = %d, want 401", b.Name, status)
	}
	if _, err := b.Server.Verifier().Verify(context.Background(), tok); chorus.ErrorCode(err) != chorus.ErrTokenIssuer.Code {
		t.Errorf("Verify on %s after the delete = %v, want %d", b.Name, err, chorus.ErrTokenIssuer.Code)
	}
}
