package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
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

// BenchmarkTrimEvents is the SQLite store's BenchmarkTrimEvents on
// PostgreSQL: a sweep's log trim over 100 objects' newest 2,000 events, a
// day old, none of which it may delete, looking at the whole log (the
// hourly trim) against looking only at the last 5 s (the sweeps between).
func BenchmarkTrimEvents(b *testing.B) {
	s := open(b, Config{})
	ctx := context.Background()
	objs := make([]*chorus.Object, 100)
	for i := range objs {
		objs[i] = newDoc(b, s)
	}
	now := time.Now()
	const kept = 2000
	for start := 0; start < len(objs)*kept; start += 10_000 {
		err := s.Update(ctx, func(tx chorus.Tx) error {
			for i := start; i < start+10_000; i++ {
				o := objs[i%len(objs)]
				e := &chorus.Event{
					Type: chorus.EventMapItemUpdated, ID: int64(i/len(objs) + 1), AccountSID: o.AccountSID, ServiceSID: o.ServiceSID,
					ObjectSID: o.SID, Kind: chorus.KindMap, ItemKey: fmt.Sprintf("k%d", i), DateCreated: now.Add(-30 * time.Hour),
				}
				if err := tx.AppendEvent(ctx, e); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	if _, err := s.pool.Exec(ctx, "ANALYZE events"); err != nil {
		b.Fatal(err)
	}
	trim := chorus.EventTrim{Before: now.Add(-24 * time.Hour), Keep: kept}
	for _, tt := range []struct {
		name  string
		after time.Time
	}{{"whole-log", time.Time{}}, {"since-last-trim", trim.Before.Add(-5 * time.Second)}} {
		b.Run(tt.name, func(b *testing.B) {
			p := trim
			p.After = tt.after
			for b.Loop() {
				var n int
				err := s.Update(ctx, func(tx chorus.Tx) error {
					var err error
					n, err = tx.TrimEvents(ctx, p)
					return err
				})
				if err != nil || n != 0 {
					b.Fatalf("TrimEvents = %d, %v; want 0 deleted", n, err)
				}
			}
		})
	}
}

// BenchmarkOutboxBacklog measures the webhook leader's backlog query (every
// second, and every /metrics scrape) with 200,000 webhooks pending in 100
// services, as when receivers are down.
func BenchmarkOutboxBacklog(b *testing.B) {
	s := open(b, Config{})
	ctx := context.Background()
	now := time.Now()
	const services, each = 100, 2000
	sids := make([]string, services)
	for i := range sids {
		sids[i] = chorus.NewSID(chorus.PrefixService)
	}
	for start := 0; start < services*each; start += 10_000 {
		err := s.Update(ctx, func(tx chorus.Tx) error {
			for i := start; i < start+10_000; i++ {
				svc := sids[i%services]
				e := &chorus.OutboxEntry{ServiceSID: svc, OrderKey: fmt.Sprintf("ET%d", i%50), DateCreated: now, NextAttempt: now,
					Event: &chorus.Event{Type: chorus.EventDocumentUpdated, ServiceSID: svc, ObjectSID: "ET1", Kind: chorus.KindDocument,
						Data: json.RawMessage(`{"title":"Quarterly report","n":42}`), DateCreated: now}}
				if err := tx.AppendOutbox(ctx, e); err != nil {
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
		var backlog []*chorus.OutboxBacklog
		err := s.View(ctx, func(tx chorus.ReadTx) (err error) {
			backlog, err = tx.OutboxBacklog(ctx)
			return err
		})
		if err != nil || len(backlog) != services || backlog[0].Pending != each {
			b.Fatalf("OutboxBacklog = %d services (%v)", len(backlog), err)
		}
	}
}
