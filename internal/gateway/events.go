package gateway

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/protocol"
)

// isoMillis is the time format of CDS bodies and events.
const isoMillis = "2006-01-02T15:04:05.000Z"

func appendTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, isoMillis)
	return append(dst, '"')
}

func appendTimePtr(dst []byte, t *time.Time) []byte {
	if t == nil {
		return append(dst, "null"...)
	}
	return appendTime(dst, *t)
}

// appendRaw appends raw JSON, compacting it if it holds whitespace that
// could include CR or LF; nil or empty becomes null.
func appendRaw(dst []byte, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return append(dst, "null"...)
	}
	if bytes.ContainsAny(raw, "\r\n") {
		var buf bytes.Buffer
		if json.Compact(&buf, raw) == nil {
			return append(dst, buf.Bytes()...)
		}
	}
	return append(dst, raw...)
}

// messageType is the notification message_type of a live event.
func messageType(k chorus.Kind) string {
	switch k {
	case chorus.KindDocument:
		return protocol.MessageTypeDocument
	case chorus.KindList:
		return protocol.MessageTypeList
	case chorus.KindMap:
		return protocol.MessageTypeMap
	}
	return protocol.MessageTypeSyncEvent
}

// objectURL is the absolute URL of an object.
func objectURL(base, service string, k chorus.Kind, sid string) string {
	return base + "/v3/Services/" + service + "/" + k.Collection() + "/" + sid
}

// itemURL is the absolute URL of a list or map item.
func itemURL(base, service string, k chorus.Kind, sid string, index int64, key string) string {
	u := objectURL(base, service, k, sid) + "/Items/"
	if k == chorus.KindMap {
		return u + encodeURIComponent(key)
	}
	return u + strconv.FormatInt(index, 10)
}

// encodeURIComponent escapes s like JavaScript's encodeURIComponent.
func encodeURIComponent(s string) string {
	// url.PathEscape keeps sub-delims and ':' '@' that JS escapes, and
	// escapes nothing JS keeps except that JS keeps !'()*.
	const keep = "-_.!~*'()"
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || bytes.IndexByte([]byte(keep), c) >= 0 {
			b = append(b, c)
			continue
		}
		b = append(b, '%', "0123456789ABCDEF"[c>>4], "0123456789ABCDEF"[c&15])
	}
	return string(b)
}

// sidField is the event field naming the object.
func sidField(k chorus.Kind) string {
	switch k {
	case chorus.KindDocument:
		return "document_sid"
	case chorus.KindList:
		return "list_sid"
	case chorus.KindMap:
		return "map_sid"
	}
	return "stream_sid"
}

// appendEventBody appends the §5.2 "event" object of e.
func appendEventBody(dst []byte, e *chorus.Event, base string) []byte {
	dst = append(dst, '{')
	if e.ID > 0 {
		dst = append(dst, `"id":`...)
		dst = strconv.AppendInt(dst, e.ID, 10)
		dst = append(dst, ',')
	}
	dst = append(dst, '"')
	dst = append(dst, sidField(e.Kind)...)
	dst = append(dst, `":`...)
	dst = protocol.AppendJSONString(dst, e.ObjectSID)
	switch e.Type {
	case chorus.EventDocumentUpdated:
		dst = append(dst, `,"document_unique_name":`...)
		if e.UniqueName == "" {
			dst = append(dst, "null"...)
		} else {
			dst = protocol.AppendJSONString(dst, e.UniqueName)
		}
		dst = append(dst, `,"document_revision":`...)
		dst = protocol.AppendJSONString(dst, e.Revision)
		dst = append(dst, `,"document_data":`...)
		dst = appendRaw(dst, e.Data)
		dst = append(dst, `,"date_created":`...)
		dst = appendTime(dst, e.DateCreated)
		dst = append(dst, `,"date_expires":`...)
		dst = appendTimePtr(dst, e.DateExpires)
	case chorus.EventListItemAdded, chorus.EventListItemUpdated, chorus.EventListItemRemoved,
		chorus.EventMapItemAdded, chorus.EventMapItemUpdated, chorus.EventMapItemRemoved:
		if e.Kind == chorus.KindMap {
			dst = append(dst, `,"item_key":`...)
			dst = protocol.AppendJSONString(dst, e.ItemKey)
		} else {
			dst = append(dst, `,"item_index":`...)
			dst = strconv.AppendInt(dst, e.ItemIndex, 10)
		}
		dst = append(dst, `,"item_url":`...)
		dst = protocol.AppendJSONString(dst, itemURL(base, e.ServiceSID, e.Kind, e.ObjectSID, e.ItemIndex, e.ItemKey))
		dst = append(dst, `,"item_revision":`...)
		dst = protocol.AppendJSONString(dst, e.ItemRevision)
		dst = append(dst, `,"item_data":`...)
		dst = appendRaw(dst, e.ItemData)
		dst = append(dst, `,"date_created":`...)
		dst = appendTime(dst, e.DateCreated)
		if e.Type != chorus.EventListItemRemoved && e.Type != chorus.EventMapItemRemoved {
			dst = append(dst, `,"date_expires":`...)
			dst = appendTimePtr(dst, e.DateExpires)
		}
		if e.Revision != "" {
			if e.Kind == chorus.KindMap {
				dst = append(dst, `,"map_revision":`...)
			} else {
				dst = append(dst, `,"list_revision":`...)
			}
			dst = protocol.AppendJSONString(dst, e.Revision)
		}
	case chorus.EventListContextUpdated:
		dst = append(dst, `,"context_data":`...)
		dst = appendRaw(dst, e.Data)
		dst = append(dst, `,"date_created":`...)
		dst = appendTime(dst, e.DateCreated)
		if e.Revision != "" {
			dst = append(dst, `,"list_revision":`...)
			dst = protocol.AppendJSONString(dst, e.Revision)
		}
	case chorus.EventStreamMessagePublished:
		dst = append(dst, `,"message_sid":`...)
		dst = protocol.AppendJSONString(dst, e.MessageSID)
		dst = append(dst, `,"message_data":`...)
		dst = appendRaw(dst, e.Data)
	default: // removals
		if !e.DateCreated.IsZero() {
			dst = append(dst, `,"date_created":`...)
			dst = appendTime(dst, e.DateCreated)
		}
	}
	return append(dst, '}')
}

