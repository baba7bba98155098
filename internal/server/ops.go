package server

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/chorus-sync/chorus"
	natsbus "github.com/chorus-sync/chorus/internal/bus/nats"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
	"github.com/chorus-sync/chorus/internal/webhook"
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
	held, ok := s.readyLog.Allow()
	if !ok {
		return
	}
	args := []any{"dependency", dep, logErr, err}
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	s.log.Warn("readyz: dependency unreachable", args...)
}

// errMetricsPrivate refuses /metrics to a peer that is not local, or to a
// request for a Host that is not one of this server's names.
var errMetricsPrivate = chorus.Errorf(chorus.ErrForbiddenRequest,
	"/metrics is served to loopback clients only, addressed to localhost, a loopback address or this server's --public-url or --listen host: "+
		"start chorus with --metrics-public (or CHORUS_METRICS_PUBLIC=1) to open it")

// metricsAllowed reports whether r may read /metrics: with MetricsPublic
// anyone; else only a loopback TCP peer whose request no proxy forwarded
// (a reverse proxy on the same host is a loopback peer too) and whose Host
// names this server (namedHost: a loopback name or address, the public
// URL's or the listen address's host). The Host check defeats DNS
// rebinding as on /token: a page of evil.example whose name now resolves
// to 127.0.0.1 is a loopback peer but still sends Host: evil.example. Any
// other address in Host comes through a forwarder that adds no header
// (socat, ssh -L) from another machine.
func (s *Server) metricsAllowed(r *http.Request) bool {
	if s.cfg.MetricsPublic {
		return true
	}
	if proxied(r) || !s.namedHost(r.Host) {
		return false
	}
	ip := net.ParseIP(hostOf(r.RemoteAddr))
	return ip != nil && ip.IsLoopback()
}

