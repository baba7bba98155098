package webhook_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/webhook"
)

func TestReachabilityWithDebouncing(t *testing.T) {
	ctx := context.Background()
	hits := make(chan string, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		hits <- r.PostForm.Get("EventType") + " " + r.PostForm.Get("Identity") + " " + r.PostForm.Get("EndpointId")
	}))
	defer srv.Close()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eng := engine.New(engine.Config{Store: st, Bus: mem.New()})
	d := webhook.New(webhook.Config{Lookup: eng})
	defer d.Close(ctx)
	creds, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	hook, on, window := srv.URL, true, 1000
	svc, err := eng.UpdateService(ctx, creds.AccountSID, creds.ServiceSID, engine.ServiceParams{
		WebhookURL: &hook, ReachabilityWebhooksEnabled: &on, ReachabilityDebouncingEnabled: &on, ReachabilityDebouncingWindow: &window,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := func(s string) {
		t.Helper()
		select {
		case got := <-hits:
			if got != s {
				t.Fatalf("webhook %q, want %q", got, s)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no webhook, want %q", s)
		}
	}
	none := func(d time.Duration) {
		t.Helper()
		select {
		case got := <-hits:
			t.Fatalf("unexpected webhook %q", got)
		case <-time.After(d):
		}
	}
	d.Connected(svc, "alice", "ep1")
	want("endpoint_connected alice ep1")
	d.Connected(svc, "alice", "ep2")
	want("endpoint_connected alice ep2")
	d.Disconnected(svc, "alice", "ep1") // ep2 still online
	d.Disconnected(svc, "alice", "ep2") // last one: debounced
	none(500 * time.Millisecond)
	d.Connected(svc, "alice", "ep3") // within the window: cancels it
	want("endpoint_connected alice ep3")
	none(800 * time.Millisecond)
	d.Disconnected(svc, "alice", "ep3")
	none(700 * time.Millisecond)
	want("endpoint_disconnected alice ep3")
}
