// Package gateway is Chorus's Twilsock V3.0 WebSocket endpoint and the CDS
// API that the Twilio Sync SDKs tunnel through it: sessions (init, update,
// token expiry), upstream requests (documents, lists, maps, streams),
// subscriptions with replay, and the fan-out of live events.
//
// # Concurrency
//
// A Gateway is safe for concurrent use. ServeHTTP upgrades the connection
// (github.com/gobwas/ws; no subprotocol, no compression, any Origin) and
// returns; each session then runs on its own goroutines: a reader that
// reads frames through a small buffer and decodes them (it never writes),
// a writer that alone writes to the socket and ends the session, and a
// worker that runs init, update and upstream requests one at a time in
// arrival order (started when a request arrives, gone when none is left).
// The writer drains every frame that is ready into one pooled buffered
// writer and flushes it with one write under the write deadline; an idle
// session holds no write buffer. Enqueueing never blocks: a connection
// whose queue overflows (by frames or bytes) or whose writes time out is
// closed as a slow consumer, and the SDK reconnects and replays. Pings and
// token notices come from per-session timers.
//
// The hub keeps one topic per subscribed object with one Bus subscription.
// A topic orders events by ID (buffering briefly across gaps and filling
// them from the store's event log), encodes each event once per public base
// URL, and enqueues the same bytes to every live subscriber. Lock order:
// Gateway.mu; hub.mu → topic.mu → sendQueue.mu; conn.mu is never held while
// taking a hub or topic lock. Bus callbacks hold the Bus's lock, so nothing
// calls the Bus while holding a topic lock.
//
// Live queries over Maps (insights.go) hang off their Map's topic: the
// topic offers each event it delivers to its live queries, whose state is
// guarded by the topic's mutex, so they see the Map's events in order and
// only their own Map's.
package gateway
