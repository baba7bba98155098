package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// tokens is the token stream of one JSON value: keys in order, numbers as
// written.
func tokens(t *testing.T, b []byte) []any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out []any
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("invalid JSON %q: %v", b, err)
		}
		out = append(out, tok)
	}
}

// checkAppender compares v's AppendJSON with encoding/json's encoding of
// the same struct (HTML escaping off, as twiliohttp.WriteJSON encodes):
// same keys in the same order, same values.
func checkAppender(t *testing.T, v twiliohttp.Appender) {
	t.Helper()
	var want bytes.Buffer
	enc := json.NewEncoder(&want)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	prefix := []byte("prefix")
	got := v.AppendJSON(bytes.Clone(prefix))
	if !bytes.HasPrefix(got, prefix) {
		t.Fatalf("AppendJSON lost dst: %q", got)
	}
	got = got[len(prefix):]
	if !json.Valid(got) {
		t.Fatalf("%T: invalid JSON %q", v, got)
	}
	if g, w := tokens(t, got), tokens(t, want.Bytes()); !reflect.DeepEqual(g, w) {
		t.Fatalf("%T:\n got %s\nwant %s", v, got, want.Bytes())
	}
}

// nasty are strings that JSON escaping gets wrong if anything does.
var nasty = []string{
	"", "plain", `quote " and \ backslash`, "ctl \x00\x01\x1f \b\f\n\r\t", "html <a href='x'>&amp;</a>",
	"line\u2028sep\u2029para", "invalid \xff\xfe utf-8 \xc3", "é 日本 🎉", "/v1/Services/IS1/Documents/a%2Fb",
}

func pick(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return nasty[r.IntN(len(nasty))]
	}
	var b strings.Builder
	for range r.IntN(12) {
		// A random piece of a nasty string (it may cut a UTF-8 sequence)
		// and a random rune.
		s := nasty[r.IntN(len(nasty))]
		i := r.IntN(len(s) + 1)
		b.WriteString(s[i : i+r.IntN(len(s)-i+1)])
		b.WriteRune(rune(r.IntN(0x3000)))
	}
	return b.String()
}

func pickPtr(r *rand.Rand) *string {
	if r.IntN(3) == 0 {
		return nil
	}
	s := pick(r)
	return &s
}

var datas = []json.RawMessage{nil, json.RawMessage(`{}`), json.RawMessage(`{"a":1,"b":[true,false,null],"c":{"d":"e\"\\\u2028<>&"}}`),
	json.RawMessage(`{"n":-1.5e+10,"s":"日本","u":"\ud83c\udf89"}`)}

// TestAppendersMatchEncodingJSON: every resource that renders itself
// writes what encoding/json writes for it, for random fields made of
// strings that need escaping.
func TestAppendersMatchEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		d := func() json.RawMessage { return datas[r.IntN(len(datas))] }
		checkAppender(t, documentJSON{SID: pick(r), UniqueName: pickPtr(r), AccountSID: pick(r), ServiceSID: pick(r), URL: pick(r),
			Links: documentLinks{Permissions: pick(r)}, Revision: pick(r), Data: d(), DateExpires: pickPtr(r),
			DateCreated: pick(r), DateUpdated: pick(r), CreatedBy: pick(r)})
		checkAppender(t, collectionJSON{SID: pick(r), UniqueName: pickPtr(r), AccountSID: pick(r), ServiceSID: pick(r), URL: pick(r),
			Links: collectionLinks{Items: pick(r), Permissions: pick(r)}, Revision: pick(r), DateExpires: pickPtr(r),
			DateCreated: pick(r), DateUpdated: pick(r), CreatedBy: pick(r)})
		checkAppender(t, streamJSON{SID: pick(r), UniqueName: pickPtr(r), AccountSID: pick(r), ServiceSID: pick(r), URL: pick(r),
			Links: streamLinks{Messages: pick(r)}, DateExpires: pickPtr(r), DateCreated: pick(r), DateUpdated: pick(r), CreatedBy: pick(r)})
		checkAppender(t, listItemJSON{Index: r.Int64N(1<<62) - 1<<61, AccountSID: pick(r), ServiceSID: pick(r), ListSID: pick(r), URL: pick(r),
			Revision: pick(r), Data: d(), DateExpires: pickPtr(r), DateCreated: pick(r), DateUpdated: pick(r), CreatedBy: pick(r)})
		checkAppender(t, mapItemJSON{Key: pick(r), AccountSID: pick(r), ServiceSID: pick(r), MapSID: pick(r), URL: pick(r),
			Revision: pick(r), Data: d(), DateExpires: pickPtr(r), DateCreated: pick(r), DateUpdated: pick(r), CreatedBy: pick(r)})
		checkAppender(t, streamMessageJSON{SID: pick(r), Data: d()})
	}
}

// TestRenderedResourcesAppend: what the handlers render for each kind goes
// through the appender (a renderer returning another type would fall back
// to reflection unnoticed), and matches encoding/json.
func TestRenderedResourcesAppend(t *testing.T) {
	svc := &chorus.Service{SID: "IS00000000000000000000000000000001", AccountSID: "AC00000000000000000000000000000001"}
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	var rendered []any
	for _, k := range []chorus.Kind{chorus.KindDocument, chorus.KindList, chorus.KindMap, chorus.KindStream} {
		o := &chorus.Object{Kind: k, SID: "XX1", UniqueName: "name \"<é>\"", ServiceSID: svc.SID, AccountSID: svc.AccountSID,
			Data: json.RawMessage(`{"a":"b"}`), DateCreated: now, DateUpdated: now, DateExpires: &now, CreatedBy: "alice\n"}
		rendered = append(rendered, renderObject("http://h", svc, o))
	}
	for _, k := range []chorus.Kind{chorus.KindList, chorus.KindMap} {
		it := &chorus.Item{Kind: k, ObjectSID: "XX1", Index: 3, Key: "k/ é", Data: json.RawMessage(`{"x":[1]}`), DateCreated: now, DateUpdated: now, CreatedBy: "bob"}
		rendered = append(rendered, renderItem("http://h", svc, it))
	}
	for _, v := range rendered {
		a, ok := v.(twiliohttp.Appender)
		if !ok {
			t.Fatalf("%T does not render itself", v)
		}
		checkAppender(t, a)
	}
}
