package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	openapi "github.com/twilio/twilio-go/rest/sync/v1"
)

// These tests drive all 48 REST v1 operations through the official
// twilio-go helper library.

func TestServices(t *testing.T) {
	f := newFixture(t)
	// CreateService
	created, err := f.sync.CreateServiceWithMetadata((&openapi.CreateServiceParams{}).
		SetFriendlyName("chat").SetAclEnabled(true).SetWebhookUrl("https://hooks.example/sync").
		SetReachabilityDebouncingEnabled(true).SetReachabilityDebouncingWindow(2000).
		SetWebhooksFromRestEnabled(true).SetReachabilityWebhooksEnabled(true))
	if err != nil {
		t.Fatalf("CreateService: %v", err)
	}
	if created.GetStatusCode() != http.StatusCreated {
		t.Errorf("CreateService status = %d, want 201", created.GetStatusCode())
	}
	s := created.GetResource()
	sid := str(s.Sid)
	if !regexp.MustCompile(`^IS[0-9a-f]{32}$`).MatchString(sid) {
		t.Fatalf("CreateService sid = %q", sid)
	}
	if str(s.FriendlyName) != "chat" || s.AclEnabled == nil || !*s.AclEnabled || str(s.WebhookUrl) != "https://hooks.example/sync" ||
		s.ReachabilityDebouncingWindow != 2000 || !*s.ReachabilityDebouncingEnabled || !*s.WebhooksFromRestEnabled || !*s.ReachabilityWebhooksEnabled {
		t.Errorf("CreateService = %+v, want the fields sent", s)
	}
	if str(s.AccountSid) != f.creds.AccountSID {
		t.Errorf("account_sid = %s, want %s", str(s.AccountSid), f.creds.AccountSID)
	}
	wantURL := f.srv.URL + "/v1/Services/" + sid
	if str(s.Url) != wantURL {
		t.Errorf("url = %s, want %s", str(s.Url), wantURL)
	}
	if s.Links == nil || (*s.Links)["documents"] != wantURL+"/Documents" || (*s.Links)["streams"] != wantURL+"/Streams" {
		t.Errorf("links = %v", s.Links)
	}
	if s.DateCreated == nil || time.Since(*s.DateCreated) > time.Minute {
		t.Errorf("date_created = %v, want about now", s.DateCreated)
	}

	// FetchService, by SID and by the "default" alias.
	got, err := f.sync.FetchService(sid)
	if err != nil || str(got.Sid) != sid || str(got.FriendlyName) != "chat" {
		t.Fatalf("FetchService = %+v, %v", got, err)
	}
	def, err := f.sync.FetchService("default")
	if err != nil || str(def.Sid) != f.svc {
		t.Fatalf("FetchService(default) sid = %s, %v, want %s", str(def.Sid), err, f.svc)
	}

	// UpdateService
	upd, err := f.sync.UpdateService(sid, (&openapi.UpdateServiceParams{}).SetFriendlyName("chat2").SetAclEnabled(false))
	if err != nil {
		t.Fatalf("UpdateService: %v", err)
	}
	if str(upd.FriendlyName) != "chat2" || *upd.AclEnabled || str(upd.WebhookUrl) != "https://hooks.example/sync" {
		t.Errorf("UpdateService = %+v, want friendly_name chat2, acl off, webhook kept", upd)
	}

	// ListService, one per page.
	all, err := f.sync.ListService((&openapi.ListServiceParams{}).SetPageSize(1).SetLimit(50))
	if err != nil {
		t.Fatalf("ListService: %v", err)
	}
	seen := map[string]bool{}
	for _, s := range all {
		seen[str(s.Sid)] = true
	}
	if len(all) != 2 || !seen[sid] || !seen[f.svc] {
		t.Errorf("ListService = %d services %v, want %s and %s", len(all), seen, sid, f.svc)
	}

	// DeleteService
	del, err := f.sync.DeleteServiceWithMetadata(sid)
	if err != nil || del.GetStatusCode() != http.StatusNoContent {
		t.Fatalf("DeleteService = %v, %v, want 204", del, err)
	}
	_, err = f.sync.FetchService(sid)
	wantTwilioErr(t, "FetchService(deleted)", err, 404, 20404)
}

