package nats_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

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

// TestCluster: two clusters on one NATS server and prefix (production, and
// staging restored from its dump: the same object SIDs) never deliver each
// other's events; a node that sets no cluster identity (an earlier
// version, during a rolling upgrade) is heard by all.
func TestCluster(t *testing.T) {
	u := testURL(t)
	prefix := uniquePrefix(t)
	prod := open(t, u, nats.WithPrefix(prefix), nats.WithCluster("prod-id"))
	prod2 := open(t, u, nats.WithPrefix(prefix), nats.WithCluster("prod-id"))
	staging := open(t, u, nats.WithPrefix(prefix), nats.WithCluster("staging-id"))
	older := open(t, u, nats.WithPrefix(prefix))

	x := bustest.NewObjectSID()
	got := make(chan *chorus.Event, 10)
	cancel, err := prod2.Subscribe(x, func(e *chorus.Event) { got <- e })
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	ctx := context.Background()
	for i, b := range []*nats.Bus{staging, prod, older} {
		if err := b.Publish(ctx, bustest.NewEvent(x, int64(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	var ids []int64
	for len(ids) < 2 {
		select {
		case e := <-got:
			ids = append(ids, e.ID)
		case <-time.After(bustest.Deadline):
			t.Fatalf("delivered %v, want the events of prod (2) and of the node without an identity (3)", ids)
		}
	}
	slices.Sort(ids) // from two connections: in either order
	if ids[0] != 2 || ids[1] != 3 {
		t.Errorf("delivered %v, want [2 3]", ids)
	}
	waitFor(t, "the other cluster's event counted", func() bool { return prod2.Stats().Foreign == 1 })
	select {
	case e := <-got:
		t.Errorf("another event was delivered: %d", e.ID)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestClusterWithoutHeaderSupport: on a NATS server that takes no message
// headers (before 2.2, or no_header_support), events still flow, without
// the cluster's identity; with the header every publish would fail.
func TestClusterWithoutHeaderSupport(t *testing.T) {
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, NoHeaderSupport: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	u := "nats://" + ns.Addr().String()
	a := open(t, u, nats.WithCluster("prod-id"))
	b := open(t, u, nats.WithCluster("prod-id"))
	x := bustest.NewObjectSID()
	got := make(chan *chorus.Event, 1)
	cancel, err := b.Subscribe(x, func(e *chorus.Event) { got <- e })
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if err := a.Publish(context.Background(), bustest.NewEvent(x, 1)); err != nil {
		t.Fatalf("Publish on a server without header support = %v", err)
	}
	select {
	case <-got:
	case <-time.After(bustest.Deadline):
		t.Fatal("the event was not delivered")
	}
}
