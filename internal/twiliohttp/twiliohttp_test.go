package twiliohttp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	twilioclient "github.com/twilio/twilio-go/client"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// TestWriteErrorClientGone: a request whose client went away (its context
// canceled) and that failed because of it is no failure of the server: it
// is neither logged as an error nor counted in ServerErrors, which
// chorus_http_server_errors_total reports and whose 20500s mean a bug. A
// post-authentication tester raised them at will by hanging up.
func TestWriteErrorClientGone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := twiliohttp.ServerErrors()[20500]
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	for _, err := range []error{context.Canceled, fmt.Errorf("store: read: %w", context.Canceled), errors.New("interrupted (9)")} {
		twiliohttp.WriteError(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/x", nil).WithContext(ctx), log, err)
	}
	if logs.Len() > 0 {
		t.Errorf("logged %q for requests whose client went away", logs.String())
	}
	if n := twiliohttp.ServerErrors()[20500] - before; n != 0 {
		t.Errorf("%d requests whose client went away counted as server errors", n)
	}
	// A canceled request whose handler answered its own error (a client
	// that half-closed after sending still reads): that error, not a 500.
	rec := httptest.NewRecorder()
	twiliohttp.WriteError(rec, httptest.NewRequest("POST", "/v1/x", nil).WithContext(ctx), log, chorus.ErrUniqueNameExists)
	if rec.Code != http.StatusConflict {
		t.Errorf("a 409 of a request whose context was canceled was answered %d", rec.Code)
	}
	// Another failure of a canceled request is the server's.
	twiliohttp.WriteError(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/x", nil).WithContext(ctx), log, errors.New("disk on fire"))
	if n := twiliohttp.ServerErrors()[20500] - before; logs.Len() == 0 || n != 1 {
		t.Errorf("another failure of a canceled request: logged %q, counted %d; want logged and counted", logs.String(), n)
	}
	before = twiliohttp.ServerErrors()[20500]
	logs.Reset()
	// The same failure with the client still there is the server's.
	twiliohttp.WriteError(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/x", nil), log, errors.New("interrupted (9)"))
	if logs.Len() == 0 || twiliohttp.ServerErrors()[20500]-before != 1 {
		t.Errorf("a failure with the client there: logged %q, counted %d; want logged and counted once", logs.String(), twiliohttp.ServerErrors()[20500]-before)
	}
}

func TestWriteError(t *testing.T) {
	tests := []struct {
		name         string
		err          error
		status, code int
		logged       bool
	}{
		{"client error", chorus.Errorf(chorus.ErrDocumentNotFound, "Document not found"), 404, 54100, false},
		{"authenticate", chorus.ErrAuthenticate, 401, 20003, false},
		{"plain error", errors.New("disk on fire"), 500, 20500, true},
		{"unavailable", chorus.Wrap(chorus.ErrUnavailable, errors.New("pg down")), 503, 20503, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			rec := httptest.NewRecorder()
			twiliohttp.WriteError(rec, httptest.NewRequest("GET", "/v1/x", nil), slog.New(slog.NewTextHandler(&logs, nil)), tt.err, "request_id", "RQ1")
			var body twiliohttp.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tt.status || body.Status != tt.status || body.Code != tt.code || body.MoreInfo != fmt.Sprintf("https://www.twilio.com/docs/errors/%d", tt.code) {
				t.Errorf("WriteError = %d %+v, want %d/%d", rec.Code, body, tt.status, tt.code)
			}
			if strings.Contains(rec.Body.String(), "fire") || strings.Contains(rec.Body.String(), "pg down") {
				t.Errorf("body leaks the cause: %s", rec.Body)
			}
			if got := logs.Len() > 0; got != tt.logged || (got && !strings.Contains(logs.String(), "request_id=RQ1")) {
				t.Errorf("logged = %v (%q), want %v with the extra attrs", got, logs.String(), tt.logged)
			}
			// No Basic challenge: browsers would prompt and then cache the
			// credentials for every page's requests to the API (CSRF).
			if got := rec.Header().Get("WWW-Authenticate"); got != "" {
				t.Errorf("WWW-Authenticate = %q, want none", got)
			}
		})
	}
}

func TestWriteJSONKeepsHTML(t *testing.T) {
	rec := httptest.NewRecorder()
	twiliohttp.WriteJSON(rec, 201, map[string]json.RawMessage{"data": json.RawMessage(`{"a":"<&>"}`)})
	if rec.Code != 201 || !strings.Contains(rec.Body.String(), `"<&>"`) || rec.Header().Get("Content-Type") != "application/json; charset=utf-8" {
		t.Errorf("WriteJSON = %d %q %q", rec.Code, rec.Body, rec.Header().Get("Content-Type"))
	}
}

// A static header's shared value must not let one response change
// another's: Add on one response's header, and net/http's own cloning
// and writing, leave the next response's value as it was.
func TestStaticHeaderIsNotShared(t *testing.T) {
	hdr := twiliohttp.NewStaticHeader("x-chorus-test", "a")
	one, two := http.Header{}, http.Header{}
	hdr.Set(one)
	hdr.Set(two)
	one.Add("X-Chorus-Test", "b")
	if got := one.Values("X-Chorus-Test"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("after Add: %q", got)
	}
	if got := two.Values("X-Chorus-Test"); len(got) != 1 || got[0] != "a" {
		t.Fatalf("another response's header changed to %q", got)
	}
	two.Add("X-Chorus-Test", "x")
	if got := one.Values("X-Chorus-Test"); len(got) != 2 || got[1] != "b" {
		t.Fatalf("Add on another response changed this one's header to %q", got)
	}
	three := http.Header{}
	hdr.Set(three)
	if got := three.Values("X-Chorus-Test"); len(got) != 1 || got[0] != "a" {
		t.Fatalf("a later response's header is %q", got)
	}

	// Over a real connection, with the canonical key on the wire.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr.Set(w.Header())
		if r.URL.Query().Get("add") != "" {
			w.Header().Add("X-Chorus-Test", r.URL.Query().Get("add"))
		}
	}))
	defer srv.Close()
	for _, q := range []string{"?add=c", "", "?add=d", ""} {
		resp, err := srv.Client().Get(srv.URL + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := []string{"a"}
		if q != "" {
			want = append(want, q[len("?add="):])
		}
		if got := resp.Header.Values("X-Chorus-Test"); !slices.Equal(got, want) {
			t.Fatalf("GET %q: header %q, want %q", q, got, want)
		}
	}
}

