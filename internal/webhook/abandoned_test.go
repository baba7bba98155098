package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// A receiver down for longer than the retries last loses nothing for
// good: the webhooks given up on are kept, listed with why, and a replay
// sends them again, in their order, with their idempotency tokens, once
// the receiver is back. Before, an abandoned webhook was only a log line.
func TestAbandonedWebhooksReplay(t *testing.T) {
	ctx := context.Background()
	var down atomic.Bool
	down.Store(true)
	rc := newReceiver(t, "", func(r *http.Request, n int) int {
		if down.Load() {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	e := newEnv(t, webhook.Config{Attempts: 2, RetryBase: 10 * time.Millisecond, Poll: 50 * time.Millisecond})
	rc.token = e.creds.AuthToken
	svc := e.service(t, rc.URL())
	doc, err := e.eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, engine.CreateObject{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		data := json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))
		if _, err := e.eng.UpdateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	// 4 webhooks (created, 3 updates), 2 attempts each.
	tokens := map[string]bool{}
	for range 8 {
		h := rc.next(t, 10*time.Second)
		tokens[h.token] = true
	}
	// The counter goes up before the move to the abandoned ones commits:
	// wait for the outbox.
	waitFor(t, 20*time.Second, "4 webhooks given up on and out of the outbox", func() bool {
		return e.d.Abandoned.Load() == 4 && e.pending(t) == 0
	})
	page, err := e.d.AbandonedWebhooks(ctx, svc.SID, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Webhooks) != 3 || page.Next == 0 {
		t.Fatalf("first page: %d abandoned, next %d; want 3 and a next page", len(page.Webhooks), page.Next)
	}
	newest := page.Webhooks[0]
	if newest.Attempts != 2 || newest.LastStatus != http.StatusServiceUnavailable || newest.LastError == "" ||
		newest.Event.Type != chorus.EventDocumentUpdated || newest.Event.Data != nil {
		t.Errorf("newest abandoned: %+v (event %+v): want attempt 2 of the last update, 503 and why", newest, newest.Event)
	}
	rest, err := e.d.AbandonedWebhooks(ctx, svc.SID, page.Next, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest.Webhooks) != 1 || rest.Next != 0 || rest.Webhooks[0].Event.Type != chorus.EventDocumentCreated {
		t.Fatalf("second page: %d, next %d; want the document_created", len(rest.Webhooks), rest.Next)
	}
	hs, err := e.d.Health(ctx, []*chorus.Service{svc})
	if err != nil {
		t.Fatal(err)
	}
	if hs[0].AbandonedKept != 4 {
		t.Errorf("health: %d kept, want 4", hs[0].AbandonedKept)
	}

	down.Store(false)
	n, left, err := e.d.Replay(ctx, svc.SID)
	if err != nil || n != 4 || left != 0 {
		t.Fatalf("Replay = %d, %d left, %v; want 4, 0", n, left, err)
	}
	wantTypes := []string{"document_created", "document_updated", "document_updated", "document_updated"}
	for i, want := range wantTypes {
		h := rc.next(t, 10*time.Second)
		if got := h.form.Get("EventType"); got != want || h.status != http.StatusOK {
			t.Errorf("replayed webhook %d: %s answered %d, want %s", i, got, h.status, want)
		}
		// The list leaves the data out; the replay sends it.
		if i > 0 && h.form.Get("DocumentData") != fmt.Sprintf(`{"n":%d}`, i-1) {
			t.Errorf("replayed webhook %d: DocumentData %q", i, h.form.Get("DocumentData"))
		}
		if !tokens[h.token] {
			t.Errorf("replayed webhook %d has a new idempotency token %q", i, h.token)
		}
	}
	waitFor(t, 10*time.Second, "the replayed webhooks delivered", func() bool { return e.pending(t) == 0 })
	if page, err := e.d.AbandonedWebhooks(ctx, svc.SID, 0, 10); err != nil || len(page.Webhooks) != 0 {
		t.Errorf("after the replay: %d kept, %v", len(page.Webhooks), err)
	}
	// Within ReplayInterval, another replay is refused, whatever there
	// is to replay: an account calling Replay in a loop would otherwise
	// have this host send webhooks as fast as it calls.
	if n, _, err := e.d.Replay(ctx, svc.SID); n != 0 || chorus.ErrorCode(err) != 20429 {
		t.Errorf("a second Replay at once = %d, %v; want 20429", n, err)
	}
}

// Purge deletes a service's abandoned webhooks; with KeepAbandoned
// negative none are kept at all (the operator's choice: their data is
// not held longer than it takes to try them).
func TestAbandonedWebhooksPurgeAndOff(t *testing.T) {
	ctx := context.Background()
	for _, keep := range []bool{true, false} {
		rc := newReceiver(t, "", func(*http.Request, int) int { return http.StatusInternalServerError })
		cfg := webhook.Config{Attempts: 1, Poll: 50 * time.Millisecond}
		if !keep {
			cfg.KeepAbandoned = -1
		}
		e := newEnv(t, cfg)
		rc.token = e.creds.AuthToken
		svc := e.service(t, rc.URL())
		if _, err := e.eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, engine.CreateObject{}); err != nil {
			t.Fatal(err)
		}
		rc.next(t, 10*time.Second)
		waitFor(t, 10*time.Second, "the webhook given up on and out of the outbox", func() bool {
			return e.d.Abandoned.Load() == 1 && e.pending(t) == 0
		})
		page, err := e.d.AbandonedWebhooks(ctx, svc.SID, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if keep != (len(page.Webhooks) == 1) {
			t.Fatalf("keep %v: %d kept", keep, len(page.Webhooks))
		}
		if !keep {
			continue
		}
		if n, err := e.d.Purge(ctx, svc.SID); n != 1 || err != nil {
			t.Errorf("Purge = %d, %v; want 1", n, err)
		}
		if page, _ := e.d.AbandonedWebhooks(ctx, svc.SID, 0, 10); len(page.Webhooks) != 0 {
			t.Errorf("after Purge: %d kept", len(page.Webhooks))
		}
	}
}

// The delivering node keeps a service's newest MaxAbandoned abandoned
// webhooks, for KeepAbandoned.
func TestAbandonedWebhooksKeptBounded(t *testing.T) {
	ctx := context.Background()
	var ahead atomic.Int64 // how far the node's clock is moved on
	rc := newReceiver(t, "", func(*http.Request, int) int { return http.StatusInternalServerError })
	// No heartbeat but the first: it would learn the moved clock's skew.
	e := newEnv(t, webhook.Config{Attempts: 1, Poll: 50 * time.Millisecond, MaxAbandoned: 2, KeepAbandoned: time.Hour, Heartbeat: time.Hour,
		Clock: func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }})
	rc.token = e.creds.AuthToken
	svc := e.service(t, rc.URL())
	var docs []string
	for range 3 {
		doc, err := e.eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, engine.CreateObject{})
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, doc.SID)
		rc.next(t, 10*time.Second)
	}
	waitFor(t, 10*time.Second, "3 webhooks given up on and out of the outbox", func() bool {
		return e.d.Abandoned.Load() == 3 && e.pending(t) == 0
	})
	kept := func() (sids []string) {
		page, err := e.d.AbandonedWebhooks(ctx, svc.SID, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range page.Webhooks {
			sids = append(sids, a.Event.ObjectSID)
		}
		return sids
	}
	if err := e.d.SweepAbandoned(ctx); err != nil {
		t.Fatal(err)
	}
	if got := kept(); len(got) != 2 || got[0] != docs[2] || got[1] != docs[1] {
		t.Errorf("kept %v after the sweep, want the newest 2 of %v", got, docs)
	}
	ahead.Store(int64(59 * time.Minute))
	if err := e.d.SweepAbandoned(ctx); err != nil {
		t.Fatal(err)
	}
	if got := kept(); len(got) != 2 {
		t.Errorf("kept %v 59 minutes on, want both", got)
	}
	ahead.Store(int64(61 * time.Minute))
	if err := e.d.SweepAbandoned(ctx); err != nil {
		t.Fatal(err)
	}
	if got := kept(); len(got) != 0 {
		t.Errorf("kept %v past KeepAbandoned, want none", got)
	}
}
