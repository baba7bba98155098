package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// What older twilio-sync generations need (test/SDK-NOTES.md §11); the
// official SDKs themselves run in test/sdk-compat.

func TestEventProtocol3(t *testing.T) {
	e := newEnv(t)
	c := e.session("alice")
	d1 := wantStatus(t, "create", c.do("POST", "/v3/Documents", nil, map[string]any{"unique_name": "d1"}), 201, 0)
	d2 := wantStatus(t, "create", c.do("POST", "/v3/Documents", nil, map[string]any{"unique_name": "d2"}), 201, 0)
	sub := func(version, corr int, action string, sids ...string) {
		t.Helper()
		var reqs []map[string]any
		for _, s := range sids {
			reqs = append(reqs, docSub(s, nil))
		}
		wantStatus(t, action, c.do("POST", "/v4/Subscriptions", nil, map[string]any{
			"event_protocol_version": version, "action": action, "correlation_id": corr, "requests": reqs,
		}), 200, 0)
	}
	sids := []string{d1["sid"].(string), d2["sid"].(string)}

	// Version 3 (twilio-sync 0.5 … 3.0.x): one message per entry, a single
	// "event" and no "events".
	sub(3, 7, "establish", sids...)
	for i := range sids {
		n := c.nextOf("subscription_established", 5*time.Second)
		if n.Events != nil || n.event()["object_sid"] != sids[i] || string(n.Correlation) != "7" {
			t.Fatalf("v3 establish #%d = event %s events %s corr %s, want a single event for %s", i, n.Event, n.Events, n.Correlation, sids[i])
		}
	}
	sub(3, 8, "cancel", sids...)
	for i := range sids {
		if n := c.nextOf("subscription_canceled", 5*time.Second); n.Events != nil || n.event()["object_sid"] != sids[i] {
			t.Fatalf("v3 cancel #%d = event %s events %s", i, n.Event, n.Events)
		}
	}
	sub(3, 9, "establish", "ET"+strings.Repeat("0", 32))
	if n := c.nextOf("subscription_failed", 5*time.Second); n.Events != nil || n.event()["error"] == nil {
		t.Fatalf("v3 failed = event %s events %s, want a single event with error", n.Event, n.Events)
	}

	// Version 4: one message, an "events" array.
	sub(4, 10, "establish", sids...)
	n := c.nextOf("subscription_established", 5*time.Second)
	var evs []map[string]any
	if err := json.Unmarshal(n.Events, &evs); err != nil || len(evs) != 1 && len(evs) != 2 || n.Event != nil {
		t.Fatalf("v4 establish = event %s events %s, want an events array", n.Event, n.Events)
	}
}

func TestPageTokenKeepsPageSize(t *testing.T) {
	e := newEnv(t)
	c := e.session("alice")
	for _, kind := range []string{"Lists", "Maps"} {
		t.Run(kind, func(t *testing.T) {
			o := wantStatus(t, "create", c.do("POST", "/v3/"+kind, nil, map[string]any{"unique_name": "o"}), 201, 0)
			items := o["links"].(map[string]any)["items"].(string)
			for i := range 7 {
				body := map[string]any{"data": map[string]any{"i": i}}
				if kind == "Maps" {
					body["key"] = fmt.Sprintf("k%d", i)
				}
				wantStatus(t, "add", c.do("POST", items, nil, body), 201, 0)
			}
			page := func(q string) (int, string, string) {
				t.Helper()
				m := wantStatus(t, "page "+q, c.do("GET", items+q, nil, nil), 200, 0)
				meta := m["meta"].(map[string]any)
				next, _ := meta["next_token"].(string)
				prev, _ := meta["previous_token"].(string)
				return len(m["items"].([]any)), next, prev
			}
			// twilio-sync ≤ 3.2 sends only the PageToken after the first page.
			var sizes []int
			n, next, _ := page("?PageSize=3&Order=asc")
			sizes = append(sizes, n)
			var prev string
			for next != "" {
				n, next, prev = page("?PageToken=" + next)
				sizes = append(sizes, n)
			}
			if fmt.Sprint(sizes) != "[3 3 1]" {
				t.Fatalf("page sizes = %v, want [3 3 1]", sizes)
			}
			if n, _, _ := page("?PageToken=" + prev); n != 3 {
				t.Errorf("previous page = %d items, want 3", n)
			}
			// An explicit PageSize wins over the token's; a token without a
			// size (issued before sizes were added) gives the default.
			_, next, _ = page("?PageSize=3")
			if n, _, _ := page("?PageSize=2&PageToken=" + next); n != 2 {
				t.Errorf("PageSize=2 with a token = %d items, want 2", n)
			}
			old := encodeToken("", "asc", 0, false)
			if n, _, _ := page("?PageToken=" + old); n != 7 {
				t.Errorf("old token = %d items, want all 7", n)
			}
			wantStatus(t, "negative size", c.do("GET", items+"?PageToken="+encodeToken("", "asc", -1, false), nil, nil), 400, 54453)
		})
	}
}

