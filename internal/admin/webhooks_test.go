package admin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// hookFixture is an engine with a running webhook dispatcher over a real
// SQLite file, and a service whose receiver always answers 500.
type hookFixture struct {
	eng   *engine.Engine
	d     *webhook.Dispatcher
	creds engine.Credentials
	svc   *chorus.Service
	st    chorus.Store
}

func newHookFixture(t *testing.T) *hookFixture {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "chorus.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	policy := webhook.Policy{AllowPrivate: true}
	d := webhook.New(webhook.Config{Store: st, Policy: policy, Attempts: 1, Poll: 20 * time.Millisecond, Logger: quietLogger()})
	bus := mem.New()
	eng := engine.New(engine.Config{Store: st, Bus: bus, Logger: quietLogger(), Observe: d.Observe, Outbox: d, CheckWebhookURL: policy.CheckURL})
	creds, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(runCtx) }()
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		_ = d.Close(cctx)
		cancel()
		<-done
		recv.Close()
		_ = bus.Close()
		_ = st.Close()
	})
	hook, on := recv.URL+"/hook", true
	svc, err := eng.CreateService(ctx, creds.AccountSID, engine.ServiceParams{WebhookURL: &hook, WebhooksFromRestEnabled: &on})
	if err != nil {
		t.Fatal(err)
	}
	return &hookFixture{eng: eng, d: d, creds: creds, svc: svc, st: st}
}

