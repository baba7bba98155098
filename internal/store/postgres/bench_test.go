package postgres

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/storetest"
)

// BenchmarkUpdate measures durable writes per second: each op is one
// Update that locks a document (SELECT ... FOR NO KEY UPDATE), bumps its
// revision and LastEventID, and writes it back with its event. Each writer
// goroutine has a document of its own.
func BenchmarkUpdate(b *testing.B) {
	for _, batch := range []bool{true, false} {
		for _, writers := range []int{1, 32} {
			name := fmt.Sprintf("batch=%s/writers=%d", map[bool]string{true: "on", false: "off"}[batch], writers)
			b.Run(name, func(b *testing.B) {
				cfg := Config{NoBatch: !batch}
				if !batch {
					cfg.MaxConns = int32(writers) // a connection per writer
				}
				benchmarkUpdate(b, cfg, writers, false)
			})
		}
	}
}

// BenchmarkUpdateHot is BenchmarkUpdate with every writer bumping the same
// document: row locks serialize the transactions, so without batching
// every write waits for the previous one's commit.
func BenchmarkUpdateHot(b *testing.B) {
	for _, batch := range []bool{true, false} {
		name := fmt.Sprintf("batch=%s/writers=32", map[bool]string{true: "on", false: "off"}[batch])
		b.Run(name, func(b *testing.B) {
			benchmarkUpdate(b, Config{NoBatch: !batch, MaxConns: 32}, 32, true)
		})
	}
}

// BenchmarkUpdateWebhook is BenchmarkUpdate with webhooks on: each write
// also appends its event's outbox entry, as the engine does.
func BenchmarkUpdateWebhook(b *testing.B) {
	b.Run("batch=on/writers=32", func(b *testing.B) {
		benchmarkWrites(b, Config{}, 32, false, func(ctx context.Context, tx chorus.Tx, doc *chorus.Object) error {
			return webhookWrite(ctx, tx, doc, 0, "")
		})
	})
}

func benchmarkUpdate(b *testing.B, cfg Config, writers int, hot bool) {
	benchmarkWrites(b, cfg, writers, hot, bump)
}

// benchmarkWrites runs b.N Updates of write from writers goroutines, each
// on a document of its own, or all on one when hot.
func benchmarkWrites(b *testing.B, cfg Config, writers int, hot bool, write func(context.Context, chorus.Tx, *chorus.Object) error) {
	s := open(b, cfg)
	docs := make([]*chorus.Object, writers)
	for i := range docs {
		if hot && i > 0 {
			docs[i] = docs[0]
			continue
		}
		docs[i] = newDoc(b, s)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	ops := int64(b.N)
	for w := range writers {
		doc := docs[w]
		wg.Go(func() {
			ctx := context.Background()
			for next.Add(1) <= ops {
				if err := s.Update(ctx, func(tx chorus.Tx) error { return write(ctx, tx, doc) }); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("Update: %v", err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

// BenchmarkTrimEvents: storetest.BenchTrimEvents over 100 documents, as
// on SQLite.
func BenchmarkTrimEvents(b *testing.B) {
	s := open(b, Config{})
	objs := make([]*chorus.Object, 100)
	for i := range objs {
		objs[i] = newDoc(b, s)
	}
	storetest.BenchTrimEvents(b, s, objs, func() error {
		_, err := s.pool.Exec(context.Background(), "ANALYZE events")
		return err
	})
}

// BenchmarkOutboxBacklog: storetest.BenchOutboxBacklog.
func BenchmarkOutboxBacklog(b *testing.B) { storetest.BenchOutboxBacklog(b, open(b, Config{})) }

// BenchmarkOutboxPage: storetest.BenchOutboxPage.
func BenchmarkOutboxPage(b *testing.B) { storetest.BenchOutboxPage(b, open(b, Config{})) }
