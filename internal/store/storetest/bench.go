package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

// The bodies of benchmarks that both stores run on the same data.

// BenchTrimEvents measures a sweep's log trim over objs' newest 2,000
// events, a day old, none of which it may delete: looking at the whole log
// at once, at one chunk of the hourly whole-log trim (10,000 events), and
// only at the last 5 s (the sweeps between). objs must exist; analyze, if set, runs after the log is
// written.
func BenchTrimEvents(b *testing.B, s chorus.Store, objs []*chorus.Object, analyze func() error) {
	ctx := context.Background()
	now := time.Now()
	const kept = 2000
	for start := 0; start < len(objs)*kept; start += 10_000 {
		err := s.Update(ctx, func(tx chorus.Tx) error {
			for i := start; i < min(start+10_000, len(objs)*kept); i++ {
				o := objs[i%len(objs)]
				e := &chorus.Event{
					Type: chorus.EventMapItemUpdated, ID: int64(i/len(objs) + 1), AccountSID: o.AccountSID, ServiceSID: o.ServiceSID,
					ObjectSID: o.SID, Kind: chorus.KindMap, ItemKey: fmt.Sprintf("k%d", i),
					DateCreated: now.Add(-30*time.Hour + time.Duration(i)*time.Millisecond), // a write per ms
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
	if analyze != nil {
		if err := analyze(); err != nil {
			b.Fatal(err)
		}
	}
	trim := chorus.EventTrim{Before: now.Add(-24 * time.Hour), Keep: kept}
	// The engine's chunk: the events up to the 10,000th.
	var chunkEnd time.Time
	if err := s.View(ctx, func(tx chorus.ReadTx) (err error) {
		chunkEnd, _, err = tx.EventTime(ctx, time.Time{}, 10_000)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	for _, tt := range []struct {
		name          string
		after, before time.Time
	}{
		{"whole-log", time.Time{}, trim.Before},
		{"chunk-of-10000", time.Time{}, chunkEnd},
		{"since-last-trim", trim.Before.Add(-5 * time.Second), trim.Before},
	} {
		b.Run(tt.name, func(b *testing.B) {
			p := trim
			p.After, p.Before = tt.after, tt.before
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

// BenchOutboxBacklog measures the webhook leader's backlog query (every
// second, and every /metrics scrape) with 200,000 webhooks pending in 100
// services, as when receivers are down.
func BenchOutboxBacklog(b *testing.B, s chorus.Store) {
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

// BenchOutboxPage measures the webhook lane's read of one page (200
// entries, at most 20 per object) of a service with 10,000 pending
// webhooks of 1 KB of data each (its receiver down): spread over 10,000
// objects, or queued behind 50.
func BenchOutboxPage(b *testing.B, s chorus.Store) {
	ctx := context.Background()
	now := time.Now()
	data := json.RawMessage(`{"pad":"` + strings.Repeat("x", 1000) + `"}`)
	for _, keys := range []int{10_000, 50} {
		svc := chorus.NewSID(chorus.PrefixService)
		err := s.Update(ctx, func(tx chorus.Tx) error {
			for i := range 10_000 {
				key := fmt.Sprintf("ET%d", i%keys)
				e := &chorus.OutboxEntry{ServiceSID: svc, OrderKey: key, DateCreated: now, NextAttempt: now.Add(time.Duration(i%keys) * time.Millisecond),
					Event: &chorus.Event{Type: chorus.EventDocumentUpdated, ServiceSID: svc, ObjectSID: key, Kind: chorus.KindDocument,
						Data: data, DateCreated: now}}
				if err := tx.AppendOutbox(ctx, e); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("objects=%d", keys), func(b *testing.B) {
			for b.Loop() {
				var page []*chorus.OutboxEntry
				err := s.View(ctx, func(tx chorus.ReadTx) (err error) {
					page, err = tx.Outbox(ctx, svc, 20, 200)
					return err
				})
				if err != nil || len(page) != 200 {
					b.Fatalf("Outbox = %d entries (%v)", len(page), err)
				}
			}
		})
	}
}
