package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus/protocol"
)

func (e *env) session(identity string) *tclient {
	e.t.Helper()
	c := e.dial(context.Background())
	c.mustInit(e.token(identity, time.Hour))
	return c
}

func wantStatus(t testing.TB, what string, r httpResp, status, code int) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s = %d %s, want %d", what, r.Status, r.Body, status)
	}
	m := r.json(t)
	if code != 0 && (m["code"] == nil || num(m["code"]) != int64(code)) {
		t.Fatalf("%s code = %v, want %d (%s)", what, m["code"], code, r.Body)
	}
	return m
}

func TestDocuments(t *testing.T) {
	e := newEnv(t)
	c := e.session("alice")

	wantStatus(t, "open missing", c.do("GET", "/v3/Documents/doc1", nil, nil), 404, 0)
	doc := wantStatus(t, "create", c.do("POST", "/v3/Documents", nil, map[string]any{"unique_name": "doc1", "data": map[string]any{"n": 0}}), 201, 0)
	sid := doc["sid"].(string)
	url := doc["url"].(string)
	if !strings.HasPrefix(url, "http://cds.test:1/v3/Services/"+e.svc.SID+"/Documents/"+sid) {
		t.Errorf("url = %q, want absolute service URL", url)
	}
	wantStatus(t, "create again", c.do("POST", "/v3/Documents", nil, map[string]any{"unique_name": "doc1", "data": map[string]any{}}), 409, 54301)
	wantStatus(t, "sid-like name", c.do("POST", "/v3/Documents", nil, map[string]any{"unique_name": "ET" + strings.Repeat("0", 32), "data": map[string]any{}}), 400, 54302)

	got := wantStatus(t, "open by name", c.do("GET", "/v3/Documents/doc1", nil, nil), 200, 0)
	if got["sid"] != sid || got["revision"] == nil || got["last_event_id"] == nil {
		t.Errorf("open = %v, want sid, revision, last_event_id", got)
	}
	rev := got["revision"].(string)

	up := wantStatus(t, "update", c.do("POST", url, map[string]string{"If-Match": rev}, map[string]any{"data": map[string]any{"n": 1}}), 200, 0)
	if up["revision"] == rev {
		t.Errorf("revision unchanged after update")
	}
	wantStatus(t, "stale If-Match", c.do("POST", url, map[string]string{"If-Match": rev}, map[string]any{"data": map[string]any{"n": 2}}), 412, 54103)

	ttl := wantStatus(t, "setTtl", c.do("POST", url, nil, map[string]any{"ttl": 60}), 200, 0)
	if ttl["date_expires"] == nil {
		t.Errorf("setTtl date_expires = nil, want a time")
	}
	got = wantStatus(t, "open after ttl", c.do("GET", "/v3/Documents/"+sid, nil, nil), 200, 0)
	if d, _ := json.Marshal(got["data"]); string(d) != `{"n":1}` {
		t.Errorf("data after setTtl = %s, want {\"n\":1}", d)
	}
	ttl = wantStatus(t, "setTtl 0", c.do("POST", url, nil, map[string]any{"ttl": 0}), 200, 0)
	if ttl["date_expires"] != nil {
		t.Errorf("setTtl(0) date_expires = %v, want null", ttl["date_expires"])
	}

	big := strings.Repeat("x", 17*1024)
	wantStatus(t, "oversize", c.do("POST", url, nil, map[string]any{"data": map[string]any{"big": big}}), 413, 54006)

	// The SDK's DELETE carries the non-JSON body "data_sync".
	wantStatus(t, "delete", c.do("DELETE", url, nil, []byte("data_sync")), 200, 0)
	wantStatus(t, "open deleted", c.do("GET", "/v3/Documents/"+sid, nil, nil), 404, 54100)
	wantStatus(t, "update deleted", c.do("POST", url, nil, map[string]any{"data": map[string]any{}}), 404, 54100)

	wantStatus(t, "insights", c.do("POST", "/v3/Insights/idx/Items", nil, map[string]any{"query_string": "x"}), 400, 54507) // insights_test.go
	wantStatus(t, "other service", c.do("GET", "/v3/Services/IS"+strings.Repeat("1", 32)+"/Documents/"+sid, nil, nil), 403, 0)
}

