package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/protocol"
)

func jsonUnmarshal(b []byte, v any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return errors.New("empty")
	}
	return json.Unmarshal(b, v)
}

// upstream is one tunnelled HTTP request.
type upstream struct {
	method  string
	url     string            // absolute URL, path percent-encoded
	params  map[string]string // raw (percent-encoded) query
	ifMatch string
	body    []byte
	// local, if set, learns the event id of a successful write before
	// any later frame is processed.
	local *entity
}

type httpRequest struct {
	Host    string            `json:"host"`
	Path    string            `json:"path"`
	Method  string            `json:"method"`
	Params  map[string]string `json:"params"`
	Headers map[string]string `json:"headers"`
}

// reply is an upstream reply: the HTTP status and body.
type reply struct {
	status int
	body   []byte
}

// splitURL splits an absolute http(s) URL into authority and raw path.
func splitURL(u string) (host, path string, err error) {
	rest, ok := strings.CutPrefix(u, "http://")
	if !ok {
		if rest, ok = strings.CutPrefix(u, "https://"); !ok {
			return "", "", fmt.Errorf("client: not an http(s) URL: %q", u)
		}
	}
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return rest, "/", nil
	}
	path = rest[i:]
	if j := strings.IndexAny(path, "?#"); j >= 0 {
		path = path[:j]
	}
	return rest[:i], path, nil
}

// do sends r and returns the HTTP reply; a non-2xx HTTP status is returned
// as a *chorus.Error decoded from the body. Reads that lose their session
// are retried once.
func (c *Client) do(ctx context.Context, r *upstream) (*reply, error) {
	host, path, err := splitURL(r.url)
	if err != nil {
		return nil, err
	}
	hr := httpRequest{Host: host, Path: path, Method: r.method, Params: r.params,
		Headers: map[string]string{"Content-Type": protocol.ContentTypeJSON, "Twilio-Request-Id": "RQ" + protocol.NewID()[2:]}}
	if hr.Params == nil {
		hr.Params = map[string]string{}
	}
	if r.ifMatch != "" {
		hr.Headers["If-Match"] = r.ifMatch
	}
	for attempt := 0; ; attempt++ {
		s, err := c.session(ctx)
		if err != nil {
			return nil, err
		}
		h := &protocol.Header{Method: protocol.MethodMessage, ID: protocol.NewID(), PayloadType: protocol.ContentTypeJSON}
		_ = h.Set("active_grant", "data_sync")
		if err := h.Set("http_request", hr); err != nil {
			return nil, err
		}
		var hook func(*protocol.Frame)
		if r.local != nil {
			hook = func(f *protocol.Frame) {
				var w struct {
					LastEventID int64 `json:"last_event_id"`
				}
				if jsonUnmarshal(f.Payload, &w) == nil {
					r.local.markLocal(w.LastEventID)
				}
			}
		}
		f, err := s.call(ctx, h, r.body, hook)
		if errors.Is(err, ErrDisconnected) && r.method == http.MethodGet && attempt == 0 {
			continue
		}
		if err != nil {
			return nil, err
		}
		st := f.Header.Status
		if st == nil || st.Code < 200 || st.Code > 299 {
			return nil, fmt.Errorf("client: transport failure: %w", statusError(st))
		}
		var hs protocol.Status
		if ok, err := f.Header.Get("http_status", &hs); !ok || err != nil {
			return nil, errors.New("client: upstream reply without http_status")
		}
		if hs.Code < 200 || hs.Code > 299 {
			return nil, decodeError(hs.Code, f.Payload)
		}
		return &reply{status: hs.Code, body: f.Payload}, nil
	}
}

// decodeError turns a Twilio error body into a *chorus.Error.
func decodeError(status int, body []byte) *chorus.Error {
	var b struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	_ = jsonUnmarshal(body, &b)
	if b.Message == "" {
		b.Message = http.StatusText(status)
	}
	return &chorus.Error{Status: status, Code: b.Code, Message: b.Message}
}

// encodeURIComponent escapes s like JavaScript's encodeURIComponent.
func encodeURIComponent(s string) string {
	const keep = "-_.!~*'()"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || strings.IndexByte(keep, ch) >= 0 {
			b.WriteByte(ch)
			continue
		}
		b.WriteByte('%')
		b.WriteByte("0123456789ABCDEF"[ch>>4])
		b.WriteByte("0123456789ABCDEF"[ch&15])
	}
	return b.String()
}

// descriptor is an object as CDS returns it.
type descriptor struct {
	SID         string          `json:"sid"`
	UniqueName  *string         `json:"unique_name"`
	URL         string          `json:"url"`
	Revision    string          `json:"revision"`
	LastEventID *int64          `json:"last_event_id"`
	Data        json.RawMessage `json:"data"`
	Links       struct {
		Items    string `json:"items"`
		Context  string `json:"context"`
		Messages string `json:"messages"`
	} `json:"links"`
	DateUpdated string  `json:"date_updated"`
	DateExpires *string `json:"date_expires"`
}

// wireItem is a list or map item as CDS returns it.
type wireItem struct {
	Index       *int64          `json:"index"`
	Key         *string         `json:"key"`
	URL         string          `json:"url"`
	Revision    string          `json:"revision"`
	LastEventID int64           `json:"last_event_id"`
	Data        json.RawMessage `json:"data"`
	DateCreated string          `json:"date_created"`
	DateUpdated string          `json:"date_updated"`
	DateExpires *string         `json:"date_expires"`
}

func (w *wireItem) item() Item {
	it := Item{URL: w.URL, Revision: w.Revision, LastEventID: w.LastEventID, Data: w.Data,
		DateCreated: parseTime(w.DateCreated), DateUpdated: parseTime(w.DateUpdated), DateExpires: parseTimePtr(w.DateExpires)}
	if w.Index != nil {
		it.Index = *w.Index
	}
	if w.Key != nil {
		it.Key = *w.Key
	}
	return it
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func parseTimePtr(s *string) *time.Time {
	if s == nil || *s == "" {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		return nil
	}
	return &t
}

// marshalData encodes data for a request body; nil becomes {}.
func marshalData(data any) (json.RawMessage, error) {
	if data == nil {
		return json.RawMessage(`{}`), nil
	}
	b, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("client: encode data: %w", err)
	}
	return b, nil
}

// ttlSeconds converts a TTL, rounded up to a second; 0 = never expires.
func ttlSeconds(d time.Duration) (int64, error) {
	if d < 0 {
		return 0, chorus.Errorf(chorus.ErrInvalidTTL, "Invalid TTL: %v is negative (0 removes the expiry)", d)
	}
	return int64((d + time.Second - 1) / time.Second), nil
}
