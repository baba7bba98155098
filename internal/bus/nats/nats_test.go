package nats_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/bustest"
	"github.com/chorus-sync/chorus/internal/bus/nats"
)

const defaultTestURL = "nats://127.0.0.1:4222"

// testURL returns the URL of the test server ($CHORUS_TEST_NATS or
// 127.0.0.1:4222) and fails the test if it is unreachable.
func testURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("CHORUS_TEST_NATS")
	if u == "" {
		u = defaultTestURL
	}
	host := u
	if p, err := url.Parse(u); err == nil && p.Host != "" {
		host = p.Host
	}
	c, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		t.Fatalf("The nats tests need a nats-server at %s (set CHORUS_TEST_NATS to override): %v\n"+
			"Start one with: start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "+
			"-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log", host, err)
	}
	c.Close()
	return u
}

// uniquePrefix returns a subject prefix no other test run uses.
func uniquePrefix(t testing.TB) string {
	var b [8]byte
	rand.Read(b[:])
	return "chorustest." + hex.EncodeToString(b[:])
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// open opens a Bus on url, closed when the test ends.
func open(t testing.TB, url string, opts ...nats.Option) *nats.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := nats.Open(ctx, url, quietLogger(), opts...)
	if err != nil {
		t.Fatalf("Open(%s) = %v, want nil", url, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	u := testURL(t)
	bustest.Run(t, func(t testing.TB) chorus.Bus {
		return open(t, u, nats.WithPrefix(uniquePrefix(t)), nats.WithName("conformance"))
	})
}

func TestShared(t *testing.T) {
	u := testURL(t)
	bustest.RunShared(t, func(t testing.TB) (chorus.Bus, chorus.Bus) {
		p := uniquePrefix(t)
		return open(t, u, nats.WithPrefix(p), nats.WithName("node-a")),
			open(t, u, nats.WithPrefix(p), nats.WithName("node-b"))
	})
}

func TestOpenUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens on addr now

	u := "nats://alice:s3cret@" + addr
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	b, err := nats.Open(ctx, u, quietLogger())
	if err == nil {
		b.Close()
		t.Fatalf("Open(%s) = nil error, want an error", addr)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Open(%s) took %v, want a prompt failure", addr, d)
	}
	msg := err.Error()
	if !strings.Contains(msg, addr) {
		t.Errorf("Open error = %q, want it to name %s", msg, addr)
	}
	if strings.Contains(msg, "s3cret") || strings.Contains(msg, "alice") {
		t.Errorf("Open error = %q, want no credentials", msg)
	}
	if !errors.Is(err, chorus.ErrUnavailable) {
		t.Errorf("errors.Is(Open error, ErrUnavailable) = false, want true (err %v)", err)
	}
}

func TestOpenBadPrefix(t *testing.T) {
	u := testURL(t)
	for _, p := range []string{"", "a..b", "a.*", "a.>", "has space", "x."} {
		t.Run(p, func(t *testing.T) {
			b, err := nats.Open(context.Background(), u, quietLogger(), nats.WithPrefix(p))
			if err == nil {
				b.Close()
				t.Errorf("Open(WithPrefix(%q)) = nil error, want an error", p)
			}
		})
	}
}

func TestBadSIDs(t *testing.T) {
	b := open(t, testURL(t), nats.WithPrefix(uniquePrefix(t)))
	for _, sid := range []string{"", "ET.1", "ET*", "ET>", "E T"} {
		t.Run(sid, func(t *testing.T) {
			if cancel, err := b.Subscribe(sid, func(*chorus.Event) {}); err == nil {
				cancel()
				t.Errorf("Subscribe(%q) = nil error, want an error", sid)
			}
			e := bustest.NewEvent(sid, 1)
			if err := b.Publish(context.Background(), e); err == nil {
				t.Errorf("Publish(object %q) = nil error, want an error", sid)
			}
		})
	}
}

// TestInterest proves that a node receives only the objects it has
// subscribers for: the server filters, not the node.
func TestInterest(t *testing.T) {
	u := testURL(t)
	p := uniquePrefix(t)
	a, b := open(t, u, nats.WithPrefix(p)), open(t, u, nats.WithPrefix(p))
	x, y := bustest.NewObjectSID(), bustest.NewObjectSID()
	got := make(chan *chorus.Event, 10)
	cancel, err := b.Subscribe(x, func(e *chorus.Event) { got <- e })
	if err != nil {
		t.Fatalf("Subscribe = %v", err)
	}
	defer cancel()
	var batch []*chorus.Event
	for i := int64(1); i <= 100; i++ {
		batch = append(batch, bustest.NewEvent(y, i))
	}
	if err := a.Publish(context.Background(), batch...); err != nil {
		t.Fatalf("Publish = %v", err)
	}
	if err := a.Publish(context.Background(), bustest.NewEvent(x, 1)); err != nil {
		t.Fatalf("Publish = %v", err)
	}
	select {
	case <-got:
	case <-time.After(bustest.Deadline):
		t.Fatal("event of x not received")
	}
	if err := b.Ping(context.Background()); err != nil { // a round trip after the last delivery
		t.Fatalf("Ping = %v", err)
	}
	if s := b.Stats(); s.Received != 1 || s.Topics != 1 {
		t.Errorf("subscriber node Stats() = %+v, want Received 1, Topics 1", s)
	}
	if s := a.Stats(); s.Published != 101 || s.Received != 0 {
		t.Errorf("publisher node Stats() = %+v, want Published 101, Received 0", s)
	}
	cancel()
	if s := b.Stats(); s.Topics != 0 {
		t.Errorf("Stats().Topics after cancel = %d, want 0", s.Topics)
	}
}

// TestSharedSubscription checks that local subscribers of one object share
// one NATS subscription, which lives until the last one cancels.
func TestSharedSubscription(t *testing.T) {
	b := open(t, testURL(t), nats.WithPrefix(uniquePrefix(t)))
	x := bustest.NewObjectSID()
	var cancels []func()
	var mu sync.Mutex
	n := 0
	for range 3 {
		c, err := b.Subscribe(x, func(*chorus.Event) { mu.Lock(); n++; mu.Unlock() })
		if err != nil {
			t.Fatalf("Subscribe = %v", err)
		}
		cancels = append(cancels, c)
	}
	if got := b.Stats().Topics; got != 1 {
		t.Errorf("Stats().Topics = %d, want 1", got)
	}
	cancels[0]()
	cancels[1]()
	if got := b.Stats().Topics; got != 1 {
		t.Errorf("Stats().Topics with one subscriber left = %d, want 1", got)
	}
	if err := b.Publish(context.Background(), bustest.NewEvent(x, 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one delivery", func() bool { mu.Lock(); defer mu.Unlock(); return n == 1 })
	cancels[2]()
	if got := b.Stats().Topics; got != 0 {
		t.Errorf("Stats().Topics after last cancel = %d, want 0", got)
	}
}

// TestFaults checks the test hook: dropped events never arrive, delayed
// ones arrive after later events.
func TestFaults(t *testing.T) {
	u := testURL(t)
	p := uniquePrefix(t)
	drop := func(e *chorus.Event) bool { return e.ID == 3 }
	delay := func(e *chorus.Event) time.Duration {
		if e.ID == 5 {
			return 200 * time.Millisecond
		}
		return 0
	}
	a := open(t, u, nats.WithPrefix(p))
	b := open(t, u, nats.WithPrefix(p), nats.WithFaults(drop, delay))
	x := bustest.NewObjectSID()
	var mu sync.Mutex
	var ids []int64
	cancel, err := b.Subscribe(x, func(e *chorus.Event) { mu.Lock(); ids = append(ids, e.ID); mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	var batch []*chorus.Event
	for i := int64(1); i <= 8; i++ {
		batch = append(batch, bustest.NewEvent(x, i))
	}
	if err := a.Publish(context.Background(), batch...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "7 deliveries", func() bool { mu.Lock(); defer mu.Unlock(); return len(ids) == 7 })
	mu.Lock()
	got := append([]int64(nil), ids...)
	mu.Unlock()
	want := []int64{1, 2, 4, 6, 7, 8, 5}
	if len(got) != len(want) {
		t.Fatalf("delivered IDs = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delivered IDs = %v, want %v", got, want)
		}
	}
	if s := b.Stats(); s.FaultDropped != 1 || s.Received != 8 {
		t.Errorf("Stats() = %+v, want FaultDropped 1, Received 8", s)
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bustest.Deadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", bustest.Deadline, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCloseLeaks checks that Close stops every goroutine the Bus started.
func TestCloseLeaks(t *testing.T) {
	u := testURL(t)
	before := runtime.NumGoroutine()
	for range 5 {
		b := open(t, u, nats.WithPrefix(uniquePrefix(t)), nats.WithFaults(nil, func(*chorus.Event) time.Duration { return time.Millisecond }))
		x := bustest.NewObjectSID()
		if _, err := b.Subscribe(x, func(*chorus.Event) {}); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(context.Background(), bustest.NewEvent(x, 1)); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("second Close() = %v, want nil", err)
		}
		if err := b.Publish(context.Background(), bustest.NewEvent(x, 2)); !errors.Is(err, chorus.ErrUnavailable) {
			t.Errorf("Publish after Close = %v, want ErrUnavailable", err)
		}
		if err := b.Ping(context.Background()); !errors.Is(err, chorus.ErrUnavailable) {
			t.Errorf("Ping after Close = %v, want ErrUnavailable", err)
		}
	}
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
}
