package engine

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/chorus-sync/chorus"
)

// TestValidData: one json.Compact pass both checks and compacts data.
func TestValidData(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // compacted; "" when refused
		code int
	}{
		{` { "a" : [ 1, 2 ] , "b":"x" } `, `{"a":[1,2],"b":"x"}`, 0},
		{`{"a":1} {"b":2}`, "", chorus.ErrInvalidJSON.Code},
		{`{"a":1}x`, "", chorus.ErrInvalidJSON.Code},
		{`{"a":`, "", chorus.ErrInvalidJSON.Code},
		{"{\"a\":\"\xff\"}", "", chorus.ErrInvalidJSON.Code},
		{``, "", chorus.ErrInvalidJSON.Code},
		{`[1]`, "", chorus.ErrInvalidJSON.Code},
		{`"s"`, "", chorus.ErrInvalidJSON.Code},
		{` null `, "", chorus.ErrDocumentData.Code},
		{`{"a":"` + strings.Repeat("x", 20) + `"}`, "", chorus.ErrTooLarge.Code},
		// Over max before compaction, within it after.
		{`{"a":` + strings.Repeat(" ", 30) + `1}`, `{"a":1}`, 0},
	} {
		got, err := validData(json.RawMessage(tc.in), 20, chorus.ErrDocumentData)
		if code := chorus.ErrorCode(err); code != tc.code || string(got) != tc.want {
			t.Errorf("validData(%q) = %q, code %d; want %q, code %d (%v)", tc.in, got, code, tc.want, tc.code, err)
		}
	}
}

// A webhook URL must be text: invalid UTF-8 (a multipart form carries it
// unchecked) was stored on SQLite and failed PostgreSQL's insert with a 500.
func TestValidServiceParamsWebhookText(t *testing.T) {
	e := &Engine{}
	for _, u := range []string{"https://example.com/\xff", "https://example.com/a\x00b"} {
		if err := e.validServiceParams(ServiceParams{WebhookURL: &u}); chorus.ErrorCode(err) != chorus.ErrInvalidWebhookURL.Code {
			t.Errorf("webhook URL %q: %v, want %d", u, err, chorus.ErrInvalidWebhookURL.Code)
		}
	}
	ok := "https://example.com/ü?a=b"
	if err := e.validServiceParams(ServiceParams{WebhookURL: &ok}); err != nil {
		t.Errorf("webhook URL %q: %v", ok, err)
	}
}
