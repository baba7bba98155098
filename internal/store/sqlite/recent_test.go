package sqlite

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"

	"github.com/chorus-sync/chorus"
)

// viewObject reads sid through a read transaction.
func viewObject(t testing.TB, s *Store, sid string) (*chorus.Object, error) {
	t.Helper()
	var o *chorus.Object
	err := s.View(context.Background(), func(tx chorus.ReadTx) (err error) {
		o, err = tx.Object(context.Background(), chorus.KindDocument, "", sid)
		return err
	})
	return o, err
}

// bumpDoc commits one more revision and event of doc.
func bumpDoc(ctx context.Context, s *Store, sid string, fail error) error {
	return s.Update(ctx, bump(ctx, sid, fail))
}

func bump(ctx context.Context, sid string, fail error) func(chorus.Tx) error {
	return func(tx chorus.Tx) error {
		o, err := tx.Object(ctx, chorus.KindDocument, "IS1", sid)
		if err != nil {
			return err
		}
		o.Revision++
		o.LastEventID++
		if err := tx.UpdateObject(ctx, o); err != nil {
			return err
		}
		return fail
	}
}

func TestRecentObject(t *testing.T) {
	ctx := context.Background()
	s := openInternal(t)
	doc := seedDoc(t, s)

	recent := func() (*chorus.Object, bool) {
		t.Helper()
		o, ok, err := s.RecentObject(ctx, chorus.KindDocument, "IS1", doc.SID)
		if err != nil {
			t.Fatalf("RecentObject: %v", err)
		}
		return o, ok
	}
	o, ok := recent()
	if !ok {
		t.Fatal("RecentObject after InsertObject: not in memory")
	}
	v, err := viewObject(t, s, doc.SID)
	if err != nil {
		t.Fatal(err)
	}
	if o.Data != nil {
		t.Errorf("RecentObject Data = %s, want nil", o.Data)
	}
	v.Data = nil
	if !reflect.DeepEqual(o, v) {
		t.Errorf("RecentObject = %+v\nView         = %+v", o, v)
	}
	if _, ok, _ := s.RecentObject(ctx, chorus.KindMap, "IS1", doc.SID); ok {
		t.Error("RecentObject with the wrong kind: found")
	}
	if _, ok, _ := s.RecentObject(ctx, chorus.KindDocument, "IS2", doc.SID); ok {
		t.Error("RecentObject in another service: found")
	}
	if _, ok, _ := s.RecentObject(ctx, chorus.KindDocument, "", doc.SID); !ok {
		t.Error(`RecentObject in service "": not found`)
	}

	if err := bumpDoc(ctx, s, doc.SID, nil); err != nil {
		t.Fatal(err)
	}
	if o, ok := recent(); !ok || o.LastEventID != 1 || o.Revision != 1 {
		t.Errorf("after an update: %+v, %v; want event 1, revision 1", o, ok)
	}

	// A request that wrote and then failed is rolled back: its row must
	// not be served, alone or in a batch with others.
	errBoom := errors.New("boom")
	if err := bumpDoc(ctx, s, doc.SID, errBoom); !errors.Is(err, errBoom) {
		t.Fatalf("failing update = %v", err)
	}
	if o, ok := recent(); ok && o.LastEventID != 1 {
		t.Errorf("after a failed update: event %d, want 1 (the committed row) or not in memory", o.LastEventID)
	}
	errs := batchOf(t, s, bump(ctx, doc.SID, nil), bump(ctx, doc.SID, errBoom), bump(ctx, doc.SID, nil))
	if errs[0] != nil || !errors.Is(errs[1], errBoom) || errs[2] != nil {
		t.Fatalf("batch = %v, want nil, boom, nil", errs)
	}
	v, err = viewObject(t, s, doc.SID)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := recent(); ok && o.LastEventID != v.LastEventID {
		t.Errorf("after a batch with a failed update: event %d, View has %d", o.LastEventID, v.LastEventID)
	}
	// The same with the failed request last: nothing after it in the
	// batch writes the row again.
	errs = batchOf(t, s, bump(ctx, doc.SID, nil), bump(ctx, doc.SID, errBoom))
	if errs[0] != nil || !errors.Is(errs[1], errBoom) {
		t.Fatalf("batch = %v, want nil, boom", errs)
	}
	if v, err = viewObject(t, s, doc.SID); err != nil {
		t.Fatal(err)
	}
	if o, ok := recent(); ok && o.LastEventID != v.LastEventID {
		t.Errorf("after a batch ending in a failed update: event %d, View has %d", o.LastEventID, v.LastEventID)
	}

	// Deleted: gone from memory.
	if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.DeleteObject(ctx, doc.SID) }); err != nil {
		t.Fatal(err)
	}
	if o, ok := recent(); ok {
		t.Errorf("after DeleteObject: %+v in memory", o)
	}

	// A deleted service takes its objects out of memory.
	doc2 := &chorus.Object{Kind: chorus.KindDocument, SID: chorus.NewSID(chorus.PrefixDocument), AccountSID: "AC1", ServiceSID: "IS1",
		CreatedBy: "t", DateCreated: doc.DateCreated, DateUpdated: doc.DateUpdated}
	if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.InsertObject(ctx, doc2) }); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.RecentObject(ctx, chorus.KindDocument, "IS1", doc2.SID); !ok {
		t.Fatal("second document not in memory")
	}
	if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.DeleteService(ctx, "IS1") }); err != nil {
		t.Fatal(err)
	}
	if o, ok, _ := s.RecentObject(ctx, chorus.KindDocument, "IS1", doc2.SID); ok {
		t.Errorf("after DeleteService: %+v in memory", o)
	}
}

