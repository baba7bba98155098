package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/client"
	"github.com/chorus-sync/chorus/internal/server"
)

type counter struct {
	N int `json:"n"`
}

func increment(old json.RawMessage) (json.RawMessage, error) {
	var c counter
	if len(old) > 0 {
		if err := json.Unmarshal(old, &c); err != nil {
			return nil, err
		}
	}
	c.N++
	return json.Marshal(c)
}

func counterOf(tb testing.TB, raw json.RawMessage) int {
	tb.Helper()
	var c counter
	if err := json.Unmarshal(raw, &c); err != nil {
		tb.Fatalf("unmarshal %s: %v", raw, err)
	}
	return c.N
}

func TestDocumentEventsBetweenClients(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	a := n.connect(t, "alice", client.Options{})
	b := n.connect(t, "bob", client.Options{})

	da, err := a.Document(ctx, "board", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Document(ctx, "board", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	if da.SID() != db.SID() || !strings.HasPrefix(da.SID(), "ET") || da.UniqueName() != "board" {
		t.Fatalf("SIDs = %q, %q (name %q), want the same ET… SID", da.SID(), db.SID(), da.UniqueName())
	}
	again, err := a.Document(ctx, da.SID(), client.OpenExisting)
	if err != nil || again == da || again.SID() != da.SID() || string(again.Data()) != string(da.Data()) {
		t.Fatalf("Document(SID) = %p, %v, want a new handle of the open object %p", again, err, da)
	}
	evA, evB := da.Events(), db.Events()

	if err := da.Set(ctx, map[string]string{"turn": "x"}); err != nil {
		t.Fatal(err)
	}
	gotB, gotA := recv(t, evB), recv(t, evA)
	for _, tc := range []struct {
		name  string
		ev    client.Event
		local bool
	}{{"remote", gotB, false}, {"local", gotA, true}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ev.Type != chorus.EventDocumentUpdated || string(tc.ev.Data) != `{"turn":"x"}` || tc.ev.Local != tc.local {
				t.Errorf("event = %+v, want document_updated {\"turn\":\"x\"} Local=%v", tc.ev, tc.local)
			}
		})
	}
	if got := string(db.Data()); got != `{"turn":"x"}` {
		t.Errorf("b.Data() = %s, want {\"turn\":\"x\"}", got)
	}
	if db.Revision() != da.Revision() || db.LastEventID() != gotB.ID {
		t.Errorf("b revision %q / last event %d, want %q / %d", db.Revision(), db.LastEventID(), da.Revision(), gotB.ID)
	}

	var calls atomic.Int32
	done := make(chan client.Event, 1)
	remove := db.OnUpdate(func(ev client.Event) {
		if calls.Add(1) == 1 {
			done <- ev
		}
	})
	defer remove()
	if err := da.SetTTL(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if exp := da.DateExpires(); exp == nil || time.Until(*exp) < 59*time.Minute {
		t.Errorf("DateExpires() = %v, want about an hour from now", exp)
	}
	if err := da.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	for ev := range evB { // TTL-only changes may emit an update first
		if ev.Type == chorus.EventDocumentRemoved {
			break
		}
	}
	if _, ok := <-evB; ok {
		t.Errorf("b.Events() still open after removal")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Errorf("OnUpdate not called")
	}
	if !db.Removed() {
		t.Errorf("b.Removed() = false after document_removed")
	}
}

func TestOpenModesAndErrors(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	c := n.connect(t, "alice", client.Options{})
	if _, err := c.Document(ctx, "dup", client.CreateNew); err != nil {
		t.Fatal(err)
	}
	doc, err := c.Document(ctx, "big", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	anon, err := c.Document(ctx, "", client.CreateNew)
	if err != nil || anon.UniqueName() != "" {
		t.Fatalf("anonymous document: %v, %v", anon, err)
	}
	stream, err := c.Stream(ctx, "s", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		call         func() error
		status, code int
	}{
		{"open missing SID", func() error {
			_, err := c.Document(ctx, "ET"+strings.Repeat("0", 32), client.OpenExisting)
			return err
		}, 404, 54100},
		{"create existing name", func() error {
			_, err := c.Document(ctx, "dup", client.CreateNew)
			return err
		}, 409, 54301},
		{"invalid unique name", func() error {
			_, err := c.Map(ctx, "MP"+strings.Repeat("a", 32), client.CreateNew)
			return err
		}, 400, 54302},
		{"document too large", func() error {
			return doc.Set(ctx, map[string]string{"x": strings.Repeat("a", 17<<10)})
		}, 413, 54006},
		{"stream message too large", func() error {
			_, err := stream.Publish(ctx, map[string]string{"x": strings.Repeat("a", 5<<10)})
			return err
		}, 413, 54006},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var ce *chorus.Error
			if !errors.As(err, &ce) || ce.Status != tc.status || ce.Code != tc.code {
				t.Errorf("error = %v, want *chorus.Error %d/%d", err, tc.status, tc.code)
			}
		})
	}
	_, err = c.Document(ctx, "ET"+strings.Repeat("0", 32), client.OpenExisting)
	if !errors.Is(err, chorus.ErrDocumentNotFound) {
		t.Errorf("errors.Is(%v, ErrDocumentNotFound) = false", err)
	}
	// The connection survives rejected writes.
	if err := doc.Set(ctx, map[string]int{"ok": 1}); err != nil {
		t.Errorf("Set after 413: %v", err)
	}
}

