package gateway

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/protocol"
)

func testLive(t *testing.T, typ chorus.EventType, kind chorus.Kind, id int64, data string) outFrame {
	t.Helper()
	e := &chorus.Event{ID: id, Type: typ, Kind: kind, ObjectSID: "ET00000000000000000000000000000001",
		Revision: fmt.Sprint(id), Data: json.RawMessage(data), DateCreated: time.Unix(1700000000, 0)}
	if kind == chorus.KindMap {
		e.ItemKey = fmt.Sprint("k", id)
		e.ItemData = json.RawMessage(data)
	}
	l := liveFrame(e, "http://h")
	return outFrame{b: l.frame, live: l}
}

// wire decodes what eachWireFrame emits: per frame its message type, event
// type and events (a frame's "event" or "events").
type wireFrame struct {
	msgType, eventType string
	events             []json.RawMessage
	single             bool
}

func wireFrames(t *testing.T, batch []outFrame, merge bool) ([]wireFrame, int) {
	t.Helper()
	var out []wireFrame
	saved := eachWireFrame(batch, merge, func(b []byte) {
		f, err := protocol.Decode(b, 0)
		if err != nil {
			t.Fatalf("decode %q: %v", b, err)
		}
		var p struct {
			EventType string            `json:"event_type"`
			Event     json.RawMessage   `json:"event"`
			Events    []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(f.Payload, &p); err != nil {
			t.Fatalf("payload %q: %v", f.Payload, err)
		}
		var mt string
		_ = json.Unmarshal(f.Header.Raw("message_type"), &mt)
		w := wireFrame{msgType: mt, eventType: p.EventType, events: p.Events}
		if p.Event != nil {
			w.events, w.single = []json.RawMessage{p.Event}, true
		}
		out = append(out, w)
	})
	return out, saved
}

func eventIDs(t *testing.T, evs []json.RawMessage) string {
	t.Helper()
	var ids []string
	for _, e := range evs {
		var v struct{ ID int64 }
		if err := json.Unmarshal(e, &v); err != nil {
			t.Fatalf("event %s: %v", e, err)
		}
		ids = append(ids, fmt.Sprint(v.ID))
	}
	return strings.Join(ids, ",")
}

func TestMergeRunsOfLiveEvents(t *testing.T) {
	doc := func(id int64) outFrame {
		return testLive(t, chorus.EventDocumentUpdated, chorus.KindDocument, id, fmt.Sprintf(`{"n":%d,"s":"a\"b"}`, id))
	}
	mapItem := func(id int64) outFrame {
		return testLive(t, chorus.EventMapItemUpdated, chorus.KindMap, id, `{"x":1}`)
	}
	reply := outFrame{b: protocol.AppendHTTPReply(nil, "TM1", protocol.Status{Code: 200, Status: "OK"}, []byte(`{}`))}
	batch := []outFrame{doc(1), doc(2), doc(3), reply, doc(4), mapItem(5), mapItem(6), doc(7)}

	got, saved := wireFrames(t, batch, true)
	want := []struct {
		eventType, ids string
		single         bool
	}{
		{"document_updated", "1,2,3", false},
		{"", "", true}, // the reply: not an event, never merged across
		{"document_updated", "4", true},
		{"map_item_updated", "5,6", false},
		{"document_updated", "7", true},
	}
	if len(got) != len(want) || saved != 3 {
		t.Fatalf("got %d frames (saved %d), want %d (saved 3): %+v", len(got), saved, len(want), got)
	}
	for i, w := range want {
		if i == 1 {
			if got[i].msgType != "" || got[i].eventType != "" {
				t.Errorf("frame 1 is not the reply: %+v", got[i])
			}
			continue
		}
		g := got[i]
		if g.eventType != w.eventType || eventIDs(t, g.events) != w.ids || g.single != w.single {
			t.Errorf("frame %d: %s %s single=%v, want %s %s single=%v", i, g.eventType, eventIDs(t, g.events), g.single, w.eventType, w.ids, w.single)
		}
	}
	// A merged entry is byte for byte the event the single frame carried.
	single, _ := wireFrames(t, batch[:1], true)
	if string(got[0].events[0]) != string(single[0].events[0]) {
		t.Errorf("merged event %s differs from the single one %s", got[0].events[0], single[0].events[0])
	}
	if got[0].msgType != "com.twilio.rtd.cds.document" || got[3].msgType != "com.twilio.rtd.cds.map" {
		t.Errorf("message types %q, %q", got[0].msgType, got[3].msgType)
	}

	// Sessions on event protocol 3 and earlier read one "event" per frame.
	plain, saved := wireFrames(t, batch, false)
	if len(plain) != len(batch) || saved != 0 {
		t.Fatalf("merge off: %d frames (saved %d), want %d", len(plain), saved, len(batch))
	}
	for i, f := range plain {
		if i != 3 && !f.single {
			t.Errorf("merge off: frame %d has an events array", i)
		}
	}
}

func TestMergeLimits(t *testing.T) {
	var batch []outFrame
	for i := range mergeMaxEvents + 10 {
		batch = append(batch, testLive(t, chorus.EventDocumentUpdated, chorus.KindDocument, int64(i+1), `{}`))
	}
	got, _ := wireFrames(t, batch, true)
	if len(got) != 2 || len(got[0].events) != mergeMaxEvents || len(got[1].events) != 10 {
		t.Fatalf("%d events in %d frames: want %d then 10", len(batch), len(got), mergeMaxEvents)
	}

	big := `{"pad":"` + strings.Repeat("x", 20<<10) + `"}`
	batch = batch[:0]
	for i := range 5 {
		batch = append(batch, testLive(t, chorus.EventDocumentUpdated, chorus.KindDocument, int64(i+1), big))
	}
	got, _ = wireFrames(t, batch, true)
	total := 0
	for _, f := range got {
		n := 0
		for _, e := range f.events {
			n += len(e)
		}
		if len(f.events) > 1 && n > mergeMaxBytes {
			t.Errorf("a merged frame carries %d bytes of events, over %d", n, mergeMaxBytes)
		}
		total += len(f.events)
	}
	if total != 5 || len(got) < 2 {
		t.Errorf("5 events of 20 KiB in %d frames (%d events): want them split by size", len(got), total)
	}
}

func TestMergeReplayedEventsByCorrelation(t *testing.T) {
	replay := func(id int64, corr json.Number) outFrame {
		e := &chorus.Event{ID: id, Type: chorus.EventListItemAdded, Kind: chorus.KindList, ObjectSID: "ES00000000000000000000000000000001",
			ItemIndex: id, ItemData: json.RawMessage(`{}`), DateCreated: time.Unix(1700000000, 0)}
		l := replayFrame(e, "http://h", corr)
		return outFrame{b: l.frame, live: l}
	}
	live := testLive(t, chorus.EventListItemAdded, chorus.KindList, 9, `{}`)
	batch := []outFrame{replay(1, "7"), replay(2, "7"), replay(3, "8"), live}
	var heads []string
	eachWireFrame(batch, true, func(b []byte) {
		f, err := protocol.Decode(b, 0)
		if err != nil {
			t.Fatal(err)
		}
		var p struct {
			EventType     string            `json:"event_type"`
			CorrelationID json.Number       `json:"correlation_id"`
			Events        []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(f.Payload, &p); err != nil {
			t.Fatal(err)
		}
		heads = append(heads, fmt.Sprintf("%s/%s/%d", p.EventType, p.CorrelationID, len(p.Events)))
	})
	want := "list_item_added/7/2 list_item_added/8/0 list_item_added//0"
	if got := strings.Join(heads, " "); got != want {
		t.Errorf("frames %s, want %s (replays merge per correlation, never with live events)", got, want)
	}
}
