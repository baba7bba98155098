package gateway

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/chorus-sync/chorus/internal/engine"
)

// TestResyncDeliversLostTail: events that never reached the bus (a NATS
// outage) arrive once the bus reports it reconnected, in order, even when
// no later event exposes the gap.
func TestResyncDeliversLostTail(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sub := e.session("bob")
	doc := wantStatus(t, "create", sub.do("POST", "/v3/Documents", nil, map[string]any{"unique_name": "d"}), 201, 0)
	sid := doc["sid"].(string)
	sub.establish(1, docSub(sid, num(doc["last_event_id"])))

	// Another node's engine on the same store, whose publishes are lost.
	lost := engine.New(engine.Config{Store: e.eng.Store()})
	for i := 1; i <= 3; i++ {
		data, _ := json.Marshal(map[string]int{"n": i})
		if _, err := lost.UpdateObject(ctx, engine.SystemActor(), e.svc, "document", sid, engine.UpdateObject{Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case n := <-sub.notes:
		t.Fatalf("event %s arrived without a publish", n.EventType)
	case <-time.After(200 * time.Millisecond):
	}
	e.gw.Resync()
	for want := int64(1); want <= 3; want++ {
		n := sub.nextOf("document_updated", 5*time.Second)
		if n.id() != want {
			t.Fatalf("after Resync: event id %d, want %d", n.id(), want)
		}
	}
	if got := e.gw.Stats().Delivered; got != 3 {
		t.Errorf("Delivered = %d, want 3", got)
	}
}
