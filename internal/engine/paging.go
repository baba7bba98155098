package engine

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/chorus-sync/chorus"
)

// Page tokens are opaque to clients: "PT" and base64url JSON, as Twilio's
// look.
const tokenPrefix = "PT"

func encodeToken(v any) string {
	b, _ := json.Marshal(v)
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(tok string, v any) error {
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	if !ok {
		return chorus.ErrInvalidPageToken
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return chorus.Wrap(chorus.ErrInvalidPageToken, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return chorus.Wrap(chorus.ErrInvalidPageToken, err)
	}
	if hasNULEscape(b) { // a forged token; its key or identity would reach the store
		return chorus.ErrInvalidPageToken
	}
	return nil
}

func pageSize(n int) (int, error) {
	switch {
	case n == 0:
		return chorus.DefaultPageSize, nil
	case n < 1 || n > chorus.MaxPageSize:
		return 0, chorus.ErrInvalidPageSize
	}
	return n, nil
}

// Every token names the listing it pages (K, its scope: "services", a
// kind's prefix and the service SID, an object SID…), and a token shown
// to another listing is refused (54453) rather than read as a position in
// it. Tokens written before K existed have none and are taken anywhere.

// inScope reports whether a token of scope k may page the listing scope.
func inScope(k, scope string) bool { return k == "" || k == scope }

// cursorToken is a position in a (DateCreated, SID) ordering: the rows
// after it, or, when B, the rows before it ("the page before the page that
// starts here"). With B and S "" it is the end: the last rows. Tokens
// written before B existed decode as forward tokens.
type cursorToken struct {
	T int64  `json:"t"`
	S string `json:"s"`
	B bool   `json:"b,omitempty"`
	K string `json:"k,omitempty"`
}

// pageStart decodes a (DateCreated, SID) page request of the listing
// scope: the page size, the position and whether the page lies before it.
func pageStart(p PageRequest, scope string) (size int, after chorus.Cursor, backward bool, err error) {
	size, err = pageSize(p.PageSize)
	if err != nil || p.Token == "" {
		return size, chorus.Cursor{}, false, err
	}
	var t cursorToken
	if err := decodeToken(p.Token, &t); err != nil {
		return 0, chorus.Cursor{}, false, err
	}
	switch {
	case !inScope(t.K, scope):
		return 0, chorus.Cursor{}, false, chorus.Errorf(chorus.ErrInvalidPageToken, "Invalid PageToken: it pages another listing")
	case t.S != "":
		after = chorus.Cursor{DateCreated: time.Unix(0, t.T).UTC(), SID: t.S}
	case !t.B || t.T != 0:
		return 0, chorus.Cursor{}, false, chorus.ErrInvalidPageToken
	}
	return size, after, t.B, nil
}

// cursorTokens returns the token encoder of the listing scope.
func cursorTokens(scope string) func(c chorus.Cursor, backward bool) string {
	return func(c chorus.Cursor, backward bool) string {
		if c == (chorus.Cursor{}) {
			return encodeToken(cursorToken{B: backward, K: scope})
		}
		return encodeToken(cursorToken{T: c.DateCreated.UnixNano(), S: c.SID, B: backward, K: scope})
	}
}

// identityToken pages permissions by identity: the identities after I, or,
// when B, those before I (with I "", the last ones).
type identityToken struct {
	I string `json:"i"`
	B bool   `json:"b,omitempty"`
	K string `json:"k,omitempty"`
}

// identityTokens returns the token encoder of the permissions of an object.
func identityTokens(objectSID string) func(identity string, backward bool) string {
	return func(identity string, backward bool) string {
		return encodeToken(identityToken{I: identity, B: backward, K: objectSID})
	}
}

// keyset reads one page of a keyset ordering (ascending by K) whose zero K
// is the start going forward and the end going backward.
type keyset[T any, K comparable] struct {
	// fetch returns at most limit rows strictly after after in ascending
	// order, or, when backward, strictly before it in descending order;
	// fewer than limit only at the end.
	fetch func(after K, backward bool, limit int) ([]T, error)
	key   func(T) K
	token func(k K, backward bool) string
}

// page reads the size rows after the position (or, when backward, before
// it) in ascending order. NextToken is set when rows follow the page,
// PrevToken when rows precede a page that is not the first: a page reached
// with a token (fromToken) or backwards. PrevToken means "the size rows
// before my first row"; following it gives that page in ascending order
// with its own NextToken and PrevToken.
func (ks keyset[T, K]) page(size int, after K, backward, fromToken bool) (Page[T], error) {
	var zero K
	p := Page[T]{PageSize: size}
	rows, err := ks.fetch(after, backward, size+1)
	if err != nil {
		return p, err
	}
	more := len(rows) > size
	if more {
		rows = rows[:size]
	}
	if backward {
		slices.Reverse(rows)
	}
	p.Items = rows
	if len(rows) == 0 {
		if !backward && fromToken {
			// Nothing after the position (rows there went away): every
			// row lies before it, so the previous page is the last one.
			if ok, err := ks.any(zero, true); err != nil || !ok {
				return p, err
			}
			p.PrevToken = ks.token(zero, true)
		}
		return p, nil
	}
	first, last := ks.key(rows[0]), ks.key(rows[len(rows)-1])
	if backward {
		if more {
			p.PrevToken = ks.token(first, true)
		}
		ok, err := ks.any(last, false)
		if err != nil {
			return p, err
		}
		if ok {
			p.NextToken = ks.token(last, false)
		}
		return p, nil
	}
	if more {
		p.NextToken = ks.token(last, false)
	}
	if fromToken {
		ok, err := ks.any(first, true)
		if err != nil {
			return p, err
		}
		if ok {
			p.PrevToken = ks.token(first, true)
		}
	}
	return p, nil
}

// any reports whether a row lies after (or, when backward, before) k.
func (ks keyset[T, K]) any(k K, backward bool) (bool, error) {
	rows, err := ks.fetch(k, backward, 1)
	return len(rows) > 0, err
}

// itemToken is a position in a list or map: the items after F in order O,
// or, when B, the items before F; F itself only when I. K is the object's
// SID, and R the Order, From and Bounds of the request that started the
// paging, which next_page_url repeats beside the token: a token sent with
// others is refused, not followed in its own order.
type itemToken struct {
	F string `json:"f"`
	O string `json:"o"`
	B bool   `json:"b,omitempty"`
	I bool   `json:"i,omitempty"`
	K string `json:"k,omitempty"`
	R string `json:"r,omitempty"`
}
