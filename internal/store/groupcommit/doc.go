// Package groupcommit is the request queue shared by the group-commit stores
// (sqlite, postgres): callers Submit a function and wait; writer goroutines
// take requests off the queue in batches, Claim them, run them together in
// one transaction, and Answer each.
//
// A Queue is safe for concurrent use. A Request belongs to its writer from
// a successful Claim until Answer; its caller reads Err and Panic only after
// Answer. A caller whose context ends while its request is still queued
// gets ctx.Err() and the request is never run; once claimed, the caller
// waits for the outcome, which is the answer.
package groupcommit
