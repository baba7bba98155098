package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// code returns the Twilio code of err, 0 for nil.
func code(err error) int {
	if err == nil {
		return 0
	}
	return chorus.ErrorCode(err)
}

func form(kv ...string) url.Values {
	f := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		f.Add(kv[i], kv[i+1])
	}
	return f
}

func TestOptTTL(t *testing.T) {
	tests := []struct {
		in   url.Values
		want *int
		code int
	}{
		{form(), nil, 0},
		{form("Ttl", ""), ptr(0), 0}, // empty: never expires, as 0
		{form("Ttl", " "), ptr(0), 0},
		{form("Ttl", "0"), ptr(0), 0},
		{form("Ttl", "3600"), ptr(3600), 0},
		{form("Ttl", "31536000"), ptr(31536000), 0},
		{form("Ttl", "31536001"), nil, 54011},
		{form("Ttl", "-1"), nil, 54011},
		{form("Ttl", "1.5"), nil, 54011},
		{form("Ttl", "abc"), nil, 54011},
		{form("Ttl", "99999999999999999999"), nil, 54011},
	}
	for _, tt := range tests {
		t.Run(tt.in.Encode(), func(t *testing.T) {
			got, err := optTTL(tt.in, "Ttl")
			if code(err) != tt.code || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("optTTL(%v) = %v, code %d, want %v, code %d", tt.in, got, code(err), tt.want, tt.code)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestTTLPairPrimaryWins(t *testing.T) {
	got, err := ttlPair(form("CollectionTtl", "10", "Ttl", "20"), "CollectionTtl", "Ttl")
	if err != nil || got == nil || *got != 10 {
		t.Errorf("ttlPair(CollectionTtl=10, Ttl=20) = %v, %v, want 10", got, err)
	}
	got, err = ttlPair(form("Ttl", "20"), "CollectionTtl", "Ttl")
	if err != nil || got == nil || *got != 20 {
		t.Errorf("ttlPair(Ttl=20) = %v, %v, want 20", got, err)
	}
	if _, err := ttlPair(form("CollectionTtl", "10", "Ttl", "x"), "CollectionTtl", "Ttl"); code(err) != 54011 {
		t.Errorf("ttlPair(CollectionTtl=10, Ttl=x) code = %d, want 54011", code(err))
	}
}

func TestOptBool(t *testing.T) {
	tests := []struct {
		in   string
		want any // bool or error code
	}{
		{"true", true}, {"false", false}, {"True", true}, {"FALSE", false}, {"1", true}, {"0", false},
		{"yes", 54060}, {"", 54060}, {"tru", 54060},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := optBool(form("AclEnabled", tt.in), "AclEnabled")
			if c, ok := tt.want.(int); ok {
				if code(err) != c {
					t.Errorf("optBool(%q) code = %d, want %d", tt.in, code(err), c)
				}
				return
			}
			if err != nil || got == nil || *got != tt.want.(bool) {
				t.Errorf("optBool(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
			}
		})
	}
	if got, err := optBool(form(), "AclEnabled"); got != nil || err != nil {
		t.Errorf("optBool(absent) = %v, %v, want nil, nil", got, err)
	}
	if _, err := reqBool(form(), "Read"); code(err) != 54060 {
		t.Errorf("reqBool(absent) code = %d, want 54060", code(err))
	}
}

func TestOptData(t *testing.T) {
	big := `{"a":"` + strings.Repeat("x", chorus.MaxDataBytes-8) + `"}` // exactly 16 KiB
	if len(big) != chorus.MaxDataBytes {
		t.Fatalf("len(big) = %d, want %d", len(big), chorus.MaxDataBytes)
	}
	tests := []struct {
		name string
		in   url.Values
		want int // error code; 0 = ok
	}{
		{"absent", form(), 0},
		{"object", form("Data", `{"a":1}`), 0},
		{"16KiB", form("Data", big), 0},
		// The limit is the engine's, on the compacted text: a trailing
		// space passes here; only text over 4×16 KiB is refused unparsed.
		{"16KiB and a space", form("Data", big+" "), 0},
		{"over 6x16KiB", form("Data", `{"a":"`+strings.Repeat("x", 6*chorus.MaxDataBytes)+`"}`), 54006},
		{"invalid", form("Data", `{"a":`), 54008},
		{"empty", form("Data", ""), 54008},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := optData(tt.in, chorus.MaxDataBytes)
			if code(err) != tt.want {
				t.Fatalf("optData(%s) code = %d (%v), want %d", tt.name, code(err), err, tt.want)
			}
			if err == nil {
				if v, ok := value(tt.in, "Data"); ok && string(got) != v {
					t.Errorf("optData(%s) = %q, want %q", tt.name, got, v)
				}
			}
		})
	}
	if _, err := reqData(form(), chorus.MaxMessageBytes, chorus.ErrStreamMessageData); code(err) != 54251 {
		t.Errorf("reqData(absent) code = %d, want 54251", code(err))
	}
}

func TestIfMatch(t *testing.T) {
	tests := []struct {
		in, want string
		code     int
	}{
		{"*", "", 0},
		{"", "", 54003},
		{" ", "", 54003},
		{"0", "0", 0},
		{"1e", "1e", 0},
		{`"1e"`, "1e", 0},
		{"1E", "1e", 0},
		{`W/"3"`, "3", 0},
		{"zz", "", 54003},
		{"-1", "", 54003},
		{`""`, "", 54003},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ifMatch([]string{tt.in})
			if code(err) != tt.code || got != tt.want {
				t.Errorf("ifMatch(%q) = %q, code %d, want %q, code %d", tt.in, got, code(err), tt.want, tt.code)
			}
		})
	}
	if got, err := ifMatch(nil); got != "" || err != nil {
		t.Errorf("ifMatch(absent) = %q, %v, want unconditional", got, err)
	}
	if _, err := ifMatch([]string{"1", "2"}); code(err) != 54003 {
		t.Errorf("ifMatch(twice) code %d, want 54003", code(err))
	}
}

