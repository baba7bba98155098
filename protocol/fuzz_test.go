package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"testing"
)

var decodeErrors = []error{
	ErrBadMagic, ErrBadVersion, ErrBadHeaderLength, ErrTruncated, ErrBadHeader,
	ErrMissingMethod, ErrBadPayloadSize, ErrBadSeparator, ErrTooLarge,
}

// FuzzDecode checks that Decode never panics, that its limits hold, that
// its errors are the documented ones, that any cut of a valid frame fails
// cleanly, and that decode(encode(decode(x))) is stable.
func FuzzDecode(f *testing.F) {
	for _, tc := range decodeCases {
		f.Add([]byte(tc.msg), uint16(tc.maxFrame))
	}
	f.Add([]byte(frame(specInit, "\r\n")), uint16(0))
	f.Add(AppendNotification(nil, "TM1", MessageTypeDocument, []byte(`{"event_type":"document_updated"}`)), uint16(64))
	f.Add(AppendHTTPReply(nil, "TM1", Status{Code: 404, Status: "Not Found"}, []byte(`{}`)), uint16(0))
	f.Fuzz(func(t *testing.T, msg []byte, maxFrame uint16) {
		max := int(maxFrame)
		fr, err := Decode(msg, max)
		if err != nil {
			if fr != nil {
				t.Fatalf("Decode returned a frame and %v", err)
			}
			known := false
			for _, e := range decodeErrors {
				known = known || errors.Is(err, e)
			}
			if !known {
				t.Fatalf("Decode error %v wraps no sentinel", err)
			}
			if errors.Is(err, ErrMalformed) == errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v: ErrMalformed and ErrTooLarge must exclude each other", err)
			}
			return
		}
		h := &fr.Header
		if h.Method == "" {
			t.Fatal("decoded frame without method")
		}
		if h.PayloadSize < 0 || len(fr.Payload) != h.PayloadSize {
			t.Fatalf("len(Payload) = %d, payload_size = %d", len(fr.Payload), h.PayloadSize)
		}
		if max > 0 && h.PayloadSize > max {
			t.Fatalf("payload_size %d > maxFrame %d", h.PayloadSize, max)
		}
		if len(fr.Payload) > 0 && !bytes.Contains(msg, fr.Payload) {
			t.Fatal("Payload is not from msg")
		}
		checkAgainstEncodingJSON(t, msg, h)

		enc := Encode(nil, h, fr.Payload)
		hstart := bytes.Index(enc, []byte("\r\n")) + 2
		hend := len(enc) - 2 - len(fr.Payload)
		if bytes.ContainsAny(enc[hstart:hend], "\r\n") {
			t.Fatalf("encoded header holds raw CR/LF: %q", enc[hstart:hend])
		}
		fr2, err := Decode(enc, 0)
		if err != nil {
			t.Fatalf("Decode(Encode(Decode(msg))) = %v\n%q", err, enc)
		}
		if !reflect.DeepEqual(fr2.Header, fr.Header) || !bytes.Equal(fr2.Payload, fr.Payload) {
			t.Fatalf("round trip changed the frame:\n%+v %q\n%+v %q", fr.Header, fr.Payload, fr2.Header, fr2.Payload)
		}
		if enc2 := Encode(nil, &fr2.Header, fr2.Payload); !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding is not stable:\n%q\n%q", enc, enc2)
		}

		// Partial reads: a frame cut before its end must fail as truncated.
		end := len(enc)
		if len(fr.Payload) == 0 {
			end -= 2 // the CR LF after the header is optional
		}
		for _, n := range []int{0, hstart - 1, hstart, hend - 1, end - 1} {
			if n < 0 || n >= end {
				continue
			}
			if _, err := Decode(enc[:n], 0); !errors.Is(err, ErrTruncated) {
				t.Fatalf("Decode(%q) = %v, want ErrTruncated", enc[:n], err)
			}
		}
		// Other parsers on the same header must not panic.
		_, _ = ParseInit(h)
		_, _ = ParseUpdate(h)
		if m, err := ParseMessage(h); err == nil {
			_, _ = m.Request.Query()
			_, _ = m.Request.PathSegments()
			_ = m.Request.Header("If-Match")
		}
	})
}

