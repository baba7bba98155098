package server

import (
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/chorus-sync/chorus/internal/logtest"
	"github.com/chorus-sync/chorus/token"
)

// TestDefaultServiceDoesNotMove: "default" (REST's alias, and the service
// of access tokens minted without one) is the operator's configured
// service. Deleted, it names nothing: tokens minted for "default" reached
// the account's next-oldest service, with data their holders were never
// meant to see.
func TestDefaultServiceDoesNotMove(t *testing.T) {
	dir := t.TempDir()
	s := newServer(t, Config{DataDir: dir})
	c := s.Credentials()
	rest := func(method, path string, form url.Values) (int, map[string]any) {
		t.Helper()
		var body *strings.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		} else {
			body = strings.NewReader("")
		}
		req := httptest.NewRequest(method, path, body)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		req.SetBasicAuth(c.AccountSID, c.AuthToken)
		req.RemoteAddr = "127.0.0.1:40003"
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		var m map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &m)
		return rec.Code, m
	}
	// A second service, older than none but holding other data.
	code, other := rest("POST", "/v1/Services", url.Values{"FriendlyName": {"payroll"}})
	if code != 201 {
		t.Fatalf("create service = %d %v", code, other)
	}
	otherSID := other["sid"].(string)
	if code, m := rest("POST", "/v1/Services/"+otherSID+"/Documents", url.Values{"UniqueName": {"payroll"}, "Data": {`{"salary":1}`}}); code != 201 {
		t.Fatalf("create document = %d %v", code, m)
	}
	if code, m := rest("GET", "/v1/Services/default", nil); code != 200 || m["sid"] != c.ServiceSID {
		t.Fatalf("GET /v1/Services/default = %d %v, want %s", code, m, c.ServiceSID)
	}
	tok, err := token.Mint(token.Params{AccountSID: c.AccountSID, APIKeySID: c.APIKeySID, APISecret: c.APISecret, Identity: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	fetch := func() int {
		t.Helper()
		req := httptest.NewRequest("GET", "/v3/Documents/payroll", nil)
		req.Header.Set("X-Twilio-Token", tok)
		req.RemoteAddr = "127.0.0.1:40004"
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	if code := fetch(); code != 404 {
		t.Fatalf("the payroll document through a token for the default service = %d, want 404", code)
	}
	if code, m := rest("DELETE", "/v1/Services/"+c.ServiceSID, nil); code != 204 {
		t.Fatalf("delete the default service = %d %v", code, m)
	}
	if code, m := rest("GET", "/v1/Services/default", nil); code != 404 {
		t.Errorf("GET /v1/Services/default after its deletion = %d %v, want 404", code, m)
	}
	if code := fetch(); code == 200 {
		t.Errorf("a token for the deleted default service reads another service's document (%d)", code)
	}
	// A restart (credentials generated, none given) makes the configured
	// service anew, empty, under its SID: it took the account's oldest
	// service for the operator's then, payroll's.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var logs logtest.Buffer
	s = newServer(t, Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	// The account's oldest service is payroll's now: the start says that
	// "default" names the configured one, not it (it did before).
	if !strings.Contains(logs.String(), "oldest_service="+otherSID) {
		t.Errorf("the start did not say that default names the configured service, not the oldest: %s", logs.String())
	}
	if got := s.Credentials().ServiceSID; got != c.ServiceSID {
		t.Errorf("after a restart the operator's service is %s, want %s made anew", got, c.ServiceSID)
	}
	if code, m := rest("GET", "/v1/Services/default", nil); code != 200 || m["sid"] != c.ServiceSID {
		t.Errorf("GET /v1/Services/default after a restart = %d %v, want the configured service %s", code, m, c.ServiceSID)
	}
	if code := fetch(); code != 404 {
		t.Errorf("after a restart, a token minted without a service reads payroll's document (%d), want 404", code)
	}
}
