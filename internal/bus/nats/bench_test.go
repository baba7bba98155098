package nats_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/bustest"
	"github.com/chorus-sync/chorus/internal/bus/nats"
)

// BenchmarkPublishReceive measures publish→receive throughput of 1 KiB
// events between two buses (two nodes) over the real nats-server, with
// one or 100 events per Publish call. It reports events/s received and
// how many were lost (NATS drops for slow consumers).
func BenchmarkPublishReceive(b *testing.B) {
	u := testURL(b)
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("size=1k/batch=%d", batch), func(b *testing.B) {
			p := uniquePrefix(b)
			pub := open(b, u, nats.WithPrefix(p), nats.WithName("bench-pub"))
			sub := open(b, u, nats.WithPrefix(p), nats.WithName("bench-sub"))
			obj := bustest.NewObjectSID()
			var received atomic.Int64
			cancel, err := sub.Subscribe(obj, func(*chorus.Event) { received.Add(1) })
			if err != nil {
				b.Fatal(err)
			}
			defer cancel()
			events := make([]*chorus.Event, batch)
			for i := range events {
				e := bustest.NewEvent(obj, int64(i+1))
				e.DateExpires, e.ItemData, e.ItemKey, e.ItemRevision, e.MessageSID = nil, nil, "", "", ""
				e.Data = json.RawMessage(`{"s":"` + strings.Repeat("x", 1024-8) + `"}`)
				events[i] = e
			}
			ctx := context.Background()
			b.SetBytes(int64(1024 * batch))
			b.ReportAllocs()
			start := time.Now()
			sent := 0
			for b.Loop() {
				if err := pub.Publish(ctx, events...); err != nil {
					b.Fatal(err)
				}
				sent += batch
			}
			// Drain: wait until everything arrived or nothing more comes.
			last, idle := received.Load(), time.Now()
			for received.Load() < int64(sent) && time.Since(idle) < time.Second {
				time.Sleep(time.Millisecond)
				if n := received.Load(); n != last {
					last, idle = n, time.Now()
				}
			}
			end := idle // the last arrival
			if received.Load() >= int64(sent) {
				end = time.Now()
			}
			elapsed := end.Sub(start)
			got := received.Load()
			b.ReportMetric(float64(got)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(int64(sent)-got), "lost")
		})
	}
}
