package gateway

import (
	"context"
	"testing"
	"time"
)

// BenchmarkConnect measures connection setup as a reconnecting SDK does
// it: dial, init (token verification, service lookup), establish one
// document subscription (with its catch-up read) and close. The in-process
// client's work is included; allocs/op count both sides.
func BenchmarkConnect(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	w := e.session("writer")
	doc := wantStatus(b, "create", w.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	sid := doc["sid"].(string)
	start := num(doc["last_event_id"])
	tok := e.token("bench", time.Hour)
	b.ReportAllocs()
	var corr int64
	for b.Loop() {
		corr++
		c := e.dialWith(ctx, dialOptions{notes: 4})
		c.mustInit(tok)
		c.establish(corr, docSub(sid, start))
		c.ws.CloseNow()
	}
	b.StopTimer()
	waitFor(b, func() bool { return e.gw.Stats().Connections <= 1 })
}
