package accountapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
)

// revoker records RevokeKeys calls.
type revoker struct {
	mu    sync.Mutex
	calls []string
}

func (r *revoker) RevokeKeys(_ context.Context, accountSID string, keySIDs ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, accountSID+":"+strings.Join(keySIDs, ","))
	return nil
}

func setup(t *testing.T) (http.Handler, engine.Credentials, *revoker) {
	t.Helper()
	eng, creds, log := newEngine(t)
	rev := &revoker{}
	return New(Config{Engine: eng, Revoker: rev, PublicURL: "https://sync.example.com", Logger: log}), creds, rev
}

// newEngine opens an engine on a real SQLite file and bootstraps its
// credentials.
func newEngine(t *testing.T) (*engine.Engine, engine.Credentials, *slog.Logger) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "chorus.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	bus := mem.New()
	t.Cleanup(func() { _ = bus.Close(); _ = st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng := engine.New(engine.Config{Store: st, Bus: bus, Logger: log})
	creds, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	return eng, creds, log
}

func send(t *testing.T, h http.Handler, method, path, user, pass string, form url.Values) (int, map[string]any) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.SetBasicAuth(user, pass)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var m map[string]any
	if rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, path, rec.Body, err)
		}
	}
	return rec.Code, m
}

func TestKeysPagingAndErrors(t *testing.T) {
	h, cr, rev := setup(t)
	base := "/2010-04-01/Accounts/" + cr.AccountSID
	var sids []string
	for range 3 {
		code, k := send(t, h, "POST", base+"/Keys.json", cr.AccountSID, cr.AuthToken, url.Values{"FriendlyName": {"k"}})
		if code != 201 || k["secret"] == nil {
			t.Fatalf("create = %d %v", code, k)
		}
		sids = append(sids, k["sid"].(string))
	}
	code, page := send(t, h, "GET", base+"/Keys.json?PageSize=2&Page=1", cr.AccountSID, cr.AuthToken, nil)
	if code != 200 || page["page"] != float64(1) || page["page_size"] != float64(2) || page["start"] != float64(2) ||
		page["next_page_uri"] != nil || page["previous_page_uri"] != base+"/Keys.json?PageSize=2&Page=0" ||
		page["first_page_uri"] != base+"/Keys.json?PageSize=2&Page=0" || len(page["keys"].([]any)) != 2 {
		t.Errorf("page 1 = %d %v", code, page)
	}
	_, page = send(t, h, "GET", base+"/Keys.json?PageSize=2", cr.AccountSID, cr.AuthToken, nil)
	if page["next_page_uri"] != base+"/Keys.json?PageSize=2&Page=1" || page["end"] != float64(1) {
		t.Errorf("page 0 = %v", page)
	}
	_, page = send(t, h, "GET", base+"/Keys.json?Page=9", cr.AccountSID, cr.AuthToken, nil)
	if keys := page["keys"].([]any); len(keys) != 0 {
		t.Errorf("a page past the end = %v", page)
	}

	tests := []struct {
		method, path string
		status, code int
	}{
		{"GET", base + "/Keys.json?PageSize=0", 400, 54060},
		{"GET", base + "/Keys.json?PageSize=x", 400, 54060},
		{"GET", base + "/Keys.json?Page=-1", 400, 54060},
		{"GET", base + "/Keys/" + sids[0], 404, 20404}, // no .json
		{"GET", base + "/Keys/SKnope.json", 404, 20404},
		{"GET", "/2010-04-01/Accounts/AC00000000000000000000000000000000/Keys.json", 404, 20404},
		{"GET", "/2010-04-01/Accounts/" + cr.AccountSID + "/Calls.json", 404, 20404},
		{"DELETE", "/v1/AuthTokens/Secondary", 404, 20404}, // none yet
		{"PUT", base + "/Keys.json", 405, 20004},
		{"PATCH", base + "/Keys/" + sids[0] + ".json", 405, 20004},
		{"GET", "/v1/AuthTokens/Promote", 405, 20004},
	}
	for _, tt := range tests {
		code, body := send(t, h, tt.method, tt.path, cr.AccountSID, cr.AuthToken, nil)
		if code != tt.status || body["code"] != float64(tt.code) {
			t.Errorf("%s %s = %d %v, want %d %d", tt.method, tt.path, code, body, tt.status, tt.code)
		}
	}

	// Deleting closes the key's sessions through the revoker.
	if code, _ := send(t, h, "DELETE", base+"/Keys/"+sids[1]+".json", cr.AccountSID, cr.AuthToken, nil); code != 204 {
		t.Fatalf("delete = %d", code)
	}
	if len(rev.calls) != 1 || rev.calls[0] != cr.AccountSID+":"+sids[1] {
		t.Errorf("RevokeKeys calls = %v", rev.calls)
	}

	// The auth token resources carry Twilio's url.
	code, sec := send(t, h, "POST", "/v1/AuthTokens/Secondary", cr.APIKeySID, cr.APISecret, nil)
	if code != 201 || sec["url"] != "https://sync.example.com/v1/AuthTokens/Secondary" || sec["account_sid"] != cr.AccountSID {
		t.Errorf("create secondary = %d %v", code, sec)
	}
}

