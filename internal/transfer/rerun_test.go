package transfer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/servertest"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/transfer"
)

// After the cut-over the target's clients write to it. An import run again
// (a leftover loop, or "to be sure") must not copy the frozen source over
// those writes: the objects written since are refused and listed, and only
// --overwrite replaces them.
func TestRerunAfterCutOverKeepsTargetWrites(t *testing.T) {
	ctx := context.Background()
	src, eng, svc, creds := sourceNode(t)
	sys := engine.SystemActor()
	doc, err := eng.CreateObject(ctx, sys, svc, chorus.KindDocument, engine.CreateObject{UniqueName: "cfg", Data: json.RawMessage(`{"v":"source"}`)})
	if err != nil {
		t.Fatal(err)
	}
	m, err := eng.CreateObject(ctx, sys, svc, chorus.KindMap, engine.CreateObject{UniqueName: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := eng.WriteItem(ctx, sys, svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: "a"}, engine.ItemWrite{Mode: engine.CreateOnly, Data: json.RawMessage(`{"a":1}`)}); err != nil {
		t.Fatal(err)
	}
	untouched, err := eng.CreateObject(ctx, sys, svc, chorus.KindDocument, engine.CreateObject{UniqueName: "untouched", Data: json.RawMessage(`{"u":1}`)})
	if err != nil {
		t.Fatal(err)
	}

	st, dir := openSQLite(t)
	if _, err := transfer.Import(ctx, src.source(), st, transfer.Options{Account: account(src), Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// The source's dates have whole seconds (REST); the target's writes
	// must land in a later second to be told apart.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))

	// Cut-over: the target serves, and its clients write.
	dst := startNode(t, server.Config{DataDir: dir, Creds: creds})
	deng := dst.srv.Engine()
	dsvc, err := deng.Service(ctx, creds.AccountSID, creds.ServiceSID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deng.UpdateObject(ctx, sys, dsvc, chorus.KindDocument, doc.SID, engine.UpdateObject{Data: json.RawMessage(`{"v":"target"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := deng.WriteItem(ctx, sys, dsvc, chorus.KindMap, m.SID, chorus.ItemRef{Key: "new"}, engine.ItemWrite{Mode: engine.CreateOnly, Data: json.RawMessage(`{"n":1}`)}); err != nil {
		t.Fatal(err)
	}
	acl := true
	if _, err := deng.UpdateService(ctx, creds.AccountSID, creds.ServiceSID, engine.ServiceParams{ACLEnabled: &acl}); err != nil {
		t.Fatal(err)
	}
	dst.stop()

	reopen := func() chorus.Store {
		st, err := sqlite.Open(ctx, filepath.Join(dir, server.DBFile), quiet)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	targetState := func(st chorus.Store) (data string, keys []string) {
		err := st.View(ctx, func(tx chorus.ReadTx) error {
			o, err := tx.Object(ctx, chorus.KindDocument, creds.ServiceSID, doc.SID)
			if err != nil {
				return err
			}
			data = string(o.Data)
			its, err := tx.Items(ctx, m.SID, chorus.ItemQuery{Kind: chorus.KindMap})
			for _, it := range its {
				keys = append(keys, it.Key)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return data, keys
	}

	st = reopen()
	rep, err := transfer.Import(ctx, src.source(), st, transfer.Options{Account: account(src), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Objects.Refused != 2 || rep.Services.Refused != 1 || len(rep.Conflicts) != 3 || rep.Objects.Unchanged != 1 {
		t.Errorf("re-run report services %+v, objects %+v, %d conflicts; want the service and the 2 written objects refused, 1 unchanged",
			rep.Services, rep.Objects, len(rep.Conflicts))
	}
	for _, c := range rep.Conflicts {
		if (c.SID != doc.SID && c.SID != m.SID && c.SID != creds.ServiceSID) || !strings.Contains(c.Reason, "after the source's last update") {
			t.Errorf("conflict %+v, want the service, the document or the map, changed after the source's last update", c)
		}
	}
	if err := st.View(ctx, func(tx chorus.ReadTx) error {
		svc, err := tx.Service(ctx, creds.ServiceSID)
		if err == nil && !svc.ACLEnabled {
			t.Error("the re-run turned the target service's ACLs off again")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if data, keys := targetState(st); data != `{"v":"target"}` || strings.Join(keys, ",") != "a,new" {
		t.Errorf("after the re-run the target holds %s and items %v, want its own write and the item it added", data, keys)
	}
	if err := st.View(ctx, func(tx chorus.ReadTx) error {
		_, err := tx.Object(ctx, chorus.KindDocument, creds.ServiceSID, untouched.SID)
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// --overwrite is the operator saying the source wins.
	rep, err = transfer.Import(ctx, src.source(), st, transfer.Options{Account: account(src), Logger: quiet, Overwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Objects.Refused != 0 || rep.Objects.Updated != 2 || rep.Services.Updated != 1 {
		t.Errorf("--overwrite report services %+v, objects %+v, want the service and the 2 objects updated", rep.Services, rep.Objects)
	}
	if data, keys := targetState(st); data != `{"v":"source"}` || strings.Join(keys, ",") != "a" {
		t.Errorf("after --overwrite the target holds %s and items %v, want the source's", data, keys)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// An object the source listed and then deleted (or let expire) before its
// items were read answers 404: the import counts it as gone and copies
// the rest, instead of failing the whole run.
func TestObjectGoneAtSourceMidImport(t *testing.T) {
	ctx := context.Background()
	acct, svc := chorus.NewSID(chorus.PrefixAccount), chorus.NewSID(chorus.PrefixService)
	gone, kept := chorus.NewSID("ES"), chorus.NewSID("ES")
	list := func(sid string) string {
		return fmt.Sprintf(`{"sid":%q,"unique_name":null,"revision":"1","date_expires":null,"date_created":"2021-01-01T00:00:00Z","date_updated":"2021-01-02T00:00:00Z","created_by":"system"}`, sid)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		w.Header().Set("Content-Type", "application/json")
		switch {
		case p == "/v1/Services":
			fmt.Fprint(w, servicesPage(acct, svc))
		case p == "/v1/Services/"+svc+"/Lists":
			fmt.Fprintf(w, `{"lists":[%s,%s],"meta":{"next_page_url":null}}`, list(gone), list(kept))
		case strings.Contains(p, gone):
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"code":20404,"message":"not found","status":404}`)
		case strings.HasSuffix(p, "/Items"):
			fmt.Fprint(w, `{"items":[{"index":0,"revision":"0","data":{"a":1},"date_expires":null,"date_created":"2021-01-01T00:00:00Z","date_updated":"2021-01-01T00:00:00Z","created_by":"system"}],"meta":{"next_page_url":null}}`)
		default:
			key := strings.ToLower(p[strings.LastIndex(p, "/")+1:])
			fmt.Fprintf(w, `{%q:[],"meta":{"next_page_url":null}}`, key)
		}
	}))
	defer srv.Close()
	st, _ := openSQLite(t)
	defer st.Close()
	s := &transfer.Source{BaseURL: srv.URL, Username: acct, Password: "x", Logger: quiet}
	rep, err := transfer.Import(ctx, s, st, transfer.Options{Account: transfer.Account{SID: acct, AuthToken: "token"}, Logger: quiet, Concurrency: 1})
	if err != nil {
		t.Fatalf("Import with one object gone at the source: %v", err)
	}
	if rep.Objects.Gone != 1 || rep.Objects.Created != 1 || rep.Items.Created != 1 {
		t.Errorf("objects %+v, items %+v; want 1 gone, 1 created with its item", rep.Objects, rep.Items)
	}
	wantObjects(t, st, chorus.KindList, svc, kept, gone)
}

// A source names its next page by an origin of its own: Chorus by its
// --public-url (behind a proxy), Twilio without a default port. The import
// follows that page's path and query on the origin it was given, and its
// credentials never reach the origin the page names.
func TestNextPageOnAnotherOriginStaysOnTheSource(t *testing.T) {
	ctx := context.Background()
	acct, svc := chorus.NewSID(chorus.PrefixAccount), chorus.NewSID(chorus.PrefixService)
	var leaked atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Add(1)
		w.WriteHeader(http.StatusNotFound)
	}))
	defer other.Close()
	first, second := chorus.NewSID(chorus.PrefixDocument), chorus.NewSID(chorus.PrefixDocument)
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != acct || p != "token" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch p := r.URL.Path; {
		case p == "/v1/Services":
			fmt.Fprint(w, servicesPage(acct, svc))
		case p == "/v1/Services/"+svc+"/Documents" && r.URL.Query().Get("PageToken") == "":
			fmt.Fprintf(w, `{"documents":[%s],"meta":{"next_page_url":%q}}`, doc(first, "one", `{}`), other.URL+"/v1/Services/"+svc+"/Documents?PageSize=1&PageToken=PT1")
		case p == "/v1/Services/"+svc+"/Documents":
			fmt.Fprintf(w, `{"documents":[%s],"meta":{"next_page_url":null}}`, doc(second, "two", `{}`))
		default:
			key := strings.ToLower(p[strings.LastIndex(p, "/")+1:])
			fmt.Fprintf(w, `{%q:[],"meta":{"next_page_url":null}}`, key)
		}
	}))
	defer src.Close()
	st, _ := openSQLite(t)
	defer st.Close()
	s := &transfer.Source{BaseURL: src.URL, Username: acct, Password: "token", Logger: quiet}
	rep, err := transfer.Import(ctx, s, st, transfer.Options{Account: transfer.Account{SID: acct, AuthToken: "token"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if leaked.Load() != 0 {
		t.Errorf("%d requests reached the origin the next page named", leaked.Load())
	}
	if rep.Objects.Created != 2 {
		t.Errorf("objects %+v, want both pages' documents created", rep.Objects)
	}
}

// A service named twice, by SID and by unique name, is copied once.
func TestServiceNamedTwice(t *testing.T) {
	ctx := context.Background()
	creds := servertest.NewCredentials()
	src := startNode(t, server.Config{DataDir: t.TempDir(), Creds: creds})
	ds := populate(t, src, 4, 1, 1, 2)
	st, _ := openSQLite(t)
	defer st.Close()
	one, err := transfer.Import(ctx, src.source(), st, transfer.Options{Account: account(src), Logger: quiet, Services: []string{ds.services[1]}, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	twice, err := transfer.Import(ctx, src.source(), st, transfer.Options{Account: account(src), Logger: quiet, Services: []string{ds.services[1], "svc two ü"}, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if twice.Services != one.Services || twice.Objects != one.Objects || twice.Items != one.Items {
		t.Errorf("named twice: services %+v, objects %+v, items %+v; named once: %+v, %+v, %+v",
			twice.Services, twice.Objects, twice.Items, one.Services, one.Objects, one.Items)
	}
}

// A target started with the same TWILIO_* before the first import made its
// own default service: that one takes the source's settings (it is not the
// import's copy changed since), as before the re-run guard.
func TestImportIntoBootstrappedTarget(t *testing.T) {
	ctx := context.Background()
	creds := servertest.NewCredentials()
	src := startNode(t, server.Config{DataDir: t.TempDir(), Creds: creds})
	acl := true
	if _, err := src.srv.Engine().UpdateService(ctx, creds.AccountSID, creds.ServiceSID, engine.ServiceParams{ACLEnabled: &acl}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second))) // the target's service is a second newer
	dir := t.TempDir()
	dst := startNode(t, server.Config{DataDir: dir, Creds: creds})
	dst.stop()
	st, err := sqlite.Open(ctx, filepath.Join(dir, server.DBFile), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rep, err := transfer.Import(ctx, src.source(), st, transfer.Options{Account: account(src), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Services.Refused != 0 || len(rep.Conflicts) != 0 || rep.Services.Updated != 1 {
		t.Errorf("services %+v, %d conflicts; want the target's own service updated from the source", rep.Services, len(rep.Conflicts))
	}
	if err := st.View(ctx, func(tx chorus.ReadTx) error {
		svc, err := tx.Service(ctx, creds.ServiceSID)
		if err == nil && !svc.ACLEnabled {
			t.Error("the source's ACL setting was not copied")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// --overwrite never crosses accounts: a source may name any SID, and a
// target object or service of another account with that SID is refused,
// not deleted.
func TestOverwriteStaysInItsAccount(t *testing.T) {
	ctx := context.Background()
	st, _ := openSQLite(t)
	defer st.Close()
	acctB, svcB := chorus.NewSID(chorus.PrefixAccount), chorus.NewSID(chorus.PrefixService)
	x := chorus.NewSID(chorus.PrefixDocument)
	srcB := twilioLike(t, acctB, svcB, []string{doc(x, "b's", `{"pw":"b"}`)})
	sB := &transfer.Source{BaseURL: srcB.URL, Username: acctB, Password: "token", Logger: quiet}
	if _, err := transfer.Import(ctx, sB, st, transfer.Options{Account: transfer.Account{SID: acctB, AuthToken: "token"}, Logger: quiet}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ name, svc string }{
		{"an object of another account", chorus.NewSID(chorus.PrefixService)},
		{"a service of another account", svcB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acctC := chorus.NewSID(chorus.PrefixAccount)
			srcC := twilioLike(t, acctC, tc.svc, []string{doc(x, "c's", `{"pw":"c"}`)})
			sC := &transfer.Source{BaseURL: srcC.URL, Username: acctC, Password: "token", Logger: quiet}
			rep, err := transfer.Import(ctx, sC, st, transfer.Options{Account: transfer.Account{SID: acctC, AuthToken: "token"}, Logger: quiet, Overwrite: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Conflicts) != 1 || rep.Objects.Created+rep.Objects.Updated != 0 {
				t.Errorf("report %+v, want the other account's %s refused", rep, tc.name)
			}
			err = st.View(ctx, func(tx chorus.ReadTx) error {
				o, err := tx.Object(ctx, chorus.KindDocument, svcB, x)
				if err != nil {
					return fmt.Errorf("account B's document: %w", err)
				}
				if string(o.Data) != `{"pw":"b"}` || o.AccountSID != acctB {
					t.Errorf("account B's document now %s in account %s", o.Data, o.AccountSID)
				}
				s, err := tx.Service(ctx, svcB)
				if err != nil || s.AccountSID != acctB {
					t.Errorf("account B's service: %+v, %v", s, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
