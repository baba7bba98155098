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

// TestResumedLeaderStopsBeforeSending: a node that lost leadership while
// it was stopped (SIGSTOP past the store's lease) wakes with a sender in
// the middle of an object's webhooks. It asks again before its next
// attempt and sends nothing more, without waiting for its run loop's own
// check: the new leader has sent those webhooks and later ones, and a
// resent older one would arrive out of order.
func TestResumedLeaderStopsBeforeSending(t *testing.T) {
	ctx := context.Background()
	var lead atomic.Bool
	lead.Store(true)
	arrived, release := make(chan struct{}), make(chan struct{})
	rc := newReceiver(t, "", func(r *http.Request, n int) int {
		if n == 1 {
			close(arrived)
			<-release
		}
		return http.StatusOK
	})
	// A long Poll: the run loop does not ask again during the test.
	e := newEnv(t, webhook.Config{Poll: time.Minute, Leader: func(context.Context) bool { return lead.Load() }})
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
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook sent")
	}
	// Stopped past the lease: another node leads now.
	lead.Store(false)
	e.d.AgeLeadership(time.Hour)
	close(release)
	rc.next(t, 10*time.Second) // the one in flight when it stopped
	select {
	case h := <-rc.hits:
		t.Fatalf("sent %s after losing leadership", h.form.Get("EventType"))
	case <-time.After(time.Second):
	}
	if n := e.pending(t); n != 3 {
		t.Errorf("%d webhooks left in the outbox, want the 3 not sent, for the new leader", n)
	}
}