func TestDocuments(t *testing.T) {
	f := newFixture(t)
	// CreateDocument
	md, err := f.sync.CreateDocumentWithMetadata(f.svc, (&openapi.CreateDocumentParams{}).
		SetUniqueName("game-1").SetData(map[string]any{"board": []string{"X", "", "O"}, "turn": "O"}).SetTtl(3600))
	if err != nil {
		t.Fatalf("CreateDocument: %v", err)
	}
	if md.GetStatusCode() != http.StatusCreated {
		t.Errorf("CreateDocument status = %d, want 201", md.GetStatusCode())
	}
	doc := md.GetResource()
	sid := str(doc.Sid)
	if !regexp.MustCompile(`^ET[0-9a-f]{32}$`).MatchString(sid) {
		t.Fatalf("sid = %q", sid)
	}
	if etag := md.GetHeaders().Get("ETag"); etag == "" || etag != str(doc.Revision) {
		t.Errorf("ETag = %q, want revision %q", etag, str(doc.Revision))
	}
	if got := jsonOf(t, doc.Data); got != `{"board":["X","","O"],"turn":"O"}` {
		t.Errorf("data = %s", got)
	}
	if str(doc.UniqueName) != "game-1" || str(doc.CreatedBy) != "system" || str(doc.ServiceSid) != f.svc || str(doc.AccountSid) != f.creds.AccountSID {
		t.Errorf("CreateDocument = %+v", doc)
	}
	if doc.DateExpires == nil || doc.DateExpires.Sub(time.Now().Add(time.Hour)).Abs() > time.Minute {
		t.Errorf("date_expires = %v, want about now+1h", doc.DateExpires)
	}
	wantURL := f.srv.URL + "/v1/Services/" + f.svc + "/Documents/" + sid
	if str(doc.Url) != wantURL || doc.Links == nil || (*doc.Links)["permissions"] != wantURL+"/Permissions" {
		t.Errorf("url, links = %s, %v, want %s", str(doc.Url), doc.Links, wantURL)
	}

	// FetchDocument by SID and by unique name.
	for _, id := range []string{sid, "game-1"} {
		fm, err := f.sync.FetchDocumentWithMetadata(f.svc, id)
		if err != nil {
			t.Fatalf("FetchDocument(%s): %v", id, err)
		}
		got := fm.GetResource()
		if str(got.Sid) != sid || jsonOf(t, got.Data) != jsonOf(t, doc.Data) || fm.GetHeaders().Get("ETag") != str(doc.Revision) {
			t.Errorf("FetchDocument(%s) = %+v", id, got)
		}
	}

	// UpdateDocument: conditional, unconditional, quoted If-Match, stale.
	rev0 := str(doc.Revision)
	u1, err := f.sync.UpdateDocument(f.svc, sid, (&openapi.UpdateDocumentParams{}).SetIfMatch(rev0).SetData(map[string]any{"turn": "X"}))
	if err != nil {
		t.Fatalf("UpdateDocument(If-Match current): %v", err)
	}
	if str(u1.Revision) == rev0 || jsonOf(t, u1.Data) != `{"turn":"X"}` {
		t.Errorf("UpdateDocument = revision %s data %s, want new revision, data replaced", str(u1.Revision), jsonOf(t, u1.Data))
	}
	_, err = f.sync.UpdateDocument(f.svc, sid, (&openapi.UpdateDocumentParams{}).SetIfMatch(rev0).SetData(map[string]any{"turn": "stale"}))
	wantTwilioErr(t, "UpdateDocument(stale If-Match)", err, 412, 54103)
	u2, err := f.sync.UpdateDocument(f.svc, "game-1", (&openapi.UpdateDocumentParams{}).SetIfMatch(`"`+str(u1.Revision)+`"`).SetData(map[string]any{"turn": "O"}))
	if err != nil {
		t.Fatalf("UpdateDocument(quoted If-Match): %v", err)
	}
	if jsonOf(t, u2.Data) != `{"turn":"O"}` {
		t.Errorf("data after quoted If-Match update = %s", jsonOf(t, u2.Data))
	}
	u3, err := f.sync.UpdateDocument(f.svc, sid, (&openapi.UpdateDocumentParams{}).SetTtl(0))
	if err != nil {
		t.Fatalf("UpdateDocument(Ttl=0): %v", err)
	}
	if u3.DateExpires != nil || jsonOf(t, u3.Data) != `{"turn":"O"}` {
		t.Errorf("after Ttl=0: date_expires = %v data = %s, want nil and data kept", u3.DateExpires, jsonOf(t, u3.Data))
	}

	// A document without unique name or data.
	bare, err := f.sync.CreateDocument(f.svc, nil)
	if err != nil {
		t.Fatalf("CreateDocument(no params): %v", err)
	}
	if bare.UniqueName != nil || jsonOf(t, bare.Data) != `{}` || bare.DateExpires != nil {
		t.Errorf("CreateDocument(no params) = unique_name %v data %s date_expires %v, want nil {} nil", bare.UniqueName, jsonOf(t, bare.Data), bare.DateExpires)
	}
	var raw map[string]any
	f.getJSON("/v1/Services/"+f.svc+"/Documents/"+str(bare.Sid), &raw)
	for _, k := range []string{"unique_name", "date_expires"} {
		if v, ok := raw[k]; !ok || v != nil {
			t.Errorf("raw %s = %v (present %v), want null", k, v, ok)
		}
	}

	// ListDocument
	docs, err := f.sync.ListDocument(f.svc, nil)
	if err != nil || len(docs) != 2 {
		t.Fatalf("ListDocument = %d docs, %v, want 2", len(docs), err)
	}

	// DeleteDocument
	dm, err := f.sync.DeleteDocumentWithMetadata(f.svc, "game-1")
	if err != nil || dm.GetStatusCode() != http.StatusNoContent {
		t.Fatalf("DeleteDocument = %v, %v", dm, err)
	}
	_, err = f.sync.FetchDocument(f.svc, sid)
	wantTwilioErr(t, "FetchDocument(deleted)", err, 404, 20404)
}

// permissionOps abstracts the three permission sub-resources so that one
// test drives all twelve operations.
type permissionOps struct {
	kind   string
	create func(f *fixture) string // returns the object SID
	update func(f *fixture, obj, id string, r, w, m bool) (identity string, read, write, manage bool, url string, err error)
	fetch  func(f *fixture, obj, id string) (identity string, read bool, err error)
	list   func(f *fixture, obj string) (identities []string, err error)
	del    func(f *fixture, obj, id string) error
}

