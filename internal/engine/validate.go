package engine

import (
	"bytes"
	"encoding/json"
	"math"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/chorus-sync/chorus"
)

// validData checks a JSON object payload and returns it compacted. Data
// must be a JSON object of at most max bytes once compacted; null is
// nullErr (e.g. 54101 for documents), anything else not an object is
// invalid JSON for Sync (54008).
func validData(raw json.RawMessage, max int, nullErr *chorus.Error) (json.RawMessage, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) > 6*max { // one byte escaped as \u00XX: twilio-go's '<', twilio-python's non-ASCII
		return nil, chorus.Errorf(chorus.ErrTooLarge, "Request entity too large: data exceeds %d bytes", max)
	}
	compacted, ok := chorus.CompactJSON(trimmed)
	if !ok {
		return nil, chorus.Errorf(chorus.ErrInvalidJSON, "Invalid JSON: data is not valid JSON")
	}
	if bytes.Equal(trimmed, []byte("null")) {
		return nil, nullErr
	}
	if trimmed[0] != '{' {
		return nil, chorus.Errorf(chorus.ErrInvalidJSON, "Invalid JSON: data must be a JSON object")
	}
	canonical, err := canonicalJSON(compacted)
	if err != nil {
		return nil, err
	}
	if len(canonical) > max {
		return nil, chorus.Errorf(chorus.ErrTooLarge, "Request entity too large: data is %d bytes, the limit is %d", len(canonical), max)
	}
	return canonical, nil
}

// MaxDataDepth is how deeply data may nest objects and arrays. Every
// client parses data recursively: twilio-python's json.loads fails at
// about 1,000 levels, in the middle of a page of otherwise good objects.
const MaxDataDepth = 256

// canonicalJSON returns valid, compacted JSON b as it is stored: with
// \uXXXX escapes of characters that need none written as UTF-8, so that
// the size limit and the stored bytes are the same whichever library
// encoded the data (twilio-python's json.dumps escapes every non-ASCII
// character, six bytes for a CJK character's three, twelve for an emoji's
// four). It refuses what the clients could not read back: nesting deeper
// than MaxDataDepth, and numbers beyond a double's range (1e400 is
// Infinity in JavaScript and an error in Go). Escapes that JSON requires
// (quote, backslash, control characters) and lone surrogates are kept. b
// is returned as it is, without a copy, when it has nothing to rewrite.
func canonicalJSON(b []byte) ([]byte, error) {
	var out []byte // nil until the first rewrite
	depth := 0
	for i := 0; i < len(b); {
		switch c := b[i]; {
		case c == '{' || c == '[':
			if depth++; depth > MaxDataDepth {
				return nil, chorus.Errorf(chorus.ErrInvalidJSON, "Invalid JSON: data is nested deeper than %d levels", MaxDataDepth)
			}
		case c == '}' || c == ']':
			depth--
		case c == '-' || ('0' <= c && c <= '9'):
			j := i
			for j < len(b) && numberByte[b[j]] {
				j++
			}
			if num := b[i:j]; bytes.ContainsAny(num, "eE") || len(num) > 300 {
				if f, err := strconv.ParseFloat(string(num), 64); err != nil && math.IsInf(f, 0) {
					return nil, chorus.Errorf(chorus.ErrInvalidJSON, "Invalid JSON: the number %.40s is beyond the range of a double", num)
				}
			}
			if out != nil {
				out = append(out, b[i:j]...)
			}
			i = j
			continue
		case c == '"':
			i = canonicalString(b, i, &out)
			continue
		}
		if out != nil {
			out = append(out, b[i])
		}
		i++
	}
	if out == nil {
		return b, nil
	}
	return out, nil
}

// numberByte marks the bytes a JSON number is made of.
var numberByte = func() (t [256]bool) {
	for _, c := range "+-.eE0123456789" {
		t[c] = true
	}
	return t
}()

// canonicalString copies the string that starts at b[i] (a quote) to *out,
// decoding the escapes it need not keep; *out is started (with b[:i]) at
// the first such escape. It returns the index after the closing quote.
func canonicalString(b []byte, i int, out *[]byte) int {
	emit := func(p []byte) {
		if *out != nil {
			*out = append(*out, p...)
		}
	}
	emit(b[i : i+1])
	i++
	for b[i] != '"' {
		if b[i] != '\\' {
			j := i
			for b[j] != '"' && b[j] != '\\' {
				j++
			}
			emit(b[i:j])
			i = j
			continue
		}
		if b[i+1] != 'u' {
			emit(b[i : i+2])
			i += 2
			continue
		}
		r, n := decodeEscape(b[i:])
		if r < 0 {
			emit(b[i : i+6]) // kept: required, or a lone surrogate
			i += 6
			continue
		}
		if *out == nil {
			*out = append(make([]byte, 0, len(b)), b[:i]...)
		}
		*out = utf8.AppendRune(*out, r)
		i += n
	}
	emit(b[i : i+1])
	return i + 1
}

