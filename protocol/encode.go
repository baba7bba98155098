package protocol

import (
	"encoding/json"
	"slices"
	"strconv"
	"unicode/utf8"
)

// lengthSlot is written after the preamble while the header is built and
// then replaced by the real length; it has room for any int's digits.
const lengthSlot = "00000000000000000000\r\n"

// frameOverhead is a generous estimate of the fixed bytes of a frame.
const frameOverhead = len(preamble) + len(lengthSlot) + 2

// Encode appends the frame for h and payload to dst and returns the
// extended slice. payload_size is set to len(payload); h.PayloadSize is
// ignored. The header is written as compact JSON: method, id, status, the
// extra fields in key order, payload_type (if set), payload_size.
//
// Encode does not modify h, so one header may be encoded concurrently. It
// does not allocate when dst has enough capacity and h has at most 16 extra
// fields.
func Encode(dst []byte, h *Header, payload []byte) []byte {
	dst = slices.Grow(dst, frameOverhead+64+len(h.Method)+len(h.ID)+len(payload))
	start := len(dst)
	dst = append(dst, preamble+lengthSlot...)
	dst = appendHeader(dst, h, len(payload))
	return finish(dst, start, payload)
}

// finish replaces the length slot of the frame that starts at start, whose
// header ends at len(dst), and appends CR LF and the payload.
func finish(dst []byte, start int, payload []byte) []byte {
	hs := start + len(preamble) + len(lengthSlot)
	hlen := len(dst) - hs
	p := start + len(preamble)
	p = len(strconv.AppendInt(dst[:p], int64(hlen), 10))
	dst[p], dst[p+1] = '\r', '\n'
	p += 2
	copy(dst[p:], dst[hs:])
	dst = dst[:p+hlen]
	dst = append(dst, '\r', '\n')
	return append(dst, payload...)
}

// appendHeader appends the JSON object for h with the given payload_size.
func appendHeader(dst []byte, h *Header, size int) []byte {
	dst = append(dst, `{"method":`...)
	dst = AppendJSONString(dst, h.Method)
	dst = append(dst, `,"id":`...)
	dst = AppendJSONString(dst, h.ID)
	if h.Status != nil {
		dst = append(dst, `,"status":`...)
		dst = appendStatus(dst, h.Status)
	}
	if len(h.extra) > 0 {
		var buf [16]string
		keys := buf[:0]
		for k := range h.extra {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			dst = append(dst, ',')
			dst = AppendJSONString(dst, k)
			dst = append(dst, ':')
			dst = append(dst, h.extra[k]...)
		}
	}
	if h.PayloadType != "" {
		dst = append(dst, `,"payload_type":`...)
		dst = AppendJSONString(dst, h.PayloadType)
	}
	dst = append(dst, `,"payload_size":`...)
	dst = strconv.AppendInt(dst, int64(size), 10)
	return append(dst, '}')
}

