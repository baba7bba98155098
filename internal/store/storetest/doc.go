// Package storetest is the conformance suite of chorus.Store backends. A
// backend's test calls Run with a function that opens a fresh, empty store;
// Run exercises every ReadTx and Tx method through the chorus.Store
// interface only, so all backends are held to the same behaviour.
//
// Concurrency: Run's subtests open their own stores and may be run in
// parallel with other tests; some subtests call Update from many
// goroutines at once to check group commit and serializable
// read-modify-write. Functions passed to Update never call t.Fatal (which
// would exit the backend's writer goroutine): they return errors instead.
package storetest
