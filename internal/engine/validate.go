package engine

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/chorus-sync/chorus"
)

// validData checks a JSON object payload and returns it compacted. Data
// must be a JSON object of at most max bytes once compacted; null is
// nullErr (e.g. 54101 for documents), anything else not an object is
// invalid JSON for Sync (54008).
func validData(raw json.RawMessage, max int, nullErr *chorus.Error) (json.RawMessage, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) > 4*max {
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
	if len(compacted) > max {
		return nil, chorus.Errorf(chorus.ErrTooLarge, "Request entity too large: data is %d bytes, the limit is %d", len(compacted), max)
	}
	return compacted, nil
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
