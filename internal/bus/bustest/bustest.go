package bustest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

// Deadline is how long the suite waits for an expected delivery.
const Deadline = 10 * time.Second

// quiet is how long the suite waits for deliveries that must not happen,
// after a later event of the same publisher has arrived.
const quiet = 100 * time.Millisecond

// Run runs the conformance suite against buses made by open, which must
// return a fresh, empty bus and register its Close with t.Cleanup. Close
// must be idempotent: one subtest closes its bus itself.
func Run(t *testing.T, open func(t testing.TB) chorus.Bus) {
	t.Run("Ping", func(t *testing.T) {
		b := open(t)
		ctx, cancel := context.WithTimeout(context.Background(), Deadline)
		defer cancel()
		if err := b.Ping(ctx); err != nil {
			t.Errorf("Ping() = %v, want nil", err)
		}
	})
	t.Run("PublishSubscribe", func(t *testing.T) { testPublishSubscribe(t, open(t), nil) })
	t.Run("OtherObjects", func(t *testing.T) { testOtherObjects(t, open(t), nil) })
	t.Run("TwoSubscribers", func(t *testing.T) { testTwoSubscribers(t, open(t)) })
	t.Run("Cancel", func(t *testing.T) { testCancel(t, open(t), nil) })
	t.Run("Many", func(t *testing.T) { testMany(t, open(t), nil) })
	t.Run("ConcurrentPublishers", func(t *testing.T) { testConcurrent(t, open(t)) })
	t.Run("RawData", func(t *testing.T) { testRawData(t, open(t), nil) })
	t.Run("Close", func(t *testing.T) { testClose(t, open(t)) })
}

// RunShared runs the cross-node tests against buses that share a
// transport, as two nodes of one cluster do: openPair returns two fresh
// buses on the same server (and prefix), closed by t.Cleanup, whose
// subscribers see each other's publishes.
func RunShared(t *testing.T, openPair func(t testing.TB) (a, b chorus.Bus)) {
	t.Run("PublishSubscribe", func(t *testing.T) {
		a, b := openPair(t)
		testPublishSubscribe(t, a, b)
	})
	t.Run("BothNodes", func(t *testing.T) {
		a, b := openPair(t)
		obj := NewObjectSID()
		ca, cb := subscribe(t, a, obj), subscribe(t, b, obj)
		publish(t, a, NewEvent(obj, 1))
		ca.wait(t, "publisher's node", 1)
		cb.wait(t, "other node", 1)
	})
	t.Run("OtherObjects", func(t *testing.T) {
		a, b := openPair(t)
		testOtherObjects(t, a, b)
	})
	t.Run("Cancel", func(t *testing.T) {
		a, b := openPair(t)
		testCancel(t, a, b)
	})
	t.Run("Many", func(t *testing.T) {
		a, b := openPair(t)
		testMany(t, a, b)
	})
	t.Run("RawData", func(t *testing.T) {
		a, b := openPair(t)
		testRawData(t, a, b)
	})
}

// NewObjectSID returns a fresh document SID.
func NewObjectSID() string { return chorus.NewSID(chorus.PrefixDocument) }

// serviceSID is the service of every test event.
var serviceSID = chorus.NewSID(chorus.PrefixService)

// NewEvent returns a document_updated event of object obj with the given
// ID, with every field set.
func NewEvent(obj string, id int64) *chorus.Event {
	exp := time.Date(2031, 2, 3, 4, 5, 6, 7000, time.UTC)
	return &chorus.Event{
		Type:         chorus.EventDocumentUpdated,
		ID:           id,
		AccountSID:   "AC00000000000000000000000000000001",
		ServiceSID:   serviceSID,
		ObjectSID:    obj,
		Kind:         chorus.KindDocument,
		UniqueName:   "doc-name",
		Revision:     fmt.Sprintf("%x", id),
		Data:         json.RawMessage(fmt.Sprintf(`{"n": %d}`, id)),
		ItemIndex:    id * 7,
		ItemKey:      "key",
		ItemRevision: "9",
		ItemData:     json.RawMessage(`[1, 2]`),
		MessageSID:   "TZ00000000000000000000000000000001",
		DateCreated:  time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.UTC),
		DateExpires:  &exp,
		Identity:     "alice",
		EndpointID:   "ep-1",
		FromREST:     true,
	}
}

