package gateway

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
)

// BenchmarkResync measures one Resync pass (what a node runs after its
// NATS connection comes back, and every node after another node's did or
// after a node was presumed dead) over topics subscribed by sessions on
// this node, none of which missed anything: the usual case, whose cost is
// finding that out.
func BenchmarkResync(b *testing.B) {
	for _, topics := range []int{100, 5000} {
		b.Run(fmt.Sprintf("topics=%d", topics), func(b *testing.B) { benchResync(b, topics) })
	}
}

func benchResync(b *testing.B, topics int) {
	e := newEnv(b)
	e.subscribedDocs(topics, false)
	for b.Loop() {
		e.gw.resyncUntilDone()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(topics), "ns/topic")
}

// subscribedDocs creates n documents and subscribes sessions to them,
// MaxSubscriptionsPerWS per session, and returns their SIDs and each one's
// session. keep says whether the sessions keep their notifications.
func (e *env) subscribedDocs(n int, keep bool) (sids []string, sessions map[string]*tclient) {
	e.t.Helper()
	ctx := context.Background()
	const perSession, perRequest = chorus.MaxSubscriptionsPerWS, 100
	sessions = make(map[string]*tclient, n)
	var sess *tclient
	var reqs []map[string]any
	corr := int64(0)
	subscribe := func() {
		if len(reqs) == 0 {
			return
		}
		corr++
		wantStatus(e.t, "establish", sess.subscribe("establish", corr, reqs...), 200, 0)
		reqs = reqs[:0]
	}
	for i := range n {
		if i%perSession == 0 {
			subscribe()
			sess = e.session(fmt.Sprintf("s%d", i/perSession))
			sess.mu.Lock()
			sess.keep = keep
			sess.mu.Unlock()
		}
		o, err := e.eng.CreateObject(ctx, engine.SystemActor(), e.svc, chorus.KindDocument, engine.CreateObject{})
		if err != nil {
			e.t.Fatal(err)
		}
		sids = append(sids, o.SID)
		sessions[o.SID] = sess
		reqs = append(reqs, docSub(o.SID, o.LastEventID))
		if len(reqs) == perRequest {
			subscribe()
		}
	}
	subscribe()
	deadline := time.Now().Add(time.Minute)
	for e.gw.Stats().Topics < n {
		if time.Now().After(deadline) {
			e.t.Fatalf("%d topics subscribed, want %d", e.gw.Stats().Topics, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return sids, sessions
}