// appendStatus appends st as JSON, exactly as encoding/json would.
func appendStatus(dst []byte, st *Status) []byte {
	dst = append(dst, `{"code":`...)
	dst = strconv.AppendInt(dst, int64(st.Code), 10)
	dst = append(dst, `,"status":`...)
	dst = AppendJSONString(dst, st.Status)
	if st.ErrorCode != 0 {
		dst = append(dst, `,"errorCode":`...)
		dst = strconv.AppendInt(dst, int64(st.ErrorCode), 10)
	}
	if st.Description != "" {
		dst = append(dst, `,"description":`...)
		dst = AppendJSONString(dst, st.Description)
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a JSON string. Like encoding/json it
// escapes control characters, U+2028 and U+2029 and replaces invalid UTF-8
// with U+FFFD; unlike it, it leaves <, > and & alone. The result never
// contains a raw CR or LF, as frames require.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += n
			continue
		}
		i += n
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendNotification appends a notification frame:
//
//	{"method":"notification","id":ID,"message_type":MT,"payload_type":"application/json","payload_size":N}
//
// followed by payload, a JSON event envelope such as
// {"event_type":"document_updated","event":{...}}. It is the hot path of
// event fan-out: encode once, share the bytes. It does not allocate when dst
// has enough capacity.
func AppendNotification(dst []byte, id, messageType string, payload []byte) []byte {
	dst = slices.Grow(dst, frameOverhead+110+len(id)+len(messageType)+len(payload))
	start := len(dst)
	dst = append(dst, preamble+lengthSlot+`{"method":"notification","id":`...)
	dst = AppendJSONString(dst, id)
	dst = append(dst, `,"message_type":`...)
	dst = AppendJSONString(dst, messageType)
	dst = append(dst, `,"payload_type":"application/json","payload_size":`...)
	dst = strconv.AppendInt(dst, int64(len(payload)), 10)
	dst = append(dst, '}')
	return finish(dst, start, payload)
}

// AppendHTTPReply appends the reply to an upstream (method "message")
// request: twilsock status 200 OK, the given http_status, and payload as
// the HTTP response body. With a payload it also sets
// http_headers {"Content-Type":"application/json"} and payload_type:
//
//	{"method":"reply","id":ID,"status":{"code":200,"status":"OK"},"http_status":{"code":404,"status":"Not Found"},"http_headers":{"Content-Type":"application/json"},"payload_type":"application/json","payload_size":N}
//
// Only Code and Status of httpStatus are written. For other headers use
// [NewHTTPReply]. It does not allocate when dst has enough capacity.
func AppendHTTPReply(dst []byte, id string, httpStatus Status, payload []byte) []byte {
	dst = slices.Grow(dst, frameOverhead+220+len(id)+len(httpStatus.Status)+len(payload))
	start := len(dst)
	dst = append(dst, preamble+lengthSlot+`{"method":"reply","id":`...)
	dst = AppendJSONString(dst, id)
	dst = append(dst, `,"status":{"code":200,"status":"OK"},"http_status":{"code":`...)
	dst = strconv.AppendInt(dst, int64(httpStatus.Code), 10)
	dst = append(dst, `,"status":`...)
	dst = AppendJSONString(dst, httpStatus.Status)
	dst = append(dst, '}')
	if len(payload) > 0 {
		dst = append(dst, `,"http_headers":{"Content-Type":"application/json"},"payload_type":"application/json"`...)
	}
	dst = append(dst, `,"payload_size":`...)
	dst = strconv.AppendInt(dst, int64(len(payload)), 10)
	dst = append(dst, '}')
	return finish(dst, start, payload)
}

// NewReply returns a reply header with the given status, e.g. the answer to
// init or update, or an error reply. Add fields with [Header.Set].
func NewReply(id string, st Status) *Header {
	return &Header{Method: MethodReply, ID: id, Status: &st}
}

// NewInitReply returns a successful (200 OK) reply to init. Empty
// continuationToken and nil capabilities are omitted.
func NewInitReply(id, continuationToken string, capabilities []string) *Header {
	h := NewReply(id, StatusOK)
	if continuationToken != "" {
		h.setString("continuation_token", continuationToken)
	}
	if capabilities != nil {
		raw := []byte{'['}
		for i, c := range capabilities {
			if i > 0 {
				raw = append(raw, ',')
			}
			raw = AppendJSONString(raw, c)
		}
		h.setExtra("capabilities", append(raw, ']'))
	}
	return h
}

// NewHTTPReply returns the header of a reply to an upstream request, like
// [AppendHTTPReply] but with any http_headers (nil: omitted) and extra
// fields settable. It sets payload_type application/json.
func NewHTTPReply(id string, httpStatus Status, httpHeaders map[string]string) *Header {
	h := NewReply(id, StatusOK)
	h.PayloadType = ContentTypeJSON
	raw := appendStatus(nil, &Status{Code: httpStatus.Code, Status: httpStatus.Status})
	h.setExtra("http_status", raw)
	if httpHeaders != nil {
		raw, _ := json.Marshal(httpHeaders) // map[string]string cannot fail
		h.setExtra("http_headers", raw)
	}
	return h
}

// NewNotification returns a notification header; [AppendNotification] is
// the faster way to encode one.
func NewNotification(id, messageType string) *Header {
	h := &Header{Method: MethodNotification, ID: id, PayloadType: ContentTypeJSON}
	h.setString("message_type", messageType)
	return h
}

// NewClientUpdate returns a client_update header, e.g. with
// [ClientUpdateTokenAboutToExpire].
func NewClientUpdate(id, updateType string) *Header {
	h := &Header{Method: MethodClientUpdate, ID: id}
	h.setString("client_update_type", updateType)
	return h
}

// NewClose returns a server close header with the given status. A payload
// passed to [Encode], such as [BackoffPayload], is JSON; set PayloadType
// if you want it explicit.
func NewClose(id string, st Status) *Header {
	return &Header{Method: MethodClose, ID: id, Status: &st}
}

// NewPing returns a ping header; the client acks it with a reply.
func NewPing(id string) *Header {
	return &Header{Method: MethodPing, ID: id}
}

// BackoffPayload returns the payload of a 429 init reply or a 308 close
// that sets the client's reconnect delay floor:
// {"backoff_policy":{"reconnect_min_ms":MIN,"reconnect_max_ms":MAX}}.
// maxMS <= 0 is omitted.
func BackoffPayload(minMS, maxMS int) []byte {
	b := []byte(`{"backoff_policy":{"reconnect_min_ms":`)
	b = strconv.AppendInt(b, int64(minMS), 10)
	if maxMS > 0 {
		b = append(b, `,"reconnect_max_ms":`...)
		b = strconv.AppendInt(b, int64(maxMS), 10)
	}
	return append(b, "}}"...)
}