// Diff describes how got differs from want, or returns "". Times compare
// with Equal; Data and ItemData must be byte-exact, nil-ness included.
func Diff(got, want *chorus.Event) string {
	if got == nil || want == nil {
		if got != want {
			return fmt.Sprintf("got %v, want %v", got, want)
		}
		return ""
	}
	g, w := *got, *want
	var d []string
	if !g.DateCreated.Equal(w.DateCreated) {
		d = append(d, fmt.Sprintf("DateCreated = %v, want %v", g.DateCreated, w.DateCreated))
	}
	switch {
	case (g.DateExpires == nil) != (w.DateExpires == nil):
		d = append(d, fmt.Sprintf("DateExpires = %v, want %v", g.DateExpires, w.DateExpires))
	case g.DateExpires != nil && !g.DateExpires.Equal(*w.DateExpires):
		d = append(d, fmt.Sprintf("DateExpires = %v, want %v", *g.DateExpires, *w.DateExpires))
	}
	for _, f := range []struct {
		name string
		g, w json.RawMessage
	}{{"Data", g.Data, w.Data}, {"ItemData", g.ItemData, w.ItemData}} {
		if !bytes.Equal(f.g, f.w) || (f.g == nil) != (f.w == nil) {
			d = append(d, fmt.Sprintf("%s = %q (nil %t), want %q (nil %t)", f.name, f.g, f.g == nil, f.w, f.w == nil))
		}
	}
	g.DateCreated, w.DateCreated = time.Time{}, time.Time{}
	g.DateExpires, w.DateExpires = nil, nil
	g.Data, w.Data, g.ItemData, w.ItemData = nil, nil, nil, nil
	if !reflect.DeepEqual(g, w) {
		d = append(d, fmt.Sprintf("other fields = %+v, want %+v", g, w))
	}
	if len(d) == 0 {
		return ""
	}
	return fmt.Sprint(d)
}

func testPublishSubscribe(t *testing.T, pub, sub chorus.Bus) {
	if sub == nil {
		sub = pub
	}
	obj := NewObjectSID()
	c := subscribe(t, sub, obj)
	want := NewEvent(obj, 1)
	publish(t, pub, want)
	got := c.wait(t, "subscriber", 1)
	if d := Diff(got[0], want); d != "" {
		t.Errorf("received event differs: %s", d)
	}
}

func testOtherObjects(t *testing.T, pub, sub chorus.Bus) {
	if sub == nil {
		sub = pub
	}
	x, y, z := NewObjectSID(), NewObjectSID(), NewObjectSID()
	cx, cy := subscribe(t, sub, x), subscribe(t, sub, y)
	// Events of y and of the unsubscribed z, then a marker of x.
	for i := int64(1); i <= 5; i++ {
		publish(t, pub, NewEvent(y, i), NewEvent(z, i))
	}
	publish(t, pub, NewEvent(x, 1))
	cx.wait(t, "subscriber of x", 1)
	cy.wait(t, "subscriber of y", 5)
	time.Sleep(quiet)
	for _, e := range cx.events() {
		if e.ObjectSID != x {
			t.Errorf("subscriber of x received an event of %s", e.ObjectSID)
		}
	}
	for _, e := range cy.events() {
		if e.ObjectSID != y {
			t.Errorf("subscriber of y received an event of %s", e.ObjectSID)
		}
	}
	if n := cx.len(); n != 1 {
		t.Errorf("subscriber of x received %d events, want 1", n)
	}
	if n := cy.len(); n != 5 {
		t.Errorf("subscriber of y received %d events, want 5", n)
	}
}

func testTwoSubscribers(t *testing.T, b chorus.Bus) {
	obj := NewObjectSID()
	c1, c2 := subscribe(t, b, obj), subscribe(t, b, obj)
	publish(t, b, NewEvent(obj, 1), NewEvent(obj, 2))
	c1.wait(t, "first subscriber", 2)
	c2.wait(t, "second subscriber", 2)
}

func testCancel(t *testing.T, pub, sub chorus.Bus) {
	if sub == nil {
		sub = pub
	}
	obj := NewObjectSID()
	c1 := &collector{}
	cancel1, err := sub.Subscribe(obj, c1.add)
	if err != nil {
		t.Fatalf("Subscribe(%s) = %v, want nil", obj, err)
	}
	c2 := subscribe(t, sub, obj)
	publish(t, pub, NewEvent(obj, 1))
	c1.wait(t, "subscriber before cancel", 1)
	c2.wait(t, "other subscriber", 1)

	cancel1()
	cancel1() // idempotent
	publish(t, pub, NewEvent(obj, 2))
	c2.wait(t, "other subscriber after cancel", 2)
	time.Sleep(quiet)
	if n := c1.len(); n != 1 {
		t.Errorf("canceled subscriber received %d events, want 1", n)
	}

	// Canceling every subscriber and subscribing again works.
	c3 := &collector{}
	cancel3, err := sub.Subscribe(obj, c3.add)
	if err != nil {
		t.Fatalf("Subscribe(%s) again = %v, want nil", obj, err)
	}
	publish(t, pub, NewEvent(obj, 3))
	c3.wait(t, "new subscriber", 1)
	cancel3()
	c2.wait(t, "other subscriber", 3)
	c2.cancel()
	c2.cancel()
	c4 := subscribe(t, sub, obj)
	publish(t, pub, NewEvent(obj, 4))
	c4.wait(t, "subscriber after all canceled", 1)
	time.Sleep(quiet)
	if n := c3.len(); n != 1 {
		t.Errorf("canceled subscriber received %d events, want 1", n)
	}
	if n := c2.len(); n != 3 {
		t.Errorf("canceled subscriber received %d events, want 3", n)
	}
}

