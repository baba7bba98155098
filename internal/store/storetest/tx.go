package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

var errBoom = errors.New("storetest: boom")

func testRollback(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	doc := f.newObject(chorus.KindDocument, at(0))
	insert(t, s, doc)
	fresh := f.newObject(chorus.KindMap, at(0))
	err := s.Update(context.Background(), func(tx chorus.Tx) error {
		ctx := context.Background()
		if err := tx.InsertObject(ctx, fresh); err != nil {
			return err
		}
		if err := tx.PutItem(ctx, newItem(fresh, 0, "k", at(0))); err != nil {
			return err
		}
		changed := *doc
		changed.Revision, changed.LastEventID = 1, 1
		if err := tx.UpdateObject(ctx, &changed); err != nil {
			return err
		}
		if err := tx.AppendEvent(ctx, newEvent(doc, 1, at(0))); err != nil {
			return err
		}
		if err := tx.DeleteService(ctx, f.svc.SID); err != nil {
			return err
		}
		// Writes are visible inside the transaction.
		if _, err := tx.Service(ctx, f.svc.SID); !errors.Is(err, chorus.ErrNotFound) {
			return fmt.Errorf("Service(deleted in this tx) = %v, want ErrNotFound", err)
		}
		return fmt.Errorf("failing on purpose: %w", errBoom)
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Update(failing fn) = %v, want errBoom", err)
	}
	if _, err := getObject(t, s, chorus.KindMap, f.svc.SID, fresh.SID); !errors.Is(err, chorus.ErrNotFound) {
		t.Errorf("Object(inserted by failed Update) = %v, want ErrNotFound", err)
	}
	got, err := getObject(t, s, chorus.KindDocument, f.svc.SID, doc.SID)
	if err != nil {
		t.Fatalf("Object(updated by failed Update): %v", err)
	}
	checkEqual(t, "Object(updated by failed Update)", got, doc)
	if events := getEvents(t, s, doc.SID, 0, 10); len(events) != 0 {
		t.Errorf("Events(appended by failed Update) = %d, want 0", len(events))
	}
	if _, err := get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Item, error) {
		return tx.Item(ctx, fresh.SID, chorus.ItemRef{Key: "k"})
	}); !errors.Is(err, chorus.ErrNotFound) {
		t.Errorf("Item(put by failed Update) = %v, want ErrNotFound", err)
	}
}

// testConcurrentRollback runs failing and succeeding Updates at the same
// time, so that group-committing backends put them in shared batches.
func testConcurrentRollback(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	const n = 64
	objs := make([]*chorus.Object, n)
	for i := range objs {
		objs[i] = f.newObject(chorus.KindDocument, at(0))
	}
	shared := f.newObject(chorus.KindMap, at(0))
	insert(t, s, shared)
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.Update(context.Background(), func(tx chorus.Tx) error {
				ctx := context.Background()
				if err := tx.InsertObject(ctx, objs[i]); err != nil {
					return err
				}
				if err := tx.PutItem(ctx, newItem(shared, 0, fmt.Sprint(i), at(0))); err != nil {
					return err
				}
				if i%2 == 1 {
					return errBoom
				}
				return nil
			})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		_, gerr := getObject(t, s, chorus.KindDocument, f.svc.SID, objs[i].SID)
		_, ierr := get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Item, error) {
			return tx.Item(ctx, shared.SID, chorus.ItemRef{Key: fmt.Sprint(i)})
		})
		if i%2 == 1 {
			if !errors.Is(err, errBoom) {
				t.Errorf("Update %d (failing) = %v, want errBoom", i, err)
			}
			if !errors.Is(gerr, chorus.ErrNotFound) || !errors.Is(ierr, chorus.ErrNotFound) {
				t.Errorf("writes of failed Update %d: object %v, item %v; want both ErrNotFound", i, gerr, ierr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Update %d (succeeding) = %v, want nil", i, err)
		}
		if gerr != nil || ierr != nil {
			t.Errorf("writes of Update %d: object %v, item %v; want both found", i, gerr, ierr)
		}
	}
	items := mustGet(t, s, "Items", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Item, error) {
		return tx.Items(ctx, shared.SID, chorus.ItemQuery{Kind: chorus.KindMap, Limit: 1000})
	})
	if len(items) != n/2 {
		t.Errorf("Items(shared) = %d, want %d", len(items), n/2)
	}
}

