package client_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/client"
)

// rest calls the node's REST API v1 on the default service and fails the
// test unless it answers want.
func (n *node) rest(tb testing.TB, method, path string, form url.Values, want int) {
	tb.Helper()
	cr := n.srv.Credentials()
	req, err := http.NewRequest(method, n.url()+"/v1/Services/"+cr.ServiceSID+path, strings.NewReader(form.Encode()))
	if err != nil {
		tb.Fatal(err)
	}
	req.SetBasicAuth(cr.APIKeySID, cr.APISecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		tb.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, body, want)
	}
}

// waitFor polls cond every few milliseconds for up to 10 s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recvWithin reads one event or fails after d.
func recvWithin(tb testing.TB, ch <-chan client.Event, d time.Duration, what string) client.Event {
	tb.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			tb.Fatalf("%s: events channel closed", what)
		}
		return ev
	case <-time.After(d):
		tb.Fatalf("%s: no event within %v", what, d)
	}
	return client.Event{}
}

// drainClosed reads ch until it is closed, or fails after 5 s.
func drainClosed(tb testing.TB, ch <-chan client.Event, what string) []client.Event {
	tb.Helper()
	var evs []client.Event
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return evs
			}
			evs = append(evs, ev)
		case <-deadline:
			tb.Fatalf("%s: channel not closed within 5s (got %d events)", what, len(evs))
		}
	}
}

