// Package transfer copies Sync data into a chorus.Store: `chorus import`
// reads a whole account, or selected services, from any server that speaks
// the Sync REST API v1 (Twilio itself, or another Chorus) and writes it
// through a narrow path that keeps what the source shows: SIDs, unique and
// friendly names, service settings, data, revisions, dates, created_by,
// TTL expiry, list indexes, map keys and permissions.
//
// The copy is idempotent and resumable: every object is compared with what
// the target already holds and only differences are written, an object's
// row is written last (a new list or map is first inserted with a marker
// date_updated, so an interrupted copy is redone), and items the source no
// longer has are removed. Event ids of what the import writes start above
// EventBase (by default the import's start time in milliseconds), so a
// client that resumes with an event id it got from the source is always
// behind the target and is caught up from current state (see README).
//
// # Concurrency
//
// A Source is safe for concurrent use; Importer.Run copies up to
// Options.Concurrency objects at once, each in its own Store.Update calls,
// and calls Options.Progress from one goroutine at a time. An Importer runs
// once.
package transfer
