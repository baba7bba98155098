package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	accounts "github.com/twilio/twilio-go/rest/accounts/v1"
	api "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/logtest"
	"github.com/chorus-sync/chorus/token"
)

// rewriteHost sends every request to the test server, whatever host
// twilio-go addressed (api.twilio.com, accounts.twilio.com).
type rewriteHost struct {
	target *url.URL
	rt     http.RoundTripper
}

func (h rewriteHost) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host, r.Host = h.target.Scheme, h.target.Host, ""
	return h.rt.RoundTrip(r)
}

// twilioClient is the official twilio-go client pointed at srv.
func twilioClient(t *testing.T, srv *httptest.Server, account, user, pass string) *twilio.RestClient {
	t.Helper()
	t.Setenv("TWILIO_EDGE", "")
	t.Setenv("TWILIO_REGION", "")
	u, _ := url.Parse(srv.URL)
	c := &client.Client{
		Credentials: client.NewCredentials(user, pass),
		HTTPClient:  &http.Client{Transport: rewriteHost{target: u, rt: srv.Client().Transport}},
	}
	c.SetAccountSid(account)
	return twilio.NewRestClientWithParams(twilio.ClientParams{Username: user, Password: pass, AccountSid: account, Client: c})
}

// twilioCode is the Twilio error code and status of a twilio-go error.
func twilioCode(err error) (code, status int) {
	var te *client.TwilioRestError
	if errors.As(err, &te) {
		return te.Code, te.Status
	}
	return 0, 0
}