// testReadModifyWrite bumps one object's LastEventID from many goroutines,
// each Update reading it, incrementing it and logging the event: lost
// updates would show as a short count or a duplicate event id.
func testReadModifyWrite(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	doc := f.newObject(chorus.KindDocument, at(0))
	insert(t, s, doc)
	const writers, perWriter = 32, 50
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for range perWriter {
				err := s.Update(context.Background(), func(tx chorus.Tx) error {
					ctx := context.Background()
					o, err := tx.Object(ctx, chorus.KindDocument, doc.ServiceSID, doc.SID)
					if err != nil {
						return err
					}
					o.LastEventID++
					o.Revision++
					if err := tx.UpdateObject(ctx, o); err != nil {
						return err
					}
					return tx.AppendEvent(ctx, newEvent(o, o.LastEventID, at(0)))
				})
				if err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Errorf("Update: %v", err)
	}
	got, err := getObject(t, s, chorus.KindDocument, doc.ServiceSID, doc.SID)
	if err != nil {
		t.Fatalf("Object: %v", err)
	}
	const want = writers * perWriter
	if got.LastEventID != want || got.Revision != want {
		t.Errorf("after %d increments: LastEventID = %d, Revision = %d, want %d", want, got.LastEventID, got.Revision, want)
	}
	events := getEvents(t, s, doc.SID, 0, 2*want)
	if len(events) != want {
		t.Fatalf("Events = %d, want %d", len(events), want)
	}
	for i, e := range events {
		if e.ID != int64(i+1) {
			t.Fatalf("Events[%d].ID = %d, want %d", i, e.ID, i+1)
		}
	}
}

func testView(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	// Each committed Update is visible to the next View.
	for i := range 20 {
		doc := f.newObject(chorus.KindDocument, at(time.Duration(i)))
		insert(t, s, doc)
		if _, err := getObject(t, s, chorus.KindDocument, f.svc.SID, doc.SID); err != nil {
			t.Fatalf("Object(just committed): %v", err)
		}
	}
	// fn's error comes back from View.
	if err := s.View(context.Background(), func(chorus.ReadTx) error { return errBoom }); !errors.Is(err, errBoom) {
		t.Errorf("View(failing fn) = %v, want errBoom", err)
	}
	// Views run concurrently with each other and with Updates.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if err := s.View(context.Background(), func(tx chorus.ReadTx) error {
					_, err := tx.Service(context.Background(), f.svc.SID)
					return err
				}); err != nil {
					t.Errorf("View: %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 20 {
			if err := s.Update(context.Background(), func(tx chorus.Tx) error {
				return tx.InsertObject(context.Background(), f.newObject(chorus.KindStream, at(time.Duration(i))))
			}); err != nil {
				t.Errorf("Update: %v", err)
				return
			}
		}
	})
	wg.Wait()
}

// testViewSnapshot checks that a View does not see an Update committed
// while it runs.
func testViewSnapshot(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	doc := f.newObject(chorus.KindDocument, at(0))
	insert(t, s, doc)
	err := s.View(context.Background(), func(tx chorus.ReadTx) error {
		ctx := context.Background()
		before, err := tx.Object(ctx, chorus.KindDocument, f.svc.SID, doc.SID)
		if err != nil {
			return err
		}
		if err := s.Update(ctx, func(tx chorus.Tx) error {
			o := *doc
			o.Revision = 99
			return tx.UpdateObject(ctx, &o)
		}); err != nil {
			return fmt.Errorf("update during view: %w", err)
		}
		after, err := tx.Object(ctx, chorus.KindDocument, f.svc.SID, doc.SID)
		if err != nil {
			return err
		}
		if before.Revision != 0 || after.Revision != 0 {
			return fmt.Errorf("revision in one View = %d then %d, want 0 then 0", before.Revision, after.Revision)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	got, err := getObject(t, s, chorus.KindDocument, f.svc.SID, doc.SID)
	if err != nil {
		t.Fatalf("Object: %v", err)
	}
	if got.Revision != 99 {
		t.Errorf("Object.Revision after the View = %d, want 99", got.Revision)
	}
}

func testCanceledContext(t *testing.T, s chorus.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	err := s.Update(ctx, func(chorus.Tx) error {
		ran = true
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Update(canceled ctx) = %v, want context.Canceled", err)
	}
	if ran {
		t.Errorf("Update(canceled ctx) ran fn")
	}
	err = s.View(ctx, func(chorus.ReadTx) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("View(canceled ctx) = %v, want context.Canceled", err)
	}
	// A ctx done in the middle of a View stops its next statement.
	f := setup(t, s)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	err = s.View(ctx, func(tx chorus.ReadTx) error {
		if _, err := tx.Service(ctx, f.svc.SID); err != nil {
			return fmt.Errorf("before cancel: %w", err)
		}
		cancel()
		_, err := tx.Service(ctx, f.svc.SID)
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("View whose ctx is canceled between two reads = %v, want context.Canceled", err)
	}
	// The store still works.
	setup(t, s)
}