// serveMetrics exposes the node's counters in the Prometheus text format:
// node totals and every account's service SIDs, so by default to loopback
// peers only (metricsAllowed).
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if !s.metricsAllowed(r) {
		twiliohttp.WriteError(w, r, s.log, errMetricsPrivate)
		return
	}
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
	metric("chorus_deliveries_merged_total", "counter", "Events, live or replayed, sent inside another event's notification (sessions on event protocol 4 that fell behind).", gs.Merged)
	metric("chorus_ws_writes_held_total", "counter", "Writes of live events to a session held back (--ws-coalesce) while the websocket writer pool was behind.", gs.HeldWrites)
	metric("chorus_replayed_total", "counter", "Replayed event frames.", gs.Replayed)
	metric("chorus_replays_interrupted_total", "counter", "Replays answered \"interrupted\" at a subscription request's replay limit (events or time); the client resubscribes from where they got to.", gs.ReplaysInterrupted)
	metric("chorus_slow_consumers_total", "counter", "Sessions closed for falling behind.", gs.SlowConsumers)
	metric("chorus_ws_budget_closed_total", "counter", "Sessions closed because the send-queue budget (--ws-queue-budget) was full: the stale sessions of its largest holder (also counted in chorus_slow_consumers_total).", gs.BudgetClosed)
	metric("chorus_ws_queued_bytes", "gauge", "Bytes queued for or being written to websocket sessions, bounded by --ws-queue-budget.", gs.QueuedBytes)
	metric("chorus_malformed_total", "counter", "Sessions closed for protocol violations.", gs.Malformed)
	metric("chorus_ws_refused_total", "counter", "Websocket connections refused by --ws-max-conns or --ws-max-unauth-per-ip.", gs.Refused)
	metric("chorus_ws_inits_rejected_total", "counter", "Websocket init requests refused: a bad, expired or revoked token.", gs.InitsRejected)
	metric("chorus_ws_inits_refused_per_identity_total", "counter", "Websocket init requests refused by --ws-max-per-identity (the SDK retries them).", gs.IdentityRefused)
	metric("chorus_ws_queries_refused_per_identity_total", "counter", "Live queries refused by --ws-max-queries-per-identity, each re-subscription the SDK asks for again included.", gs.QueriesRefused)
	metric("chorus_gap_fills_total", "counter", "Delivery gaps filled from the event log.", gs.GapFills)
	metric("chorus_gap_skips_total", "counter", "Delivery gaps the event log could not fill.", gs.GapSkips)
	metric("chorus_resyncs_total", "counter", "Resync passes completed: every subscribed object re-read from the event log after the bus may have lost events.", gs.Resyncs)
	metric("chorus_resync_retries_total", "counter", "Gap fills and resync passes run again after the store failed them.", gs.ResyncRetries)
	metric("chorus_connections_refused_total", "counter", "Connections closed on accept for being over a connection cap.", s.connsRefused.Load())
	metric("chorus_auth_failures_total", "counter", "Failed API authentications.", s.throttle.failures.Load())
	if nb, ok := s.bus.(*natsbus.Bus); ok {
		metric("chorus_bus_forged_total", "counter", "Bus events dropped for a missing or wrong cluster signature.", nb.Stats().Forged)
		metric("chorus_bus_foreign_total", "counter", "Bus events of another cluster on the same NATS server and prefix, dropped.", nb.Stats().Foreign)
		metric("chorus_cluster_nodes_unheard", "gauge", "Nodes that heartbeat in this node's database but are not heard on its bus: another --bus-prefix, NATS server or cluster secret.", s.busUnheard.Load())
	}
	if st, ok := s.store.(*sqlite.Store); ok {
		ws := st.WriteStats()
		metric("chorus_store_write_batches_total", "counter", "Write transactions the embedded store ran (group commit: several writes each).", ws.Batches)
		metric("chorus_store_batched_writes_total", "counter", "Writes run in those transactions; divided by the batches, the writes per commit.", ws.Writes)
		metric("chorus_store_commit_seconds_total", "counter", "Time spent in COMMIT, WAL appends and the writer's checkpoints included.", ws.CommitTime.Seconds())
		metric("chorus_store_wal_syncs_total", "counter", "fdatasync calls that made committed batches durable before they were answered.", ws.Syncs)
		metric("chorus_store_wal_sync_seconds_total", "counter", "Time spent in those syncs; divided by the syncs, the storage's sync latency.", ws.SyncTime.Seconds())
		metric("chorus_store_batch_retries_total", "counter", "Batches run again with a savepoint per write after one failed half-way.", ws.Retries)
		metric("chorus_store_writes_failed_total", "counter", "Writes answered 503 (20503) because the store could not write: a full disk, I/O errors, another process holding the database.", ws.Failed)
		if du, err := st.DiskUsage(); err != nil {
			s.log.Warn("metrics: store disk usage", logErr, err)
		} else {
			metric("chorus_store_database_bytes", "gauge", "Size of the embedded store's database file.", du.DatabaseBytes)
			metric("chorus_store_wal_bytes", "gauge", "Size of its write-ahead log (kept under 32 MiB after checkpoints; larger while a long read holds it).", du.WALBytes)
			if du.FreeKnown {
				metric("chorus_store_disk_free_bytes", "gauge", "Space left for the store on its file system; at 0, writes fail with 20503.", du.FreeBytes)
			}
		}
	}
	metric("chorus_auth_throttled_total", "counter", "API requests refused with 429 after too many failed authentications.", s.throttle.refused.Load())
	metric("chorus_webhooks_sent_total", "counter", "Webhooks delivered (by this node).", s.hooks.Sent.Load())
	metric("chorus_webhooks_failed_total", "counter", "Webhook delivery attempts that failed (by this node).", s.hooks.Failed.Load())
	metric("chorus_webhooks_retried_total", "counter", "Webhooks rescheduled after a failed attempt (by this node).", s.hooks.Retried.Load())
	metric("chorus_cluster_nodes_presumed_dead_total", "counter", "Nodes this node presumed dead as the leader: silent for the node timeout without having left (a node leaves on shutdown once its bus confirmed its publishes). In a cluster each makes every node read again what its sessions may have missed.", s.hooks.DeadNodes.Load())
	metric("chorus_webhooks_abandoned_total", "counter", "Webhooks given up on: retries exhausted, too old, refused, or over the outbox cap (by this node).", s.hooks.Abandoned.Load())
	serverErrorMetrics(w)
	s.webhookBacklogMetrics(r.Context(), w)
}

