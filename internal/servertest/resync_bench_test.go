package servertest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
)

// BenchmarkResyncPostgres measures one Resync pass of a cluster node on
// PostgreSQL over topics its sessions subscribe to, none of which missed
// anything: what every node runs when a node's NATS connection comes back
// or a node is presumed dead. (The gateway's BenchmarkResync measures the
// same on SQLite.)
func BenchmarkResyncPostgres(b *testing.B) {
	for _, topics := range []int{100, 5000} {
		b.Run(fmt.Sprintf("topics=%d", topics), func(b *testing.B) { benchResyncPostgres(b, topics) })
	}
}

func benchResyncPostgres(b *testing.B, topics int) {
	c := NewCluster(b, Config{Nodes: 1})
	n := c.Nodes[0]
	ctx := context.Background()
	eng := n.Server.Engine()
	svc, err := eng.Service(ctx, c.Creds.AccountSID, c.Creds.ServiceSID)
	if err != nil {
		b.Fatal(err)
	}
	const perSession, perRequest = chorus.MaxSubscriptionsPerWS, 100
	var sess *tclient
	var sids []string
	for i := range topics {
		if i%perSession == 0 {
			sess = dial(b, n.WSURL, c.Token(b, fmt.Sprintf("s%d", i/perSession)))
		}
		o, err := eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, engine.CreateObject{})
		if err != nil {
			b.Fatal(err)
		}
		if sids = append(sids, o.SID); len(sids) == perRequest || i%perSession == perSession-1 || i == topics-1 {
			sess.establish(chorus.KindDocument, sids...)
			sids = sids[:0]
		}
	}
	gw := n.Server.Gateway()
	if got := gw.Stats().Topics; got != topics {
		b.Fatalf("%d topics, want %d", got, topics)
	}
	for b.Loop() {
		done := gw.Stats().Resyncs + 1
		gw.Resync()
		for gw.Stats().Resyncs < done {
			time.Sleep(100 * time.Microsecond)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(topics), "ns/topic")
}
