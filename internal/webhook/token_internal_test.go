package webhook

import (
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

// The idempotency token names the event, not the outbox row: a store the
// data was migrated or restored into numbers its outbox from 1 again, and
// receivers that deduplicate on the token would drop new events.
func TestIdempotencyTokenNamesTheEvent(t *testing.T) {
	at := time.Date(2026, 12, 5, 17, 0, 0, 123456789, time.UTC)
	entry := func(seq, id int64, when time.Time) *chorus.OutboxEntry {
		return &chorus.OutboxEntry{Seq: seq, ServiceSID: "IS1", OrderKey: "ET1",
			Event: &chorus.Event{Type: chorus.EventDocumentUpdated, ID: id, ObjectSID: "ET1", DateCreated: when}}
	}
	a := idempotencyToken(entry(1, 7, at))
	if !strings.HasPrefix(a, "IS1-") || a != idempotencyToken(entry(1, 7, at)) {
		t.Fatalf("token %q: want IS1-… and the same for every attempt", a)
	}
	if b := idempotencyToken(entry(42, 7, at)); b != a {
		t.Errorf("the same event in another store's outbox row: %q, want %q", b, a)
	}
	for name, other := range map[string]*chorus.OutboxEntry{
		"the same outbox row, another event id":      entry(1, 8, at),
		"the same id after a restore, another event": entry(1, 7, at.Add(time.Millisecond)),
	} {
		if b := idempotencyToken(other); b == a {
			t.Errorf("%s: token %q, want another", name, b)
		}
	}
}