func TestLists(t *testing.T) {
	e := newEnv(t)
	c := e.session("alice")
	list := wantStatus(t, "create", c.do("POST", "/v3/Lists", nil, map[string]any{"unique_name": "l1", "context": map[string]any{"a": 1}}), 201, 0)
	links := list["links"].(map[string]any)
	items := links["items"].(string)
	for i := 0; i < 3; i++ {
		it := wantStatus(t, "push", c.do("POST", items, nil, map[string]any{"data": map[string]any{"i": i}}), 201, 0)
		if num(it["index"]) != int64(i) || !strings.HasSuffix(it["url"].(string), "/Items/"+string(rune('0'+i))) {
			t.Errorf("push %d = %v, want index %d with url", i, it, i)
		}
	}
	page := func(q string) ([]int64, bool, bool) {
		t.Helper()
		m := wantStatus(t, "page "+q, c.do("GET", items+"?"+q, nil, nil), 200, 0)
		var idx []int64
		for _, it := range m["items"].([]any) {
			idx = append(idx, num(it.(map[string]any)["index"]))
		}
		meta := m["meta"].(map[string]any)
		if meta["key"] != "items" {
			t.Errorf("meta.key = %v, want items", meta["key"])
		}
		return idx, meta["previous_token"] != nil, meta["next_token"] != nil
	}
	tests := []struct {
		q          string
		want       []int64
		prev, next bool
	}{
		{"HideExpired=true&PageSize=2&Order=asc", []int64{0, 1}, false, true},
		{"HideExpired=true&From=1&PageSize=10&Order=asc", []int64{1, 2}, true, false},
		{"HideExpired=true&From=1&PageSize=10&Order=desc", []int64{1, 0}, true, false},
		{"HideExpired=true&PageSize=10&Order=desc", []int64{2, 1, 0}, false, false},
		{"HideExpired=true&Index=1", []int64{1}, false, false},
		{"HideExpired=true&Index=42", nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.q, func(t *testing.T) {
			idx, prev, next := page(tt.q)
			if len(idx) != len(tt.want) || prev != tt.prev || next != tt.next {
				t.Fatalf("GET ?%s = %v prev %v next %v, want %v prev %v next %v", tt.q, idx, prev, next, tt.want, tt.prev, tt.next)
			}
			for i := range idx {
				if idx[i] != tt.want[i] {
					t.Fatalf("GET ?%s = %v, want %v", tt.q, idx, tt.want)
				}
			}
		})
	}
	it := wantStatus(t, "get item", c.do("GET", items+"/1", nil, nil), 200, 0)
	rev := it["revision"].(string)
	wantStatus(t, "set item", c.do("POST", items+"/1", map[string]string{"If-Match": rev}, map[string]any{"data": map[string]any{"i": 10}}), 200, 0)
	wantStatus(t, "stale item", c.do("POST", items+"/1", map[string]string{"If-Match": rev}, map[string]any{"data": map[string]any{"i": 11}}), 412, 54155)
	del := wantStatus(t, "remove item", c.do("DELETE", items+"/0", nil, []byte("data_sync")), 200, 0)
	if del["last_event_id"] == nil || del["date_updated"] == nil {
		t.Errorf("remove item body = %v, want last_event_id and date_updated", del)
	}
	cx := wantStatus(t, "context", c.do("GET", links["context"].(string), nil, nil), 200, 0)
	if d, _ := json.Marshal(cx["data"]); string(d) != `{"a":1}` || cx["last_event_id"] == nil {
		t.Errorf("context = %v, want data {a:1} and last_event_id", cx)
	}
}