// TestPageTokensBothWays: twilio-sync ≤ 3.1 pages with the tokens alone
// and shows the items as they come, so a previous page must come in the
// page's own order with tokens that go on from it: walking back from the
// last page ends at the first, and nextPage after prevPage goes forwards.
// (A previous token used to name the opposite order: the page came
// reversed and its own previous token pointed forwards again, for ever.)
func TestPageTokensBothWays(t *testing.T) {
	e := newEnv(t)
	c := e.session("alice")
	for _, kind := range []string{"Lists", "Maps"} {
		o := wantStatus(t, "create", c.do("POST", "/v3/"+kind, nil, map[string]any{"unique_name": "both-" + kind}), 201, 0)
		items := o["links"].(map[string]any)["items"].(string)
		for i := range 7 {
			body := map[string]any{"data": map[string]any{"i": i}}
			if kind == "Maps" {
				body["key"] = fmt.Sprintf("k%d", i)
			}
			wantStatus(t, "add", c.do("POST", items, nil, body), 201, 0)
		}
		type page struct{ ids, prev, next string }
		get := func(q string) page {
			t.Helper()
			m := wantStatus(t, "page "+q, c.do("GET", items+q, nil, nil), 200, 0)
			var ids []string
			for _, it := range m["items"].([]any) {
				ids = append(ids, fmt.Sprint(it.(map[string]any)["data"].(map[string]any)["i"]))
			}
			meta := m["meta"].(map[string]any)
			prev, _ := meta["previous_token"].(string)
			next, _ := meta["next_token"].(string)
			return page{strings.Join(ids, ","), prev, next}
		}
		for _, order := range []string{"asc", "desc"} {
			want := []string{"0,1,2", "3,4,5", "6"}
			if order == "desc" {
				want = []string{"6,5,4", "3,2,1", "0"}
			}
			p := get("?PageSize=3&Order=" + order)
			seen := []string{p.ids}
			for p.next != "" && len(seen) < 5 {
				p = get("?PageToken=" + p.next)
				seen = append(seen, p.ids)
			}
			if fmt.Sprint(seen) != fmt.Sprint(want) {
				t.Fatalf("%s %s: forwards %v, want %v", kind, order, seen, want)
			}
			back := []string{}
			for p.prev != "" && len(back) < 5 {
				p = get("?PageToken=" + p.prev)
				back = append(back, p.ids)
			}
			if wantBack := []string{want[1], want[0]}; fmt.Sprint(back) != fmt.Sprint(wantBack) {
				t.Errorf("%s %s: backwards %v, want %v", kind, order, back, wantBack)
			}
			if p.next == "" {
				t.Fatalf("%s %s: the first page, reached backwards, has no next page", kind, order)
			}
			if again := get("?PageToken=" + p.next); again.ids != want[1] || again.prev == "" || again.next == "" {
				t.Errorf("%s %s: next after going back = %+v, want %s with both tokens", kind, order, again, want[1])
			}
		}
	}
}

