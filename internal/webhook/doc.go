// Package webhook posts Sync events to a service's webhook_url the way
// Twilio does: a form-encoded POST signed with X-Twilio-Signature
// (HMAC-SHA1 of the URL and the sorted parameters, keyed with the account's
// auth token).
//
// A Dispatcher is safe for concurrent use. Enqueue never blocks: events
// wait in a bounded queue for a small pool of senders, and an event that
// finds the queue full is dropped, counted and logged (rate-limited).
// Delivery is best effort, like Twilio's: one attempt with a timeout and
// one retry on a network error or 5xx.
package webhook
