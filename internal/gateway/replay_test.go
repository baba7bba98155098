package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
)

// stallEvents is how many updates of 16 KB fill the send queue and the
// loopback sockets' buffers (a few MB) with room to spare.
const stallEvents = 600

// bigUpdates writes n updates of 16 KB to document sid, straight through
// the engine, and returns the last event id.
func bigUpdates(t *testing.T, e *env, sid string, n int) int64 {
	t.Helper()
	data := json.RawMessage(`{"pad":"` + strings.Repeat("x", 16000) + `"}`)
	svc := e.service()
	var last int64
	for range n {
		obj, err := e.eng.UpdateObject(context.Background(), engine.SystemActor(), svc, chorus.KindDocument, sid, engine.UpdateObject{Data: data})
		if err != nil {
			t.Fatalf("UpdateObject: %v", err)
		}
		last = obj.LastEventID
	}
	return last
}

// stalledReplay subscribes a new session of identity to document sid from
// position start and stops reading, so that the replay of what follows
// start fills the sockets and has to wait for the client. It returns once
// the replay has stopped progressing, and a function that makes the
// session read on, at full speed.
func stalledReplay(t *testing.T, e *env, identity, sid string, start, last int64) (*tclient, func()) {
	t.Helper()
	c := e.dialWith(context.Background(), dialOptions{notes: 16})
	c.mustInit(e.token(identity, time.Hour))
	stopReading(c) // replies still arrive; the first notification blocks the reader
	wantStatus(t, "establish", c.subscribe("establish", 9, docSub(sid, start)), 200, 0)
	prev := uint64(1<<64 - 1)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		n := e.gw.Stats().Replayed
		if n >= uint64(last-start) {
			t.Fatalf("all %d events were queued while the client read nothing: the replay did not wait for it", n)
		}
		if n == prev {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replay did not settle: %d events queued", n)
		}
		prev = n
	}
	return c, func() {
		for range cap(c.notes) {
			<-c.notes // the placeholders: the reader goes on
		}
	}
}

// replayedUntilEstablished reads c's notifications: document_updated
// events with consecutive ids after from, then subscription_established.
// It returns the last id replayed and the replay_status and last_event_id
// established.
func replayedUntilEstablished(t *testing.T, c *tclient, from int64) (last int64, status string, at int64) {
	t.Helper()
	last = from
	for {
		nt := c.next(20 * time.Second)
		if nt.EventType == "subscription_established" {
			var evs []map[string]any
			json.Unmarshal(nt.Events, &evs)
			status, _ = evs[0]["replay_status"].(string)
			return last, status, num(evs[0]["last_event_id"])
		}
		if last++; nt.EventType != "document_updated" || nt.id() != last {
			t.Fatalf("replayed %s %d, want document_updated %d", nt.EventType, nt.id(), last)
		}
	}
}

// notesUntilClosed returns the notifications c receives until its session
// ends.
func notesUntilClosed(t *testing.T, c *tclient) []*note {
	t.Helper()
	var got []*note
	timeout := time.After(20 * time.Second)
	for {
		select {
		case n := <-c.notes:
			got = append(got, n)
		case <-c.done:
			for len(c.notes) > 0 {
				got = append(got, <-c.notes)
			}
			return got
		case <-timeout:
			t.Fatalf("session still open after %d notifications", len(got))
		}
	}
}

// A client that resumes far behind, with more to replay than its send
// queue and socket buffers hold, and that stops reading, gets every event
// of the replay once it reads on: the replay waits for the client instead
// of overflowing the queue and closing the session as a slow consumer.
func TestReplayPacedToTheReader(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) {
		c.SendQueueFrames = 16
		c.WriteTimeout = 10 * time.Second
		c.ReplayBatch = 50
		c.ReplayTime = time.Minute // a loaded machine takes seconds over 9.6 MB
	}))
	doc := e.aclDoc(false)
	const n = stallEvents
	last := bigUpdates(t, e, doc.SID, n)
	c, resume := stalledReplay(t, e, "alice", doc.SID, doc.LastEventID, last)
	if st := e.gw.Stats(); st.SlowConsumers != 0 {
		t.Fatalf("slow consumers = %d while the client paused reading, want 0", st.SlowConsumers)
	}
	resume()
	if got, status, at := replayedUntilEstablished(t, c, doc.LastEventID); got != last || status != "completed" || at != last {
		t.Fatalf("replayed up to %d, then %s at %d; want every event up to %d, then completed there", got, status, at, last)
	}
	if st := e.gw.Stats(); st.SlowConsumers != 0 || st.Replayed != n {
		t.Fatalf("stats %+v, want no slow consumer and %d replayed", st, n)
	}
}

