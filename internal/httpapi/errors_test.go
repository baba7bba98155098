package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// jsonOfSize returns a JSON object of exactly n bytes.
func jsonOfSize(n int) string {
	return `{"a":"` + strings.Repeat("x", n-8) + `"}`
}

// snapshot renders everything the service holds, through the API, so that
// a failed request can be shown to have written nothing.
func (f *fixture) snapshot() string {
	f.t.Helper()
	svc := "/v1/Services/" + f.svc
	paths := []string{
		"/v1/Services?PageSize=1000",
		svc,
		svc + "/Documents?PageSize=1000",
		svc + "/Lists?PageSize=1000",
		svc + "/Maps?PageSize=1000",
		svc + "/Streams?PageSize=1000",
		svc + "/Lists/l1/Items?PageSize=1000",
		svc + "/Maps/m1/Items?PageSize=1000",
		svc + "/Documents/d1/Permissions?PageSize=1000",
		svc + "/Lists/l1/Permissions?PageSize=1000",
		svc + "/Maps/m1/Permissions?PageSize=1000",
	}
	var b strings.Builder
	for _, p := range paths {
		resp, body := f.do(http.MethodGet, p, nil, nil)
		if resp.StatusCode != http.StatusOK {
			f.t.Fatalf("snapshot GET %s = %d %s", p, resp.StatusCode, body)
		}
		b.WriteString(p)
		b.WriteByte('\n')
		b.Write(body)
	}
	return b.String()
}