// A flood of failed requests (a full disk fails every write) logs a
// bounded number of lines, each saying how many it held back; every
// request still gets its error.
func TestWriteErrorLogIsPaced(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	for range 1_000 {
		rec := httptest.NewRecorder()
		twiliohttp.WriteError(rec, httptest.NewRequest("POST", "/v1/Services", nil), log, errors.New("disk I/O error"))
		if rec.Code != http.StatusInternalServerError {
			t.Fatalf("status %d, want 500", rec.Code)
		}
	}
	lines := strings.Count(logs.String(), "request failed")
	if lines < 1 || lines > 40 {
		t.Errorf("%d log lines for 1,000 failed requests, want a few (at most 40)", lines)
	}
	// Another code in the flood is logged all the same.
	logs.Reset()
	rec := httptest.NewRecorder()
	twiliohttp.WriteError(rec, httptest.NewRequest("GET", "/v1/Services", nil), log, chorus.ErrUnavailable)
	if !strings.Contains(logs.String(), "code=20503") {
		t.Errorf("a 503 during a flood of 500s was not logged: %q", logs.String())
	}
}

// Every 5xx answer is counted per error code (chorus_http_server_errors_total),
// paced log or not; 4xx answers are not.
func TestServerErrorsCounted(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	before := twiliohttp.ServerErrors()
	for range 3 {
		twiliohttp.WriteError(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/Services", nil), log, chorus.ErrUnavailable)
	}
	twiliohttp.WriteError(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/Services", nil), log, chorus.ErrNotFound)
	after := twiliohttp.ServerErrors()
	if got := after[chorus.ErrUnavailable.Code] - before[chorus.ErrUnavailable.Code]; got != 3 {
		t.Errorf("%d 503s counted, want 3", got)
	}
	if got := after[chorus.ErrNotFound.Code] - before[chorus.ErrNotFound.Code]; got != 0 {
		t.Errorf("a 404 counted as a server error (%d)", got)
	}
}

// TestWriteErrorAPIStandardV1: a request that asks for Twilio's API
// Standards V1.0 (X-Twilio-ApiVersion: v1.0; twilio-go 1.30.1 and 1.30.2
// send it with every request) gets an error twilio-go's RestErrorV1 reads
// whole, status included (it read 0), with the legacy fields kept; other
// requests get the legacy body alone.
func TestWriteErrorAPIStandardV1(t *testing.T) {
	write := func(v1 bool) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/v1/Services/IS0/Documents/x", nil)
		if v1 {
			req.Header.Set("X-Twilio-ApiVersion", "v1.0")
		}
		rec := httptest.NewRecorder()
		twiliohttp.WriteError(rec, req, slog.New(slog.DiscardHandler), chorus.Errorf(chorus.ErrNotFound, "The requested resource was not found"))
		return rec
	}
	rec := write(true)
	var v1 twilioclient.RestErrorV1
	if err := json.Unmarshal(rec.Body.Bytes(), &v1); err != nil {
		t.Fatal(err)
	}
	if v1.GetHttpStatusCode() != 404 || v1.GetCode() != 20404 || !v1.GetUserError() || v1.GetMessage() == "" {
		t.Errorf("RestErrorV1 read %+v from %s, want status 404, code 20404, a user error", v1, rec.Body)
	}
	var legacy twilioclient.TwilioRestError
	if err := json.Unmarshal(rec.Body.Bytes(), &legacy); err != nil || legacy.Status != 404 || legacy.Code != 20404 || legacy.MoreInfo == "" {
		t.Errorf("TwilioRestError read %+v (%v) from %s", legacy, err, rec.Body)
	}
	if body := write(false).Body.String(); strings.Contains(body, "httpStatusCode") || strings.Contains(body, "userError") {
		t.Errorf("a request without the header got the V1.0 fields: %s", body)
	}
}

// blockingWriter is a ResponseWriter whose Write waits for release: a
// client that does not read its answer.
type blockingWriter struct {
	*httptest.ResponseRecorder
	writing chan struct{}
	release chan struct{}
}

func (w *blockingWriter) Write(b []byte) (int, error) {
	close(w.writing)
	<-w.release
	return w.ResponseRecorder.Write(b)
}

// TestLargeAnswersShareABudget: large answers being written hold at most
// the node's budget together. One that does not fit is answered 503 at
// once with Retry-After, and counted; small answers never wait for it,
// and once the first answer is read a large one goes out again. Before, a
// client that asked for 1,000-item pages and never read them held 24 MB
// per connection until the write timeout: 200 connections took 4.85 GB.
func TestLargeAnswersShareABudget(t *testing.T) {
	twiliohttp.SetAnswerBudget(1 << 20)
	t.Cleanup(func() { twiliohttp.SetAnswerBudget(twiliohttp.DefaultAnswerBudget) })
	big := map[string]string{"data": strings.Repeat("x", 700<<10)}
	slow := &blockingWriter{ResponseRecorder: httptest.NewRecorder(), writing: make(chan struct{}), release: make(chan struct{})}
	done := make(chan struct{})
	go func() { defer close(done); twiliohttp.WriteJSON(slow, http.StatusOK, big) }()
	<-slow.writing

	refused := twiliohttp.AnswersRefused()
	rec := httptest.NewRecorder()
	twiliohttp.WriteJSON(rec, http.StatusOK, big)
	var body twiliohttp.ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 503 || body.Code != 20503 || rec.Header().Get("Retry-After") != "1" {
		t.Errorf("a second large answer while the first is unread = %d %s (Retry-After %q), want 503 20503 with Retry-After 1",
			rec.Code, rec.Body.String()[:min(rec.Body.Len(), 200)], rec.Header().Get("Retry-After"))
	}
	// A page for a request that asks for API Standards V1.0 errors (twilio-go
	// 1.30.1 and 1.30.2) is refused in that format, as its other errors are.
	v1 := httptest.NewRequest("GET", "/v1/Services/IS0/Maps/m/Items", nil)
	v1.Header.Set("X-Twilio-ApiVersion", "v1.0")
	rec = httptest.NewRecorder()
	twiliohttp.WriteJSONFor(rec, v1, http.StatusOK, big)
	body = twiliohttp.ErrorBody{}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 503 || body.HTTPStatusCode != 503 || body.UserError == nil || *body.UserError {
		t.Errorf("a large answer refused to a V1.0 request = %d %s, want 503 with httpStatusCode 503 and userError false", rec.Code, rec.Body.String()[:min(rec.Body.Len(), 200)])
	}
	if n := twiliohttp.AnswersRefused() - refused; n != 2 {
		t.Errorf("%d answers counted as refused, want 2", n)
	}
	small := httptest.NewRecorder()
	twiliohttp.WriteJSON(small, http.StatusOK, map[string]string{"data": strings.Repeat("x", 10<<10)})
	if small.Code != http.StatusOK {
		t.Errorf("a small answer = %d, want 200 whatever the large ones hold", small.Code)
	}

	close(slow.release)
	<-done
	if slow.Code != http.StatusOK || slow.Body.Len() < 700<<10 {
		t.Errorf("the first large answer = %d, %d bytes", slow.Code, slow.Body.Len())
	}
	again := httptest.NewRecorder()
	twiliohttp.WriteJSON(again, http.StatusOK, big)
	if again.Code != http.StatusOK || again.Body.Len() < 700<<10 {
		t.Errorf("a large answer once the first was read = %d, %d bytes; want 200 whole", again.Code, again.Body.Len())
	}
}
