package nats_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/bustest"
	"github.com/chorus-sync/chorus/internal/bus/nats"
)

// runServer starts an embedded nats-server on 127.0.0.1:port (-1: any).
func runServer(t testing.TB, port int) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("nats-server on port %d not ready", port)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// TestRestart shuts the server down under two connected buses: Ping and
// Publish fail promptly; after a restart on the same port the buses
// reconnect and deliver to the subscriptions they had, and to one made
// during the outage.
func TestRestart(t *testing.T) {
	srv := runServer(t, -1)
	port := srv.Addr().(*net.TCPAddr).Port
	u := fmt.Sprintf("nats://127.0.0.1:%d", port)
	// The reconnect handlers say whether the node's own publishes may
	// be lost: a published just before the outage, b never did.
	lostA, lostB := make(chan bool, 10), make(chan bool, 10)
	a := open(t, u, nats.WithName("node-a"), nats.WithReconnectHandler(func(lost bool) { lostA <- lost }))
	b := open(t, u, nats.WithName("node-b"), nats.WithReconnectHandler(func(lost bool) { lostB <- lost }))

	// The node names reach the server as connection names.
	cz, err := srv.Connz(&server.ConnzOptions{})
	if err != nil {
		t.Fatalf("Connz: %v", err)
	}
	var names []string
	for _, c := range cz.Conns {
		names = append(names, c.Name)
	}
	slices.Sort(names)
	if want := []string{"node-a", "node-b"}; !slices.Equal(names, want) {
		t.Errorf("connection names = %v, want %v", names, want)
	}

	x := bustest.NewObjectSID()
	got := make(chan *chorus.Event, 100)
	cancel, err := b.Subscribe(x, func(e *chorus.Event) { got <- e })
	if err != nil {
		t.Fatalf("Subscribe = %v", err)
	}
	defer cancel()
	ctx := context.Background()
	if err := a.Publish(ctx, bustest.NewEvent(x, 1)); err != nil {
		t.Fatalf("Publish before shutdown = %v", err)
	}
	expect(t, got, 1)

	srv.Shutdown()
	srv.WaitForShutdown()

	for name, bus := range map[string]*nats.Bus{"a": a, "b": b} {
		waitFor(t, "Ping of "+name+" to fail", func() bool { return bus.Ping(ctx) != nil })
		err := bus.Ping(ctx)
		if !errors.Is(err, chorus.ErrUnavailable) {
			t.Errorf("%s.Ping() while down = %v, want ErrUnavailable", name, err)
		}
	}
	start := time.Now()
	for i := range 1000 {
		err := a.Publish(ctx, bustest.NewEvent(x, int64(100+i)))
		if !errors.Is(err, chorus.ErrUnavailable) {
			t.Fatalf("Publish #%d while down = %v, want ErrUnavailable", i, err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("1000 failing Publishes took %v, want them prompt", d)
	}

	// A subscription made during the outage starts with the reconnect.
	y := bustest.NewObjectSID()
	goty := make(chan *chorus.Event, 100)
	cancelY, err := b.Subscribe(y, func(e *chorus.Event) { goty <- e })
	if err != nil {
		t.Fatalf("Subscribe while down = %v, want nil", err)
	}
	defer cancelY()

	if a.Settled() || b.Settled() {
		t.Errorf("Settled() while down = %t, %t, want false", a.Settled(), b.Settled())
	}

	runServer(t, port)
	waitFor(t, "both buses to reconnect", func() bool { return a.Ping(ctx) == nil && b.Ping(ctx) == nil })
	for name, c := range map[string]struct {
		lost <-chan bool
		want bool
	}{"a": {lostA, true}, "b": {lostB, false}} {
		select {
		case lost := <-c.lost:
			if lost != c.want {
				t.Errorf("reconnect handler of %s: publishesLost = %t, want %t", name, lost, c.want)
			}
		case <-time.After(bustest.Deadline):
			t.Errorf("reconnect handler of %s not called", name)
		}
	}
	waitFor(t, "both buses to settle", func() bool { return a.Settled() && b.Settled() })
	if err := a.Publish(ctx, bustest.NewEvent(x, 2), bustest.NewEvent(y, 1)); err != nil {
		t.Fatalf("Publish after restart = %v", err)
	}
	expect(t, got, 2)
	expect(t, goty, 1)
	select {
	case e := <-got:
		t.Errorf("unexpected event %d of x (events published while down must not be buffered)", e.ID)
	case <-time.After(100 * time.Millisecond):
	}
}

func expect(t testing.TB, ch <-chan *chorus.Event, id int64) {
	t.Helper()
	select {
	case e := <-ch:
		if e.ID != id {
			t.Fatalf("received event %d, want %d", e.ID, id)
		}
	case <-time.After(bustest.Deadline):
		t.Fatalf("event %d not received within %v", id, bustest.Deadline)
	}
}
