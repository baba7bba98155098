// Package ratelog bounds the log lines of events that can repeat at any
// rate: a dependency down (every write fails to publish, every readiness
// probe fails), a flood (rejected logins, refused connections, malformed
// frames), a receiver that keeps failing. A Gate lets a burst of such
// lines through, then one per interval, and counts the ones it holds
// back, so that the next line let through can say how many there were.
//
// It imports no package of Chorus's, so that every package may use it.
//
// Concurrency: a Gate's methods are safe for concurrent use.
package ratelog
