package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// frame builds a frame with a correct H for header.
func frame(header, rest string) string {
	return fmt.Sprintf("TWILSOCK V3.0 %d\r\n%s%s", len(header), header, rest)
}

// Spec §1.2: an init reply, H = 117.
const specInitReply = "TWILSOCK V3.0 117\r\n" +
	`{"method":"reply","id":"TMf371fa68-c309-48b4-bc23-e8dab391f126","status":{"code":200,"status":"OK"},"payload_size":0}` +
	"\r\n"

// Spec §4.2: a message frame; the JS client sends no CR LF after the payload.
const specMessageHeader = `{"id":"TM5d44c281-894b-4c7c-800e-85311c8cf72e","method":"message","active_grant":"data_sync",` +
	`"payload_type":"application/json",` +
	`"http_request":{"host":"127.0.0.1:8080","path":"/v3/Documents/ET06db2871983f147042eb23a31d5415c0","method":"POST",` +
	`"params":{},` +
	`"headers":{"Content-Type":"application/json",` +
	`"Twilio-Sync-Client-Info":"{\"sdk\":\"js\",\"sdkVer\":\"4.0.1\",\"os\":\"Linux\",\"osVer\":null,\"pl\":\"Node.js\",\"plVer\":\"20.20.2\"}",` +
	`"Twilio-Request-Id":"RQ88b5d692ce67438f9506285e0d89dca4",` +
	`"If-Match":"1"}},` +
	`"payload_size":22}`

// A DELETE: the SDK sends the non-JSON 9-byte payload data_sync.
const specDeleteHeader = `{"id":"TMb5577cd2-cc6f-4e73-acb4-28e5f9a85241","method":"message","active_grant":"data_sync",` +
	`"payload_type":"application/json",` +
	`"http_request":{"host":"cds.example","path":"/v3/Maps/MP1/Items/k%2F1%20%C3%A9","method":"DELETE","params":{},` +
	`"headers":{"Content-Type":"application/json","Twilio-Request-Id":"RQ1"}},` +
	`"payload_size":9}`

func TestSpecExampleLength(t *testing.T) {
	hdr := specInitReply[len("TWILSOCK V3.0 117\r\n") : len(specInitReply)-2]
	if len(hdr) != 117 {
		t.Fatalf("len(spec header) = %d, want 117", len(hdr))
	}
}

type decodeCase struct {
	name     string
	msg      string
	maxFrame int
	want     *Frame // nil: compare nothing but success
	wantErr  error
}

func hdr(method, id string, st *Status, size int, ptype string, extra map[string]string) Header {
	h := Header{Method: method, ID: id, Status: st, PayloadSize: size, PayloadType: ptype}
	for k, v := range extra {
		h.setExtra(k, json.RawMessage(v))
	}
	return h
}

