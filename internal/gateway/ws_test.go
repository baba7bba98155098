package gateway

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/chorus-sync/chorus/protocol"
)

// rawClient speaks WebSocket frames directly, to exercise what the SDKs'
// libraries never send (fragments, unmasked frames, oversize messages).
type rawClient struct {
	t  testing.TB
	nc net.Conn
	r  io.Reader
}

func (e *env) rawDial() *rawClient {
	e.t.Helper()
	nc, br, _, err := ws.Dial(context.Background(), e.wsURL)
	if err != nil {
		e.t.Fatalf("ws.Dial: %v", err)
	}
	e.t.Cleanup(func() { nc.Close() })
	var r io.Reader = nc
	if br != nil {
		r = br
	}
	return &rawClient{t: e.t, nc: nc, r: r}
}

// write sends one frame, masked unless unmasked is set.
func (c *rawClient) write(op ws.OpCode, fin bool, p []byte, unmasked bool) {
	c.t.Helper()
	f := ws.NewFrame(op, fin, p)
	if !unmasked {
		f = ws.MaskFrame(f)
	}
	if err := ws.WriteFrame(c.nc, f); err != nil {
		c.t.Fatalf("write frame: %v", err)
	}
}

// read returns the next frame from the server.
func (c *rawClient) read() (ws.Header, []byte) {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := ws.ReadHeader(c.r)
	if err != nil {
		c.t.Fatalf("read header: %v", err)
	}
	if h.Masked {
		c.t.Fatalf("server frame is masked")
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.r, p); err != nil {
		c.t.Fatalf("read payload: %v", err)
	}
	return h, p
}

// readTwilsock skips frames until a twilsock frame with method arrives.
func (c *rawClient) readTwilsock(method string) *protocol.Frame {
	c.t.Helper()
	for {
		h, p := c.read()
		if h.OpCode != ws.OpBinary {
			c.t.Fatalf("frame opcode = %v, want binary", h.OpCode)
		}
		f, err := protocol.Decode(p, 0)
		if err != nil {
			c.t.Fatalf("Decode: %v", err)
		}
		if f.Header.Method == method {
			return f
		}
	}
}

// readClose expects a close frame with code, answers it, then expects the
// server to close the connection.
func (c *rawClient) readClose(code ws.StatusCode) {
	c.t.Helper()
	c.readCloseCode(code)
	c.write(ws.OpClose, true, ws.NewCloseFrameBody(code, ""), false)
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c.r); err != nil {
		c.t.Fatalf("after close: %v, want EOF", err)
	}
}

// readFailClose expects a close frame with code and the end of the
// connection: after a protocol error the server closes at once (a reset,
// if bytes it never read remain).
func (c *rawClient) readFailClose(code ws.StatusCode) {
	c.t.Helper()
	c.readCloseCode(code)
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c.r)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.t.Fatalf("after close %d: connection still open", code)
	}
}

func (c *rawClient) readCloseCode(code ws.StatusCode) {
	c.t.Helper()
	for {
		h, p := c.read()
		if h.OpCode != ws.OpClose {
			continue
		}
		got, _ := ws.ParseCloseFrameData(p)
		if got != code {
			c.t.Fatalf("close code = %d, want %d", got, code)
		}
		return
	}
}

func initFrame(tok string) []byte {
	h, _ := protocol.HeaderOf(map[string]any{"method": "init", "id": "TMinit", "token": tok,
		"metadata": map[string]any{"ver": "1.0.2"}, "capabilities": []string{"client_update"}})
	return protocol.Encode(nil, h, nil)
}

