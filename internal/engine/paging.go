package engine

import (
	"encoding/base64"
	"encoding/json"
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

// cursorToken is the position after which a (DateCreated, SID) page
// starts.
type cursorToken struct {
	T int64  `json:"t"`
	S string `json:"s"`
}

func pageStart(p PageRequest) (int, chorus.Cursor, error) {
	size, err := pageSize(p.PageSize)
	if err != nil || p.Token == "" {
		return size, chorus.Cursor{}, err
	}
	var t cursorToken
	if err := decodeToken(p.Token, &t); err != nil {
		return 0, chorus.Cursor{}, err
	}
	if t.S == "" {
		return 0, chorus.Cursor{}, chorus.ErrInvalidPageToken
	}
	return size, chorus.Cursor{DateCreated: time.Unix(0, t.T).UTC(), SID: t.S}, nil
}

// cursorPage trims rows (fetched with limit size+1) to size and sets
// NextToken when there was more.
func cursorPage[T any](rows []T, size int, cursorOf func(T) chorus.Cursor) Page[T] {
	p := Page[T]{Items: rows, PageSize: size}
	if len(rows) > size {
		p.Items = rows[:size]
		c := cursorOf(rows[size-1])
		p.NextToken = encodeToken(cursorToken{T: c.DateCreated.UnixNano(), S: c.SID})
	}
	return p
}

// identityToken pages permissions by identity.
type identityToken struct {
	I string `json:"i"`
}

// itemToken is a position in a list or map: the items after F in order O,
// or, when B, the items before F; F itself only when I.
type itemToken struct {
	F string `json:"f"`
	O string `json:"o"`
	B bool   `json:"b,omitempty"`
	I bool   `json:"i,omitempty"`
}