var decodeCases = []decodeCase{
	{
		name: "spec init reply",
		msg:  specInitReply,
		want: &Frame{Header: hdr("reply", "TMf371fa68-c309-48b4-bc23-e8dab391f126", &Status{Code: 200, Status: "OK"}, 0, "", nil)},
	},
	{
		name: "spec init reply without trailing CRLF",
		msg:  strings.TrimSuffix(specInitReply, "\r\n"),
		want: &Frame{Header: hdr("reply", "TMf371fa68-c309-48b4-bc23-e8dab391f126", &Status{Code: 200, Status: "OK"}, 0, "", nil)},
	},
	{
		name: "message without trailing CRLF (JS)",
		msg:  frame(specMessageHeader, "\r\n"+`{"data":{"a":1,"b":2}}`),
	},
	{
		name: "message with trailing CRLF (Kotlin)",
		msg:  frame(specMessageHeader, "\r\n"+`{"data":{"a":1,"b":2}}`+"\r\n"),
	},
	{
		name: "DELETE data_sync payload is not parsed",
		msg:  frame(specDeleteHeader, "\r\ndata_sync"),
	},
	{
		name: "trailing bytes after payload ignored",
		msg:  frame(`{"method":"reply","id":"TM1","payload_size":3}`, "\r\nabcdefgh"),
		want: &Frame{Header: hdr("reply", "TM1", nil, 3, "", nil), Payload: []byte("abc")},
	},
	{
		name: "payload holding CRLF",
		msg:  frame(`{"method":"message","id":"TM1","payload_size":6}`, "\r\na\r\nb\r\n"),
		want: &Frame{Header: hdr("message", "TM1", nil, 6, "", nil), Payload: []byte("a\r\nb\r\n")},
	},
	{
		name: "client ack",
		msg:  frame(`{"id":"TM9","method":"reply","payload_type":"application/json","status":{"code":200,"status":"OK"},"payload_size":0}`, "\r\n"),
		want: &Frame{Header: hdr("reply", "TM9", &Status{Code: 200, Status: "OK"}, 0, "application/json", nil)},
	},
	{
		name: "client close",
		msg:  frame(`{"id":"TM9","method":"close","payload_size":0}`, "\r\n"),
		want: &Frame{Header: hdr("close", "TM9", nil, 0, "", nil)},
	},
	{
		name: "payload_size absent",
		msg:  frame(`{"method":"ping","id":"TM1"}`, ""),
		want: &Frame{Header: hdr("ping", "TM1", nil, 0, "", nil)},
	},
	{
		name: "payload_size 0 with garbage after header",
		msg:  frame(`{"method":"ping","id":"TM1","payload_size":0}`, "xyz"),
		want: &Frame{Header: hdr("ping", "TM1", nil, 0, "", nil)},
	},
	{
		name: "nulls",
		msg:  frame(`{"method":"ping","id":null,"status":null,"payload_type":null,"payload_size":null,"x":null}`, ""),
		want: &Frame{Header: hdr("ping", "", nil, 0, "", map[string]string{"x": "null"})},
	},
	{
		name: "status with error code",
		msg:  frame(`{"method":"reply","id":"TM1","status":{"code":401,"status":"UNAUTHORIZED","errorCode":20104,"description":"expired"}}`, ""),
		want: &Frame{Header: hdr("reply", "TM1", &Status{Code: 401, Status: "UNAUTHORIZED", ErrorCode: 20104, Description: "expired"}, 0, "", nil)},
	},
	{
		name: "UTF-8 header, H in bytes",
		msg:  frame(`{"method":"init","id":"TM1","token":"héllo→✓😀","payload_size":2}`, "\r\n€x"[:4]),
		want: &Frame{
			Header:  hdr("init", "TM1", nil, 2, "", map[string]string{"token": `"héllo→✓😀"`}),
			Payload: []byte("\xe2\x82"),
		},
	},
	{
		name: "whitespace and CRLF inside header JSON are compacted",
		msg:  frame("{ \"method\" : \"ping\",\r\n \"id\":\"TM1\", \"x\" : [ 1,\r\n2 , {\"a b\" : \" c d \"} ] }", ""),
		want: &Frame{Header: hdr("ping", "TM1", nil, 0, "", map[string]string{"x": `[1,2,{"a b":" c d "}]`})},
	},
	{
		name: "unknown fields kept raw",
		msg:  frame(`{"method":"telemetry.v1","id":"TM1","events":[{"start":-17,"end":-1,"title":"x","details":""}],"Method":"y","n":1e400,"payload_size":0}`, "\r\n"),
		want: &Frame{Header: hdr("telemetry.v1", "TM1", nil, 0, "", map[string]string{
			"events": `[{"start":-17,"end":-1,"title":"x","details":""}]`,
			"Method": `"y"`,
			"n":      `1e400`,
		})},
	},
	{
		name: "escaped keys",
		msg:  frame(`{"meth\u006fd":"ping","\u0069d":"T\u004d1","x\u0079":1,"\u00e9":2}`, ""),
		want: &Frame{Header: hdr("ping", "TM1", nil, 0, "", map[string]string{"xy": "1", "é": "2"})},
	},
	{
		name: "duplicate keys: last wins",
		msg:  frame(`{"method":5,"method":"ping","id":"a","id":"b","x":1,"x":[2],"payload_size":9,"payload_size":0}`, ""),
		want: &Frame{Header: hdr("ping", "b", nil, 0, "", map[string]string{"x": "[2]"})},
	},
	{
		name: "brackets and quotes inside strings",
		msg:  frame(`{"method":"ping","id":"}\"]","x":{"a":"}]\"[{\\","b":[[],{}]},"y":"\\","z":-1.5e+3,"w":true}`, ""),
		want: &Frame{Header: hdr("ping", `}"]`, nil, 0, "", map[string]string{
			"x": `{"a":"}]\"[{\\","b":[[],{}]}`, "y": `"\\"`, "z": "-1.5e+3", "w": "true",
		})},
	},
	{
		name: "empty object values",
		msg:  frame(`{"method":"ping","a":{},"b":[],"c":""}`, ""),
		want: &Frame{Header: hdr("ping", "", nil, 0, "", map[string]string{"a": "{}", "b": "[]", "c": `""`})},
	},
	{
		name:     "sizes exactly at maxFrame",
		msg:      frame(`{"method":"message","id":"TM1","payload_size":42}`, "\r\n"+strings.Repeat("x", 42)),
		maxFrame: 49,
	},
	{
		name: "payload_size -0",
		msg:  frame(`{"method":"ping","id":"TM1","payload_size":-0}`, ""),
		want: &Frame{Header: hdr("ping", "TM1", nil, 0, "", nil)},
	},

	// Malformed frames.
	{name: "empty", msg: "", wantErr: ErrTruncated},
	{name: "magic prefix only", msg: "TWILS", wantErr: ErrTruncated},
	{name: "preamble only", msg: "TWILSOCK V3.0 ", wantErr: ErrTruncated},
	{name: "http", msg: "HTTP/1.1 200 OK\r\n\r\n", wantErr: ErrBadMagic},
	{name: "lower-case magic", msg: strings.ToLower(specInitReply[:8]) + specInitReply[8:], wantErr: ErrBadMagic},
	{name: "magic without space", msg: "TWILSOCKV3.0 5\r\n", wantErr: ErrBadMagic},
	{name: "text garbage", msg: "\x00\xff", wantErr: ErrBadMagic},
	{name: "version 2", msg: "TWILSOCK V2.0 117\r\n" + specInitReply[19:], wantErr: ErrBadVersion},
	{name: "version 3.01", msg: "TWILSOCK V3.01 117\r\n" + specInitReply[19:], wantErr: ErrBadVersion},
	{name: "version short", msg: "TWILSOCK V3\r\n", wantErr: ErrBadVersion},
	{name: "no H", msg: "TWILSOCK V3.0 \r\n{}", wantErr: ErrBadHeaderLength},
	{name: "double space", msg: "TWILSOCK V3.0  2\r\n{}", wantErr: ErrBadHeaderLength},
	{name: "negative H", msg: "TWILSOCK V3.0 -2\r\n{}", wantErr: ErrBadHeaderLength},
	{name: "H with junk", msg: "TWILSOCK V3.0 2x\r\n{}", wantErr: ErrBadHeaderLength},
	{name: "H with extra token", msg: "TWILSOCK V3.0 2 x\r\n{}", wantErr: ErrBadHeaderLength},
	{name: "LF only", msg: "TWILSOCK V3.0 2\n{}", wantErr: ErrBadHeaderLength},
	{name: "CR without LF", msg: "TWILSOCK V3.0 2\rx{}", wantErr: ErrBadHeaderLength},
	{name: "H truncated", msg: "TWILSOCK V3.0 11", wantErr: ErrTruncated},
	{name: "H larger than message", msg: "TWILSOCK V3.0 118\r\n" + specInitReply[19:136], wantErr: ErrTruncated},
	{name: "H larger than maxFrame", msg: specInitReply, maxFrame: 116, wantErr: ErrTooLarge},
	{name: "H overflows", msg: "TWILSOCK V3.0 99999999999999999999999\r\n{}", wantErr: ErrTruncated},
	{name: "H overflows maxFrame", msg: "TWILSOCK V3.0 99999999999999999999999\r\n{}", maxFrame: 1 << 20, wantErr: ErrTooLarge},
	{name: "H too short", msg: "TWILSOCK V3.0 116\r\n" + specInitReply[19:], wantErr: ErrBadHeader},
	{name: "H zero", msg: "TWILSOCK V3.0 0\r\n", wantErr: ErrBadHeader},
	{name: "invalid JSON", msg: frame(`{"method":"ping","id":"TM1",}`, ""), wantErr: ErrBadHeader},
	{name: "two objects", msg: frame(`{"method":"ping"}{}`, ""), wantErr: ErrBadHeader},
	{name: "array header", msg: frame(`[{"method":"ping"}]`, ""), wantErr: ErrBadHeader},
	{name: "string header", msg: frame(`"ping"`, ""), wantErr: ErrBadHeader},
	{name: "null header", msg: frame(`null`, ""), wantErr: ErrBadHeader},
	{name: "number header", msg: frame(`5`, ""), wantErr: ErrBadHeader},
	{name: "invalid UTF-8 header", msg: frame("{\"method\":\"ping\",\"id\":\"\xff\"}", ""), wantErr: ErrBadHeader},
	{name: "missing method", msg: frame(`{"id":"TM1","payload_size":0}`, "\r\n"), wantErr: ErrMissingMethod},
	{name: "empty method", msg: frame(`{"method":"","id":"TM1"}`, ""), wantErr: ErrMissingMethod},
	{name: "null method", msg: frame(`{"method":null,"id":"TM1"}`, ""), wantErr: ErrMissingMethod},
	{name: "method is a number", msg: frame(`{"method":5,"id":"TM1"}`, ""), wantErr: ErrBadHeader},
	{name: "id is a number", msg: frame(`{"method":"ping","id":5}`, ""), wantErr: ErrBadHeader},
	{name: "payload_type is an object", msg: frame(`{"method":"ping","id":"1","payload_type":{}}`, ""), wantErr: ErrBadHeader},
	{name: "status is a string", msg: frame(`{"method":"reply","id":"1","status":"OK"}`, ""), wantErr: ErrBadHeader},
	{name: "status code is a string", msg: frame(`{"method":"reply","id":"1","status":{"code":"200"}}`, ""), wantErr: ErrBadHeader},
	{name: "payload_size negative", msg: frame(`{"method":"m","id":"1","payload_size":-1}`, "\r\n"), wantErr: ErrBadPayloadSize},
	{name: "payload_size fraction", msg: frame(`{"method":"m","id":"1","payload_size":1.5}`, "\r\nab"), wantErr: ErrBadPayloadSize},
	{name: "payload_size exponent", msg: frame(`{"method":"m","id":"1","payload_size":1e1}`, "\r\nab"), wantErr: ErrBadPayloadSize},
	{name: "payload_size string", msg: frame(`{"method":"m","id":"1","payload_size":"2"}`, "\r\nab"), wantErr: ErrBadPayloadSize},
	{name: "payload_size bool", msg: frame(`{"method":"m","id":"1","payload_size":true}`, "\r\nab"), wantErr: ErrBadPayloadSize},
	{name: "payload_size beyond message", msg: frame(`{"method":"m","id":"1","payload_size":3}`, "\r\nab"), wantErr: ErrTruncated},
	{name: "payload_size without separator", msg: frame(`{"method":"m","id":"1","payload_size":3}`, ""), wantErr: ErrTruncated},
	{name: "payload_size with half separator", msg: frame(`{"method":"m","id":"1","payload_size":3}`, "\r"), wantErr: ErrTruncated},
	{name: "payload_size overflows", msg: frame(`{"method":"m","id":"1","payload_size":99999999999999999999999}`, "\r\nab"), wantErr: ErrTruncated},
	{name: "payload_size over maxFrame", msg: frame(`{"method":"m","id":"1","payload_size":50}`, "\r\n"+strings.Repeat("x", 50)), maxFrame: 49, wantErr: ErrTooLarge},
	{name: "payload_size overflows maxFrame", msg: frame(`{"method":"m","id":"1","payload_size":99999999999999999999999}`, "\r\nab"), maxFrame: 100, wantErr: ErrTooLarge},
	{name: "no separator before payload", msg: frame(`{"method":"m","id":"1","payload_size":3}`, "abcde"), wantErr: ErrBadSeparator},
	{name: "LF-only separator", msg: frame(`{"method":"m","id":"1","payload_size":3}`, "\nabc"), wantErr: ErrBadSeparator},
	{name: "CR-only separator", msg: frame(`{"method":"m","id":"1","payload_size":3}`, "\rabcd"), wantErr: ErrBadSeparator},
}

