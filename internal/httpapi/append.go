package httpapi

import (
	"encoding/json"
	"strconv"

	"github.com/chorus-sync/chorus/protocol"
)

// The resources written on every REST write and fetch (documents, lists,
// maps, streams and their items) render themselves (twiliohttp.Appender):
// field for field what encoding/json writes for their struct tags, without
// reflection and without re-validating the stored data. append_test.go
// compares each with encoding/json's output, token for token.

func appendString(dst []byte, s string) []byte { return protocol.AppendJSONString(dst, s) }

// appendNullable writes *s, or null.
func appendNullable(dst []byte, s *string) []byte {
	if s == nil {
		return append(dst, "null"...)
	}
	return appendString(dst, *s)
}

// appendData writes stored JSON data as it is: the engine validated and
// compacted it before storing it. Empty is null, as encoding/json writes
// an empty json.RawMessage.
func appendData(dst []byte, data json.RawMessage) []byte {
	if len(data) == 0 {
		return append(dst, "null"...)
	}
	return append(dst, data...)
}

// appendHead writes the fields every object starts with, from {"sid"
// through "url".
func appendHead(dst []byte, sid string, uniqueName *string, account, service, url string) []byte {
	dst = append(dst, `{"sid":`...)
	dst = appendString(dst, sid)
	dst = append(dst, `,"unique_name":`...)
	dst = appendNullable(dst, uniqueName)
	dst = append(dst, `,"account_sid":`...)
	dst = appendString(dst, account)
	dst = append(dst, `,"service_sid":`...)
	dst = appendString(dst, service)
	dst = append(dst, `,"url":`...)
	return appendString(dst, url)
}

// appendTail writes the fields every resource ends with, from
// "date_expires" through the closing brace.
func appendTail(dst []byte, expires *string, created, updated, createdBy string) []byte {
	dst = append(dst, `,"date_expires":`...)
	dst = appendNullable(dst, expires)
	dst = append(dst, `,"date_created":`...)
	dst = appendString(dst, created)
	dst = append(dst, `,"date_updated":`...)
	dst = appendString(dst, updated)
	dst = append(dst, `,"created_by":`...)
	dst = appendString(dst, createdBy)
	return append(dst, '}')
}

// AppendJSON implements twiliohttp.Appender.
func (d documentJSON) AppendJSON(dst []byte) []byte {
	dst = appendHead(dst, d.SID, d.UniqueName, d.AccountSID, d.ServiceSID, d.URL)
	dst = append(dst, `,"links":{"permissions":`...)
	dst = appendString(dst, d.Links.Permissions)
	dst = append(dst, `},"revision":`...)
	dst = appendString(dst, d.Revision)
	dst = append(dst, `,"data":`...)
	dst = appendData(dst, d.Data)
	return appendTail(dst, d.DateExpires, d.DateCreated, d.DateUpdated, d.CreatedBy)
}

// AppendJSON implements twiliohttp.Appender.
func (c collectionJSON) AppendJSON(dst []byte) []byte {
	dst = appendHead(dst, c.SID, c.UniqueName, c.AccountSID, c.ServiceSID, c.URL)
	dst = append(dst, `,"links":{"items":`...)
	dst = appendString(dst, c.Links.Items)
	dst = append(dst, `,"permissions":`...)
	dst = appendString(dst, c.Links.Permissions)
	dst = append(dst, `},"revision":`...)
	dst = appendString(dst, c.Revision)
	return appendTail(dst, c.DateExpires, c.DateCreated, c.DateUpdated, c.CreatedBy)
}

// AppendJSON implements twiliohttp.Appender.
func (s streamJSON) AppendJSON(dst []byte) []byte {
	dst = appendHead(dst, s.SID, s.UniqueName, s.AccountSID, s.ServiceSID, s.URL)
	dst = append(dst, `,"links":{"messages":`...)
	dst = appendString(dst, s.Links.Messages)
	dst = append(dst, '}')
	return appendTail(dst, s.DateExpires, s.DateCreated, s.DateUpdated, s.CreatedBy)
}

// appendItemBody writes an item's fields after its index or key, from
// "account_sid" through the closing brace.
func appendItemBody(dst []byte, account, service, objectField, object, url, revision string, data json.RawMessage,
	expires *string, created, updated, createdBy string) []byte {
	dst = append(dst, `,"account_sid":`...)
	dst = appendString(dst, account)
	dst = append(dst, `,"service_sid":`...)
	dst = appendString(dst, service)
	dst = append(dst, objectField...)
	dst = appendString(dst, object)
	dst = append(dst, `,"url":`...)
	dst = appendString(dst, url)
	dst = append(dst, `,"revision":`...)
	dst = appendString(dst, revision)
	dst = append(dst, `,"data":`...)
	dst = appendData(dst, data)
	return appendTail(dst, expires, created, updated, createdBy)
}

// AppendJSON implements twiliohttp.Appender.
func (it listItemJSON) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"index":`...)
	dst = strconv.AppendInt(dst, it.Index, 10)
	return appendItemBody(dst, it.AccountSID, it.ServiceSID, `,"list_sid":`, it.ListSID, it.URL, it.Revision, it.Data,
		it.DateExpires, it.DateCreated, it.DateUpdated, it.CreatedBy)
}

// AppendJSON implements twiliohttp.Appender.
func (it mapItemJSON) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"key":`...)
	dst = appendString(dst, it.Key)
	return appendItemBody(dst, it.AccountSID, it.ServiceSID, `,"map_sid":`, it.MapSID, it.URL, it.Revision, it.Data,
		it.DateExpires, it.DateCreated, it.DateUpdated, it.CreatedBy)
}

// AppendJSON implements twiliohttp.Appender.
func (m streamMessageJSON) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"sid":`...)
	dst = appendString(dst, m.SID)
	dst = append(dst, `,"data":`...)
	dst = appendData(dst, m.Data)
	return append(dst, '}')
}
