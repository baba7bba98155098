package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

const (
	magic    = "TWILSOCK "
	preamble = "TWILSOCK V3.0 "
	// maxLength saturates H and payload_size while parsing, so that
	// comparisons never overflow, even with a 32-bit int.
	maxLength = 1<<31 - 1
)

// Decode parses one Twilsock V3.0 frame, the whole of one WebSocket
// message. maxFrame limits the header length H and payload_size (each);
// maxFrame <= 0 means no limit beyond the message length.
//
// The payload is sliced by payload_size and never parsed; bytes after it are
// ignored. A frame with payload_size 0 may end right after the header.
// Every error wraps one of the sentinels ErrBadMagic, ErrBadVersion,
// ErrBadHeaderLength, ErrTruncated, ErrBadHeader, ErrMissingMethod,
// ErrBadPayloadSize, ErrBadSeparator or ErrTooLarge. Decode never panics.
//
// Header values are copied out of msg, but Frame.Payload aliases msg.
func Decode(msg []byte, maxFrame int) (*Frame, error) {
	hlen, rest, err := decodePreamble(msg)
	if err != nil {
		return nil, err
	}
	if maxFrame > 0 && hlen > maxFrame {
		return nil, fmt.Errorf("%w: header length %d exceeds %d", ErrTooLarge, hlen, maxFrame)
	}
	if hlen > len(rest) {
		return nil, fmt.Errorf("%w: header length %d, only %d bytes follow", ErrTruncated, hlen, len(rest))
	}
	f := new(Frame)
	if err := parseHeader(&f.Header, rest[:hlen]); err != nil {
		return nil, err
	}
	if f.Header.Method == "" {
		return nil, ErrMissingMethod
	}
	size := f.Header.PayloadSize
	if maxFrame > 0 && size > maxFrame {
		return nil, fmt.Errorf("%w: payload_size %d exceeds %d", ErrTooLarge, size, maxFrame)
	}
	if size == 0 {
		return f, nil
	}
	rest = rest[hlen:]
	if (len(rest) > 0 && rest[0] != '\r') || (len(rest) > 1 && rest[1] != '\n') {
		return nil, ErrBadSeparator
	}
	if len(rest) < 2 || len(rest)-2 < size {
		return nil, fmt.Errorf("%w: payload_size %d, only %d bytes follow", ErrTruncated, size, max(len(rest)-2, 0))
	}
	f.Payload = rest[2 : 2+size : 2+size]
	return f, nil
}

// decodePreamble parses "TWILSOCK V3.0 <H>\r\n" and returns H and the rest
// of msg.
func decodePreamble(msg []byte) (int, []byte, error) {
	if !bytes.HasPrefix(msg, []byte(preamble)) {
		switch {
		case len(msg) < len(preamble) && bytes.HasPrefix([]byte(preamble), msg):
			return 0, nil, ErrTruncated
		case bytes.HasPrefix(msg, []byte(magic)):
			return 0, nil, ErrBadVersion
		}
		return 0, nil, ErrBadMagic
	}
	p := len(preamble)
	n, digits := 0, 0
	for ; p < len(msg) && '0' <= msg[p] && msg[p] <= '9'; p++ {
		n = addDigit(n, msg[p])
		digits++
	}
	switch {
	case p == len(msg):
		return 0, nil, ErrTruncated
	case digits == 0 || msg[p] != '\r':
		return 0, nil, ErrBadHeaderLength
	case p+1 == len(msg):
		return 0, nil, ErrTruncated
	case msg[p+1] != '\n':
		return 0, nil, ErrBadHeaderLength
	}
	return n, msg[p+2:], nil
}

// addDigit returns n*10 + the decimal digit c, saturated at maxLength.
func addDigit(n int, c byte) int {
	if n > (maxLength-9)/10 {
		return maxLength
	}
	return n*10 + int(c-'0')
}