func TestDecode(t *testing.T) {
	for _, tc := range decodeCases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Decode([]byte(tc.msg), tc.maxFrame)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Decode(%q) = %v, want %v", tc.msg, err, tc.wantErr)
				}
				if f != nil {
					t.Errorf("Decode(%q) returned a frame with error %v", tc.msg, err)
				}
				if malformed := errors.Is(err, ErrMalformed); malformed == (tc.wantErr == ErrTooLarge) {
					t.Errorf("errors.Is(%v, ErrMalformed) = %v", err, malformed)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode(%q) = %v, want success", tc.msg, err)
			}
			if len(f.Payload) != f.Header.PayloadSize {
				t.Errorf("len(Payload) = %d, want payload_size %d", len(f.Payload), f.Header.PayloadSize)
			}
			if tc.want != nil {
				checkFrame(t, f, tc.want)
			}
		})
	}
}

func checkFrame(t *testing.T, got, want *Frame) {
	t.Helper()
	if !reflect.DeepEqual(got.Header, want.Header) {
		gj, _ := got.Header.MarshalJSON()
		wj, _ := want.Header.MarshalJSON()
		t.Errorf("Header = %+v %s\nwant %+v %s", got.Header, gj, want.Header, wj)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("Payload = %q, want %q", got.Payload, want.Payload)
	}
}