func TestEMSTokenExchange(t *testing.T) {
	e := newEnv(t)
	tok := e.token("alice", time.Hour)
	check := func(t *testing.T, status int, body []byte) {
		t.Helper()
		var r emsReply
		if status != 200 || json.Unmarshal(body, &r) != nil {
			t.Fatalf("exchange = %d %s, want 200", status, body)
		}
		if r.Token != tok || r.Identity != "alice" || r.AccountSID != e.creds.AccountSID ||
			r.InstanceSIDs["data_sync"] != e.creds.ServiceSID || r.Status.Status != "NEW" || r.TTL < 3500 || r.TTL > 3600 || r.ContinuationToken == "" {
			t.Fatalf("exchange = %s", body)
		}
	}
	req, _ := json.Marshal(map[string]any{"fpa_token": tok})

	t.Run("websocket", func(t *testing.T) {
		c := e.session("alice")
		r := c.do("POST", "https://ems.us1.twilio.com/v1/token", nil, json.RawMessage(req))
		check(t, r.Status, r.Body)
		wantStatus(t, "bad token", c.do("POST", "/v1/token", nil, map[string]any{"fpa_token": "x.y.z"}), 401, 0)
		// Through a session, a token of another identity is refused, as
		// the socket's update would refuse it: accepted here, it had
		// twilio-sync 0.5 and 0.7 crash (see emsToken).
		other, _ := json.Marshal(map[string]any{"fpa_token": e.token("mallory", time.Hour), "continuation_token": "ct_1"})
		wantStatus(t, "another identity's token", c.do("POST", "/v1/token", nil, json.RawMessage(other)), 401, 20101)
		renewed, _ := json.Marshal(map[string]any{"fpa_token": e.token("alice", 2*time.Hour), "continuation_token": "ct_1"})
		if r := c.do("POST", "/v1/token", nil, json.RawMessage(renewed)); r.Status != 200 || !strings.Contains(string(r.Body), `"UPDATED"`) {
			t.Errorf("a renewal of the session's identity = %d %s, want 200 UPDATED", r.Status, r.Body)
		}
	})
	t.Run("http", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(e.gw.ServeEMSToken))
		defer srv.Close()
		post := func(body string) (int, []byte, http.Header) {
			t.Helper()
			res, err := http.Post(srv.URL+"/v1/token", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var b bytes.Buffer
			b.ReadFrom(res.Body)
			return res.StatusCode, b.Bytes(), res.Header
		}
		st, body, h := post(string(req))
		check(t, st, body)
		if h.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("no CORS header: %v", h)
		}
		for _, bad := range []string{"", "{", `{"fpa_token":""}`, `{"fpa_token":"a.b.c"}`, strings.Repeat("x", emsMaxBody+1)} {
			if st, body, _ := post(bad); st < 400 || st >= 500 {
				t.Errorf("POST %.20q = %d %s, want a 4xx", bad, st, body)
			}
		}
		pre, _ := http.NewRequestWithContext(context.Background(), http.MethodOptions, srv.URL+"/v1/token", nil)
		res, err := http.DefaultClient.Do(pre)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 204 || res.Header.Get("Access-Control-Allow-Headers") == "" {
			t.Errorf("preflight = %d %v", res.StatusCode, res.Header)
		}
	})
}

func TestOldSDKCreates(t *testing.T) {
	e := newEnv(t)
	c := e.session("alice")
	// 0.5–0.7 send null for "none given".
	wantStatus(t, "document data null", c.do("POST", "/v3/Documents", nil, map[string]any{"unique_name": "d", "data": nil}), 201, 0)
	wantStatus(t, "list context null", c.do("POST", "/v3/Lists", nil, map[string]any{"unique_name": "l", "purpose": nil, "context": nil}), 201, 0)
	m := wantStatus(t, "map", c.do("POST", "/v3/Maps", nil, map[string]any{"unique_name": "m"}), 201, 0)
	items := m["links"].(map[string]any)["items"].(string)
	wantStatus(t, "add k", c.do("POST", items, nil, map[string]any{"key": "a b", "data": map[string]any{}}), 201, 0)
	// 0.5 sets an existing key with POST, then updates err.body.links.item.
	conflict := wantStatus(t, "add k again", c.do("POST", items, nil, map[string]any{"key": "a b", "data": map[string]any{}}), 409, 0)
	link, _ := conflict["links"].(map[string]any)["item"].(string)
	if !strings.HasSuffix(link, "/Items/a%20b") || conflict["code"] == nil {
		t.Fatalf("409 body = %v, want code and links.item", conflict)
	}
	wantStatus(t, "update via link", c.do("POST", link, nil, map[string]any{"data": map[string]any{"v": 1}}), 200, 0)
}