func TestPermissions(t *testing.T) {
	ops := []permissionOps{
		{
			kind: "Documents",
			create: func(f *fixture) string {
				d, err := f.sync.CreateDocument(f.svc, nil)
				if err != nil {
					f.t.Fatal(err)
				}
				return str(d.Sid)
			},
			update: func(f *fixture, obj, id string, r, w, m bool) (string, bool, bool, bool, string, error) {
				p, err := f.sync.UpdateDocumentPermission(f.svc, obj, url.PathEscape(id), (&openapi.UpdateDocumentPermissionParams{}).SetRead(r).SetWrite(w).SetManage(m))
				if err != nil {
					return "", false, false, false, "", err
				}
				if str(p.DocumentSid) != obj || str(p.ServiceSid) != f.svc || str(p.AccountSid) != f.creds.AccountSID {
					f.t.Errorf("permission sids = %s %s %s", str(p.DocumentSid), str(p.ServiceSid), str(p.AccountSid))
				}
				return str(p.Identity), *p.Read, *p.Write, *p.Manage, str(p.Url), nil
			},
			fetch: func(f *fixture, obj, id string) (string, bool, error) {
				p, err := f.sync.FetchDocumentPermission(f.svc, obj, url.PathEscape(id))
				if err != nil {
					return "", false, err
				}
				return str(p.Identity), *p.Read, nil
			},
			list: func(f *fixture, obj string) ([]string, error) {
				ps, err := f.sync.ListDocumentPermission(f.svc, obj, (&openapi.ListDocumentPermissionParams{}).SetPageSize(1))
				var ids []string
				for _, p := range ps {
					ids = append(ids, str(p.Identity))
				}
				return ids, err
			},
			del: func(f *fixture, obj, id string) error {
				return f.sync.DeleteDocumentPermission(f.svc, obj, url.PathEscape(id))
			},
		},
		{
			kind: "Lists",
			create: func(f *fixture) string {
				l, err := f.sync.CreateSyncList(f.svc, nil)
				if err != nil {
					f.t.Fatal(err)
				}
				return str(l.Sid)
			},
			update: func(f *fixture, obj, id string, r, w, m bool) (string, bool, bool, bool, string, error) {
				p, err := f.sync.UpdateSyncListPermission(f.svc, obj, url.PathEscape(id), (&openapi.UpdateSyncListPermissionParams{}).SetRead(r).SetWrite(w).SetManage(m))
				if err != nil {
					return "", false, false, false, "", err
				}
				if str(p.ListSid) != obj {
					f.t.Errorf("list_sid = %s, want %s", str(p.ListSid), obj)
				}
				return str(p.Identity), *p.Read, *p.Write, *p.Manage, str(p.Url), nil
			},
			fetch: func(f *fixture, obj, id string) (string, bool, error) {
				p, err := f.sync.FetchSyncListPermission(f.svc, obj, url.PathEscape(id))
				if err != nil {
					return "", false, err
				}
				return str(p.Identity), *p.Read, nil
			},
			list: func(f *fixture, obj string) ([]string, error) {
				ps, err := f.sync.ListSyncListPermission(f.svc, obj, (&openapi.ListSyncListPermissionParams{}).SetPageSize(1))
				var ids []string
				for _, p := range ps {
					ids = append(ids, str(p.Identity))
				}
				return ids, err
			},
			del: func(f *fixture, obj, id string) error {
				return f.sync.DeleteSyncListPermission(f.svc, obj, url.PathEscape(id))
			},
		},
		{
			kind: "Maps",
			create: func(f *fixture) string {
				m, err := f.sync.CreateSyncMap(f.svc, nil)
				if err != nil {
					f.t.Fatal(err)
				}
				return str(m.Sid)
			},
			update: func(f *fixture, obj, id string, r, w, m bool) (string, bool, bool, bool, string, error) {
				p, err := f.sync.UpdateSyncMapPermission(f.svc, obj, url.PathEscape(id), (&openapi.UpdateSyncMapPermissionParams{}).SetRead(r).SetWrite(w).SetManage(m))
				if err != nil {
					return "", false, false, false, "", err
				}
				if str(p.MapSid) != obj {
					f.t.Errorf("map_sid = %s, want %s", str(p.MapSid), obj)
				}
				return str(p.Identity), *p.Read, *p.Write, *p.Manage, str(p.Url), nil
			},
			fetch: func(f *fixture, obj, id string) (string, bool, error) {
				p, err := f.sync.FetchSyncMapPermission(f.svc, obj, url.PathEscape(id))
				if err != nil {
					return "", false, err
				}
				return str(p.Identity), *p.Read, nil
			},
			list: func(f *fixture, obj string) ([]string, error) {
				ps, err := f.sync.ListSyncMapPermission(f.svc, obj, (&openapi.ListSyncMapPermissionParams{}).SetPageSize(1))
				var ids []string
				for _, p := range ps {
					ids = append(ids, str(p.Identity))
				}
				return ids, err
			},
			del: func(f *fixture, obj, id string) error {
				return f.sync.DeleteSyncMapPermission(f.svc, obj, url.PathEscape(id))
			},
		},
	}
	f := newFixture(t)
	for _, op := range ops {
		t.Run(op.kind, func(t *testing.T) {
			f.t = t
			obj := op.create(f)
			const alice, bob = "alice", "bob smith/é"
			// Update (upsert) creates.
			id, r, w, m, u, err := op.update(f, obj, alice, true, false, true)
			if err != nil {
				t.Fatalf("update(%s): %v", alice, err)
			}
			if id != alice || !r || w || !m {
				t.Errorf("update(%s) = %s %v %v %v, want alice true false true", alice, id, r, w, m)
			}
			wantURL := f.srv.URL + "/v1/Services/" + f.svc + "/" + op.kind + "/" + obj + "/Permissions/alice"
			if u != wantURL {
				t.Errorf("url = %s, want %s", u, wantURL)
			}
			if id, _, _, _, _, err = op.update(f, obj, bob, false, true, false); err != nil || id != bob {
				t.Fatalf("update(%q) = %q, %v", bob, id, err)
			}
			// Update again changes it.
			if _, r, w, m, _, err = op.update(f, obj, alice, false, true, false); err != nil || r || !w || m {
				t.Errorf("re-update(alice) = %v %v %v, %v, want false true false", r, w, m, err)
			}
			// Fetch, including the identity with '/', ' ' and 'é'.
			if id, r, err := op.fetch(f, obj, bob); err != nil || id != bob || r {
				t.Errorf("fetch(%q) = %q %v, %v", bob, id, r, err)
			}
			if _, r, err := op.fetch(f, obj, alice); err != nil || r {
				t.Errorf("fetch(alice) read = %v, %v, want false", r, err)
			}
			// List, one per page.
			ids, err := op.list(f, obj)
			if err != nil || len(ids) != 2 || !containsAll(ids, alice, bob) {
				t.Errorf("list = %q, %v, want alice and %q", ids, err, bob)
			}
			// Delete.
			if err := op.del(f, obj, bob); err != nil {
				t.Fatalf("delete(%q): %v", bob, err)
			}
			_, _, err = op.fetch(f, obj, bob)
			wantTwilioErr(t, "fetch(deleted permission)", err, 404, 20404)
			if ids, err := op.list(f, obj); err != nil || len(ids) != 1 || ids[0] != alice {
				t.Errorf("list after delete = %q, %v, want [alice]", ids, err)
			}
		})
	}
}

func containsAll(ss []string, want ...string) bool {
	for _, w := range want {
		if !contains(ss, w) {
			return false
		}
	}
	return true
}

