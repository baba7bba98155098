package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
)

// callLog records the writes an engine makes through a store's Tx.
type callLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *callLog) add(c string) {
	l.mu.Lock()
	l.calls = append(l.calls, c)
	l.mu.Unlock()
}

func (l *callLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.calls
	l.calls = nil
	return c
}

// loggingStore is a real store whose Update transactions log their writes.
type loggingStore struct {
	chorus.Store
	log *callLog
}

func (s loggingStore) Update(ctx context.Context, fn func(chorus.Tx) error) error {
	return s.Store.Update(ctx, func(tx chorus.Tx) error { return fn(loggingTx{tx, s.log}) })
}

type loggingTx struct {
	chorus.Tx
	log *callLog
}

func (t loggingTx) AppendEvent(ctx context.Context, e *chorus.Event) error {
	t.log.add("AppendEvent")
	return t.Tx.AppendEvent(ctx, e)
}

func (t loggingTx) AppendOutbox(ctx context.Context, e *chorus.OutboxEntry) error {
	t.log.add("AppendOutbox")
	return t.Tx.AppendOutbox(ctx, e)
}

func (t loggingTx) UpdateObject(ctx context.Context, o *chorus.Object) error {
	t.log.add("UpdateObject")
	return t.Tx.UpdateObject(ctx, o)
}

func (t loggingTx) PutItem(ctx context.Context, it *chorus.Item) error {
	t.log.add("PutItem")
	return t.Tx.PutItem(ctx, it)
}

func (t loggingTx) DeleteObject(ctx context.Context, sid string) error {
	t.log.add("DeleteObject")
	return t.Tx.DeleteObject(ctx, sid)
}

// everyEvent is an outbox that wants a webhook of every event.
type everyEvent struct{}

func (everyEvent) Wants(*chorus.Event) bool { return true }

func (everyEvent) Append(ctx context.Context, tx chorus.Tx, events []*chorus.Event) error {
	for _, e := range events {
		if err := tx.AppendOutbox(ctx, &chorus.OutboxEntry{ServiceSID: e.ServiceSID, OrderKey: e.ObjectSID, Event: e}); err != nil {
			return err
		}
	}
	return nil
}

// TestOutboxBeforeTheRow: the engine writes an event's webhook right
// after the event and before the statement that persists its object, so
// that a store holding writes back (PostgreSQL) sends the event, the
// webhook and the row in one round trip.
func TestOutboxBeforeTheRow(t *testing.T) {
	ctx := context.Background()
	log := &callLog{}
	eng := engine.New(engine.Config{Store: loggingStore{openSQLite(t), log}, Bus: mem.New(), Outbox: everyEvent{}})
	_, svc := bootstrap(t, eng)
	doc, err := eng.CreateObject(ctx, sys, svc, chorus.KindDocument, engine.CreateObject{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := eng.CreateObject(ctx, sys, svc, chorus.KindMap, engine.CreateObject{})
	if err != nil {
		t.Fatal(err)
	}
	log.take()
	for _, tc := range []struct {
		name  string
		write func() error
		want  []string
	}{
		{"update document", func() error {
			_, err := eng.UpdateObject(ctx, sys, svc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(`{"a":1}`)})
			return err
		}, []string{"AppendEvent", "AppendOutbox", "UpdateObject"}},
		{"write map item", func() error {
			_, _, err := eng.WriteItem(ctx, sys, svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: "k"},
				engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(`{}`)})
			return err
		}, []string{"AppendEvent", "AppendOutbox", "PutItem", "UpdateObject"}},
		{"delete document", func() error {
			_, err := eng.DeleteObject(ctx, sys, svc, chorus.KindDocument, doc.SID)
			return err
		}, []string{"AppendEvent", "AppendOutbox", "DeleteObject"}},
	} {
		if err := tc.write(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := log.take(); !slices.Equal(got, tc.want) {
			t.Errorf("%s wrote %s, want %s", tc.name, strings.Join(got, ", "), strings.Join(tc.want, ", "))
		}
	}
}

// TestDeleteServiceSaysWhatItDrops: deleting a service deletes its pending
// webhooks with it (nothing could send them); the log says how many, so
// that the drop is not silent (clearing the webhook URL counts them too).
func TestDeleteServiceSaysWhatItDrops(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	eng := engine.New(engine.Config{Store: openSQLite(t), Bus: mem.New(), Outbox: everyEvent{}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	creds, _ := bootstrap(t, eng)
	svc, err := eng.CreateService(ctx, creds.AccountSID, engine.ServiceParams{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := eng.CreateObject(ctx, sys, svc, chorus.KindDocument, engine.CreateObject{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := eng.DeleteService(ctx, creds.AccountSID, svc.SID); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "webhooks pending") || !strings.Contains(logs.String(), "webhooks=3") {
		t.Errorf("deleting a service with 3 webhooks pending logged:\n%s", logs.String())
	}
}
