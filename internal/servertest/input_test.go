package servertest_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/logtest"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/servertest"
)

// TestBadText: NUL and invalid UTF-8 in names, keys, identities, friendly
// names, JSON data, paths and query parameters are 400 with a Twilio code
// on SQLite and PostgreSQL alike, through REST and through the engine (the
// websocket path), and never an ERROR log line.
func TestBadText(t *testing.T) {
	stores := map[string]func(t *testing.T) server.Config{
		"sqlite":   func(t *testing.T) server.Config { return server.Config{DataDir: t.TempDir()} },
		"postgres": func(t *testing.T) server.Config { return server.Config{StoreURL: servertest.NewDatabase(t)} },
	}
	for name, cfgFor := range stores {
		t.Run(name, func(t *testing.T) {
			var logs logtest.Buffer
			cfg := cfgFor(t)
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := server.New(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			testBadTextREST(t, s)
			testBadTextEngine(t, s)
			if strings.Contains(logs.String(), "level=ERROR") {
				t.Errorf("bad input logged an ERROR:\n%s", logs.String())
			}
		})
	}
}

func testBadTextREST(t *testing.T, s *server.Server) {
	c := s.Credentials()
	do := func(method, path string, form url.Values) (int, int, string) {
		var body *strings.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		} else {
			body = strings.NewReader("")
		}
		req := httptest.NewRequest(method, path, body)
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		req.SetBasicAuth(c.AccountSID, c.AuthToken)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		var e struct{ Code int }
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		return rec.Code, e.Code, rec.Body.String()
	}
	svc := "/v1/Services/" + c.ServiceSID
	// Fixtures with valid text.
	for _, p := range []struct {
		path string
		form url.Values
	}{
		{svc + "/Documents", url.Values{"UniqueName": {"doc"}, "Data": {`{}`}}},
		{svc + "/Maps", url.Values{"UniqueName": {"map"}}},
	} {
		if st, _, b := do("POST", p.path, p.form); st != 201 {
			t.Fatalf("POST %s = %d %s", p.path, st, b)
		}
	}
	for _, bad := range []string{"a\x00b", "a\xffb"} {
		for _, tt := range []struct {
			method, path string
			form         url.Values
		}{
			{"POST", svc + "/Documents", url.Values{"UniqueName": {bad}}},
			{"POST", svc + "/Documents/doc", url.Values{"Data": {`{"k":"` + bad + `"}`}}},
			{"POST", svc + "/Documents", url.Values{"Data": {`{"` + bad + `":1}`}}},
			{"GET", svc + "/Documents/" + url.PathEscape(bad), nil},
			{"DELETE", svc + "/Documents/" + url.PathEscape(bad), nil},
			{"POST", svc + "/Maps/map/Items", url.Values{"Key": {bad}, "Data": {`{}`}}},
			{"GET", svc + "/Maps/map/Items/" + url.PathEscape(bad), nil},
			{"GET", svc + "/Maps/map/Items?From=" + url.QueryEscape(bad), nil},
			{"POST", svc + "/Documents/doc/Permissions/" + url.PathEscape(bad), url.Values{"Read": {"true"}, "Write": {"false"}, "Manage": {"false"}}},
			{"GET", svc + "/Documents/doc/Permissions/" + url.PathEscape(bad), nil},
			{"POST", svc, url.Values{"FriendlyName": {bad}}},
			{"POST", "/v1/Services", url.Values{"FriendlyName": {bad}}},
			{"POST", svc + "/Streams", url.Values{"UniqueName": {bad}}},
			{"GET", "/v1/Services?PageToken=" + url.QueryEscape(bad), nil},
			{"GET", "/admin/v1/Account?x=" + url.QueryEscape(bad), nil},
			{"GET", svc + "/Maps/map/Items?x=%zz&From=" + url.QueryEscape(bad), nil}, // a bad escape does not hide it
		} {
			st, code, b := do(tt.method, tt.path, tt.form)
			if st != 400 || code == 0 {
				t.Errorf("%s %s %v = %d %s, want 400 with a Twilio code", tt.method, tt.path, tt.form, st, b)
			}
		}
	}
	// An escaped \u0000 is valid JSON: stored verbatim, it round-trips.
	if st, _, b := do("POST", svc+"/Documents/doc", url.Values{"Data": {`{"k":"a\u0000b"}`}}); st != 200 || !strings.Contains(b, `a\u0000b`) {
		t.Errorf(`update with "a\u0000b" = %d %s, want 200 and the data verbatim`, st, b)
	}
	if st, _, b := do("GET", svc+"/Documents/doc", nil); st != 200 || !strings.Contains(b, `a\u0000b`) {
		t.Errorf(`fetch after "a\u0000b" = %d %s`, st, b)
	}
}

