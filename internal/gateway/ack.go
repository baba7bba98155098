package gateway

// isPlainAck reports whether msg is a twilsock reply the session can drop
// without decoding it: the ack the SDK sends for every frame,
//
//	TWILSOCK V3.0 <H>\r\n{"id":"…","method":"reply","payload_type":"application/json","status":{"code":200,"status":"OK"},"payload_size":0}
//
// with its members in any order (the Go encoder writes method first),
// payload_type, status and payload_size optional, and no whitespace.
// It is exact rather than general: true only for frames that
// protocol.Decode(msg, maxFrame) accepts as a reply with no payload
// (anything unusual, e.g. escapes, non-ASCII ids, other statuses, duplicate
// keys or a payload, answers false and goes through the full decoder).
// It does not allocate.
func isPlainAck(msg []byte, maxFrame int) bool {
	const preamble = "TWILSOCK V3.0 "
	if len(msg) < len(preamble)+3 || string(msg[:len(preamble)]) != preamble {
		return false
	}
	// H: 1 to 4 digits, no leading zero.
	p := len(preamble)
	hlen := 0
	for d := 0; p < len(msg) && '0' <= msg[p] && msg[p] <= '9'; d++ {
		if d == 4 || (d == 0 && msg[p] == '0') {
			return false
		}
		hlen = hlen*10 + int(msg[p]-'0')
		p++
	}
	if p+2 > len(msg) || msg[p] != '\r' || msg[p+1] != '\n' {
		return false
	}
	p += 2
	if hlen < 2 || hlen > len(msg)-p || (maxFrame > 0 && hlen > maxFrame) {
		return false
	}
	// Bytes after the header are ignored by Decode when payload_size is 0.
	h := msg[p : p+hlen]
	if h[0] != '{' || h[len(h)-1] != '}' {
		return false
	}
	const (
		seenID = 1 << iota
		seenMethod
		seenType
		seenStatus
		seenSize
	)
	seen := 0
	i := 1
	for {
		var bit int
		var val string // the exact value required; "" for the id
		switch {
		case hasAt(h, i, `"id":`):
			bit, i = seenID, i+len(`"id":`)
		case hasAt(h, i, `"method":`):
			bit, i, val = seenMethod, i+len(`"method":`), `"reply"`
		case hasAt(h, i, `"payload_type":`):
			bit, i, val = seenType, i+len(`"payload_type":`), `"application/json"`
		case hasAt(h, i, `"status":`):
			bit, i, val = seenStatus, i+len(`"status":`), `{"code":200,"status":"OK"}`
		case hasAt(h, i, `"payload_size":`):
			bit, i, val = seenSize, i+len(`"payload_size":`), `0`
		default:
			return false
		}
		if seen&bit != 0 {
			return false // duplicate key: leave it to the decoder
		}
		seen |= bit
		if bit == seenID {
			// A string of printable ASCII without escapes.
			if i >= len(h) || h[i] != '"' {
				return false
			}
			for i++; i < len(h) && h[i] != '"'; i++ {
				if c := h[i]; c < 0x20 || c > 0x7e || c == '\\' {
					return false
				}
			}
			i++ // closing quote (i > len(h) fails below)
		} else {
			if !hasAt(h, i, val) {
				return false
			}
			i += len(val)
		}
		if i >= len(h) {
			return false
		}
		if h[i] == '}' {
			return i == len(h)-1 && seen&seenMethod != 0
		}
		if h[i] != ',' {
			return false
		}
		i++
	}
}

// hasAt reports whether b holds s at offset i.
func hasAt(b []byte, i int, s string) bool {
	return i+len(s) <= len(b) && string(b[i:i+len(s)]) == s
}
