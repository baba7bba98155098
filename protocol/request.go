package protocol

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// Init is the view of an init frame.
type Init struct {
	Token string
	// ContinuationToken is "" when null or absent. It is opaque; never
	// reject an init because of it.
	ContinuationToken string
	Capabilities      []string // offered capabilities; nil if absent
	// Registrations and Metadata (free-form client description) are nil
	// when absent or null. They share memory with the header: do not
	// modify them.
	Registrations json.RawMessage
	Metadata      json.RawMessage
}

// Registration is one entry of init's registrations.
type Registration struct {
	Product                     string   `json:"product"`
	Type                        string   `json:"type"`
	NotificationProtocolVersion int      `json:"notification_protocol_version"`
	MessageTypes                []string `json:"message_types"`
}

// ParseInit reads the init fields of h. A missing or non-string token is
// [ErrInvalidField]; the optional fields are read leniently: a value of
// the wrong type counts as absent.
func ParseInit(h *Header) (Init, error) {
	var in Init
	tok, err := tokenField(h)
	if err != nil {
		return Init{}, err
	}
	in.Token = tok
	if _, err := h.Get("continuation_token", &in.ContinuationToken); err != nil {
		in.ContinuationToken = ""
	}
	if _, err := h.Get("capabilities", &in.Capabilities); err != nil {
		in.Capabilities = nil
	}
	in.Registrations = nonNull(h.Raw("registrations"))
	in.Metadata = nonNull(h.Raw("metadata"))
	return in, nil
}

// ParseRegistrations decodes in.Registrations; nil if absent.
func (in *Init) ParseRegistrations() ([]Registration, error) {
	if in.Registrations == nil {
		return nil, nil
	}
	var regs []Registration
	if err := json.Unmarshal(in.Registrations, &regs); err != nil {
		return nil, fmt.Errorf("%w: registrations: %w", ErrInvalidField, err)
	}
	return regs, nil
}

// Update is the view of an update frame.
type Update struct {
	Token string
}

// ParseUpdate reads the update fields of h. A missing or non-string token
// is [ErrInvalidField].
func ParseUpdate(h *Header) (Update, error) {
	tok, err := tokenField(h)
	if err != nil {
		return Update{}, err
	}
	return Update{Token: tok}, nil
}

func tokenField(h *Header) (string, error) {
	var tok string
	if _, err := h.Get("token", &tok); err != nil {
		return "", fmt.Errorf("%w: token is not a string", ErrInvalidField)
	}
	if tok == "" {
		return "", fmt.Errorf("%w: missing token", ErrInvalidField)
	}
	return tok, nil
}

func nonNull(raw json.RawMessage) json.RawMessage {
	if string(raw) == "null" {
		return nil
	}
	return raw
}

// Message is the view of a message frame: an HTTP request tunnelled to
// the Sync REST API. The body is the frame payload (not JSON for DELETE).
type Message struct {
	ActiveGrant string // product id, normally "data_sync"; "" if absent
	Request     HTTPRequest
}

// HTTPRequest is the http_request object of a message frame. Path and
// Params are raw, still percent-encoded, as the SDK built them; see
// [HTTPRequest.PathSegments] and [HTTPRequest.Query] for decoded access.
type HTTPRequest struct {
	Host   string // URL authority; may be ignored
	Path   string // raw path: split on '/' before percent-decoding
	Method string // GET, POST, PUT or DELETE, as sent
	// Params is the raw query: percent-encoded keys and values. A JSON
	// string value becomes a one-element slice. Never nil.
	Params map[string][]string
	// Headers as sent; look them up case-insensitively with Header.
	// Never nil.
	Headers map[string]string
}

// ParseMessage reads the active_grant and http_request fields of h. A
// missing http_request, an empty method or path, or a field of the wrong
// type is [ErrInvalidField].
func ParseMessage(h *Header) (Message, error) {
	var m Message
	if _, err := h.Get("active_grant", &m.ActiveGrant); err != nil {
		return Message{}, fmt.Errorf("%w: active_grant is not a string", ErrInvalidField)
	}
	raw := h.Raw("http_request")
	if len(raw) == 0 || raw[0] != '{' {
		return Message{}, fmt.Errorf("%w: missing http_request", ErrInvalidField)
	}
	var w struct {
		Host    *string                    `json:"host"`
		Path    *string                    `json:"path"`
		Method  *string                    `json:"method"`
		Params  map[string]json.RawMessage `json:"params"`
		Headers map[string]string          `json:"headers"`
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return Message{}, fmt.Errorf("%w: http_request: %w", ErrInvalidField, err)
	}
	r := &m.Request
	if w.Method == nil || *w.Method == "" {
		return Message{}, fmt.Errorf("%w: missing http_request.method", ErrInvalidField)
	}
	if w.Path == nil || *w.Path == "" {
		return Message{}, fmt.Errorf("%w: missing http_request.path", ErrInvalidField)
	}
	r.Method, r.Path = *w.Method, *w.Path
	if w.Host != nil {
		r.Host = *w.Host
	}
	r.Params = make(map[string][]string, len(w.Params))
	for k, v := range w.Params {
		switch v[0] {
		case 'n': // null: no value
		case '"':
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return Message{}, fmt.Errorf("%w: http_request.params[%q]: %w", ErrInvalidField, k, err)
			}
			r.Params[k] = []string{s}
		case '[':
			var ss []string
			if err := json.Unmarshal(v, &ss); err != nil {
				return Message{}, fmt.Errorf("%w: http_request.params[%q]: %w", ErrInvalidField, k, err)
			}
			r.Params[k] = ss
		default:
			return Message{}, fmt.Errorf("%w: http_request.params[%q] is not a string or array of strings", ErrInvalidField, k)
		}
	}
	r.Headers = w.Headers
	if r.Headers == nil {
		r.Headers = make(map[string]string)
	}
	return m, nil
}

// Header returns the value of the request header name, matched
// case-insensitively, or "".
func (r *HTTPRequest) Header(name string) string {
	if v, ok := r.Headers[name]; ok {
		return v
	}
	for k, v := range r.Headers {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// Query returns Params with keys and values percent-decoded. '+' stays
// '+' (the SDK encodes spaces as %20).
func (r *HTTPRequest) Query() (url.Values, error) {
	q := make(url.Values, len(r.Params))
	for k, vs := range r.Params {
		dk, err := url.PathUnescape(k)
		if err != nil {
			return nil, fmt.Errorf("%w: http_request.params key %q: %w", ErrInvalidField, k, err)
		}
		for _, v := range vs {
			dv, err := url.PathUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("%w: http_request.params[%q]: %w", ErrInvalidField, k, err)
			}
			q[dk] = append(q[dk], dv)
		}
	}
	return q, nil
}

// PathSegments splits the raw path on '/' and percent-decodes each
// segment, so "%2F" inside a key survives: "/v3/Maps/MP1/Items/k%2F1"
// gives ["v3" "Maps" "MP1" "Items" "k/1"]. A leading '/' is dropped.
func (r *HTTPRequest) PathSegments() ([]string, error) {
	segs := strings.Split(strings.TrimPrefix(r.Path, "/"), "/")
	for i, s := range segs {
		d, err := url.PathUnescape(s)
		if err != nil {
			return nil, fmt.Errorf("%w: http_request.path segment %q: %w", ErrInvalidField, s, err)
		}
		segs[i] = d
	}
	return segs, nil
}