func TestParsePage(t *testing.T) {
	tests := []struct {
		in   url.Values
		want pageParams
		code int
	}{
		{form(), pageParams{}, 0},
		{form("PageSize", "1"), pageParams{size: 1}, 0},
		{form("PageSize", "1000", "Page", "3", "PageToken", "PTabc"), pageParams{size: 1000, page: 3, token: "PTabc"}, 0},
		{form("PageSize", "0"), pageParams{}, 54454},
		// Above 1000 pages by 1000: the helper libraries send a list's
		// limit as its page size.
		{form("PageSize", "1001"), pageParams{size: 1000}, 0},
		{form("PageSize", "5000"), pageParams{size: 1000}, 0},
		{form("PageSize", "-3"), pageParams{}, 54454},
		{form("PageSize", "ten"), pageParams{}, 54454},
		{form("PageSize", ""), pageParams{}, 54454},
		{form("Page", "-1"), pageParams{}, 54060},
		{form("Page", "0"), pageParams{}, 0},
		// A page number without its token answered page 0 as page 5.
		{form("Page", "5", "PageSize", "2"), pageParams{}, 54060},
	}
	for _, tt := range tests {
		t.Run(tt.in.Encode(), func(t *testing.T) {
			got, err := parsePage(tt.in)
			if code(err) != tt.code {
				t.Fatalf("parsePage(%v) code = %d, want %d", tt.in, code(err), tt.code)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parsePage(%v) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseIndex(t *testing.T) {
	for _, s := range []string{"-1", "x", "", "1.0", "99999999999999999999"} {
		if _, err := parseIndex(s); code(err) != 54458 {
			t.Errorf("parseIndex(%q) code = %d, want 54458", s, code(err))
		}
	}
	if n, err := parseIndex("42"); err != nil || n != 42 {
		t.Errorf("parseIndex(42) = %d, %v, want 42", n, err)
	}
}

func TestPageMeta(t *testing.T) {
	const coll = "https://h.example/v1/Services/IS1/Maps/m/Items"
	p, err := parseItemPage(form("Order", "desc", "From", "a b/é", "Bounds", "exclusive", "PageSize", "3", "Page", "2", "PageToken", "tok+/="))
	if err != nil {
		t.Fatal(err)
	}
	m := pageMeta(coll, "items", p, 3, "n&x", "p")
	wantNext := coll + "?From=a+b%2F%C3%A9&Bounds=exclusive&Order=desc&PageSize=3&Page=3&PageToken=n%26x"
	if m.NextPageURL == nil || *m.NextPageURL != wantNext {
		t.Errorf("next_page_url = %v, want %s", deref(m.NextPageURL), wantNext)
	}
	wantPrev := coll + "?From=a+b%2F%C3%A9&Bounds=exclusive&Order=desc&PageSize=3&Page=1&PageToken=p"
	if m.PreviousPageURL == nil || *m.PreviousPageURL != wantPrev {
		t.Errorf("previous_page_url = %v, want %s", deref(m.PreviousPageURL), wantPrev)
	}
	wantFirst := coll + "?From=a+b%2F%C3%A9&Bounds=exclusive&Order=desc&PageSize=3&Page=0"
	if m.FirstPageURL != wantFirst {
		t.Errorf("first_page_url = %s, want %s", m.FirstPageURL, wantFirst)
	}
	wantURL := coll + "?From=a+b%2F%C3%A9&Bounds=exclusive&Order=desc&PageSize=3&Page=2&PageToken=tok%2B%2F%3D"
	if m.URL != wantURL {
		t.Errorf("url = %s, want %s", m.URL, wantURL)
	}
	if m.Page != 2 || m.PageSize != 3 || m.Key != "items" {
		t.Errorf("meta page/page_size/key = %d/%d/%s, want 2/3/items", m.Page, m.PageSize, m.Key)
	}
	// The URL round-trips the filters and token exactly.
	u, err := url.Parse(*m.NextPageURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("From") != "a b/é" || q.Get("PageToken") != "n&x" {
		t.Errorf("next_page_url query From=%q PageToken=%q, want %q %q", q.Get("From"), q.Get("PageToken"), "a b/é", "n&x")
	}

	end := pageMeta(coll, "items", pageParams{}, 0, "", "")
	if end.NextPageURL != nil || end.PreviousPageURL != nil {
		t.Errorf("last page next/prev = %v/%v, want nil/nil", end.NextPageURL, end.PreviousPageURL)
	}
	if end.PageSize != chorus.DefaultPageSize {
		t.Errorf("default page_size = %d, want %d", end.PageSize, chorus.DefaultPageSize)
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// keysOf returns the sorted top-level JSON keys of v rendered.
func keysOf(t testing.TB, v any) (map[string]json.RawMessage, []string) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return m, keys
}

func sorted(ss ...string) []string {
	out := append([]string{}, ss...)
	sort.Strings(out)
	return out
}

func TestRenderFields(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.FixedZone("x", 3600))
	exp := now.Add(time.Hour)
	svc := &chorus.Service{SID: "IS00000000000000000000000000000001", AccountSID: "AC00000000000000000000000000000001", DateCreated: now, DateUpdated: now}
	obj := func(k chorus.Kind, sid string) *chorus.Object {
		return &chorus.Object{Kind: k, SID: sid, AccountSID: svc.AccountSID, ServiceSID: svc.SID, Revision: 30,
			CreatedBy: "system", DateCreated: now, DateUpdated: now}
	}
	const base = "https://sync.example"
	tests := []struct {
		name  string
		v     any
		keys  []string
		check map[string]string // key -> exact JSON
	}{
		{"service", renderService(base, svc), sorted("sid", "unique_name", "account_sid", "friendly_name", "date_created", "date_updated", "url", "webhook_url", "webhooks_from_rest_enabled", "reachability_webhooks_enabled", "acl_enabled", "reachability_debouncing_enabled", "reachability_debouncing_window", "links"),
			map[string]string{"unique_name": "null", "date_created": `"2026-01-02T02:04:05Z"`, "url": `"https://sync.example/v1/Services/IS00000000000000000000000000000001"`}},
		{"document", renderObject(base, svc, obj(chorus.KindDocument, "ET00000000000000000000000000000001")), sorted("sid", "unique_name", "account_sid", "service_sid", "url", "links", "revision", "data", "date_expires", "date_created", "date_updated", "created_by"),
			map[string]string{"unique_name": "null", "date_expires": "null", "revision": `"1e"`, "data": "{}", "created_by": `"system"`,
				"links": `{"permissions":"https://sync.example/v1/Services/IS00000000000000000000000000000001/Documents/ET00000000000000000000000000000001/Permissions"}`}},
		{"list", renderObject(base, svc, obj(chorus.KindList, "ES00000000000000000000000000000001")), sorted("sid", "unique_name", "account_sid", "service_sid", "url", "links", "revision", "date_expires", "date_created", "date_updated", "created_by"),
			map[string]string{"links": `{"items":"https://sync.example/v1/Services/IS00000000000000000000000000000001/Lists/ES00000000000000000000000000000001/Items","permissions":"https://sync.example/v1/Services/IS00000000000000000000000000000001/Lists/ES00000000000000000000000000000001/Permissions"}`}},
		{"map", renderObject(base, svc, obj(chorus.KindMap, "MP00000000000000000000000000000001")), sorted("sid", "unique_name", "account_sid", "service_sid", "url", "links", "revision", "date_expires", "date_created", "date_updated", "created_by"),
			map[string]string{"links": `{"items":"https://sync.example/v1/Services/IS00000000000000000000000000000001/Maps/MP00000000000000000000000000000001/Items","permissions":"https://sync.example/v1/Services/IS00000000000000000000000000000001/Maps/MP00000000000000000000000000000001/Permissions"}`}},
		{"stream", renderObject(base, svc, obj(chorus.KindStream, "TO00000000000000000000000000000001")), sorted("sid", "unique_name", "account_sid", "service_sid", "url", "links", "date_expires", "date_created", "date_updated", "created_by"),
			map[string]string{"links": `{"messages":"https://sync.example/v1/Services/IS00000000000000000000000000000001/Streams/TO00000000000000000000000000000001/Messages"}`}},
		{"map item", renderItem(base, svc, &chorus.Item{Kind: chorus.KindMap, ObjectSID: "MP00000000000000000000000000000001", Key: "a/b c é", Data: json.RawMessage(`{"x":1}`), DateExpires: &exp, CreatedBy: "system"}),
			sorted("key", "account_sid", "service_sid", "map_sid", "url", "revision", "data", "date_expires", "date_created", "date_updated", "created_by"),
			map[string]string{"url": `"https://sync.example/v1/Services/IS00000000000000000000000000000001/Maps/MP00000000000000000000000000000001/Items/a%2Fb%20c%20%C3%A9"`, "date_expires": `"2026-01-02T03:04:05Z"`, "revision": `"0"`}},
		{"list item", renderItem(base, svc, &chorus.Item{Kind: chorus.KindList, ObjectSID: "ES00000000000000000000000000000001", Index: 7}),
			sorted("index", "account_sid", "service_sid", "list_sid", "url", "revision", "data", "date_expires", "date_created", "date_updated", "created_by"),
			map[string]string{"index": "7", "url": `"https://sync.example/v1/Services/IS00000000000000000000000000000001/Lists/ES00000000000000000000000000000001/Items/7"`}},
		{"document permission", renderPermission(base, svc, chorus.KindDocument, &chorus.Permission{ObjectSID: "ET00000000000000000000000000000001", Identity: "bob smith", Read: true}),
			sorted("account_sid", "service_sid", "document_sid", "identity", "read", "write", "manage", "url"),
			map[string]string{"read": "true", "write": "false", "url": `"https://sync.example/v1/Services/IS00000000000000000000000000000001/Documents/ET00000000000000000000000000000001/Permissions/bob%20smith"`}},
		{"list permission", renderPermission(base, svc, chorus.KindList, &chorus.Permission{ObjectSID: "ES1"}), sorted("account_sid", "service_sid", "list_sid", "identity", "read", "write", "manage", "url"), nil},
		{"map permission", renderPermission(base, svc, chorus.KindMap, &chorus.Permission{ObjectSID: "MP1"}), sorted("account_sid", "service_sid", "map_sid", "identity", "read", "write", "manage", "url"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, keys := keysOf(t, tt.v)
			if !reflect.DeepEqual(keys, tt.keys) {
				t.Errorf("%s keys = %v, want %v", tt.name, keys, tt.keys)
			}
			for k, want := range tt.check {
				if got := string(m[k]); got != want {
					t.Errorf("%s[%q] = %s, want %s", tt.name, k, got, want)
				}
			}
		})
	}
}

func TestWriteErrorInternalLoggedOnce(t *testing.T) {
	var logs bytes.Buffer
	a := &api{log: slog.New(slog.NewJSONHandler(&logs, nil))}
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantCode   int
		wantMsg    string
		wantLogs   int
	}{
		{"plain", errors.New("disk on fire"), 500, 20500, chorus.ErrInternal.Message, 1},
		{"chorus 404: Twilio REST's 20404", chorus.Errorf(chorus.ErrDocumentNotFound, "Document not found"), 404, 20404, "The requested resource /Services was not found", 0},
		{"wrapped chorus", errorsJoin(chorus.ErrMapItemExists), 409, 54208, chorus.ErrMapItemExists.Message, 0},
		{"auth", chorus.ErrAuthenticate, 401, 20003, "Authenticate", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs.Reset()
			rec := httptest.NewRecorder()
			a.writeError(rec, httptest.NewRequest(http.MethodGet, "/v1/Services", nil), tt.err)
			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			var body twiliohttp.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			want := twiliohttp.ErrorBody{Code: tt.wantCode, Message: tt.wantMsg, MoreInfo: "https://www.twilio.com/docs/errors/" + itoa(tt.wantCode), Status: tt.wantStatus}
			if body != want {
				t.Errorf("body = %+v, want %+v", body, want)
			}
			if strings.Contains(rec.Body.String(), "fire") {
				t.Errorf("body leaks the cause: %s", rec.Body)
			}
			if n := strings.Count(logs.String(), "\n"); n != tt.wantLogs {
				t.Errorf("logged %d lines, want %d: %s", n, tt.wantLogs, logs.String())
			}
			if rec.Header().Get("WWW-Authenticate") != "" {
				t.Errorf("WWW-Authenticate = %q", rec.Header().Get("WWW-Authenticate"))
			}
		})
	}
}

func errorsJoin(e *chorus.Error) error { return errors.Join(errors.New("context"), e) }

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestRenderPageEmpty checks that an empty page renders [] (not null).
func TestRenderPageEmpty(t *testing.T) {
	out := renderPage("https://h/v1/Services", "services", pageParams{}, engine.Page[*chorus.Service]{}, func(s *chorus.Service) any { return s })
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"services":[]`) {
		t.Errorf("renderPage(empty) = %s, want services: []", b)
	}
}

func TestBaseURL(t *testing.T) {
	tests := []struct {
		public, proto, want string
	}{
		{"", "", "http://example.com:8080"},
		{"", "https", "https://example.com:8080"},
		{"", "HTTPS, http", "https://example.com:8080"},
		{"", "gopher", "http://example.com:8080"},
		{"https://sync.example/", "", "https://sync.example"},
	}
	for _, tt := range tests {
		a := New(Config{PublicURL: tt.public}).(*api)
		r := httptest.NewRequest(http.MethodGet, "http://example.com:8080/v1/Services", nil)
		if tt.proto != "" {
			r.Header.Set("X-Forwarded-Proto", tt.proto)
		}
		if got := a.baseURL(r); got != tt.want {
			t.Errorf("baseURL(public=%q, proto=%q) = %q, want %q", tt.public, tt.proto, got, tt.want)
		}
	}
}

// FuzzKeyPath checks that any key rendered into an item URL routes back to
// the same key through the ServeMux pattern the API uses.
func FuzzKeyPath(f *testing.F) {
	for _, s := range []string{"a/b c é", ".", "..", "a/../b", "%2F", "k?x=1#f", "a//b", "./", " ", "+"} {
		f.Add(s)
	}
	mux := http.NewServeMux()
	var got string
	mux.HandleFunc("GET /v1/Services/{ServiceSid}/Maps/{MapSid}/Items/{Key...}", func(w http.ResponseWriter, r *http.Request) {
		got = r.PathValue("Key")
	})
	f.Fuzz(func(t *testing.T, key string) {
		if key == "" || !utf8.ValidString(key) {
			return
		}
		it := &chorus.Item{Kind: chorus.KindMap, ObjectSID: "MP1", Key: key}
		u := itemURL("http://h", "IS1", it)
		got = "\x00unset"
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, u, nil))
		if rec.Code != http.StatusOK || got != key {
			t.Errorf("key %q -> %s -> status %d key %q", key, u, rec.Code, got)
		}
	})
}

// FuzzParams checks that parameter parsers never panic and that a page URL
// carries filters and token back unchanged.
func FuzzParams(f *testing.F) {
	f.Add("a b/é", "desc", "exclusive", "PT+/=&", "3", "-1")
	f.Fuzz(func(t *testing.T, from, order, bounds, token, size, ttl string) {
		fm := form("From", from, "Order", order, "Bounds", bounds, "PageToken", token, "PageSize", size, "Ttl", ttl, "Data", from)
		_, _ = optTTL(fm, "Ttl")
		_, _ = optBool(fm, "Order")
		_, _ = optData(fm, chorus.MaxDataBytes)
		_, _ = ifMatch([]string{token})
		_, _ = parseIndex(size)
		p, err := parseItemPage(fm)
		if err != nil {
			if code(err) != 54454 {
				t.Fatalf("parseItemPage error code = %d, want 54454", code(err))
			}
			return
		}
		u, err := url.Parse(pageURL("https://h/v1/x", p, 5, 1, p.token))
		if err != nil {
			t.Fatalf("pageURL does not parse: %v", err)
		}
		q := u.Query()
		for _, kv := range [][2]string{{"From", from}, {"Order", order}, {"Bounds", bounds}, {"PageToken", token}} {
			if kv[1] == "" && kv[0] == "PageToken" {
				continue
			}
			if q.Get(kv[0]) != kv[1] {
				t.Errorf("%s = %q, want %q", kv[0], q.Get(kv[0]), kv[1])
			}
		}
	})
}

// KeepKeyPath runs on every REST request: a document write costs a
// substring check, an item path with a "/" in its key one split.
func BenchmarkKeepKeyPath(b *testing.B) {
	for name, path := range map[string]string{
		"document": "/v1/Services/IS0123456789abcdef0123456789abcdef/Documents/ET0123456789abcdef0123456789abcdef",
		"item":     "/v1/Services/IS0123456789abcdef0123456789abcdef/Maps/m/Items/a//b",
	} {
		b.Run(name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodPost, path, nil)
			b.ReportAllocs()
			for b.Loop() {
				r.URL.RawPath = ""
				KeepKeyPath(r)
			}
		})
	}
}
