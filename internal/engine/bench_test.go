package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
)

// benchBody is the small JSON body every benchmark write sets.
var benchBody = json.RawMessage(`{"title":"Quarterly report","status":"in review","owner":"alice","n":42}`)

// benchEngine opens a real SQLite store in a temporary directory and an
// engine over it with an in-memory bus, bootstrapped with one service.
func benchEngine(b *testing.B) (*engine.Engine, *chorus.Service) {
	b.Helper()
	eng := engine.New(engine.Config{Store: openSQLite(b), Bus: mem.New()})
	_, svc := bootstrap(b, eng)
	return eng, svc
}

// benchDocs creates n documents.
func benchDocs(b *testing.B, eng *engine.Engine, svc *chorus.Service, n int) []*chorus.Object {
	b.Helper()
	docs := make([]*chorus.Object, n)
	for i := range docs {
		d, err := eng.CreateObject(context.Background(), engine.SystemActor(), svc, chorus.KindDocument,
			engine.CreateObject{UniqueName: fmt.Sprintf("doc-%d", i)})
		if err != nil {
			b.Fatal(err)
		}
		docs[i] = d
	}
	return docs
}

// runDocumentWrites runs b.N engine.UpdateObject calls by actor from
// writers goroutines; goroutine i writes docs[i%len(docs)]. Each call
// returns only once its write is durable, so writes/s is durable writes
// per second.
func runDocumentWrites(b *testing.B, eng *engine.Engine, svc *chorus.Service, actor engine.Actor, writers int, docs []*chorus.Object) {
	ctx := context.Background()
	write := func(doc *chorus.Object) error {
		_, err := eng.UpdateObject(ctx, actor, svc, chorus.KindDocument, doc.SID,
			engine.UpdateObject{Data: benchBody})
		return err
	}
	b.ReportAllocs()
	b.ResetTimer()
	if writers == 1 {
		for b.Loop() {
			if err := write(docs[0]); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		// RunParallel starts parallelism × GOMAXPROCS goroutines.
		procs := runtime.GOMAXPROCS(0)
		b.SetParallelism((writers + procs - 1) / procs)
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			doc := docs[int(next.Add(1)-1)%len(docs)]
			for pb.Next() {
				if err := write(doc); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

// BenchmarkDocumentWrites measures durable document updates through the
// engine on a real SQLite store: writers=N gives each of N concurrent
// writers its own document; one-document puts them all on one; acl
// writes as an SDK client's identity in a service with ACLs on, which
// checks the identity's permission on every write.
func BenchmarkDocumentWrites(b *testing.B) {
	for _, writers := range []int{1, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			eng, svc := benchEngine(b)
			runDocumentWrites(b, eng, svc, engine.SystemActor(), writers, benchDocs(b, eng, svc, writers))
		})
	}
	b.Run("one-document/writers=32", func(b *testing.B) {
		eng, svc := benchEngine(b)
		runDocumentWrites(b, eng, svc, engine.SystemActor(), 32, benchDocs(b, eng, svc, 1))
	})
	for _, writers := range []int{1, 32} {
		b.Run(fmt.Sprintf("acl/writers=%d", writers), func(b *testing.B) {
			eng, svc := benchEngine(b)
			docs := benchDocs(b, eng, svc, writers)
			svc = aclFor(b, eng, svc, "alice", docs)
			runDocumentWrites(b, eng, svc, engine.Actor{Identity: "alice"}, writers, docs)
		})
	}
}

// aclFor turns svc's ACLs on and lets identity write docs; it returns the
// updated service.
func aclFor(b *testing.B, eng *engine.Engine, svc *chorus.Service, identity string, docs []*chorus.Object) *chorus.Service {
	b.Helper()
	ctx := context.Background()
	on := true
	svc, err := eng.UpdateService(ctx, svc.AccountSID, svc.SID, engine.ServiceParams{ACLEnabled: &on})
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range docs {
		if _, err := eng.SetPermission(ctx, svc, chorus.KindDocument, d.SID,
			chorus.Permission{Identity: identity, Read: true, Write: true}); err != nil {
			b.Fatal(err)
		}
	}
	return svc
}
