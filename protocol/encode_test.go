package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestEncodeExact(t *testing.T) {
	const id = "TMf371fa68-c309-48b4-bc23-e8dab391f126"
	withExtra := NewReply("TM1", StatusOK)
	if err := withExtra.Set("debug_info", map[string]string{"node": "chorus-1"}); err != nil {
		t.Fatal(err)
	}
	if err := withExtra.SetRaw("offline_storage", []byte("{ \"data_sync\" :\r\n {\"storage_id\": \"s 1\"} }")); err != nil {
		t.Fatal(err)
	}
	withExtra.PayloadType = ContentTypeJSON
	tests := []struct {
		name    string
		h       *Header
		payload string
		want    string
	}{
		{
			name: "spec init reply",
			h:    NewReply(id, StatusOK),
			want: specInitReply,
		},
		{
			name: "init reply with continuation token and capabilities",
			h:    NewInitReply(id, "ct_9b1c6c0a2f0e4a0c", []string{CapabilityClientUpdate}),
			want: frame(`{"method":"reply","id":"`+id+`","status":{"code":200,"status":"OK"},"capabilities":["client_update"],"continuation_token":"ct_9b1c6c0a2f0e4a0c","payload_size":0}`, "\r\n"),
		},
		{
			name: "init reply with empty capabilities",
			h:    NewInitReply("TM1", "", []string{}),
			want: frame(`{"method":"reply","id":"TM1","status":{"code":200,"status":"OK"},"capabilities":[],"payload_size":0}`, "\r\n"),
		},
		{
			name: "expired token",
			h:    NewReply("TM1", Status{Code: 401, Status: "UNAUTHORIZED", ErrorCode: 20104, Description: "Access Token expired or expiration date invalid"}),
			want: frame(`{"method":"reply","id":"TM1","status":{"code":401,"status":"UNAUTHORIZED","errorCode":20104,"description":"Access Token expired or expiration date invalid"},"payload_size":0}`, "\r\n"),
		},
		{
			name:    "429 with backoff policy",
			h:       NewReply("TM1", Status{Code: 429, Status: "TOO_MANY_REQUESTS"}),
			payload: string(BackoffPayload(3000, 5000)),
			want:    frame(`{"method":"reply","id":"TM1","status":{"code":429,"status":"TOO_MANY_REQUESTS"},"payload_size":68}`, "\r\n"+`{"backoff_policy":{"reconnect_min_ms":3000,"reconnect_max_ms":5000}}`),
		},
		{
			name: "client_update (spec §3.1)",
			h:    NewClientUpdate("TMf94e265f8418db40aee16cfe609d0004", ClientUpdateTokenAboutToExpire),
			want: frame(`{"method":"client_update","id":"TMf94e265f8418db40aee16cfe609d0004","client_update_type":"token_about_to_expire","payload_size":0}`, "\r\n"),
		},
		{
			name: "close 410",
			h:    NewClose("TM1", Status{Code: 410, Status: "TOKEN_EXPIRED", ErrorCode: 20104, Description: "Access Token expired or expiration date invalid"}),
			want: frame(`{"method":"close","id":"TM1","status":{"code":410,"status":"TOKEN_EXPIRED","errorCode":20104,"description":"Access Token expired or expiration date invalid"},"payload_size":0}`, "\r\n"),
		},
		{
			name:    "close 308",
			h:       NewClose("TM1", Status{Code: 308, Status: "OFFLOAD"}),
			payload: string(BackoffPayload(2000, 0)),
			want:    frame(`{"method":"close","id":"TM1","status":{"code":308,"status":"OFFLOAD"},"payload_size":44}`, "\r\n"+`{"backoff_policy":{"reconnect_min_ms":2000}}`),
		},
		{
			name: "ping (spec §2.5)",
			h:    NewPing("TM1"),
			want: frame(`{"method":"ping","id":"TM1","payload_size":0}`, "\r\n"),
		},
		{
			name:    "notification",
			h:       NewNotification("TM942c23a11aa9adf29e1a81e5d5cf2db3", MessageTypeDocument),
			payload: `{"event_type":"x"}`,
			want:    frame(`{"method":"notification","id":"TM942c23a11aa9adf29e1a81e5d5cf2db3","message_type":"com.twilio.rtd.cds.document","payload_type":"application/json","payload_size":18}`, "\r\n"+`{"event_type":"x"}`),
		},
		{
			name:    "http reply with headers",
			h:       NewHTTPReply("TM1", Status{Code: 201, Status: "Created"}, map[string]string{"Content-Type": ContentTypeJSON, "Retry-After": "1"}),
			payload: `{}`,
			want:    frame(`{"method":"reply","id":"TM1","status":{"code":200,"status":"OK"},"http_headers":{"Content-Type":"application/json","Retry-After":"1"},"http_status":{"code":201,"status":"Created"},"payload_type":"application/json","payload_size":2}`, "\r\n{}"),
		},
		{
			name:    "extras sorted and compacted",
			h:       withExtra,
			payload: "x",
			want:    frame(`{"method":"reply","id":"TM1","status":{"code":200,"status":"OK"},"debug_info":{"node":"chorus-1"},"offline_storage":{"data_sync":{"storage_id":"s 1"}},"payload_type":"application/json","payload_size":1}`, "\r\nx"),
		},
		{
			name: "zero header",
			h:    &Header{},
			want: frame(`{"method":"","id":"","payload_size":0}`, "\r\n"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(Encode(nil, tc.h, []byte(tc.payload)))
			if got != tc.want {
				t.Errorf("Encode = %q\nwant     %q", got, tc.want)
			}
			// Appending keeps what dst held.
			got2 := string(Encode([]byte("prefix"), tc.h, []byte(tc.payload)))
			if got2 != "prefix"+tc.want {
				t.Errorf("Encode(prefix) = %q", got2)
			}
		})
	}
}