func TestLists(t *testing.T) {
	f := newFixture(t)
	// CreateSyncList: CollectionTtl wins over its alias Ttl.
	l, err := f.sync.CreateSyncList(f.svc, (&openapi.CreateSyncListParams{}).SetUniqueName("todo").SetCollectionTtl(7200).SetTtl(60))
	if err != nil {
		t.Fatalf("CreateSyncList: %v", err)
	}
	lsid := str(l.Sid)
	if !regexp.MustCompile(`^ES[0-9a-f]{32}$`).MatchString(lsid) || str(l.UniqueName) != "todo" || str(l.CreatedBy) != "system" {
		t.Fatalf("CreateSyncList = %+v", l)
	}
	if l.DateExpires == nil || l.DateExpires.Sub(time.Now().Add(2*time.Hour)).Abs() > time.Minute {
		t.Errorf("date_expires = %v, want about now+2h (CollectionTtl wins)", l.DateExpires)
	}
	wantURL := f.srv.URL + "/v1/Services/" + f.svc + "/Lists/" + lsid
	if str(l.Url) != wantURL || (*l.Links)["items"] != wantURL+"/Items" || (*l.Links)["permissions"] != wantURL+"/Permissions" {
		t.Errorf("url/links = %s %v", str(l.Url), l.Links)
	}
	// FetchSyncList by name; UpdateSyncList.
	if got, err := f.sync.FetchSyncList(f.svc, "todo"); err != nil || str(got.Sid) != lsid {
		t.Fatalf("FetchSyncList(todo) = %v, %v", got, err)
	}
	upd, err := f.sync.UpdateSyncList(f.svc, lsid, (&openapi.UpdateSyncListParams{}).SetTtl(0))
	if err != nil || upd.DateExpires != nil {
		t.Fatalf("UpdateSyncList(Ttl=0) date_expires = %v, %v, want nil", upd, err)
	}
	if _, err := f.sync.CreateSyncList(f.svc, nil); err != nil {
		t.Fatalf("CreateSyncList(nil): %v", err)
	}
	if ls, err := f.sync.ListSyncList(f.svc, (&openapi.ListSyncListParams{}).SetPageSize(1)); err != nil || len(ls) != 2 {
		t.Fatalf("ListSyncList = %d, %v, want 2", len(ls), err)
	}

	// CreateSyncListItem x5.
	var idx []int
	for i := range 5 {
		md, err := f.sync.CreateSyncListItemWithMetadata(f.svc, "todo", (&openapi.CreateSyncListItemParams{}).SetData(map[string]any{"n": i}))
		if err != nil {
			t.Fatalf("CreateSyncListItem(%d): %v", i, err)
		}
		it := md.GetResource()
		if md.GetStatusCode() != http.StatusCreated || md.GetHeaders().Get("ETag") != str(it.Revision) || str(it.ListSid) != lsid {
			t.Errorf("CreateSyncListItem(%d) status %d etag %q item %+v", i, md.GetStatusCode(), md.GetHeaders().Get("ETag"), it)
		}
		if len(idx) > 0 && it.Index <= idx[len(idx)-1] {
			t.Errorf("index %d after %d, want increasing", it.Index, idx[len(idx)-1])
		}
		if str(it.Url) != wantURL+"/Items/"+itoa(it.Index) {
			t.Errorf("item url = %s", str(it.Url))
		}
		idx = append(idx, it.Index)
	}
	// FetchSyncListItem
	fm, err := f.sync.FetchSyncListItemWithMetadata(f.svc, lsid, idx[2])
	if err != nil {
		t.Fatalf("FetchSyncListItem: %v", err)
	}
	it := fm.GetResource()
	if jsonOf(t, it.Data) != `{"n":2}` || fm.GetHeaders().Get("ETag") != str(it.Revision) {
		t.Errorf("FetchSyncListItem = %+v etag %s", it, fm.GetHeaders().Get("ETag"))
	}
	// UpdateSyncListItem with If-Match, then stale.
	u, err := f.sync.UpdateSyncListItem(f.svc, lsid, idx[2], (&openapi.UpdateSyncListItemParams{}).SetIfMatch(str(it.Revision)).SetData(map[string]any{"n": 20}).SetItemTtl(600))
	if err != nil || jsonOf(t, u.Data) != `{"n":20}` || str(u.Revision) == str(it.Revision) || u.DateExpires == nil {
		t.Fatalf("UpdateSyncListItem = %+v, %v", u, err)
	}
	_, err = f.sync.UpdateSyncListItem(f.svc, lsid, idx[2], (&openapi.UpdateSyncListItemParams{}).SetIfMatch(str(it.Revision)).SetData(map[string]any{"n": -1}))
	wantTwilioErr(t, "UpdateSyncListItem(stale)", err, 412, 54155)
	err = f.sync.DeleteSyncListItem(f.svc, lsid, idx[2], (&openapi.DeleteSyncListItemParams{}).SetIfMatch(str(it.Revision)))
	wantTwilioErr(t, "DeleteSyncListItem(stale)", err, 412, 54155)
	// DeleteSyncListItem with the current revision.
	if err := f.sync.DeleteSyncListItem(f.svc, lsid, idx[2], (&openapi.DeleteSyncListItemParams{}).SetIfMatch(str(u.Revision))); err != nil {
		t.Fatalf("DeleteSyncListItem: %v", err)
	}
	_, err = f.sync.FetchSyncListItem(f.svc, lsid, idx[2])
	wantTwilioErr(t, "FetchSyncListItem(deleted)", err, 404, 20404)

	// ListSyncListItem: order, from, bounds, across pages.
	left := []int{idx[0], idx[1], idx[3], idx[4]}
	tests := []struct {
		name string
		p    *openapi.ListSyncListItemParams
		want []int
	}{
		{"asc", (&openapi.ListSyncListItemParams{}).SetPageSize(3), left},
		{"desc", (&openapi.ListSyncListItemParams{}).SetOrder("desc").SetPageSize(1), []int{idx[4], idx[3], idx[1], idx[0]}},
		{"from inclusive", (&openapi.ListSyncListItemParams{}).SetFrom(itoa(idx[1])).SetPageSize(2), []int{idx[1], idx[3], idx[4]}},
		{"from exclusive desc", (&openapi.ListSyncListItemParams{}).SetFrom(itoa(idx[3])).SetBounds("exclusive").SetOrder("desc").SetPageSize(1), []int{idx[1], idx[0]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items, err := f.sync.ListSyncListItem(f.svc, lsid, tt.p.SetLimit(100))
			if err != nil {
				t.Fatalf("ListSyncListItem(%s): %v", tt.name, err)
			}
			var got []int
			for _, it := range items {
				got = append(got, it.Index)
			}
			if !equalInts(got, tt.want) {
				t.Errorf("ListSyncListItem(%s) = %v, want %v", tt.name, got, tt.want)
			}
		})
	}

	// DeleteSyncList
	if err := f.sync.DeleteSyncList(f.svc, "todo"); err != nil {
		t.Fatalf("DeleteSyncList: %v", err)
	}
	_, err = f.sync.FetchSyncList(f.svc, lsid)
	wantTwilioErr(t, "FetchSyncList(deleted)", err, 404, 20404)
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestMaps(t *testing.T) {
	f := newFixture(t)
	m, err := f.sync.CreateSyncMap(f.svc, (&openapi.CreateSyncMapParams{}).SetUniqueName("users").SetTtl(60))
	if err != nil {
		t.Fatalf("CreateSyncMap: %v", err)
	}
	msid := str(m.Sid)
	if !regexp.MustCompile(`^MP[0-9a-f]{32}$`).MatchString(msid) || m.DateExpires == nil {
		t.Fatalf("CreateSyncMap = %+v", m)
	}
	if got, err := f.sync.FetchSyncMap(f.svc, "users"); err != nil || str(got.Sid) != msid {
		t.Fatalf("FetchSyncMap(users) = %v, %v", got, err)
	}
	if upd, err := f.sync.UpdateSyncMap(f.svc, msid, (&openapi.UpdateSyncMapParams{}).SetCollectionTtl(0)); err != nil || upd.DateExpires != nil {
		t.Fatalf("UpdateSyncMap(CollectionTtl=0) = %v, %v", upd, err)
	}
	if ms, err := f.sync.ListSyncMap(f.svc, nil); err != nil || len(ms) != 1 || str(ms[0].Sid) != msid {
		t.Fatalf("ListSyncMap = %v, %v", ms, err)
	}

	// CreateSyncMapItem, including a key that needs escaping in a path.
	const odd = "a/b c é"
	keys := []string{"k1", "k2", "k3", odd, "k4"}
	for i, k := range keys {
		md, err := f.sync.CreateSyncMapItemWithMetadata(f.svc, "users", (&openapi.CreateSyncMapItemParams{}).SetKey(k).SetData(map[string]any{"i": i}))
		if err != nil {
			t.Fatalf("CreateSyncMapItem(%q): %v", k, err)
		}
		it := md.GetResource()
		if md.GetStatusCode() != http.StatusCreated || str(it.Key) != k || str(it.MapSid) != msid || md.GetHeaders().Get("ETag") != str(it.Revision) {
			t.Errorf("CreateSyncMapItem(%q) = %d %+v", k, md.GetStatusCode(), it)
		}
		if want := f.srv.URL + "/v1/Services/" + f.svc + "/Maps/" + msid + "/Items/" + url.PathEscape(k); str(it.Url) != want {
			t.Errorf("item url = %s, want %s", str(it.Url), want)
		}
	}
	_, err = f.sync.CreateSyncMapItem(f.svc, msid, (&openapi.CreateSyncMapItemParams{}).SetKey("k1").SetData(map[string]any{"dup": true}))
	wantTwilioErr(t, "CreateSyncMapItem(duplicate)", err, 409, 54208)

	// FetchSyncMapItem of the odd key: escaped by the caller, and raw.
	for _, pathKey := range []string{url.PathEscape(odd), odd} {
		fm, err := f.sync.FetchSyncMapItemWithMetadata(f.svc, msid, pathKey)
		if err != nil {
			t.Fatalf("FetchSyncMapItem(%q): %v", pathKey, err)
		}
		it := fm.GetResource()
		if str(it.Key) != odd || jsonOf(t, it.Data) != `{"i":3}` || fm.GetHeaders().Get("ETag") != str(it.Revision) {
			t.Errorf("FetchSyncMapItem(%q) = %+v", pathKey, it)
		}
	}
	// UpdateSyncMapItem with If-Match; stale update and delete.
	it, err := f.sync.FetchSyncMapItem(f.svc, msid, url.PathEscape(odd))
	if err != nil {
		t.Fatal(err)
	}
	u, err := f.sync.UpdateSyncMapItem(f.svc, msid, url.PathEscape(odd), (&openapi.UpdateSyncMapItemParams{}).SetIfMatch(str(it.Revision)).SetData(map[string]any{"i": 33}))
	if err != nil || jsonOf(t, u.Data) != `{"i":33}` || str(u.Key) != odd {
		t.Fatalf("UpdateSyncMapItem = %+v, %v", u, err)
	}
	_, err = f.sync.UpdateSyncMapItem(f.svc, msid, url.PathEscape(odd), (&openapi.UpdateSyncMapItemParams{}).SetIfMatch(str(it.Revision)).SetData(map[string]any{"i": -1}))
	wantTwilioErr(t, "UpdateSyncMapItem(stale)", err, 412, 54205)
	err = f.sync.DeleteSyncMapItem(f.svc, msid, url.PathEscape(odd), (&openapi.DeleteSyncMapItemParams{}).SetIfMatch(str(it.Revision)))
	wantTwilioErr(t, "DeleteSyncMapItem(stale)", err, 412, 54205)
	_, err = f.sync.UpdateSyncMapItem(f.svc, msid, "nope", (&openapi.UpdateSyncMapItemParams{}).SetData(map[string]any{}))
	wantTwilioErr(t, "UpdateSyncMapItem(missing)", err, 404, 20404)

	// ListSyncMapItem: order, from, bounds, across pages.
	tests := []struct {
		name string
		p    *openapi.ListSyncMapItemParams
		want []string
	}{
		{"asc", (&openapi.ListSyncMapItemParams{}).SetPageSize(2), []string{odd, "k1", "k2", "k3", "k4"}},
		{"desc", (&openapi.ListSyncMapItemParams{}).SetOrder("desc").SetPageSize(2), []string{"k4", "k3", "k2", "k1", odd}},
		{"from odd inclusive", (&openapi.ListSyncMapItemParams{}).SetFrom(odd).SetPageSize(1), []string{odd, "k1", "k2", "k3", "k4"}},
		{"from k2 exclusive", (&openapi.ListSyncMapItemParams{}).SetFrom("k2").SetBounds("exclusive").SetPageSize(1), []string{"k3", "k4"}},
		{"from k2 desc inclusive", (&openapi.ListSyncMapItemParams{}).SetFrom("k2").SetBounds("inclusive").SetOrder("desc").SetPageSize(2), []string{"k2", "k1", odd}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items, err := f.sync.ListSyncMapItem(f.svc, msid, tt.p.SetLimit(100))
			if err != nil {
				t.Fatalf("ListSyncMapItem(%s): %v", tt.name, err)
			}
			var got []string
			for _, it := range items {
				got = append(got, str(it.Key))
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("ListSyncMapItem(%s) = %q, want %q", tt.name, got, tt.want)
			}
		})
	}

	// DeleteSyncMapItem (raw key path), then the map.
	if err := f.sync.DeleteSyncMapItem(f.svc, msid, odd, nil); err != nil {
		t.Fatalf("DeleteSyncMapItem(raw odd key): %v", err)
	}
	_, err = f.sync.FetchSyncMapItem(f.svc, msid, url.PathEscape(odd))
	wantTwilioErr(t, "FetchSyncMapItem(deleted)", err, 404, 20404)
	if err := f.sync.DeleteSyncMap(f.svc, msid); err != nil {
		t.Fatalf("DeleteSyncMap: %v", err)
	}
	_, err = f.sync.FetchSyncMap(f.svc, "users")
	wantTwilioErr(t, "FetchSyncMap(deleted)", err, 404, 20404)
}