func TestMaps(t *testing.T) {
	e := newEnv(t)
	c := e.session("alice")
	m := wantStatus(t, "create", c.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "m1"}), 201, 0)
	items := m["links"].(map[string]any)["items"].(string)
	key := "k/1 é"
	enc := encodeURIComponent(key)
	if enc != "k%2F1%20%C3%A9" {
		t.Fatalf("encodeURIComponent(%q) = %q", key, enc)
	}
	it := wantStatus(t, "put new", c.do("PUT", items+"/"+enc, nil, map[string]any{"data": map[string]any{"v": 1}}), 201, 0)
	if it["key"] != key || !strings.HasSuffix(it["url"].(string), "/Items/"+enc) {
		t.Errorf("put = %v, want key %q and encoded url", it, key)
	}
	wantStatus(t, "put existing", c.do("PUT", items+"/"+enc, nil, map[string]any{"data": map[string]any{"v": 2}}), 200, 0)
	wantStatus(t, "put If-Match -1 existing", c.do("PUT", items+"/"+enc, map[string]string{"If-Match": "-1"}, map[string]any{"data": map[string]any{"v": 3}}), 412, 0)
	wantStatus(t, "put If-Match -1 new", c.do("PUT", items+"/other", map[string]string{"If-Match": "-1"}, map[string]any{"data": map[string]any{"v": 3}}), 201, 0)
	got := wantStatus(t, "get by Key", c.do("GET", items+"?HideExpired=true&Key="+enc, nil, nil), 200, 0)
	if l := got["items"].([]any); len(l) != 1 || l[0].(map[string]any)["key"] != key {
		t.Errorf("get by Key = %v, want the item", got)
	}
	ttl := wantStatus(t, "item ttl", c.do("POST", items+"/"+enc, nil, map[string]any{"ttl": 30}), 200, 0)
	if ttl["date_expires"] == nil {
		t.Errorf("item ttl date_expires = nil")
	}
	open := wantStatus(t, "open Include=items", c.do("GET", "/v3/Maps/m1?Include=items", nil, nil), 200, 0)
	if l, _ := open["items"].([]any); len(l) != 2 {
		t.Errorf("Include=items items = %v, want 2", open["items"])
	}
	wantStatus(t, "remove", c.do("DELETE", items+"/"+enc, nil, []byte("data_sync")), 200, 0)
	got = wantStatus(t, "get removed", c.do("GET", items+"?HideExpired=true&Key="+enc, nil, nil), 200, 0)
	if l := got["items"].([]any); len(l) != 0 {
		t.Errorf("get removed = %v, want items []", got)
	}
	wantStatus(t, "remove missing", c.do("DELETE", items+"/"+enc, nil, []byte("data_sync")), 404, 54201)
}

func TestStreams(t *testing.T) {
	e := newEnv(t)
	a, b := e.session("alice"), e.session("bob")
	s := wantStatus(t, "create", a.do("POST", "/v3/Streams", nil, map[string]any{"unique_name": "s1"}), 201, 0)
	sid := s["sid"].(string)
	wantStatus(t, "subscribe", b.subscribe("establish", 1700000000001, map[string]any{"object_sid": sid, "object_type": "stream", "last_event_id": nil}), 200, 0)
	if n := b.nextOf("subscription_established", 5*time.Second); string(n.Correlation) != "1700000000001" {
		t.Errorf("correlation_id = %s", n.Correlation)
	}
	msg := wantStatus(t, "publish", a.do("POST", s["links"].(map[string]any)["messages"].(string), nil, map[string]any{"data": map[string]any{"hello": "world"}}), 201, 0)
	n := b.nextOf("stream_message_published", 5*time.Second)
	ev := n.event()
	if ev["message_sid"] != msg["sid"] || ev["stream_sid"] != sid || n.MessageType != "twilio.sync.event" {
		t.Errorf("event = %v (%s), want message %v", ev, n.MessageType, msg["sid"])
	}
	big := strings.Repeat("x", 5*1024)
	wantStatus(t, "oversize", a.do("POST", s["links"].(map[string]any)["messages"].(string), nil, map[string]any{"data": map[string]any{"big": big}}), 413, 54006)
}

