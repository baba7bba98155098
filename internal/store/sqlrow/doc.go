// Package sqlrow is what the SQL store backends (sqlite, postgres) share
// below their SQL text: the column lists of the chorus tables in the order
// their Scan functions expect, scanning a row into a chorus value, the time
// encoding (UTC unix nanoseconds, the zero time as math.MinInt64), bind
// values for nullable columns, and the event body codec, which stores an
// event's Data and ItemData verbatim beside a JSON body of the rest.
//
// Scan functions take any Scanner: a *sql.Row or *sql.Rows of database/sql
// (SQLite: INTEGER, TEXT, BLOB) or a pgx.Row or pgx.Rows (PostgreSQL:
// BIGINT, TEXT, BYTEA, BOOLEAN). They scan into targets both accept: int64,
// string, bool, []byte, sql.NullString and sql.NullInt64. Bind helpers
// return any: nil (SQL NULL) or an int64, string or []byte.
//
// Everything here is stateless and safe for concurrent use. A Scanner or
// Rows is used only by the goroutine that calls; each call returns fresh
// values that share no memory with the row (the drivers copy []byte
// targets).
package sqlrow