func TestStreams(t *testing.T) {
	f := newFixture(t)
	s, err := f.sync.CreateSyncStream(f.svc, (&openapi.CreateSyncStreamParams{}).SetUniqueName("chat").SetTtl(300))
	if err != nil {
		t.Fatalf("CreateSyncStream: %v", err)
	}
	ssid := str(s.Sid)
	wantURL := f.srv.URL + "/v1/Services/" + f.svc + "/Streams/" + ssid
	if !regexp.MustCompile(`^TO[0-9a-f]{32}$`).MatchString(ssid) || s.DateExpires == nil || str(s.Url) != wantURL || (*s.Links)["messages"] != wantURL+"/Messages" {
		t.Fatalf("CreateSyncStream = %+v", s)
	}
	if got, err := f.sync.FetchSyncStream(f.svc, "chat"); err != nil || str(got.Sid) != ssid {
		t.Fatalf("FetchSyncStream(chat) = %v, %v", got, err)
	}
	if upd, err := f.sync.UpdateSyncStream(f.svc, ssid, (&openapi.UpdateSyncStreamParams{}).SetTtl(0)); err != nil || upd.DateExpires != nil {
		t.Fatalf("UpdateSyncStream(Ttl=0) = %v, %v", upd, err)
	}
	if ss, err := f.sync.ListSyncStream(f.svc, nil); err != nil || len(ss) != 1 {
		t.Fatalf("ListSyncStream = %v, %v", ss, err)
	}
	mm, err := f.sync.CreateStreamMessageWithMetadata(f.svc, "chat", (&openapi.CreateStreamMessageParams{}).SetData(map[string]any{"hello": "world"}))
	if err != nil {
		t.Fatalf("CreateStreamMessage: %v", err)
	}
	msg := mm.GetResource()
	if mm.GetStatusCode() != http.StatusCreated || !regexp.MustCompile(`^TZ[0-9a-f]{32}$`).MatchString(str(msg.Sid)) || jsonOf(t, msg.Data) != `{"hello":"world"}` {
		t.Errorf("CreateStreamMessage = %d %+v", mm.GetStatusCode(), msg)
	}
	if err := f.sync.DeleteSyncStream(f.svc, "chat"); err != nil {
		t.Fatalf("DeleteSyncStream: %v", err)
	}
	_, err = f.sync.FetchSyncStream(f.svc, ssid)
	wantTwilioErr(t, "FetchSyncStream(deleted)", err, 404, 20404)
	_, err = f.sync.CreateStreamMessage(f.svc, ssid, (&openapi.CreateStreamMessageParams{}).SetData(map[string]any{}))
	wantTwilioErr(t, "CreateStreamMessage(deleted stream)", err, 404, 20404)
}

