package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// multipartBody encodes kv pairs as multipart/form-data the way the
// form-data package of twilio-node 3.x does (no filename, no part
// Content-Type), returning the body and its Content-Type.
func multipartBody(t testing.TB, kv ...string) (string, string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for i := 0; i+1 < len(kv); i += 2 {
		if err := w.WriteField(kv[i], kv[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String(), w.FormDataContentType()
}

// raw sends a request with a body of the given Content-Type ("" = none)
// with the account credentials.
func (f *fixture) raw(method, path, contentType, body string) (*http.Response, []byte) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.SetBasicAuth(f.creds.AccountSID, f.creds.AuthToken)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp, b
}

// rawJSON is raw for a request that must answer want; it decodes the body.
func (f *fixture) rawJSON(method, path, contentType, body string, want int) map[string]any {
	f.t.Helper()
	resp, b := f.raw(method, path, contentType, body)
	if resp.StatusCode != want {
		f.t.Fatalf("%s %s (%s) = %d %s, want %d", method, path, contentType, resp.StatusCode, b, want)
	}
	var m map[string]any
	if want != http.StatusNoContent {
		if err := json.Unmarshal(b, &m); err != nil {
			f.t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
	return m
}

func jsonText(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMultipartWrites is every write of the four object types, items,
// permissions and stream messages sent as multipart/form-data, as
// twilio-node up to 3.40.0 sends them: each parameter is applied.
func TestMultipartWrites(t *testing.T) {
	f := newFixture(t)
	svc := "/v1/Services/" + f.svc
	data := `{"s":"é \"q\" \n","n":1.5,"a":[1,{"b":null}],"t":true}`
	post := func(path string, want int, kv ...string) map[string]any {
		t.Helper()
		body, ct := multipartBody(t, kv...)
		return f.rawJSON(http.MethodPost, path, ct, body, want)
	}
	wantData := func(what string, m map[string]any, data string) {
		t.Helper()
		var want any
		if err := json.Unmarshal([]byte(data), &want); err != nil {
			t.Fatal(err)
		}
		if got := jsonText(t, m["data"]); got != jsonText(t, want) {
			t.Errorf("%s data = %s, want %s", what, got, jsonText(t, want))
		}
	}

	d := post(svc+"/Documents", 201, "UniqueName", "mp-doc", "Data", data, "Ttl", "3600")
	if d["unique_name"] != "mp-doc" || d["date_expires"] == nil {
		t.Errorf("document create ignored parameters: %v", d)
	}
	wantData("document create", d, data)
	wantData("document update", post(svc+"/Documents/mp-doc", 200, "Data", `{"v":2}`), `{"v":2}`)
	var doc map[string]any
	f.getJSON(svc+"/Documents/mp-doc", &doc)
	wantData("document fetch", doc, `{"v":2}`)

	l := post(svc+"/Lists", 201, "UniqueName", "mp-list", "Ttl", "60")
	if l["unique_name"] != "mp-list" || l["date_expires"] == nil {
		t.Errorf("list create ignored parameters: %v", l)
	}
	li := post(svc+"/Lists/mp-list/Items", 201, "Data", data)
	wantData("list item create", li, data)
	idx := fmt.Sprint(li["index"])
	wantData("list item update", post(svc+"/Lists/mp-list/Items/"+idx, 200, "Data", `{"v":3}`), `{"v":3}`)

	m := post(svc+"/Maps", 201, "UniqueName", "mp-map")
	if m["unique_name"] != "mp-map" {
		t.Errorf("map create ignored parameters: %v", m)
	}
	mi := post(svc+"/Maps/mp-map/Items", 201, "Key", "k é/1", "Data", data)
	if mi["key"] != "k é/1" {
		t.Errorf("map item key = %v", mi["key"])
	}
	wantData("map item create", mi, data)
	wantData("map item update", post(svc+"/Maps/mp-map/Items/"+url.PathEscape("k é/1"), 200, "Data", `{"v":4}`), `{"v":4}`)

	s := post(svc+"/Streams", 201, "UniqueName", "mp-stream", "Ttl", "60")
	if s["unique_name"] != "mp-stream" || s["date_expires"] == nil {
		t.Errorf("stream create ignored parameters: %v", s)
	}
	wantData("stream message", post(svc+"/Streams/mp-stream/Messages", 201, "Data", data), data)

	for _, obj := range []string{"Documents/mp-doc", "Lists/mp-list", "Maps/mp-map"} {
		p := post(svc+"/"+obj+"/Permissions/alice", 200, "Read", "true", "Write", "false", "Manage", "true")
		if p["read"] != true || p["write"] != false || p["manage"] != true {
			t.Errorf("%s permission = %v", obj, p)
		}
	}

	sv := post("/v1/Services", 201, "FriendlyName", "mp service", "AclEnabled", "true")
	if sv["friendly_name"] != "mp service" || sv["acl_enabled"] != true {
		t.Errorf("service create ignored parameters: %v", sv)
	}
	up := post("/v1/Services/"+sv["sid"].(string), 200, "FriendlyName", "renamed")
	if up["friendly_name"] != "renamed" {
		t.Errorf("service update ignored parameters: %v", up)
	}

	// No parameters: twilio-node 3.x sends an empty body under a multipart
	// Content-Type; a closing boundary alone is no parameters too.
	for _, body := range []string{"", "--x--\r\n"} {
		if d := f.rawJSON(http.MethodPost, svc+"/Documents", "multipart/form-data; boundary=x", body, 201); jsonText(t, d["data"]) != "{}" {
			t.Errorf("empty multipart create %q = %v", body, d)
		}
		resp, b := f.raw(http.MethodPost, svc+"/Documents/mp-doc", "multipart/form-data; boundary=x", body)
		if resp.StatusCode != 400 || !strings.Contains(string(b), "54010") {
			t.Errorf("empty multipart update %q = %d %s, want 400 54010", body, resp.StatusCode, b)
		}
	}
}

// TestFormBodies covers the accepted spellings of a form body and where
// query parameters count.
func TestFormBodies(t *testing.T) {
	f := newFixture(t)
	svc := "/v1/Services/" + f.svc

	d := f.rawJSON(http.MethodPost, svc+"/Documents", "Application/X-WWW-Form-URLEncoded; charset=UTF-8",
		url.Values{"UniqueName": {"u1"}, "Data": {`{"a":1}`}}.Encode(), 201)
	if d["unique_name"] != "u1" {
		t.Errorf("urlencoded with charset: %v", d)
	}

	// Query parameters on a POST count; one given in both is given twice,
	// refused rather than one of them ignored.
	d = f.rawJSON(http.MethodPost, svc+"/Documents?Data=%7B%22q%22%3A1%7D", "application/x-www-form-urlencoded",
		url.Values{"UniqueName": {"frombody"}}.Encode(), 201)
	if d["unique_name"] != "frombody" || jsonText(t, d["data"]) != `{"q":1}` {
		t.Errorf("query + body: %v", d)
	}
	resp, b := f.raw(http.MethodPost, svc+"/Documents?UniqueName=fromquery", "application/x-www-form-urlencoded",
		url.Values{"UniqueName": {"frombody2"}}.Encode())
	if resp.StatusCode != 400 || !strings.Contains(string(b), "54060") {
		t.Errorf("UniqueName in the query and the body = %d %s, want 400 54060", resp.StatusCode, b)
	}

	// A POST without a body (curl -X POST) has no Content-Type.
	if d := f.rawJSON(http.MethodPost, svc+"/Lists", "", "", 201); d["sid"] == nil {
		t.Errorf("empty POST without Content-Type: %v", d)
	}

	// twilio-go sends the form Content-Type on GET and DELETE with an empty
	// body; their parameters are in the query. A body that is not empty
	// is refused, not ignored: a DELETE with one deletes nothing.
	f.rawJSON(http.MethodGet, svc+"/Documents?PageSize=1", "application/x-www-form-urlencoded", "", 200)
	for _, tc := range []struct{ method, path, ct, body string }{
		{http.MethodGet, svc + "/Documents?PageSize=1", "application/json", `{"PageSize":5}`},
		{http.MethodGet, "/v1/Services", "application/x-www-form-urlencoded", "PageSize=1"},
		{http.MethodDelete, svc + "/Documents/u1", "application/x-www-form-urlencoded", "Bogus=1"},
		{http.MethodDelete, svc, "application/x-www-form-urlencoded", "Bogus=1"},
	} {
		resp, b := f.raw(tc.method, tc.path, tc.ct, tc.body)
		if resp.StatusCode != 400 || !strings.Contains(string(b), `"code":54060`) {
			t.Errorf("%s %s with body %q = %d %s, want 400 54060", tc.method, tc.path, tc.body, resp.StatusCode, b)
		}
	}
	f.rawJSON(http.MethodGet, svc+"/Documents/u1", "", "", 200)
	f.rawJSON(http.MethodGet, svc, "", "", 200)
	f.rawJSON(http.MethodDelete, svc+"/Documents/u1", "application/x-www-form-urlencoded", "", 204)
}

// TestFormRefused: a write whose body is not a form, or not a well-formed
// one, fails with a Twilio error and writes nothing.
func TestFormRefused(t *testing.T) {
	f := newFixture(t)
	svc := "/v1/Services/" + f.svc
	for _, obj := range []string{"Documents", "Lists", "Maps"} { // what snapshot reads
		f.rawJSON(http.MethodPost, svc+"/"+obj, "application/x-www-form-urlencoded", "UniqueName="+strings.ToLower(obj[:1])+"1", 201)
	}

	tooMany := make([]string, 0, 2*(twiliohttp.MaxFormParts+1))
	for i := 0; i <= twiliohttp.MaxFormParts; i++ {
		tooMany = append(tooMany, fmt.Sprintf("F%d", i), "x")
	}
	mpTooMany, ctTooMany := multipartBody(t, tooMany...)
	mpBig, ctBig := multipartBody(t, "UniqueName", "big", "Data", jsonOfSize(maxBodyBytes+1))
	mpOK, ctOK := multipartBody(t, "UniqueName", "new", "Data", `{"a":1}`)
	const b = "multipart/form-data; boundary=B"
	filePart := "--B\r\nContent-Disposition: form-data; name=\"Data\"; filename=\"d.json\"\r\n\r\n{}\r\n--B--\r\n"
	noName := "--B\r\nContent-Disposition: form-data\r\n\r\n{}\r\n--B--\r\n"
	truncated := "--B\r\nContent-Disposition: form-data; name=\"UniqueName\"\r\n\r\nnew"

	rows := []struct {
		name, path, ct, body string
		status, code         int
	}{
		{"json create", svc + "/Documents", "application/json", `{"UniqueName":"new","Data":{"a":1}}`, 415, 20415},
		{"json update", svc + "/Documents/d1", "application/json; charset=utf-8", `{"Data":{"a":1}}`, 415, 20415},
		{"text/plain", svc + "/Documents", "text/plain", "UniqueName=new", 415, 20415},
		{"octet-stream", svc + "/Lists", "application/octet-stream", "UniqueName=new", 415, 20415},
		{"multipart/mixed", svc + "/Maps", "multipart/mixed; boundary=B", "--B--\r\n", 415, 20415},
		{"no Content-Type with a body", svc + "/Documents", "", "UniqueName=new", 415, 20415},
		{"malformed Content-Type", svc + "/Documents", "application/x-www-form-urlencoded; =", "UniqueName=new", 415, 20415},
		{"multipart body, urlencoded type", svc + "/Documents", "application/x-www-form-urlencoded", mpOK, 400, 54060},
		{"urlencoded body, multipart type", svc + "/Documents", ctOK, "UniqueName=new", 400, 54060},
		{"bad percent escape", svc + "/Documents", "application/x-www-form-urlencoded", "UniqueName=%zz", 400, 54060},
		{"multipart without boundary", svc + "/Documents", "multipart/form-data", mpOK, 400, 54060},
		{"multipart boundary over 70", svc + "/Documents", "multipart/form-data; boundary=" + strings.Repeat("b", 71), "--" + strings.Repeat("b", 71) + "--\r\n", 400, 54060},
		{"multipart truncated", svc + "/Documents", b, truncated, 400, 54060},
		{"multipart file part", svc + "/Documents", b, filePart, 400, 54060},
		{"multipart part without name", svc + "/Documents", b, noName, 400, 54060},
		{"multipart too many parts", svc + "/Documents", ctTooMany, mpTooMany, 400, 54060},
		{"multipart over 64KiB", svc + "/Documents", ctBig, mpBig, 413, 54006},
	}
	for _, tt := range rows {
		t.Run(tt.name, func(t *testing.T) {
			f.t = t
			before := f.snapshot()
			resp, b := f.raw(http.MethodPost, tt.path, tt.ct, tt.body)
			var body twiliohttp.ErrorBody
			if err := json.Unmarshal(b, &body); err != nil {
				t.Fatalf("body %q is not JSON: %v", b, err)
			}
			if resp.StatusCode != tt.status || body.Status != tt.status || body.Code != tt.code {
				t.Errorf("POST %s (%s) = HTTP %d status %d code %d %q, want %d code %d", tt.path, tt.ct, resp.StatusCode, body.Status, body.Code, body.Message, tt.status, tt.code)
			}
			if body.Message == "" || body.MoreInfo != "https://www.twilio.com/docs/errors/"+itoa(tt.code) {
				t.Errorf("message %q more_info %q", body.Message, body.MoreInfo)
			}
			if after := f.snapshot(); after != before {
				t.Errorf("state changed:\nbefore: %s\nafter:  %s", before, after)
			}
		})
	}
}

// TestParsedFormHandedDown: a form body the server's edge already parsed
// (twiliohttp.ParsedForm) gives the handler exactly what parsing the bytes
// would: the same values in the same order, body before query; a body
// over the API's bound still answers 413.
func TestParsedFormHandedDown(t *testing.T) {
	cases := []struct{ query, body string }{
		{"", "Data=%7B%22a%22%3A1%7D"},
		{"", ""},
		{"Ttl=5", "Data=%7B%7D&Ttl=7"},
		{"a=1&a=2", "a=3&b=%E2%82%AC&a=4&c="},
		{"", "x=+spaces+&y=%2B"},
	}
	for _, tc := range cases {
		req := func(body io.ReadCloser) *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/v1/x?"+tc.query, nil)
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Body = body
			return r
		}
		var plain, handed call
		if err := (&api{}).parseForm(httptest.NewRecorder(), req(io.NopCloser(strings.NewReader(tc.body))), &plain); err != nil {
			t.Fatalf("%q %q: parseForm = %v", tc.query, tc.body, err)
		}
		v, err := url.ParseQuery(tc.body)
		if err != nil {
			t.Fatal(err)
		}
		pf := &twiliohttp.ParsedForm{Reader: bytes.NewReader([]byte(tc.body)), Size: len(tc.body), Values: v}
		if err := (&api{}).parseForm(httptest.NewRecorder(), req(pf), &handed); err != nil {
			t.Fatalf("%q %q: parseForm(ParsedForm) = %v", tc.query, tc.body, err)
		}
		if fmt.Sprint(plain.form) != fmt.Sprint(handed.form) {
			t.Errorf("%q %q: handed down %v, parsed %v", tc.query, tc.body, handed.form, plain.form)
		}
	}

	big := "Data=" + strings.Repeat("x", maxBodyBytes)
	v, _ := url.ParseQuery(big)
	r := httptest.NewRequest(http.MethodPost, "/v1/x", nil)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Body = &twiliohttp.ParsedForm{Reader: bytes.NewReader([]byte(big)), Size: len(big), Values: v}
	err := (&api{}).parseForm(httptest.NewRecorder(), r, &call{})
	if e := chorus.AsError(err); e.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("parseForm(%d-byte ParsedForm) = %v, want 413", len(big), err)
	}
}
