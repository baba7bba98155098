// Package webhook posts Sync events to a service's webhook_url the way
// Twilio does, a form-encoded POST signed with X-Twilio-Signature (HMAC-SHA1
// of the URL and the sorted parameters, keyed with the account's auth
// token), and reliably:
//
//   - Durable outbox. The engine calls Append inside the transaction that
//     commits a change, so every committed event its service wants a
//     webhook of is a chorus.OutboxEntry in the store. Entries are deleted
//     once delivered (2xx) or given up on. Delivery is at least once: an
//     entry sent but not yet deleted when the process dies is sent again.
//   - One deliverer. Only the node for which Config.Leader answers true
//     (the PostgreSQL advisory-lock leader, as for the TTL sweeper; always
//     for SQLite) delivers; when it goes, the next leader carries on from
//     the outbox. The other nodes nudge it about their changes
//     (Config.Nudge, Nudged; nudge.go) so that it need not wait for its
//     next poll.
//   - Order. The entries of one object (OrderKey) are sent one at a time in
//     Seq order: a later event waits until the earlier one was delivered or
//     given up on.
//   - Retries. Timeouts, connection errors, 429 and 5xx are retried after
//     RetryBase×4ⁿ⁻¹ (±20% jitter, Retry-After honored) up to Attempts
//     attempts or MaxAge after the event; 3xx (redirects are not followed),
//     other 4xx and refused addresses are not retried.
//   - Isolation. Each service with pending webhooks has its own lane (a
//     goroutine that starts a sender per object with a webhook due, at
//     most Concurrency at once, and the next as soon as one ends, so a
//     slow object holds back only its own; retries take at most
//     Concurrency-1, so objects that hang leave one for new webhooks); a
//     receiver failing failingAfter times in a row (not counting requests
//     that failed while another succeeded) is paused, longer each time;
//     after a pause, the newest object not yet tried goes first. A
//     service's outbox is capped at MaxPending entries: past it, the
//     oldest are abandoned (counted and logged). What is given up on is
//     kept for KeepAbandoned to be replayed (abandoned.go).
//   - No SSRF. Policy.CheckURL vets URLs at configuration time and the
//     client's dialer checks every address after name resolution.
//   - Reachability is cluster-wide (see reachability.go).
//
// A Dispatcher is safe for concurrent use. Append, Wants and Observe run on
// the engine's write path and do not block on the network; Connected and
// Disconnected (the gateway's Presence) only queue. Run does the delivery
// until Close. Health, Backlog and the exported counters may be read at any
// time. The Dispatcher's mutex guards its service cache, lanes and health;
// a lane's mutex, which its senders share, guards the objects in flight.
// Neither is held across I/O, and a lane's is never taken with the
// Dispatcher's held.
package webhook