// TestPaging pages 7 documents 3 at a time through twilio-go, which
// follows meta.next_page_url verbatim.
func TestPaging(t *testing.T) {
	f := newFixture(t)
	var want []string
	for i := range 7 {
		d, err := f.sync.CreateDocument(f.svc, (&openapi.CreateDocumentParams{}).SetData(map[string]any{"i": i}))
		if err != nil {
			t.Fatalf("CreateDocument(%d): %v", i, err)
		}
		want = append(want, str(d.Sid))
	}
	before := f.reqs.Load()
	docs, err := f.sync.ListDocument(f.svc, (&openapi.ListDocumentParams{}).SetPageSize(3).SetLimit(100))
	if err != nil {
		t.Fatalf("ListDocument: %v", err)
	}
	if n := f.reqs.Load() - before; n != 3 {
		t.Errorf("ListDocument(PageSize=3) of 7 made %d requests, want 3", n)
	}
	var got []string
	for _, d := range docs {
		got = append(got, str(d.Sid))
	}
	// Listing order is (date_created, sid); documents created within one
	// clock tick order by SID, so compare with one big page.
	one, err := f.sync.ListDocument(f.svc, (&openapi.ListDocumentParams{}).SetPageSize(1000))
	if err != nil {
		t.Fatalf("ListDocument(PageSize=1000): %v", err)
	}
	var whole []string
	for _, d := range one {
		whole = append(whole, str(d.Sid))
	}
	if strings.Join(got, ",") != strings.Join(whole, ",") || len(got) != 7 || !containsAll(got, want...) {
		t.Errorf("ListDocument(PageSize=3) = %v, want %v (same as one page, all 7 created)", got, whole)
	}
	want = whole
	limited, err := f.sync.ListDocument(f.svc, (&openapi.ListDocumentParams{}).SetPageSize(3).SetLimit(5))
	if err != nil || len(limited) != 5 {
		t.Errorf("ListDocument(Limit=5) = %d, %v, want 5", len(limited), err)
	}

	// The envelope, raw.
	type page struct {
		Documents []map[string]any `json:"documents"`
		Meta      struct {
			FirstPageURL    string  `json:"first_page_url"`
			Key             string  `json:"key"`
			NextPageURL     *string `json:"next_page_url"`
			Page            int     `json:"page"`
			PageSize        int     `json:"page_size"`
			PreviousPageURL *string `json:"previous_page_url"`
			URL             string  `json:"url"`
		} `json:"meta"`
	}
	coll := f.srv.URL + "/v1/Services/" + f.svc + "/Documents"
	var p0 page
	f.getJSON("/v1/Services/"+f.svc+"/Documents?PageSize=3", &p0)
	if len(p0.Documents) != 3 || p0.Meta.Key != "documents" || p0.Meta.Page != 0 || p0.Meta.PageSize != 3 ||
		p0.Meta.FirstPageURL != coll+"?PageSize=3&Page=0" || p0.Meta.URL != coll+"?PageSize=3&Page=0" || p0.Meta.PreviousPageURL != nil {
		t.Errorf("page 0 meta = %+v", p0.Meta)
	}
	if p0.Meta.NextPageURL == nil || !strings.HasPrefix(*p0.Meta.NextPageURL, coll+"?PageSize=3&Page=1&PageToken=") {
		t.Fatalf("page 0 next_page_url = %v", deref(p0.Meta.NextPageURL))
	}
	var p1 page
	f.getJSON(strings.TrimPrefix(*p0.Meta.NextPageURL, f.srv.URL), &p1)
	if p1.Meta.Page != 1 || len(p1.Documents) != 3 || p1.Documents[0]["sid"] != want[3] {
		t.Errorf("page 1 = %d docs, meta %+v", len(p1.Documents), p1.Meta)
	}
	var p2 page
	f.getJSON(strings.TrimPrefix(*p1.Meta.NextPageURL, f.srv.URL), &p2)
	if p2.Meta.Page != 2 || len(p2.Documents) != 1 || p2.Meta.NextPageURL != nil {
		t.Errorf("page 2 = %d docs, next %v, want 1 doc, next null", len(p2.Documents), deref(p2.Meta.NextPageURL))
	}
	// An empty collection still renders [].
	resp, b := f.do(http.MethodGet, "/v1/Services/"+f.svc+"/Streams", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"streams":[]`) {
		t.Errorf("empty streams = %d %s", resp.StatusCode, b)
	}
}

func TestAuth(t *testing.T) {
	f := newFixture(t)
	// Account SID + auth token: f.sync; API key SID + secret:
	key := f.client(f.creds.APIKeySID, f.creds.APISecret)
	if s, err := key.FetchService(f.svc); err != nil || str(s.Sid) != f.svc {
		t.Fatalf("FetchService with API key = %v, %v", s, err)
	}
	if d, err := key.CreateDocument(f.svc, (&openapi.CreateDocumentParams{}).SetUniqueName("by-key")); err != nil || str(d.CreatedBy) != "system" {
		t.Fatalf("CreateDocument with API key = %v, %v", d, err)
	}
	bad := []struct{ name, user, pass string }{
		{"wrong token", f.creds.AccountSID, f.creds.AuthToken + "x"},
		{"wrong secret", f.creds.APIKeySID, f.creds.APISecret + "x"},
		{"unknown account", "AC00000000000000000000000000000000", f.creds.AuthToken},
		{"key secret as token", f.creds.AccountSID, f.creds.APISecret},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.client(tt.user, tt.pass).FetchService(f.svc)
			wantTwilioErr(t, "FetchService("+tt.name+")", err, 401, 20003)
		})
	}
	resp, b := f.doAs("", "", http.MethodGet, "/v1/Services", nil, nil)
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != "" ||
		!strings.Contains(string(b), `"code":20003`) || !strings.Contains(string(b), `"message":"Authenticate"`) || !strings.Contains(string(b), `"status":401`) {
		t.Errorf("no credentials = %d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), b)
	}

	// Another account's service is 54056, by SID; its "default" is its own.
	other := f.newAccount()
	oc := f.client(other.AccountSID, other.AuthToken)
	_, err := oc.FetchService(f.svc)
	wantTwilioErr(t, "FetchService(other account)", err, 403, 54056)
	if s, err := oc.FetchService("default"); err != nil || str(s.Sid) != other.ServiceSID {
		t.Errorf("other FetchService(default) = %v, %v, want %s", s, err, other.ServiceSID)
	}
	all, err := oc.ListService(nil)
	if err != nil || len(all) != 1 || str(all[0].Sid) != other.ServiceSID {
		t.Errorf("other ListService = %v, %v, want only its own service", all, err)
	}
}

func TestProtocol(t *testing.T) {
	f := newFixture(t)
	rid := regexp.MustCompile(`^RQ[0-9a-f]{32}$`)
	tests := []struct {
		name, method, path string
		auth               bool
		status, code       int
	}{
		{"unknown route", http.MethodGet, "/v1/Nope", true, 404, 20404},
		{"unknown sub-route", http.MethodGet, "/v1/Services/" + "default" + "/Things", true, 404, 20404},
		{"wrong method", http.MethodPut, "/v1/Services", true, 405, 20004},
		{"wrong method item", http.MethodPatch, "/v1/Services/default/Maps/m/Items/k", true, 405, 20004},
		{"unauthenticated 404", http.MethodGet, "/v1/Nope", false, 401, 20003},
		// A wrong method is 405 before the credentials are looked at.
		{"unauthenticated wrong method", http.MethodPut, "/v1/Services/default/Documents", false, 405, 20004},
		{"unauthenticated DELETE of a collection", http.MethodDelete, "/v1/Services/default/Documents", false, 405, 20004},
		{"unauthenticated right method", http.MethodGet, "/v1/Services/default/Documents", false, 401, 20003},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, pass := f.creds.AccountSID, f.creds.AuthToken
			if !tt.auth {
				user, pass = "", ""
			}
			resp, b := f.doAs(user, pass, tt.method, tt.path, nil, nil)
			if resp.StatusCode != tt.status || !strings.Contains(string(b), `"code":`+itoa(tt.code)) {
				t.Errorf("%s %s = %d %s, want %d code %d", tt.method, tt.path, resp.StatusCode, b, tt.status, tt.code)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			if !rid.MatchString(resp.Header.Get("Twilio-Request-Id")) {
				t.Errorf("Twilio-Request-Id = %q", resp.Header.Get("Twilio-Request-Id"))
			}
			if tt.status == 405 && !strings.Contains(resp.Header.Get("Allow"), "GET") {
				t.Errorf("Allow = %q", resp.Header.Get("Allow"))
			}
		})
	}
	// CORS preflight needs no credentials.
	resp, b := f.doAs("", "", http.MethodOptions, "/v1/Services/default/Documents", nil, map[string]string{
		"Origin": "https://app.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, if-match"})
	if resp.StatusCode != 204 || len(b) != 0 || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "If-Match") ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "DELETE") {
		t.Errorf("OPTIONS = %d %q headers %v", resp.StatusCode, b, resp.Header)
	}
	// Every answer carries CORS headers and ETag is exposed.
	resp, _ = f.do(http.MethodPost, "/v1/Services/default/Documents", url.Values{"Data": {`{"a":1}`}}, nil)
	if resp.StatusCode != 201 || resp.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "ETag") {
		t.Errorf("POST = %d, CORS headers %v", resp.StatusCode, resp.Header)
	}
	// X-Forwarded-Proto is honoured when no PublicURL is set.
	resp, b = f.do(http.MethodGet, "/v1/Services/default", nil, map[string]string{"X-Forwarded-Proto": "https"})
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"url":"https://`+strings.TrimPrefix(f.srv.URL, "http://")+`/v1/Services/`+f.svc+`"`) {
		t.Errorf("X-Forwarded-Proto: https = %d %s", resp.StatusCode, b)
	}
	// Delete answers 204 with an empty body.
	var d struct{ Sid string }
	_, b = f.do(http.MethodPost, "/v1/Services/default/Documents", nil, nil)
	_ = json.Unmarshal(b, &d)
	resp, b = f.do(http.MethodDelete, "/v1/Services/default/Documents/"+d.Sid, nil, nil)
	if resp.StatusCode != 204 || len(b) != 0 {
		t.Errorf("DELETE = %d %q, want 204 empty", resp.StatusCode, b)
	}
}