func TestDecodeMessage(t *testing.T) {
	for _, tail := range []string{"", "\r\n"} {
		msg := frame(specMessageHeader, "\r\n"+`{"data":{"a":1,"b":2}}`+tail)
		f, err := Decode([]byte(msg), 1<<16)
		if err != nil {
			t.Fatal(err)
		}
		h := &f.Header
		if h.Method != MethodMessage || h.ID != "TM5d44c281-894b-4c7c-800e-85311c8cf72e" || h.PayloadType != ContentTypeJSON || h.PayloadSize != 22 {
			t.Errorf("header = %+v", h)
		}
		if got := string(f.Payload); got != `{"data":{"a":1,"b":2}}` {
			t.Errorf("Payload = %q", got)
		}
		if got := string(h.Raw("active_grant")); got != `"data_sync"` {
			t.Errorf("Raw(active_grant) = %s", got)
		}
	}
}

func TestDecodeDelete(t *testing.T) {
	f, err := Decode([]byte(frame(specDeleteHeader, "\r\ndata_sync")), 1<<16)
	if err != nil {
		t.Fatalf("Decode(DELETE) = %v", err)
	}
	if string(f.Payload) != "data_sync" || f.Header.PayloadSize != 9 {
		t.Errorf("Payload = %q (size %d), want data_sync", f.Payload, f.Header.PayloadSize)
	}
	m, err := ParseMessage(&f.Header)
	if err != nil {
		t.Fatalf("ParseMessage = %v", err)
	}
	if m.Request.Method != "DELETE" {
		t.Errorf("Method = %q, want DELETE", m.Request.Method)
	}
}

