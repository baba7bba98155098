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
// longer has are removed. A list's or map's items are compared and copied
// a page at a time on both sides, never held whole (items.go); what
// differs waits in a spool (Options.TempDir) until every page of the
// source was read and checked, so that an invalid source is refused before
// anything of the object is written. Event ids of what the import writes
// start above EventBase (by default the import's start time in
// milliseconds), so a client that resumes with an event id it got from the
// source is always behind the target and is caught up from current state
// (see README).
//
// # Concurrency
//
// A Source is safe for concurrent use; Importer.Run copies up to
// Options.Concurrency objects at once, each in its own Store.Update calls,
// and calls Options.Progress from one goroutine at a time. An Importer runs
// once.
package transfer
