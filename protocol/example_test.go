package protocol_test

import (
	"errors"
	"fmt"

	"github.com/chorus-sync/chorus/protocol"
)

func ExampleDecode() {
	msg := []byte("TWILSOCK V3.0 47\r\n" +
		`{"id":"TM1","method":"update","token":"eyJ…"}` + "\r\n")
	f, err := protocol.Decode(msg, 64<<10)
	if err != nil {
		fmt.Println(err)
		return
	}
	u, err := protocol.ParseUpdate(&f.Header)
	fmt.Println(f.Header.Method, f.Header.ID, u.Token, err)

	_, err = protocol.Decode([]byte("TWILSOCK V2.0 2\r\n{}"), 64<<10)
	fmt.Println(errors.Is(err, protocol.ErrBadVersion), errors.Is(err, protocol.ErrMalformed))
	// Output:
	// update TM1 eyJ… <nil>
	// true true
}

func ExampleAppendNotification() {
	payload := []byte(`{"event_type":"document_removed","event":{"id":8}}`)
	frame := protocol.AppendNotification(nil, "TM1", protocol.MessageTypeDocument, payload)
	fmt.Printf("%q\n", frame)
	// Output:
	// "TWILSOCK V3.0 133\r\n{\"method\":\"notification\",\"id\":\"TM1\",\"message_type\":\"com.twilio.rtd.cds.document\",\"payload_type\":\"application/json\",\"payload_size\":50}\r\n{\"event_type\":\"document_removed\",\"event\":{\"id\":8}}"
}

func ExampleEncode() {
	h := protocol.NewInitReply("TM1", "ct_1", []string{protocol.CapabilityClientUpdate})
	if err := h.Set("debug_info", map[string]string{"node": "chorus-1"}); err != nil {
		panic(err)
	}
	fmt.Printf("%q\n", protocol.Encode(nil, h, nil))

	expired := protocol.NewClose("TM2", protocol.Status{Code: 410, Status: "TOKEN_EXPIRED", ErrorCode: 20104})
	fmt.Printf("%q\n", protocol.Encode(nil, expired, nil))
	// Output:
	// "TWILSOCK V3.0 176\r\n{\"method\":\"reply\",\"id\":\"TM1\",\"status\":{\"code\":200,\"status\":\"OK\"},\"capabilities\":[\"client_update\"],\"continuation_token\":\"ct_1\",\"debug_info\":{\"node\":\"chorus-1\"},\"payload_size\":0}\r\n"
	// "TWILSOCK V3.0 111\r\n{\"method\":\"close\",\"id\":\"TM2\",\"status\":{\"code\":410,\"status\":\"TOKEN_EXPIRED\",\"errorCode\":20104},\"payload_size\":0}\r\n"
}

func ExampleParseMessage() {
	msg := protocol.Encode(nil, mustHeader(map[string]any{
		"method": "message", "id": "TM1", "active_grant": "data_sync",
		"http_request": map[string]any{
			"host": "cds.example", "method": "GET", "path": "/v3/Maps/MP1/Items/k%2F1%20%C3%A9",
			"params":  map[string]any{"Order": "asc", "Key": []string{"a%20b"}},
			"headers": map[string]string{"If-Match": "1"},
		},
	}), nil)
	f, _ := protocol.Decode(msg, 64<<10)
	m, err := protocol.ParseMessage(&f.Header)
	if err != nil {
		panic(err)
	}
	segs, _ := m.Request.PathSegments()
	q, _ := m.Request.Query()
	fmt.Printf("%s %q %q %s\n", m.Request.Method, segs, q["Key"], m.Request.Header("if-match"))
	// Output:
	// GET ["v3" "Maps" "MP1" "Items" "k/1 é"] ["a b"] 1
}

func mustHeader(v any) *protocol.Header {
	h, err := protocol.HeaderOf(v)
	if err != nil {
		panic(err)
	}
	return h
}