// decodeEscape decodes the \uXXXX escape (or surrogate pair of them) at
// the start of e into the character and the bytes it spans, or returns
// r < 0 for one that must stay: a quote, a backslash, a control character,
// a lone surrogate.
func decodeEscape(e []byte) (r rune, n int) {
	r = hex4(e[2:6])
	switch {
	case r < 0x20 || r == '"' || r == '\\':
		return -1, 6
	case utf16.IsSurrogate(r):
		if r >= 0xdc00 || len(e) < 12 || e[6] != '\\' || e[7] != 'u' {
			return -1, 6
		}
		lo := hex4(e[8:12])
		if pair := utf16.DecodeRune(r, lo); pair != utf8.RuneError {
			return pair, 12
		}
		return -1, 6
	}
	return r, 6
}

// hex4 decodes four hex digits (valid JSON guarantees them).
func hex4(h []byte) rune {
	var r rune
	for _, c := range h[:4] {
		r <<= 4
		switch {
		case c <= '9':
			r |= rune(c - '0')
		case c >= 'a':
			r |= rune(c - 'a' + 10)
		default:
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// validText reports a string that every store can hold in a text column:
// valid UTF-8 without NUL (PostgreSQL rejects both). Names, keys,
// identities and friendly names must be validText; lookups by an invalid
// name are refused the same way, so SQLite and PostgreSQL answer alike.
func validText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// hasNULEscape reports a \u0000 escape in valid JSON text b (outside
// strings JSON has no backslashes, so every backslash starts an escape).
func hasNULEscape(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			continue
		}
		if b[i+1] == 'u' && i+6 <= len(b) && string(b[i+2:i+6]) == "0000" {
			return true
		}
		i++ // skip the escaped character
	}
	return false
}

func validTTL(ttl *int) error {
	if ttl != nil && (*ttl < 0 || *ttl > chorus.MaxTTL) {
		return chorus.Errorf(chorus.ErrInvalidTTL, "Invalid TTL %d: expected an integer from 0 to %d", *ttl, chorus.MaxTTL)
	}
	return nil
}

func validUniqueName(name string) error {
	n := utf8.RuneCountInString(name)
	if n < 1 || n > chorus.MaxUniqueNameLen || chorus.LooksLikeSID(name) || !validText(name) {
		return chorus.ErrUniqueNameInvalid
	}
	return nil
}

func validKey(key string) error {
	n := utf8.RuneCountInString(key)
	if n < 1 || n > chorus.MaxKeyLen || !validText(key) {
		return chorus.ErrMapItemKey
	}
	return nil
}

func validIdentity(id string) error {
	if !chorus.ValidIdentity(id) {
		return chorus.ErrIdentityInvalid
	}
	return nil
}

func (e *Engine) validServiceParams(p ServiceParams) error {
	if p.FriendlyName != nil && (utf8.RuneCountInString(*p.FriendlyName) > 64 || !validText(*p.FriendlyName)) {
		return chorus.Errorf(chorus.ErrInvalidFriendly, "Invalid friendly name: at most 64 characters of valid UTF-8 without NUL")
	}
	if p.WebhookURL != nil && *p.WebhookURL != "" {
		u, err := url.Parse(*p.WebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(*p.WebhookURL) > 2048 || !validText(*p.WebhookURL) {
			return chorus.Errorf(chorus.ErrInvalidWebhookURL, "Invalid webhook URL: expected an absolute http(s) URL of at most 2048 characters")
		}
		if e.cfg.CheckWebhookURL != nil {
			if err := e.cfg.CheckWebhookURL(*p.WebhookURL); err != nil {
				return err
			}
		}
	}
	if w := p.ReachabilityDebouncingWindow; w != nil && (*w < 1000 || *w > 30000) {
		return chorus.Errorf(chorus.ErrInvalidParameter, "Invalid ReachabilityDebouncingWindow %d: expected 1000 to 30000 milliseconds", *w)
	}
	if p.UniqueName != nil && *p.UniqueName != "" {
		if err := validUniqueName(*p.UniqueName); err != nil {
			return err
		}
	}
	return nil
}