// TestAbandonedWebhooksAPI drives the console's calls: list (paged),
// replay, purge, each only for the caller's own services, and refusing
// parameters it does not take.
func TestAbandonedWebhooksAPI(t *testing.T) {
	ctx := context.Background()
	f := newHookFixture(t)
	h := New(Config{Engine: f.eng, Webhooks: f.d, Logger: quietLogger()})
	for range 3 {
		if _, err := f.eng.CreateObject(ctx, engine.SystemActor(), f.svc, chorus.KindDocument, engine.CreateObject{}); err != nil {
			t.Fatal(err)
		}
	}
	// The counter goes up before the move to the abandoned ones commits:
	// wait for the outbox too.
	drained := func() bool {
		b, err := f.d.Backlog(ctx)
		return err == nil && len(b) == 0
	}
	deadline := time.Now().Add(10 * time.Second)
	for f.d.Abandoned.Load() < 3 || !drained() {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 webhooks given up on", f.d.Abandoned.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	user, pass := f.creds.AccountSID, f.creds.AuthToken
	base := "/admin/v1/Webhooks/" + f.svc.SID + "/Abandoned"

	res := do(t, h, "GET", base+"?PageSize=2", user, pass, nil)
	list, _ := res.body["abandoned"].([]any)
	meta, _ := res.body["meta"].(map[string]any)
	if res.status != http.StatusOK || len(list) != 2 || meta["next_page_token"] == "" {
		t.Fatalf("first page: %d %v", res.status, res.body)
	}
	first := list[0].(map[string]any)
	if first["event_type"] != "document_created" || first["attempts"] != float64(1) || first["last_status"] != float64(500) ||
		first["reason"] == "" || first["idempotency_token"] == "" || first["object_sid"] == "" {
		t.Errorf("an abandoned webhook: %v", first)
	}
	if _, ok := first["data"]; ok {
		t.Errorf("the list shows the webhook's data: %v", first)
	}
	res = do(t, h, "GET", base+"?PageSize=2&PageToken="+url.QueryEscape(meta["next_page_token"].(string)), user, pass, nil)
	if list, _ := res.body["abandoned"].([]any); res.status != http.StatusOK || len(list) != 1 || res.body["meta"].(map[string]any)["next_page_token"] != "" {
		t.Errorf("second page: %d %v", res.status, res.body)
	}
	hs := do(t, h, "GET", "/admin/v1/Webhooks", user, pass, nil)
	if svcs, _ := hs.body["services"].([]any); len(svcs) == 0 || svcs[len(svcs)-1] == nil {
		t.Fatalf("GET /admin/v1/Webhooks: %v", hs.body)
	} else {
		kept := 0.0
		for _, s := range svcs {
			if m := s.(map[string]any); m["service_sid"] == f.svc.SID {
				kept = m["abandoned_kept"].(float64)
			}
		}
		if kept != 3 {
			t.Errorf("abandoned_kept = %v, want 3", kept)
		}
	}

	// Refused, with nothing done.
	other := &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), AuthToken: chorus.NewSecret(32), FriendlyName: "other", DateCreated: time.Now()}
	foreign := &chorus.Service{SID: chorus.NewSID(chorus.PrefixService), AccountSID: other.SID, FriendlyName: "x", DateCreated: time.Now(), DateUpdated: time.Now()}
	if err := f.st.Update(ctx, func(tx chorus.Tx) error {
		if err := tx.PutAccount(ctx, other); err != nil {
			return err
		}
		return tx.PutService(ctx, foreign)
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		form         url.Values
		user, pass   string
		status, code int
	}{
		{"GET", base + "?PageSize=0", nil, user, pass, 400, 54060},
		{"GET", base + "?PageSize=1001", nil, user, pass, 400, 54060},
		{"GET", base + "?PageToken=x", nil, user, pass, 400, 54060},
		{"GET", base + "?pagesize=1", nil, user, pass, 400, 54060},
		{"POST", base + "/Replay", url.Values{"Limit": {"1"}}, user, pass, 400, 54060},
		{"POST", base + "/Replay?Limit=1", nil, user, pass, 400, 54060},
		{"DELETE", base + "?Before=1", nil, user, pass, 400, 54060},
		{"GET", base, nil, user, "wrong", 401, 20003},
		{"POST", base + "/Replay", nil, user, "wrong", 401, 20003},
		{"DELETE", base, nil, "", "", 401, 20003},
		{"GET", "/admin/v1/Webhooks/" + foreign.SID + "/Abandoned", nil, user, pass, 403, 54056},
		{"POST", "/admin/v1/Webhooks/" + foreign.SID + "/Abandoned/Replay", nil, user, pass, 403, 54056},
		{"DELETE", "/admin/v1/Webhooks/" + foreign.SID + "/Abandoned", nil, user, pass, 403, 54056},
		{"GET", "/admin/v1/Webhooks/IS" + strings.Repeat("0", 32) + "/Abandoned", nil, user, pass, 404, 54050},
		{"POST", "/admin/v1/Webhooks/nope/Abandoned/Replay", nil, user, pass, 404, 54050},
		{"PUT", base, nil, user, pass, 405, 20004},
		{"GET", base + "/Replay", nil, user, pass, 405, 20004},
	} {
		res := do(t, h, tc.method, tc.path, tc.user, tc.pass, tc.form)
		if res.status != tc.status || res.body["code"] != float64(tc.code) {
			t.Errorf("%s %s: %d %v, want %d with code %d", tc.method, tc.path, res.status, res.body, tc.status, tc.code)
		}
	}
	if page, err := f.d.AbandonedWebhooks(ctx, f.svc.SID, 0, 10); err != nil || len(page.Webhooks) != 3 {
		t.Fatalf("after the refused calls: %d kept, %v; want 3", len(page.Webhooks), err)
	}

	// Replay: the receiver still fails, so they come back abandoned.
	res = do(t, h, "POST", base+"/Replay", user, pass, nil)
	if res.status != http.StatusOK || res.body["replayed"] != float64(3) || res.body["left"] != float64(0) {
		t.Fatalf("replay: %d %v", res.status, res.body)
	}
	deadline = time.Now().Add(10 * time.Second)
	for f.d.Abandoned.Load() < 6 || !drained() {
		if time.Now().After(deadline) {
			t.Fatalf("the replayed webhooks were not attempted: %d given up on in all", f.d.Abandoned.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Back among the abandoned, they are not replayed again at once: an
	// account calling Replay in a loop would have this host send as many
	// webhooks as it liked (a reviewer's finding).
	res = do(t, h, "POST", base+"/Replay", user, pass, nil)
	if res.status != http.StatusTooManyRequests || res.body["code"] != float64(20429) {
		t.Fatalf("a second replay at once: %d %v, want 429 with code 20429", res.status, res.body)
	}
	if page, err := f.d.AbandonedWebhooks(ctx, f.svc.SID, 0, 10); err != nil || len(page.Webhooks) != 3 {
		t.Fatalf("after the refused replay: %d kept, %v; want 3", len(page.Webhooks), err)
	}
	res = do(t, h, "DELETE", base, f.creds.APIKeySID, f.creds.APISecret, nil)
	if res.status != http.StatusOK || res.body["purged"] != float64(3) {
		t.Fatalf("purge: %d %v", res.status, res.body)
	}
	res = do(t, h, "GET", base, user, pass, nil)
	if list, _ := res.body["abandoned"].([]any); res.status != http.StatusOK || len(list) != 0 {
		t.Errorf("after the purge: %d %v", res.status, res.body)
	}
}
