// Package nats is the chorus.Bus of a multi-node Chorus: engines publish
// committed events on NATS core subjects and every node's gateway
// subscribes to the objects its clients watch.
//
// Subjects are interest-based: an event goes to
// <prefix>.ev.<serviceSID>.<objectSID>, and a node subscribes
// <prefix>.ev.*.<objectSID> once per object while it has local
// subscribers, so the server forwards to each node only the objects it
// needs. Events travel in a compact binary encoding (codec.go) that keeps
// json.RawMessage data byte-exact (encoding/json would compact and
// HTML-escape it); times arrive in UTC.
//
// Why not JetStream. NATS core is at-most-once, and that is enough: every
// logged event is committed to the Store's per-object event log before it
// is published, and the gateway orders events by ID and reads any gap
// from that log (Store.Events), which also serves replay on resubscribe.
// JetStream would add a second durable log of the same events to run,
// size, replicate and trim, and a server round trip (stream ack) to every
// publish, while the gateway would still need the Store for state older
// than the stream's retention. Lost bus events cost a gap fill, not data.
// The one case core NATS leaves to the gateway is an object whose last
// events were lost with no later event to reveal the gap (for example
// while this node was disconnected): WithReconnectHandler signals when
// to resync.
//
// Security: WithAuth authenticates to NATS (user/password, token, NKey
// seed or .creds file; also user info in the URL) and secures the
// connection with TLS (tls:// or a CA file, optionally a client
// certificate). WithSecret adds an HMAC-SHA256 tag to every event and
// drops received events without a valid one (Stats.Forged), so only nodes
// holding the cluster secret can inject events, whoever else NATS lets
// publish.
//
// Concurrency: a Bus is safe for concurrent use. Publish never waits for
// the server and fails fast (wrapping chorus.ErrUnavailable) while the
// connection is down; the client reconnects forever with backoff and
// restores subscriptions itself. Subscriber callbacks run on a few
// delivery goroutines (an object always on the same one), hold the
// object's read lock, and must not block, subscribe, or cancel. Lock
// order: Bus.mu → topic.mu.
package nats
