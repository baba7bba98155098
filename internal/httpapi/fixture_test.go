package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	twilio "github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/sync/v1"
)

// fixture is a real engine over SQLite and the in-memory bus, served by
// the REST handler on an httptest server.
type fixture struct {
	t     testing.TB
	srv   *httptest.Server
	eng   *engine.Engine
	creds engine.Credentials
	svc   string              // the bootstrapped service SID
	sync  *openapi.ApiService // twilio-go, account SID + auth token
	reqs  atomic.Int64        // requests sent by twilio-go clients
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	// The helper library rewrites hosts when these are set.
	t.Setenv("TWILIO_EDGE", "")
	t.Setenv("TWILIO_REGION", "")
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	bus := mem.New()
	t.Cleanup(func() { bus.Close() })
	eng := engine.New(engine.Config{Store: st, Bus: bus})
	creds, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	f := &fixture{t: t, eng: eng, creds: creds, svc: creds.ServiceSID}
	f.srv = httptest.NewServer(New(Config{Engine: eng}))
	t.Cleanup(f.srv.Close)
	f.sync = f.client(creds.AccountSID, creds.AuthToken)
	return f
}

// rewriteHost sends every request to the test server, whatever host the
// helper library addressed (https://sync.twilio.com or a next_page_url).
type rewriteHost struct {
	target *url.URL
	rt     http.RoundTripper
	n      *atomic.Int64
}

func (h rewriteHost) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.URL.Scheme = h.target.Scheme
	r.URL.Host = h.target.Host
	r.Host = ""
	h.n.Add(1)
	return h.rt.RoundTrip(r)
}

// client returns the official twilio-go Sync v1 client with the given
// Basic credentials.
func (f *fixture) client(user, pass string) *openapi.ApiService {
	return f.clientAt(f.srv, user, pass)
}

// clientAt is client for another server.
func (f *fixture) clientAt(srv *httptest.Server, user, pass string) *openapi.ApiService {
	u, _ := url.Parse(srv.URL)
	c := &client.Client{
		Credentials: client.NewCredentials(user, pass),
		HTTPClient:  &http.Client{Transport: rewriteHost{target: u, rt: srv.Client().Transport, n: &f.reqs}},
	}
	c.SetAccountSid(f.creds.AccountSID)
	rc := twilio.NewRestClientWithParams(twilio.ClientParams{Username: user, Password: pass, AccountSid: f.creds.AccountSID, Client: c})
	return rc.SyncV1
}

// do sends a raw request with the account credentials. form goes in the
// body for POST and in the query otherwise.
func (f *fixture) do(method, path string, form url.Values, hdr map[string]string) (*http.Response, []byte) {
	f.t.Helper()
	return f.doAs(f.creds.AccountSID, f.creds.AuthToken, method, path, form, hdr)
}

func (f *fixture) doAs(user, pass, method, path string, form url.Values, hdr map[string]string) (*http.Response, []byte) {
	f.t.Helper()
	u := f.srv.URL + path
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(form.Encode())
	} else if len(form) > 0 {
		u += "?" + form.Encode()
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp, b
}

// getJSON GETs path and decodes a 200 body.
func (f *fixture) getJSON(path string, v any) {
	f.t.Helper()
	resp, b := f.do(http.MethodGet, path, nil, nil)
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("GET %s = %d %s, want 200", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		f.t.Fatalf("GET %s: decode: %v", path, err)
	}
}

// wantTwilioErr checks that err is a TwilioRestError with status and code.
func wantTwilioErr(t testing.TB, op string, err error, status, code int) {
	t.Helper()
	var te *client.TwilioRestError
	if !errors.As(err, &te) {
		t.Fatalf("%s error = %v (%T), want *client.TwilioRestError %d/%d", op, err, err, status, code)
	}
	if te.Status != status || te.Code != code {
		t.Fatalf("%s error = %d/%d %q, want %d/%d", op, te.Status, te.Code, te.Message, status, code)
	}
	if te.MoreInfo != "https://www.twilio.com/docs/errors/"+itoa(code) {
		t.Errorf("%s more_info = %q", op, te.MoreInfo)
	}
}

// jsonOf renders a twilio-go data value for comparison.
func jsonOf(t testing.TB, v *interface{}) string {
	t.Helper()
	if v == nil {
		return "<nil>"
	}
	b, err := json.Marshal(*v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func str(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// newAccount bootstraps a second, unrelated account with its own service.
func (f *fixture) newAccount() engine.Credentials {
	f.t.Helper()
	want := engine.Credentials{
		AccountSID: chorus.NewSID(chorus.PrefixAccount),
		AuthToken:  chorus.NewSecret(32),
		APIKeySID:  chorus.NewSID(chorus.PrefixAPIKey),
		APISecret:  chorus.NewSecret(32),
		ServiceSID: chorus.NewSID(chorus.PrefixService),
	}
	got, _, err := f.eng.Bootstrap(context.Background(), want)
	if err != nil {
		f.t.Fatalf("Bootstrap(second account): %v", err)
	}
	return got
}
