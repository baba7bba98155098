// Package gateway is Chorus's Twilsock V3.0 WebSocket endpoint and the CDS
// API that the Twilio Sync SDKs tunnel through it: sessions (init, update,
// token expiry), upstream requests (documents, lists, maps, streams),
// subscriptions with replay, and the fan-out of live events.
//
// # Concurrency
//
// A Gateway is safe for concurrent use. Each connection runs three
// goroutines in one errgroup: a reader that decodes frames (it never
// writes), a worker that runs init, update and upstream requests one at a
// time in arrival order, and a writer that alone writes to the socket,
// draining the bounded send queue. Enqueueing never blocks: a connection
// whose queue overflows or whose writes time out is closed as a slow
// consumer, and the SDK reconnects and replays.
//
// The hub keeps one topic per subscribed object with one Bus subscription.
// A topic orders events by ID (buffering briefly across gaps and filling
// them from the store's event log), encodes each event once per public base
// URL, and enqueues the same bytes to every live subscriber. Lock order:
// Gateway.mu; hub.mu → topic.mu → sendQueue.mu; conn.mu is never held while
// taking a hub or topic lock. Bus callbacks hold the Bus's lock, so nothing
// calls the Bus while holding a topic lock.
package gateway
