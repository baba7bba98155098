package twiliohttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/chorus-sync/chorus"
)

// ErrorBody is Twilio's error JSON.
type ErrorBody struct {
	Code     int    `json:"code"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
	Status   int    `json:"status"`
}

// Body is the JSON error body of e.
func Body(e *chorus.Error) ErrorBody {
	return ErrorBody{Code: e.Code, Message: e.Message, MoreInfo: e.MoreInfo(), Status: e.Status}
}

// WriteJSON writes v with status. HTML characters are not escaped.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only a broken json.RawMessage can get here; data is validated
		// before it is stored, so this is a bug.
		status = http.StatusInternalServerError
		buf.Reset()
		_ = json.NewEncoder(&buf).Encode(Body(chorus.ErrInternal))
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// WriteError renders err as a Twilio error. Errors that are not a
// *chorus.Error, and 5xx ones, are logged here, once, with attrs; their
// cause never reaches the client.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error, attrs ...any) {
	var ce *chorus.Error
	isChorus := errors.As(err, &ce)
	e := chorus.AsError(err)
	if !isChorus || e.Status >= 500 {
		attrs = append(attrs, "method", r.Method, "path", r.URL.Path, "status", e.Status, "code", e.Code, "err", err)
		log.ErrorContext(r.Context(), "request failed", attrs...)
	}
	WriteJSON(w, e.Status, Body(e))
}
