package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/chorus-sync/chorus"
	natsbus "github.com/chorus-sync/chorus/internal/bus/nats"
)

// busPeerWindows are the times watchBusPeers judges by. live: a node is
// alive when it heartbeat in the store that recently (two heartbeats and a
// second; 5 s by default). grace: how long a live node may go unheard on
// the bus before it counts, and how long this node's own NATS connection
// must have been up for it to judge: five hellos, and longer than live
// (10 s by default), so that a node that dies, whose heartbeats stop with
// its hellos, is never reported.
func busPeerWindows(nb *natsbus.Bus, heartbeat time.Duration) (live, grace time.Duration) {
	live = 2*heartbeat + time.Second
	return live, max(5*nb.HelloEvery(), live+2*nb.HelloEvery())
}

// watchBusPeers says hello on the bus and, every HelloEvery, checks
// that every node heartbeating in the store is heard there too. A node
// with another --bus-prefix, NATS server or cluster secret shares the
// database but not the events: each side's subscribers miss the other's
// writes (a gap fill, if a later event of the object arrives, is the only
// way they would see them). Both sides log it once when it
// starts and when it ends, and chorus_cluster_nodes_unheard counts such
// nodes. It runs until ctx ends.
func (s *Server) watchBusPeers(ctx context.Context, nb *natsbus.Bus) {
	if err := nb.SayHello(s.nodeID); err != nil {
		s.log.Warn("nats: cannot say hello: nodes with another --bus-prefix or NATS server will go unnoticed", logErr, err)
		return
	}
	w := busPeerWatch{peers: map[string]*peerSeen{}, unheard: map[string]bool{}}
	t := time.NewTicker(nb.HelloEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.checkBusPeers(ctx, nb, &w)
		}
	}
}

// busPeerWatch is watchBusPeers' state; one goroutine owns it.
type busPeerWatch struct {
	peers   map[string]*peerSeen // nodes seen live in the store lately
	unheard map[string]bool      // nodes reported unheard
}

// peerSeen is when a node was first and last seen live in the store. A
// node missing from one check (a late heartbeat) is forgotten only once it
// has been missing for grace, so that its report neither ends nor repeats
// for a blip.
type peerSeen struct{ first, last time.Time }

// checkBusPeers compares the store's live nodes with those heard on the
// bus, logs what changed, and sets busUnheard.
func (s *Server) checkBusPeers(ctx context.Context, nb *natsbus.Bus, w *busPeerWatch) {
	now := time.Now()
	live, grace := busPeerWindows(nb, s.hooks.HeartbeatEvery())
	if up := nb.ConnectedSince(); up.IsZero() || now.Sub(up) < grace {
		return // down, or too recently up to have heard everyone: readiness reports the bus
	}
	var nodes []string
	err := s.store.View(ctx, func(tx chorus.ReadTx) (err error) {
		nodes, err = tx.LiveNodes(ctx, s.hooks.Now().Add(-live))
		return err
	})
	if err != nil {
		s.log.Debug("bus peers: live nodes", logErr, err)
		return
	}
	heard := nb.Heard()
	for _, n := range nodes {
		if n == s.nodeID {
			continue
		}
		p := w.peers[n]
		if p == nil {
			w.peers[n] = &peerSeen{first: now, last: now}
			continue
		}
		p.last = now
		first := p.first
		if last, ok := heard[n]; ok && now.Sub(last) < grace {
			if w.unheard[n] {
				delete(w.unheard, n)
				s.log.Info("bus peers: node heard on the bus again", slog.String("peer", n))
			}
			continue
		}
		if now.Sub(first) >= grace && !w.unheard[n] {
			w.unheard[n] = true
			s.log.Error("bus peers: a node heartbeats in this node's database but is not heard on its bus: "+
				"their subscribers miss each other's writes; give every node the same --bus-prefix, "+
				"NATS server and cluster secret, and check that it reaches NATS (nodes of an earlier version say no hello)",
				slog.String("peer", n), slog.Duration("unheard_for", now.Sub(latest(first, heard[n]))))
		}
	}
	for n, p := range w.peers {
		if now.Sub(p.last) > grace { // gone (left, died) for a while
			delete(w.peers, n)
			delete(w.unheard, n)
		}
	}
	s.busUnheard.Store(int64(len(w.unheard)))
}

// latest is the later of a and b.
func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
