package protocol

import "errors"

// ErrMalformed is matched (with [errors.Is]) by every error [Decode]
// returns except [ErrTooLarge]: the peer sent something that is not a valid
// Twilsock V3.0 frame.
var ErrMalformed = errors.New("protocol: malformed frame")

// Errors returned by [Decode], always wrapped with details. Each also
// matches [ErrMalformed].
var (
	// ErrBadMagic: the message does not start with "TWILSOCK ".
	ErrBadMagic error = &malformedError{"protocol: bad magic"}
	// ErrBadVersion: the version is not "V3.0".
	ErrBadVersion error = &malformedError{"protocol: unsupported version"}
	// ErrBadHeaderLength: the header length H is not a decimal number
	// followed by CR LF.
	ErrBadHeaderLength error = &malformedError{"protocol: bad header length"}
	// ErrTruncated: the message ends before the header, the CR LF after
	// it, or payload_size bytes of payload.
	ErrTruncated error = &malformedError{"protocol: truncated frame"}
	// ErrBadHeader: the header is not a JSON object in valid UTF-8, or a
	// typed field (method, id, status, payload_type) has the wrong type.
	ErrBadHeader error = &malformedError{"protocol: bad header"}
	// ErrMissingMethod: the header has no method, or an empty one.
	ErrMissingMethod error = &malformedError{"protocol: missing method"}
	// ErrBadPayloadSize: payload_size is not a non-negative integer.
	ErrBadPayloadSize error = &malformedError{"protocol: bad payload_size"}
	// ErrBadSeparator: the two bytes between header and payload are not
	// CR LF.
	ErrBadSeparator error = &malformedError{"protocol: missing CR LF after header"}
)

// ErrTooLarge is returned by [Decode] when H or payload_size exceeds the
// maxFrame limit. It does not match [ErrMalformed]: the frame may be valid
// but is more than this server accepts.
var ErrTooLarge = errors.New("protocol: frame too large")

// ErrInvalidField is returned by [ParseInit], [ParseUpdate] and
// [ParseMessage] when a field they need is missing or has the wrong type.
// The frame itself was well-formed; answer it with an error status.
var ErrInvalidField = errors.New("protocol: invalid header field")

// ErrReservedField is returned by [Header.Set] and [Header.SetRaw] for the
// keys held in typed [Header] fields: method, id, status, payload_type and
// payload_size.
var ErrReservedField = errors.New("protocol: reserved header field")

type malformedError struct{ msg string }

func (e *malformedError) Error() string { return e.msg }

func (e *malformedError) Is(target error) bool { return target == ErrMalformed }
