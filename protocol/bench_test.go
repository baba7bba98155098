package protocol

import (
	"bytes"
	"strings"
	"testing"
)

var benchSizes = []struct {
	name string
	n    int
}{
	{"size=100B", 100},
	{"size=4KiB", 4 << 10},
}

func benchPayload(n int) []byte {
	p := []byte(`{"event_type":"document_updated","event":{"document_data":"`)
	p = append(p, bytes.Repeat([]byte("x"), max(n-len(p)-3, 0))...)
	return append(p, `"}}`...)
}

func BenchmarkEncodeNotification(b *testing.B) {
	const id = "TM942c23a11aa9adf29e1a81e5d5cf2db3"
	for _, size := range benchSizes {
		payload := benchPayload(size.n)
		b.Run(size.name, func(b *testing.B) {
			b.Run("reuse", func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(payload)))
				var dst []byte
				for b.Loop() {
					dst = AppendNotification(dst[:0], id, MessageTypeDocument, payload)
				}
			})
			// fresh is the fan-out case: one new buffer per event, shared
			// by every connection.
			b.Run("fresh", func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(payload)))
				for b.Loop() {
					_ = AppendNotification(nil, id, MessageTypeDocument, payload)
				}
			})
		})
	}
}

func BenchmarkEncodeHTTPReply(b *testing.B) {
	for _, size := range benchSizes {
		payload := benchPayload(size.n)
		b.Run(size.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			var dst []byte
			for b.Loop() {
				dst = AppendHTTPReply(dst[:0], "TM5d44c281-894b-4c7c-800e-85311c8cf72e", Status{Code: 200, Status: "OK"}, payload)
			}
		})
	}
}

func BenchmarkEncodeInitReply(b *testing.B) {
	b.ReportAllocs()
	var dst []byte
	for b.Loop() {
		h := NewInitReply("TMf371fa68-c309-48b4-bc23-e8dab391f126", "ct_9b1c6c0a2f0e4a0c", []string{CapabilityClientUpdate})
		dst = Encode(dst[:0], h, nil)
	}
}

func BenchmarkDecode(b *testing.B) {
	// Every notification a client gets comes back as an ack like this one.
	ack := []byte(frame(`{"id":"TM942c23a11aa9adf29e1a81e5d5cf2db3","method":"reply","payload_type":"application/json","status":{"code":200,"status":"OK"},"payload_size":0}`, "\r\n"))
	b.Run("ack", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(ack)))
		for b.Loop() {
			if _, err := Decode(ack, 1<<20); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, size := range benchSizes {
		msg := []byte(frame(specMessageHeader[:len(specMessageHeader)-len(`22}`)]+itoa(size.n)+"}", "\r\n"+string(benchPayload(size.n))))
		if _, err := Decode(msg, 0); err != nil {
			b.Fatal(err)
		}
		b.Run(size.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if _, err := Decode(msg, 1<<20); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseInit parses the init request every connection opens with
// (the real SDK's, with a 400-byte token).
func BenchmarkParseInit(b *testing.B) {
	tok := `eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImN0eSI6InR3aWxpby1mcGE7dj0xIn0.` + strings.Repeat("eyJqdGkiOiJTSzAxMjM0NTY3ODkwYWJj", 10) + `.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU`
	msg := []byte(frame(strings.Replace(specInit, `"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImN0eSI6InR3aWxpby1mcGE7dj0xIn0.eyJ"`, `"`+tok+`"`, 1), "\r\n"))
	b.ReportAllocs()
	for b.Loop() {
		fr, err := Decode(msg, 1<<20)
		if err != nil {
			b.Fatal(err)
		}
		in, err := ParseInit(&fr.Header)
		if err != nil || in.Token != tok {
			b.Fatalf("ParseInit = %+v, %v", in, err)
		}
	}
}
