package httpapi

import (
	"net/url"
	"strconv"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/protocol"
)

// The resources answered on every REST write and fetch of an object or
// item render themselves (twiliohttp.Appender) straight from the model:
// the bytes renderObject and renderItem's structs give encoding/json,
// without reflection, without re-validating the stored data, and without
// building each URL and date as a string first. Listings still go through
// those structs. append_test.go compares the two, token for token and byte
// for byte but for the \b and \f escapes (written \u0008 and \u000c).

// objectView renders an object as renderObject(base, svc, o) does.
type objectView struct {
	base string
	svc  *chorus.Service
	o    *chorus.Object
}

// itemView renders an item as renderItem(base, svc, it) does.
type itemView struct {
	base string
	svc  *chorus.Service
	it   *chorus.Item
}

// streamMessageView renders a published stream message.
type streamMessageView struct{ m *chorus.StreamMessage }

// AppendJSON implements twiliohttp.Appender.
func (v objectView) AppendJSON(dst []byte) []byte {
	o := v.o
	svcSID, acct := o.ServiceSID, o.AccountSID
	if svcSID == "" {
		svcSID = v.svc.SID
	}
	if acct == "" {
		acct = v.svc.AccountSID
	}
	dst = append(dst, `{"sid":`...)
	dst = appendString(dst, o.SID)
	dst = append(dst, `,"unique_name":`...)
	if o.UniqueName == "" {
		dst = append(dst, "null"...)
	} else {
		dst = appendString(dst, o.UniqueName)
	}
	dst = append(dst, `,"account_sid":`...)
	dst = appendString(dst, acct)
	dst = append(dst, `,"service_sid":`...)
	dst = appendString(dst, svcSID)
	dst = append(dst, `,"url":`...)
	dst = appendObjectURL(dst, v.base, svcSID, o.Kind, o.SID, "")
	switch o.Kind {
	case chorus.KindDocument:
		dst = append(dst, `,"links":{"permissions":`...)
		dst = appendObjectURL(dst, v.base, svcSID, o.Kind, o.SID, "/Permissions")
		dst = append(dst, `},"revision":"`...)
		dst = strconv.AppendInt(dst, o.Revision, 16)
		dst = append(dst, `","data":`...)
		if len(o.Data) == 0 {
			dst = append(dst, "{}"...)
		} else {
			dst = append(dst, o.Data...) // validated and compacted when stored
		}
	case chorus.KindStream:
		dst = append(dst, `,"links":{"messages":`...)
		dst = appendObjectURL(dst, v.base, svcSID, o.Kind, o.SID, "/Messages")
		dst = append(dst, '}')
	default:
		dst = append(dst, `,"links":{"items":`...)
		dst = appendObjectURL(dst, v.base, svcSID, o.Kind, o.SID, "/Items")
		dst = append(dst, `,"permissions":`...)
		dst = appendObjectURL(dst, v.base, svcSID, o.Kind, o.SID, "/Permissions")
		dst = append(dst, `},"revision":"`...)
		dst = strconv.AppendInt(dst, o.Revision, 16)
		dst = append(dst, '"')
	}
	return appendTail(dst, o.DateExpires, o.DateCreated, o.DateUpdated, o.CreatedBy)
}

// AppendJSON implements twiliohttp.Appender.
func (v itemView) AppendJSON(dst []byte) []byte {
	it, svc := v.it, v.svc
	objectField := `,"list_sid":`
	if it.Kind == chorus.KindMap {
		objectField = `,"map_sid":`
		dst = append(dst, `{"key":`...)
		dst = appendString(dst, it.Key)
	} else {
		dst = append(dst, `{"index":`...)
		dst = strconv.AppendInt(dst, it.Index, 10)
	}
	dst = append(dst, `,"account_sid":`...)
	dst = appendString(dst, svc.AccountSID)
	dst = append(dst, `,"service_sid":`...)
	dst = appendString(dst, svc.SID)
	dst = append(dst, objectField...)
	dst = appendString(dst, it.ObjectSID)
	dst = append(dst, `,"url":`...)
	dst = appendObjectPath(dst, v.base, svc.SID, it.Kind, it.ObjectSID, "/Items/")
	if it.Kind == chorus.KindMap {
		dst = append(dst, pathSegment(it.Key)...) // path-escaped: JSON-safe
	} else {
		dst = strconv.AppendInt(dst, it.Index, 10)
	}
	dst = append(dst, '"')
	dst = append(dst, `,"revision":"`...)
	dst = strconv.AppendInt(dst, it.Revision, 16)
	dst = append(dst, `","data":`...)
	if len(it.Data) == 0 {
		dst = append(dst, "{}"...)
	} else {
		dst = append(dst, it.Data...)
	}
	return appendTail(dst, it.DateExpires, it.DateCreated, it.DateUpdated, it.CreatedBy)
}

// AppendJSON implements twiliohttp.Appender.
func (v streamMessageView) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"sid":`...)
	dst = appendString(dst, v.m.SID)
	dst = append(dst, `,"data":`...)
	if len(v.m.Data) == 0 {
		return append(dst, "null}"...)
	}
	dst = append(dst, v.m.Data...)
	return append(dst, '}')
}

func appendString(dst []byte, s string) []byte { return protocol.AppendJSONString(dst, s) }

// appendObjectURL appends the JSON string objectURL(base, svcSID, k, sid)
// + suffix. Only base can need JSON escapes: the path segments are
// path-escaped, which leaves no quote, backslash, control or non-ASCII
// byte, and suffix is made of path-escaped segments too.
func appendObjectURL(dst []byte, base, svcSID string, k chorus.Kind, sid, suffix string) []byte {
	return append(appendObjectPath(dst, base, svcSID, k, sid, suffix), '"')
}

// appendObjectPath appends appendObjectURL's string without its closing
// quote, for a caller that appends more path-escaped segments first.
func appendObjectPath(dst []byte, base, svcSID string, k chorus.Kind, sid, suffix string) []byte {
	dst = appendString(dst, base)
	dst = dst[:len(dst)-1] // reopen the string
	dst = append(dst, "/v1/Services/"...)
	dst = append(dst, url.PathEscape(svcSID)...)
	dst = append(dst, '/')
	dst = append(dst, k.Collection()...)
	dst = append(dst, '/')
	dst = append(dst, url.PathEscape(sid)...)
	return append(dst, suffix...)
}

// appendTime appends t as fmtTime writes it, quoted.
func appendTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, timeFormat)
	return append(dst, '"')
}

// appendTail writes the fields every object and item ends with, from
// "date_expires" through the closing brace.
func appendTail(dst []byte, expires *time.Time, created, updated time.Time, createdBy string) []byte {
	dst = append(dst, `,"date_expires":`...)
	if expires == nil {
		dst = append(dst, "null"...)
	} else {
		dst = appendTime(dst, *expires)
	}
	dst = append(dst, `,"date_created":`...)
	dst = appendTime(dst, created)
	dst = append(dst, `,"date_updated":`...)
	dst = appendTime(dst, updated)
	dst = append(dst, `,"created_by":`...)
	dst = appendString(dst, createdBy)
	return append(dst, '}')
}
