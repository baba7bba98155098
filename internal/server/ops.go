package server

import (
	"context"
	"fmt"
	"net/http"
	"time"

	natsbus "github.com/chorus-sync/chorus/internal/bus/nats"
)

// serveReady answers 200 when the store and the bus are reachable, 503
// naming the one that is not. The body is for unauthenticated probes: it
// never holds the dependency's address or error, which go to the log
// (at most every readyLogEvery).
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.store.Ping(ctx); err != nil {
		s.notReady("store", err)
		http.Error(w, "store unreachable", http.StatusServiceUnavailable)
		return
	}
	if err := s.bus.Ping(ctx); err != nil {
		s.notReady("bus", err)
		http.Error(w, "bus unreachable", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready"))
}

const readyLogEvery = 10 * time.Second

func (s *Server) notReady(dep string, err error) {
	now := time.Now().UnixNano()
	if last := s.readyLogged.Load(); now-last < int64(readyLogEvery) || !s.readyLogged.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("readyz: dependency unreachable", "dependency", dep, logErr, err)
}

// serveMetrics exposes the node's counters in the Prometheus text format.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	es := s.eng.Stats()
	gs := s.gw.Stats()
	metric := func(name, typ, help string, v any) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, typ, name, v)
	}
	metric("chorus_writes_total", "counter", "Committed mutations.", es.Writes)
	metric("chorus_events_published_total", "counter", "Events handed to the bus.", es.EventsPosted)
	metric("chorus_uptime_seconds", "gauge", "Seconds since the engine started.", int64(time.Since(es.Started).Seconds()))
	metric("chorus_connections", "gauge", "Open websocket sessions.", gs.Connections)
	metric("chorus_subscriptions", "gauge", "Object subscriptions over all sessions.", gs.Subscriptions)
	metric("chorus_subscribed_objects", "gauge", "Objects with at least one local subscriber.", gs.Topics)
	metric("chorus_deliveries_total", "counter", "Live event frames queued to sessions.", gs.Delivered)
	metric("chorus_replayed_total", "counter", "Replayed event frames.", gs.Replayed)
	metric("chorus_slow_consumers_total", "counter", "Sessions closed for falling behind.", gs.SlowConsumers)
	metric("chorus_malformed_total", "counter", "Sessions closed for protocol violations.", gs.Malformed)
	metric("chorus_gap_fills_total", "counter", "Delivery gaps filled from the event log.", gs.GapFills)
	metric("chorus_gap_skips_total", "counter", "Delivery gaps the event log could not fill.", gs.GapSkips)
	metric("chorus_webhooks_sent_total", "counter", "Webhooks delivered.", s.hooks.Sent.Load())
	metric("chorus_webhooks_failed_total", "counter", "Webhooks that failed.", s.hooks.Failed.Load())
	metric("chorus_webhooks_dropped_total", "counter", "Webhooks dropped because the queue was full.", s.hooks.Dropped.Load())
	metric("chorus_connections_refused_total", "counter", "Connections closed on accept for being over a connection cap.", s.connsRefused.Load())
	metric("chorus_auth_failures_total", "counter", "Failed API authentications.", s.throttle.failures.Load())
	if nb, ok := s.bus.(*natsbus.Bus); ok {
		metric("chorus_bus_forged_total", "counter", "Bus events dropped for a missing or wrong cluster signature.", nb.Stats().Forged)
	}
	metric("chorus_auth_throttled_total", "counter", "API requests refused with 429 after too many failed authentications.", s.throttle.refused.Load())
}