// testMany publishes 1000 events, singly and in batches, from one
// publisher: over a healthy connection all of them must arrive.
func testMany(t *testing.T, pub, sub chorus.Bus) {
	if sub == nil {
		sub = pub
	}
	const n = 1000
	obj := NewObjectSID()
	c := subscribe(t, sub, obj)
	id := int64(0)
	for id < n/2 {
		id++
		publish(t, pub, NewEvent(obj, id))
	}
	for id < n {
		batch := make([]*chorus.Event, 0, 100)
		for len(batch) < cap(batch) && id < n {
			id++
			batch = append(batch, NewEvent(obj, id))
		}
		publish(t, pub, batch...)
	}
	got := c.wait(t, "subscriber", n)
	seen := make(map[int64]bool, n)
	for _, e := range got {
		if seen[e.ID] {
			t.Errorf("event %d received twice", e.ID)
		}
		seen[e.ID] = true
	}
	for i := int64(1); i <= n; i++ {
		if !seen[i] {
			t.Errorf("event %d not received", i)
		}
	}
}

func testConcurrent(t *testing.T, b chorus.Bus) {
	const pubs, each = 4, 250
	obj := NewObjectSID()
	c := subscribe(t, b, obj)
	var wg sync.WaitGroup
	errs := make(chan error, pubs)
	for p := range pubs {
		wg.Go(func() {
			for i := range each {
				if err := b.Publish(context.Background(), NewEvent(obj, int64(p*each+i+1))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish() = %v, want nil", err)
	}
	c.wait(t, "subscriber", pubs*each)
}

func testRawData(t *testing.T, pub, sub chorus.Bus) {
	if sub == nil {
		sub = pub
	}
	tests := []struct {
		name string
		data json.RawMessage
	}{
		{"nil", nil},
		{"empty", json.RawMessage{}},
		{"whitespace", json.RawMessage("{ \"a\" :\t[1,  2 ],\n\"b\":null }")},
		{"html", json.RawMessage(`{"h":"<a href=\"x\">&amp;</a>"}`)},
		{"escapes", json.RawMessage(`{"e":"\u00e9\u2028\ud83d\ude00\/"}`)},
		{"unicode", json.RawMessage(`{"é":"😀"}`)},
		{"numbers", json.RawMessage(`[1.0e+2, -0, 123456789012345678901234567890, 1E400]`)},
		{"string", json.RawMessage(`"just a string"`)},
		{"big", json.RawMessage(`{"s":"` + string(bytes.Repeat([]byte("x"), 16<<10)) + `"}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := NewObjectSID()
			c := subscribe(t, sub, obj)
			want := NewEvent(obj, 1)
			want.Data = tt.data
			want.ItemData = tt.data
			publish(t, pub, want)
			got := c.wait(t, "subscriber", 1)[0]
			if !bytes.Equal(got.Data, tt.data) || (got.Data == nil) != (tt.data == nil) {
				t.Errorf("Data = %q, want %q", got.Data, tt.data)
			}
			if !bytes.Equal(got.ItemData, tt.data) || (got.ItemData == nil) != (tt.data == nil) {
				t.Errorf("ItemData = %q, want %q", got.ItemData, tt.data)
			}
			if d := Diff(got, want); d != "" {
				t.Errorf("received event differs: %s", d)
			}
		})
	}
}

func testClose(t *testing.T, b chorus.Bus) {
	obj := NewObjectSID()
	subscribe(t, b, obj)
	if err := b.Close(); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}
	if cancel, err := b.Subscribe(obj, func(*chorus.Event) {}); err == nil {
		cancel()
		t.Errorf("Subscribe after Close = nil error, want an error")
	}
}

// collector records the events delivered to one subscriber.
type collector struct {
	mu     sync.Mutex
	got    []*chorus.Event
	notify chan struct{} // closed and replaced on every event
	cancel func()
}

func (c *collector) add(e *chorus.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, e)
	if c.notify != nil {
		close(c.notify)
		c.notify = nil
	}
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func (c *collector) events() []*chorus.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*chorus.Event(nil), c.got...)
}

// wait waits until at least n events have arrived and returns them.
func (c *collector) wait(t testing.TB, who string, n int) []*chorus.Event {
	t.Helper()
	deadline := time.NewTimer(Deadline)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		if len(c.got) >= n {
			got := append([]*chorus.Event(nil), c.got...)
			c.mu.Unlock()
			return got
		}
		if c.notify == nil {
			c.notify = make(chan struct{})
		}
		ch, have := c.notify, len(c.got)
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s received %d events within %v, want %d", who, have, Deadline, n)
		}
	}
}

// subscribe subscribes a new collector to obj until the test ends.
func subscribe(t testing.TB, b chorus.Bus, obj string) *collector {
	t.Helper()
	c := &collector{}
	cancel, err := b.Subscribe(obj, c.add)
	if err != nil {
		t.Fatalf("Subscribe(%s) = %v, want nil", obj, err)
	}
	c.cancel = cancel
	t.Cleanup(cancel)
	return c
}

func publish(t testing.TB, b chorus.Bus, events ...*chorus.Event) {
	t.Helper()
	if err := b.Publish(context.Background(), events...); err != nil {
		t.Fatalf("Publish(%d events) = %v, want nil", len(events), err)
	}
}
