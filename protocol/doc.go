// Package protocol is a byte-exact codec for Twilsock V3.0 frames, the
// framing the Twilio Sync SDKs speak over a WebSocket.
//
// Every frame is one binary WebSocket message:
//
//	TWILSOCK V3.0 <H>\r\n<header: H bytes of UTF-8 JSON>\r\n<payload: payload_size bytes>
//
// H is the decimal byte length of the header. The header is one flat JSON
// object that always holds "method" and "id", and "payload_size" whenever a
// payload follows. The payload is opaque to this package: [Decode] slices it
// by payload_size and never parses it (DELETE requests carry the non-JSON
// payload "data_sync"). Bytes after the payload are ignored, and a frame
// with an empty payload may omit the CR LF after the header.
//
// [Decode] parses a frame into a [Frame]; every failure wraps one of the
// exported sentinel errors ([ErrTruncated], [ErrBadHeader], ...), and all
// but [ErrTooLarge] also match [ErrMalformed]. [Encode] appends a frame for
// a [Header] to a byte slice and sets payload_size itself. Hot paths have
// dedicated appenders that write the header directly:
// [AppendNotification] and [AppendHTTPReply]. [ParseInit], [ParseUpdate]
// and [ParseMessage] give typed views of the client requests.
//
// Encoded headers are compact JSON with every string escaped, so a frame
// holds CR LF only in the preamble, after the header, and wherever the
// payload itself has them.
//
// # Concurrency
//
// Functions in this package keep no state and may be called from any
// goroutine. The types ([Header], [Frame], [HTTPRequest], ...) are plain
// values: they are not safe for concurrent mutation, but any number of
// goroutines may read or encode the same value as long as nobody modifies it.
// A [Header] copied by assignment shares its extra fields with the original;
// use [Header.Clone] before changing a copy.
//
// The []byte returned by the encoders is owned by the caller and never
// touched again by this package, so one encoded notification may be shared
// read-only by any number of connections. [Frame.Payload] returned by
// [Decode] aliases the message passed in (header values do not): keep the
// message unchanged for as long as the payload is used, or copy the payload.
package protocol
