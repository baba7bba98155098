package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

func testOutbox(t *testing.T, s chorus.Store) {
	ctx := context.Background()
	f := setup(t, s)
	other := "IS" + "ffffffffffffffffffffffffffffffff"
	entry := func(svc, key string, data string, created time.Duration) *chorus.OutboxEntry {
		return &chorus.OutboxEntry{
			ServiceSID: svc, OrderKey: key, DateCreated: at(created), NextAttempt: at(created),
			Event: &chorus.Event{Type: chorus.EventDocumentUpdated, ServiceSID: svc, ObjectSID: key,
				Kind: chorus.KindDocument, Data: json.RawMessage(data), DateCreated: at(created)},
		}
	}
	a1, a2, b1 := entry(f.svc.SID, "ET1", ` {"n" : 1} `, 0), entry(f.svc.SID, "ET1", `{"n":2}`, time.Second), entry(other, "ET2", `{}`, 2*time.Second)
	update(t, s, func(tx chorus.Tx) error {
		for _, e := range []*chorus.OutboxEntry{a1, a2, b1} {
			if err := tx.AppendOutbox(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	// AppendOutbox need not report Seq: read the entries back.
	got := mustGet(t, s, "Outbox", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.OutboxEntry, error) {
		return tx.Outbox(ctx, f.svc.SID, 10, 10)
	})
	others := mustGet(t, s, "Outbox", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.OutboxEntry, error) {
		return tx.Outbox(ctx, other, 10, 10)
	})
	if len(got) != 2 || len(others) != 1 || string(got[1].Event.Data) != `{"n":2}` || others[0].OrderKey != "ET2" {
		t.Fatalf("Outbox = %d entries and %d of the other service, want a1, a2 and b1", len(got), len(others))
	}
	a1.Seq, a2.Seq, b1.Seq = got[0].Seq, got[1].Seq, others[0].Seq
	if !(a1.Seq < a2.Seq && a2.Seq < b1.Seq) {
		t.Fatalf("seqs %d, %d, %d: want increasing in the order of the appends", a1.Seq, a2.Seq, b1.Seq)
	}
	if g := got[0]; string(g.Event.Data) != ` {"n" : 1} ` || g.OrderKey != "ET1" || !g.DateCreated.Equal(at(0)) || g.Event.Type != chorus.EventDocumentUpdated {
		t.Errorf("Outbox[0] = %+v (event %+v): does not round-trip", g, g.Event)
	}
	a1.Attempts, a1.NextAttempt, a1.LastStatus, a1.LastError = 2, at(time.Minute), 503, "busy"
	update(t, s, func(tx chorus.Tx) error { return tx.UpdateOutbox(ctx, a1) })
	got = mustGet(t, s, "Outbox", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.OutboxEntry, error) {
		return tx.Outbox(ctx, f.svc.SID, 10, 1)
	})
	if g := got[0]; len(got) != 1 || g.Attempts != 2 || !g.NextAttempt.Equal(at(time.Minute)) || g.LastStatus != 503 || g.LastError != "busy" {
		t.Errorf("after UpdateOutbox: %+v", g)
	}
	backlog := mustGet(t, s, "OutboxBacklog", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.OutboxBacklog, error) {
		return tx.OutboxBacklog(ctx)
	})
	pending := map[string]int{}
	for _, b := range backlog {
		pending[b.ServiceSID] = b.Pending
		if b.ServiceSID == f.svc.SID && !b.Oldest.Equal(at(0)) {
			t.Errorf("backlog oldest = %v, want %v", b.Oldest, at(0))
		}
	}
	if pending[f.svc.SID] != 2 || pending[other] != 1 {
		t.Errorf("backlog = %v", pending)
	}
	var n int
	update(t, s, func(tx chorus.Tx) (err error) {
		n, err = tx.TrimOutbox(ctx, f.svc.SID, 1, at(time.Hour), "over the cap")
		return err
	})
	if n != 1 {
		t.Errorf("TrimOutbox(keep 1) = %d, want 1", n)
	}
	got = mustGet(t, s, "Outbox", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.OutboxEntry, error) {
		return tx.Outbox(ctx, f.svc.SID, 10, 10)
	})
	if len(got) != 1 || got[0].Seq != a2.Seq {
		t.Errorf("after trim: %d entries, want the newest", len(got))
	}
	trimmed := mustGet(t, s, "AbandonedWebhooks", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.AbandonedWebhook, error) {
		return tx.AbandonedWebhooks(ctx, f.svc.SID, 0, 10)
	})
	if len(trimmed) != 1 || trimmed[0].Seq != a1.Seq || trimmed[0].LastError != "over the cap" || trimmed[0].LastStatus != 503 ||
		trimmed[0].Attempts != 2 || !trimmed[0].DateAbandoned.Equal(at(time.Hour)) || trimmed[0].Event.Data != nil {
		t.Errorf("the trimmed entry among the abandoned: %+v, want it listed without its data", trimmed)
	}
	// Its data was kept: a replay brings it back, and it is given up on
	// again for what follows.
	update(t, s, func(tx chorus.Tx) (err error) {
		_, err = tx.ReplayAbandoned(ctx, f.svc.SID, at(time.Hour), 0)
		return err
	})
	got = mustGet(t, s, "Outbox", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.OutboxEntry, error) {
		return tx.Outbox(ctx, f.svc.SID, 10, 10)
	})
	if len(got) != 2 || got[0].Seq != a2.Seq || string(got[1].Event.Data) != ` {"n" : 1} ` {
		t.Fatalf("after replaying the trimmed entry: %d entries, want it back after the newest with its data", len(got))
	}
	update(t, s, func(tx chorus.Tx) error { return tx.AbandonOutbox(ctx, got[1], at(time.Hour)) })
	update(t, s, func(tx chorus.Tx) error {
		if err := tx.DeleteOutbox(ctx, a2.Seq); err != nil {
			return err
		}
		return tx.DeleteOutbox(ctx, a2.Seq) // missing: no error
	})
	update(t, s, func(tx chorus.Tx) error {
		for _, e := range []*chorus.OutboxEntry{entry(f.svc.SID, "ET3", `{}`, 0), entry(f.svc.SID, "ET3", `{}`, 0), entry(f.svc.SID, "ET4", `{}`, 0)} {
			if err := tx.AppendOutbox(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	got = mustGet(t, s, "Outbox", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.OutboxEntry, error) {
		return tx.Outbox(ctx, f.svc.SID, 1, 10)
	})
	if len(got) != 2 || got[0].OrderKey != "ET3" || got[1].OrderKey != "ET4" {
		t.Errorf("Outbox(perKey 1) = %d entries, want the first of ET3 and of ET4", len(got))
	}
	// Objects come in the order their first entry is due: an older object
	// waiting for a retry does not hide a newer one that is due.
	waiting := entry(f.svc.SID, "ET5", `{}`, time.Second)
	waiting.NextAttempt = at(time.Hour)
	update(t, s, func(tx chorus.Tx) error {
		for _, e := range []*chorus.OutboxEntry{waiting, entry(f.svc.SID, "ET5", `{}`, time.Second), entry(f.svc.SID, "ET6", `{}`, 2*time.Second)} {
			if err := tx.AppendOutbox(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	got = mustGet(t, s, "Outbox", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.OutboxEntry, error) {
		return tx.Outbox(ctx, f.svc.SID, 10, 10)
	})
	var keys []string
	for _, e := range got {
		keys = append(keys, e.OrderKey)
	}
	if want := "ET3 ET3 ET4 ET6 ET5 ET5"; strings.Join(keys, " ") != want {
		t.Errorf("Outbox order %v, want %s (ET5's first entry is due in an hour)", keys, want)
	}
	update(t, s, func(tx chorus.Tx) error { return tx.DeleteService(ctx, f.svc.SID) })
	got = mustGet(t, s, "Outbox", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.OutboxEntry, error) {
		return tx.Outbox(ctx, f.svc.SID, 10, 10)
	})
	if len(got) != 0 {
		t.Errorf("DeleteService left %d outbox entries", len(got))
	}
	// The trimmed entry was kept as abandoned: it goes with the service.
	if left := mustGet(t, s, "AbandonedWebhooks", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.AbandonedWebhook, error) {
		return tx.AbandonedWebhooks(ctx, f.svc.SID, 0, 10)
	}); len(left) != 0 {
		t.Errorf("DeleteService left %d abandoned webhooks", len(left))
	}
}

func testPresence(t *testing.T, s chorus.Store) {
	ctx := context.Background()
	f := setup(t, s)
	ep := func(node, id string) chorus.Endpoint {
		return chorus.Endpoint{ServiceSID: f.svc.SID, AccountSID: f.acc.SID, Identity: "alice", EndpointID: id, Node: node}
	}
	connect := func(e chorus.Endpoint, now time.Time) (first bool) {
		t.Helper()
		update(t, s, func(tx chorus.Tx) (err error) {
			first, err = tx.ConnectEndpoint(ctx, e, now)
			return err
		})
		return first
	}
	disconnect := func(e chorus.Endpoint, now time.Time) {
		t.Helper()
		update(t, s, func(tx chorus.Tx) error { return tx.DisconnectEndpoint(ctx, e, now) })
	}
	offline := func(before time.Time) []*chorus.OfflineIdentity {
		t.Helper()
		return mustGet(t, s, "OfflineIdentities", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.OfflineIdentity, error) {
			return tx.OfflineIdentities(ctx, before, 10)
		})
	}
	gone := func(before time.Time) (ok bool) {
		t.Helper()
		update(t, s, func(tx chorus.Tx) (err error) {
			ok, err = tx.GoneOffline(ctx, f.svc.SID, "alice", before)
			return err
		})
		return ok
	}
	if !connect(ep("n1", "ep1"), at(0)) {
		t.Fatal("first endpoint: first = false")
	}
	if connect(ep("n2", "ep2"), at(time.Second)) {
		t.Fatal("second endpoint on another node: first = true")
	}
	disconnect(ep("n1", "ep1"), at(2*time.Second))
	if o := offline(at(time.Hour)); len(o) != 0 {
		t.Fatalf("offline with an endpoint left: %+v", o[0])
	}
	disconnect(ep("n2", "ep2"), at(3*time.Second))
	o := offline(at(time.Hour))
	if len(o) != 1 || o[0].Identity != "alice" || o[0].EndpointID != "ep2" || !o[0].Since.Equal(at(3*time.Second)) || o[0].AccountSID != f.acc.SID {
		t.Fatalf("offline = %+v, want alice since 3s via ep2", o)
	}
	if gone(at(2 * time.Second)) {
		t.Error("GoneOffline before the identity went offline = true")
	}
	// A reconnection within the window: online again, not first.
	if connect(ep("n1", "ep3"), at(4*time.Second)) {
		t.Error("reconnection within the window: first = true")
	}
	if o := offline(at(time.Hour)); len(o) != 0 {
		t.Errorf("offline after reconnection: %+v", o[0])
	}
	disconnect(ep("n1", "ep3"), at(5*time.Second))
	if !gone(at(5 * time.Second)) {
		t.Fatal("GoneOffline = false")
	}
	if !connect(ep("n1", "ep4"), at(6*time.Second)) {
		t.Error("connection after GoneOffline: first = false")
	}
	// Node n1 dies: its endpoints go, alice goes offline.
	var dead int // nodes the last heartbeat presumed dead
	beat := func(node string, now, deadBefore time.Time) (known bool) {
		t.Helper()
		update(t, s, func(tx chorus.Tx) (err error) {
			known, dead, err = tx.NodeHeartbeat(ctx, node, now, deadBefore)
			return err
		})
		return known
	}
	if beat("n3", at(10*time.Second), time.Time{}) {
		t.Error("first heartbeat of n3: known = true")
	}
	if !beat("n3", at(20*time.Second), time.Time{}) {
		t.Error("second heartbeat of n3: known = false")
	}
	if !beat("n2", at(time.Minute), at(50*time.Second)) {
		t.Error("heartbeat of n2 (connected endpoints before): known = false")
	}
	// n1 (endpoints) and n3 (none) went silent: both presumed dead, once.
	if dead != 2 {
		t.Errorf("heartbeat that found n1 and n3 silent: dead = %d, want 2", dead)
	}
	if beat("n2", at(61*time.Second), at(51*time.Second)); dead != 0 {
		t.Errorf("next heartbeat: dead = %d, want 0 (n1 and n3 were reported)", dead)
	}
	o = offline(at(time.Hour))
	if len(o) != 1 || !o[0].Since.Equal(at(time.Minute)) {
		t.Fatalf("after n1 died: offline = %+v", o)
	}
	if beat("n1", at(61*time.Second), time.Time{}) {
		t.Error("heartbeat of n1 after it was presumed dead: known = true")
	}
	// A node that leaves is forgotten without being presumed dead.
	beat("n4", at(62*time.Second), time.Time{})
	update(t, s, func(tx chorus.Tx) error { return tx.RemoveNode(ctx, "n4") })
	update(t, s, func(tx chorus.Tx) error { return tx.RemoveNode(ctx, "n4") }) // gone: no error
	if beat("n2", at(2*time.Minute), at(100*time.Second)); dead != 1 {
		t.Errorf("heartbeat after n4 left and n1 went silent again: dead = %d, want 1 (n1)", dead)
	}
	if beat("n4", at(2*time.Minute), time.Time{}) {
		t.Error("heartbeat of n4 after it left: known = true")
	}
	// LiveNodes: those whose last heartbeat is at or after since, by name.
	// n2 and n4 beat at 2 min, n5 at 90 s; n1 and n3 were presumed dead.
	beat("n5", at(90*time.Second), time.Time{})
	live := func(since time.Time) []string {
		t.Helper()
		var nodes []string
		if err := s.View(ctx, func(tx chorus.ReadTx) (err error) {
			nodes, err = tx.LiveNodes(ctx, since)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return nodes
	}
	if got := live(at(90 * time.Second)); !slices.Equal(got, []string{"n2", "n4", "n5"}) {
		t.Errorf("LiveNodes(90 s) = %q, want n2, n4, n5", got)
	}
	if got := live(at(91 * time.Second)); !slices.Equal(got, []string{"n2", "n4"}) {
		t.Errorf("LiveNodes(91 s) = %q, want n2, n4", got)
	}
	if got := live(at(3 * time.Minute)); len(got) != 0 {
		t.Errorf("LiveNodes(3 min) = %q, want none", got)
	}
}

// testNow: the store's clock reads the time of the call, not of the
// transaction's start, in View and in Update. The stores under test run
// on this machine, whose clock they read (PostgreSQL's server is local).
func testNow(t *testing.T, s chorus.Store) {
	ctx := context.Background()
	check := func(what string, now func(context.Context) (time.Time, error)) {
		t.Helper()
		before := time.Now()
		first, err := now(ctx)
		if err != nil {
			t.Fatalf("%s: Now: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
		second, err := now(ctx)
		if err != nil {
			t.Fatalf("%s: Now: %v", what, err)
		}
		after := time.Now()
		// PostgreSQL reads to the microsecond, and its clock may be read
		// a little before ours.
		if first.Before(before.Add(-time.Second)) || second.After(after.Add(time.Second)) {
			t.Errorf("%s: Now read %v and %v between %v and %v", what, first, second, before, after)
		}
		if d := second.Sub(first); d < 19*time.Millisecond {
			t.Errorf("%s: Now advanced %v over 20 ms: it reads the transaction's start", what, d)
		}
		if first.Location() != time.UTC {
			t.Errorf("%s: Now in %v, want UTC", what, first.Location())
		}
	}
	view(t, s, func(tx chorus.ReadTx) error {
		check("View", tx.Now)
		return nil
	})
	update(t, s, func(tx chorus.Tx) error {
		check("Update", tx.Now)
		return nil
	})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	view(t, s, func(tx chorus.ReadTx) error {
		if _, err := tx.Now(cctx); err == nil {
			t.Error("Now with a canceled context: no error")
		}
		return nil
	})
}

// testAbandoned checks the abandoned webhooks: entries given up on move
// out of the outbox with why, are listed newest first, go back to the
// outbox (oldest first, due and created at the replay, unattempted, in
// their old order) and are purged and trimmed.
func testAbandoned(t *testing.T, s chorus.Store) {
	ctx := context.Background()
	f := setup(t, s)
	other := "IS" + "ffffffffffffffffffffffffffffffff"
	var es []*chorus.OutboxEntry
	for i, svc := range []string{f.svc.SID, f.svc.SID, other, f.svc.SID, f.svc.SID} {
		es = append(es, &chorus.OutboxEntry{
			ServiceSID: svc, OrderKey: "ET1", DateCreated: at(time.Duration(i) * time.Second), NextAttempt: at(0),
			Event: &chorus.Event{Type: chorus.EventDocumentUpdated, ServiceSID: svc, ObjectSID: "ET1", ID: int64(i + 1),
				Kind: chorus.KindDocument, Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), DateCreated: at(0)},
		})
	}
	update(t, s, func(tx chorus.Tx) error {
		for _, e := range es {
			if err := tx.AppendOutbox(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	outbox := func(svc string) []*chorus.OutboxEntry {
		return mustGet(t, s, "Outbox", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.OutboxEntry, error) {
			return tx.Outbox(ctx, svc, 10, 10)
		})
	}
	got := append(outbox(f.svc.SID), outbox(other)...)
	slices.SortFunc(got, func(a, b *chorus.OutboxEntry) int { return int(a.Seq - b.Seq) })
	for i := range es {
		es[i].Seq = got[i].Seq
	}
	// 0, 1, 2 (the other service's) and 3 are given up on, at 10 s, 20 s,
	// 30 s and 40 s; 4 stays.
	for i, e := range es[:4] {
		e.Attempts, e.LastStatus, e.LastError = 5, 500+i, fmt.Sprintf("gave up %d", i)
		update(t, s, func(tx chorus.Tx) error { return tx.AbandonOutbox(ctx, e, at(time.Duration(i+1)*10*time.Second)) })
	}
	update(t, s, func(tx chorus.Tx) error { return tx.AbandonOutbox(ctx, es[0], at(time.Hour)) }) // gone: no error
	if left := outbox(f.svc.SID); len(left) != 1 || left[0].Seq != es[4].Seq {
		t.Fatalf("outbox after abandoning 0, 1 and 3: %d entries, want 4 only", len(left))
	}
	list := func(svc string, before int64, limit int) []*chorus.AbandonedWebhook {
		return mustGet(t, s, "AbandonedWebhooks", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.AbandonedWebhook, error) {
			return tx.AbandonedWebhooks(ctx, svc, before, limit)
		})
	}
	all := list(f.svc.SID, 0, 0)
	if len(all) != 3 || all[0].Seq != es[3].Seq || all[1].Seq != es[1].Seq || all[2].Seq != es[0].Seq {
		t.Fatalf("AbandonedWebhooks = %d, want 3, 1, 0 (newest first)", len(all))
	}
	if a := all[1]; a.Attempts != 5 || a.LastStatus != 501 || a.LastError != "gave up 1" || !a.DateAbandoned.Equal(at(20*time.Second)) ||
		!a.DateCreated.Equal(at(time.Second)) || a.Event.ID != 2 || a.Event.Data != nil || a.OrderKey != "ET1" {
		t.Errorf("abandoned 1 = %+v (event %+v): does not keep the entry and why, or lists its data", a, a.Event)
	}
	if p := list(f.svc.SID, es[3].Seq, 1); len(p) != 1 || p[0].Seq != es[1].Seq {
		t.Errorf("AbandonedWebhooks(before 3, limit 1) = %d, want 1", len(p))
	}
	counts := mustGet(t, s, "AbandonedCounts", func(ctx context.Context, tx chorus.ReadTx) (map[string]int, error) {
		return tx.AbandonedCounts(ctx, nil)
	})
	if len(counts) != 2 || counts[f.svc.SID] != 3 || counts[other] != 1 {
		t.Errorf("AbandonedCounts = %v", counts)
	}

	// Replay the 2 oldest: back in the outbox after 4, in their order.
	var n int
	update(t, s, func(tx chorus.Tx) (err error) {
		n, err = tx.ReplayAbandoned(ctx, f.svc.SID, at(time.Hour), 2)
		return err
	})
	if n != 2 {
		t.Errorf("ReplayAbandoned(limit 2) = %d", n)
	}
	back := outbox(f.svc.SID)
	if len(back) != 3 || back[0].Seq != es[4].Seq || back[1].Event.ID != 1 || back[2].Event.ID != 2 || back[1].Seq <= es[4].Seq || back[2].Seq <= back[1].Seq {
		t.Fatalf("outbox after the replay: %d entries, want 4, then 0 and 1 with new seqs", len(back))
	}
	if r := back[1]; r.Attempts != 0 || r.LastStatus != 0 || r.LastError != "" || !r.DateCreated.Equal(at(time.Hour)) ||
		!r.NextAttempt.Equal(at(time.Hour)) || string(r.Event.Data) != `{"i":0}` || !r.Event.DateCreated.Equal(at(0)) {
		t.Errorf("replayed entry = %+v: want unattempted, due and created at the replay, its event as it was", r)
	}
	if rest := list(f.svc.SID, 0, 0); len(rest) != 1 || rest[0].Seq != es[3].Seq {
		t.Errorf("abandoned after replaying 2: %d, want 3 only", len(rest))
	}
	update(t, s, func(tx chorus.Tx) (err error) {
		n, err = tx.ReplayAbandoned(ctx, f.svc.SID, at(time.Hour), 0) // no limit
		return err
	})
	if n != 1 || len(list(f.svc.SID, 0, 0)) != 0 || len(outbox(f.svc.SID)) != 4 {
		t.Errorf("ReplayAbandoned(no limit) = %d", n)
	}

	// Purge by age and service, trim by count.
	for _, e := range outbox(f.svc.SID) {
		update(t, s, func(tx chorus.Tx) error { return tx.AbandonOutbox(ctx, e, at(time.Duration(e.Seq)*time.Minute)) })
	}
	purge := func(svc string, before time.Time) int {
		var n int
		update(t, s, func(tx chorus.Tx) (err error) {
			n, err = tx.PurgeAbandoned(ctx, svc, before)
			return err
		})
		return n
	}
	seqs := func() (out []int64) {
		for _, a := range list(f.svc.SID, 0, 0) {
			out = append(out, a.Seq)
		}
		return out
	}
	kept := seqs()
	if len(kept) != 4 {
		t.Fatalf("abandoned again: %v", kept)
	}
	oldest := kept[3]
	if n := purge(f.svc.SID, at(time.Duration(oldest)*time.Minute+time.Second)); n != 1 || slices.Contains(seqs(), oldest) {
		t.Errorf("PurgeAbandoned(before the second oldest) = %d, kept %v", n, seqs())
	}
	var trimmedN int
	update(t, s, func(tx chorus.Tx) (err error) {
		trimmedN, err = tx.TrimAbandoned(ctx, f.svc.SID, 1)
		return err
	})
	if trimmedN != 2 || !slices.Equal(seqs(), kept[:1]) {
		t.Errorf("TrimAbandoned(keep 1) = %d, kept %v, want %v", trimmedN, seqs(), kept[:1])
	}
	if n := purge("", time.Time{}); n != 2 || len(list(other, 0, 0)) != 0 || len(seqs()) != 0 {
		t.Errorf("PurgeAbandoned(every service, all) = %d, want 2", n)
	}
}

// testAbandonedConcurrent runs what moves webhooks between the outbox and
// the abandoned ones at the same time as other writers: nothing may be
// lost or copied twice. On PostgreSQL two statements per move copied rows
// twice (two replays at once) and deleted rows appended between them (a
// trim while writers appended), found by a reviewer.
func testAbandonedConcurrent(t *testing.T, s chorus.Store) {
	ctx := context.Background()
	f := setup(t, s)
	entry := func(i int) *chorus.OutboxEntry {
		return &chorus.OutboxEntry{ServiceSID: f.svc.SID, OrderKey: fmt.Sprintf("ET%d", i%7), DateCreated: at(0), NextAttempt: at(0),
			Event: &chorus.Event{Type: chorus.EventDocumentUpdated, ServiceSID: f.svc.SID, ObjectSID: fmt.Sprintf("ET%d", i%7),
				Kind: chorus.KindDocument, ID: int64(i + 1), DateCreated: at(0)}}
	}
	counts := func() (pending, kept int) {
		backlog := mustGet(t, s, "OutboxBacklog", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.OutboxBacklog, error) {
			return tx.OutboxBacklog(ctx)
		})
		for _, b := range backlog {
			pending += b.Pending
		}
		n := mustGet(t, s, "AbandonedCounts", func(ctx context.Context, tx chorus.ReadTx) (map[string]int, error) {
			return tx.AbandonedCounts(ctx, nil)
		})
		return pending, n[f.svc.SID]
	}
	// A trim while 4 writers append: every entry is either pending or
	// kept, once.
	var wg sync.WaitGroup
	const writers, each = 4, 60
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.AppendOutbox(ctx, entry(w*each+i)) }); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	trimmed := 0
	for range 20 {
		update(t, s, func(tx chorus.Tx) error {
			n, err := tx.TrimOutbox(ctx, f.svc.SID, 10, at(time.Hour), "over the cap")
			trimmed += n
			return err
		})
	}
	wg.Wait()
	pending, kept := counts()
	if pending+kept != writers*each || kept != trimmed {
		t.Fatalf("after trims among appends: %d pending + %d kept, want %d in all; trims reported %d", pending, kept, writers*each, trimmed)
	}
	// Everything abandoned, then two replays at once: each entry back
	// once, and the two counts add up.
	update(t, s, func(tx chorus.Tx) error {
		_, err := tx.TrimOutbox(ctx, f.svc.SID, 0, at(time.Hour), "over the cap")
		return err
	})
	var replayed [2]int
	for i := range replayed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Update(ctx, func(tx chorus.Tx) (err error) {
				replayed[i], err = tx.ReplayAbandoned(ctx, f.svc.SID, at(2*time.Hour), 0)
				return err
			}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	pending, kept = counts()
	if pending != writers*each || kept != 0 || replayed[0]+replayed[1] != writers*each {
		t.Errorf("after two replays at once: %d pending, %d kept, replays reported %v; want %d, 0", pending, kept, replayed, writers*each)
	}
}
