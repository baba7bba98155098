// Package engine holds the rules of Sync, written once over chorus.Store:
// validation and limits, unique names, revisions and If-Match, per-object
// event ids allocated in the writing transaction, TTLs and the sweeper that
// enforces them, ACLs, paging, and publishing committed events on the
// chorus.Bus. REST v1, the realtime gateway and the admin console all call
// the engine; none of them talks to the store directly for writes.
// Permission and service changes are announced on the Bus after commit
// as control events (chorus.EventType.Control), which gateways use to
// re-check live subscriptions; they are neither logged nor observed.
//
// The engine caches credentials and services in memory (cache.go): every
// change drops the cache on the node that made it, a control event drops
// it on the others, and Resync drops it all when the Bus may have lost
// events.
//
// An Engine is safe for concurrent use; its caches are guarded by their
// own locks.
package engine
