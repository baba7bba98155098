// Package compat drives a chorus binary (CHORUS_BIN) through one older
// version of the twilio-go helper library: each directory beside this
// file is a module that pins a version and links this file as
// compat_test.go (its leading underscore keeps it out of the main
// module, whose Go tests use the newest version: internal/httpapi).
package compat

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/sync/v1"
)

// Test credentials (not secrets): chorus serve makes exactly these valid.
const (
	accountSID = "AC0123456789abcdef0123456789abcdef"
	authToken  = "feedfacefeedfacefeedfacefeedface"
	apiKey     = "SK0123456789abcdef0123456789abcdef"
	apiSecret  = "s3cr3ts3cr3ts3cr3ts3cr3ts3cr3t01" // letters and digits: the library refuses others
	serviceSID = "IS0123456789abcdef0123456789abcdef"
)

// toChorus sends the library's requests (to sync.twilio.com) to Chorus,
// as the README shows.
type toChorus struct{ base *url.URL }

func (t toChorus) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host, r.Host = t.base.Scheme, t.base.Host, t.base.Host
	return http.DefaultTransport.RoundTrip(r)
}

// serve starts CHORUS_BIN on a free loopback port with a fresh data
// directory and returns its base URL.
func serve(t *testing.T) *url.URL {
	t.Helper()
	bin := os.Getenv("CHORUS_BIN")
	if bin == "" {
		t.Fatal("CHORUS_BIN must name the chorus binary under test")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "serve", "--listen", addr, "--log-level", "warn", "--data-dir", filepath.Join(t.TempDir(), "data"))
	cmd.Env = append(os.Environ(), "TWILIO_ACCOUNT_SID="+accountSID, "TWILIO_AUTH_TOKEN="+authToken,
		"TWILIO_API_KEY="+apiKey, "TWILIO_API_SECRET="+apiSecret, "TWILIO_SYNC_SERVICE_SID="+serviceSID)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	base := &url.URL{Scheme: "http", Host: addr}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(base.String() + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("chorus on %s not healthy after 30 s", addr)
		}
	}
}

// syncAPI is the library's Sync v1 client for user:pass, pointed at base.
func syncAPI(base *url.URL, user, pass string) *openapi.ApiService {
	c := &client.Client{Credentials: client.NewCredentials(user, pass), HTTPClient: &http.Client{Transport: toChorus{base}}}
	c.SetAccountSid(accountSID) // with a Client of its own, the library ignores ClientParams.AccountSid
	return twilio.NewRestClientWithParams(twilio.ClientParams{Username: user, Password: pass, AccountSid: accountSID, Client: c}).SyncV1
}

// intOf reads an int field that some versions declare as *int.
func intOf(v any) int64 {
	r := reflect.Indirect(reflect.ValueOf(v))
	if !r.IsValid() {
		return -1
	}
	return r.Int()
}

// wantCode fails t unless err is a Twilio error carrying code (the
// library's error types differ across versions; each prints the code).
func wantCode(t *testing.T, what string, err error, code int) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprint(code)) {
		t.Errorf("%s: %v, want error %d", what, err, code)
	}
}

func TestSyncThroughTheLibrary(t *testing.T) {
	t.Setenv("TWILIO_EDGE", "")
	t.Setenv("TWILIO_REGION", "")
	base := serve(t)
	for _, cred := range [][2]string{{accountSID, authToken}, {apiKey, apiSecret}} {
		api := syncAPI(base, cred[0], cred[1])
		t.Run(cred[0][:2], func(t *testing.T) { exercise(t, api) })
	}
}