func TestWebSocketFraming(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.MaxFrameBytes = 4096 }))
	tok := e.token("alice", time.Hour)
	t.Run("ping gets a pong", func(t *testing.T) {
		c := e.rawDial()
		c.write(ws.OpPing, true, []byte("hello"), false)
		h, p := c.read()
		if h.OpCode != ws.OpPong || string(p) != "hello" {
			t.Fatalf("answer to ping = %v %q, want pong %q", h.OpCode, p, "hello")
		}
	})
	t.Run("fragmented message with a ping inside", func(t *testing.T) {
		c := e.rawDial()
		msg := initFrame(tok)
		third := len(msg) / 3
		c.write(ws.OpBinary, false, msg[:third], false)
		c.write(ws.OpPing, true, nil, false)
		c.write(ws.OpContinuation, false, msg[third:2*third], false)
		c.write(ws.OpContinuation, true, msg[2*third:], false)
		if h, _ := c.read(); h.OpCode != ws.OpPong {
			t.Fatalf("first frame = %v, want pong", h.OpCode)
		}
		f := c.readTwilsock("reply")
		if f.Header.ID != "TMinit" || f.Header.Status == nil || f.Header.Status.Code != 200 {
			t.Fatalf("init reply = %s %+v, want TMinit 200", f.Header.ID, f.Header.Status)
		}
	})
	t.Run("large single frame", func(t *testing.T) {
		c := e.rawDial()
		h, _ := protocol.HeaderOf(map[string]any{"method": "init", "id": "TMinit", "token": tok,
			"metadata": map[string]any{"pad": string(bytes.Repeat([]byte("x"), 3000))}})
		c.write(ws.OpBinary, true, protocol.Encode(nil, h, nil), false)
		if f := c.readTwilsock("reply"); f.Header.Status == nil || f.Header.Status.Code != 200 {
			t.Fatalf("init reply status = %+v, want 200", f.Header.Status)
		}
	})
	t.Run("a message in single bytes", func(t *testing.T) {
		// Every read ends inside a header or a payload.
		c := e.rawDial()
		f := ws.MaskFrame(ws.NewFrame(ws.OpBinary, true, initFrame(tok)))
		var b bytes.Buffer
		if err := ws.WriteFrame(&b, f); err != nil {
			t.Fatal(err)
		}
		for _, x := range b.Bytes() {
			if _, err := c.nc.Write([]byte{x}); err != nil {
				t.Fatalf("write: %v", err)
			}
			time.Sleep(200 * time.Microsecond)
		}
		if f := c.readTwilsock("reply"); f.Header.Status == nil || f.Header.Status.Code != 200 {
			t.Fatalf("init reply status = %+v, want 200", f.Header.Status)
		}
	})
	t.Run("many frames in one write", func(t *testing.T) {
		// Pings, a message larger than the read buffer, more pings, all
		// in one write: reads end at every kind of boundary, and the
		// bytes after the large message must not be lost.
		c := e.rawDial()
		var b bytes.Buffer
		frame := func(op ws.OpCode, p []byte) {
			if err := ws.WriteFrame(&b, ws.MaskFrame(ws.NewFrame(op, true, p))); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 40 {
			frame(ws.OpPing, []byte{byte(i)})
		}
		h, _ := protocol.HeaderOf(map[string]any{"method": "init", "id": "TMinit", "token": tok,
			"metadata": map[string]any{"pad": string(bytes.Repeat([]byte("x"), 2000))}})
		frame(ws.OpBinary, protocol.Encode(nil, h, nil))
		for i := 40; i < 80; i++ {
			frame(ws.OpPing, []byte{byte(i)})
		}
		if _, err := c.nc.Write(b.Bytes()); err != nil {
			t.Fatalf("write: %v", err)
		}
		// A pong may answer several pings (the latest one's payload).
		last, replied := -1, false
		for last < 79 || !replied {
			h, p := c.read()
			switch h.OpCode {
			case ws.OpPong:
				if len(p) != 1 || int(p[0]) <= last {
					t.Fatalf("pong %v after pong %d", p, last)
				}
				last = int(p[0])
			case ws.OpBinary:
				f, err := protocol.Decode(p, 0)
				if err != nil || f.Header.Method != "reply" || f.Header.Status == nil || f.Header.Status.Code != 200 {
					t.Fatalf("binary frame %q (%v), want the init reply with 200", p, err)
				}
				replied = true
			default:
				t.Fatalf("frame %v", h.OpCode)
			}
		}
	})
	t.Run("unmasked frame closes 1002", func(t *testing.T) {
		c := e.rawDial()
		c.write(ws.OpBinary, true, initFrame(tok), true)
		c.readFailClose(ws.StatusProtocolError)
	})
	t.Run("continuation without a start closes 1002", func(t *testing.T) {
		c := e.rawDial()
		c.write(ws.OpContinuation, true, []byte("x"), false)
		c.readFailClose(ws.StatusProtocolError)
	})
	t.Run("message over the limit closes 1009", func(t *testing.T) {
		c := e.rawDial()
		c.write(ws.OpBinary, true, initFrame(tok), false)
		c.readTwilsock("reply")
		// After init, 4×MaxFrameBytes+1024 is read (to answer 413); one
		// more is not. (Before init the limit is MaxInitBytes.)
		c.write(ws.OpBinary, false, make([]byte, 4*4096), false)
		c.write(ws.OpContinuation, true, make([]byte, 1025), false)
		c.readFailClose(ws.StatusMessageTooBig)
	})
	t.Run("client close is echoed", func(t *testing.T) {
		c := e.rawDial()
		c.write(ws.OpBinary, true, initFrame(tok), false)
		c.readTwilsock("reply")
		c.write(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""), false)
		h, p := c.read()
		if code, _ := ws.ParseCloseFrameData(p); h.OpCode != ws.OpClose || code != ws.StatusNormalClosure {
			t.Fatalf("answer to close = %v %d, want close 1000", h.OpCode, code)
		}
		if _, err := io.Copy(io.Discard, c.r); err != nil {
			t.Fatalf("after close: %v, want EOF", err)
		}
	})
	t.Run("twilsock close ends with close 1000", func(t *testing.T) {
		c := e.rawDial()
		c.write(ws.OpBinary, true, initFrame(tok), false)
		c.readTwilsock("reply")
		c.write(ws.OpBinary, true, protocol.Encode(nil, &protocol.Header{Method: "close", ID: "TMc"}, nil), false)
		c.readClose(ws.StatusNormalClosure)
	})
	// The sessions of the first five subtests remain; the others ended.
	waitFor(t, func() bool { return e.gw.Stats().Connections == 5 })
}

