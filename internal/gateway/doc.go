// Package gateway is Chorus's Twilsock V3.0 WebSocket endpoint and the CDS
// API that the Twilio Sync SDKs tunnel through it: sessions (init, update,
// token expiry), upstream requests (documents, lists, maps, streams),
// subscriptions with replay, and the fan-out of live events.
//
// # Concurrency
//
// A Gateway is safe for concurrent use. ServeHTTP upgrades the connection
// (github.com/gobwas/ws; no subprotocol, no compression, any Origin) and
// returns; each session then runs a reader goroutine that reads frames
// through a small buffer and decodes them (it never writes), and a worker
// that runs init, update and upstream requests one at a time in arrival
// order (started when a request arrives, gone when none is left; it runs
// on a goroutine of the gateway's task pool, taskpool.go, which keeps a
// few idle goroutines with their grown stacks for the next session).
//
// With Config.WriterPool (the server turns it on), writes to a plain
// socket go through the gateway's shared writer pool (writer.go): a
// session whose queue becomes ready is put once on a ready list
// (conn.sched), and at most GOMAXPROCS pool goroutines drain it, each
// writing every ready frame of a session (merged, see merge.go) with one
// non-blocking write, so an event that wakes thousands of sessions wakes a
// few goroutines, and a request read meanwhile waits behind those few
// rather than behind thousands. Without it each session writes its socket
// from a writer goroutine of its own. What the socket does not
// take at once is written by a goroutine of the session's own under
// WriteTimeout. Whoever holds conn.sched alone writes to the socket; the
// holder that finds the session ended runs its end (finish) and never
// gives sched back. A TLS connection (no raw socket) keeps its writer
// goroutine either way. While the pool is behind, a session written live
// events less than Config.CoalesceInterval ago with only live events
// queued, two or more and fewer than 64, waits, keeping sched, until a
// timer or an urgent frame hands it back (coalesce.go). Enqueueing never
// blocks: a connection whose queue overflows (by frames or bytes) or whose
// writes time out is closed as a slow consumer, and the SDK reconnects
// and replays. The one wait is a replay's, on the session's own worker:
// it queues each replayed event only while the queue is less than half
// full (sendQueue.waitRoom, woken by the writer's drain), within the
// subscription request's ReplayLimit and ReplayTime, and never while
// holding a lock. Pings and token notices come from per-session timers.
//
// # Limits
//
// Until init succeeds a WebSocket message may be at most MaxInitBytes
// (32 KiB: a token and metadata), a Twilsock payload_size is held to the
// same bound, and at most four requests may be queued; after init the
// limit is 4×MaxFrameBytes+1 KiB (requests over MaxFrameBytes are answered
// 413). A message over the limit closes the session with 1009 as soon as
// its frame header announces it. Message buffers grow with the bytes that
// arrive (16 KiB steps, append's growth), never from an announced length.
// MaxConns (503) and MaxUnauthenticatedPerAddr (429, by the TCP peer's IP)
// refuse connections before the upgrade, with a Twilio error body. The
// send queues of all sessions share Config.SendQueueBudget (queueBudget):
// a push counts and compares atomics, and past half the budget also
// signals the watcher (a non-blocking channel send) and, on an empty
// queue, reads the clock; past the budget it may read the clock too. One
// watcher goroutine per gateway (evict.go) looks at the queues while they
// hold more than half the budget, every 100 ms, and past the budget
// closes the stuck sessions of the largest holder. It holds Gateway.mu
// only to copy the session list, and each queue's lock only to look at
// it.
//
// # Live authorization
//
// Access changes come as control events on the Bus, published by the
// engine after commit (chorus.EventType.Control; see access.go). A
// permission change travels on the object's own topic, so it is heard by
// the nodes with subscribers to that object, ordered after the events
// that node published before it; a service change (the ACL switch) and a
// key revocation travel on chorus.ControlTopic, heard by every node.
// Their order relative to data events does not matter: a gateway never
// acts on an event's content but re-reads the committed state (the
// permission, the service, the API key) and then ends what is no longer
// allowed. A subscription that lost read access is removed from its topic
// first, then gets subscription_failed 403/54007 with correlation_id null,
// so nothing of the object follows the denial. Nothing published after
// the change reaches a subscription it may deny: the Bus callback itself
// holds the affected subscriptions (subscription.held: a permission change
// holds the identity's subscriptions of the object; a service change marks
// its sessions' service stale, servicegen.go) and the re-check releases
// them with what was held, from the log, or denies them. A stale session
// reads its service again before its next request. A subscription being
// established while access changes is re-checked by its own request
// (topic and session access generations). If a control event is lost
// (NATS core is at-most-once), the Bus's loss report calls Resync, which
// re-reads every session's service and key and re-checks the
// subscriptions of services with ACLs on, retrying until a pass completes;
// a node that could not publish has every node Resync once it can
// (chorus.EventResync).
//
// Token verification on one node reads API keys through a per-gateway
// cache (keys.go; off in a cluster): RevokeKeys, every keys_revoked and
// credentials_changed control event and Resync empty it before anything
// else (forgetKeys), so a revoked key stops verifying at once; an entry
// lives at most 10 s otherwise. forgetKeys also counts the changes of
// keys heard (keysHeard): a renewal while the store is out of reach is
// verified against the session's key as last read only if none was heard
// since, and in a cluster only while the Bus answers (authenticate).
//
// The hub keeps one topic per subscribed object with one Bus subscription.
// A topic orders events by ID (buffering briefly across gaps and filling
// them from the store's event log), encodes each event once per public base
// URL, and enqueues the same bytes to every live subscriber. Lock order:
// Gateway.mu; hub.mu → topic.mu → sendQueue.mu; conn.mu is never held while
// taking a hub or topic lock, and is taken after Gateway.mu and topic.mu
// are released (access re-checks snapshot first, then inspect sessions).
// Bus callbacks hold the Bus's lock, so nothing calls the Bus while holding
// a topic lock, and control events are handled on their own goroutines.
//
// Live queries over Maps (insights.go) hang off their Map's topic: the
// topic offers each event it delivers to its live queries, whose state is
// guarded by the topic's mutex, so they see the Map's events in order and
// only their own Map's; access changes of the Map end them as they end its
// subscriptions (access.go).
package gateway
