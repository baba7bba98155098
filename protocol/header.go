package protocol

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"iter"
	"maps"
	"slices"
	"unicode/utf8"
)

// Frame methods (header field "method").
const (
	MethodInit         = "init"          // C→S: open a session with a token
	MethodUpdate       = "update"        // C→S: replace the session token
	MethodMessage      = "message"       // C→S: tunnelled HTTP request
	MethodReply        = "reply"         // both: answer or ack
	MethodClose        = "close"         // both: end the session
	MethodTelemetry    = "telemetry.v1"  // C→S: telemetry batch, ignore
	MethodNotification = "notification"  // S→C: Sync event
	MethodClientUpdate = "client_update" // S→C: e.g. token about to expire
	MethodPing         = "ping"          // S→C: keepalive
)

// ContentTypeJSON is the payload_type of JSON payloads.
const ContentTypeJSON = "application/json"

// Notification message types (header field "message_type").
const (
	MessageTypeSyncEvent = "twilio.sync.event"
	MessageTypeDocument  = "com.twilio.rtd.cds.document"
	MessageTypeList      = "com.twilio.rtd.cds.list"
	MessageTypeMap       = "com.twilio.rtd.cds.map"
)

// ClientUpdateTokenAboutToExpire is the client_update_type that makes the
// SDK emit tokenAboutToExpire.
const ClientUpdateTokenAboutToExpire = "token_about_to_expire"

// Capabilities offered in init and confirmed in its reply.
const (
	CapabilityClientUpdate   = "client_update"
	CapabilityOfflineStorage = "offline_storage"
	CapabilityTelemetry      = "telemetry.v1"
)

// Status is the status object of reply and close frames, and the
// http_status of upstream replies (which uses only Code and Status).
// Note the camelCase errorCode.
type Status struct {
	Code        int    `json:"code"`                  // HTTP-like code
	Status      string `json:"status"`                // short text, e.g. "OK"
	ErrorCode   int    `json:"errorCode,omitempty"`   // Twilio error code
	Description string `json:"description,omitempty"` // human-readable text
}

// StatusOK is {"code":200,"status":"OK"}.
var StatusOK = Status{Code: 200, Status: "OK"}

// Header is a frame header. The common fields are typed; every other
// top-level field is kept as raw JSON (see [Header.Get], [Header.Set]) so
// that unknown fields survive a [Decode]/[Encode] round trip.
//
// The zero value is an empty header. Assignment copies share the extra
// fields; see [Header.Clone].
type Header struct {
	Method string
	ID     string
	Status *Status // nil: no status field
	// PayloadSize is the decoded payload_size. Encode ignores it and
	// writes the length of the payload it is given.
	PayloadSize int
	PayloadType string // "" means absent

	// extra holds all other fields as valid, compact JSON without raw
	// CR or LF. Values are never modified in place.
	extra map[string]json.RawMessage
}

// Frame is one decoded Twilsock frame.
type Frame struct {
	Header  Header
	Payload []byte // len(Payload) == Header.PayloadSize; may alias the decoded message
}

// reserved reports whether key is held in a typed Header field.
func reserved(key string) bool { return typedField([]byte(key)) >= 0 }

// Raw returns the raw JSON of the extra (non-typed) field key, or nil if it
// is absent. The returned bytes must not be modified.
func (h *Header) Raw(key string) json.RawMessage { return h.extra[key] }

// Has reports whether the extra field key is present.
func (h *Header) Has(key string) bool {
	_, ok := h.extra[key]
	return ok
}

// Get unmarshals the extra field key into v. It reports false, nil if the
// field is absent.
func (h *Header) Get(key string, v any) (bool, error) {
	raw, ok := h.extra[key]
	if !ok {
		return false, nil
	}
	if sp, ok := v.(*string); ok {
		if s, ok := plainString(raw); ok {
			*sp = s // what json.Unmarshal would store, without its two passes
			return true, nil
		}
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("protocol: header field %q: %w", key, err)
	}
	return true, nil
}

// plainString returns the value of raw, a valid JSON value, if it is just
// a string without escapes in valid UTF-8: then its bytes between the
// quotes are its value.
func plainString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	in := raw[1 : len(raw)-1]
	if bytes.IndexByte(in, '\\') >= 0 || bytes.IndexByte(in, '"') >= 0 || !utf8.Valid(in) {
		return "", false
	}
	return string(in), true
}

// Set marshals v with encoding/json and stores it as the extra field key.
// Keys of typed fields return [ErrReservedField].
func (h *Header) Set(key string, v any) error {
	if reserved(key) {
		return fmt.Errorf("%w: %q", ErrReservedField, key)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("protocol: header field %q: %w", key, err)
	}
	h.setExtra(key, raw)
	return nil
}

// SetRaw stores a copy of raw, which must be valid JSON in UTF-8, as the
// extra field key; whitespace is removed. Keys of typed fields return
// [ErrReservedField].
func (h *Header) SetRaw(key string, raw []byte) error {
	if reserved(key) {
		return fmt.Errorf("%w: %q", ErrReservedField, key)
	}
	if !utf8.Valid(raw) || !json.Valid(raw) {
		return fmt.Errorf("protocol: header field %q: invalid JSON", key)
	}
	h.setExtra(key, compact(slices.Clone(raw)))
	return nil
}

// setString stores s as a JSON string; key must not be reserved.
func (h *Header) setString(key, s string) {
	h.setExtra(key, AppendJSONString(nil, s))
}

// setExtra stores raw, which must be valid compact JSON, without checks.
func (h *Header) setExtra(key string, raw json.RawMessage) {
	if h.extra == nil {
		h.extra = make(map[string]json.RawMessage)
	}
	h.extra[key] = raw
}

// Delete removes the extra field key.
func (h *Header) Delete(key string) { delete(h.extra, key) }

// Fields yields the extra fields in key order.
func (h *Header) Fields() iter.Seq2[string, json.RawMessage] {
	return func(yield func(string, json.RawMessage) bool) {
		for _, k := range slices.Sorted(maps.Keys(h.extra)) {
			if !yield(k, h.extra[k]) {
				return
			}
		}
	}
}

// Clone returns a copy of h that shares nothing mutable with it.
func (h *Header) Clone() Header {
	c := *h
	if h.Status != nil {
		st := *h.Status
		c.Status = &st
	}
	c.extra = maps.Clone(h.extra)
	return c
}

// MarshalJSON returns the header as compact JSON, with payload_size set
// to h.PayloadSize.
func (h Header) MarshalJSON() ([]byte, error) {
	return appendHeader(nil, &h, h.PayloadSize), nil
}

// UnmarshalJSON parses a header object. Unlike [Decode] it does not
// require a method.
func (h *Header) UnmarshalJSON(b []byte) error {
	return parseHeader(h, b)
}

// HeaderOf builds a header from v, a struct or map that encoding/json
// marshals to a JSON object. Fields named method, id, status, payload_type
// fill the typed fields; payload_size is checked and kept in PayloadSize
// ([Encode] replaces it anyway); everything else becomes an extra field.
func HeaderOf(v any) (*Header, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("protocol: header of %T: %w", v, err)
	}
	h := new(Header)
	if err := parseHeader(h, b); err != nil {
		return nil, err
	}
	return h, nil
}

// NewID returns a fresh frame id: "TM" and 32 lower-case hex digits.
func NewID() string {
	var b [16]byte
	rand.Read(b[:])
	var s [2 + 32]byte
	s[0], s[1] = 'T', 'M'
	hex.Encode(s[2:], b[:])
	return string(s[:])
}