// TestDecodePrefixes checks that every cut of a valid frame before its end
// is ErrTruncated, and every cut after it decodes the same frame.
func TestDecodePrefixes(t *testing.T) {
	for _, tc := range decodeCases {
		if tc.wantErr != nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			full, err := Decode([]byte(tc.msg), 0)
			if err != nil {
				t.Fatal(err)
			}
			end := frameEnd(t, tc.msg, full.Header.PayloadSize)
			for n := range len(tc.msg) {
				f, err := Decode([]byte(tc.msg[:n]), 0)
				switch {
				case n < end && !errors.Is(err, ErrTruncated):
					t.Fatalf("Decode(%q) = %v, want ErrTruncated", tc.msg[:n], err)
				case n >= end && err != nil:
					t.Fatalf("Decode(%q) = %v, want success", tc.msg[:n], err)
				case n >= end:
					checkFrame(t, f, full)
				}
			}
		})
	}
}

// frameEnd returns the length of the frame in msg without trailing bytes.
func frameEnd(t testing.TB, msg string, size int) int {
	t.Helper()
	i := strings.Index(msg, "\r\n")
	var h int
	if _, err := fmt.Sscanf(msg[len(preamble):i], "%d", &h); err != nil {
		t.Fatal(err)
	}
	end := i + 2 + h
	if size > 0 {
		end += 2 + size
	}
	return end
}

func TestDecodePayloadAliasesCapped(t *testing.T) {
	msg := []byte(frame(`{"method":"m","id":"1","payload_size":3}`, "\r\nabcdef"))
	f, err := Decode(msg, 0)
	if err != nil {
		t.Fatal(err)
	}
	if cap(f.Payload) != 3 {
		t.Errorf("cap(Payload) = %d, want 3 so appends cannot clobber msg", cap(f.Payload))
	}
	_ = append(f.Payload, 'X')
	if !bytes.HasSuffix(msg, []byte("abcdef")) {
		t.Errorf("append to Payload changed msg: %q", msg)
	}
}

func TestDecodeHeaderIsCopied(t *testing.T) {
	msg := []byte(frame(`{"method":"m","id":"TM1","x":"abc","payload_size":0}`, ""))
	f, err := Decode(msg, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range msg {
		msg[i] = 'Z'
	}
	if f.Header.Method != "m" || f.Header.ID != "TM1" || string(f.Header.Raw("x")) != `"abc"` {
		t.Errorf("header changed with msg: %+v %s", f.Header, f.Header.Raw("x"))
	}
}
