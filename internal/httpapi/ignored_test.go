package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestNothingIgnored: a request is refused rather than answered as a
// success after ignoring what it asked for.
func TestNothingIgnored(t *testing.T) {
	f := newFixture(t)
	svc := "/v1/Services/" + f.svc
	form := "application/x-www-form-urlencoded"
	want54 := func(what string, resp *http.Response, b []byte, code string) {
		t.Helper()
		if resp.StatusCode != 400 || !strings.Contains(string(b), `"code":`+code) {
			t.Errorf("%s = %d %s, want 400 %s", what, resp.StatusCode, b, code)
		}
	}

	// A Service update without parameters changed nothing and said 200;
	// twilio-node 3.28 sends none when given only parameters it predates.
	resp, b := f.raw(http.MethodPost, svc, form, "")
	want54("a Service update without parameters", resp, b, "54010")
	resp, b = f.raw(http.MethodPost, svc, "multipart/form-data; boundary=X", "")
	want54("a Service update with an empty multipart body", resp, b, "54010")
	if d := f.rawJSON(http.MethodPost, svc, form, "FriendlyName=renamed", 200); d["friendly_name"] != "renamed" {
		t.Errorf("a Service update with FriendlyName = %v", d)
	}

	// If-Match where there is no revision to match (a create, a stream
	// message, a permission, a Service, a read) is refused, not ignored.
	d := f.rawJSON(http.MethodPost, svc+"/Lists", form, "UniqueName=l", 201)
	list := d["sid"].(string)
	f.rawJSON(http.MethodPost, svc+"/Streams", form, "UniqueName=s", 201)
	for _, tc := range []struct{ method, path, body string }{
		{http.MethodPost, svc + "/Documents", "UniqueName=d"},
		{http.MethodPost, svc + "/Lists/" + list + "/Items", `Data={"a":1}`},
		{http.MethodPost, svc + "/Streams/s/Messages", `Data={"a":1}`},
		{http.MethodPost, svc + "/Lists/" + list + "/Permissions/alice", "Read=true&Write=false&Manage=false"},
		{http.MethodPost, svc, "FriendlyName=x"},
		{http.MethodGet, svc + "/Lists/" + list, ""},
		{http.MethodGet, svc + "/Documents", ""},
	} {
		req, err := http.NewRequest(tc.method, f.srv.URL+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(f.creds.AccountSID, f.creds.AuthToken)
		if tc.body != "" {
			req.Header.Set("Content-Type", form)
		}
		req.Header.Set("If-Match", "999")
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Code int }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 400 || e.Code != 54060 {
			t.Errorf("%s %s with If-Match = %d %d, want 400 54060", tc.method, tc.path, resp.StatusCode, e.Code)
		}
	}
	if _, b := f.do(http.MethodGet, svc+"/Documents/d", nil, nil); !strings.Contains(string(b), "20404") {
		t.Errorf("the refused create with If-Match created the document: %s", b)
	}

	// An empty TTL is 0, never expires: twilio-node sends ttl: null as
	// Ttl=, which kept the old expiry when sent with Data, and said "no
	// parameters" when sent alone.
	doc := f.rawJSON(http.MethodPost, svc+"/Documents", form, "UniqueName=ttl&Ttl=3600", 201)
	if doc["date_expires"] == nil {
		t.Fatalf("a document with Ttl=3600 has no date_expires: %v", doc)
	}
	d = f.rawJSON(http.MethodPost, svc+"/Documents/ttl", form, url.Values{"Data": {`{"v":1}`}, "Ttl": {""}}.Encode(), 200)
	if d["date_expires"] != nil {
		t.Errorf("Data with Ttl= kept the expiry: %v", d["date_expires"])
	}
	f.rawJSON(http.MethodPost, svc+"/Documents/ttl", form, "Ttl=60", 200)
	if d = f.rawJSON(http.MethodPost, svc+"/Documents/ttl", form, "Ttl=", 200); d["date_expires"] != nil {
		t.Errorf("Ttl= alone kept the expiry: %v", d["date_expires"])
	}
	if d = f.rawJSON(http.MethodPost, svc+"/Lists", form, "CollectionTtl=", 201); d["date_expires"] != nil {
		t.Errorf("a list created with CollectionTtl= expires: %v", d["date_expires"])
	}
}