// eventNotification encodes e as a notification of message type msgType
// with the payload {"event_type":…[,"correlation_id":corr],"event":{…}}.
func eventNotification(e *chorus.Event, base, msgType string, corr json.Number) *liveEvent {
	dst := make([]byte, 0, 256+len(e.Data)+len(e.ItemData))
	dst = append(dst, `{"event_type":`...)
	dst = protocol.AppendJSONString(dst, string(e.Type))
	if corr != "" {
		dst = append(dst, `,"correlation_id":`...)
		dst = append(dst, corr...)
	}
	head := len(dst)
	dst = append(dst, `,"event":`...)
	dst = appendEventBody(dst, e, base)
	dst = append(dst, '}')
	return newLiveEvent(msgType, dst, head)
}

// liveFrame encodes e as a live notification for subscribers with the
// public URL base.
func liveFrame(e *chorus.Event, base string) *liveEvent {
	return eventNotification(e, base, messageType(e.Kind), "")
}

// replayFrame encodes a replayed event (twilio.sync.event, with the
// request's correlation id).
func replayFrame(e *chorus.Event, base string, corr json.Number) *liveEvent {
	return eventNotification(e, base, protocol.MessageTypeSyncEvent, corr)
}

// syncFrame encodes a subscription_* notification in event protocol 4:
// every entry in one "events" array.
func syncFrame(eventType string, corr json.Number, events any) []byte {
	body, _ := json.Marshal(events) // plain maps and strings
	return syncPayloadFrame(eventType, corr, "events", body)
}

// syncFrameV3 encodes one entry of a subscription_* notification in event
// protocol 3 (twilio-sync ≤ 3.0.x), which reads a single "event" object
// per message and throws on an "events" array.
func syncFrameV3(eventType string, corr json.Number, event any) []byte {
	body, _ := json.Marshal(event)
	return syncPayloadFrame(eventType, corr, "event", body)
}

func syncPayloadFrame(eventType string, corr json.Number, field string, body []byte) []byte {
	payload := append([]byte(`{"event_type":`), protocol.AppendJSONString(nil, eventType)...)
	if corr != "" {
		payload = append(payload, `,"correlation_id":`...)
		payload = append(payload, corr...)
	}
	payload = append(payload, `,"`...)
	payload = append(payload, field...)
	payload = append(payload, `":`...)
	payload = append(payload, body...)
	payload = append(payload, '}')
	return protocol.AppendNotification(nil, protocol.NewID(), protocol.MessageTypeSyncEvent, payload)
}

// sendSync sends subscription_* notifications in the event protocol the
// session asked for: 4 and later (and sessions that never said) get one
// frame with an "events" array; 3 and earlier one frame per entry with a
// single "event".
func sendSync[E any](c *conn, eventType string, corr json.Number, entries []E) {
	sendSyncWith(c, c.send, eventType, corr, entries)
}

// sendSyncWith is sendSync queueing through send.
func sendSyncWith[E any](c *conn, send func([]byte), eventType string, corr json.Number, entries []E) {
	if v := c.eventProtocol.Load(); v > 0 && v < 4 {
		for _, e := range entries {
			send(syncFrameV3(eventType, corr, e))
		}
		return
	}
	send(syncFrame(eventType, corr, entries))
}
