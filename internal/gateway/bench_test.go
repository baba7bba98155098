package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

// BenchmarkFanout measures deliveries of bursts of events to N subscribed
// connections, with a writer goroutine per session and with the shared
// writer pool (what serve runs). The clients read in the same process, so
// it measures client and server together; ../shared/rtbench measures the
// server alone.
// BenchmarkFanout publishes bursts of 10 events, each once the last is
// delivered: a closed loop, so its rate is bound by a burst's latency. With
// the pool, coalesce=true is what serve runs: the pool stays busy, so it
// counts as behind and holds each burst's tail up to CoalesceInterval
// (coalesce.go); coalesce=false shows the pool's raw rate.
func BenchmarkFanout(b *testing.B) {
	for _, conns := range []int{1000} {
		b.Run(fmt.Sprintf("conns=%d/pool=false", conns), func(b *testing.B) { benchFanout(b, conns, false, false) })
		for _, coalesce := range []bool{false, true} {
			b.Run(fmt.Sprintf("conns=%d/pool=true/coalesce=%v", conns, coalesce), func(b *testing.B) { benchFanout(b, conns, true, coalesce) })
		}
	}
}

func benchFanout(b *testing.B, conns int, pool, coalesce bool) {
	const burst = 10
	e := newEnv(b, withConfig(func(c *Config) {
		c.SendQueueFrames, c.WriterPool = 4096, pool
		if !coalesce {
			c.CoalesceInterval = -1
		}
	}))
	ctx := context.Background()
	c0 := e.session("writer")
	doc := wantStatus(b, "create", c0.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	sid := doc["sid"].(string)
	start := num(doc["last_event_id"])

	var received atomic.Int64
	tok := e.token("bench", time.Hour)
	for i := 0; i < conns; i++ {
		c := e.dial(ctx)
		c.mustInit(tok)
		c.establish(int64(i+1), docSub(sid, start))
		c.mu.Lock()
		c.keep = false
		c.noAck = true
		c.mu.Unlock()
		c.counter = &received
	}
	received.Store(0)
	e.gw.mu.Lock()
	for c := range e.gw.conns {
		if pooled := c.raw != nil; pooled != pool {
			e.gw.mu.Unlock()
			b.Fatalf("a session writes through the pool: %v, want %v", pooled, pool)
		}
	}
	e.gw.mu.Unlock()

	data := json.RawMessage(`{"temperature":23,"label":"benchmark payload"}`)
	id := start
	var want int64
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	t0 := time.Now()
	for b.Loop() {
		for i := 0; i < burst; i++ {
			id++
			e.bus.Publish(ctx, &chorus.Event{Type: chorus.EventDocumentUpdated, ID: id, ObjectSID: sid, ServiceSID: e.svc.SID,
				Kind: chorus.KindDocument, Revision: "1", Data: data, DateCreated: time.Now()})
		}
		want += int64(burst * conns)
		for received.Load() < want {
			time.Sleep(50 * time.Microsecond)
		}
	}
	elapsed := time.Since(t0)
	runtime.ReadMemStats(&ms1)
	deliveries := float64(want)
	b.ReportMetric(deliveries/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/deliveries, "allocs/delivery")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/deliveries, "B/delivery")
	if st := e.gw.Stats(); st.SlowConsumers != 0 {
		b.Errorf("slow consumers = %d, want 0", st.SlowConsumers)
	}
}

// BenchmarkDeliver measures the hub alone: one event encoded once and
// queued to 1,000 subscribers (no sockets).
func BenchmarkDeliver(b *testing.B) {
	const subs = 1000
	g := New(Config{})
	h := g.hub
	t := &topic{h: h, sid: "ET0", kind: chorus.KindDocument, pending: map[int64]*chorus.Event{}, subs: map[*conn]*subscription{}, baseline: true}
	var cs []*conn
	for i := 0; i < subs; i++ {
		// Each session builds its base from its own request, so the
		// strings are equal but distinct.
		c := &conn{g: g, q: newSendQueue(1<<30, 1<<40), base: internBase(strings.Clone("http://localhost:8080"))}
		c.cancel = func(error) {}
		t.subs[c] = &subscription{c: c, t: t, live: true}
		cs = append(cs, c)
	}
	ev := &chorus.Event{Type: chorus.EventDocumentUpdated, ObjectSID: "ET0", Kind: chorus.KindDocument, Revision: "1",
		Data: json.RawMessage(`{"temperature":23}`), DateCreated: time.Now()}
	var batch []outFrame
	b.ReportAllocs()
	for b.Loop() {
		ev.ID++
		t.mu.Lock()
		t.acceptLocked(ev)
		t.mu.Unlock()
		for _, c := range cs {
			batch, _ = c.q.drain(batch)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subs), "ns/delivery")
}