// countingConn records the writes made to it.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	buf    bytes.Buffer
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return c.buf.Write(p)
}

func (c *countingConn) SetWriteDeadline(time.Time) error { return nil }

// TestWriteBatchOneWrite: every frame that is ready goes out in one write
// (the point of the writer), with valid WebSocket framing.
func TestWriteBatchOneWrite(t *testing.T) {
	tests := []struct {
		name   string
		frames int
		size   int
		writes int
	}{
		{"one small frame", 1, 100, 1},
		{"many small frames", 100, 120, 1},
		{"16-bit lengths", 10, 1000, 1},
		{"beyond the buffer", 4, 10000, 3},
		{"64-bit length", 1, 70000, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := New(Config{})
			cc := &countingConn{}
			c := &conn{g: g, nc: cc}
			c.ctx, c.cancel = context.WithCancelCause(context.Background())
			var frames []outFrame
			for i := 0; i < tt.frames; i++ {
				frames = append(frames, outFrame{b: bytes.Repeat([]byte{byte('a' + i%26)}, tt.size)})
			}
			pong := []byte("p")
			if err := c.writeBatch(&pong, frames); err != nil {
				t.Fatalf("writeBatch: %v", err)
			}
			if cc.writes > tt.writes {
				t.Errorf("writeBatch made %d writes, want at most %d", cc.writes, tt.writes)
			}
			r := bufio.NewReader(&cc.buf)
			for i := -1; i < tt.frames; i++ {
				h, err := ws.ReadHeader(r)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				want := ws.OpBinary
				if i < 0 {
					want = ws.OpPong
				}
				p := make([]byte, h.Length)
				io.ReadFull(r, p)
				if h.OpCode != want || !h.Fin || h.Masked || (i >= 0 && !bytes.Equal(p, frames[i].b)) {
					t.Fatalf("frame %d = %+v (%d bytes), want final unmasked %v of %d bytes", i, h, len(p), want, tt.size)
				}
			}
			if r.Buffered() != 0 || cc.buf.Len() != 0 {
				t.Errorf("%d bytes after the frames", r.Buffered()+cc.buf.Len())
			}
		})
	}
}
