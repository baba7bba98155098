// Package mem is the in-process chorus.Bus of a single-node Chorus: events
// published by the engine go straight to the local gateway's subscribers.
//
// A Bus is safe for concurrent use. Subscriber callbacks run on the
// publisher's goroutine and must not block.
package mem
