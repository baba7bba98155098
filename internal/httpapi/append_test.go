package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
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

var datas = []json.RawMessage{nil, json.RawMessage(`{}`), json.RawMessage(`{"a":1,"b":[true,false,null],"c":{"d":"e\"\\\u2028<>&"}}`),
	json.RawMessage(`{"n":-1.5e+10,"s":"日本","u":"\ud83c\udf89"}`)}

// streamMessageJSON is sync.v1.service.sync_stream.stream_message, the
// shape streamMessageView writes.
type streamMessageJSON struct {
	SID  string          `json:"sid"`
	Data json.RawMessage `json:"data"`
}

func pickTime(r *rand.Rand) time.Time {
	t := time.Unix(r.Int64N(1<<34), r.Int64N(1e9))
	if r.IntN(2) == 0 {
		return t.In(time.FixedZone("", (r.IntN(48)-24)*1800))
	}
	return t
}

func pickTimePtr(r *rand.Rand) *time.Time {
	if r.IntN(3) == 0 {
		return nil
	}
	t := pickTime(r)
	return &t
}

var kinds = []chorus.Kind{chorus.KindDocument, chorus.KindList, chorus.KindMap, chorus.KindStream}

// TestViewsMatchRender: what the handlers write for an object, an item and
// a stream message is what encoding/json writes for renderObject's,
// renderItem's and streamMessageJSON's structs (HTML escaping off, as
// twiliohttp.WriteJSON encodes), for random resources whose strings need
// escaping, in the URL's base and path segments too.
func TestViewsMatchRender(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		base := "http://127.0.0.1:3000"
		if r.IntN(2) == 0 {
			base = pick(r)
		}
		svc := &chorus.Service{SID: pick(r), AccountSID: pick(r)}
		o := &chorus.Object{Kind: kinds[r.IntN(len(kinds))], SID: pick(r), UniqueName: pick(r), Revision: r.Int64N(1 << 40),
			Data: datas[r.IntN(len(datas))], DateCreated: pickTime(r), DateUpdated: pickTime(r), DateExpires: pickTimePtr(r),
			CreatedBy: pick(r)}
		if r.IntN(2) == 0 { // else the service's
			o.ServiceSID, o.AccountSID = pick(r), pick(r)
		}
		checkView(t, objectView{base, svc, o}, renderObject(base, svc, o))
		it := &chorus.Item{Kind: kinds[1+r.IntN(2)], ObjectSID: pick(r), Index: r.Int64N(1 << 40), Key: pick(r),
			Revision: r.Int64N(1 << 40), Data: datas[r.IntN(len(datas))], DateCreated: pickTime(r), DateUpdated: pickTime(r),
			DateExpires: pickTimePtr(r), CreatedBy: pick(r)}
		checkView(t, itemView{base, svc, it}, renderItem(base, svc, it))
		m := &chorus.StreamMessage{SID: pick(r), Data: datas[r.IntN(len(datas))]}
		checkView(t, streamMessageView{m}, streamMessageJSON{SID: m.SID, Data: m.Data})
	}
}

// checkView compares v's AppendJSON with encoding/json's encoding of want:
// same keys in the same order, same values.
func checkView(t *testing.T, v twiliohttp.Appender, want any) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(want); err != nil {
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
	if g, w := tokens(t, got), tokens(t, buf.Bytes()); !reflect.DeepEqual(g, w) {
		t.Fatalf("%T:\n got %s\nwant %s", v, got, buf.Bytes())
	}
	// Tokens hide how strings are escaped (invalid UTF-8 decodes to
	// U+FFFD either way), so compare the bytes too: the same but for the
	// short escapes \b and \f, which protocol.AppendJSONString writes as
	// \u0008 and \u000c.
	if want := longEscapes(bytes.TrimSuffix(buf.Bytes(), []byte("\n"))); !bytes.Equal(got, want) {
		t.Fatalf("%T:\n got %q\nwant %q", v, got, want)
	}
}

// longEscapes rewrites the \b and \f escapes of JSON text b as \u0008
// and \u000c.
func longEscapes(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 == len(b) {
			out = append(out, b[i])
			continue
		}
		i++
		switch b[i] {
		case 'b':
			out = append(out, `\u0008`...)
		case 'f':
			out = append(out, `\u000c`...)
		default:
			out = append(out, '\\', b[i])
		}
	}
	return out
}

// TestViewsMatchListings: through the server, the answer to a write (a
// view) is the resource as its listing shows it (the render structs,
// encoded by reflection), for names, keys and data that need escaping.
func TestViewsMatchListings(t *testing.T) {
	f := newFixture(t)
	svc := "/v1/Services/" + f.svc
	for _, c := range []struct {
		create  string
		form    url.Values
		list    string
		listKey string
	}{
		{svc + "/Documents", url.Values{"UniqueName": {"v<&>\"é\u2028"}, "Data": {`{ "a" : "\u003c", "b": [1, 2.50] }`}}, svc + "/Documents", "documents"},
		{svc + "/Maps", url.Values{"UniqueName": {"m"}}, svc + "/Maps", "maps"},
		{svc + "/Maps/m/Items", url.Values{"Key": {"k/ é\"%"}, "Data": {`{"x":[1, 2]}`}}, svc + "/Maps/m/Items", "items"},
		{svc + "/Lists", url.Values{"UniqueName": {"l"}}, svc + "/Lists", "lists"},
		{svc + "/Lists/l/Items", url.Values{"Data": {`{"y":null}`}}, svc + "/Lists/l/Items", "items"},
		{svc + "/Streams", url.Values{"UniqueName": {"s"}}, svc + "/Streams", "streams"},
	} {
		resp, body := f.do(http.MethodPost, c.create, c.form, nil)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST %s = %d %s", c.create, resp.StatusCode, body)
		}
		if got, want := resp.Header.Get("Content-Length"), strconv.Itoa(len(body)); got != want {
			t.Errorf("POST %s: Content-Length %s, body %s bytes", c.create, got, want)
		}
		resp, page := f.do(http.MethodGet, c.list, nil, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d %s", c.list, resp.StatusCode, page)
		}
		var listing map[string]json.RawMessage
		if err := json.Unmarshal(page, &listing); err != nil {
			t.Fatal(err)
		}
		var entries []json.RawMessage
		if err := json.Unmarshal(listing[c.listKey], &entries); err != nil {
			t.Fatalf("GET %s: %v: %s", c.list, err, page)
		}
		if len(entries) != 1 {
			t.Fatalf("GET %s: %d %s, want 1: %s", c.list, len(entries), c.listKey, page)
		}
		if got, want := tokens(t, body), tokens(t, entries[0]); !reflect.DeepEqual(got, want) {
			t.Errorf("POST %s answered\n%s\nits listing shows\n%s", c.create, body, entries[0])
		}
	}
}