// A revocation of the session's key while its replay waits for the client
// stops the replay: nothing written after it reaches the session.
func TestReplayStopsAtRevocation(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.SendQueueFrames, c.ReplayTime = 16, time.Minute }))
	doc := e.aclDoc(false)
	last := bigUpdates(t, e, doc.SID, stallEvents)
	c, resume := stalledReplay(t, e, "alice", doc.SID, doc.LastEventID, last)
	if err := e.gw.RevokeKeys(context.Background(), e.creds.AccountSID, e.creds.APIKeySID); err != nil {
		t.Fatalf("RevokeKeys: %v", err)
	}
	after := bigUpdates(t, e, doc.SID, 5)
	resume()
	for _, nt := range notesUntilClosed(t, c) {
		if nt.id() > last {
			t.Fatalf("%s %d (written after the revocation, up to %d) reached the revoked session", nt.EventType, nt.id(), after)
		}
	}
}

// Read access withdrawn while a replay waits for the client: the
// subscription_failed ends the replay; no event of the object follows it.
func TestReplayStopsAtDenial(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.SendQueueFrames, c.ReplayTime = 16, time.Minute }))
	doc := e.aclDoc(true)
	e.grant(doc.SID, "alice", true)
	last := bigUpdates(t, e, doc.SID, stallEvents)
	c, resume := stalledReplay(t, e, "alice", doc.SID, doc.LastEventID, last)
	if err := e.eng.DeletePermission(context.Background(), e.service(), chorus.KindDocument, doc.SID, "alice"); err != nil {
		t.Fatal(err)
	}
	bigUpdates(t, e, doc.SID, 2)
	resume()
	wantDenied(t, c, doc.SID) // skips the events before it
	marker := e.aclDoc(false)
	wantStatus(t, "establish marker", c.subscribe("establish", 10, docSub(marker.SID, nil)), 200, 0)
	e.write(marker.SID, 1)
	for {
		nt := c.next(10 * time.Second)
		if nt.event()["document_sid"] == doc.SID || (nt.EventType == "subscription_established" && strings.Contains(string(nt.Events), doc.SID)) {
			t.Fatalf("%s %s after the denial", nt.EventType, nt.Events)
		}
		if nt.event()["document_sid"] == marker.SID {
			break
		}
	}
}

// An object removed while its replay waits for the client: the client
// still gets the events before the removal, then the removal.
func TestReplaySendsRemovalMidway(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.SendQueueFrames, c.ReplayTime = 16, time.Minute }))
	doc := e.aclDoc(false)
	last := bigUpdates(t, e, doc.SID, stallEvents)
	c, resume := stalledReplay(t, e, "alice", doc.SID, doc.LastEventID, last)
	if _, err := e.eng.DeleteObject(context.Background(), engine.SystemActor(), e.service(), chorus.KindDocument, doc.SID); err != nil {
		t.Fatalf("DeleteObject: %v", err)
	}
	resume()
	want := doc.LastEventID
	for {
		nt := c.next(20 * time.Second)
		if nt.EventType == "document_removed" {
			if want != last {
				t.Fatalf("removal after event %d, want every event up to %d first", want, last)
			}
			return
		}
		if want++; nt.EventType != "document_updated" || nt.id() != want {
			t.Fatalf("replayed %s %d %s, want document_updated %d", nt.EventType, nt.id(), nt.Events, want)
		}
	}
}