func TestPlainHTTPCDS(t *testing.T) {
	e := newEnv(t)
	srv := httptest.NewServer(http.HandlerFunc(e.gw.ServeCDS))
	defer srv.Close()
	tok := e.token("alice", time.Hour)
	call := func(method, path, token, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), method, srv.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("X-Twilio-Token", token)
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var m map[string]any
		json.NewDecoder(res.Body).Decode(&m)
		return res.StatusCode, m
	}
	if st, m := call("POST", "/v3/Documents", tok, `{"unique_name":"d","data":null}`); st != 201 || m["sid"] == nil {
		t.Fatalf("create = %d %v", st, m)
	}
	if st, m := call("GET", "/v3/Documents/d", tok, ""); st != 200 || !strings.HasPrefix(m["url"].(string), srv.URL+"/v3/Services/") {
		t.Fatalf("get = %d %v", st, m)
	}
	if st, m := call("GET", "/v3/Services/"+e.svc.SID+"/Documents/d", tok, ""); st != 200 {
		t.Fatalf("get by service path = %d %v", st, m)
	}
	if st, m := call("POST", "/v3/Maps", tok, `{"unique_name":"m"}`); st != 201 {
		t.Fatalf("map = %d %v", st, m)
	}
	if st, _ := call("PUT", "/v3/Maps/m/Items/a%20b", tok, `{"data":{"v":1}}`); st != 201 {
		t.Fatalf("put item = %d", st)
	}
	if st, m := call("GET", "/v3/Maps/m/Items?Key=a%20b", tok, ""); st != 200 || len(m["items"].([]any)) != 1 {
		t.Fatalf("get item = %d %v", st, m)
	}
	for _, c := range []struct {
		method, path, token, body string
		status                    int
	}{
		{"GET", "/v3/Documents/d", "", "", 401},
		{"GET", "/v3/Documents/d", "a.b.c", "", 401},
		{"GET", "/v3/Documents/", tok, "", 404},
		{"GET", "/v3/Nothing/x", tok, "", 404},
		{"POST", "/v3/Insights/idx/Items", tok, `{}`, 404},
		{"GET", "/v3/Services", tok, "", 404},
		{"GET", "/v3/Services/" + e.svc.SID, tok, "", 404},
		{"POST", "/v3/Documents", tok, `{"unique_name":"big","data":{"x":"` + strings.Repeat("x", 300<<10) + `"}}`, 413},
		{"POST", "/v3/Documents", tok, `{`, 400},
	} {
		if st, m := call(c.method, c.path, c.token, c.body); st != c.status || m["code"] == nil {
			t.Errorf("%s %s = %d %v, want %d with a code", c.method, c.path, st, m, c.status)
		}
	}
	pre, _ := http.NewRequestWithContext(context.Background(), http.MethodOptions, srv.URL+"/v3/Documents", nil)
	res, err := http.DefaultClient.Do(pre)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 204 || !strings.Contains(res.Header.Get("Access-Control-Allow-Headers"), "X-Twilio-Token") {
		t.Errorf("preflight = %d %v", res.StatusCode, res.Header)
	}
}

// An empty previous page (everything before the page removed meanwhile)
// leads forwards to the page the client came from, its first item
// included.
func TestEmptyPreviousPageLeadsBack(t *testing.T) {
	e := newEnv(t)
	c := e.session("alice")
	o := wantStatus(t, "create", c.do("POST", "/v3/Lists", nil, map[string]any{"unique_name": "emptied"}), 201, 0)
	items := o["links"].(map[string]any)["items"].(string)
	for i := range 7 {
		wantStatus(t, "add", c.do("POST", items, nil, map[string]any{"data": map[string]any{"i": i}}), 201, 0)
	}
	page := func(q string) (string, string, string) {
		t.Helper()
		m := wantStatus(t, "page "+q, c.do("GET", items+q, nil, nil), 200, 0)
		var ids []string
		for _, it := range m["items"].([]any) {
			ids = append(ids, fmt.Sprint(it.(map[string]any)["index"]))
		}
		meta := m["meta"].(map[string]any)
		prev, _ := meta["previous_token"].(string)
		next, _ := meta["next_token"].(string)
		return strings.Join(ids, ","), prev, next
	}
	_, _, next := page("?PageSize=3")
	ids, prev, _ := page("?PageToken=" + next)
	if ids != "3,4,5" || prev == "" {
		t.Fatalf("second page %q, previous token %q", ids, prev)
	}
	for i := range 3 {
		wantStatus(t, "remove", c.do("DELETE", fmt.Sprintf("%s/%d", items, i), nil, nil), 200, 0)
	}
	ids, _, next = page("?PageToken=" + prev)
	if ids != "" || next == "" {
		t.Fatalf("the emptied previous page = %q with next token %q, want empty with a next token", ids, next)
	}
	if ids, _, _ = page("?PageToken=" + next); ids != "3,4,5" {
		t.Errorf("forwards from the emptied page = %q, want 3,4,5", ids)
	}
}