func TestAppendNotification(t *testing.T) {
	payload := []byte(`{"event_type":"document_updated","event":{"id":7,"document_sid":"ET0ce512752e9276676889afc7b3cd6311","document_revision":"7","document_data":{"t":23}}}`)
	got := AppendNotification(nil, "TM942c23a11aa9adf29e1a81e5d5cf2db3", MessageTypeDocument, payload)
	want := frame(`{"method":"notification","id":"TM942c23a11aa9adf29e1a81e5d5cf2db3","message_type":"com.twilio.rtd.cds.document","payload_type":"application/json","payload_size":`+itoa(len(payload))+`}`, "\r\n"+string(payload))
	if string(got) != want {
		t.Errorf("AppendNotification = %q\nwant %q", got, want)
	}
	viaHeader := Encode(nil, NewNotification("TM942c23a11aa9adf29e1a81e5d5cf2db3", MessageTypeDocument), payload)
	if !bytes.Equal(got, viaHeader) {
		t.Errorf("AppendNotification = %q\nEncode(NewNotification) = %q", got, viaHeader)
	}
}

func TestAppendHTTPReply(t *testing.T) {
	body := `{"status":404,"code":54100,"message":"Document not found","more_info":"https://www.twilio.com/docs/errors/54100"}`
	got := AppendHTTPReply([]byte("x"), "TM5d44c281-894b-4c7c-800e-85311c8cf72e", Status{Code: 404, Status: "Not Found", ErrorCode: 1, Description: "dropped"}, []byte(body))
	want := "x" + frame(`{"method":"reply","id":"TM5d44c281-894b-4c7c-800e-85311c8cf72e","status":{"code":200,"status":"OK"},"http_status":{"code":404,"status":"Not Found"},"http_headers":{"Content-Type":"application/json"},"payload_type":"application/json","payload_size":`+itoa(len(body))+`}`, "\r\n"+body)
	if string(got) != want {
		t.Errorf("AppendHTTPReply = %q\nwant %q", got, want)
	}

	got = AppendHTTPReply(nil, "TM1", Status{Code: 204, Status: "No Content"}, nil)
	want = frame(`{"method":"reply","id":"TM1","status":{"code":200,"status":"OK"},"http_status":{"code":204,"status":"No Content"},"payload_size":0}`, "\r\n")
	if string(got) != want {
		t.Errorf("AppendHTTPReply(empty) = %q\nwant %q", got, want)
	}
}

