// Package livequery is the Live Query Language of Twilio Sync's
// liveQuery/instantQuery, evaluated over the items of a Sync Map: a parser
// that turns an expression such as
//
//	(data.status == "open" OR key IN ["a", "b"]) AND data.owner.name CONTAINS "li"
//
// into a Query, and Query.Match, which decides whether one item (its key
// and its decoded data) is in the result.
//
// The grammar is Twilio's: fields `key` and `data.a.b…` (path segments of
// letters in any script, digits, _, - and $); comparison
// operators eq/EQ/==, not_eq/NOT_EQ/!=, in/IN, not_in/NOT_IN,
// contains/CONTAINS; boolean operators and/AND/&&, or/OR/||, with AND
// binding tighter than OR, and parentheses; values are double-quoted JSON
// strings, or arrays of them for in/not_in. An expression holds fewer than
// MaxOperators operators (else chorus.ErrQueryOperators, 54509) and every
// array fewer than MaxArrayItems items (54510); anything else malformed is
// chorus.ErrInvalidQuery (54507).
//
// A field's value is compared as text: a JSON string as is, a number or a
// boolean as its JSON text, an array as each of its scalar elements (any
// of them may match); null, an object or a missing field has no value, so
// eq, in and contains are false for it and not_eq and not_in are true
// (not_eq is exactly NOT eq).
//
// # Concurrency
//
// The package is pure: no I/O, no globals that change. A parsed Query is
// immutable and safe for concurrent use by any number of goroutines.
package livequery
