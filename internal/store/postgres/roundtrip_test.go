package postgres

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// roundTrips counts the round trips (statements and batches, each one
// exchange with the server) made under a context marked with it.
type roundTrips struct{ n atomic.Int64 }

type roundTripsKey struct{}

func (c *roundTrips) mark(ctx context.Context) context.Context {
	return context.WithValue(ctx, roundTripsKey{}, c)
}

func (c *roundTrips) count(ctx context.Context) {
	if rt, _ := ctx.Value(roundTripsKey{}).(*roundTrips); rt == c {
		c.n.Add(1)
	}
}

func (c *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.count(ctx)
	return ctx
}
func (*roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.count(ctx)
	return ctx
}
func (*roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (*roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// writeDocument is what the engine does to update a document: lock and
// read it, log the event (eventID, or the document's next when 0), with
// webhooks on (webhookErr non-nil) write the event's outbox entry, with
// *webhookErr as its LastError, and write the row.
func writeDocument(ctx context.Context, tx chorus.Tx, doc *chorus.Object, eventID int64, webhookErr *string) error {
	o, err := tx.Object(ctx, chorus.KindDocument, doc.ServiceSID, doc.SID)
	if err != nil {
		return err
	}
	if eventID == 0 {
		eventID = o.LastEventID + 1
	}
	o.Revision++
	o.LastEventID = eventID
	o.DateUpdated = time.Now()
	ev := &chorus.Event{Type: chorus.EventDocumentUpdated, ID: eventID,
		AccountSID: o.AccountSID, ServiceSID: o.ServiceSID, ObjectSID: o.SID, Kind: o.Kind,
		Revision: o.RevisionString(), Data: o.Data, DateCreated: o.DateUpdated}
	if err := tx.AppendEvent(ctx, ev); err != nil {
		return err
	}
	if webhookErr != nil {
		if err := tx.AppendOutbox(ctx, &chorus.OutboxEntry{ServiceSID: o.ServiceSID, OrderKey: o.SID, Event: ev,
			NextAttempt: o.DateUpdated, DateCreated: o.DateUpdated, LastError: *webhookErr}); err != nil {
			return err
		}
	}
	return tx.UpdateObject(ctx, o)
}

// engineWrite is writeDocument without webhooks.
func engineWrite(ctx context.Context, tx chorus.Tx, doc *chorus.Object, eventID int64) error {
	return writeDocument(ctx, tx, doc, eventID, nil)
}

// webhookWrite is writeDocument with webhooks on.
func webhookWrite(ctx context.Context, tx chorus.Tx, doc *chorus.Object, eventID int64, errText string) error {
	return writeDocument(ctx, tx, doc, eventID, &errText)
}

// outboxOf is the pending webhooks of doc's service.
func outboxOf(t *testing.T, s chorus.Store, doc *chorus.Object) []*chorus.OutboxEntry {
	t.Helper()
	var es []*chorus.OutboxEntry
	if err := s.View(context.Background(), func(tx chorus.ReadTx) (err error) {
		es, err = tx.Outbox(context.Background(), doc.ServiceSID, 100, 100)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return es
}

// A held-back outbox entry behaves as if written at once: fn's later
// reads see it, and its failure fails the Update with its own error and
// keeps nothing of the write, batched or not.
func TestAppendOutboxDeferred(t *testing.T) {
	for _, cfg := range []Config{{}, {NoBatch: true}} {
		t.Run(map[bool]string{false: "batched", true: "nobatch"}[cfg.NoBatch], func(t *testing.T) {
			s := open(t, cfg)
			ctx := context.Background()
			doc := newDoc(t, s)
			if err := s.Update(ctx, func(tx chorus.Tx) error {
				if err := webhookWrite(ctx, tx, doc, 1, ""); err != nil {
					return err
				}
				es, err := tx.Outbox(ctx, doc.ServiceSID, 10, 10)
				if err != nil {
					return err
				}
				if len(es) != 1 || es[0].Event.ID != 1 {
					t.Errorf("Outbox in the writing Update = %d entries, want event 1's", len(es))
				}
				return nil
			}); err != nil {
				t.Fatalf("write 1: %v", err)
			}
			// PostgreSQL refuses a NUL in text: the entry fails in the
			// round trip of the UPDATE, and the whole write is undone.
			err := s.Update(ctx, func(tx chorus.Tx) error { return webhookWrite(ctx, tx, doc, 2, "bad\x00byte") })
			if err == nil || !strings.Contains(err.Error(), "append outbox entry of "+doc.SID+": held back and sent with the next statement") {
				t.Errorf("Update with a refused outbox entry = %v, want the append's error, saying it rode with the next statement", err)
			}
			checkBumped(t, s, doc, 1)
			if es := outboxOf(t, s, doc); len(es) != 1 {
				t.Errorf("outbox after the failed write = %d entries, want 1", len(es))
			}
			if cfg.NoBatch {
				return
			}
			// Batched: the request whose entry fails rolls back alone.
			other := newDoc(t, s)
			failsAlone(t, s, "append outbox entry of "+doc.SID,
				func(tx chorus.Tx) error { return webhookWrite(ctx, tx, doc, 2, "bad\x00byte") },
				func(tx chorus.Tx) error { return webhookWrite(ctx, tx, other, 1, "") })
			checkBumped(t, s, doc, 1)
			checkBumped(t, s, other, 1)
			if es := outboxOf(t, s, other); len(es) != 1 {
				t.Errorf("outbox of the other write = %d entries, want 1", len(es))
			}
		})
	}
}

// An Update's event, and with webhooks on its outbox entry, ride in the
// round trip of the object's UPDATE: an engine write is three round trips
// (BEGIN with the locking read, the held writes with the UPDATE, COMMIT),
// not four (five with a webhook).
func TestEngineWriteRoundTrips(t *testing.T) {
	for _, webhook := range []bool{false, true} {
		t.Run(map[bool]string{false: "event", true: "event+webhook"}[webhook], func(t *testing.T) {
			rt := &roundTrips{}
			s := open(t, Config{NoBatch: true, tracer: rt})
			doc := newDoc(t, s)
			for id := int64(1); id <= 3; id++ { // the first ones prepare the statements
				rt.n.Store(0)
				ctx := rt.mark(context.Background())
				if err := s.Update(ctx, func(tx chorus.Tx) error {
					if webhook {
						return webhookWrite(ctx, tx, doc, id, "")
					}
					return engineWrite(ctx, tx, doc, id)
				}); err != nil {
					t.Fatalf("write %d: %v", id, err)
				}
			}
			if got := rt.n.Load(); got != 3 {
				t.Errorf("an engine write took %d round trips, want 3", got)
			}
			checkBumped(t, s, doc, 3)
			if !webhook {
				return
			}
			es := outboxOf(t, s, doc)
			if len(es) != 3 || es[0].Event.ID != 1 || es[2].Event.ID != 3 || !(es[0].Seq < es[1].Seq && es[1].Seq < es[2].Seq) {
				t.Errorf("outbox = %d entries, want events 1, 2, 3 in Seq order", len(es))
			}
		})
	}
}

// A held-back event behaves as if it had been written at once: fn's later
// reads see it, its failure fails the Update and keeps nothing of it, and
// an fn that fails after it leaves no event. Batched, a failing request
// rolls back alone.
func TestAppendEventDeferred(t *testing.T) {
	for _, cfg := range []Config{{}, {NoBatch: true}} {
		t.Run(map[bool]string{false: "batched", true: "nobatch"}[cfg.NoBatch], func(t *testing.T) {
			s := open(t, cfg)
			ctx := context.Background()
			doc := newDoc(t, s)
			if err := s.Update(ctx, func(tx chorus.Tx) error {
				if err := engineWrite(ctx, tx, doc, 1); err != nil {
					return err
				}
				es, err := tx.Events(ctx, doc.SID, 0, 0)
				if err != nil {
					return err
				}
				if len(es) != 1 || es[0].ID != 1 {
					t.Errorf("Events in the writing Update = %d events, want event 1", len(es))
				}
				return nil
			}); err != nil {
				t.Fatalf("write 1: %v", err)
			}

			// Event 1 again: the duplicate fails in UpdateObject's round
			// trip, and neither the row nor the log changes.
			err := s.Update(ctx, func(tx chorus.Tx) error { return engineWrite(ctx, tx, doc, 1) })
			if err == nil || !strings.Contains(err.Error(), "append event 1 to "+doc.SID) {
				t.Errorf("Update with a duplicate event = %v, want the append's error", err)
			}
			checkBumped(t, s, doc, 1)

			// fn fails after the append: nothing is written.
			errFn := errors.New("fn gives up")
			err = s.Update(ctx, func(tx chorus.Tx) error {
				if err := engineWrite(ctx, tx, doc, 2); err != nil {
					return err
				}
				return tx.AppendEvent(ctx, &chorus.Event{Type: chorus.EventDocumentUpdated, ID: 3,
					AccountSID: doc.AccountSID, ServiceSID: doc.ServiceSID, ObjectSID: doc.SID, Kind: doc.Kind,
					DateCreated: time.Now()})
			})
			if err != nil {
				t.Fatalf("write 2 and 3: %v", err)
			}
			err = s.Update(ctx, func(tx chorus.Tx) error {
				if err := tx.AppendEvent(ctx, &chorus.Event{Type: chorus.EventDocumentUpdated, ID: 4,
					AccountSID: doc.AccountSID, ServiceSID: doc.ServiceSID, ObjectSID: doc.SID, Kind: doc.Kind,
					DateCreated: time.Now()}); err != nil {
					return err
				}
				return errFn
			})
			if !errors.Is(err, errFn) {
				t.Fatalf("Update = %v, want %v", err, errFn)
			}
			var ids []int64
			if err := s.View(ctx, func(tx chorus.ReadTx) error {
				es, err := tx.Events(ctx, doc.SID, 0, 0)
				for _, e := range es {
					ids = append(ids, e.ID)
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if len(ids) != 3 || ids[0] != 1 || ids[1] != 2 || ids[2] != 3 {
				t.Errorf("events = %v, want [1 2 3]", ids)
			}
			if cfg.NoBatch {
				return
			}

			// Batched: the request whose event fails rolls back alone.
			other := newDoc(t, s)
			failsAlone(t, s, "append event 3 to "+doc.SID,
				func(tx chorus.Tx) error { return engineWrite(ctx, tx, doc, 3) },
				func(tx chorus.Tx) error { return engineWrite(ctx, tx, other, 1) })
			checkBumped(t, s, other, 1)
		})
	}
}

// A request whose round trip fails as a whole, before its SAVEPOINT ran
// (here a statement that no longer prepares: the schema changed under a
// node), must not roll back the request before it in the same batch:
// that one is answered as committed, so it must be. The batch is rolled
// back and the earlier request runs again.
func TestBatchFailureBeforeSavepoint(t *testing.T) {
	dsn := newSchema(t)
	s := openDSN(t, dsn, Config{Writers: 1})
	ctx := context.Background()
	doc := newDoc(t, s)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	// The events INSERT has not run on any connection yet, so it is
	// prepared in the failing request's round trip.
	if _, err := c.Exec(ctx, `ALTER TABLE events RENAME COLUMN item_data TO item_data_renamed`); err != nil {
		t.Fatal(err)
	}

	// Hold the writer so that the next two requests share a batch, in order.
	started, release := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- s.Update(ctx, func(chorus.Tx) error { close(started); <-release; return nil })
	}()
	<-started
	waitQueued := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); s.queue.Len() < n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d requests queued, want %d", s.queue.Len(), n)
			}
		}
	}
	acc := &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), DateCreated: time.Now()}
	first, second := make(chan error, 1), make(chan error, 1)
	go func() { first <- s.Update(ctx, func(tx chorus.Tx) error { return tx.PutAccount(ctx, acc) }) }()
	waitQueued(1)
	go func() {
		second <- s.Update(ctx, func(tx chorus.Tx) error {
			return tx.AppendEvent(ctx, &chorus.Event{Type: chorus.EventDocumentUpdated, ID: 1,
				AccountSID: doc.AccountSID, ServiceSID: doc.ServiceSID, ObjectSID: doc.SID, Kind: doc.Kind,
				DateCreated: time.Now()})
		})
	}()
	waitQueued(2)
	close(release)
	if err := <-held; err != nil {
		t.Fatalf("holding request: %v", err)
	}
	if err := <-second; err == nil {
		t.Errorf("the request that cannot prepare = nil, want an error")
	}
	if err := <-first; err != nil {
		t.Fatalf("the request before it: %v", err)
	}
	if err := s.View(ctx, func(tx chorus.ReadTx) error {
		_, err := tx.Account(ctx, acc.SID)
		return err
	}); err != nil {
		t.Errorf("the request before it was answered as committed, but its account: %v", err)
	}
}