// parseHeader parses the JSON header object b into h. The method may be
// empty. Like JSON.parse and encoding/json, the last of duplicate keys wins.
func parseHeader(h *Header, b []byte) error {
	if !utf8.Valid(b) {
		return fmt.Errorf("%w: invalid UTF-8", ErrBadHeader)
	}
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrBadHeader)
	}
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v) // for the message; rare
		return fmt.Errorf("%w: %w", ErrBadHeader, err)
	}
	*h = Header{}
	// b is a valid JSON object: walk its top level.
	var typed [numTyped][]byte // raw values of the typed fields
	var buf []byte             // backs the extra values
	for i = skipSpace(b, i+1); i < len(b) && b[i] == '"'; {
		kstart := i
		kend, esc := stringEnd(b, i)
		key := b[kstart+1 : kend-1]
		i = skipSpace(b, kend)
		i = skipSpace(b, i+1) // ':'
		vend := valueEnd(b, i)
		val := b[i:vend]
		i = skipSpace(b, vend)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
		if esc {
			var name string
			if err := json.Unmarshal(b[kstart:kend], &name); err != nil {
				return fmt.Errorf("%w: %w", ErrBadHeader, err)
			}
			key = []byte(name)
		}
		if f := typedField(key); f >= 0 {
			typed[f] = val
			continue
		}
		if buf == nil {
			buf = make([]byte, 0, len(b)-(vend-len(val)))
		}
		start := len(buf)
		buf = append(buf, val...)
		if bytes.ContainsAny(val, " \t\r\n") {
			buf = buf[:start+len(compact(buf[start:]))]
		}
		if h.extra == nil {
			h.extra = make(map[string]json.RawMessage)
		}
		h.extra[string(key)] = buf[start:len(buf):len(buf)]
	}
	var err error
	if h.Method, err = stringValue(typed[fieldMethod], "method"); err != nil {
		return err
	}
	if h.ID, err = stringValue(typed[fieldID], "id"); err != nil {
		return err
	}
	if h.PayloadType, err = stringValue(typed[fieldPayloadType], "payload_type"); err != nil {
		return err
	}
	if h.Status, err = statusValue(typed[fieldStatus]); err != nil {
		return err
	}
	if raw := typed[fieldPayloadSize]; raw != nil {
		if h.PayloadSize, err = parseSize(raw); err != nil {
			return err
		}
	}
	return nil
}

// Indexes of the typed header fields.
const (
	fieldMethod = iota
	fieldID
	fieldStatus
	fieldPayloadSize
	fieldPayloadType
	numTyped
)

// typedField returns the index of the typed field named key, or -1.
func typedField(key []byte) int {
	switch string(key) { // does not allocate
	case "method":
		return fieldMethod
	case "id":
		return fieldID
	case "status":
		return fieldStatus
	case "payload_size":
		return fieldPayloadSize
	case "payload_type":
		return fieldPayloadType
	}
	return -1
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// stringEnd returns the index after the JSON string that starts at b[i],
// and whether it holds escapes.
func stringEnd(b []byte, i int) (end int, escaped bool) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			return i + 1, escaped
		}
	}
	return len(b), escaped
}

// valueEnd returns the index after the valid JSON value that starts at
// b[i].
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		end, _ := stringEnd(b, i)
		return end
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i, _ = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
	}
	return i
}

// stringValue returns the value of a string field: a JSON string, null,
// or absent (nil raw).
func stringValue(raw []byte, key string) (string, error) {
	if raw == nil || raw[0] == 'n' {
		return "", nil
	}
	if raw[0] != '"' {
		return "", fmt.Errorf("%w: %s is not a string", ErrBadHeader, key)
	}
	if bytes.IndexByte(raw, '\\') >= 0 {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrBadHeader, key, err)
		}
		return s, nil
	}
	// Valid JSON and valid UTF-8 without escapes: the bytes are the value.
	switch s := raw[1 : len(raw)-1]; string(s) {
	case MethodReply:
		return MethodReply, nil
	case MethodMessage:
		return MethodMessage, nil
	case ContentTypeJSON:
		return ContentTypeJSON, nil
	default:
		return string(s), nil
	}
}

// statusValue parses the status field: an object, null or absent.
func statusValue(raw []byte) (*Status, error) {
	switch {
	case raw == nil || raw[0] == 'n':
		return nil, nil
	case raw[0] != '{':
		return nil, fmt.Errorf("%w: status is not an object", ErrBadHeader)
	case string(raw) == `{"code":200,"status":"OK"}`: // every ack
		return &Status{Code: 200, Status: "OK"}, nil
	}
	st := new(Status)
	if err := json.Unmarshal(raw, st); err != nil {
		return nil, fmt.Errorf("%w: status: %w", ErrBadHeader, err)
	}
	return st, nil
}

// parseSize parses payload_size: a JSON integer >= 0, or null for 0.
func parseSize(raw []byte) (int, error) {
	if string(raw) == "null" {
		return 0, nil
	}
	if raw[0] == '-' {
		if string(raw) == "-0" {
			return 0, nil
		}
		return 0, fmt.Errorf("%w: %s is negative", ErrBadPayloadSize, raw)
	}
	n := 0
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: %.20s is not an integer", ErrBadPayloadSize, raw)
		}
		n = addDigit(n, c)
	}
	return n, nil
}

// compact removes JSON whitespace outside strings from b, in place. b must
// be valid JSON.
func compact(b []byte) []byte {
	w := 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == ' ', c == '\t', c == '\r', c == '\n':
			continue
		case c == '"':
			inString = true
		}
		b[w] = c
		w++
	}
	return b[:w]
}
