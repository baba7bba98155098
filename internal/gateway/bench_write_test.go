package gateway

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkFanoutWrite measures a CDS write's latency (request to reply,
// over the websocket) while every write's event fans out to N subscribed
// connections: a write must not wait behind the fan-out of the ones
// before it. Run it on one core (-cpu 1) to see the contention.
func BenchmarkFanoutWrite(b *testing.B) {
	for _, conns := range []int{2000} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) { benchFanoutWrite(b, conns) })
	}
}

func benchFanoutWrite(b *testing.B, conns int) {
	e := newEnv(b, withConfig(func(c *Config) { c.SendQueueFrames = 4096 }))
	ctx := context.Background()
	w := e.session("writer")
	doc := wantStatus(b, "create", w.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
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

	body := map[string]any{"data": map[string]any{"temperature": 23, "label": "benchmark payload"}}
	var lat []time.Duration
	writes := 0
	t0 := time.Now()
	for b.Loop() {
		s := time.Now()
		wantStatus(b, "update", w.do("POST", "/v3/Documents/"+sid, nil, body), 200, 0)
		lat = append(lat, time.Since(s))
		writes++
	}
	want := int64(writes * conns)
	deadline := time.Now().Add(2 * time.Minute)
	for received.Load() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(t0)
	if got := received.Load(); got < want { // pings count too
		b.Fatalf("received %d frames, want at least %d", got, want)
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.5), "p50-write-ms")
	b.ReportMetric(pct(0.99), "p99-write-ms")
	b.ReportMetric(float64(want)/elapsed.Seconds(), "deliveries/s")
	if st := e.gw.Stats(); st.SlowConsumers != 0 {
		b.Errorf("slow consumers = %d, want 0", st.SlowConsumers)
	}
}
