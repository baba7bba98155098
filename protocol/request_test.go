package protocol

import (
	"errors"
	"net/url"
	"reflect"
	"testing"
)

// Spec §2.2, token shortened.
const specInit = `{"id":"TMf371fa68-c309-48b4-bc23-e8dab391f126","method":"init",
 "token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImN0eSI6InR3aWxpby1mcGE7dj0xIn0.eyJ",
 "continuation_token":null,
 "metadata":{"ver":"1.0.2","env":"Node.js","envv":"20.20.2","os":"Linux","osv":"unknown","osa":64,
             "type":"sync","sdk":"JS","sdkv":"4.0.1"},
 "registrations":[{"product":"data_sync","type":"ers","notification_protocol_version":0,
   "message_types":["twilio.sync.event","com.twilio.rtd.cds.document","com.twilio.rtd.cds.list","com.twilio.rtd.cds.map"]}],
 "tweaks":null,
 "capabilities":["client_update","offline_storage","telemetry.v1"],
 "payload_size":0}`

func decodeHeader(t *testing.T, header string) *Header {
	t.Helper()
	h := new(Header)
	if err := parseHeader(h, []byte(header)); err != nil {
		t.Fatalf("parseHeader(%s) = %v", header, err)
	}
	return h
}

func TestParseInit(t *testing.T) {
	in, err := ParseInit(decodeHeader(t, specInit))
	if err != nil {
		t.Fatal(err)
	}
	if in.Token != "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImN0eSI6InR3aWxpby1mcGE7dj0xIn0.eyJ" || in.ContinuationToken != "" {
		t.Errorf("Init = %+v", in)
	}
	if want := []string{"client_update", "offline_storage", "telemetry.v1"}; !reflect.DeepEqual(in.Capabilities, want) {
		t.Errorf("Capabilities = %q, want %q", in.Capabilities, want)
	}
	if want := `{"ver":"1.0.2","env":"Node.js","envv":"20.20.2","os":"Linux","osv":"unknown","osa":64,"type":"sync","sdk":"JS","sdkv":"4.0.1"}`; string(in.Metadata) != want {
		t.Errorf("Metadata = %s, want %s", in.Metadata, want)
	}
	regs, err := in.ParseRegistrations()
	if err != nil {
		t.Fatal(err)
	}
	want := []Registration{{Product: "data_sync", Type: "ers", MessageTypes: []string{MessageTypeSyncEvent, MessageTypeDocument, MessageTypeList, MessageTypeMap}}}
	if !reflect.DeepEqual(regs, want) {
		t.Errorf("Registrations = %+v, want %+v", regs, want)
	}

	in, err = ParseInit(decodeHeader(t, `{"method":"init","id":"1","token":"t","continuation_token":"ct1","capabilities":[1],"metadata":null,"registrations":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	if in.ContinuationToken != "ct1" || in.Capabilities != nil || in.Metadata != nil {
		t.Errorf("Init = %+v", in)
	}
	if _, err := in.ParseRegistrations(); !errors.Is(err, ErrInvalidField) {
		t.Errorf("ParseRegistrations({}) = %v, want ErrInvalidField", err)
	}

	in, err = ParseInit(decodeHeader(t, `{"method":"init","id":"1","token":"t","continuation_token":5}`))
	if err != nil || in.ContinuationToken != "" {
		t.Errorf("ParseInit(continuation_token 5) = %+v, %v; want lenient", in, err)
	}
	if regs, err := in.ParseRegistrations(); regs != nil || err != nil {
		t.Errorf("ParseRegistrations(absent) = %v, %v", regs, err)
	}

	for _, h := range []string{
		`{"method":"init","id":"1"}`,
		`{"method":"init","id":"1","token":null}`,
		`{"method":"init","id":"1","token":""}`,
		`{"method":"init","id":"1","token":5}`,
	} {
		if _, err := ParseInit(decodeHeader(t, h)); !errors.Is(err, ErrInvalidField) {
			t.Errorf("ParseInit(%s) = %v, want ErrInvalidField", h, err)
		}
		if _, err := ParseUpdate(decodeHeader(t, h)); !errors.Is(err, ErrInvalidField) {
			t.Errorf("ParseUpdate(%s) = %v, want ErrInvalidField", h, err)
		}
	}
}

func TestParseUpdate(t *testing.T) {
	u, err := ParseUpdate(decodeHeader(t, `{"id":"TMb5577cd2-cc6f-4e73-acb4-28e5f9a85241","method":"update","token":"eyJ…","payload_size":0}`))
	if err != nil || u.Token != "eyJ…" {
		t.Errorf("ParseUpdate = %+v, %v", u, err)
	}
}

func TestParseMessage(t *testing.T) {
	m, err := ParseMessage(decodeHeader(t, specMessageHeader))
	if err != nil {
		t.Fatal(err)
	}
	r := m.Request
	if m.ActiveGrant != "data_sync" || r.Host != "127.0.0.1:8080" || r.Method != "POST" || r.Path != "/v3/Documents/ET06db2871983f147042eb23a31d5415c0" {
		t.Errorf("Message = %+v", m)
	}
	if r.Params == nil || len(r.Params) != 0 {
		t.Errorf("Params = %#v, want empty", r.Params)
	}
	for name, want := range map[string]string{
		"If-Match":          "1",
		"if-match":          "1",
		"TWILIO-REQUEST-ID": "RQ88b5d692ce67438f9506285e0d89dca4",
		"Content-Type":      ContentTypeJSON,
		"X-Absent":          "",
	} {
		if got := r.Header(name); got != want {
			t.Errorf("Header(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestParseMessageParams(t *testing.T) {
	h := decodeHeader(t, `{"method":"message","id":"1","http_request":{"method":"GET","path":"/v3/Maps/MP1/Items/k%2F1%20%C3%A9",`+
		`"params":{"PageSize":"10","Order":"asc","Key":["a%20b","c+d"],"Empty":[],"Nil":null,"K%C3%A9y":"%E2%9C%93"}}}`)
	m, err := ParseMessage(h)
	if err != nil {
		t.Fatal(err)
	}
	r := m.Request
	if m.ActiveGrant != "" || r.Host != "" || r.Headers == nil {
		t.Errorf("Message = %+v", m)
	}
	wantRaw := map[string][]string{
		"PageSize": {"10"}, "Order": {"asc"}, "Key": {"a%20b", "c+d"}, "Empty": {}, "K%C3%A9y": {"%E2%9C%93"},
	}
	if !reflect.DeepEqual(r.Params, wantRaw) {
		t.Errorf("Params = %q, want %q", r.Params, wantRaw)
	}
	q, err := r.Query()
	if err != nil {
		t.Fatal(err)
	}
	wantQ := url.Values{"PageSize": {"10"}, "Order": {"asc"}, "Key": {"a b", "c+d"}, "Kéy": {"✓"}}
	if !reflect.DeepEqual(q, wantQ) {
		t.Errorf("Query() = %q, want %q", q, wantQ)
	}
	segs, err := r.PathSegments()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"v3", "Maps", "MP1", "Items", "k/1 é"}; !reflect.DeepEqual(segs, want) {
		t.Errorf("PathSegments() = %q, want %q", segs, want)
	}

	bad := HTTPRequest{Path: "/v3/%zz", Params: map[string][]string{"a": {"%"}}}
	if _, err := bad.PathSegments(); !errors.Is(err, ErrInvalidField) {
		t.Errorf("PathSegments(bad) = %v, want ErrInvalidField", err)
	}
	if _, err := bad.Query(); !errors.Is(err, ErrInvalidField) {
		t.Errorf("Query(bad value) = %v, want ErrInvalidField", err)
	}
	bad.Params = map[string][]string{"%": {"a"}}
	if _, err := bad.Query(); !errors.Is(err, ErrInvalidField) {
		t.Errorf("Query(bad key) = %v, want ErrInvalidField", err)
	}
}

func TestParseMessageInvalid(t *testing.T) {
	for _, h := range []string{
		`{"method":"message","id":"1"}`,
		`{"method":"message","id":"1","http_request":null}`,
		`{"method":"message","id":"1","http_request":"GET /"}`,
		`{"method":"message","id":"1","active_grant":5,"http_request":{"method":"GET","path":"/"}}`,
		`{"method":"message","id":"1","http_request":{"path":"/"}}`,
		`{"method":"message","id":"1","http_request":{"method":"","path":"/"}}`,
		`{"method":"message","id":"1","http_request":{"method":"GET"}}`,
		`{"method":"message","id":"1","http_request":{"method":"GET","path":5}}`,
		`{"method":"message","id":"1","http_request":{"method":"GET","path":"/","params":[]}}`,
		`{"method":"message","id":"1","http_request":{"method":"GET","path":"/","params":{"a":1}}}`,
		`{"method":"message","id":"1","http_request":{"method":"GET","path":"/","params":{"a":[1]}}}`,
		`{"method":"message","id":"1","http_request":{"method":"GET","path":"/","params":{"a":{}}}}`,
		`{"method":"message","id":"1","http_request":{"method":"GET","path":"/","headers":{"a":1}}}`,
	} {
		if m, err := ParseMessage(decodeHeader(t, h)); !errors.Is(err, ErrInvalidField) {
			t.Errorf("ParseMessage(%s) = %+v, %v; want ErrInvalidField", h, m, err)
		}
	}
}