// The host a request names becomes the base of the URLs in its answers
// and its session's events: one more encoding per event for each distinct
// one, so it must be a short host[:port], not anything a client sends.
func TestRequestHostValidated(t *testing.T) {
	e := newEnv(t)
	c := e.session("alice")
	send := func(host string) int {
		f := c.call(map[string]any{
			"method": "message", "active_grant": "data_sync", "payload_type": "application/json",
			"http_request": map[string]any{"host": host, "path": "/v3/Documents", "method": "POST", "params": map[string]any{},
				"headers": map[string]any{"Content-Type": "application/json"}},
		}, []byte(`{"data":{}}`))
		var hs protocol.Status
		if ok, err := f.Header.Get("http_status", &hs); !ok || err != nil {
			t.Fatalf("host %.40q: no http_status (%v)", host, err)
		}
		return hs.Code
	}
	for _, host := range []string{strings.Repeat("a", maxHost+1), "evil.example/x", "a b", "h\"x", "h?x", "h\\x", "h\x00"} {
		if code := send(host); code != 400 {
			t.Errorf("request naming host %.40q = %d, want 400", host, code)
		}
	}
	for _, host := range []string{"cds.test:1", "127.0.0.1:3000", "[::1]:3000", "[fe80::1%25eth0]:3000", "bücher.local:3000", "chorus.example.com", strings.Repeat("a", maxHost)} {
		if code := send(host); code != 201 {
			t.Errorf("request naming host %.40q = %d, want 201", host, code)
		}
	}
}

// Sessions that name more hosts than delivery searches linearly each get
// the event encoded for their own host (found by the topic's index).
func TestEventPerHostBeyondLinearSearch(t *testing.T) {
	e := newEnv(t)
	w := e.session("writer")
	m := wantStatus(t, "create map", w.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "m"}), 201, 0)
	sid := m["sid"].(string)
	var subs []*tclient
	for i := range linearBases + 4 {
		c := e.session(fmt.Sprintf("s%d", i))
		c.host = fmt.Sprintf("h%d.example:3000", i)
		c.establish(int64(i+1), map[string]any{"object_sid": sid, "object_type": "map", "last_event_id": num(m["last_event_id"])})
		subs = append(subs, c)
	}
	wantStatus(t, "add item", w.do("POST", "/v3/Maps/"+sid+"/Items", nil, map[string]any{"key": "k", "data": map[string]any{}}), 201, 0)
	for i, c := range subs {
		ev := c.nextOf("map_item_added", 5*time.Second).event()
		if u, _ := ev["item_url"].(string); !strings.HasPrefix(u, "http://"+c.host+"/") {
			t.Errorf("session %d (host %s): item_url %q", i, c.host, u)
		}
	}
}

// TestCDSTextAsSent: a unique name or Map item key is stored as the
// client sent it or refused: a lone UTF-16 surrogate escape, which
// encoding/json would read as U+FFFD, is a 400; a surrogate pair, an
// escaped U+FFFD and an escaped backslash before "ud800" are text like
// any other.
func TestCDSTextAsSent(t *testing.T) {
	e := newEnv(t)
	c := e.session("alice")
	for _, tc := range []struct {
		name string // JSON string literal
		code int    // 0: created with the decoded name
		want string
	}{
		{`"a\ud800b"`, 54302, ""},
		{`"a\udc00b"`, 54302, ""},
		{`"a\ud800\u0041"`, 54302, ""},
		{`"end\ud83d"`, 54302, ""},
		{`"smile\ud83d\ude00"`, 0, "smile\U0001F600"},
		{`"repl\ufffd"`, 0, "repl\uFFFD"},
		{`"bs\\ud800"`, 0, `bs\ud800`},
	} {
		r := c.do("POST", "/v3/Documents", nil, []byte(`{"unique_name":`+tc.name+`,"data":{}}`))
		if tc.code != 0 {
			wantStatus(t, "create "+tc.name, r, 400, tc.code)
			continue
		}
		if m := wantStatus(t, "create "+tc.name, r, 201, 0); m["unique_name"] != tc.want {
			t.Errorf("create %s: unique_name %q, want %q", tc.name, m["unique_name"], tc.want)
		}
	}
	m := wantStatus(t, "create map", c.do("POST", "/v3/Maps", nil, []byte(`{}`)), 201, 0)
	items := "/v3/Maps/" + m["sid"].(string) + "/Items"
	wantStatus(t, "lone surrogate key", c.do("POST", items, nil, []byte(`{"key":"k\udfff","data":{}}`)), 400, 54209)
	if it := wantStatus(t, "pair key", c.do("POST", items, nil, []byte(`{"key":"k\ud83d\ude00","data":{}}`)), 201, 0); it["key"] != "k\U0001F600" {
		t.Errorf("pair key: %v", it["key"])
	}
}

