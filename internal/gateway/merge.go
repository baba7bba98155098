package gateway

import (
	"bytes"
	"sync"

	"github.com/chorus-sync/chorus/protocol"
)

// Merging object events.
//
// An object event is encoded once per frame format (liveEvent): a live
// event's frame is shared by every subscriber, a replayed one carries the
// request's correlation_id. When a session's writer finds several such
// events of one message type, event type and correlation next to each other
// in its queue, it sends them as one notification whose payload carries an
// "events" array:
//
//	{"event_type":"document_updated","events":[{…},{…}]}
//
// The SDK reads "events" when present, else "event" (twilio-sync 3.1 and
// later, event protocol 4: subscriptions.js acceptMessage), and applies the
// array's entries in order, each routed by its own object SID; so only
// sessions whose last /v4/Subscriptions asked for version 4 or later get
// merged frames. One frame instead of k saves k-1 frame headers, k-1 writes
// of the client's acknowledgement and k-1 reads of it here. Events queue up
// only when a session's writer falls behind its events (bursts, or a busy
// CPU), which is when those savings matter; a session that keeps up still
// gets one frame per event, with no added delay.

const (
	// mergeMaxEvents and mergeMaxBytes bound one merged notification.
	mergeMaxEvents = 64
	mergeMaxBytes  = 64 << 10
)

// liveEvent is an object event's notification, live or replayed. It is
// immutable once built; a live one is shared by every subscriber.
type liveEvent struct {
	frame   []byte // the complete twilsock notification
	msgType string // its message_type
	// head is the payload up to the event: {"event_type":…[,"correlation_id":…];
	// the payload is head + `,"event":` + event + `}`. Events with equal
	// message types and heads may share a notification.
	head  []byte
	event []byte // the event object's JSON, within frame
}

// newLiveEvent returns the notification of message type msgType whose
// payload is head + `,"event":` + event + `}`.
func newLiveEvent(msgType string, payload []byte, headLen int) *liveEvent {
	frame := protocol.AppendNotification(make([]byte, 0, len(payload)+160), protocol.NewID(), msgType, payload)
	p := frame[len(frame)-len(payload):] // the payload ends the frame
	return &liveEvent{frame: frame, msgType: msgType, head: p[:headLen], event: p[headLen+len(`,"event":`) : len(p)-1]}
}

// outFrame is a queued outbound frame; live is set for an object event,
// which the writer may merge with its neighbours, and fanout for a live one
// from the hub, which may wait while the writer pool is behind
// (coalesce.go).
type outFrame struct {
	b      []byte
	live   *liveEvent
	fanout bool
}

// mergeRunEnd returns the end (exclusive) of the run of live events that
// starts at frames[i] and may share one notification: same message type and
// payload head, within mergeMaxEvents and mergeMaxBytes. frames[i].live is set.
func mergeRunEnd(frames []outFrame, i int) int {
	first := frames[i].live
	n := len(first.event)
	j := i + 1
	for ; j < len(frames) && j-i < mergeMaxEvents; j++ {
		l := frames[j].live
		if l == nil || l.msgType != first.msgType || !bytes.Equal(l.head, first.head) || n+1+len(l.event) > mergeMaxBytes {
			break
		}
		n += 1 + len(l.event)
	}
	return j
}

// mergeBuf holds the scratch storage of one merge.
type mergeBuf struct{ payload, frame []byte }

var mergeBufs = sync.Pool{New: func() any { return new(mergeBuf) }}

// merge returns one notification carrying the events of run, in order.
// The result lives in m until its next use.
func (m *mergeBuf) merge(run []outFrame) []byte {
	first := run[0].live
	p := append(m.payload[:0], first.head...)
	p = append(p, `,"events":[`...)
	for k, f := range run {
		if k > 0 {
			p = append(p, ',')
		}
		p = append(p, f.live.event...)
	}
	p = append(p, "]}"...)
	m.payload = p
	m.frame = protocol.AppendNotification(m.frame[:0], protocol.NewID(), first.msgType, p)
	return m.frame
}

// release returns m to the pool unless a burst grew it past the usual size.
func (m *mergeBuf) release() {
	if cap(m.frame) > 2*mergeMaxBytes {
		return
	}
	mergeBufs.Put(m)
}

// eachWireFrame calls emit with every frame of batch as it goes on the wire:
// runs of live events merged when merge is set, other frames as queued.
// The bytes passed to emit are valid only during the call. saved is the
// number of frames merging spared.
func eachWireFrame(batch []outFrame, merge bool, emit func([]byte)) (saved int) {
	var m *mergeBuf
	for i := 0; i < len(batch); {
		if merge && batch[i].live != nil {
			if j := mergeRunEnd(batch, i); j-i > 1 {
				if m == nil {
					m = mergeBufs.Get().(*mergeBuf)
				}
				emit(m.merge(batch[i:j]))
				saved += j - i - 1
				i = j
				continue
			}
		}
		emit(batch[i].b)
		i++
	}
	if m != nil {
		m.release()
	}
	return saved
}