// TestErrors is the REST rows of the error table: each request fails with
// the right status and code and leaves the service exactly as it was.
func TestErrors(t *testing.T) {
	f := newFixture(t)
	svc := "/v1/Services/" + f.svc
	mustPost := func(path string, form url.Values) map[string]any {
		t.Helper()
		resp, b := f.do(http.MethodPost, path, form, nil)
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
			t.Fatalf("setup POST %s = %d %s", path, resp.StatusCode, b)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	doc := mustPost(svc+"/Documents", url.Values{"UniqueName": {"d1"}, "Data": {`{"v":1}`}})
	mustPost(svc+"/Lists", url.Values{"UniqueName": {"l1"}})
	li := mustPost(svc+"/Lists/l1/Items", url.Values{"Data": {`{"v":1}`}})
	mustPost(svc+"/Lists/l1/Items", url.Values{"Data": {`{"v":2}`}})
	mustPost(svc+"/Maps", url.Values{"UniqueName": {"m1"}})
	mustPost(svc+"/Maps/m1/Items", url.Values{"Key": {"k"}, "Data": {`{"v":1}`}})
	mustPost(svc+"/Streams", url.Values{"UniqueName": {"s1"}})
	mustPost(svc+"/Documents/d1/Permissions/alice", url.Values{"Read": {"true"}, "Write": {"true"}, "Manage": {"false"}})
	index := itoa(int(li["index"].(float64)))
	stale := "ffff"
	if doc["revision"] == stale {
		t.Fatal("revision collides with the stale value")
	}
	other := f.newAccount()
	const sidHex = "0123456789abcdef0123456789abcdef"
	unknownSvc := "/v1/Services/IS" + sidHex

	type row struct {
		name         string
		method, path string
		form         url.Values
		hdr          map[string]string
		as           *[2]string // credentials; nil = the service's account
		status, code int
	}
	rows := []row{
		// Data: JSON validity and size.
		{"doc create invalid JSON", "POST", svc + "/Documents", url.Values{"UniqueName": {"new"}, "Data": {`{"a":`}}, nil, nil, 400, 54008},
		{"doc update invalid JSON", "POST", svc + "/Documents/d1", url.Values{"Data": {`{x}`}}, nil, nil, 400, 54008},
		{"list item create invalid JSON", "POST", svc + "/Lists/l1/Items", url.Values{"Data": {`[1,`}}, nil, nil, 400, 54008},
		{"map item update invalid JSON", "POST", svc + "/Maps/m1/Items/k", url.Values{"Data": {`nope`}}, nil, nil, 400, 54008},
		{"doc create 16KiB+1", "POST", svc + "/Documents", url.Values{"UniqueName": {"new"}, "Data": {jsonOfSize(chorus.MaxDataBytes + 1)}}, nil, nil, 413, 54006},
		{"doc update 16KiB+1", "POST", svc + "/Documents/d1", url.Values{"Data": {jsonOfSize(chorus.MaxDataBytes + 1)}}, nil, nil, 413, 54006},
		{"list item create 16KiB+1", "POST", svc + "/Lists/l1/Items", url.Values{"Data": {jsonOfSize(chorus.MaxDataBytes + 1)}}, nil, nil, 413, 54006},
		{"map item create 16KiB+1", "POST", svc + "/Maps/m1/Items", url.Values{"Key": {"new"}, "Data": {jsonOfSize(chorus.MaxDataBytes + 1)}}, nil, nil, 413, 54006},
		{"stream message 4KiB+1", "POST", svc + "/Streams/s1/Messages", url.Values{"Data": {jsonOfSize(chorus.MaxMessageBytes + 1)}}, nil, nil, 413, 54006},
		{"body over 64KiB", "POST", svc + "/Documents", url.Values{"UniqueName": {"new"}, "Data": {jsonOfSize(70 << 10)}}, nil, nil, 413, 54006},
		{"doc update Data null", "POST", svc + "/Documents/d1", url.Values{"Data": {"null"}}, nil, nil, 400, 54101},
		{"doc update no parameters", "POST", svc + "/Documents/d1", nil, nil, nil, 400, 54010},
		{"list item create no Data", "POST", svc + "/Lists/l1/Items", url.Values{"Ttl": {"5"}}, nil, nil, 400, 54156},
		{"map item create no Data", "POST", svc + "/Maps/m1/Items", url.Values{"Key": {"new"}}, nil, nil, 400, 54206},
		{"map item create no Key", "POST", svc + "/Maps/m1/Items", url.Values{"Data": {`{}`}}, nil, nil, 400, 54209},
		{"stream message no Data", "POST", svc + "/Streams/s1/Messages", nil, nil, nil, 400, 54251},

		// TTLs.
		{"doc create Ttl abc", "POST", svc + "/Documents", url.Values{"UniqueName": {"new"}, "Ttl": {"abc"}}, nil, nil, 400, 54011},
		{"doc create Ttl over a year", "POST", svc + "/Documents", url.Values{"UniqueName": {"new"}, "Ttl": {"31536001"}}, nil, nil, 400, 54011},
		{"list create CollectionTtl -1", "POST", svc + "/Lists", url.Values{"UniqueName": {"new"}, "CollectionTtl": {"-1"}}, nil, nil, 400, 54011},
		{"map item update ItemTtl x", "POST", svc + "/Maps/m1/Items/k", url.Values{"Data": {`{}`}, "ItemTtl": {"x"}}, nil, nil, 400, 54011},
		// Twilio: CollectionTtl only with the item's Data or Ttl.
		{"map item update CollectionTtl alone", "POST", svc + "/Maps/m1/Items/k", url.Values{"CollectionTtl": {"100"}}, nil, nil, 400, 54010},
		{"list item update CollectionTtl alone", "POST", svc + "/Lists/l1/Items/0", url.Values{"CollectionTtl": {"100"}}, nil, nil, 400, 54010},
		{"stream update Ttl 1.5", "POST", svc + "/Streams/s1", url.Values{"Ttl": {"1.5"}}, nil, nil, 400, 54011},

		// Paging and item queries.
		{"PageSize 0", "GET", svc + "/Documents", url.Values{"PageSize": {"0"}}, nil, nil, 400, 54454},
		{"PageSize -1", "GET", svc + "/Lists", url.Values{"PageSize": {"-1"}}, nil, nil, 400, 54454},
		{"PageSize x", "GET", "/v1/Services", url.Values{"PageSize": {"x"}}, nil, nil, 400, 54454},
		{"PageToken garbage", "GET", svc + "/Documents", url.Values{"PageToken": {"PTnot-a-token"}}, nil, nil, 400, 54453},
		{"PageToken garbage items", "GET", svc + "/Maps/m1/Items", url.Values{"PageToken": {"garbage"}}, nil, nil, 400, 54453},
		{"Order up", "GET", svc + "/Maps/m1/Items", url.Values{"Order": {"up"}}, nil, nil, 400, 54451},
		{"Bounds both", "GET", svc + "/Lists/l1/Items", url.Values{"Bounds": {"both"}}, nil, nil, 400, 54452},
		{"list item index abc", "GET", svc + "/Lists/l1/Items/abc", nil, nil, nil, 400, 54458},
		{"list item index -1", "POST", svc + "/Lists/l1/Items/-1", url.Values{"Data": {`{}`}}, nil, nil, 400, 54458},

		// Names and keys.
		{"doc SID-shaped unique name", "POST", svc + "/Documents", url.Values{"UniqueName": {"ET" + sidHex}}, nil, nil, 400, 54302},
		{"list SID-shaped unique name", "POST", svc + "/Lists", url.Values{"UniqueName": {"ZZ" + sidHex}}, nil, nil, 400, 54302},
		{"map key 321 chars", "POST", svc + "/Maps/m1/Items", url.Values{"Key": {strings.Repeat("k", chorus.MaxKeyLen+1)}, "Data": {`{}`}}, nil, nil, 400, 54209},
		{"map key empty", "POST", svc + "/Maps/m1/Items", url.Values{"Key": {""}, "Data": {`{}`}}, nil, nil, 400, 54209},
		{"duplicate doc unique name", "POST", svc + "/Documents", url.Values{"UniqueName": {"d1"}, "Data": {`{"v":2}`}}, nil, nil, 409, 54301},
		{"duplicate list unique name", "POST", svc + "/Lists", url.Values{"UniqueName": {"l1"}}, nil, nil, 409, 54301},
		{"duplicate map unique name", "POST", svc + "/Maps", url.Values{"UniqueName": {"m1"}}, nil, nil, 409, 54301},
		{"duplicate stream unique name", "POST", svc + "/Streams", url.Values{"UniqueName": {"s1"}}, nil, nil, 409, 54301},
		{"duplicate map key", "POST", svc + "/Maps/m1/Items", url.Values{"Key": {"k"}, "Data": {`{"v":2}`}}, nil, nil, 409, 54208},
		{"identity 257 chars", "POST", svc + "/Documents/d1/Permissions/" + strings.Repeat("i", chorus.MaxIdentityLen+1), url.Values{"Read": {"true"}, "Write": {"true"}, "Manage": {"true"}}, nil, nil, 400, 54351},

		// Not found.
		{"unknown service", "GET", unknownSvc + "/Documents", nil, nil, nil, 404, 20404},
		{"unknown service create", "POST", unknownSvc + "/Documents", url.Values{"Data": {`{}`}}, nil, nil, 404, 20404},
		{"unknown service fetch", "GET", unknownSvc, nil, nil, nil, 404, 20404},
		{"unknown service update", "POST", unknownSvc, url.Values{"FriendlyName": {"x"}}, nil, nil, 404, 20404},
		{"unknown document SID", "GET", svc + "/Documents/ET" + sidHex, nil, nil, nil, 404, 20404},
		{"unknown document name", "POST", svc + "/Documents/nope", url.Values{"Data": {`{}`}}, nil, nil, 404, 20404},
		{"unknown document delete", "DELETE", svc + "/Documents/nope", nil, nil, nil, 404, 20404},
		{"unknown document permissions", "GET", svc + "/Documents/nope/Permissions", nil, nil, nil, 404, 20404},
		{"unknown list", "GET", svc + "/Lists/nope", nil, nil, nil, 404, 20404},
		{"unknown list items", "POST", svc + "/Lists/nope/Items", url.Values{"Data": {`{}`}}, nil, nil, 404, 20404},
		{"unknown map", "DELETE", svc + "/Maps/nope", nil, nil, nil, 404, 20404},
		{"unknown map item create", "POST", svc + "/Maps/nope/Items", url.Values{"Key": {"k"}, "Data": {`{}`}}, nil, nil, 404, 20404},
		{"unknown stream", "POST", svc + "/Streams/nope", url.Values{"Ttl": {"5"}}, nil, nil, 404, 20404},
		{"unknown stream message", "POST", svc + "/Streams/nope/Messages", url.Values{"Data": {`{}`}}, nil, nil, 404, 20404},
		{"unknown list item", "GET", svc + "/Lists/l1/Items/999999", nil, nil, nil, 404, 20404},
		{"unknown list item update", "POST", svc + "/Lists/l1/Items/999999", url.Values{"Data": {`{}`}}, nil, nil, 404, 20404},
		{"unknown map item", "GET", svc + "/Maps/m1/Items/nope", nil, nil, nil, 404, 20404},
		{"unknown map item delete", "DELETE", svc + "/Maps/m1/Items/nope", nil, nil, nil, 404, 20404},
		{"unknown permission", "GET", svc + "/Documents/d1/Permissions/nobody", nil, nil, nil, 404, 20404},

		// If-Match.
		{"doc stale If-Match", "POST", svc + "/Documents/d1", url.Values{"Data": {`{"v":9}`}}, map[string]string{"If-Match": stale}, nil, 412, 54103},
		{"doc delete stale If-Match", "DELETE", svc + "/Documents/d1", nil, map[string]string{"If-Match": stale}, nil, 412, 54103},
		{"list update If-Match", "POST", svc + "/Lists/l1", url.Values{"Ttl": {"0"}}, map[string]string{"If-Match": "0"}, nil, 400, 54060},
		{"map delete If-Match", "DELETE", svc + "/Maps/m1", nil, map[string]string{"If-Match": "0"}, nil, 400, 54060},

		// Parameters the operation does not take are refused, not ignored.
		{"create lowercase uniqueName", "POST", svc + "/Documents", url.Values{"uniqueName": {"typo"}, "Data": {`{"a":1}`}}, nil, nil, 400, 54060},
		{"create Tttl", "POST", svc + "/Lists", url.Values{"UniqueName": {"tl"}, "Tttl": {"5"}}, nil, nil, 400, 54060},
		{"update renames", "POST", svc + "/Documents/d1", url.Values{"Data": {`{}`}, "UniqueName": {"renamed"}}, nil, nil, 400, 54060},
		{"update Bogus", "POST", svc + "/Documents/d1", url.Values{"Data": {`{}`}, "Bogus": {"1"}}, nil, nil, 400, 54060},
		{"Data twice", "POST", svc + "/Documents/d1", url.Values{"Data": {`{"v":1}`, `{"v":2}`}}, nil, nil, 400, 54060},
		{"service UniqueName", "POST", svc, url.Values{"UniqueName": {"svc"}}, nil, nil, 400, 54060},
		{"list lowercase order", "GET", svc + "/Lists/l1/Items", url.Values{"order": {"desc"}}, nil, nil, 400, 54060},
		{"documents Order", "GET", svc + "/Documents", url.Values{"Order": {"desc"}}, nil, nil, 400, 54060},
		{"delete with a parameter", "DELETE", svc + "/Documents/d1", url.Values{"Force": {"true"}}, nil, nil, 400, 54060},
		{"map item update Key", "POST", svc + "/Maps/m1/Items/k", url.Values{"Data": {`{}`}, "Key": {"other"}}, nil, nil, 400, 54060},
		{"list item stale If-Match", "POST", svc + "/Lists/l1/Items/" + index, url.Values{"Data": {`{"v":9}`}}, map[string]string{"If-Match": stale}, nil, 412, 54155},
		{"list item delete stale If-Match", "DELETE", svc + "/Lists/l1/Items/" + index, nil, map[string]string{"If-Match": `"` + stale + `"`}, nil, 412, 54155},
		{"map item stale If-Match", "POST", svc + "/Maps/m1/Items/k", url.Values{"Data": {`{"v":9}`}}, map[string]string{"If-Match": stale}, nil, 412, 54205},
		{"map item delete stale If-Match", "DELETE", svc + "/Maps/m1/Items/k", nil, map[string]string{"If-Match": stale}, nil, 412, 54205},
		{"doc malformed If-Match", "POST", svc + "/Documents/d1", url.Values{"Data": {`{"v":9}`}}, map[string]string{"If-Match": "zz"}, nil, 400, 54003},
		{"list item malformed If-Match", "DELETE", svc + "/Lists/l1/Items/" + index, nil, map[string]string{"If-Match": "-1"}, nil, 400, 54003},
		{"map item malformed If-Match", "POST", svc + "/Maps/m1/Items/k", url.Values{"Data": {`{}`}}, map[string]string{"If-Match": "r1"}, nil, 400, 54003},
		{"doc empty If-Match", "POST", svc + "/Documents/d1", url.Values{"Data": {`{"v":9}`}}, map[string]string{"If-Match": ""}, nil, 400, 54003},
		{"map item empty If-Match", "DELETE", svc + "/Maps/m1/Items/k", nil, map[string]string{"If-Match": " "}, nil, 400, 54003},

		// Booleans.
		{"permission Read yes", "POST", svc + "/Documents/d1/Permissions/bob", url.Values{"Read": {"yes"}, "Write": {"true"}, "Manage": {"false"}}, nil, nil, 400, 54060},
		{"permission missing Manage", "POST", svc + "/Lists/l1/Permissions/bob", url.Values{"Read": {"true"}, "Write": {"true"}}, nil, nil, 400, 54060},
		{"service AclEnabled maybe", "POST", svc, url.Values{"AclEnabled": {"maybe"}}, nil, nil, 400, 54060},
		{"service debouncing window x", "POST", svc, url.Values{"ReachabilityDebouncingWindow": {"x"}}, nil, nil, 400, 54060},

		// Another account's service.
		{"other account list", "GET", svc + "/Documents", nil, nil, &[2]string{other.AccountSID, other.AuthToken}, 403, 54056},
		{"other account create", "POST", svc + "/Documents", url.Values{"UniqueName": {"new"}}, nil, &[2]string{other.AccountSID, other.AuthToken}, 403, 54056},
		{"other account update", "POST", svc + "/Documents/d1", url.Values{"Data": {`{"v":9}`}}, nil, &[2]string{other.APIKeySID, other.APISecret}, 403, 54056},
		{"other account delete", "DELETE", svc + "/Maps/m1/Items/k", nil, nil, &[2]string{other.AccountSID, other.AuthToken}, 403, 54056},
		{"other account service update", "POST", svc, url.Values{"FriendlyName": {"mine"}}, nil, &[2]string{other.AccountSID, other.AuthToken}, 403, 54056},
		{"other account service delete", "DELETE", svc, nil, nil, &[2]string{other.AccountSID, other.AuthToken}, 403, 54056},
	}
	for _, tt := range rows {
		t.Run(tt.name, func(t *testing.T) {
			f.t = t
			before := f.snapshot()
			user, pass := f.creds.AccountSID, f.creds.AuthToken
			if tt.as != nil {
				user, pass = tt.as[0], tt.as[1]
			}
			resp, b := f.doAs(user, pass, tt.method, tt.path, tt.form, tt.hdr)
			var body twiliohttp.ErrorBody
			if err := json.Unmarshal(b, &body); err != nil {
				t.Fatalf("%s %s: body %q is not JSON: %v", tt.method, tt.path, b, err)
			}
			if resp.StatusCode != tt.status || body.Code != tt.code || body.Status != tt.status {
				t.Errorf("%s %s = HTTP %d code %d status %d %q, want %d code %d", tt.method, tt.path, resp.StatusCode, body.Code, body.Status, body.Message, tt.status, tt.code)
			}
			if body.Message == "" || body.MoreInfo != "https://www.twilio.com/docs/errors/"+itoa(tt.code) {
				t.Errorf("message %q more_info %q", body.Message, body.MoreInfo)
			}
			// Twilio's not-found answer names the path without the version.
			if want := "The requested resource " + strings.TrimPrefix(tt.path, "/v1") + " was not found"; tt.code == 20404 && body.Message != want {
				t.Errorf("message %q, want %q", body.Message, want)
			}
			if resp.Header.Get("ETag") != "" {
				t.Errorf("error carries ETag %q", resp.Header.Get("ETag"))
			}
			if after := f.snapshot(); after != before {
				t.Errorf("%s %s changed state:\nbefore: %s\nafter:  %s", tt.method, tt.path, before, after)
			}
		})
	}
}

// TestLimitsAccepted checks the boundaries: exactly 16 KiB of data and
// exactly 4 KiB of stream message are accepted.
func TestLimitsAccepted(t *testing.T) {
	f := newFixture(t)
	svc := "/v1/Services/" + f.svc
	tests := []struct {
		name, path string
		form       url.Values
	}{
		{"doc 16KiB", svc + "/Documents", url.Values{"Data": {jsonOfSize(chorus.MaxDataBytes)}}},
		{"doc 16KiB multibyte", svc + "/Documents", url.Values{"Data": {`{"a":"` + strings.Repeat("é", (chorus.MaxDataBytes-8)/2) + `"}`}}},
		{"stream message 4KiB", svc + "/Streams", url.Values{"UniqueName": {"s"}}},
		{"stream message 4KiB publish", svc + "/Streams/s/Messages", url.Values{"Data": {jsonOfSize(chorus.MaxMessageBytes)}}},
		// twilio-python's json.dumps writes ", " and ": ": over 16 KiB as
		// sent, under it compacted, which is what the limit measures.
		{"doc 16KiB compacted, spaced as json.dumps writes it", svc + "/Documents", url.Values{"Data": {spacedJSON(chorus.MaxDataBytes)}}},
		{"Ttl max", svc + "/Documents", url.Values{"Ttl": {"31536000"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := f.do(http.MethodPost, tt.path, tt.form, nil)
			if resp.StatusCode != http.StatusCreated {
				t.Errorf("POST %s = %d %s, want 201", tt.path, resp.StatusCode, b)
			}
		})
	}
}

// spacedJSON is a JSON object of many small members, as Python's
// json.dumps writes it (", " and ": "), whose compacted form is at most
// compact bytes and whose text is longer than compact.
func spacedJSON(compact int) string {
	var b strings.Builder
	b.WriteString("{")
	n := 2 // the braces, compacted
	for i := 0; ; i++ {
		member := fmt.Sprintf(`"k%d":%d`, i, i) // compacted
		if n+len(member)+1 > compact {
			break
		}
		if i > 0 {
			b.WriteString(", ")
			n++
		}
		fmt.Fprintf(&b, `"k%d": %d`, i, i)
		n += len(member)
	}
	b.WriteString("}")
	if b.Len() <= compact {
		panic("spacedJSON: not longer than its compacted form's limit")
	}
	return b.String()
}

// A document's removal honours If-Match, as twilio-node 3.x sends it: the
// current revision removes it, a stale one (TestErrors) does not.
func TestDeleteDocumentIfMatch(t *testing.T) {
	f := newFixture(t)
	doc := "/v1/Services/" + f.svc + "/Documents/cond"
	if resp, b := f.do(http.MethodPost, "/v1/Services/"+f.svc+"/Documents", url.Values{"UniqueName": {"cond"}, "Data": {`{"v":1}`}}, nil); resp.StatusCode != 201 {
		t.Fatalf("create = %d %s", resp.StatusCode, b)
	}
	resp, b := f.do(http.MethodPost, doc, url.Values{"Data": {`{"v":2}`}}, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("update = %d %s", resp.StatusCode, b)
	}
	rev := resp.Header.Get("ETag")
	if rev == "" {
		t.Fatal("no ETag")
	}
	if resp, b := f.do(http.MethodDelete, doc, nil, map[string]string{"If-Match": "0"}); resp.StatusCode != 412 {
		t.Fatalf("delete with a stale If-Match = %d %s, want 412", resp.StatusCode, b)
	}
	if resp, b := f.do(http.MethodDelete, doc, nil, map[string]string{"If-Match": rev}); resp.StatusCode != 204 {
		t.Fatalf("delete with the current revision %s = %d %s, want 204", rev, resp.StatusCode, b)
	}
	if resp, _ := f.do(http.MethodGet, doc, nil, nil); resp.StatusCode != 404 {
		t.Errorf("after the delete: %d, want 404", resp.StatusCode)
	}
	// A list has no revision to match; "*" (any version) is not refused.
	if resp, b := f.do(http.MethodPost, "/v1/Services/"+f.svc+"/Lists", url.Values{"UniqueName": {"anyl"}}, nil); resp.StatusCode != 201 {
		t.Fatalf("create list = %d %s", resp.StatusCode, b)
	}
	if resp, b := f.do(http.MethodDelete, "/v1/Services/"+f.svc+"/Lists/anyl", nil, map[string]string{"If-Match": "*"}); resp.StatusCode != 204 {
		t.Errorf("delete a list with If-Match: * = %d %s, want 204", resp.StatusCode, b)
	}
}
