package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// twilio-go puts a map item's key and a permission's identity into the
// path unescaped. ServeMux would clean "a//b" or "a/../b" and answer 307
// with another item's URL: twilio-go (which does not follow redirects)
// took that for success, and a client that follows it deleted another
// item. The whole edge must route such paths to the item they name.
func TestUnescapedKeyPaths(t *testing.T) {
	s := newServer(t, Config{})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	c := s.Credentials()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	call := func(method, path string, form url.Values) (int, map[string]any) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequest(method, srv.URL+path, body)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.RawPath = "" // sent as written, as twilio-go does
		req.URL.Path = path
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		req.SetBasicAuth(c.AccountSID, c.AuthToken)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(res.Body).Decode(&m)
		return res.StatusCode, m
	}
	svc := "/v1/Services/" + c.ServiceSID
	if code, _ := call("POST", svc+"/Maps", url.Values{"UniqueName": {"m"}}); code != 201 {
		t.Fatalf("create map: %d", code)
	}
	if code, _ := call("POST", svc+"/Documents", url.Values{"UniqueName": {"d"}, "Data": {"{}"}}); code != 201 {
		t.Fatalf("create document: %d", code)
	}
	items := svc + "/Maps/m/Items"
	keys := []string{"https://example.com/a", "a//b", ".", "x/..", "a/./b", "a/../b", "b"}
	for _, k := range keys {
		if code, _ := call("POST", items, url.Values{"Key": {k}, "Data": {`{"k":1}`}}); code != 201 {
			t.Fatalf("create item %q: %d", k, code)
		}
	}
	for _, k := range keys[:len(keys)-1] {
		if code, m := call("GET", items+"/"+k, nil); code != 200 || m["key"] != k {
			t.Errorf("GET …/Items/%s = %d key %v, want 200 and that key", k, code, m["key"])
		}
		if code, m := call("POST", items+"/"+k, url.Values{"Data": {`{"k":2}`}}); code != 200 || m["key"] != k {
			t.Errorf("POST …/Items/%s = %d key %v, want 200 and that key", k, code, m["key"])
		}
		if code, _ := call("DELETE", items+"/"+k, nil); code != 204 {
			t.Errorf("DELETE …/Items/%s = %d, want 204", k, code)
		}
		if code, _ := call("GET", items+"/"+k, nil); code != 404 {
			t.Errorf("GET …/Items/%s after its delete = %d, want 404", k, code)
		}
	}
	if code, m := call("GET", items+"/b", nil); code != 200 || m["key"] != "b" {
		t.Errorf("item b after deleting a/../b: %d %v, want it kept", code, m)
	}

	perms := svc + "/Documents/d/Permissions/"
	for _, id := range []string{"user/1", "a//b", ".."} {
		if code, m := call("POST", perms+id, url.Values{"Read": {"true"}, "Write": {"false"}, "Manage": {"false"}}); code != 200 || m["identity"] != id {
			t.Errorf("POST …/Permissions/%s = %d identity %v, want 200 and that identity", id, code, m["identity"])
		}
		if code, m := call("GET", perms+id, nil); code != 200 || m["identity"] != id {
			t.Errorf("GET …/Permissions/%s = %d identity %v", id, code, m["identity"])
		}
	}
}
