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

// RenumberQuery reads the highest event id the store holds.
const RenumberQuery = `SELECT MAX(m) FROM (
	SELECT COALESCE(MAX(last_event_id), 0) AS m FROM objects
	UNION ALL SELECT COALESCE(MAX(last_event_id), 0) FROM items
	UNION ALL SELECT COALESCE(MAX(id), 0) FROM events) AS ids`

// RenumberStatements shift the ids by their one parameter, written param
// (the backend's placeholder: ? or $1).
func RenumberStatements(param string) []string {
	return []string{
		`UPDATE objects SET last_event_id = last_event_id + ` + param,
		`UPDATE items SET last_event_id = last_event_id + ` + param,
	}
}

// RenumberShift is how far a restore at now moves the event ids: twice the
// time in milliseconds. The lost history went on from the backup one id
// per write, from an import's base (its time in milliseconds, before now),
// or from an earlier restore's shift (twice an earlier time): fewer than
// now-in-milliseconds writes to one object (1.8 × 10¹² in 2026) cannot
// reach the shifted ids. The shift does not depend on the ids held, so
// restores add up rather than compound: ids stay exact in JavaScript's
// numbers (below 2⁵³, 9 × 10¹⁵) for some two thousand restores, and
// RenumberCheck refuses a shift that would pass that.
func RenumberShift(now time.Time) int64 {
	return 2*now.UnixMilli() + 1
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