// A row in memory is never ahead of the database, and a reader never sees
// an object go back in time.
func TestRecentObjectNeverAheadOfView(t *testing.T) {
	ctx := context.Background()
	s := openInternal(t)
	doc := seedDoc(t, s)
	const writes = 300
	var wg sync.WaitGroup
	wg.Add(2)
	for range 2 {
		go func() {
			defer wg.Done()
			for range writes / 2 {
				if err := bumpDoc(ctx, s, doc.SID, nil); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var last int64
	hits := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		o, ok, err := s.RecentObject(ctx, chorus.KindDocument, "IS1", doc.SID)
		if err != nil {
			t.Fatal(err)
		}
		v, err := viewObject(t, s, doc.SID)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			continue
		}
		hits++
		if o.LastEventID > v.LastEventID {
			t.Fatalf("RecentObject has event %d, a View after it %d", o.LastEventID, v.LastEventID)
		}
		if o.LastEventID < last {
			t.Fatalf("RecentObject went back from event %d to %d", last, o.LastEventID)
		}
		last = o.LastEventID
	}
	if o, ok, _ := s.RecentObject(ctx, chorus.KindDocument, "IS1", doc.SID); !ok || o.LastEventID != writes {
		t.Errorf("after all writes: %+v, %v; want event %d", o, ok, writes)
	}
	if hits == 0 {
		t.Error("no read found the document in memory")
	}
}

// A row whose batch never became durable is not served: after a failed
// WAL sync, RecentObject fails as View does.
func TestRecentObjectNotDurable(t *testing.T) {
	ctx := context.Background()
	s := openInternal(t)
	doc := seedDoc(t, s)
	s.wal.f.Close() // the next fdatasync fails (EBADF)
	if err := bumpDoc(ctx, s, doc.SID, nil); err == nil {
		t.Fatal("update with a failing WAL sync = nil, want an error")
	}
	o, ok, err := s.RecentObject(ctx, chorus.KindDocument, "IS1", doc.SID)
	if err == nil {
		t.Errorf("RecentObject after a failed sync = %+v, %v, nil; want an error", o, ok)
	}
}
