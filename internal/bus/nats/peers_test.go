package nats_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/chorus-sync/chorus/internal/bus/nats"
)

// TestHello: a node hears the hellos of the nodes of its cluster on its
// prefix, and only those: not its own, not another prefix's, not another
// cluster's, and with a cluster secret not those signed with another
// secret or none.
func TestHello(t *testing.T) {
	u := testURL(t)
	prefix := uniquePrefix(t)
	secret := []byte("0123456789abcdef0123456789abcdef-cluster")
	fast := nats.WithHelloInterval(20 * time.Millisecond)
	mine := []nats.Option{nats.WithPrefix(prefix), nats.WithCluster("c1"), nats.WithSecret(secret), fast}
	buses := map[string]*nats.Bus{
		"self":          open(t, u, mine...),
		"peer":          open(t, u, mine...),
		"other-prefix":  open(t, u, nats.WithPrefix(uniquePrefix(t)), nats.WithCluster("c1"), nats.WithSecret(secret), fast),
		"other-cluster": open(t, u, nats.WithPrefix(prefix), nats.WithCluster("c2"), nats.WithSecret(secret), fast),
		"other-secret":  open(t, u, nats.WithPrefix(prefix), nats.WithCluster("c1"), nats.WithSecret([]byte("another secret of at least 32 bytes")), fast),
		"no-secret":     open(t, u, nats.WithPrefix(prefix), nats.WithCluster("c1"), fast),
	}
	for name, b := range buses {
		if err := b.SayHello(name); err != nil {
			t.Fatalf("SayHello(%s): %v", name, err)
		}
	}
	self := buses["self"]
	deadline := time.Now().Add(5 * time.Second)
	for len(self.Heard()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // ten hellos of every node
	if got := slices.Sorted(maps.Keys(self.Heard())); !slices.Equal(got, []string{"peer"}) {
		t.Errorf("self heard %q, want only its peer", got)
	}
	if at := self.Heard()["peer"]; time.Since(at) > time.Second {
		t.Errorf("peer last heard %v ago", time.Since(at))
	}
	if got := slices.Sorted(maps.Keys(buses["peer"].Heard())); !slices.Equal(got, []string{"self"}) {
		t.Errorf("peer heard %q, want only self", got)
	}
	if up := self.ConnectedSince(); up.IsZero() || time.Since(up) > time.Minute {
		t.Errorf("ConnectedSince = %v", up)
	}
}

// TestOpenErrorHidesSecrets: a failed connection's error names the server
// without any password, whether in the user information or in a query.
func TestOpenErrorHidesSecrets(t *testing.T) {
	for _, u := range []string{
		"nats://127.0.0.1:1?password=pw-SECRET",
		"nats://user:pw-SECRET@127.0.0.1:1",
		"user:pw-SECRET@127.0.0.1:1",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := nats.Open(ctx, u, nil)
		cancel()
		if err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("Open(%q) = %v, want an error without the password", u, err)
		}
	}
}

