package nats

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/bustest"
)

func TestCodecRoundTrip(t *testing.T) {
	full := bustest.NewEvent("ET00000000000000000000000000000001", 42)
	minimal := &chorus.Event{Type: chorus.EventStreamMessagePublished, ObjectSID: "TO1"}
	negative := bustest.NewEvent("ES1", 1)
	negative.ItemIndex = -5
	negative.ID = -1
	local := bustest.NewEvent("ES1", 1)
	local.DateCreated = time.Date(2024, 5, 6, 7, 8, 9, 1, time.FixedZone("X", 3600))
	empty := bustest.NewEvent("ES1", 1)
	empty.Data, empty.ItemData = json.RawMessage{}, json.RawMessage{}
	tests := []struct {
		name string
		e    *chorus.Event
	}{
		{"full", full},
		{"minimal", minimal},
		{"negative", negative},
		{"offset", local},
		{"empty data", empty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := appendEvent(nil, tt.e)
			got, err := decodeEvent(p)
			if err != nil {
				t.Fatalf("decodeEvent(appendEvent(e)) = %v", err)
			}
			if d := bustest.Diff(got, tt.e); d != "" {
				t.Errorf("decodeEvent(appendEvent(e)) differs: %s", d)
			}
			// Truncations never decode.
			for i := range p {
				if _, err := decodeEvent(p[:i]); err == nil {
					t.Errorf("decodeEvent(first %d of %d bytes) = nil error, want an error", i, len(p))
				}
			}
			if _, err := decodeEvent(append(p, 0)); err == nil {
				t.Errorf("decodeEvent(with a trailing byte) = nil error, want an error")
			}
		})
	}
}

func TestCodecRejects(t *testing.T) {
	good := appendEvent(nil, bustest.NewEvent("ET1", 1))
	tests := []struct {
		name string
		p    []byte
	}{
		{"empty", nil},
		{"version", append([]byte{2}, good[1:]...)},
		{"flags", append([]byte{1, 0x80}, good[2:]...)},
		{"huge length", []byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeEvent(tt.p); err == nil {
				t.Errorf("decodeEvent(%x) = nil error, want an error", tt.p)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(appendEvent(nil, bustest.NewEvent("ET1", 1)))
	f.Add(appendEvent(nil, &chorus.Event{}))
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		e, err := decodeEvent(p)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to something that decodes the same.
		q := appendEvent(nil, e)
		e2, err := decodeEvent(q)
		if err != nil {
			t.Fatalf("decodeEvent(appendEvent(decodeEvent(p))) = %v", err)
		}
		if d := bustest.Diff(e2, e); d != "" {
			t.Fatalf("re-encoded event differs: %s", d)
		}
		if !bytes.Equal(appendEvent(nil, e2), q) {
			t.Fatalf("encoding not stable")
		}
	})
}

func TestCodecAllocs(t *testing.T) {
	e := bustest.NewEvent("ET1", 1)
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = appendEvent(buf[:0], e) }); n != 0 {
		t.Errorf("appendEvent allocs = %v, want 0", n)
	}
	p := appendEvent(nil, e)
	// The event, its strings (one block) and the DateExpires time.
	if n := testing.AllocsPerRun(100, func() { decodeEvent(p) }); n > 3 {
		t.Errorf("decodeEvent allocs = %v, want <= 3", n)
	}
}

// benchEvent is a typical document update with 1 KiB of data.
func benchEvent(size int) *chorus.Event {
	e := bustest.NewEvent(chorus.NewSID(chorus.PrefixDocument), 12345)
	e.DateExpires, e.ItemData, e.ItemKey, e.ItemRevision, e.MessageSID = nil, nil, "", "", ""
	e.Data = json.RawMessage(`{"s":"` + strings.Repeat("x", size-8) + `"}`)
	return e
}

// BenchmarkCodec compares the wire codec with encoding/json.
func BenchmarkCodec(b *testing.B) {
	e := benchEvent(1024)
	b.Run("codec=binary/op=encode", func(b *testing.B) {
		buf := make([]byte, 0, 2048)
		b.ReportAllocs()
		for b.Loop() {
			buf = appendEvent(buf[:0], e)
		}
		b.ReportMetric(float64(len(buf)), "bytes/event")
	})
	b.Run("codec=binary/op=decode", func(b *testing.B) {
		p := appendEvent(nil, e)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeEvent(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("codec=json/op=encode", func(b *testing.B) {
		var p []byte
		b.ReportAllocs()
		for b.Loop() {
			p, _ = json.Marshal(e)
		}
		b.ReportMetric(float64(len(p)), "bytes/event")
	})
	b.Run("codec=json/op=decode", func(b *testing.B) {
		p, _ := json.Marshal(e)
		b.ReportAllocs()
		for b.Loop() {
			var d chorus.Event
			if err := json.Unmarshal(p, &d); err != nil {
				b.Fatal(err)
			}
		}
	})
}
