package sqlite_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/store/storetest"
)

// benchFixture creates an account, a service and n documents.
func benchFixture(b *testing.B, s *sqlite.Store, n int) []*chorus.Object {
	b.Helper()
	ctx := context.Background()
	acc := &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), AuthToken: "t", DateCreated: time.Now()}
	svc := &chorus.Service{SID: chorus.NewSID(chorus.PrefixService), AccountSID: acc.SID, DateCreated: time.Now(), DateUpdated: time.Now()}
	docs := make([]*chorus.Object, n)
	for i := range docs {
		docs[i] = &chorus.Object{
			Kind: chorus.KindDocument, SID: chorus.NewSID(chorus.PrefixDocument),
			AccountSID: acc.SID, ServiceSID: svc.SID, UniqueName: fmt.Sprintf("doc-%d", i),
			Data: json.RawMessage(`{}`), CreatedBy: "bench", DateCreated: time.Now(), DateUpdated: time.Now(),
		}
	}
	err := s.Update(ctx, func(tx chorus.Tx) error {
		if err := tx.PutAccount(ctx, acc); err != nil {
			return err
		}
		if err := tx.PutService(ctx, svc); err != nil {
			return err
		}
		for _, d := range docs {
			if err := tx.InsertObject(ctx, d); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return docs
}

var benchData = json.RawMessage(`{"title":"Quarterly report","status":"in review","owner":"alice","tags":["q3","finance"],"n":42}`)

// writeDoc is what a document update does: read the object, bump its
// revision and event id, write it back and log the event.
func writeDoc(ctx context.Context, s *sqlite.Store, doc *chorus.Object) error {
	return updateDoc(ctx, s, func(tx chorus.Tx) (*chorus.Object, error) {
		return tx.Object(ctx, chorus.KindDocument, doc.ServiceSID, doc.SID)
	})
}

// writeDocByName is writeDoc for a request that names the document by its
// unique name.
func writeDocByName(ctx context.Context, s *sqlite.Store, doc *chorus.Object) error {
	return updateDoc(ctx, s, func(tx chorus.Tx) (*chorus.Object, error) {
		return tx.ObjectByName(ctx, chorus.KindDocument, doc.ServiceSID, doc.UniqueName)
	})
}

func updateDoc(ctx context.Context, s *sqlite.Store, read func(chorus.Tx) (*chorus.Object, error)) error {
	return s.Update(ctx, func(tx chorus.Tx) error {
		o, err := read(tx)
		if err != nil {
			return err
		}
		now := time.Now()
		o.Revision++
		o.LastEventID++
		o.Data = benchData
		o.DateUpdated = now
		if err := tx.UpdateObject(ctx, o); err != nil {
			return err
		}
		return tx.AppendEvent(ctx, &chorus.Event{
			Type: chorus.EventDocumentUpdated, ID: o.LastEventID,
			AccountSID: o.AccountSID, ServiceSID: o.ServiceSID, ObjectSID: o.SID,
			Kind: o.Kind, UniqueName: o.UniqueName, Revision: o.RevisionString(),
			Data: o.Data, DateCreated: now, Identity: "bench",
		})
	})
}

// runWriters runs b.N document writes from writers goroutines; docOf picks
// the document of goroutine i.
func runWriters(b *testing.B, s *sqlite.Store, writers int, docOf func(i int) *chorus.Object) {
	runWritersOf(b, s, writers, docOf, writeDoc)
}

// runWritersOf is runWriters with write for writeDoc.
func runWritersOf(b *testing.B, s *sqlite.Store, writers int, docOf func(i int) *chorus.Object,
	writeDoc func(context.Context, *sqlite.Store, *chorus.Object) error) {
	ctx := context.Background()
	b.ReportAllocs()
	if writers == 1 {
		doc := docOf(0)
		for b.Loop() {
			if err := writeDoc(ctx, s, doc); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		// RunParallel starts parallelism × GOMAXPROCS goroutines.
		b.SetParallelism((writers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			doc := docOf(int(next.Add(1) - 1))
			for pb.Next() {
				if err := writeDoc(ctx, s, doc); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	// Update returns after commit: nothing is left in flight here.
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
	if batches, reqs, commit := s.BatchStats(); batches > 0 {
		b.ReportMetric(float64(reqs)/float64(batches), "writes/batch")
		b.ReportMetric(float64(commit.Microseconds()), "µs/commit")
	}
	if syncs, sync, _ := s.SyncStats(); syncs > 0 {
		b.ReportMetric(float64(b.N)/float64(syncs), "writes/sync")
		b.ReportMetric(float64(sync.Microseconds()), "µs/sync")
	}
}

// benchModes are the commit strategies compared by the benchmarks: the
// first version's (synchronous=FULL, the writer waits for each fsync, a
// savepoint per request) and the current pipelined one. Both are durable
// when Update returns.
var benchModes = []struct {
	name string
	open func(b *testing.B) *sqlite.Store
}{
	{"legacy", func(b *testing.B) *sqlite.Store {
		path := filepath.Join(b.TempDir(), "chorus.db")
		s, err := sqlite.OpenLegacy(context.Background(), path, nil)
		if err != nil {
			b.Fatalf("OpenLegacy(%s): %v", path, err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	}},
	{"pipelined", func(b *testing.B) *sqlite.Store { return open(b) }},
}

// BenchmarkUpdate measures durable document writes, each writer on its own
// document.
func BenchmarkUpdate(b *testing.B) {
	for _, m := range benchModes {
		for _, writers := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/writers=%d", m.name, writers), func(b *testing.B) {
				s := m.open(b)
				docs := benchFixture(b, s, 4*writers)
				runWriters(b, s, writers, func(i int) *chorus.Object { return docs[i%len(docs)] })
			})
		}
	}
}

// BenchmarkUpdateByName is BenchmarkUpdate (pipelined) for writes that
// name their document by its unique name, as REST URLs and SDKs may.
func BenchmarkUpdateByName(b *testing.B) {
	for _, writers := range []int{1, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := open(b)
			docs := benchFixture(b, s, 4*writers)
			runWritersOf(b, s, writers, func(i int) *chorus.Object { return docs[i%len(docs)] }, writeDocByName)
		})
	}
}

// BenchmarkUpdateOneObject measures durable writes that all hit one
// document: they serialize on it.
func BenchmarkUpdateOneObject(b *testing.B) {
	for _, m := range benchModes {
		b.Run(fmt.Sprintf("%s/writers=32", m.name), func(b *testing.B) {
			s := m.open(b)
			doc := benchFixture(b, s, 1)[0]
			runWriters(b, s, 32, func(int) *chorus.Object { return doc })
		})
	}
}

// BenchmarkViewObject measures the read every REST fetch makes (and every
// subscription made before RecentObject): one object row in its own read
// transaction. ctx=cancellable is what request and connection contexts
// are.
func BenchmarkViewObject(b *testing.B) {
	s := open(b)
	doc := benchFixture(b, s, 1)[0]
	cancellable, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, c := range []struct {
		name string
		ctx  context.Context
	}{{"background", context.Background()}, {"cancellable", cancellable}} {
		ctx := c.ctx
		b.Run("ctx="+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				err := s.View(ctx, func(tx chorus.ReadTx) error {
					_, err := tx.Object(ctx, chorus.KindDocument, doc.ServiceSID, doc.SID)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// What a subscription's check reads instead when a recent batch wrote
	// the object (Store.RecentObject).
	b.Run("recent", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := s.RecentObject(ctx, chorus.KindDocument, doc.ServiceSID, doc.SID); err != nil || !ok {
				b.Fatalf("RecentObject = %v, %v", ok, err)
			}
		}
	})
}

// BenchmarkUpdateItem measures durable writes of map items (Sync as a
// key-value store), each writer on an item of its own map: read the map
// and the item, log the event, write both back.
func BenchmarkUpdateItem(b *testing.B) {
	for _, writers := range []int{1, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := open(b)
			maps := benchFixture(b, s, writers)
			ctx := context.Background()
			err := s.Update(ctx, func(tx chorus.Tx) error {
				for _, m := range maps {
					o := *m
					o.Kind, o.Data = chorus.KindMap, nil
					if err := tx.DeleteObject(ctx, m.SID); err != nil {
						return err
					}
					o.SID = chorus.NewSID(chorus.PrefixMap)
					*m = o
					if err := tx.InsertObject(ctx, m); err != nil {
						return err
					}
					if err := tx.PutItem(ctx, &chorus.Item{Kind: chorus.KindMap, ObjectSID: m.SID, Key: "k",
						Data: benchData, CreatedBy: "bench", DateCreated: time.Now(), DateUpdated: time.Now()}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			runWritersOf(b, s, writers, func(i int) *chorus.Object { return maps[i] }, writeItem)
		})
	}
}

// writeItem is what a map item update does (engine.WriteItem).
func writeItem(ctx context.Context, s *sqlite.Store, m *chorus.Object) error {
	return s.Update(ctx, func(tx chorus.Tx) error {
		o, err := tx.Object(ctx, chorus.KindMap, m.ServiceSID, m.SID)
		if err != nil {
			return err
		}
		it, err := tx.Item(ctx, o.SID, chorus.ItemRef{Key: "k"})
		if err != nil {
			return err
		}
		now := time.Now()
		o.Revision++
		o.LastEventID++
		o.DateUpdated = now
		it.Revision++
		it.Data = benchData
		it.DateUpdated = now
		it.LastEventID = o.LastEventID
		if err := tx.AppendEvent(ctx, &chorus.Event{
			Type: chorus.EventMapItemUpdated, ID: o.LastEventID,
			AccountSID: o.AccountSID, ServiceSID: o.ServiceSID, ObjectSID: o.SID, Kind: o.Kind,
			Revision: o.RevisionString(), ItemKey: it.Key, ItemRevision: it.RevisionString(),
			ItemData: it.Data, DateCreated: now, Identity: "bench",
		}); err != nil {
			return err
		}
		if err := tx.PutItem(ctx, it); err != nil {
			return err
		}
		return tx.UpdateObject(ctx, o)
	})
}

// BenchmarkTrimEvents: storetest.BenchTrimEvents over 100 documents.
func BenchmarkTrimEvents(b *testing.B) {
	s := open(b)
	storetest.BenchTrimEvents(b, s, benchFixture(b, s, 100), nil)
}

// BenchmarkNodeHeartbeat measures the leader's heartbeat (every 2 s, in
// the writer's batch) with 100,000 endpoints connected on 10 live nodes:
// it looks for endpoints of dead nodes and finds none.
func BenchmarkNodeHeartbeat(b *testing.B) {
	s := open(b)
	ctx := context.Background()
	svc := benchFixture(b, s, 1)[0]
	now := time.Now()
	const nodes, endpoints = 10, 100_000
	for start := 0; start < endpoints; start += 10_000 {
		err := s.Update(ctx, func(tx chorus.Tx) error {
			for i := start; i < start+10_000; i++ {
				node := fmt.Sprintf("node-%d", i%nodes)
				if i < nodes {
					if _, _, err := tx.NodeHeartbeat(ctx, node, now, time.Time{}); err != nil {
						return err
					}
				}
				ep := chorus.Endpoint{ServiceSID: svc.ServiceSID, AccountSID: svc.AccountSID,
					Identity: fmt.Sprintf("user-%d", i), EndpointID: fmt.Sprintf("ep-%d", i), Node: node}
				if _, err := tx.ConnectEndpoint(ctx, ep, now); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		err := s.Update(ctx, func(tx chorus.Tx) error {
			_, _, err := tx.NodeHeartbeat(ctx, "node-0", now, now.Add(-time.Minute))
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOutboxBacklog: storetest.BenchOutboxBacklog.
func BenchmarkOutboxBacklog(b *testing.B) { storetest.BenchOutboxBacklog(b, open(b)) }

// BenchmarkOutboxPage: storetest.BenchOutboxPage.
func BenchmarkOutboxPage(b *testing.B) { storetest.BenchOutboxPage(b, open(b)) }
