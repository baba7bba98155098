package sqlrow

import "time"

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

// RenumberStatements shift the ids by their one parameter.
var RenumberStatements = []string{
	`UPDATE objects SET last_event_id = last_event_id + %s`,
	`UPDATE items SET last_event_id = last_event_id + %s`,
}

// RenumberShift is how far a restore at now moves the event ids of a store
// whose highest is maxID: past maxID, so that no shifted id meets an
// unshifted one, and past twice the time in milliseconds. The lost history
// went on from the backup one id per write, or from an import's base (its
// time in milliseconds, before now): fewer than now-in-milliseconds
// writes (1.8 × 10¹² in 2026) cannot reach the shifted ids. Ids stay
// exact in JavaScript's numbers (below 2⁵³, 9 × 10¹⁵) for some two
// thousand restores.
func RenumberShift(maxID int64, now time.Time) int64 {
	return maxID + 2*now.UnixMilli() + 1
}
