package webhook_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/twilio/twilio-go/client"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// The vector of limits-and-features.md §2.4, computed with twilio-node.
func TestSignatureVector(t *testing.T) {
	params := url.Values{
		"AccountSid":         {"ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
		"ServiceSid":         {"IS00000000000000000000000000000001"},
		"EventType":          {"document_updated"},
		"Identity":           {"system"},
		"DocumentSid":        {"ET00000000000000000000000000000001"},
		"DocumentUniqueName": {"game-42"},
		"DocumentRevision":   {"1"},
		"DocumentData":       {`{"board":[["X","","O"]],"turn":"O"}`},
	}
	const token, target = "cccccccccccccccccccccccccccccccc", "https://hooks.example.com/sync?tenant=acme"
	got := webhook.Signature(token, target, params)
	// Independent check with twilio-go's own validator.
	flat := map[string]string{}
	for k, v := range params {
		flat[k] = v[0]
	}
	if !validate(token, target, flat, got) {
		t.Errorf("twilio-go rejects our signature %s", got)
	}
	if validate("wrong", target, flat, got) {
		t.Error("twilio-go accepts the signature with another auth token")
	}
}

// validate checks a signature with twilio-go's RequestValidator.
func validate(authToken, target string, params map[string]string, sig string) bool {
	v := client.NewRequestValidator(authToken)
	return v.Validate(target, params, sig)
}

type received struct {
	form url.Values
	sig  string
	url  string
}

func TestDeliveryEndToEnd(t *testing.T) {
	ctx := context.Background()
	hits := make(chan received, 16)
	var hookURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		hits <- received{form: r.PostForm, sig: r.Header.Get("X-Twilio-Signature"), url: hookURL}
	}))
	defer srv.Close()
	hookURL = srv.URL + "/hook?x=1"

	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var d *webhook.Dispatcher
	eng := engine.New(engine.Config{Store: st, Bus: mem.New(), Observe: func(evs []*chorus.Event) { d.Observe(evs) }})
	d = webhook.New(webhook.Config{Lookup: eng})
	defer d.Close(ctx)
	creds, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := eng.UpdateService(ctx, creds.AccountSID, creds.ServiceSID, engine.ServiceParams{WebhookURL: &hookURL})
	if err != nil {
		t.Fatal(err)
	}
	// A REST change does not fire without webhooks_from_rest_enabled.
	doc, err := eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, engine.CreateObject{UniqueName: "game"})
	if err != nil {
		t.Fatal(err)
	}
	alice := engine.Actor{Identity: "alice", EndpointID: "ep-1"}
	if _, err := eng.UpdateObject(ctx, alice, svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(`{"turn":"O"}`)}); err != nil {
		t.Fatal(err)
	}
	select {
	case h := <-hits:
		want := map[string]string{
			"EventType": "document_updated", "Identity": "alice", "EndpointId": "ep-1", "DocumentSid": doc.SID,
			"DocumentUniqueName": "game", "DocumentRevision": "1", "DocumentData": `{"turn":"O"}`,
			"AccountSid": creds.AccountSID, "ServiceSid": svc.SID, "EventId": "1",
		}
		for k, v := range want {
			if got := h.form.Get(k); got != v {
				t.Errorf("param %s = %q, want %q", k, got, v)
			}
		}
		flat := map[string]string{}
		for k, v := range h.form {
			flat[k] = v[0]
		}
		if !validate(creds.AuthToken, h.url, flat, h.sig) {
			t.Errorf("twilio-go rejects the delivered signature %q", h.sig)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no webhook for a client change")
	}
	select {
	case h := <-hits:
		t.Fatalf("unexpected webhook %v (REST changes must not fire by default)", h.form)
	case <-time.After(300 * time.Millisecond):
	}
	on := true
	if _, err := eng.UpdateService(ctx, creds.AccountSID, svc.SID, engine.ServiceParams{WebhooksFromRestEnabled: &on}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the dispatcher caches service settings for a second
	if _, err := eng.DeleteObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, doc.SID); err != nil {
		t.Fatal(err)
	}
	select {
	case h := <-hits:
		if h.form.Get("EventType") != "document_removed" || h.form.Get("Identity") != "system" || h.form.Has("EndpointId") || h.form.Has("DocumentData") {
			t.Errorf("removal webhook = %v", h.form)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no webhook for a REST change with webhooks_from_rest_enabled")
	}
}

// lookupFunc is a webhook.Lookup with function fields.
type lookupFunc struct {
	service func(ctx context.Context, accountSID, sid string) (*chorus.Service, error)
}

func (l lookupFunc) Service(ctx context.Context, accountSID, sid string) (*chorus.Service, error) {
	return l.service(ctx, accountSID, sid)
}

func (l lookupFunc) Account(context.Context, string) (*chorus.Account, error) {
	return &chorus.Account{}, nil
}

// A service without a webhook costs its writes nothing once its settings
// are cached: events are not even queued (a queue of one would overflow).
func TestNoWebhookQueuesNothing(t *testing.T) {
	svc := &chorus.Service{SID: chorus.NewSID("IS")}
	looked := make(chan struct{}, 1)
	d := webhook.New(webhook.Config{Workers: 1, Queue: 1, Lookup: lookupFunc{service: func(context.Context, string, string) (*chorus.Service, error) {
		select {
		case looked <- struct{}{}:
		default:
		}
		return svc, nil
	}}})
	defer d.Close(context.Background())
	ev := &chorus.Event{Type: chorus.EventDocumentUpdated, ServiceSID: svc.SID, Kind: chorus.KindDocument}
	d.Observe([]*chorus.Event{ev}) // caches the settings
	<-looked
	time.Sleep(50 * time.Millisecond)
	batch := make([]*chorus.Event, 10_000)
	for i := range batch {
		batch[i] = ev
	}
	d.Observe(batch)
	if n := d.Dropped.Load(); n != 0 {
		t.Errorf("Dropped = %d, want 0: events of a service without a webhook were queued", n)
	}
}