// serverErrorMetrics writes the 5xx answers of the HTTP APIs per Twilio
// error code (20503: the store or bus could not serve; 20500: a bug).
func serverErrorMetrics(w http.ResponseWriter) {
	counts := twiliohttp.ServerErrors()
	codes := make([]int, 0, len(counts))
	for c := range counts {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	fmt.Fprintf(w, "# HELP chorus_http_answers_refused_total Large REST answers refused 503 because others being written held the node's budget for them.\n# TYPE chorus_http_answers_refused_total counter\nchorus_http_answers_refused_total %d\n", twiliohttp.AnswersRefused())
	fmt.Fprintf(w, "# HELP chorus_http_server_errors_total HTTP API answers with a 5xx status, per Twilio error code (this process).\n# TYPE chorus_http_server_errors_total counter\n")
	for _, c := range codes {
		fmt.Fprintf(w, "chorus_http_server_errors_total{code=\"%d\"} %d\n", c, counts[c])
	}
}

// webhookBacklogMetrics writes the cluster-wide outbox backlog per
// service and the age of the oldest pending webhook.
func (s *Server) webhookBacklogMetrics(ctx context.Context, w http.ResponseWriter) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	backlog, err := s.hooks.Backlog(ctx)
	if err != nil {
		s.log.Warn("metrics: webhook backlog", logErr, err)
		return
	}
	now := s.hooks.Now() // the store's clock, which dates the entries
	var oldest float64
	var pending int64
	for _, b := range backlog {
		oldest = max(oldest, now.Sub(b.Oldest).Seconds())
		pending += int64(b.Pending)
	}
	fmt.Fprintf(w, "# HELP chorus_webhooks_pending Webhooks waiting in the outbox, per service (the %d services with the most).\n# TYPE chorus_webhooks_pending gauge\n", metricsMaxServices)
	for _, b := range topServices(backlog, metricsMaxServices, func(a, b *chorus.OutboxBacklog) int { return cmp.Compare(b.Pending, a.Pending) }) {
		fmt.Fprintf(w, "chorus_webhooks_pending{service=%q} %d\n", b.ServiceSID, b.Pending)
	}
	fmt.Fprintf(w, "# HELP chorus_webhooks_oldest_pending_seconds Age of the oldest pending webhook, per service (the %d services with the oldest).\n# TYPE chorus_webhooks_oldest_pending_seconds gauge\n", metricsMaxServices)
	for _, b := range topServices(backlog, metricsMaxServices, func(a, b *chorus.OutboxBacklog) int { return a.Oldest.Compare(b.Oldest) }) {
		fmt.Fprintf(w, "chorus_webhooks_oldest_pending_seconds{service=%q} %.3f\n", b.ServiceSID, max(0, now.Sub(b.Oldest).Seconds()))
	}
	fmt.Fprintf(w, "# HELP chorus_webhooks_pending_all Webhooks waiting in the outbox, all services together.\n# TYPE chorus_webhooks_pending_all gauge\nchorus_webhooks_pending_all %d\n", pending)
	fmt.Fprintf(w, "# HELP chorus_webhooks_oldest_pending_age_seconds Age of the oldest pending webhook of any service.\n# TYPE chorus_webhooks_oldest_pending_age_seconds gauge\nchorus_webhooks_oldest_pending_age_seconds %.3f\n", max(0, oldest))
	kept, err := s.hooks.AbandonedCounts(ctx, nil)
	if err != nil {
		s.log.Warn("metrics: abandoned webhooks", logErr, err)
		return
	}
	sids := mostKept(kept, metricsMaxServices)
	fmt.Fprintf(w, "# HELP chorus_webhooks_abandoned_kept Webhooks given up on and kept to be replayed, per service (the %d services with the most).\n# TYPE chorus_webhooks_abandoned_kept gauge\n", metricsMaxServices)
	for _, sid := range sids {
		fmt.Fprintf(w, "chorus_webhooks_abandoned_kept{service=%q} %d\n", sid, kept[sid])
	}
}

// topServices returns the first n services of backlog in the order of
// first (by SID among equals), in SID order, in a new slice.
func topServices(backlog []*chorus.OutboxBacklog, n int, first func(a, b *chorus.OutboxBacklog) int) []*chorus.OutboxBacklog {
	top := slices.Clone(backlog)
	slices.SortFunc(top, func(a, b *chorus.OutboxBacklog) int {
		return cmp.Or(first(a, b), strings.Compare(a.ServiceSID, b.ServiceSID))
	})
	top = top[:min(len(top), n)]
	slices.SortFunc(top, func(a, b *chorus.OutboxBacklog) int { return strings.Compare(a.ServiceSID, b.ServiceSID) })
	return top
}

// mostKept returns the n service SIDs of kept with the largest counts (by
// SID among equals), in SID order.
func mostKept(kept map[string]int, n int) []string {
	sids := slices.SortedFunc(maps.Keys(kept), func(a, b string) int { return cmp.Or(cmp.Compare(kept[b], kept[a]), strings.Compare(a, b)) })
	sids = sids[:min(len(sids), n)]
	slices.Sort(sids)
	return sids
}

// metricsMaxServices bounds the series of a per-service metric: a tenant
// decides how many services there are, and 300 services with a webhook
// failing made 600 series (56 KB a scrape). Those with the most to show
// are kept; the totals beside them count every service.
const metricsMaxServices = 100

// refuseWebhooks answers 508 to requests that carry the webhook header: a
// webhook pointed at a Chorus server (this one or another) must not loop.
func refuseWebhooks(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(webhook.LoopHeader) != "" {
			http.Error(w, "webhooks may not call Chorus", http.StatusLoopDetected)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// publicHost is the host[:port] of the public URL, "" without one.
func publicHost(publicURL string) string {
	u, err := url.Parse(publicURL)
	if err != nil {
		return ""
	}
	return u.Host
}