// TestPublicURL checks that a configured public URL is used in url,
// links and meta, and that twilio-go follows it.
func TestPublicURL(t *testing.T) {
	f := newFixture(t)
	pub := httptest.NewServer(New(Config{Engine: f.eng, PublicURL: "https://sync.example.test/"}))
	defer pub.Close()
	c := f.clientAt(pub, f.creds.AccountSID, f.creds.AuthToken)
	m, err := c.CreateSyncMap(f.svc, (&openapi.CreateSyncMapParams{}).SetUniqueName("m"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.CreateSyncMapItem(f.svc, str(m.Sid), (&openapi.CreateSyncMapItemParams{}).SetKey("k"+itoa(i)).SetData(map[string]any{})); err != nil {
			t.Fatal(err)
		}
	}
	items, err := c.ListSyncMapItem(f.svc, "m", (&openapi.ListSyncMapItemParams{}).SetPageSize(1).SetLimit(10))
	if err != nil || len(items) != 3 {
		t.Fatalf("ListSyncMapItem via public URL = %d, %v, want 3", len(items), err)
	}
	if u := str(items[0].Url); !strings.HasPrefix(u, "https://sync.example.test/v1/Services/"+f.svc+"/Maps/MP") {
		t.Errorf("item url = %s, want the public URL", u)
	}
}

// TestEscapedDataAtTheLimit: 16 KiB of data is stored however a helper
// library escapes it on the wire, and one byte more is refused: twilio-go
// writes '<' as \u003c (8 bytes per byte once percent-encoded),
// twilio-python every non-ASCII character (é as \u00e9).
func TestEscapedDataAtTheLimit(t *testing.T) {
	f := newFixture(t)
	docs := "/v1/Services/" + f.svc + "/Documents"
	stored := func(sid string) string {
		t.Helper()
		resp, b := f.do(http.MethodGet, docs+"/"+sid, nil, nil)
		var d struct {
			Data struct{ S string } `json:"data"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &d) != nil {
			t.Fatalf("GET document %s = %d %s", sid, resp.StatusCode, b)
		}
		return d.Data.S
	}
	// {"s":"…"} is 8 bytes around the string.
	lt := strings.Repeat("<", chorus.MaxDataBytes-8)
	d, err := f.sync.CreateDocument(f.svc, (&openapi.CreateDocumentParams{}).SetData(map[string]any{"s": lt}).SetTtl(3600))
	if err != nil {
		t.Fatalf("twilio-go CreateDocument(16 KiB of '<'): %v", err)
	}
	if got := stored(*d.Sid); got != lt {
		t.Errorf("stored %d bytes of data, want the %d sent", len(got), len(lt))
	}
	_, err = f.sync.CreateDocument(f.svc, (&openapi.CreateDocumentParams{}).SetData(map[string]any{"s": lt + "<"}))
	wantTwilioErr(t, "twilio-go CreateDocument(16 KiB + 1 of '<')", err, 413, 54006)

	const e = `\u00e9` // é: 2 bytes stored
	n := (chorus.MaxDataBytes - 8) / 2
	resp, b := f.do(http.MethodPost, docs, url.Values{"Data": {`{"s":"` + strings.Repeat(e, n) + `"}`}, "Ttl": {"3600"}, "UniqueName": {strings.Repeat("n", 300)}}, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("16 KiB of escaped é with a TTL and a unique name = %d %s, want 201", resp.StatusCode, b)
	}
	var created struct{ Sid string }
	_ = json.Unmarshal(b, &created)
	if got, want := stored(created.Sid), strings.Repeat("é", n); got != want {
		t.Errorf("stored %d bytes of data, want %d", len(got), len(want))
	}
	if resp, b := f.do(http.MethodPost, docs, url.Values{"Data": {`{"s":"` + strings.Repeat(e, n+1) + `"}`}}, nil); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("16 KiB + 2 of escaped é = %d %s, want 413", resp.StatusCode, b)
	}
}

// TestFromStartsTheListing: an item listing's From is where its first
// page starts: page 0 has no previous page (nothing before From belongs
// to the listing, Bounds=exclusive excludes From itself), and going back
// from page 1 reaches page 0 again.
func TestFromStartsTheListing(t *testing.T) {
	f := newFixture(t)
	items := "/v1/Services/" + f.svc + "/Maps/m/Items"
	if resp, b := f.do(http.MethodPost, "/v1/Services/"+f.svc+"/Maps", url.Values{"UniqueName": {"m"}}, nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create map = %d %s", resp.StatusCode, b)
	}
	for i := range 6 {
		if resp, b := f.do(http.MethodPost, items, url.Values{"Key": {fmt.Sprintf("k%d", i)}, "Data": {"{}"}}, nil); resp.StatusCode != http.StatusCreated {
			t.Fatalf("create item = %d %s", resp.StatusCode, b)
		}
	}
	type page struct {
		Items []struct{ Key string } `json:"items"`
		Meta  struct {
			Page     int     `json:"page"`
			Next     *string `json:"next_page_url"`
			Previous *string `json:"previous_page_url"`
		} `json:"meta"`
	}
	get := func(u string) page {
		t.Helper()
		u = strings.TrimPrefix(u, f.srv.URL)
		resp, b := f.do(http.MethodGet, u, nil, nil)
		var p page
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &p) != nil || len(p.Items) != 1 {
			t.Fatalf("GET %s = %d %s", u, resp.StatusCode, b)
		}
		return p
	}
	first := get(items + "?From=k2&Bounds=exclusive&PageSize=1")
	if first.Items[0].Key != "k3" || first.Meta.Page != 0 || first.Meta.Previous != nil || first.Meta.Next == nil {
		t.Fatalf("first page: %+v, want k3 on page 0 with a next page and no previous one", first)
	}
	second := get(*first.Meta.Next)
	if second.Items[0].Key != "k4" || second.Meta.Page != 1 || second.Meta.Previous == nil {
		t.Fatalf("second page: %+v, want k4 on page 1 with a previous page", second)
	}
	back := get(*second.Meta.Previous)
	if back.Items[0].Key != "k3" || back.Meta.Page != 0 || back.Meta.Previous != nil {
		t.Errorf("back from page 1: %+v, want k3 on page 0 and no previous page", back)
	}
}