// TestHelloBounded: without a cluster secret anything NATS lets publish
// can send hellos; made-up names neither grow Heard past its bound nor
// count when longer than a node name can be.
func TestHelloBounded(t *testing.T) {
	u := testURL(t)
	prefix := uniquePrefix(t)
	b := open(t, u, nats.WithPrefix(prefix))
	if err := b.SayHello("self"); err != nil {
		t.Fatal(err)
	}
	nc, err := natsgo.Connect(u)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish(prefix+".hello", []byte(strings.Repeat("x", 300))); err != nil { // first: room left
		t.Fatal(err)
	}
	for i := range 3000 {
		if err := nc.Publish(prefix+".hello", []byte(fmt.Sprintf("forged-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(b.Heard()) < 1024 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the rest arrive
	heard := b.Heard()
	if len(heard) != 1024 {
		t.Errorf("Heard holds %d names after 3,000 made-up hellos, want the bound, 1024", len(heard))
	}
	if _, ok := heard[strings.Repeat("x", 300)]; ok {
		t.Error("a 300-byte name was taken for a node's")
	}
}

// TestWebhookNudges: a nudge reaches the nodes of its cluster with every
// service it names, however many (it is split into messages of at most
// 256), and only those nodes: not another prefix's, another cluster's, or,
// with a cluster secret, those of nodes signing with another secret or
// none.
func TestWebhookNudges(t *testing.T) {
	u := testURL(t)
	prefix := uniquePrefix(t)
	secret := []byte("0123456789abcdef0123456789abcdef-cluster")
	mine := []nats.Option{nats.WithPrefix(prefix), nats.WithCluster("c1"), nats.WithSecret(secret)}
	leader, peer := open(t, u, mine...), open(t, u, mine...)
	heard := make(chan []string, 100)
	if err := leader.OnWebhookNudge(func(services []string) { heard <- services }); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*nats.Bus{
		open(t, u, nats.WithPrefix(uniquePrefix(t)), nats.WithCluster("c1"), nats.WithSecret(secret)),
		open(t, u, nats.WithPrefix(prefix), nats.WithCluster("c2"), nats.WithSecret(secret)),
		open(t, u, nats.WithPrefix(prefix), nats.WithCluster("c1"), nats.WithSecret([]byte("another secret of at least 32 bytes"))),
		open(t, u, nats.WithPrefix(prefix), nats.WithCluster("c1")),
	} {
		b.NudgeWebhooks([]string{"ISforeign"})
		if err := b.Close(); err != nil { // flushes
			t.Fatal(err)
		}
	}
	var want []string
	for i := range 600 {
		want = append(want, fmt.Sprintf("IS%032x", i))
	}
	peer.NudgeWebhooks(want)
	var got []string
	for len(got) < len(want) {
		select {
		case s := <-heard:
			if len(s) > 256 {
				t.Errorf("one nudge named %d services, want at most 256", len(s))
			}
			got = append(got, s...)
		case <-time.After(5 * time.Second):
			t.Fatalf("heard %d of %d services", len(got), len(want))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("heard %d services, want the %d sent, in order", len(got), len(want))
	}
	select {
	case s := <-heard:
		t.Errorf("heard %q besides, from a node of another prefix, cluster or secret", s)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestNudgeFloodLosesNoEvents: a flood of nudges that overflows the
// leader's nudge subscription is dropped, and that is all: it is not taken
// for lost events, which would make the node read again what every
// session may have missed. The handler is held while the flood arrives,
// so that NATS drops part of it.
func TestNudgeFloodLosesNoEvents(t *testing.T) {
	u := testURL(t)
	prefix := uniquePrefix(t)
	var resyncs atomic.Int64
	leader := open(t, u, nats.WithPrefix(prefix), nats.WithReconnectHandler(func(bool) { resyncs.Add(1) }))
	flooder := open(t, u, nats.WithPrefix(prefix))
	release := make(chan struct{})
	var heard atomic.Int64
	if err := leader.OnWebhookNudge(func([]string) {
		<-release
		heard.Add(1)
	}); err != nil {
		t.Fatal(err)
	}
	const sent = 20000 // past the subscription's 4,096 pending messages
	for i := range sent {
		flooder.NudgeWebhooks([]string{fmt.Sprintf("IS%032x", i)})
	}
	if err := flooder.Close(); err != nil { // flushes
		t.Fatal(err)
	}
	// Past the 4,096 the subscription may hold (one more being handled),
	// NATS drops what arrives: wait for well past that before letting the
	// handler go on.
	const overflowed = 2 * 4096
	for deadline := time.Now().Add(10 * time.Second); nats.ReceivedMsgs(leader) < overflowed; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the leader's connection read %d of the %d nudges in 10 s", nats.ReceivedMsgs(leader), sent)
		}
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for last := int64(-1); heard.Load() != last && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		last = heard.Load()
	}
	if n := heard.Load(); n >= sent {
		t.Fatalf("the leader handled all %d nudges: none was dropped, so this proves nothing", n)
	}
	time.Sleep(1500 * time.Millisecond) // lostEvents would have run fn by now
	if n := resyncs.Load(); n != 0 {
		t.Errorf("dropped nudges made the node resync %d times; they lose no event", n)
	}
	t.Logf("%d of %d nudges handled, the rest dropped", heard.Load(), sent)
}