// TestPageTokenNamesItsListing: a PageToken pages the listing that issued
// it, with the Order, From and Bounds it was issued with (next_page_url
// repeats them); shown to another listing, or with other filters, it is
// refused (54453) rather than read as a position there.
func TestPageTokenNamesItsListing(t *testing.T) {
	f := newFixture(t)
	svc := "/v1/Services/" + f.svc
	form := "application/x-www-form-urlencoded"
	other := f.rawJSON(http.MethodPost, "/v1/Services", form, "FriendlyName=other", 201)["sid"].(string)
	for range 3 {
		f.rawJSON(http.MethodPost, svc+"/Documents", form, "", 201)
		f.rawJSON(http.MethodPost, "/v1/Services/"+other+"/Documents", form, "", 201)
	}
	l1 := f.rawJSON(http.MethodPost, svc+"/Lists", form, "", 201)["sid"].(string)
	l2 := f.rawJSON(http.MethodPost, svc+"/Lists", form, "", 201)["sid"].(string)
	for i := range 4 {
		f.rawJSON(http.MethodPost, svc+"/Lists/"+l1+"/Items", form, url.Values{"Data": {fmt.Sprintf(`{"i":%d}`, i)}}.Encode(), 201)
		f.rawJSON(http.MethodPost, svc+"/Lists/"+l2+"/Items", form, url.Values{"Data": {fmt.Sprintf(`{"i":%d}`, i)}}.Encode(), 201)
	}
	for _, id := range []string{"alice", "bob", "carol"} {
		f.rawJSON(http.MethodPost, svc+"/Lists/"+l1+"/Permissions/"+id, form, "Read=true&Write=true&Manage=false", 200)
		f.rawJSON(http.MethodPost, svc+"/Lists/"+l2+"/Permissions/"+id, form, "Read=true&Write=true&Manage=false", 200)
	}
	next := func(path string) string {
		t.Helper()
		d := f.rawJSON(http.MethodGet, path, "", "", 200)
		u, err := url.Parse(d["meta"].(map[string]any)["next_page_url"].(string))
		if err != nil {
			t.Fatal(err)
		}
		// Its own listing takes it.
		f.rawJSON(http.MethodGet, u.RequestURI(), "", "", 200)
		return u.Query().Get("PageToken")
	}
	docs := next(svc + "/Documents?PageSize=1")
	items := next(svc + "/Lists/" + l1 + "/Items?PageSize=1&Order=desc")
	// A client that sends the token alone pages in the token's order.
	d := f.rawJSON(http.MethodGet, svc+"/Lists/"+l1+"/Items?PageSize=1&PageToken="+items, "", "", 200)
	if got := d["items"].([]any)[0].(map[string]any)["index"]; got != float64(2) {
		t.Errorf("the second page of a descending listing, token alone: index %v, want 2", got)
	}
	// Its paging URLs, and the token it issues, page as the first page did.
	meta := d["meta"].(map[string]any)
	for _, name := range []string{"first_page_url", "url", "next_page_url"} {
		u, err := url.Parse(meta[name].(string))
		if err != nil {
			t.Fatal(err)
		}
		if got := u.Query().Get("Order"); got != "desc" {
			t.Errorf("%s of a page read with a descending token alone: Order %q, want desc (%s)", name, got, u)
		}
	}
	u, _ := url.Parse(meta["next_page_url"].(string))
	d = f.rawJSON(http.MethodGet, u.RequestURI(), "", "", 200)
	if got := d["items"].([]any)[0].(map[string]any)["index"]; got != float64(1) {
		t.Errorf("the third page of a descending listing: index %v, want 1", got)
	}
	u, _ = url.Parse(meta["first_page_url"].(string))
	d = f.rawJSON(http.MethodGet, u.RequestURI(), "", "", 200)
	if got := d["items"].([]any)[0].(map[string]any)["index"]; got != float64(3) {
		t.Errorf("first_page_url of a descending listing: index %v, want 3", got)
	}
	// Order's default, sent beside a token issued without one, agrees.
	asc := next(svc + "/Lists/" + l1 + "/Items?PageSize=1")
	f.rawJSON(http.MethodGet, svc+"/Lists/"+l1+"/Items?PageSize=1&Order=asc&Bounds=inclusive&PageToken="+asc, "", "", 200)
	perms := next(svc + "/Lists/" + l1 + "/Permissions?PageSize=1")
	for _, path := range []string{
		"/v1/Services?PageToken=" + docs,
		"/v1/Services/" + other + "/Documents?PageToken=" + docs,
		svc + "/Lists?PageToken=" + docs,
		svc + "/Lists/" + l2 + "/Items?Order=desc&PageToken=" + items,
		svc + "/Lists/" + l1 + "/Items?Order=asc&PageToken=" + items,
		svc + "/Lists/" + l1 + "/Items?Order=desc&From=2&PageToken=" + items,
		svc + "/Lists/" + l1 + "/Items?Order=desc&Bounds=exclusive&PageToken=" + items,
		svc + "/Lists/" + l2 + "/Permissions?PageToken=" + perms,
	} {
		resp, b := f.raw(http.MethodGet, path+"&PageSize=1", "", "")
		if resp.StatusCode != 400 || !strings.Contains(string(b), `"code":54453`) {
			t.Errorf("GET %s = %d %s, want 400 54453", path, resp.StatusCode, b)
		}
	}
}

// TestResponsesNotStored: REST responses can hold secrets (a webhook URL's
// credentials) and ACL-guarded data; caches are told not to keep them,
// errors included.
func TestResponsesNotStored(t *testing.T) {
	f := newFixture(t)
	for _, path := range []string{"/v1/Services/" + f.svc, "/v1/Services/" + f.svc + "/Documents/nope"} {
		resp, _ := f.do(http.MethodGet, path, nil, nil)
		if got := resp.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("GET %s: Cache-Control %q, want no-store", path, got)
		}
	}
}
