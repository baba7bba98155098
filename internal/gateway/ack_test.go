package gateway

import (
	"strconv"
	"testing"

	"github.com/chorus-sync/chorus/protocol"
)

// frameOf wraps header JSON h in a twilsock preamble.
func frameOf(h string) []byte {
	return []byte("TWILSOCK V3.0 " + strconv.Itoa(len(h)) + "\r\n" + h)
}

const sdkAck = `{"id":"TM0123456789abcdef0123456789abcdef","method":"reply","payload_type":"application/json","status":{"code":200,"status":"OK"},"payload_size":0}`

func TestIsPlainAck(t *testing.T) {
	goAck := protocol.Encode(nil, protocol.NewReply("TMabc", protocol.StatusOK), nil)
	tests := []struct {
		name     string
		msg      []byte
		maxFrame int
		want     bool
	}{
		{"SDK ack", frameOf(sdkAck), 0, true},
		{"SDK ack with CRLF", append(frameOf(sdkAck), "\r\n"...), 0, true},
		{"Go encoder ack", goAck, 0, true},
		{"Go encoder ack under limit", goAck, 1 << 16, true},
		{"method only", frameOf(`{"method":"reply"}`), 0, true},
		{"empty id", frameOf(`{"method":"reply","id":""}`), 0, true},
		{"over maxFrame", frameOf(sdkAck), 20, false},
		{"no method", frameOf(`{"id":"TM1","payload_size":0}`), 0, false},
		{"other method", frameOf(`{"id":"TM1","method":"ping"}`), 0, false},
		{"duplicate method", frameOf(`{"method":"reply","method":"close"}`), 0, false},
		{"duplicate id", frameOf(`{"method":"reply","id":"a","id":"b"}`), 0, false},
		{"escaped id", frameOf(`{"method":"reply","id":"a\"b"}`), 0, false},
		{"non-ASCII id", frameOf(`{"method":"reply","id":"é"}`), 0, false},
		{"non-string id", frameOf(`{"method":"reply","id":12}`), 0, false},
		{"unterminated id", frameOf(`{"method":"reply","id":"abc}`), 0, false},
		{"payload", frameOf(`{"method":"reply","payload_size":3}`), 0, false},
		{"other status", frameOf(`{"method":"reply","status":{"code":500,"status":"X"}}`), 0, false},
		{"whitespace", frameOf(`{"method": "reply"}`), 0, false},
		{"unknown key", frameOf(`{"method":"reply","x":1}`), 0, false},
		{"trailing comma", frameOf(`{"method":"reply",}`), 0, false},
		{"short header length", []byte("TWILSOCK V3.0 17\r\n" + `{"method":"reply"}`), 0, false},
		{"truncated", []byte("TWILSOCK V3.0 19\r\n" + `{"method":"reply"}`), 0, false},
		{"leading zero", []byte("TWILSOCK V3.0 018\r\n" + `{"method":"reply"}`), 0, false},
		{"bad version", []byte("TWILSOCK V3.1 18\r\n" + `{"method":"reply"}`), 0, false},
		{"empty", nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isPlainAck(tt.msg, tt.maxFrame); got != tt.want {
				t.Fatalf("isPlainAck(%q, %d) = %v, want %v", tt.msg, tt.maxFrame, got, tt.want)
			}
			if tt.want {
				f, err := protocol.Decode(tt.msg, tt.maxFrame)
				if err != nil || f.Header.Method != protocol.MethodReply || f.Payload != nil {
					t.Fatalf("Decode(%q) = %+v, %v; want a reply without payload", tt.msg, f, err)
				}
			}
		})
	}
}

func TestIsPlainAckAllocs(t *testing.T) {
	msg := frameOf(sdkAck)
	if n := testing.AllocsPerRun(100, func() { isPlainAck(msg, 1<<16) }); n != 0 {
		t.Fatalf("isPlainAck allocations = %v, want 0", n)
	}
}

// FuzzIsPlainAck checks that the fast path never accepts a frame that the
// full decoder would reject or read as anything but a reply with no
// payload.
func FuzzIsPlainAck(f *testing.F) {
	f.Add(frameOf(sdkAck), 0)
	f.Add(protocol.Encode(nil, protocol.NewReply("TMabc", protocol.StatusOK), nil), 100)
	f.Add(frameOf(`{"method":"reply","id":"a","id":"b"}`), 0)
	f.Add(frameOf(`{"status":{"code":200,"status":"OK"},"method":"reply"}`), 30)
	f.Fuzz(func(t *testing.T, msg []byte, maxFrame int) {
		if !isPlainAck(msg, maxFrame) {
			return
		}
		fr, err := protocol.Decode(msg, maxFrame)
		if err != nil || fr.Header.Method != protocol.MethodReply || fr.Payload != nil {
			t.Fatalf("isPlainAck(%q, %d) = true, but Decode = %+v, %v", msg, maxFrame, fr, err)
		}
	})
}

func BenchmarkAck(b *testing.B) {
	msg := frameOf(sdkAck)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			isPlainAck(msg, 1<<16)
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			protocol.Decode(msg, 1<<16)
		}
	})
}
