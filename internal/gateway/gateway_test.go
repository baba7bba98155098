package gateway

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chorus-sync/chorus/protocol"
)

func TestCloseEndsSessions(t *testing.T) {
	e := newEnv(t)
	a := e.session("alice")
	doc := wantStatus(t, "create", a.do("POST", "/v3/Documents", nil, map[string]any{"data": map[string]any{}}), 201, 0)
	var clients []*tclient
	for i := 0; i < 3; i++ {
		c := e.session("bob")
		c.establish(int64(i+1), docSub(doc["sid"].(string), num(doc["last_event_id"])))
		clients = append(clients, c)
	}
	if st := e.gw.Stats(); st.Connections != 4 || st.Subscriptions != 3 || st.Topics != 1 {
		t.Fatalf("stats = %+v, want 4 connections, 3 subscriptions, 1 topic", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.gw.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i, c := range append(clients, a) {
		if err := c.closed(5 * time.Second); err != nil {
			t.Errorf("client %d after Close: %v", i, err)
		}
	}
	if st := e.gw.Stats(); st.Connections != 0 || st.Subscriptions != 0 || st.Topics != 0 {
		t.Errorf("stats after Close = %+v, want all zero", st)
	}
}

func TestEncodeURIComponent(t *testing.T) {
	tests := []struct{ in, want string }{
		{"k/1 é", "k%2F1%20%C3%A9"},
		{"a-b_c.d!e~f*g'h(i)j", "a-b_c.d!e~f*g'h(i)j"},
		{"a+b&c=d?e#f%g:h@i", "a%2Bb%26c%3Dd%3Fe%23f%25g%3Ah%40i"},
	}
	for _, tt := range tests {
		if got := encodeURIComponent(tt.in); got != tt.want {
			t.Errorf("encodeURIComponent(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzEncodeURIComponent(f *testing.F) {
	f.Add("k/1 é")
	f.Add("%2F")
	f.Fuzz(func(t *testing.T, s string) {
		enc := encodeURIComponent(s)
		if strings.ContainsAny(enc, "/?#& ") {
			t.Fatalf("encodeURIComponent(%q) = %q keeps a reserved character", s, enc)
		}
		dec, err := url.PathUnescape(enc)
		if err != nil || dec != s {
			t.Fatalf("PathUnescape(encodeURIComponent(%q)) = %q, %v", s, dec, err)
		}
	})
}

func FuzzOversizeRequest(f *testing.F) {
	f.Add(oversizeFrame(100), 64)
	f.Add([]byte("TWILSOCK V3.0 5\r\n{nope\r\n"), 10)
	f.Add(protocol.Encode(nil, &protocol.Header{Method: "message", ID: "TM1"}, []byte("xyz")), 1)
	f.Fuzz(func(t *testing.T, msg []byte, limit int) {
		id, ok := oversizeRequest(msg, limit)
		if ok && (id == "" || !utf8.ValidString(id)) {
			t.Fatalf("oversizeRequest = %q, true: want a valid id", id)
		}
	})
}