// An fn that ignores a failed statement and then appends an event fails
// with the failed statement's error, not with the event's.
func TestSwallowedErrorBeforeAppend(t *testing.T) {
	s := open(t, Config{})
	ctx := context.Background()
	doc := newDoc(t, s)
	err := s.Update(ctx, func(tx chorus.Tx) error {
		// An item of a missing object: a foreign key violation.
		_ = tx.PutItem(ctx, &chorus.Item{Kind: chorus.KindMap, ObjectSID: chorus.NewSID(chorus.PrefixMap), Key: "k"})
		return tx.AppendEvent(ctx, &chorus.Event{Type: chorus.EventDocumentUpdated, ID: 1,
			AccountSID: doc.AccountSID, ServiceSID: doc.ServiceSID, ObjectSID: doc.SID, Kind: doc.Kind,
			DateCreated: time.Now()})
	})
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23503" {
		t.Errorf("Update = %v, want the foreign key violation (23503)", err)
	}
	checkBumped(t, s, doc, 0)
}

// failsAlone runs failing and ok as concurrent Updates (so that they may
// share a batch): failing must fail with an error that says want, and
// ok must succeed.
func failsAlone(t *testing.T, s chorus.Store, want string, failing, ok func(chorus.Tx) error) {
	t.Helper()
	ctx := context.Background()
	failed, succeeded := make(chan error, 1), make(chan error, 1)
	go func() { failed <- s.Update(ctx, failing) }()
	go func() { succeeded <- s.Update(ctx, ok) }()
	if err := <-failed; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("failing write: %v, want %q", err, want)
	}
	if err := <-succeeded; err != nil {
		t.Errorf("the other write: %v, want it committed", err)
	}
}
