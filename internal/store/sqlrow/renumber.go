package sqlrow

import (
	"fmt"
	"time"
)

// Renumbering after a restore.
//
// Sync clients resume a subscription from the last event id they saw, and
// apply only events with higher ids. A store restored from a backup hands
// out the ids it had then again, so a client that saw later events (lost
// with the restore) would ignore every new event until the ids passed its
// own, and keep showing data that is gone. RenumberQuery and
// RenumberStatements move every object's and item's event id (an item's
// revision) up by RenumberShift, above any id the lost history can have
// reached: such a client is then behind, and is caught up from the
// current state (engine.Replay), as after an import. The event log keeps
// its ids: they stay below the objects', which is a gap replay handles.

// RenumberQuery reads the lowest event id of the objects and items (0
// if none) and the highest event id the store holds, the log included.
const RenumberQuery = `SELECT
	(SELECT COALESCE(MIN(m), 0) FROM (
		SELECT MIN(last_event_id) AS m FROM objects WHERE last_event_id > 0
		UNION ALL SELECT MIN(last_event_id) FROM items WHERE last_event_id > 0) AS lows),
	(SELECT MAX(m) FROM (
		SELECT COALESCE(MAX(last_event_id), 0) AS m FROM objects
		UNION ALL SELECT COALESCE(MAX(last_event_id), 0) FROM items
		UNION ALL SELECT COALESCE(MAX(id), 0) FROM events) AS highs)`

// RenumberStatements shift the ids by their one parameter, written param
// (the backend's placeholder: ? or $1).
func RenumberStatements(param string) []string {
	return []string{
		`UPDATE objects SET last_event_id = last_event_id + ` + param,
		`UPDATE items SET last_event_id = last_event_id + ` + param,
	}
}

// RenumberPerMilli is how many ids a millisecond of time is worth in a
// restore's ids (RenumberShift).
const RenumberPerMilli = 1000

// RenumberShift is how far a restore at now moves the event ids of a
// store whose objects' and items' ids span minID to maxID (the log's
// included in maxID): the lowest id becomes RenumberPerMilli times the
// time in milliseconds (1.8 × 10¹⁵ in 2026), and every id lands above
// every id the store held. Ids count one per write to an object, so the
// history a restore loses cannot reach that: a store that was never
// restored holds ids far below it (fewer writes to one object than a
// thousand per millisecond of the clock since 1970, or an import's base,
// its time in milliseconds), and one restored earlier, at t, holds
// 1,000·t plus the writes since. Restoring an older backup seconds after
// a newer one is covered too: the newer's objects may be ahead by up to a
// thousand writes per millisecond between the two restores (a factor of 2
// was 9,400 writes short after 4.6 s, and the SDK ignored the restored
// store). The shift sets the base rather than adding to the ids, so
// restores do not add up: ids stay near 1,000 times the clock, below what
// the SDKs read exactly (2⁵³, 9 × 10¹⁵) until the year 2255; RenumberCheck
// refuses a shift that would pass it.
func RenumberShift(now time.Time, minID, maxID int64) int64 {
	base := RenumberPerMilli*now.UnixMilli() - minID
	return max(base, maxID-minID+1, 1)
}

// MaxEventID is the highest event id the SDKs read exactly (2⁵³ − 1: they
// parse ids as JavaScript numbers).
const MaxEventID = 1<<53 - 1

// RenumberCheck refuses a shift that would take the store's highest id,
// maxID, past MaxEventID.
func RenumberCheck(maxID, shift int64) error {
	if maxID > MaxEventID-shift {
		return fmt.Errorf("renumber events: the highest event id %d moved up by %d would pass 2^53, beyond what the SDKs read exactly", maxID, shift)
	}
	return nil
}
