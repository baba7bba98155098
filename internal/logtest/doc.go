// Package logtest helps tests read what the code under test logs: Buffer is
// a log sink that any number of goroutines (a server's, a child process's
// stderr copier) write while the test reads it. Only tests and test helpers
// (servertest) import it.
//
// Concurrency: a Buffer's methods are safe for concurrent use.
package logtest
