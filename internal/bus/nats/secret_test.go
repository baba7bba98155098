package nats_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/bustest"
	"github.com/chorus-sync/chorus/internal/bus/nats"
)

// TestSecret: with a cluster secret, events from nodes with the same
// secret are delivered, and events injected by anything else that can
// publish on the subjects (no secret, another secret) are dropped and
// counted, so a forged event cannot take the place of the genuine one.
func TestSecret(t *testing.T) {
	u := testURL(t)
	prefix := uniquePrefix(t)
	secret := []byte("0123456789abcdef0123456789abcdef-cluster")
	a := open(t, u, nats.WithPrefix(prefix), nats.WithSecret(secret))
	b := open(t, u, nats.WithPrefix(prefix), nats.WithSecret(secret))
	intruder := open(t, u, nats.WithPrefix(prefix))
	other := open(t, u, nats.WithPrefix(prefix), nats.WithSecret([]byte("another secret of at least 32 bytes")))

	x := bustest.NewObjectSID()
	got := make(chan *chorus.Event, 10)
	cancel, err := b.Subscribe(x, func(e *chorus.Event) { got <- e })
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	ctx := context.Background()
	forged := bustest.NewEvent(x, 1)
	forged.Data = json.RawMessage(`{"forged":true}`)
	if err := intruder.Publish(ctx, forged); err != nil {
		t.Fatal(err)
	}
	if err := other.Publish(ctx, forged); err != nil {
		t.Fatal(err)
	}
	genuine := bustest.NewEvent(x, 1)
	if err := a.Publish(ctx, genuine); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-got:
		if d := bustest.Diff(e, genuine); d != "" {
			t.Errorf("delivered event differs from the genuine one: %s", d)
		}
	case <-time.After(bustest.Deadline):
		t.Fatal("the genuine event was not delivered")
	}
	waitFor(t, "both forgeries counted", func() bool { return b.Stats().Forged == 2 })
	select {
	case e := <-got:
		t.Errorf("a second event was delivered: %s", e.Data)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestSecretTooShort(t *testing.T) {
	_, err := nats.Open(context.Background(), testURL(t), quietLogger(), nats.WithSecret([]byte("short")))
	if err == nil {
		t.Fatal("Open(WithSecret(short)) = nil error, want an error")
	}
}