func exercise(t *testing.T, api *openapi.ApiService) {
	name := fmt.Sprintf("doc-%d", time.Now().UnixNano())

	// Documents: create, fetch, conditional update, stale If-Match, paging, delete.
	d, err := api.CreateDocument(serviceSID, (&openapi.CreateDocumentParams{}).SetUniqueName(name).SetData(map[string]any{"n": 1, "s": "<a&b>"}).SetTtl(3600))
	if err != nil || d.Sid == nil || d.Revision == nil || d.DateExpires == nil {
		t.Fatalf("CreateDocument: %v %+v", err, d)
	}
	got, err := api.FetchDocument(serviceSID, name)
	if err != nil || *got.Sid != *d.Sid || fmt.Sprint(*got.Data) != fmt.Sprint(map[string]any{"n": 1.0, "s": "<a&b>"}) {
		t.Fatalf("FetchDocument: %v %+v", err, got)
	}
	up, err := api.UpdateDocument(serviceSID, *d.Sid, (&openapi.UpdateDocumentParams{}).SetIfMatch(*d.Revision).SetData(map[string]any{"n": 2}))
	if err != nil || *up.Revision == *d.Revision {
		t.Fatalf("UpdateDocument(If-Match current): %v %+v", err, up)
	}
	_, err = api.UpdateDocument(serviceSID, *d.Sid, (&openapi.UpdateDocumentParams{}).SetIfMatch(*d.Revision).SetData(map[string]any{"n": 3}))
	wantCode(t, "UpdateDocument(stale If-Match)", err, 54103)
	for i := range 5 {
		if _, err := api.CreateDocument(serviceSID, (&openapi.CreateDocumentParams{}).SetData(map[string]any{"i": i})); err != nil {
			t.Fatalf("CreateDocument %d: %v", i, err)
		}
	}
	docs, err := api.ListDocument(serviceSID, (&openapi.ListDocumentParams{}).SetPageSize(2))
	if err != nil || len(docs) < 6 {
		t.Fatalf("ListDocument(page size 2): %v, %d documents, want every one", err, len(docs))
	}
	seen := map[string]bool{}
	for _, x := range docs {
		if seen[*x.Sid] {
			t.Errorf("ListDocument gave %s twice", *x.Sid)
		}
		seen[*x.Sid] = true
	}
	limited, err := api.ListDocument(serviceSID, (&openapi.ListDocumentParams{}).SetPageSize(2).SetLimit(3))
	if err != nil || len(limited) != 3 {
		t.Errorf("ListDocument(limit 3): %v, %d documents", err, len(limited))
	}

	// Lists: items in both orders, from an index, update and delete.
	l, err := api.CreateSyncList(serviceSID, (&openapi.CreateSyncListParams{}).SetUniqueName(name))
	if err != nil {
		t.Fatalf("CreateSyncList: %v", err)
	}
	for i := range 4 {
		if _, err := api.CreateSyncListItem(serviceSID, *l.Sid, (&openapi.CreateSyncListItemParams{}).SetData(map[string]any{"i": i})); err != nil {
			t.Fatalf("CreateSyncListItem: %v", err)
		}
	}
	items, err := api.ListSyncListItem(serviceSID, *l.Sid, (&openapi.ListSyncListItemParams{}).SetOrder("desc").SetPageSize(3))
	if err != nil || len(items) != 4 || intOf(items[0].Index) != 3 || intOf(items[3].Index) != 0 {
		t.Errorf("ListSyncListItem(desc): %v, %d items", err, len(items))
	}
	from, err := api.ListSyncListItem(serviceSID, *l.Sid, (&openapi.ListSyncListItemParams{}).SetFrom("1").SetBounds("exclusive"))
	if err != nil || len(from) != 2 || intOf(from[0].Index) != 2 {
		t.Errorf("ListSyncListItem(from 1, exclusive): %v, %d items", err, len(from))
	}
	if _, err := api.UpdateSyncListItem(serviceSID, *l.Sid, 1, (&openapi.UpdateSyncListItemParams{}).SetData(map[string]any{"i": 10})); err != nil {
		t.Errorf("UpdateSyncListItem: %v", err)
	}
	if err := api.DeleteSyncListItem(serviceSID, *l.Sid, 2, nil); err != nil {
		t.Errorf("DeleteSyncListItem: %v", err)
	}
	_, err = api.FetchSyncListItem(serviceSID, *l.Sid, 2)
	wantCode(t, "FetchSyncListItem(deleted)", err, 20404)

	// Maps: a key with a space, a duplicate, conditional update.
	m, err := api.CreateSyncMap(serviceSID, (&openapi.CreateSyncMapParams{}).SetUniqueName(name))
	if err != nil {
		t.Fatalf("CreateSyncMap: %v", err)
	}
	it, err := api.CreateSyncMapItem(serviceSID, *m.Sid, (&openapi.CreateSyncMapItemParams{}).SetKey("k 1").SetData(map[string]any{"v": 1}))
	if err != nil {
		t.Fatalf("CreateSyncMapItem: %v", err)
	}
	_, err = api.CreateSyncMapItem(serviceSID, *m.Sid, (&openapi.CreateSyncMapItemParams{}).SetKey("k 1").SetData(map[string]any{"v": 2}))
	wantCode(t, "CreateSyncMapItem(duplicate key)", err, 54208)
	if _, err := api.UpdateSyncMapItem(serviceSID, *m.Sid, "k 1", (&openapi.UpdateSyncMapItemParams{}).SetIfMatch(*it.Revision).SetData(map[string]any{"v": 3})); err != nil {
		t.Errorf("UpdateSyncMapItem(If-Match current): %v", err)
	}
	mi, err := api.FetchSyncMapItem(serviceSID, *m.Sid, "k 1")
	if err != nil || fmt.Sprint(*mi.Data) != fmt.Sprint(map[string]any{"v": 3.0}) {
		t.Errorf("FetchSyncMapItem: %v %+v", err, mi)
	}

	// Streams and permissions.
	s, err := api.CreateSyncStream(serviceSID, (&openapi.CreateSyncStreamParams{}).SetUniqueName(name))
	if err != nil {
		t.Fatalf("CreateSyncStream: %v", err)
	}
	if msg, err := api.CreateStreamMessage(serviceSID, *s.Sid, (&openapi.CreateStreamMessageParams{}).SetData(map[string]any{"hi": true})); err != nil || msg.Sid == nil {
		t.Errorf("CreateStreamMessage: %v", err)
	}
	if p, err := api.UpdateDocumentPermission(serviceSID, *d.Sid, "alice", (&openapi.UpdateDocumentPermissionParams{}).SetRead(true).SetWrite(false).SetManage(false)); err != nil || !*p.Read || *p.Write {
		t.Errorf("UpdateDocumentPermission: %v", err)
	}

	// Bad input, and removal.
	_, err = api.CreateDocument(serviceSID, (&openapi.CreateDocumentParams{}).SetUniqueName(name))
	wantCode(t, "CreateDocument(duplicate unique name)", err, 54301)
	if err := api.DeleteDocument(serviceSID, *d.Sid); err != nil {
		t.Errorf("DeleteDocument: %v", err)
	}
	_, err = api.FetchDocument(serviceSID, *d.Sid)
	wantCode(t, "FetchDocument(deleted)", err, 20404)
}