// A replay that waits for its client past ReplayTime stops there with
// replay_status "interrupted", after the events it could send: the
// session's other requests wait for no more than that.
func TestReplayInterruptedAtReplayTime(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.SendQueueFrames, c.ReplayTime = 16, 300*time.Millisecond }))
	doc := e.aclDoc(false)
	last := bigUpdates(t, e, doc.SID, stallEvents)
	c, resume := stalledReplay(t, e, "alice", doc.SID, doc.LastEventID, last)
	time.Sleep(500 * time.Millisecond)
	resume()
	if got, status, at := replayedUntilEstablished(t, c, doc.LastEventID); got >= last || status != "interrupted" || at != got {
		t.Fatalf("replayed up to %d of %d, then %s at %d; want interrupted where the replay stopped", got, last, status, at)
	}
	if st := e.gw.Stats(); st.ReplaysInterrupted != 1 || st.SlowConsumers != 0 {
		t.Fatalf("stats %+v, want 1 interrupted replay and no slow consumer", st)
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

// ReplayLimit bounds a whole subscription request, not each object in it:
// the SDK asks for up to 100 objects at once, and the session's other
// requests wait behind the replays.
func TestReplayLimitPerRequest(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.ReplayLimit = 10 }))
	b := e.session("bob")
	var subs []map[string]any
	var sids []string
	for range 3 {
		doc := e.aclDoc(false)
		for i := range 8 {
			e.write(doc.SID, i)
		}
		subs = append(subs, docSub(doc.SID, doc.LastEventID))
		sids = append(sids, doc.SID)
	}
	wantStatus(t, "establish", b.subscribe("establish", 7, subs...), 200, 0)
	replayed, status := replaysOf(b, 3)
	got := []string{}
	for _, sid := range sids {
		got = append(got, strconv.Itoa(replayed[sid])+" "+status[sid])
	}
	if want := "8 completed, 2 interrupted, 0 interrupted"; strings.Join(got, ", ") != want {
		t.Fatalf("replays %s, want %s", strings.Join(got, ", "), want)
	}
}

// replaysOf reads b's frames until n documents' subscriptions are
// established, and returns the events replayed per document and each one's
// replay_status.
func replaysOf(b *tclient, n int) (replayed map[string]int, status map[string]string) {
	replayed, status = map[string]int{}, map[string]string{}
	for len(status) < n {
		nt := b.next(10 * time.Second)
		if nt.EventType == "subscription_established" {
			var evs []map[string]any
			json.Unmarshal(nt.Events, &evs)
			for _, ev := range evs {
				status[ev["object_sid"].(string)] = ev["replay_status"].(string)
			}
			continue
		}
		replayed[nt.event()["document_sid"].(string)]++
	}
	return replayed, status
}

// An empty queue always has room, whatever its bounds.
func TestWaitRoomTinyQueue(t *testing.T) {
	q := newSendQueue(1, 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !q.waitRoom(ctx) {
		t.Fatal("waitRoom on an empty queue of 1 frame blocked")
	}
	q.push([]byte("x"))
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if q.waitRoom(short) {
		t.Fatal("waitRoom on a full queue returned room")
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		q.drain(nil)
	}()
	if !q.waitRoom(ctx) {
		t.Fatal("waitRoom did not wake on drain")
	}
}

// A budget of one event does not make a replay that meets a logged event
// clients are not sent take the store's silence for the end of the log and
// go live past the updates that follow it. (The engine logs none such in
// an object's log today; the store may hold one, and the replay must pass
// over it.)
func TestReplayPassesOverEventsNotSent(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.ReplayLimit = 1 }))
	doc := e.aclDoc(false)
	e.write(doc.SID, 1)
	ctx := context.Background()
	svc := e.service()
	if err := e.st.Update(ctx, func(tx chorus.Tx) error {
		obj, err := tx.Object(ctx, chorus.KindDocument, svc.SID, doc.SID)
		if err != nil {
			return err
		}
		obj.LastEventID++
		if err := tx.AppendEvent(ctx, &chorus.Event{Type: chorus.EventPermissionChanged, ID: obj.LastEventID, AccountSID: svc.AccountSID,
			ServiceSID: svc.SID, ObjectSID: doc.SID, Kind: chorus.KindDocument, DateCreated: time.Now()}); err != nil {
			return err
		}
		return tx.UpdateObject(ctx, obj)
	}); err != nil {
		t.Fatal(err)
	}
	marker := e.writeID(doc.SID, 2)
	from := marker - 2 // before the event not sent
	b := e.session("bob")
	wantStatus(t, "establish", b.subscribe("establish", 3, docSub(doc.SID, from)), 200, 0)
	if nt := b.next(5 * time.Second); nt.EventType != "document_updated" || nt.id() != marker {
		t.Fatalf("first replayed %s %d %s, want document_updated %d", nt.EventType, nt.id(), nt.Events, marker)
	}
	nt := b.nextOf("subscription_established", 5*time.Second)
	var evs []map[string]any
	json.Unmarshal(nt.Events, &evs)
	if num(evs[0]["last_event_id"]) != marker {
		t.Fatalf("subscription_established = %s, want at %d", nt.Events, marker)
	}
}

