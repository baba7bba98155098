package transfer_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/transfer"
)

// twilioLike serves hand-written answers in Twilio's shape for what a
// Chorus source cannot produce: invalid records.
func twilioLike(t *testing.T, acct, svc string, docs []string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != acct || p != "token" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"code":20003,"message":"Authenticate","status":401}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		path := r.URL.Path
		switch {
		case path == "/v1/Services":
			fmt.Fprint(w, servicesPage(acct, svc))
		case path == "/v1/Services/"+svc+"/Documents":
			fmt.Fprintf(w, `{"documents":[%s],"meta":{"next_page_url":null}}`, strings.Join(docs, ","))
		case strings.HasSuffix(path, "/Permissions"):
			fmt.Fprint(w, `{"permissions":[],"meta":{"next_page_url":null}}`)
		case strings.HasPrefix(path, "/v1/Services/"+svc+"/"):
			key := strings.ToLower(path[strings.LastIndex(path, "/")+1:])
			fmt.Fprintf(w, `{%q:[],"meta":{"next_page_url":null}}`, key)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"code":20404,"message":"not found","status":404}`)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// servicesPage is a Twilio-shaped listing of one service, svc of acct.
func servicesPage(acct, svc string) string {
	return fmt.Sprintf(`{"services":[{"sid":%q,"account_sid":%q,"unique_name":null,"friendly_name":"t","date_created":"2020-01-02T03:04:05Z","date_updated":"2020-01-02T03:04:05Z","webhook_url":null,"reachability_debouncing_window":5000}],"meta":{"next_page_url":null}}`, svc, acct)
}

func doc(sid, name, data string) string {
	return fmt.Sprintf(`{"sid":%q,"unique_name":%q,"revision":"a","data":%s,"date_expires":null,"date_created":"2021-01-01T00:00:00Z","date_updated":"2021-01-02T00:00:00Z","created_by":"system","url":"https://sync.twilio.com/x"}`, sid, name, data)
}

func TestTwilioShapedSource(t *testing.T) {
	ctx := context.Background()
	acct, svc := chorus.NewSID(chorus.PrefixAccount), chorus.NewSID(chorus.PrefixService)
	good, bad, sidName := chorus.NewSID(chorus.PrefixDocument), chorus.NewSID(chorus.PrefixDocument), chorus.NewSID(chorus.PrefixDocument)
	src := twilioLike(t, acct, svc, []string{
		doc(good, "ok ✓", `{"a": [1, 2], "b": "<&>"}`),
		doc(bad, "array", `[1]`),
		doc(sidName, chorus.NewSID("ET"), `{}`),
	})
	st, _ := openSQLite(t)
	defer st.Close()
	s := &transfer.Source{BaseURL: src.URL, Username: acct, Password: "token", Logger: quiet}
	rep, err := transfer.Import(ctx, s, st, transfer.Options{Account: transfer.Account{SID: acct, AuthToken: "token"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Objects.Created != 1 || rep.Objects.Refused != 2 || len(rep.Conflicts) != 2 {
		t.Fatalf("report %+v, want 1 created and 2 refused", rep)
	}
	err = st.View(ctx, func(tx chorus.ReadTx) error {
		o, err := tx.Object(ctx, chorus.KindDocument, svc, good)
		if err != nil {
			return err
		}
		if string(o.Data) != `{"a":[1,2],"b":"<&>"}` || o.Revision != 10 || o.UniqueName != "ok ✓" || o.DateUpdated.Format("2006-01-02") != "2021-01-02" {
			t.Errorf("imported %+v (data %s)", o, o.Data)
		}
		for _, sid := range []string{bad, sidName} {
			if _, err := tx.Object(ctx, chorus.KindDocument, svc, sid); err == nil {
				t.Errorf("invalid document %s was imported", sid)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A 429's Retry-After is waited for in full, not cut to the backoff's
// cap: retrying sooner only spends an attempt on another 429.
func TestRetryAfterWaitedInFull(t *testing.T) {
	ctx := context.Background()
	var throttled atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/Services" && throttled.CompareAndSwap(false, true) {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"code":20429,"message":"Too Many Requests","status":429}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		key := strings.ToLower(r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
		fmt.Fprintf(w, `{%q:[],"meta":{"next_page_url":null}}`, key)
	}))
	defer srv.Close()
	st, _ := openSQLite(t)
	defer st.Close()
	s := &transfer.Source{BaseURL: srv.URL, Username: chorus.NewSID(chorus.PrefixAccount), Password: "x", Logger: quiet, MaxBackoff: 50 * time.Millisecond, Attempts: 2}
	start := time.Now()
	rep, err := transfer.Import(ctx, s, st, transfer.Options{Account: transfer.Account{SID: s.Username, AuthToken: "token"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < time.Second || rep.Retries != 1 {
		t.Errorf("import after a 429 with Retry-After: 1 took %v with %d retries, want at least 1s and 1 retry", waited, rep.Retries)
	}
}

// Twilio may list what expired and was not purged yet, and may answer a
// page emptied meanwhile with a next page: the import leaves the expired
// out and follows the empty page.
func TestExpiredAndEmptyPages(t *testing.T) {
	ctx := context.Background()
	acct, svc := chorus.NewSID(chorus.PrefixAccount), chorus.NewSID(chorus.PrefixService)
	live, expired, list := chorus.NewSID(chorus.PrefixDocument), chorus.NewSID(chorus.PrefixDocument), chorus.NewSID("ES")
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		p := r.URL.Path
		switch {
		case p == "/v1/Services":
			fmt.Fprint(w, servicesPage(acct, svc))
		case p == "/v1/Services/"+svc+"/Documents" && r.URL.Query().Get("PageToken") == "":
			fmt.Fprintf(w, `{"documents":[],"meta":{"next_page_url":"/v1/Services/%s/Documents?PageSize=1000&PageToken=PT1"}}`, svc)
		case p == "/v1/Services/"+svc+"/Documents":
			gone := strings.Replace(doc(expired, "old", `{}`), `"date_expires":null`, `"date_expires":"`+past+`"`, 1)
			fmt.Fprintf(w, `{"documents":[%s,%s],"meta":{"next_page_url":null}}`, doc(live, "live", `{}`), gone)
		case p == "/v1/Services/"+svc+"/Lists":
			fmt.Fprintf(w, `{"lists":[{"sid":%q,"unique_name":null,"revision":"1","date_expires":null,"date_created":"2021-01-01T00:00:00Z","date_updated":"2021-01-02T00:00:00Z","created_by":"system"}],"meta":{"next_page_url":null}}`, list)
		case strings.HasSuffix(p, "/Items"):
			fmt.Fprintf(w, `{"items":[{"index":0,"revision":"0","data":{},"date_expires":null,"date_created":"2021-01-01T00:00:00Z","date_updated":"2021-01-01T00:00:00Z","created_by":"system"},`+
				`{"index":1,"revision":"0","data":{},"date_expires":%q,"date_created":"2021-01-01T00:00:00Z","date_updated":"2021-01-01T00:00:00Z","created_by":"system"}],"meta":{"next_page_url":null}}`, past)
		default:
			key := strings.ToLower(p[strings.LastIndex(p, "/")+1:])
			fmt.Fprintf(w, `{%q:[],"meta":{"next_page_url":null}}`, key)
		}
	}))
	defer srv.Close()
	st, _ := openSQLite(t)
	defer st.Close()
	s := &transfer.Source{BaseURL: srv.URL, Username: acct, Password: "x", Logger: quiet}
	rep, err := transfer.Import(ctx, s, st, transfer.Options{Account: transfer.Account{SID: acct, AuthToken: "token"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Objects.Created != 2 || rep.Items.Created != 1 {
		t.Errorf("objects %+v, items %+v; want the live document and the list with its live item", rep.Objects, rep.Items)
	}
	wantObjects(t, st, chorus.KindDocument, svc, live, expired)
}

// wantObjects checks that the store holds object present of kind k in
// service svc, and not absent.
func wantObjects(t *testing.T, st chorus.Store, k chorus.Kind, svc, present, absent string) {
	t.Helper()
	ctx := context.Background()
	err := st.View(ctx, func(tx chorus.ReadTx) error {
		if _, err := tx.Object(ctx, k, svc, absent); err == nil {
			t.Errorf("%s %s was imported", k, absent)
		}
		_, err := tx.Object(ctx, k, svc, present)
		return err
	})
	if err != nil {
		t.Fatalf("%s %s: %v", k, present, err)
	}
}

// An answer without its list is not an empty collection: taking it for
// one would delete the target's copies of items the source still has.
func TestAnswerWithoutItsList(t *testing.T) {
	ctx := context.Background()
	acct, svc := chorus.NewSID(chorus.PrefixAccount), chorus.NewSID(chorus.PrefixService)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v1/Services" {
			fmt.Fprint(w, servicesPage(acct, svc))
			return
		}
		fmt.Fprint(w, `{"meta":{"next_page_url":null}}`)
	}))
	defer srv.Close()
	st, _ := openSQLite(t)
	defer st.Close()
	s := &transfer.Source{BaseURL: srv.URL, Username: acct, Password: "x", Logger: quiet}
	if _, err := transfer.Import(ctx, s, st, transfer.Options{Account: transfer.Account{SID: acct, AuthToken: "token"}, Logger: quiet}); err == nil || !strings.Contains(err.Error(), `has no "documents" list`) {
		t.Errorf("Import from answers without their lists = %v, want an error naming the missing list", err)
	}
}