func testBadTextEngine(t *testing.T, s *server.Server) {
	ctx := context.Background()
	eng := s.Engine()
	c := s.Credentials()
	svc, err := eng.Service(ctx, c.AccountSID, c.ServiceSID)
	if err != nil {
		t.Fatal(err)
	}
	sys := engine.SystemActor()
	for _, bad := range []string{"a\x00b", "a\xffb"} {
		_, err := eng.CreateObject(ctx, sys, svc, chorus.KindDocument, engine.CreateObject{UniqueName: bad})
		wantBadRequest(t, "CreateObject(name)", err)
		_, err = eng.Object(ctx, sys, svc, chorus.KindDocument, bad)
		wantBadRequest(t, "Object(name)", err)
		_, err = eng.Object(ctx, sys, svc, chorus.KindMap, bad)
		wantBadRequest(t, "Object(map name)", err)
		m, err := eng.Object(ctx, sys, svc, chorus.KindMap, "map")
		if err != nil {
			t.Fatal(err)
		}
		_, err = eng.Item(ctx, sys, svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: bad})
		wantBadRequest(t, "Item(key)", err)
		_, _, err = eng.WriteItem(ctx, sys, svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: bad}, engine.ItemWrite{Data: json.RawMessage(`{}`)})
		wantBadRequest(t, "WriteItem(key)", err)
		_, err = eng.Permission(ctx, svc, chorus.KindMap, m.SID, bad)
		wantBadRequest(t, "Permission(identity)", err)
		_, err = eng.CreateObject(ctx, sys, svc, chorus.KindDocument, engine.CreateObject{Data: json.RawMessage("{\"k\":\"\xff\"}")})
		wantBadRequest(t, "CreateObject(data)", err)
	}
	// A forged page token whose position holds NUL is refused too.
	forged := "PT" + base64.RawURLEncoding.EncodeToString([]byte(`{"f":"a\u0000b","o":"asc"}`))
	m, err := eng.Object(ctx, sys, svc, chorus.KindMap, "map")
	if err != nil {
		t.Fatal(err)
	}
	_, err = eng.Items(ctx, sys, svc, chorus.KindMap, m.SID, engine.ItemPageRequest{Token: forged})
	wantBadRequest(t, "Items(forged page token)", err)
	forged = "PT" + base64.RawURLEncoding.EncodeToString([]byte(`{"i":"a\u0000b"}`))
	_, err = eng.Permissions(ctx, svc, chorus.KindMap, m.SID, engine.PageRequest{Token: forged})
	wantBadRequest(t, "Permissions(forged page token)", err)

	// A token identity with NUL under ACLs is denied, not a store error.
	on := true
	if _, err := eng.UpdateService(ctx, c.AccountSID, svc.SID, engine.ServiceParams{ACLEnabled: &on}); err != nil {
		t.Fatal(err)
	}
	svc, _ = eng.Service(ctx, c.AccountSID, c.ServiceSID)
	_, err = eng.Object(ctx, engine.Actor{Identity: "a\x00b"}, svc, chorus.KindMap, "map")
	if e := chorus.AsError(err); e.Status != http.StatusForbidden {
		t.Errorf("Object as identity with NUL = %v, want 403", err)
	}
}

func wantBadRequest(t *testing.T, what string, err error) {
	t.Helper()
	if e := chorus.AsError(err); e.Status != http.StatusBadRequest || e.Code == 0 {
		t.Errorf("%s = %v, want a 400 Twilio error", what, err)
	}
}
