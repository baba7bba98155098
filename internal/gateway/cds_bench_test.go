package gateway

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
)

// BenchmarkCDS measures a document update and fetch tunnelled over the
// websocket (CDS POST/GET /v3/Documents/{name}, as the SDK sends them),
// against the SQLite-backed engine: one session sequentially, and 32
// sessions each writing its own document (every write durable before its
// answer).
func BenchmarkCDS(b *testing.B) {
	e := newEnv(b)
	const sessions = 32
	clients := make([]*tclient, sessions)
	for i := range clients {
		clients[i] = e.session(fmt.Sprintf("u%d", i))
		wantStatus(b, "create", clients[i].do("POST", "/v3/Documents", nil,
			map[string]any{"unique_name": fmt.Sprintf("d%d", i), "data": map[string]any{"n": 0}}), 201, 0)
	}
	body := map[string]any{"data": map[string]any{"title": "Quarterly report", "status": "in review", "owner": "alice", "n": 42}}
	b.Run("op=update-document", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r := clients[0].do("POST", "/v3/Documents/d0", nil, body); r.Status != 200 {
				b.Fatalf("update = %d %s", r.Status, r.Body)
			}
		}
	})
	b.Run("op=fetch-document", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r := clients[0].do("GET", "/v3/Documents/d0", nil, nil); r.Status != 200 {
				b.Fatalf("fetch = %d %s", r.Status, r.Body)
			}
		}
	})
	b.Run("op=update-document/sessions=32", func(b *testing.B) {
		procs := runtime.GOMAXPROCS(0)
		b.SetParallelism((sessions + procs - 1) / procs)
		b.ReportAllocs()
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(1)-1) % sessions
			c, path := clients[i], fmt.Sprintf("/v3/Documents/d%d", i)
			for pb.Next() {
				if r := c.do("POST", path, nil, body); r.Status != 200 {
					b.Errorf("update = %d %s", r.Status, r.Body)
					return
				}
			}
		})
	})
}
