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
// own, and keep showing data that is gone. The renumbering moves every
// object's event ids (its own and its items', an item's revision) up,
// above any id the lost history can have reached: such a client is then
// behind, and is caught up from the current state (engine.Replay), as
// after an import. The event log keeps its ids: they stay below the
// objects', which is a gap replay handles.
//
// Ids count one per write to an object (engine: LastEventID++), so each
// object is rebased on its own: its lowest id (of itself and its items)
// becomes RenumberPerMilli times the time in milliseconds, its others
// keep their distance from it, and all land above its highest id. An
// object that was never restored holds ids far below that (fewer writes
// than a thousand per millisecond of the clock since 1970, or an import's
// base, its time in milliseconds); one restored at t holds 1,000·t plus
// its writes since, so restoring an older backup soon after a newer one is
// covered too (up to a thousand writes to the object per millisecond
// between the two restores; a factor of 2 was 9,400 writes short after
// 4.6 s). Rebased rather than moved by a sum, ids do not grow with the
// number of restores: they stay near 1,000 times the clock, below what the
// SDKs read exactly (2⁵³, 9 × 10¹⁵) until the year 2255; RenumberCheck
// refuses a rebase that would pass it.

// RenumberPerMilli is how many ids a millisecond of the clock is worth in
// the ids a restore gives.
const RenumberPerMilli = 1000

// RenumberBase is the lowest id of every object after a restore at now.
func RenumberBase(now time.Time) int64 { return RenumberPerMilli * now.UnixMilli() }

// RenumberStatements rebase every object's ids at the base, their one
// parameter, written param (the backend's placeholder: ? or $1), with
// greatest its two-argument maximum (MAX in SQLite, GREATEST in
// PostgreSQL). The first creates renumber_shift (one row per object: how
// far it moves), the last drops it; RenumberMaxQuery, run before the
// updates, reads the highest id they would give.
func RenumberStatements(param, greatest string) []string {
	return []string{
		`CREATE TEMP TABLE renumber_shift (object_sid TEXT PRIMARY KEY, shift BIGINT NOT NULL)`,
		`INSERT INTO renumber_shift (object_sid, shift)
		SELECT o.sid, ` + greatest + `(` + param + ` - l.lo, o.last_event_id - l.lo + 1)
		FROM objects o JOIN (
			SELECT object_sid, MIN(m) AS lo FROM (
				SELECT sid AS object_sid, last_event_id AS m FROM objects
				UNION ALL SELECT object_sid, last_event_id FROM items) AS ids
			GROUP BY object_sid) AS l ON l.object_sid = o.sid`,
		`UPDATE objects SET last_event_id = last_event_id + (SELECT s.shift FROM renumber_shift s WHERE s.object_sid = objects.sid)`,
		`UPDATE items SET last_event_id = last_event_id + (SELECT s.shift FROM renumber_shift s WHERE s.object_sid = items.object_sid)`,
		`DROP TABLE renumber_shift`,
	}
}

// Renumber rebases every object's event ids at base in a backend's
// transaction: exec runs a statement, queryInt reads a number. param and
// greatest are RenumberStatements'. It refuses (before any update) a
// rebase past MaxEventID.
func Renumber(base int64, param, greatest string, exec func(q string, args ...any) error, queryInt func(q string) (int64, error)) error {
	for i, q := range RenumberStatements(param, greatest) {
		if i == 2 { // the shifts are known: check where they lead
			maxID, err := queryInt(RenumberMaxQuery)
			if err != nil {
				return err
			}
			if err := RenumberCheck(maxID); err != nil {
				return err
			}
		}
		var args []any
		if i == 1 {
			args = append(args, base)
		}
		if err := exec(q, args...); err != nil {
			return err
		}
	}
	return nil
}

// RenumberMaxQuery reads the highest id the rebase gives (0 for a store
// without objects); run it after RenumberStatements' first two.
const RenumberMaxQuery = `SELECT COALESCE(MAX(o.last_event_id + s.shift), 0)
	FROM objects o JOIN renumber_shift s ON s.object_sid = o.sid`

// MaxEventID is the highest event id the SDKs read exactly (2⁵³ − 1: they
// parse ids as JavaScript numbers).
const MaxEventID = 1<<53 - 1

// RenumberCheck refuses a rebase whose highest id, maxID, would pass
// MaxEventID.
func RenumberCheck(maxID int64) error {
	if maxID > MaxEventID {
		return fmt.Errorf("the highest event id would be %d, past 2^53, beyond what the SDKs read exactly", maxID)
	}
	return nil
}
