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

// TestCanonicalData: data is measured and stored the same whichever
// library encoded it. twilio-python's json.dumps escapes every non-ASCII
// character, so the same CJK text was twice as large from Python as from
// Node and was refused past 8 KB; numbers beyond a double and absurd
// nesting were stored, and then failed every twilio-go and twilio-python
// listing of their service.
func TestCanonicalData(t *testing.T) {
	deep := func(n int) string { return strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n) }
	for _, tc := range []struct {
		in   string
		want string // stored; "" when refused
		code int
	}{
		{`{"t": "\u65e5\u672c"}`, `{"t":"日本"}`, 0},
		{`{"\u00e9": "\u00E9"}`, `{"é":"é"}`, 0},
		{`{"e":"\ud83d\ude00!"}`, `{"e":"😀!"}`, 0},
		// Escapes JSON needs, and lone surrogates, stay as they came.
		{`{"k":"\u0000\u001f\u0022\u005c\n\"\\\/"}`, `{"k":"\u0000\u001f\u0022\u005c\n\"\\\/"}`, 0},
		{`{"k":"\ud83d","l":"\ude00x","m":"\ud83d\u0041"}`, `{"k":"\ud83d","l":"\ude00x","m":"\ud83dA"}`, 0},
		{`{"n":[1e308,-1.5E-3,1e-400,12345678901234567890]}`, `{"n":[1e308,-1.5E-3,1e-400,12345678901234567890]}`, 0},
		{`{"n":1e400}`, "", chorus.ErrInvalidJSON.Code},
		{`{"n":[-2E+309]}`, "", chorus.ErrInvalidJSON.Code},
		{`{"n":1` + strings.Repeat("0", 400) + `}`, "", chorus.ErrInvalidJSON.Code},
		{deep(MaxDataDepth), deep(MaxDataDepth), 0},
		{deep(MaxDataDepth + 1), "", chorus.ErrInvalidJSON.Code},
		{`{"a":` + strings.Repeat("[", MaxDataDepth) + strings.Repeat("]", MaxDataDepth) + `}`, "", chorus.ErrInvalidJSON.Code},
	} {
		got, err := validData(json.RawMessage(tc.in), chorus.MaxDataBytes, chorus.ErrDocumentData)
		if code := chorus.ErrorCode(err); code != tc.code || string(got) != tc.want {
			t.Errorf("validData(%.80q) = %.80q, code %d; want %.80q, code %d (%v)", tc.in, got, code, tc.want, tc.code, err)
		}
	}

	// The limit applies to the canonical form: 9,011 bytes of CJK text
	// that json.dumps writes in 18,011.
	text := strings.Repeat("日本語", 1000)
	escaped := `{"text": "` + strings.Repeat(`\u65e5\u672c\u8a9e`, 1000) + `"}`
	got, err := validData(json.RawMessage(escaped), chorus.MaxDataBytes, chorus.ErrDocumentData)
	if want := `{"text":"` + text + `"}`; err != nil || string(got) != want {
		t.Errorf("escaped CJK: %d bytes, %v; want the %d bytes of UTF-8", len(got), err, len(want))
	}
}

// BenchmarkValidData: the check every write of data makes.
func BenchmarkValidData(b *testing.B) {
	for _, bc := range []struct{ name, data string }{
		{"ascii", `{"name":"alice","score":1234,"tags":["a","b","c"],"nested":{"x":1.5e3,"y":null,"z":true}}`},
		{"escaped", `{"text": "` + strings.Repeat(`\u65e5\u672c\u8a9e`, 100) + `"}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			raw := json.RawMessage(bc.data)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := validData(raw, chorus.MaxDataBytes, chorus.ErrDocumentData); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
