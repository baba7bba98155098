package twiliohttp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/ratelog"
)

// StaticHeader is a response header with the same value on every response.
// Setting it costs no allocation and no canonicalisation per response:
// every response shares one value slice. That is safe because nothing
// writes into a header's value slice in place: net/http only reads it
// (Header.Clone copies), Set replaces the slice and Add appends past its
// capacity of one, so no response can change another's.
type StaticHeader struct {
	key string
	val []string
}

// NewStaticHeader returns the header key: value. Call it once, at package
// or server set-up, not per response.
func NewStaticHeader(key, value string) StaticHeader {
	return StaticHeader{key: http.CanonicalHeaderKey(key), val: []string{value}}
}

// Set sets the header in h, replacing any value it had.
func (s StaticHeader) Set(h http.Header) { h[s.key] = s.val }

var contentTypeJSON = NewStaticHeader("Content-Type", "application/json; charset=utf-8")

// ErrorBody is Twilio's error JSON.
type ErrorBody struct {
	Code     int    `json:"code"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
	Status   int    `json:"status"`
	// The fields of Twilio's API Standards V1.0 error, for a request that
	// asks for it (BodyFor).
	HTTPStatusCode int   `json:"httpStatusCode,omitempty"`
	UserError      *bool `json:"userError,omitempty"`
}

// Body is the JSON error body of e.
func Body(e *chorus.Error) ErrorBody {
	return ErrorBody{Code: e.Code, Message: e.Message, MoreInfo: e.MoreInfo(), Status: e.Status}
}

// BodyFor is Body for r: a request that says X-Twilio-ApiVersion: v1.0
// (twilio-go 1.30.1 and 1.30.2 send it with every request, and then decode
// every error as a RestErrorV1) also gets that format's httpStatusCode and
// userError, beside the legacy fields other clients read.
func BodyFor(r *http.Request, e *chorus.Error) ErrorBody {
	b := Body(e)
	if r != nil && r.Header.Get("X-Twilio-ApiVersion") == "v1.0" {
		user := e.Status < 500
		b.HTTPStatusCode, b.UserError = e.Status, &user
	}
	return b
}

// Appender is a response body that writes its own JSON: WriteJSON
// appends it instead of encoding it by reflection. Its output must carry
// the tokens encoding/json would write for the resource (escapes may
// differ: \u0008 for \b), and its raw data must already be valid, compact
// JSON; implement it only where a test compares the two.
type Appender interface {
	AppendJSON(dst []byte) []byte
}

// jsonWriter is a reusable response buffer with its encoder.
type jsonWriter struct {
	buf bytes.Buffer
	enc *json.Encoder
}

// maxPooledJSON bounds the buffers kept for reuse: a large page is not kept.
const maxPooledJSON = 64 << 10

var jsonWriters = sync.Pool{New: func() any {
	jw := &jsonWriter{}
	jw.enc = json.NewEncoder(&jw.buf)
	jw.enc.SetEscapeHTML(false)
	return jw
}}

// WriteJSON writes v with status. HTML characters are not escaped.
func WriteJSON(w http.ResponseWriter, status int, v any) { WriteJSONFor(w, nil, status, v) }

// WriteJSONFor is WriteJSON for an answer that may be large (a page): when
// it is refused for want of the large answers' budget, the error is
// rendered for r (BodyFor), as WriteError renders every other.
func WriteJSONFor(w http.ResponseWriter, r *http.Request, status int, v any) {
	jw := jsonWriters.Get().(*jsonWriter)
	defer func() {
		if jw.buf.Cap() <= maxPooledJSON {
			jw.buf.Reset()
			jsonWriters.Put(jw)
		}
	}()
	buf := &jw.buf
	if a, ok := v.(Appender); ok {
		// The hot resources render themselves: no reflection, and their
		// json.RawMessage data (validated and compacted when stored) is
		// copied rather than re-validated and re-compacted.
		buf.Write(a.AppendJSON(buf.AvailableBuffer()))
		buf.WriteByte('\n') // as Encoder.Encode ends its output
	} else if err := jw.enc.Encode(v); err != nil {
		// Only a broken json.RawMessage can get here; data is validated
		// before it is stored, so this is a bug.
		status = http.StatusInternalServerError
		buf.Reset()
		_ = json.NewEncoder(buf).Encode(Body(chorus.ErrInternal))
	}
	if n := int64(buf.Len()); n > largeAnswer {
		// Held until the client has read it (up to the server's write
		// timeout): within the node's budget, or not at all.
		b := answerBudget.Load()
		n = min(n, b.max)
		if !b.sem.TryAcquire(n) {
			buf.Reset()
			e := chorus.Errorf(chorus.ErrUnavailable, "Service unavailable: the server is busy sending other large answers; retry, or ask for smaller pages")
			_ = json.NewEncoder(buf).Encode(BodyFor(r, e))
			status = e.Status
			w.Header().Set("Retry-After", "1")
			answersRefused.Add(1)
		} else {
			defer b.sem.Release(n)
		}
	}
	h := w.Header()
	contentTypeJSON.Set(h)
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// Large answers (pages of up to 1,000 items of 16 KiB: 17 MB) are held
// in memory until their client has read them, for as long as the
// server's write timeout: a client that asks for them and never reads
// held 24 MB per connection, bounded only by the connection cap (a
// tester's 200 connections took 4.85 GB). The answers over largeAnswer
// being written at once hold at most the node's budget together; past it
// the next is answered 503 with Retry-After at once, its buffer dropped.
const largeAnswer = 64 << 10

// DefaultAnswerBudget is the default of SetAnswerBudget.
const DefaultAnswerBudget = 256 << 20

var answerBudget atomic.Pointer[budget]

func init() { SetAnswerBudget(DefaultAnswerBudget) }

// answersRefused counts the answers refused for want of budget
// (AnswersRefused).
var answersRefused atomic.Uint64

type budget struct {
	max int64
	sem *semaphore.Weighted
}

func newAnswerBudget(max int64) *budget {
	return &budget{max: max, sem: semaphore.NewWeighted(max)}
}

// SetAnswerBudget sets the bytes that large REST answers being written
// may hold together on this node (default DefaultAnswerBudget); answers
// being written keep the budget they started with.
func SetAnswerBudget(max int64) { answerBudget.Store(newAnswerBudget(max)) }

// AnswersRefused returns how many large answers were refused 503 because
// others held the budget.
func AnswersRefused() uint64 { return answersRefused.Load() }

// ParsedForm is a request body that the server's edge has read whole and
// parsed as application/x-www-form-urlencoded (to refuse text no store
// can hold) before the API handler runs; the edge makes one only when the
// request's Content-Type parsed without error as that type. It still reads as the original
// bytes; a handler that accepts such a body may take Values instead of
// parsing it again. Values are exactly url.ParseQuery of the body, which
// succeeded; the handler owns them.
type ParsedForm struct {
	*bytes.Reader
	Size   int // bytes in the body
	Values url.Values
}

// Close does nothing: the body is in memory.
func (*ParsedForm) Close() error { return nil }

// failedLogs pace WriteError's log lines, one gate per error code: when
// the store cannot write (a full disk), every request fails, thousands a
// second, and each logged two lines; a flood of one code must not hide
// another (an unexpected 500 beside a storm of 503s).
var failedLogs sync.Map // code → *ratelog.Gate

func failedLog(code int) *ratelog.Gate {
	if g, ok := failedLogs.Load(code); ok {
		return g.(*ratelog.Gate)
	}
	g, _ := failedLogs.LoadOrStore(code, ratelog.New(time.Second/10, 20))
	return g.(*ratelog.Gate)
}

// serverErrors counts the 5xx answers WriteError wrote, per error code
// (ServerErrors): their logs are paced, the counts are not.
var serverErrors sync.Map // code → *atomic.Uint64

func countServerError(code int) {
	c, ok := serverErrors.Load(code)
	if !ok {
		c, _ = serverErrors.LoadOrStore(code, new(atomic.Uint64))
	}
	c.(*atomic.Uint64).Add(1)
}

// ServerErrors returns how many 5xx answers WriteError wrote in this
// process, per Twilio error code.
func ServerErrors() map[int]uint64 {
	out := map[int]uint64{}
	serverErrors.Range(func(k, v any) bool {
		out[k.(int)] = v.(*atomic.Uint64).Load()
		return true
	})
	return out
}

// abandoned reports whether the request failed with err because its
// client went away: its context was canceled (net/http does so when the
// connection ends, or when the client half-closes it) and err is that
// cancellation, or SQLite's interruption by it. Any other error is the
// server's, whatever the client did.
func abandoned(r *http.Request, err error) bool {
	if !errors.Is(r.Context().Err(), context.Canceled) {
		return false
	}
	return errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "interrupted")
}

// WriteError renders err as a Twilio error. Errors that are not a
// *chorus.Error, and 5xx ones, are logged here, once, with attrs; their
// cause never reaches the client.
//
// A request that failed because its client went away before its answer
// (abandoned) is no failure of the server: it is answered as any other,
// but logged at debug level and not counted, so that clients that hang up
// can neither fill the error log nor raise chorus_http_server_errors_total,
// whose 20500s mean a bug.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error, attrs ...any) {
	var ce *chorus.Error
	isChorus := errors.As(err, &ce)
	e := chorus.AsError(err)
	if abandoned(r, err) {
		log.DebugContext(r.Context(), "request abandoned by its client", append(attrs, "method", r.Method, "path", r.URL.Path, "err", err)...)
		WriteJSON(w, e.Status, BodyFor(r, e)) // likely to no one
		return
	}
	if e.Status >= 500 {
		countServerError(e.Code)
	}
	if !isChorus || e.Status >= 500 {
		if held, ok := failedLog(e.Code).Allow(); ok {
			attrs = append(attrs, "method", r.Method, "path", r.URL.Path, "status", e.Status, "code", e.Code, "err", err,
				"failed_before_not_logged", held)
			log.ErrorContext(r.Context(), "request failed", attrs...)
		}
	}
	WriteJSON(w, e.Status, BodyFor(r, e))
}
