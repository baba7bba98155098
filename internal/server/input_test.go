package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestFormThroughEdge: form bodies through the whole edge (checkText hands
// its parsed form to the API): body values come before the query's, a
// Content-Type whose parameters do not parse is refused as before (415),
// and text no store can hold is refused at the edge (400 54060).
func TestFormThroughEdge(t *testing.T) {
	s := newServer(t, Config{})
	creds := s.Credentials()
	docs := "/v1/Services/" + creds.ServiceSID + "/Documents"
	encoding := ""
	post := func(path, contentType, body string) (int, map[string]any) {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		if encoding != "" {
			req.Header.Set("Content-Encoding", encoding)
		}
		req.SetBasicAuth(creds.AccountSID, creds.AuthToken)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("POST %s: %d %q: %v", path, rec.Code, rec.Body, err)
		}
		return rec.Code, out
	}
	const form = "application/x-www-form-urlencoded"

	// A parameter in the query and the body is given twice: refused, not
	// one of them ignored. Query parameters count with the body's.
	if code, body := post(docs+"?UniqueName=from-query", form, "UniqueName=from-body&Data=%7B%22a%22%3A1%7D"); code != 400 || body["code"] != 54060.0 {
		t.Fatalf("UniqueName in the query and the body = %d %v, want 400 54060", code, body)
	}
	code, doc := post(docs+"?Data=%7B%22a%22%3A1%7D", form, "UniqueName=from-body")
	if data, _ := doc["data"].(map[string]any); code != 201 || doc["unique_name"] != "from-body" || data["a"] != 1.0 {
		t.Fatalf("create = %d %v, want 201 with the body's UniqueName and the query's Data", code, doc)
	}
	code, doc = post(docs+"/from-body", form+"; charset=utf-8", "Data=%7B%22a%22%3A2%7D")
	if data, _ := doc["data"].(map[string]any); code != 200 || data["a"] != 2.0 {
		t.Fatalf("update = %d %v, want 200 with data a=2", code, doc)
	}
	for _, ct := range []string{form + "; =", form + "; charset", form + ";;x", form + `; a="x`} {
		if code, body := post(docs, ct, "UniqueName=bad-type&Data=%7B%7D"); code != 415 || body["code"] != 20415.0 {
			t.Errorf("Content-Type %q: %d %v, want 415 20415", ct, code, body)
		}
	}
	if code, body := post(docs, form, "UniqueName=nul%00&Data=%7B%7D"); code != 400 || body["code"] != 54060.0 {
		t.Errorf("NUL in a value: %d %v, want 400 54060", code, body)
	}
	// A body in an encoding the server does not decode is refused, on
	// every API, not read as if it were plain.
	for _, path := range []string{docs, "/2010-04-01/Accounts/" + creds.AccountSID + "/Keys.json", "/admin/v1/Tokens"} {
		encoding = "br"
		if code, body := post(path, form, "UniqueName=encoded&FriendlyName=encoded&Identity=encoded"); code != 415 || body["code"] != 20415.0 {
			t.Errorf("POST %s with Content-Encoding br: %d %v, want 415 20415", path, code, body)
		}
	}
	encoding = ""
	if code, body := post(docs+"/encoded", form, "Data=%7B%7D"); code != 404 {
		t.Errorf("the refused create made a document: %d %v", code, body)
	}
}