// TestKeyBodies: the Keys API reads its parameters as the REST API does:
// urlencoded, or multipart as twilio-node up to 3.40 sends it, and a body
// of another type or with a Content-Encoding is refused (415) rather than
// answered as if it had sent no FriendlyName.
func TestKeyBodies(t *testing.T) {
	h, cr, _ := setup(t)
	keys := "/2010-04-01/Accounts/" + cr.AccountSID + "/Keys.json"
	raw := func(method, path, ct, enc, body string) (int, map[string]any) {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", ct)
		if enc != "" {
			req.Header.Set("Content-Encoding", enc)
		}
		req.SetBasicAuth(cr.AccountSID, cr.AuthToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, path, rec.Body, err)
		}
		return rec.Code, m
	}
	mp := "--x\r\nContent-Disposition: form-data; name=\"FriendlyName\"\r\n\r\nmpkey\r\n--x--\r\n"
	code, k := raw("POST", keys, "multipart/form-data; boundary=x", "", mp)
	if code != 201 || k["friendly_name"] != "mpkey" {
		t.Fatalf("create (multipart) = %d %v, want 201 named mpkey", code, k)
	}
	sid := k["sid"].(string)
	one := "/2010-04-01/Accounts/" + cr.AccountSID + "/Keys/" + sid + ".json"
	code, k = raw("POST", one, "multipart/form-data; boundary=x", "", strings.ReplaceAll(mp, "mpkey", "renamed"))
	if code != 200 || k["friendly_name"] != "renamed" {
		t.Fatalf("update (multipart) = %d %v, want 200 renamed", code, k)
	}
	for _, tc := range []struct{ path, ct, enc, body string }{
		{keys, "application/json", "", `{"FriendlyName":"j"}`},
		{one, "application/json", "", `{"FriendlyName":"j"}`},
		{keys, "text/plain", "", "FriendlyName=t"},
		{one, "application/x-www-form-urlencoded", "gzip", "FriendlyName=g"},
	} {
		if code, e := raw("POST", tc.path, tc.ct, tc.enc, tc.body); code != 415 || e["code"] != float64(20415) {
			t.Errorf("POST %s as %s (encoding %q) = %d %v, want 415 20415", tc.path, tc.ct, tc.enc, code, e)
		}
	}
	if _, k = raw("GET", one, "", "", ""); k["friendly_name"] != "renamed" {
		t.Errorf("after the refused updates: %v, want still renamed", k)
	}
}

// TestUnknownParametersRefused: a parameter an operation does not take,
// or one given twice, is refused (54060), as REST v1 refuses it, rather
// than ignored: a key created with Bogus=1 was answered 201.
func TestUnknownParametersRefused(t *testing.T) {
	h, creds, _ := setup(t)
	keys := "/2010-04-01/Accounts/" + creds.AccountSID + "/Keys.json"
	for _, tt := range []struct {
		method, path string
		form         url.Values
	}{
		{"POST", keys, url.Values{"FriendlyName": {"k"}, "Bogus": {"1"}}},
		{"POST", keys, url.Values{"FriendlyName": {"a", "b"}}},
		{"GET", keys + "?Foo=1", nil},
		{"GET", keys + "?PageToken=garbage", nil},
		{"POST", "/v1/AuthTokens/Secondary", url.Values{"Foo": {"1"}}},
		{"POST", "/v1/AuthTokens/Promote", url.Values{"Foo": {"1"}}},
	} {
		code, body := send(t, h, tt.method, tt.path, creds.AccountSID, creds.AuthToken, tt.form)
		if code != http.StatusBadRequest || body["code"] != float64(54060) {
			t.Errorf("%s %s %v = %d %v, want 400 54060", tt.method, tt.path, tt.form, code, body)
		}
	}
	// What the helper libraries send still works.
	if code, body := send(t, h, "POST", keys, creds.AccountSID, creds.AuthToken, url.Values{"FriendlyName": {"k"}}); code != http.StatusCreated {
		t.Errorf("create a key = %d %v", code, body)
	}
	if code, body := send(t, h, "GET", keys+"?PageSize=20&Page=0", creds.AccountSID, creds.AuthToken, nil); code != http.StatusOK {
		t.Errorf("list keys = %d %v", code, body)
	}
}