func TestMutateRetriesOn412(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	a := n.connect(t, "alice", client.Options{})
	b := n.connect(t, "bob", client.Options{})
	da, err := a.Document(ctx, "m", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Document(ctx, "m", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	err = da.Mutate(ctx, func(old json.RawMessage) (json.RawMessage, error) {
		calls++
		if calls == 1 { // a concurrent write makes a's revision stale
			if err := db.Set(ctx, map[string]int{"n": 10}); err != nil {
				return nil, err
			}
		}
		return increment(old)
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2 {
		t.Errorf("mutator calls = %d, want 2 (one 412 retry)", calls)
	}
	if got := counterOf(t, da.Data()); got != 11 {
		t.Errorf("n = %d, want 11", got)
	}
}

func TestConcurrentMutateNoLostIncrements(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	const clients, each = 4, 15
	docs := make([]*client.Document, clients)
	for i := range docs {
		c := n.connect(t, fmt.Sprintf("user%d", i), client.Options{})
		d, err := c.Document(ctx, "counter", client.OpenOrCreate)
		if err != nil {
			t.Fatal(err)
		}
		docs[i] = d
	}
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for _, d := range docs {
		wg.Go(func() {
			for range each {
				if err := d.Mutate(ctx, increment); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every client converges on the total through events.
	deadline := time.Now().Add(10 * time.Second)
	for i, d := range docs {
		for counterOf(t, d.Data()) != clients*each && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := counterOf(t, d.Data()); got != clients*each {
			t.Errorf("client %d: n = %d, want %d", i, got, clients*each)
		}
	}
}

func TestListOperations(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	a := n.connect(t, "alice", client.Options{})
	b := n.connect(t, "bob", client.Options{})
	la, err := a.List(ctx, "todo", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.List(ctx, "todo", client.OpenExisting)
	if err != nil {
		t.Fatal(err)
	}
	evB := lb.Events()
	for i := range 3 {
		it, err := la.Push(ctx, map[string]int{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		if it.Index != int64(i) || it.URL == "" {
			t.Errorf("Push #%d = index %d url %q, want index %d", i, it.Index, it.URL, i)
		}
		ev := recv(t, evB)
		if ev.Type != chorus.EventListItemAdded || ev.Index != int64(i) || ev.Local {
			t.Errorf("event = %+v, want remote list_item_added index %d", ev, i)
		}
	}
	it, err := la.Get(ctx, 1)
	if err != nil || string(it.Data) != `{"n":1}` {
		t.Errorf("Get(1) = %s, %v, want {\"n\":1}", it.Data, err)
	}
	if _, err := la.Get(ctx, 42); !errors.Is(err, chorus.ErrListItemNotFound) {
		t.Errorf("Get(42) error = %v, want 54151", err)
	}
	if _, err := lb.Set(ctx, 0, map[string]int{"n": 100}); err != nil {
		t.Fatal(err)
	}
	if it, err := la.Mutate(ctx, 0, increment); err != nil || counterOf(t, it.Data) != 101 {
		t.Errorf("Mutate(0) = %s, %v, want n=101", it.Data, err)
	}
	if err := la.Remove(ctx, 2); err != nil {
		t.Fatal(err)
	}
	wantTypes := []chorus.EventType{chorus.EventListItemUpdated, chorus.EventListItemUpdated, chorus.EventListItemRemoved}
	for i, want := range wantTypes {
		if ev := recv(t, evB); ev.Type != want {
			t.Errorf("event %d = %s, want %s", i, ev.Type, want)
		}
	}

	for _, tc := range []struct {
		name  string
		q     client.ItemQuery
		want  []int64
		more  bool
		after []int64
	}{
		{"asc pages", client.ItemQuery{PageSize: 1}, []int64{0}, true, []int64{1}},
		{"desc from 1", client.ItemQuery{Order: "desc", From: "1"}, []int64{1, 0}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := la.Items(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := indexes(p.Items); fmt.Sprint(got) != fmt.Sprint(tc.want) || (p.NextPageToken != "") != tc.more {
				t.Fatalf("Items(%+v) = %v next=%q, want %v more=%v", tc.q, got, p.NextPageToken, tc.want, tc.more)
			}
			if tc.more {
				p, err = la.Items(ctx, client.ItemQuery{PageToken: p.NextPageToken, PageSize: 1})
				if err != nil || fmt.Sprint(indexes(p.Items)) != fmt.Sprint(tc.after) || p.NextPageToken != "" {
					t.Errorf("next page = %v next=%q %v, want %v", indexes(p.Items), p.NextPageToken, err, tc.after)
				}
			}
		})
	}
}

func indexes(items []client.Item) []int64 {
	var out []int64
	for _, it := range items {
		out = append(out, it.Index)
	}
	return out
}

func TestMapOperations(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	a := n.connect(t, "alice", client.Options{})
	b := n.connect(t, "bob", client.Options{})
	ma, err := a.Map(ctx, "settings", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := b.Map(ctx, "settings", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	evB := mb.Events()
	const odd = "k/1 é"
	for _, tc := range []struct {
		key         string
		wantCreated bool
		wantType    chorus.EventType
	}{
		{odd, true, chorus.EventMapItemAdded},
		{odd, false, chorus.EventMapItemUpdated},
		{"plain", true, chorus.EventMapItemAdded},
	} {
		it, created, err := ma.Set(ctx, tc.key, map[string]string{"v": tc.key})
		if err != nil || created != tc.wantCreated || it.Key != tc.key {
			t.Errorf("Set(%q) = key %q created %v, %v; want created %v", tc.key, it.Key, created, err, tc.wantCreated)
		}
		if ev := recv(t, evB); ev.Type != tc.wantType || ev.Key != tc.key {
			t.Errorf("event = %s %q, want %s %q", ev.Type, ev.Key, tc.wantType, tc.key)
		}
	}
	if it, err := mb.Get(ctx, odd); err != nil || string(it.Data) != `{"v":"k/1 é"}` {
		t.Errorf("Get(%q) = %s, %v", odd, it.Data, err)
	}
	if _, err := mb.Get(ctx, "absent"); !errors.Is(err, chorus.ErrMapItemNotFound) {
		t.Errorf("Get(absent) error = %v, want 54201", err)
	}
	// Mutate creates an absent key (If-Match: -1) and updates existing ones.
	for want := 1; want <= 2; want++ {
		it, err := mb.Mutate(ctx, "count", increment)
		if err != nil || counterOf(t, it.Data) != want {
			t.Errorf("Mutate(count) = %s, %v, want n=%d", it.Data, err, want)
		}
	}
	if err := ma.Remove(ctx, odd); err != nil {
		t.Fatal(err)
	}
	p, err := ma.Items(ctx, client.ItemQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, it := range p.Items {
		keys = append(keys, it.Key)
	}
	if fmt.Sprint(keys) != "[count plain]" {
		t.Errorf("Items() keys = %v, want [count plain]", keys)
	}
	p, err = ma.Items(ctx, client.ItemQuery{From: "d"})
	if err != nil || len(p.Items) != 1 || p.Items[0].Key != "plain" {
		t.Errorf("Items(From d) = %+v, %v, want [plain]", p.Items, err)
	}
}

func TestStreamPublish(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	a := n.connect(t, "alice", client.Options{})
	b := n.connect(t, "bob", client.Options{})
	sa, err := a.Stream(ctx, "chat", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Stream(ctx, "chat", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan client.Message, 10)
	sb.OnMessage(func(m client.Message) { got <- m })
	m, err := sa.Publish(ctx, map[string]string{"text": "hi"})
	if err != nil || !strings.HasPrefix(m.SID, "TZ") {
		t.Fatalf("Publish = %+v, %v", m, err)
	}
	select {
	case r := <-got:
		if r.SID != m.SID || string(r.Data) != `{"text":"hi"}` {
			t.Errorf("received %+v, want %+v", r, m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("message not delivered")
	}
}

func TestReconnectReplaysMissedEvents(t *testing.T) {
	t.Run("one replay", func(t *testing.T) { testReconnectReplays(t, 0, 0) })
	// The server interrupts each replay after 2 events: the reader
	// subscribes again from the last event it got, twice (2 + 2 + 1).
	t.Run("interrupted replays", func(t *testing.T) { testReconnectReplays(t, 2, 2) })
}

func testReconnectReplays(t *testing.T, limit int, interruptions uint64) {
	n := startNodeWith(t, "", "", server.Config{WSReplayLimit: limit})
	ctx := ctxT(t)
	writer := n.connect(t, "writer", client.Options{})
	g := newGate()
	reader := n.connect(t, "reader", client.Options{HTTPClient: g.client()})
	dw, err := writer.Document(ctx, "replay", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	dr, err := reader.Document(ctx, "replay", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	events := dr.Events()
	if err := dw.Set(ctx, counter{N: 0}); err != nil {
		t.Fatal(err)
	}
	first := recv(t, events)

	g.shut()        // the reader cannot reconnect until released
	n = n.restart() // same data directory and port
	const missed = 5
	for i := 1; i <= missed; i++ {
		if err := dw.Set(ctx, counter{N: i}); err != nil { // waits for the writer's reconnect
			t.Fatalf("Set #%d: %v", i, err)
		}
	}
	if reader.Connected() {
		t.Fatal("reader connected while its dials are blocked")
	}
	g.release()
	prev := first.ID
	for i := 1; i <= missed; i++ {
		ev := recv(t, events)
		if ev.ID != prev+1 || counterOf(t, ev.Data) != i {
			t.Fatalf("event %d = id %d n=%d, want id %d n=%d", i, ev.ID, counterOf(t, ev.Data), prev+1, i)
		}
		prev = ev.ID
	}
	if got := counterOf(t, dr.Data()); got != missed {
		t.Errorf("reader data n = %d, want %d", got, missed)
	}
	// At least: the writer's own subscription may have been replayed too,
	// when its re-subscription came after some of its writes.
	if got := n.srv.Gateway().Stats().ReplaysInterrupted; got < interruptions || (interruptions == 0 && got != 0) {
		t.Errorf("replays interrupted = %d, want %d", got, interruptions)
	}
	// Live events continue on the new session, without duplicates.
	if err := dw.Set(ctx, counter{N: 99}); err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, events); ev.ID != prev+1 || counterOf(t, ev.Data) != 99 {
		t.Errorf("live event = id %d %s, want id %d n=99", ev.ID, ev.Data, prev+1)
	}
}

func TestTokenRenewal(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	var provided atomic.Int32
	provider := func(context.Context) (string, error) {
		provided.Add(1)
		return n.token(t, "alice", time.Hour), nil
	}
	t.Run("about to expire", func(t *testing.T) {
		c, err := client.New(ctx, n.token(t, "alice", 2*time.Second), client.Options{URL: n.url(), TokenProvider: provider, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		d, err := c.Document(ctx, "tok", client.OpenOrCreate)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second) // past the first token's expiry
		if err := d.Set(ctx, map[string]int{"n": 1}); err != nil {
			t.Errorf("Set after the first token expired: %v", err)
		}
		if provided.Load() == 0 {
			t.Errorf("TokenProvider never called")
		}
	})
	t.Run("expired at init", func(t *testing.T) {
		expired := mintExpired(t, n)
		_, err := client.New(ctx, expired, client.Options{URL: n.url(), Logger: quietLogger()})
		if !errors.Is(err, chorus.ErrTokenExpired) {
			t.Errorf("New(expired) error = %v, want 401/20104", err)
		}
		before := provided.Load()
		c, err := client.New(ctx, expired, client.Options{URL: n.url(), TokenProvider: provider, Logger: quietLogger()})
		if err != nil {
			t.Fatalf("New(expired, provider) = %v", err)
		}
		c.Close()
		if provided.Load() == before {
			t.Errorf("TokenProvider not called for an expired init token")
		}
	})
	t.Run("expired without provider", func(t *testing.T) {
		// Long enough to open the document on a loaded machine; a 1 s token
		// could expire before the open and fail it as disconnected.
		c, err := client.New(ctx, n.token(t, "alice", 3*time.Second), client.Options{URL: n.url(), Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		d, err := c.Document(ctx, "tok", client.OpenOrCreate)
		if err != nil {
			t.Fatal(err)
		}
		events := d.Events()
		deadline := time.Now().Add(10 * time.Second)
		for {
			err = d.Set(ctx, map[string]int{"n": 2})
			if (err != nil && !errors.Is(err, client.ErrDisconnected)) || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !errors.Is(err, chorus.ErrTokenExpired) {
			t.Errorf("Set after expiry = %v, want 20104", err)
		}
		if err != nil && strings.Count(err.Error(), chorus.ErrTokenExpired.Message) != 1 {
			t.Errorf("Set after expiry = %q, want the message once", err)
		}
		// The client gave up: a fresh token does not bring it back, and
		// UpdateToken says so.
		if err := c.UpdateToken(ctx, n.token(t, "alice", time.Hour)); !errors.Is(err, chorus.ErrTokenExpired) {
			t.Errorf("UpdateToken after giving up = %v, want 20104", err)
		}
		// A program ranging over the handle's events learns it too: the
		// last is EventSubscriptionFailed with the error, then the channel
		// closes (it stayed open, silent, forever).
		var last client.Event
		timeout := time.After(10 * time.Second)
	drain:
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					break drain
				}
				last = ev
			case <-timeout:
				t.Fatalf("the handle's Events channel still open 10 s after the client gave up (last event %s)", last.Type)
			}
		}
		if last.Type != client.EventSubscriptionFailed || !errors.Is(last.Err, chorus.ErrTokenExpired) || !errors.Is(d.Err(), chorus.ErrTokenExpired) {
			t.Errorf("after giving up: last event %s (%v), Err %v; want subscription_failed with 20104", last.Type, last.Err, d.Err())
		}
	})
	t.Run("closed while renewing", func(t *testing.T) {
		// Close during the provider's retries is a close: calls fail
		// with ErrClosed, not with a token error the client never gave
		// up with.
		down := func(context.Context) (string, error) { return "", errors.New("token backend unavailable") }
		c, err := client.New(ctx, n.token(t, "alice", 3*time.Second), client.Options{URL: n.url(), TokenProvider: down,
			MinBackoff: time.Second, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(4 * time.Second) // expired; the provider is being retried
		c.Close()
		if err := c.UpdateToken(ctx, n.token(t, "alice", time.Hour)); !errors.Is(err, client.ErrClosed) {
			t.Errorf("UpdateToken after Close during renewal = %v, want ErrClosed", err)
		}
	})
	t.Run("provider down for a while", func(t *testing.T) {
		// The first provider calls fail (a token backend restarting): the
		// client asks again with backoff instead of giving up at the
		// first failure.
		var calls atomic.Int32
		flaky := func(context.Context) (string, error) {
			if calls.Add(1) <= 3 {
				return "", errors.New("token backend unavailable")
			}
			return n.token(t, "alice", time.Hour), nil
		}
		c, err := client.New(ctx, n.token(t, "alice", 3*time.Second), client.Options{URL: n.url(), TokenProvider: flaky,
			MinBackoff: 50 * time.Millisecond, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		d, err := c.Document(ctx, "tok", client.OpenOrCreate)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(4 * time.Second) // past the first token's expiry
		if err := d.Set(ctx, map[string]int{"n": 3}); err != nil {
			t.Errorf("Set after the provider came back: %v (provider called %d times)", err, calls.Load())
		}
		if n := calls.Load(); n < 4 {
			t.Errorf("provider called %d times, want at least 4 (3 failures, then a token)", n)
		}
	})
}

// A PageToken continues its page's size when the query sets none: the
// client used to send its default of 50 with every token, so a query by
// 3 went on by 50.
func TestPageTokenKeepsItsSize(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	c := n.connect(t, "alice", client.Options{})
	l, err := c.List(ctx, "ten", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := l.Push(ctx, map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := l.Items(ctx, client.ItemQuery{PageSize: 3})
	if err != nil || fmt.Sprint(indexes(p.Items)) != "[0 1 2]" {
		t.Fatalf("first page = %v, %v; want [0 1 2]", indexes(p.Items), err)
	}
	p, err = l.Items(ctx, client.ItemQuery{PageToken: p.NextPageToken})
	if err != nil || fmt.Sprint(indexes(p.Items)) != "[3 4 5]" {
		t.Fatalf("next page by its token = %v, %v; want [3 4 5]", indexes(p.Items), err)
	}
	p, err = l.Items(ctx, client.ItemQuery{PageToken: p.PrevPageToken})
	if err != nil || fmt.Sprint(indexes(p.Items)) != "[0 1 2]" {
		t.Errorf("previous page by its token = %v, %v; want [0 1 2]", indexes(p.Items), err)
	}
	p, err = l.Items(ctx, client.ItemQuery{PageToken: p.NextPageToken, PageSize: 5})
	if err != nil || fmt.Sprint(indexes(p.Items)) != "[3 4 5 6 7]" {
		t.Errorf("next page by its token, 5 a page = %v, %v; want [3 4 5 6 7]", indexes(p.Items), err)
	}
}

// Values the server would take differently from what the caller meant
// are refused, not turned into something else: a negative TTL used to
// remove the expiry, a negative page size to ask for 50.
func TestRefusedArguments(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	c := n.connect(t, "alice", client.Options{})
	d, err := c.Document(ctx, "doc", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SetTTL(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := d.SetTTL(ctx, -time.Second); !errors.Is(err, chorus.ErrInvalidTTL) {
		t.Errorf("SetTTL(-1s) = %v, want 54011", err)
	}
	if d.DateExpires() == nil {
		t.Error("a refused SetTTL(-1s) removed the expiry")
	}
	l, err := c.List(ctx, "list", client.OpenOrCreate)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Items(ctx, client.ItemQuery{PageSize: -5}); !errors.Is(err, chorus.ErrInvalidPageSize) {
		t.Errorf("Items(PageSize: -5) = %v, want 54454", err)
	}
}
