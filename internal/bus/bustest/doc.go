// Package bustest is the conformance suite of chorus.Bus implementations:
// Run checks one bus (publish, subscribe, cancel, other objects, counts,
// byte-exact data, Ping, Close) and RunShared checks delivery between two
// buses of one cluster.
//
// The suite's subtests run sequentially; each opens fresh buses through
// the caller's open function and uses fresh object SIDs. Helpers are safe
// for concurrent use by the bus's delivery goroutines.
package bustest
