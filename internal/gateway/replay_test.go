package gateway

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A client that resumes far behind, with a send queue much smaller than its
// backlog, and that reads slowly, gets every event of the replay: the replay
// waits for the client instead of overflowing the queue and closing the
// session as a slow consumer.
func TestReplayPacedToTheReader(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) {
		c.SendQueueFrames = 16
		c.SendQueueBytes = 1 << 20
		c.WriteTimeout = 10 * time.Second
		c.ReplayBatch = 50
	}))
	a := e.session("alice")
	doc := wantStatus(t, "create", a.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	sid, url := doc["sid"].(string), doc["url"].(string)
	start := num(doc["last_event_id"])
	pad := strings.Repeat("x", 1000)
	const n = 200 // 12 queues' worth
	for i := range n {
		wantStatus(t, "update", a.do("POST", url, nil, map[string]any{"data": map[string]any{"i": i, "pad": pad}}), 200, 0)
	}

	slow := e.dialWith(context.Background(), dialOptions{smallReadBuffer: true, notes: 16})
	slow.mustInit(e.token("slow", time.Hour))
	stopReading(slow) // replies still arrive; the first notification blocks its reader
	wantStatus(t, "establish", slow.subscribe("establish", 9, docSub(sid, start)), 200, 0)
	time.Sleep(500 * time.Millisecond) // an unpaced replay overflows the queue within milliseconds
	if st := e.gw.Stats(); st.SlowConsumers != 0 {
		t.Fatalf("slow consumers = %d while the client paused reading, want 0", st.SlowConsumers)
	}
	// Read on, at full speed: the 4 KiB socket buffer that made the pause
	// bite would take the replay seconds through delayed ACKs.
	slow.tcp.SetReadBuffer(1 << 20)
	for range cap(slow.notes) {
		<-slow.notes // the placeholders: the reader goes on
	}
	want := start
	for {
		nt := slow.next(20 * time.Second)
		if nt.EventType == "subscription_established" {
			var evs []map[string]any
			json.Unmarshal(nt.Events, &evs)
			if evs[0]["replay_status"] != "completed" || num(evs[0]["last_event_id"]) != start+n {
				t.Fatalf("subscription_established = %s, want completed at %d", nt.Events, start+n)
			}
			break
		}
		if want++; nt.EventType != "document_updated" || nt.id() != want {
			t.Fatalf("replayed %s %d, want document_updated %d", nt.EventType, nt.id(), want)
		}
	}
	if want != start+n {
		t.Fatalf("replayed up to %d, want %d", want, start+n)
	}
	if st := e.gw.Stats(); st.SlowConsumers != 0 || st.Replayed != n {
		t.Fatalf("stats %+v, want no slow consumer and %d replayed", st, n)
	}
}

// A replay longer than ReplayLimit stops there with replay_status
// "interrupted" and leaves the subscription off the live stream, so a
// client that subscribes again from its last event gets the rest in order,
// with nothing skipped and nothing twice, until one replay completes.
func TestReplayInterruptedAtLimit(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) {
		c.ReplayLimit = 10
		c.ReplayBatch = 4
	}))
	a, b := e.session("alice"), e.session("bob")
	doc := wantStatus(t, "create", a.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	sid, url := doc["sid"].(string), doc["url"].(string)
	start := num(doc["last_event_id"])
	update := func(i int) int64 {
		up := wantStatus(t, "update "+strconv.Itoa(i), a.do("POST", url, nil, map[string]any{"data": map[string]any{"i": i}}), 200, 0)
		return num(up["last_event_id"])
	}
	for i := range 25 {
		update(i)
	}

	pos := start
	var runs []int
	for corr := int64(100); ; corr++ {
		wantStatus(t, "establish", b.subscribe("establish", corr, docSub(sid, pos)), 200, 0)
		from := pos
		var status string
		for status == "" {
			nt := b.next(10 * time.Second)
			if nt.EventType == "subscription_established" {
				var evs []map[string]any
				json.Unmarshal(nt.Events, &evs)
				if string(nt.Correlation) != strconv.FormatInt(corr, 10) || num(evs[0]["last_event_id"]) != pos {
					t.Fatalf("subscription_established %s (correlation %s), want last_event_id %d, correlation %d", nt.Events, nt.Correlation, pos, corr)
				}
				status, _ = evs[0]["replay_status"].(string)
				continue
			}
			if nt.id() != pos+1 {
				t.Fatalf("replay %d: event %d after %d", corr, nt.id(), pos)
			}
			pos = nt.id()
		}
		runs = append(runs, int(pos-from))
		if status == "completed" {
			break
		}
		if status != "interrupted" || len(runs) > 5 {
			t.Fatalf("replays of %v events, the last %q", runs, status)
		}
		if len(runs) == 1 {
			// Written while b is interrupted: it must come in the next
			// replay, in order, not live ahead of the events before it.
			update(25)
		}
	}
	if want := []int{10, 10, 6}; len(runs) != len(want) || runs[0] != want[0] || runs[1] != want[1] || runs[2] != want[2] {
		t.Fatalf("replays of %v events, want %v", runs, want)
	}
	if st := e.gw.Stats(); st.ReplaysInterrupted != 2 || st.Replayed != 26 {
		t.Fatalf("stats %+v, want 2 interrupted and 26 replayed", st)
	}
	// Live after the replay that completed.
	id := update(26)
	if nt := b.nextOf("document_updated", 5*time.Second); nt.id() != id {
		t.Fatalf("live event %d, want %d", nt.id(), id)
	}
}