// restStatus is the status of GET /v1/Services with Basic user:pass.
func restStatus(t *testing.T, srv *httptest.Server, user, pass string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL+"/v1/Services", nil)
	req.SetBasicAuth(user, pass)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestKeysWithTwilioGo(t *testing.T) {
	s := newServer(t, Config{})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	cr := s.Credentials()
	tc := twilioClient(t, srv, cr.AccountSID, cr.AccountSID, cr.AuthToken)

	before := time.Now().Add(-time.Second)
	var created []*api.ApiV2010NewKey
	for _, name := range []string{"backend", "worker"} {
		k, err := tc.Api.CreateNewKey(&api.CreateNewKeyParams{FriendlyName: &name})
		if err != nil {
			t.Fatalf("CreateNewKey(%s) = %v", name, err)
		}
		if k.Sid == nil || !chorus.IsSID(chorus.PrefixAPIKey, *k.Sid) || k.Secret == nil || len(*k.Secret) < 32 || *k.FriendlyName != name {
			t.Fatalf("CreateNewKey = %+v", k)
		}
		d, err := time.Parse(time.RFC1123Z, *k.DateCreated)
		if err != nil || d.Before(before) || *k.DateUpdated != *k.DateCreated {
			t.Errorf("date_created %q (%v), date_updated %q: want RFC 2822 times of now", *k.DateCreated, err, *k.DateUpdated)
		}
		created = append(created, k)
		// Keys list in creation order to the millisecond, then by SID:
		// keep the two apart so that the order below is the creation's.
		time.Sleep(2 * time.Millisecond)
	}

	// Listing pages through all three keys, one per page, without secrets.
	one := 1
	keys, err := tc.Api.ListKey(&api.ListKeyParams{PageSize: &one})
	if err != nil {
		t.Fatalf("ListKey = %v", err)
	}
	var sids []string
	for _, k := range keys {
		sids = append(sids, *k.Sid)
	}
	if want := []string{cr.APIKeySID, *created[0].Sid, *created[1].Sid}; strings.Join(sids, ",") != strings.Join(want, ",") {
		t.Errorf("ListKey = %v, want %v", sids, want)
	}
	raw := getBody(t, srv, "GET", "/2010-04-01/Accounts/"+cr.AccountSID+"/Keys.json", cr.AccountSID, cr.AuthToken)
	if bytes.Contains(raw, []byte("secret")) || !bytes.Contains(raw, []byte(`"next_page_uri":null`)) || !bytes.Contains(raw, []byte(`"page_size":50`)) {
		t.Errorf("Keys.json = %s", raw)
	}

	k0 := *created[0].Sid
	got, err := tc.Api.FetchKey(k0, nil)
	if err != nil || *got.FriendlyName != "backend" {
		t.Fatalf("FetchKey = %+v, %v", got, err)
	}
	name := "backend v2"
	got, err = tc.Api.UpdateKey(k0, &api.UpdateKeyParams{FriendlyName: &name})
	if err != nil || *got.FriendlyName != name {
		t.Fatalf("UpdateKey = %+v, %v", got, err)
	}

	// A standard key works for REST and tokens but may not manage keys.
	sc := twilioClient(t, srv, cr.AccountSID, k0, *created[0].Secret)
	if code := restStatus(t, srv, k0, *created[0].Secret); code != 200 {
		t.Fatalf("REST with the new key = %d", code)
	}
	if _, err := sc.Api.ListKey(nil); !is(err, 20003, 403) {
		t.Errorf("ListKey as a standard key = %v, want 403 20003", err)
	}
	if _, err := sc.Api.CreateNewKey(nil); !is(err, 20003, 403) {
		t.Errorf("CreateNewKey as a standard key = %v, want 403 20003", err)
	}
	// The operator's main key may.
	mc := twilioClient(t, srv, cr.AccountSID, cr.APIKeySID, cr.APISecret)
	if _, err := mc.Api.FetchKey(k0, nil); err != nil {
		t.Errorf("FetchKey as the main key = %v", err)
	}
	// Another account's path is not found; a wrong secret is 401.
	other := chorus.NewSID(chorus.PrefixAccount)
	if _, err := tc.Api.FetchKey(k0, &api.FetchKeyParams{PathAccountSid: &other}); !is(err, 20404, 404) {
		t.Errorf("FetchKey under another account = %v, want 404", err)
	}
	bad := twilioClient(t, srv, cr.AccountSID, cr.AccountSID, "wrong")
	if _, err := bad.Api.ListKey(nil); !is(err, 20003, 401) {
		t.Errorf("ListKey with a wrong token = %v, want 401 20003", err)
	}

	// A token the key signed verifies until the key is deleted.
	tok, err := token.Mint(token.Params{AccountSID: cr.AccountSID, APIKeySID: k0, APISecret: *created[0].Secret,
		Identity: "alice", ServiceSID: cr.ServiceSID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verifier().Verify(context.Background(), tok); err != nil {
		t.Fatalf("Verify(token of the new key) = %v", err)
	}
	if err := tc.Api.DeleteKey(k0, nil); err != nil {
		t.Fatalf("DeleteKey = %v", err)
	}
	if code := restStatus(t, srv, k0, *created[0].Secret); code != 401 {
		t.Errorf("REST with the deleted key = %d, want 401", code)
	}
	if _, err := s.Verifier().Verify(context.Background(), tok); chorus.ErrorCode(err) != chorus.ErrTokenIssuer.Code {
		t.Errorf("Verify(token of the deleted key) = %v, want %d", err, chorus.ErrTokenIssuer.Code)
	}
	if _, err := tc.Api.FetchKey(k0, nil); !is(err, 20404, 404) {
		t.Errorf("FetchKey(deleted) = %v, want 404", err)
	}
	if err := tc.Api.DeleteKey(k0, nil); !is(err, 20404, 404) {
		t.Errorf("DeleteKey(deleted) = %v, want 404", err)
	}
}

func is(err error, code, status int) bool {
	c, s := twilioCode(err)
	return c == code && s == status
}

func getBody(t *testing.T, srv *httptest.Server, method, path, user, pass string) []byte {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, nil)
	req.SetBasicAuth(user, pass)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

func TestAuthTokenRotationWithTwilioGo(t *testing.T) {
	s := newServer(t, Config{})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	cr := s.Credentials()
	tc := twilioClient(t, srv, cr.AccountSID, cr.AccountSID, cr.AuthToken)

	sec, err := tc.AccountsV1.CreateSecondaryAuthToken(&accounts.CreateSecondaryAuthTokenParams{})
	if err != nil || sec.SecondaryAuthToken == nil || len(*sec.SecondaryAuthToken) < 32 || *sec.AccountSid != cr.AccountSID {
		t.Fatalf("CreateSecondaryAuthToken = %+v, %v", sec, err)
	}
	second := *sec.SecondaryAuthToken
	for _, tok := range []string{cr.AuthToken, second} {
		if code := restStatus(t, srv, cr.AccountSID, tok); code != 200 {
			t.Errorf("REST during the rotation = %d, want 200 with both tokens", code)
		}
	}
	// A standard key may not rotate.
	k, err := tc.Api.CreateNewKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := twilioClient(t, srv, cr.AccountSID, *k.Sid, *k.Secret).AccountsV1.UpdateAuthTokenPromotion(&accounts.UpdateAuthTokenPromotionParams{}); !is(err, 20003, 403) {
		t.Errorf("promotion by a standard key = %v, want 403 20003", err)
	}
	p, err := tc.AccountsV1.UpdateAuthTokenPromotion(&accounts.UpdateAuthTokenPromotionParams{})
	if err != nil || *p.AuthToken != second {
		t.Fatalf("UpdateAuthTokenPromotion = %+v, %v", p, err)
	}
	if code := restStatus(t, srv, cr.AccountSID, cr.AuthToken); code != 401 {
		t.Errorf("REST with the old primary = %d, want 401", code)
	}
	if a, _ := s.Engine().Account(context.Background(), cr.AccountSID); a.AuthToken != second {
		t.Error("webhooks do not sign with the promoted token")
	}

	// The same under API v2010's paths; then delete the secondary.
	nc := twilioClient(t, srv, cr.AccountSID, cr.AccountSID, second)
	if _, err := nc.AccountsV1.CreateSecondaryAuthToken(&accounts.CreateSecondaryAuthTokenParams{}); err != nil {
		t.Fatal(err)
	}
	if b := getBody(t, srv, "DELETE", "/2010-04-01/Accounts/"+cr.AccountSID+"/AuthTokens/Secondary.json", cr.AccountSID, second); len(b) != 0 {
		t.Errorf("DELETE Secondary.json = %s, want 204", b)
	}
	if err := nc.AccountsV1.DeleteSecondaryAuthToken(&accounts.DeleteSecondaryAuthTokenParams{}); !is(err, 20404, 404) {
		t.Errorf("DeleteSecondaryAuthToken without one = %v, want 404", err)
	}
	if b := getBody(t, srv, "POST", "/2010-04-01/Accounts/"+cr.AccountSID+"/AuthTokens/Secondary.json", cr.AccountSID, second); !bytes.Contains(b, []byte(`"secondary_auth_token":"`)) {
		t.Errorf("POST Secondary.json = %s", b)
	}
}

func TestOperatorCredentialsRevokeOthers(t *testing.T) {
	dir := t.TempDir()
	dev := newServer(t, Config{DataDir: dir})
	devCreds := dev.Credentials()
	k, err := dev.Engine().CreateAPIKey(context.Background(), engine.Credential{AccountSID: devCreds.AccountSID, SID: devCreds.AccountSID, Main: true}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}

	var logs logtest.Buffer
	op := operatorCreds()
	s := newServer(t, Config{DataDir: dir, Creds: op, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	for _, pair := range [][2]string{{devCreds.AccountSID, devCreds.AuthToken}, {devCreds.APIKeySID, devCreds.APISecret}, {k.SID, k.Secret}} {
		if code := restStatus(t, srv, pair[0], pair[1]); code != 401 {
			t.Errorf("REST as %s after the operator's start = %d, want 401", pair[0], code)
		}
	}
	if code := restStatus(t, srv, op.APIKeySID, op.APISecret); code != 200 {
		t.Errorf("REST with the operator's key = %d", code)
	}
	out := logs.String()
	for _, sid := range []string{devCreds.AccountSID, devCreds.APIKeySID, k.SID} {
		if !strings.Contains(out, sid) {
			t.Errorf("the start did not log revoked %s: %s", sid, out)
		}
	}
	for _, secret := range []string{devCreds.AuthToken, devCreds.APISecret, k.Secret, op.AuthToken, op.APISecret} {
		if strings.Contains(out, secret) {
			t.Errorf("the start logged a secret: %s", out)
		}
	}

	// Operator secrets shorter than 32 characters are refused.
	short := op
	short.APISecret = "short"
	if _, err := New(context.Background(), Config{DataDir: dir, Creds: short}); err == nil || !strings.Contains(err.Error(), "32") {
		t.Errorf("New with a 5-character secret = %v, want a refusal", err)
	}
}

// An auth token rotation outlives a node's restart: README's rotation
// creates a secondary token, moves the apps to it and promotes it, and a
// node may restart meanwhile with the same TWILIO_* variables. New
// operator credentials end the secondary, with a log line.
func TestRotationSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	op := operatorCreds()
	s := newServer(t, Config{DataDir: dir, Creds: op})
	a, err := s.Engine().CreateSecondaryAuthToken(context.Background(), engine.Credential{AccountSID: op.AccountSID, SID: op.AccountSID, Main: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = newServer(t, Config{DataDir: dir, Creds: op})
	srv := httptest.NewServer(s.Handler())
	if code := restStatus(t, srv, op.AccountSID, a.SecondaryAuthToken); code != 200 {
		t.Errorf("REST with the secondary auth token after a restart with the same credentials = %d, want 200", code)
	}
	srv.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	var logs logtest.Buffer
	next := op
	next.AuthToken = "a-new-auth-token-of-32-characters-or-more"
	s = newServer(t, Config{DataDir: dir, Creds: next, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	srv = httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	if code := restStatus(t, srv, op.AccountSID, a.SecondaryAuthToken); code != 401 {
		t.Errorf("REST with the secondary auth token after a new TWILIO_AUTH_TOKEN = %d, want 401", code)
	}
	if out := logs.String(); !strings.Contains(out, "revoked the secondary auth token") || !strings.Contains(out, op.AccountSID) || strings.Contains(out, a.SecondaryAuthToken) {
		t.Errorf("log of the revoked secondary: %s", out)
	}
}

// A node restarted with the environment of before a rotation (a
// supervisor restarting it after a crash, its TWILIO_* not updated yet)
// serves with the stored credentials instead of applying its own: it used
// to bring the retired, perhaps leaked, auth token back and lock out the
// new one on every node of the cluster, and to revoke the new key and
// reinstate the old.
func TestStaleEnvironmentDoesNotUndoRotation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	op := operatorCreds()
	start := func(creds engine.Credentials) (*Server, *httptest.Server, *logtest.Buffer) {
		t.Helper()
		var logs logtest.Buffer
		s := newServer(t, Config{DataDir: dir, Creds: creds, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		srv := httptest.NewServer(s.Handler())
		return s, srv, &logs
	}
	stop := func(s *Server, srv *httptest.Server) {
		t.Helper()
		srv.Close()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	checkLog := func(logs *logtest.Buffer, what string, secrets ...string) {
		t.Helper()
		out := logs.String()
		if !strings.Contains(out, "were replaced since") || !strings.Contains(out, what) {
			t.Errorf("no warning naming %s: %s", what, out)
		}
		for _, secret := range secrets {
			if strings.Contains(out, secret) {
				t.Errorf("the log shows a secret: %s", out)
			}
		}
	}

	// The auth token rotated through the API.
	s, srv := newServer(t, Config{DataDir: dir, Creds: op}), (*httptest.Server)(nil)
	main := engine.Credential{AccountSID: op.AccountSID, SID: op.AccountSID, Main: true}
	if _, err := s.Engine().CreateSecondaryAuthToken(ctx, main); err != nil {
		t.Fatal(err)
	}
	a, err := s.Engine().PromoteSecondaryAuthToken(ctx, main)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, srv, logs := start(op)
	if old, now := restStatus(t, srv, op.AccountSID, op.AuthToken), restStatus(t, srv, op.AccountSID, a.AuthToken); old != 401 || now != 200 {
		t.Errorf("after a restart with the token the API replaced: REST with it %d, with the promoted one %d; want 401, 200", old, now)
	}
	checkLog(logs, "TWILIO_AUTH_TOKEN", op.AuthToken, op.APISecret, a.AuthToken)
	stop(s, srv)

	// A new key given to one node, which revokes the old one; then a
	// node with the old key restarts.
	current := op
	current.AuthToken = a.AuthToken
	next := current
	next.APIKeySID, next.APISecret = chorus.NewSID(chorus.PrefixAPIKey), chorus.NewSecret(32)
	s, srv, _ = start(next)
	stop(s, srv)
	s, srv, logs = start(current)
	if old, now := restStatus(t, srv, op.APIKeySID, op.APISecret), restStatus(t, srv, next.APIKeySID, next.APISecret); old != 401 || now != 200 {
		t.Errorf("after a restart with the revoked key: REST with it %d, with the new one %d; want 401, 200", old, now)
	}
	checkLog(logs, "TWILIO_API_KEY", op.APISecret, next.APISecret)
	if got := s.Credentials(); got.APIKeySID != next.APIKeySID {
		t.Errorf("the node serves with key %s, want the stored %s", got.APIKeySID, next.APIKeySID)
	}
	stop(s, srv)

	// The operator's own next rotation through the environment still
	// takes effect.
	newer := next
	newer.AuthToken = chorus.NewSecret(32)
	s, srv, logs = start(newer)
	if old, now := restStatus(t, srv, op.AccountSID, a.AuthToken), restStatus(t, srv, op.AccountSID, newer.AuthToken); old != 401 || now != 200 {
		t.Errorf("after a new TWILIO_AUTH_TOKEN: REST with the one before %d, with the new one %d; want 401, 200", old, now)
	}
	if strings.Contains(logs.String(), "were replaced since") {
		t.Errorf("a new token was taken for a stale one: %s", logs.String())
	}
	stop(s, srv)
}