// FuzzParseMessage feeds arbitrary http_request objects to ParseMessage.
func FuzzParseMessage(f *testing.F) {
	f.Add([]byte(`{"host":"h","path":"/v3/Maps/MP1/Items/k%2F1","method":"GET","params":{"a":"%20","b":["1","2"]},"headers":{"If-Match":"1"}}`))
	f.Add([]byte(`{"method":"DELETE","path":"/%zz","params":{"%":null}}`))
	f.Add([]byte(`{"method":"GET","path":"/","params":{"a":[1]}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var h Header
		if err := h.SetRaw("http_request", raw); err != nil {
			return
		}
		m, err := ParseMessage(&h)
		if err != nil {
			if !errors.Is(err, ErrInvalidField) {
				t.Fatalf("ParseMessage error %v is not ErrInvalidField", err)
			}
			return
		}
		if m.Request.Method == "" || m.Request.Path == "" || m.Request.Params == nil || m.Request.Headers == nil {
			t.Fatalf("ParseMessage = %+v", m)
		}
		if _, err := m.Request.Query(); err != nil && !errors.Is(err, ErrInvalidField) {
			t.Fatal(err)
		}
		if _, err := m.Request.PathSegments(); err != nil && !errors.Is(err, ErrInvalidField) {
			t.Fatal(err)
		}
	})
}

// checkAgainstEncodingJSON compares the header Decode found in msg with
// what encoding/json makes of the same bytes.
func checkAgainstEncodingJSON(t *testing.T, msg []byte, h *Header) {
	t.Helper()
	i := bytes.Index(msg, []byte("\r\n"))
	n, err := strconv.Atoi(string(msg[len(preamble):i]))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(msg[i+2:i+2+n], &m); err != nil {
		t.Fatalf("encoding/json rejects a header Decode accepted: %v", err)
	}
	var ref struct {
		Method, ID, PayloadType string
		Status                  *Status
	}
	for k, p := range map[string]any{"method": &ref.Method, "id": &ref.ID, "payload_type": &ref.PayloadType, "status": &ref.Status} {
		if raw, ok := m[k]; ok {
			if err := json.Unmarshal(raw, p); err != nil {
				t.Fatalf("encoding/json: %s: %v", k, err)
			}
		}
		delete(m, k)
	}
	delete(m, "payload_size")
	if ref.Method != h.Method || ref.ID != h.ID || ref.PayloadType != h.PayloadType || !reflect.DeepEqual(ref.Status, h.Status) {
		t.Fatalf("typed fields = %q %q %q %+v, encoding/json says %+v", h.Method, h.ID, h.PayloadType, h.Status, ref)
	}
	if len(m) != len(h.extra) {
		t.Fatalf("extra fields = %d, encoding/json finds %d", len(h.extra), len(m))
	}
	for k, want := range m {
		var buf bytes.Buffer
		if err := json.Compact(&buf, want); err != nil {
			t.Fatal(err)
		}
		if got := h.Raw(k); !bytes.Equal(got, buf.Bytes()) {
			t.Fatalf("extra %q = %s, encoding/json says %s", k, got, buf.Bytes())
		}
	}
}

// Header.Get into a string gives what json.Unmarshal gives, for every
// valid JSON value (its fast path takes strings without escapes).
func FuzzHeaderGetString(f *testing.F) {
	for _, s := range []string{`"abc"`, `""`, `"a\"b"`, `"\u00e9t\u00e9"`, `"été"`, `null`, `1`, `{"a":1}`, `["x"]`, `"\ud800"`, `"a\\b"`, "\"\xff\xfe\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		var h Header
		h.setExtra("k", raw) // as Decode stores what it validated
		got, want := "unset", "unset"
		_, gerr := h.Get("k", &got)
		werr := json.Unmarshal(raw, &want)
		if got != want || (gerr == nil) != (werr == nil) {
			t.Fatalf("Get(%q) = %q, %v; json.Unmarshal = %q, %v", raw, got, gerr, want, werr)
		}
	})
}
