package sqlrow

import (
	"encoding/json"
	"strconv"

	"github.com/chorus-sync/chorus"
)

// appendEventBody appends the body EncodeEvent stores for e: the bytes
// json.Marshal writes for e with Data and ItemData left out, without
// reflection (every write appends an event). eventbody_test.go compares the
// two byte for byte.
func appendEventBody(dst []byte, e *chorus.Event) ([]byte, error) {
	dst = append(dst, `{"type":`...)
	dst = appendString(dst, string(e.Type))
	dst = append(dst, `,"id":`...)
	dst = strconv.AppendInt(dst, e.ID, 10)
	dst = append(dst, `,"account_sid":`...)
	dst = appendString(dst, e.AccountSID)
	dst = append(dst, `,"service_sid":`...)
	dst = appendString(dst, e.ServiceSID)
	dst = append(dst, `,"object_sid":`...)
	dst = appendString(dst, e.ObjectSID)
	dst = append(dst, `,"kind":`...)
	dst = appendString(dst, string(e.Kind))
	dst = appendOptString(dst, `,"unique_name":`, e.UniqueName)
	dst = appendOptString(dst, `,"revision":`, e.Revision)
	if e.ItemIndex != 0 {
		dst = append(dst, `,"item_index":`...)
		dst = strconv.AppendInt(dst, e.ItemIndex, 10)
	}
	dst = appendOptString(dst, `,"item_key":`, e.ItemKey)
	dst = appendOptString(dst, `,"item_revision":`, e.ItemRevision)
	dst = appendOptString(dst, `,"message_sid":`, e.MessageSID)
	dst = append(dst, `,"date_created":"`...)
	dst, err := e.DateCreated.AppendText(dst) // MarshalJSON's format and range check, unquoted
	if err != nil {
		return nil, err
	}
	dst = append(dst, '"')
	if e.DateExpires != nil {
		dst = append(dst, `,"date_expires":"`...)
		if dst, err = e.DateExpires.AppendText(dst); err != nil {
			return nil, err
		}
		dst = append(dst, '"')
	}
	dst = appendOptString(dst, `,"identity":`, e.Identity)
	dst = appendOptString(dst, `,"endpoint_id":`, e.EndpointID)
	if e.FromREST {
		dst = append(dst, `,"from_rest":true`...)
	}
	return append(dst, '}'), nil
}

// appendOptString appends key and s unless s is empty (omitempty).
func appendOptString(dst []byte, key, s string) []byte {
	if s == "" {
		return dst
	}
	return appendString(append(dst, key...), s)
}

// appendString appends s as json.Marshal writes it (the store packages
// import no codec of ours, so not protocol.AppendJSONString, which also
// escapes differently: <, > and & as they are). SIDs, revisions and
// most names are printable ASCII that JSON writes as it is; anything else
// (quotes, backslashes, control characters, <, > and &, which json.Marshal
// escapes, and non-ASCII) goes through json.Marshal.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
