package sqlrow

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

// marshalBody is what EncodeEvent stored before appendEventBody: the
// reference it must match byte for byte.
func marshalBody(e *chorus.Event) ([]byte, error) {
	meta := *e
	meta.Data, meta.ItemData = nil, nil
	return json.Marshal(&meta)
}

var bodyStrings = []string{"", "ET0123456789abcdef0123456789abcdef", "document_updated", "a b-c_d.e:f/g",
	`q"uote`, `back\slash`, "ctl\x00\x1f\n\t\b\f", "<html>&amp;", "\x7f del", "é 日本 🎉", "\u2028\u2029", "bad \xff utf-8 \xc3"}

func randString(r *rand.Rand) string {
	if r.IntN(2) == 0 {
		return bodyStrings[r.IntN(len(bodyStrings))]
	}
	var b strings.Builder
	for range r.IntN(4) {
		b.WriteString(bodyStrings[r.IntN(len(bodyStrings))])
	}
	return b.String()
}

func randTime(r *rand.Rand) time.Time {
	t := time.Unix(r.Int64N(1<<34), r.Int64N(1e9))
	switch r.IntN(5) {
	case 0:
		return t.UTC()
	case 1:
		return t.In(time.FixedZone("", (r.IntN(48)-24)*1800))
	case 2:
		return time.Time{}
	case 3:
		return time.Now() // a monotonic reading, which JSON drops
	}
	return t.Truncate(time.Second).UTC()
}

// TestEventBodyMatchesMarshal: the appended body is json.Marshal's, byte
// for byte, for random events whose strings need every kind of escaping.
func TestEventBodyMatchesMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		e := &chorus.Event{Type: chorus.EventType(randString(r)), ID: r.Int64N(1<<40) - 1<<39, AccountSID: randString(r),
			ServiceSID: randString(r), ObjectSID: randString(r), Kind: chorus.Kind(randString(r)), UniqueName: randString(r),
			Revision: randString(r), Data: json.RawMessage(`{"a":1}`), ItemKey: randString(r), ItemRevision: randString(r),
			ItemData: json.RawMessage(`{"b":2}`), MessageSID: randString(r), DateCreated: randTime(r),
			Identity: randString(r), EndpointID: randString(r), FromREST: r.IntN(2) == 0}
		if r.IntN(2) == 0 {
			e.ItemIndex = r.Int64N(1<<20) - 5
		}
		if r.IntN(2) == 0 {
			exp := randTime(r)
			e.DateExpires = &exp
		}
		want, err := marshalBody(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendEventBody(nil, e)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("appendEventBody = %s, %v\n          want %s", got, err, want)
		}
		body, _, _, err := EncodeEvent(e)
		if err != nil || body != string(want) {
			t.Fatalf("EncodeEvent body = %s, %v", body, err)
		}
	}
}

// TestEventBodyRefusesWhatMarshalRefuses: a time json.Marshal cannot
// write (year 10000) is an error, not a body.
func TestEventBodyRefusesWhatMarshalRefuses(t *testing.T) {
	far := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, e := range []*chorus.Event{{DateCreated: far}, {DateCreated: time.Now(), DateExpires: &far}} {
		if _, err := marshalBody(e); err == nil {
			t.Fatal("json.Marshal took year 10000")
		}
		if b, err := appendEventBody(nil, e); err == nil {
			t.Errorf("appendEventBody = %s, want an error", b)
		}
		if _, _, _, err := EncodeEvent(e); err == nil {
			t.Error("EncodeEvent: want an error")
		}
	}
}

// BenchmarkEncodeEvent encodes a REST document update's event, as every
// write does, against json.Marshal of the same body.
func BenchmarkEncodeEvent(b *testing.B) {
	e := &chorus.Event{Type: "document_updated", ID: 4711, AccountSID: "AC0123456789abcdef0123456789abcdef",
		ServiceSID: "IS0123456789abcdef0123456789abcdef", ObjectSID: "ET0123456789abcdef0123456789abcdef",
		Kind: chorus.KindDocument, UniqueName: "hist:bench-7", Revision: "1267", Data: json.RawMessage(`{"ts":1764931200000,"seq":42}`),
		DateCreated: time.Now().UTC(), FromREST: true}
	b.Run("impl=append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, _, err := EncodeEvent(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := marshalBody(e); err != nil {
				b.Fatal(err)
			}
		}
	})
}
