package twiliohttp_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

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