// One object far behind shares a request's replay budget with the others:
// an object a few events behind, after it in the same request, is caught
// up at once. It used to get nothing, "interrupted", round after round,
// its live events held until the first had caught up (26 s behind a list
// of 25,000 items with the SDK).
func TestReplayBudgetShared(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.ReplayLimit, c.ReplayBatch = 10, 2 }))
	b := e.session("bob")
	far, near := e.aclDoc(false), e.aclDoc(false)
	for i := range 30 {
		e.write(far.SID, i%10)
	}
	for i := range 3 {
		e.write(near.SID, i)
	}
	wantStatus(t, "establish", b.subscribe("establish", 7, docSub(far.SID, far.LastEventID), docSub(near.SID, near.LastEventID)), 200, 0)
	replayed, status := replaysOf(b, 2)
	got := fmt.Sprintf("%d %s, %d %s", replayed[far.SID], status[far.SID], replayed[near.SID], status[near.SID])
	if want := "5 interrupted, 3 completed"; got != want {
		t.Fatalf("replays %s, want %s", got, want)
	}
}

// Replays run in the gateway's ReplaySlots at most: clients far behind
// that reconnect together each held a batch of events and a full send
// queue (480 MB with 20 of them). One that waits for a slot past its
// ReplayTime is interrupted where it was, and its next subscription
// replays everything, in order; one with nothing to replay needs no slot.
func TestReplayWaitsForASlot(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.ReplaySlots, c.ReplayTime = 1, 300*time.Millisecond }))
	a, b := e.session("alice"), e.session("bob")
	doc := wantStatus(t, "create", a.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	sid, url := doc["sid"].(string), doc["url"].(string)
	start := num(doc["last_event_id"])
	var last int64
	for i := range 5 {
		up := wantStatus(t, "update", a.do("POST", url, nil, map[string]any{"data": map[string]any{"i": i}}), 200, 0)
		last = num(up["last_event_id"])
	}

	e.gw.replaySlots <- struct{}{} // another replay holds the only slot
	wantStatus(t, "establish", b.subscribe("establish", 7, docSub(sid, last)), 200, 0)
	if got, status, at := replayedUntilEstablished(t, b, last); got != last || status != "completed" || at != last {
		t.Fatalf("with nothing to replay: up to %d, then %s at %d; want completed at %d without a slot", got, status, at, last)
	}
	c := e.session("carol")
	began := time.Now()
	wantStatus(t, "establish", c.subscribe("establish", 8, docSub(sid, start)), 200, 0)
	if got, status, at := replayedUntilEstablished(t, c, start); got != start || status != "interrupted" || at != start {
		t.Fatalf("waiting for a slot: replayed up to %d, then %s at %d; want interrupted at %d with nothing sent", got, status, at, start)
	}
	if waited := time.Since(began); waited < 250*time.Millisecond {
		t.Errorf("interrupted after %v, before its ReplayTime", waited)
	}
	<-e.gw.replaySlots // the other replay ended
	wantStatus(t, "establish", c.subscribe("establish", 9, docSub(sid, start)), 200, 0)
	if got, status, at := replayedUntilEstablished(t, c, start); got != last || status != "completed" || at != last {
		t.Fatalf("with the slot free: replayed up to %d, then %s at %d; want every event up to %d, completed", got, status, at, last)
	}
	if n := len(e.gw.replaySlots); n != 0 {
		t.Errorf("%d replay slots still taken after the replays ended", n)
	}
}