// TestItemPagesHoldAtMost100: a PageSize over 100 gives pages of 100 items
// over CDS, as Twilio's do (twilio-sync 4.x's getItems: "PageSize between
// 100 and 1000 returns at most 100 items"); the next token reads on, and
// meta.page_size says what the page holds at most. Chorus gave 999.
func TestItemPagesHoldAtMost100(t *testing.T) {
	e := newEnv(t)
	c := e.session("alice")
	m := wantStatus(t, "create", c.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "m150"}), 201, 0)
	items := m["links"].(map[string]any)["items"].(string)
	for i := range 150 {
		wantStatus(t, "put", c.do("POST", items, nil, map[string]any{"key": fmt.Sprintf("k%03d", i), "data": map[string]any{"i": i}}), 201, 0)
	}
	var keys []string
	url := items + "?HideExpired=true&PageSize=500"
	for pages := 0; url != ""; pages++ {
		if pages == 3 {
			t.Fatal("more than 2 pages for 150 items")
		}
		p := wantStatus(t, "page", c.do("GET", url, nil, nil), 200, 0)
		got := p["items"].([]any)
		if len(got) > 100 {
			t.Fatalf("a page of %d items, want at most 100", len(got))
		}
		meta := p["meta"].(map[string]any)
		if ps := num(meta["page_size"]); ps != 100 {
			t.Errorf("meta.page_size = %d, want 100", ps)
		}
		for _, it := range got {
			keys = append(keys, it.(map[string]any)["key"].(string))
		}
		url = ""
		if tok, ok := meta["next_token"].(string); ok && tok != "" {
			url = items + "?HideExpired=true&PageToken=" + tok + "&PageSize=500"
		}
	}
	if len(keys) != 150 || keys[0] != "k000" || keys[149] != "k149" {
		t.Errorf("read %d keys (%v … %v), want k000 … k149 once each", len(keys), keys[:1], keys[len(keys)-1:])
	}
}

// TestIncludeItemsFitsTheSendQueue: a map descriptor with Include=items
// carries as many items as fit in a quarter of the session's send queue
// (and 1 MiB), each whole, and the session carries on; the SDK reads the
// others in pages. Before, it carried up to 1,000 items, and a reply
// bigger than the send queue closed the session as a slow consumer: 1,000
// items of 16 KiB, with the default 8 MiB queue, made twilio-sync 4.0.1's
// map({includeItems: true}) fail with "disconnected".
func TestIncludeItemsFitsTheSendQueue(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) { c.SendQueueBytes = 1 << 20 }))
	c := e.session("alice")
	wantStatus(t, "create", c.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "big"}), 201, 0)
	value := strings.Repeat("a", 15<<10)
	const n = 100 // 1.5 MiB of data
	for i := range n {
		wantStatus(t, "put", c.do("PUT", fmt.Sprintf("/v3/Maps/big/Items/k%03d", i), nil, map[string]any{"data": map[string]any{"s": value}}), 201, 0)
	}
	open := wantStatus(t, "open Include=items", c.do("GET", "/v3/Maps/big?Include=items", nil, nil), 200, 0)
	items, _ := open["items"].([]any)
	if len(items) == 0 || len(items) >= n {
		t.Fatalf("Include=items carried %d of %d items, want some, within a quarter of the 1 MiB send queue", len(items), n)
	}
	for i, it := range items {
		m := it.(map[string]any)
		if m["key"] != fmt.Sprintf("k%03d", i) || m["data"].(map[string]any)["s"] != value {
			t.Fatalf("included item %d = %v…, want k%03d whole", i, m["key"], i)
		}
	}
	t.Logf("Include=items carried %d of %d items of 15 KiB", len(items), n)
	wantStatus(t, "a request after it", c.do("GET", "/v3/Maps/big/Items/k099", nil, nil), 200, 0)
}