// stall makes the dispatcher block on ch (capacity 1, never drained): it
// writes three times through d and waits until the events arrived and
// ch is full, so the second is being sent.
func stall(t *testing.T, d *client.Document, ch <-chan client.Event) {
	t.Helper()
	ctx := ctxT(t)
	base := d.LastEventID()
	for i := range 3 {
		if err := d.Set(ctx, counter{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the stalled channel to fill", func() bool { return d.LastEventID() >= base+3 && len(ch) == cap(ch) })
}

// A handle whose Events channel nobody reads any more must not hold up
// the Client's other objects, or the other handles of its own object,
// once it is closed; its channel is closed at once.
func TestClosedHandleDoesNotBlockDelivery(t *testing.T) {
	n := startNode(t, "", "")
	t.Run("other object", func(t *testing.T) {
		ctx := ctxT(t)
		c := n.connect(t, "alice", client.Options{EventBuffer: 1})
		stalled, err := c.Document(ctx, "stalled", client.OpenOrCreate)
		if err != nil {
			t.Fatal(err)
		}
		live, err := c.Document(ctx, "live", client.OpenOrCreate)
		if err != nil {
			t.Fatal(err)
		}
		chStalled, chLive := stalled.Events(), live.Events()
		called := make(chan client.Event, 10)
		live.OnEvent(func(ev client.Event) { called <- ev })
		stall(t, stalled, chStalled) // as after `for ev := range ch { break }`

		if err := stalled.Close(); err != nil {
			t.Fatal(err)
		}
		// Nobody reads chStalled until the other object's event is through.
		if err := live.Set(ctx, counter{N: 42}); err != nil {
			t.Fatal(err)
		}
		if ev := recvWithin(t, chLive, 5*time.Second, "other object"); counterOf(t, ev.Data) != 42 {
			t.Errorf("other object's event = %s, want n=42", ev.Data)
		}
		select {
		case <-called:
		case <-time.After(5 * time.Second):
			t.Error("other object's callback not called")
		}
		if evs := drainClosed(t, chStalled, "closed handle"); len(evs) > 3 {
			t.Errorf("closed handle's channel held %d events, want at most 3", len(evs))
		}
	})
	t.Run("same object", func(t *testing.T) {
		ctx := ctxT(t)
		c := n.connect(t, "bob", client.Options{EventBuffer: 1})
		abandoned, err := c.Document(ctx, "shared", client.OpenOrCreate)
		if err != nil {
			t.Fatal(err)
		}
		other, err := c.Document(ctx, "shared", client.OpenExisting)
		if err != nil {
			t.Fatal(err)
		}
		chAbandoned := abandoned.Events()
		stall(t, abandoned, chAbandoned)
		// Registered during the stall: gets the events still queued (n=1,
		// n=2), then later ones.
		chOther := other.Events()
		if err := abandoned.Close(); err != nil {
			t.Fatal(err)
		}
		if err := other.Set(ctx, counter{N: 7}); err != nil {
			t.Fatal(err)
		}
		var got []int
		for len(got) == 0 || got[len(got)-1] != 7 {
			got = append(got, counterOf(t, recvWithin(t, chOther, 5*time.Second, "other handle").Data))
		}
		if len(got) > 3 || (len(got) > 1 && got[len(got)-2] != 2) {
			t.Errorf("other handle's events = %v, want [... 2 7]", got)
		}
		drainClosed(t, chAbandoned, "closed handle")
	})
}

// Each open returns its own handle; closing one, even twice, leaves the
// others (and the subscription they share) alone.
func TestHandlesCloseIndependently(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	c := n.connect(t, "alice", client.Options{})
	w := n.connect(t, "writer", client.Options{})
	b, err := c.Document(ctx, "shared", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Document(ctx, b.SID(), client.OpenExisting)
	if err != nil {
		t.Fatal(err)
	}
	if a == b || a.SID() != b.SID() {
		t.Fatalf("second open = %p (SID %s), want a new handle of %s (first %p)", a, a.SID(), b.SID(), b)
	}
	chB := b.Events()
	chA := a.Events()
	var aCalls atomic.Int32
	a.OnEvent(func(client.Event) { aCalls.Add(1) })
	// Component A is done with it: a deferred Close and an explicit one.
	for i := range 2 {
		if err := a.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	drainClosed(t, chA, "closed handle's channel")
	if _, ok := <-a.Events(); ok {
		t.Error("Events() of a closed handle delivered an event")
	}
	if !errors.Is(a.Err(), client.ErrClosed) || b.Err() != nil {
		t.Errorf("Err() = %v (closed), %v (open), want ErrClosed, nil", a.Err(), b.Err())
	}

	wd, err := w.Document(ctx, b.SID(), client.OpenExisting)
	if err != nil {
		t.Fatal(err)
	}
	if err := wd.Set(ctx, counter{N: 1}); err != nil {
		t.Fatal(err)
	}
	ev := recvWithin(t, chB, 10*time.Second, "open handle after the other's double Close")
	if ev.Type != chorus.EventDocumentUpdated || counterOf(t, ev.Data) != 1 || counterOf(t, b.Data()) != 1 {
		t.Errorf("open handle: event %s %s, Data() %s, want document_updated n=1", ev.Type, ev.Data, b.Data())
	}
	if aCalls.Load() != 0 {
		t.Errorf("closed handle's callback called %d times", aCalls.Load())
	}

	// The last Close cancels the subscription; opening again subscribes
	// again, after that cancel.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	drainClosed(t, chB, "last handle's channel")
	again, err := c.Document(ctx, b.SID(), client.OpenExisting)
	if err != nil {
		t.Fatal(err)
	}
	chAgain := again.Events()
	if err := wd.Set(ctx, counter{N: 2}); err != nil {
		t.Fatal(err)
	}
	if ev := recvWithin(t, chAgain, 10*time.Second, "reopened handle"); counterOf(t, ev.Data) != 2 {
		t.Errorf("reopened handle: event %s, want n=2", ev.Data)
	}
}

// A subscription the server ends while it is open (read access withdrawn:
// subscription_failed 403/54007) reaches the handle's users: an
// EventSubscriptionFailed to callbacks and channels, then the channels
// close and Err reports it; opening the object again subscribes again.
func TestSubscriptionFailureEndsHandle(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	n.rest(t, "POST", "", url.Values{"AclEnabled": {"true"}}, http.StatusOK)
	n.rest(t, "POST", "/Documents", url.Values{"UniqueName": {"secret"}, "Data": {`{"n":0}`}}, http.StatusCreated)
	perm := "/Documents/secret/Permissions/alice"
	readOnly := url.Values{"Read": {"true"}, "Write": {"false"}, "Manage": {"false"}}
	n.rest(t, "POST", perm, readOnly, http.StatusOK)

	c := n.connect(t, "alice", client.Options{})
	d, err := c.Document(ctx, "secret", client.OpenExisting)
	if err != nil {
		t.Fatal(err)
	}
	events := d.Events()
	called := make(chan client.Event, 10)
	d.OnEvent(func(ev client.Event) { called <- ev })

	n.rest(t, "DELETE", perm, nil, http.StatusNoContent)
	evs := drainClosed(t, events, "Events after the permission was deleted")
	if len(evs) != 1 || evs[0].Type != client.EventSubscriptionFailed || evs[0].ObjectSID != d.SID() ||
		!errors.Is(evs[0].Err, chorus.ErrForbidden) {
		t.Fatalf("events = %+v, want one subscription_failed with 403/54007", evs)
	}
	select {
	case ev := <-called:
		if ev.Type != client.EventSubscriptionFailed || !errors.Is(ev.Err, chorus.ErrForbidden) {
			t.Errorf("callback got %+v, want subscription_failed 403/54007", ev)
		}
	case <-time.After(5 * time.Second):
		t.Error("callback not called for the failure")
	}
	if !errors.Is(d.Err(), chorus.ErrForbidden) {
		t.Errorf("Err() = %v, want 403/54007", d.Err())
	}
	if _, ok := <-d.Events(); ok {
		t.Error("Events() after the failure delivered an event")
	}

	// Read access again: a new open subscribes again while the failed
	// handle is still open.
	n.rest(t, "POST", perm, readOnly, http.StatusOK)
	d2, err := c.Document(ctx, "secret", client.OpenExisting)
	if err != nil {
		t.Fatalf("reopen after the grant: %v", err)
	}
	ch2 := d2.Events()
	n.rest(t, "POST", "/Documents/secret", url.Values{"Data": {`{"n":5}`}}, http.StatusOK)
	if ev := recvWithin(t, ch2, 10*time.Second, "reopened handle"); ev.Type != chorus.EventDocumentUpdated || counterOf(t, ev.Data) != 5 {
		t.Errorf("reopened handle: %s %s, want document_updated n=5", ev.Type, ev.Data)
	}
	if counterOf(t, d2.Data()) != 5 || d2.Err() != nil {
		t.Errorf("reopened handle: Data() %s, Err() %v, want n=5, nil", d2.Data(), d2.Err())
	}
	if err := d.Close(); err != nil { // the failed handle's Close cancels nothing
		t.Fatal(err)
	}
	n.rest(t, "POST", "/Documents/secret", url.Values{"Data": {`{"n":6}`}}, http.StatusOK)
	if ev := recvWithin(t, ch2, 10*time.Second, "reopened handle after the failed one's Close"); counterOf(t, ev.Data) != 6 {
		t.Errorf("reopened handle: %s, want n=6", ev.Data)
	}
}

// Closing an object's last handle while it is opened again: the new open
// subscribes after the old subscription's cancel, so the server keeps the
// new one.
func TestReopenWhileClosing(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	c := n.connect(t, "alice", client.Options{})
	w := n.connect(t, "writer", client.Options{})
	wd, err := w.Document(ctx, "flip", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.Document(ctx, wd.SID(), client.OpenExisting)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		closed := make(chan error, 1)
		go func() { closed <- d.Close() }()
		next, err := c.Document(ctx, wd.SID(), client.OpenExisting)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		ch := next.Events()
		if err := wd.Set(ctx, counter{N: i}); err != nil {
			t.Fatal(err)
		}
		for {
			ev := recvWithin(t, ch, 5*time.Second, fmt.Sprintf("round %d: reopened handle", i))
			if counterOf(t, ev.Data) == i {
				break
			}
		}
		d = next
	}
}
