package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/gateway"
)

func doBearer(tb testing.TB, h http.Handler, method, path, tok string) response {
	tb.Helper()
	req := httptest.NewRequest(method, path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	return serve(tb, h, req)
}

func TestSession(t *testing.T) {
	f := newFixture(t)
	h := New(Config{Engine: f.eng, OperatorAccount: f.creds.AccountSID, Logger: quietLogger()})

	res := do(t, h, http.MethodPost, "/admin/v1/Session", f.creds.APIKeySID, f.creds.APISecret, nil)
	tok, _ := res.body["token"].(string)
	if res.status != http.StatusCreated || !strings.HasPrefix(tok, "chorus-session.") || strings.Contains(tok, f.creds.APISecret) {
		t.Fatalf("POST Session = %d %v", res.status, res.body)
	}
	if exp := res.body["expires_in"].(float64); exp < 60 || exp > engine.ConsoleSessionTTL.Seconds() {
		t.Errorf("expires_in = %v", exp)
	}
	if res.body["credential_sid"] != f.creds.APIKeySID || res.body["auth_method"] != "api_key" {
		t.Errorf("POST Session = %v", res.body)
	}
	// The session authenticates the admin API, and renews itself.
	if res := doBearer(t, h, http.MethodGet, "/admin/v1/Account", tok); res.status != 200 || res.body["credential_sid"] != f.creds.APIKeySID {
		t.Errorf("GET Account with the session = %d %v", res.status, res.body)
	}
	if res := doBearer(t, h, http.MethodPost, "/admin/v1/Tokens", tok); res.status != http.StatusCreated || res.body["token"] == nil {
		t.Errorf("POST Tokens with the session = %d %v", res.status, res.body)
	}
	renewed := doBearer(t, h, http.MethodPost, "/admin/v1/Session", tok)
	if renewed.status != http.StatusCreated || renewed.body["token"] == tok {
		t.Errorf("renewing the session = %d %v", renewed.status, renewed.body)
	}

	// Wrong credentials, garbage, and an access token are refused.
	for _, r := range []response{
		do(t, h, http.MethodPost, "/admin/v1/Session", f.creds.APIKeySID, "wrong", nil),
		do(t, h, http.MethodPost, "/admin/v1/Session", "", "", nil),
		doBearer(t, h, http.MethodPost, "/admin/v1/Session", "chorus-session.e30.AAAA"),
		doBearer(t, h, http.MethodGet, "/admin/v1/Stats", tok[:len(tok)-4]+"AAAA"),
	} {
		if r.status != 401 || r.body["code"] != float64(20003) {
			t.Errorf("refused session = %d %v, want 401 20003", r.status, r.body)
		}
	}

	// Revoking the key ends the session at once.
	acct := engine.Credential{AccountSID: f.creds.AccountSID, SID: f.creds.AccountSID, Main: true}
	if err := f.eng.DeleteAPIKey(context.Background(), acct, f.creds.APIKeySID); err != nil {
		t.Fatal(err)
	}
	if res := doBearer(t, h, http.MethodGet, "/admin/v1/Account", tok); res.status != 401 {
		t.Errorf("GET Account with the session of a revoked key = %d, want 401", res.status)
	}
}

func TestStatsScope(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	gw := fakeGateway{gateway.Stats{Connections: 3, Subscriptions: 7}}
	h := New(Config{Engine: f.eng, Gateway: gw, OperatorAccount: f.creds.AccountSID, Logger: quietLogger()})
	other := engine.Credentials{
		AccountSID: chorus.NewSID(chorus.PrefixAccount), AuthToken: chorus.NewSecret(32),
		APIKeySID: chorus.NewSID(chorus.PrefixAPIKey), APISecret: chorus.NewSecret(32),
		ServiceSID: chorus.NewSID(chorus.PrefixService),
	}
	if _, _, err := f.eng.Bootstrap(ctx, other); err != nil {
		t.Fatal(err)
	}
	res := do(t, h, http.MethodGet, "/admin/v1/Stats", other.APIKeySID, other.APISecret, nil)
	if res.status != 200 || res.body["scope"] != "account" || res.body["account_sid"] != other.AccountSID || res.body["services"] != float64(1) {
		t.Fatalf("Stats for another account = %d %v", res.status, res.body)
	}
	for _, k := range []string{"connections", "subscriptions", "topics", "events_delivered", "events_per_second", "events_posted", "writes"} {
		if v, ok := res.body[k]; !ok || v != nil {
			t.Errorf("Stats[%q] for another account = %v, want null", k, v)
		}
	}
	res = do(t, h, http.MethodGet, "/admin/v1/Stats", f.creds.AccountSID, f.creds.AuthToken, nil)
	if res.body["scope"] != "node" || res.body["connections"] != float64(3) {
		t.Errorf("Stats for the operator = %v", res.body)
	}
	// Without an operator nobody sees node totals.
	h = New(Config{Engine: f.eng, Gateway: gw, Logger: quietLogger()})
	if res := do(t, h, http.MethodGet, "/admin/v1/Stats", f.creds.AccountSID, f.creds.AuthToken, nil); res.body["connections"] != nil {
		t.Errorf("Stats without an operator = %v", res.body)
	}
}

func serve(tb testing.TB, h http.Handler, req *http.Request) response {
	tb.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := response{status: rec.Code, header: rec.Header()}
	if err := json.Unmarshal(rec.Body.Bytes(), &res.body); err != nil {
		tb.Fatalf("%s %s: body %q is not a JSON object: %v", req.Method, req.URL.Path, rec.Body.String(), err)
	}
	return res
}

// TestConsoleSignOut: DELETE /admin/v1/Session ends the sign-in of its
// token on every node sharing the store: that token, the one renewed from
// it, and a copy of either taken before are refused, and cannot be
// renewed; another sign-in of the same credential goes on. Before, signing
// out only forgot the token in the browser, and a copy stayed valid for up
// to 12 hours of renewals.
func TestConsoleSignOut(t *testing.T) {
	f := newFixture(t)
	h := New(Config{Engine: f.eng, OperatorAccount: f.creds.AccountSID, Logger: quietLogger()})
	// Another node: its own engine (and caches) on the same store.
	other := New(Config{Engine: engine.New(engine.Config{Store: f.st, Bus: f.bus, Logger: quietLogger()}),
		OperatorAccount: f.creds.AccountSID, Logger: quietLogger()})
	signIn := func() string {
		t.Helper()
		res := do(t, h, http.MethodPost, "/admin/v1/Session", f.creds.AccountSID, f.creds.AuthToken, nil)
		if res.status != http.StatusCreated {
			t.Fatalf("POST Session = %d %v", res.status, res.body)
		}
		return res.body["token"].(string)
	}
	captured := signIn()
	renewed := doBearer(t, h, http.MethodPost, "/admin/v1/Session", captured).body["token"].(string)
	kept := signIn()
	for _, tok := range []string{captured, renewed, kept} {
		if res := doBearer(t, other, http.MethodGet, "/admin/v1/Account", tok); res.status != 200 {
			t.Fatalf("GET Account on the other node before the sign-out = %d %v", res.status, res.body)
		}
	}

	req := httptest.NewRequest(http.MethodDelete, "/admin/v1/Session", nil)
	req.Header.Set("Authorization", "Bearer "+renewed)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent || rec.Body.Len() != 0 {
		t.Fatalf("DELETE Session = %d %q, want 204 and no body", rec.Code, rec.Body.String())
	}
	for name, tok := range map[string]string{"the signed-out token": renewed, "the copy taken before its renewal": captured} {
		for node, hh := range map[string]http.Handler{"this node": h, "the other node": other} {
			if res := doBearer(t, hh, http.MethodGet, "/admin/v1/Account", tok); res.status != 401 || res.body["code"] != float64(20003) {
				t.Errorf("GET Account with %s on %s = %d %v, want 401 20003", name, node, res.status, res.body)
			}
			if res := doBearer(t, hh, http.MethodPost, "/admin/v1/Session", tok); res.status != 401 {
				t.Errorf("renewing %s on %s = %d %v, want 401", name, node, res.status, res.body)
			}
		}
	}
	if res := doBearer(t, other, http.MethodGet, "/admin/v1/Account", kept); res.status != 200 {
		t.Errorf("GET Account with another sign-in of the same credential = %d %v, want 200", res.status, res.body)
	}
	// Signed out already, Basic credentials, or garbage: 401, nothing ended.
	for _, res := range []response{
		doBearer(t, h, http.MethodDelete, "/admin/v1/Session", renewed),
		do(t, h, http.MethodDelete, "/admin/v1/Session", f.creds.AccountSID, f.creds.AuthToken, nil),
		doBearer(t, h, http.MethodDelete, "/admin/v1/Session", "chorus-session.e30.AAAA"),
	} {
		if res.status != 401 || res.body["code"] != float64(20003) {
			t.Errorf("DELETE Session = %d %v, want 401 20003", res.status, res.body)
		}
	}
	if res := doBearer(t, h, http.MethodGet, "/admin/v1/Account", kept); res.status != 200 {
		t.Errorf("GET Account with the other sign-in after the refused sign-outs = %d %v, want 200", res.status, res.body)
	}
}