func itoa(n int) string { return string(json.RawMessage(mustJSON(n))) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// TestEncodeEscaping checks that hostile strings produce valid frames with
// no raw CR or LF in the header, and decode back.
func TestEncodeEscaping(t *testing.T) {
	strs := []string{
		"",
		"plain",
		"\r\n",
		"a\"b\\c/d",
		"\x00\x01\x1f\x7f",
		"<>&",
		"\u2028\u2029",
		"é→✓😀",
		"\xff\xfe bad \xc3",
		"\ufffd",
		"TWILSOCK V3.0 2\r\n{}\r\n",
	}
	for _, s := range strs {
		h := &Header{Method: s, ID: s, Status: &Status{Code: -1, Status: s, Description: s}, PayloadType: s}
		h.setString(s+"k", s)
		msg := Encode(nil, h, []byte("\r\n"))
		f, err := Decode(msg, 0)
		if s == "" {
			if !errors.Is(err, ErrMissingMethod) {
				t.Errorf("Decode(Encode(empty method)) = %v, want ErrMissingMethod", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Decode(Encode(%q)) = %v\n%q", s, err, msg)
		}
		hdrBytes := msg[bytes.Index(msg, []byte("\r\n"))+2 : len(msg)-4]
		if bytes.ContainsAny(hdrBytes, "\r\n") {
			t.Errorf("header of %q holds raw CR/LF: %q", s, hdrBytes)
		}
		// Invalid UTF-8 becomes U+FFFD, as with encoding/json.
		var want string
		if err := json.Unmarshal(mustJSON(s), &want); err != nil {
			t.Fatal(err)
		}
		var extra string
		if ok, err := f.Header.Get(want+"k", &extra); !ok || err != nil || extra != want {
			t.Errorf("extra of %q = %q, %v, %v", s, extra, ok, err)
		}
		if f.Header.Method != want || f.Header.ID != want || f.Header.Status.Status != want || f.Header.Status.Description != want || f.Header.PayloadType != want {
			t.Errorf("decoded header of %q = %+v %+v", s, f.Header, f.Header.Status)
		}
		if string(f.Payload) != "\r\n" {
			t.Errorf("Payload = %q", f.Payload)
		}
	}
}

// TestAppendStringMatchesEncodingJSON: appendString agrees with
// encoding/json except for the HTML escapes.
func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"a\x00\n\r\t\"\\\u2028\u2029\x7f\xffé😀", "\x80", "\xed\xa0\x80"} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSuffix(buf.String(), "\n")
		if got := string(AppendJSONString(nil, s)); got != want {
			t.Errorf("AppendJSONString(%q) = %s, want %s", s, got, want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range decodeCases {
		if tc.wantErr != nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			f1, err := Decode([]byte(tc.msg), 0)
			if err != nil {
				t.Fatal(err)
			}
			enc1 := Encode(nil, &f1.Header, f1.Payload)
			f2, err := Decode(enc1, 0)
			if err != nil {
				t.Fatalf("Decode(Encode(Decode(msg))) = %v\n%q", err, enc1)
			}
			checkFrame(t, f2, f1)
			if enc2 := Encode(nil, &f2.Header, f2.Payload); !bytes.Equal(enc1, enc2) {
				t.Errorf("second encoding differs:\n%q\n%q", enc1, enc2)
			}
		})
	}
}

func TestHeaderFields(t *testing.T) {
	var h Header
	if ok, err := h.Get("x", new(int)); ok || err != nil {
		t.Errorf("Get(absent) = %v, %v", ok, err)
	}
	for _, k := range []string{"method", "id", "status", "payload_size", "payload_type"} {
		if err := h.Set(k, 1); !errors.Is(err, ErrReservedField) {
			t.Errorf("Set(%q) = %v, want ErrReservedField", k, err)
		}
		if err := h.SetRaw(k, []byte("1")); !errors.Is(err, ErrReservedField) {
			t.Errorf("SetRaw(%q) = %v, want ErrReservedField", k, err)
		}
	}
	if err := h.Set("bad", make(chan int)); err == nil {
		t.Error("Set(chan) succeeded")
	}
	for _, raw := range []string{"", "{", "1 2", "\"\xff\""} {
		if err := h.SetRaw("bad", []byte(raw)); err == nil {
			t.Errorf("SetRaw(%q) succeeded", raw)
		}
	}
	if h.Has("bad") {
		t.Error("failed Set stored a value")
	}
	if err := h.Set("n", 42); err != nil {
		t.Fatal(err)
	}
	raw := []byte(" [1, \"a b\"]\n")
	if err := h.SetRaw("a", raw); err != nil {
		t.Fatal(err)
	}
	raw[2] = '9' // SetRaw copied
	var n int
	if ok, err := h.Get("n", &n); !ok || err != nil || n != 42 {
		t.Errorf("Get(n) = %d, %v, %v", n, ok, err)
	}
	var s string
	if ok, err := h.Get("n", &s); !ok || err == nil {
		t.Errorf("Get(n, string) = %v, %v; want type error", ok, err)
	}
	if got := string(h.Raw("a")); got != `[1,"a b"]` {
		t.Errorf("Raw(a) = %s", got)
	}
	var keys []string
	for k := range h.Fields() {
		keys = append(keys, k)
		break
	}
	for k := range h.Fields() {
		keys = append(keys, k)
	}
	if want := []string{"a", "a", "n"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("Fields keys = %q, want %q", keys, want)
	}

	h.Status = &Status{Code: 1}
	c := h.Clone()
	c.Status.Code = 2
	c.Delete("n")
	if h.Status.Code != 1 || !h.Has("n") || c.Has("n") {
		t.Errorf("Clone shares state: %+v %+v", h, c)
	}
}

func TestHeaderJSON(t *testing.T) {
	h := NewHTTPReply("TM1", Status{Code: 200, Status: "OK"}, nil)
	h.PayloadSize = 7
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"method":"reply","id":"TM1","status":{"code":200,"status":"OK"},"http_status":{"code":200,"status":"OK"},"payload_type":"application/json","payload_size":7}`
	if string(b) != want {
		t.Errorf("json.Marshal(header) = %s, want %s", b, want)
	}
	var back Header
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, h) {
		t.Errorf("Unmarshal(Marshal(h)) = %+v, want %+v", back, *h)
	}
	if err := json.Unmarshal([]byte(`{"method":1}`), &back); !errors.Is(err, ErrBadHeader) {
		t.Errorf("Unmarshal(bad) = %v, want ErrBadHeader", err)
	}
}

func TestHeaderOf(t *testing.T) {
	type initFrame struct {
		ID          string   `json:"id"`
		Method      string   `json:"method"`
		Token       string   `json:"token"`
		Caps        []string `json:"capabilities"`
		ContToken   *string  `json:"continuation_token"`
		PayloadSize int      `json:"payload_size"`
	}
	h, err := HeaderOf(initFrame{ID: "TM1", Method: MethodInit, Token: "t", Caps: []string{"client_update"}, PayloadSize: 99})
	if err != nil {
		t.Fatal(err)
	}
	got := string(Encode(nil, h, nil))
	want := frame(`{"method":"init","id":"TM1","capabilities":["client_update"],"continuation_token":null,"token":"t","payload_size":0}`, "\r\n")
	if got != want {
		t.Errorf("Encode(HeaderOf(struct)) = %q\nwant %q", got, want)
	}

	h, err = HeaderOf(map[string]any{"method": "ping", "id": "TM2", "status": map[string]any{"code": 200, "status": "OK"}, "x": []int{1}})
	if err != nil {
		t.Fatal(err)
	}
	got = string(Encode(nil, h, nil))
	want = frame(`{"method":"ping","id":"TM2","status":{"code":200,"status":"OK"},"x":[1],"payload_size":0}`, "\r\n")
	if got != want {
		t.Errorf("Encode(HeaderOf(map)) = %q\nwant %q", got, want)
	}

	for _, v := range []any{[]int{1}, "x", nil, map[string]any{"payload_size": -1}, map[string]any{"id": 1}, make(chan int)} {
		if _, err := HeaderOf(v); err == nil {
			t.Errorf("HeaderOf(%#v) succeeded", v)
		}
	}
}

func TestNewID(t *testing.T) {
	re := regexp.MustCompile(`^TM[0-9a-f]{32}$`)
	a, b := NewID(), NewID()
	if !re.MatchString(a) || a == b {
		t.Errorf("NewID() = %q, %q", a, b)
	}
}

// TestEncodeAllocs guards the hot paths: no allocation when dst is large
// enough.
func TestEncodeAllocs(t *testing.T) {
	payload := bytes.Repeat([]byte("x"), 4096)
	dst := make([]byte, 0, 8192)
	reply := NewHTTPReply("TM1", StatusOK, map[string]string{"a": "b"})
	ping := NewPing("TM1")
	tests := map[string]func(){
		"AppendNotification": func() {
			dst = AppendNotification(dst[:0], "TM942c23a11aa9adf29e1a81e5d5cf2db3", MessageTypeDocument, payload)
		},
		"AppendHTTPReply": func() { dst = AppendHTTPReply(dst[:0], "TM1", Status{Code: 404, Status: "Not Found"}, payload) },
		"Encode extras":   func() { dst = Encode(dst[:0], reply, payload) },
		"Encode ping":     func() { dst = Encode(dst[:0], ping, nil) },
	}
	for name, fn := range tests {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s: %v allocs, want 0", name, n)
		}
	}
}
