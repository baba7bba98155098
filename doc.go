// Package chorus is the domain vocabulary of Chorus, a self-hosted real-time
// state-sync service that is wire-compatible with Twilio Sync: SIDs, the
// Sync resources (services, documents, lists, maps, streams, items,
// permissions), events, the Error type with its Twilio codes, and the Store
// and Bus interfaces that the adapters under internal/ implement.
//
// The package does no I/O. Its types are plain values; a value shared
// between goroutines must not be mutated.
package chorus
