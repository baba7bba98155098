package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
)

// DefaultSource is Twilio's Sync REST API.
const DefaultSource = "https://sync.twilio.com"

// Source reads a Sync REST API v1 server. Set BaseURL, Username and
// Password (account SID + auth token, or API key SID + secret); the rest
// has defaults. A Source is safe for concurrent use.
type Source struct {
	BaseURL  string // scheme://host[:port], no path
	Username string
	Password string

	HTTPClient *http.Client // default: a client with a 60 s timeout
	// Attempts is how often one request is tried before giving up (429,
	// 5xx, a dropped connection); default 8.
	Attempts int
	// MaxBackoff caps the wait between attempts; default 30 s. A
	// source's Retry-After is waited for in full, up to maxRetryAfter.
	MaxBackoff time.Duration
	Logger     *slog.Logger // default slog.Default()
	// PageSize is the PageSize asked of every listing; default (and
	// Twilio's maximum) 1000.
	PageSize int

	requests atomic.Int64
	retries  atomic.Int64
}

// ErrCredentials is returned (wrapped) when the source refuses the
// credentials.
var ErrCredentials = errors.New("the source refused the credentials")

// SourceError is an answer of the source that is not a success and not
// worth retrying.
type SourceError struct {
	Method, URL string
	Status      int
	Code        int
	Message     string
}

func (e *SourceError) Error() string {
	msg := e.Message
	if e.Code != 0 {
		msg = fmt.Sprintf("%s (code %d)", msg, e.Code)
	}
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.URL, e.Status, msg)
}

func (s *Source) client() *http.Client {
	if s.HTTPClient != nil {
		return s.HTTPClient
	}
	return defaultHTTPClient
}

var defaultHTTPClient = &http.Client{Timeout: 60 * time.Second}

func (s *Source) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Requests returns how many HTTP requests were sent and how many of them
// were retries.
func (s *Source) Requests() (sent, retried int64) { return s.requests.Load(), s.retries.Load() }

// Check verifies that the source answers and accepts the credentials:
// ErrCredentials (wrapped) when it does not.
func (s *Source) Check(ctx context.Context) error {
	var page struct {
		Services []json.RawMessage `json:"services"`
	}
	return s.getJSON(ctx, s.BaseURL+"/v1/Services?PageSize=1", &page)
}

// getJSON GETs u and decodes a 200 answer into v, retrying what may pass.
func (s *Source) getJSON(ctx context.Context, u string, v any) error {
	body, err := s.get(ctx, u)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("transfer: GET %s: decode: %w", redactURL(u), err)
	}
	return nil
}

// maxEmptyPages is how many empty pages in a row list follows to a next
// page (a page may come back empty when its elements were deleted or
// expired meanwhile) before it takes the source for a broken one.
const maxEmptyPages = 10

// maxRetryAfter bounds the wait a source's Retry-After asks for.
const maxRetryAfter = 5 * time.Minute

// maxBody bounds one answer of the source (a page of 1000 documents of
// 16 KiB is 16 MiB).
const maxBody = 64 << 20

func (s *Source) get(ctx context.Context, u string) ([]byte, error) {
	attempts := s.Attempts
	if attempts <= 0 {
		attempts = 8
	}
	maxWait := s.MaxBackoff
	if maxWait <= 0 {
		maxWait = 30 * time.Second
	}
	backoff := 250 * time.Millisecond
	var last error
	for attempt := 1; ; attempt++ {
		body, retryAfter, err := s.try(ctx, u)
		if err == nil {
			return body, nil
		}
		var se *SourceError
		if errors.As(err, &se) && !retryable(se.Status) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		last = err
		if attempt >= attempts {
			return nil, fmt.Errorf("transfer: gave up after %d attempts: %w", attempt, last)
		}
		wait := min(backoff+rand.N(backoff/2+1), maxWait)
		if retryAfter > 0 {
			// The source's own answer: waiting less only spends an
			// attempt on another 429.
			wait = min(retryAfter, maxRetryAfter)
		}
		backoff = min(backoff*2, maxWait)
		s.retries.Add(1)
		s.logger().Warn("source request failed; retrying", "url", redactURL(u), "err", err, "attempt", attempt, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func retryable(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

// try sends one GET. retryAfter is the source's Retry-After of a 429/503.
func (s *Source) try(ctx context.Context, u string) (body []byte, retryAfter time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, &SourceError{Method: "GET", URL: redactURL(u), Message: err.Error()}
	}
	req.SetBasicAuth(s.Username, s.Password)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "chorus-import")
	s.requests.Add(1)
	res, err := s.client().Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", redactURL(u), err)
	}
	defer res.Body.Close()
	body, err = io.ReadAll(io.LimitReader(res.Body, maxBody+1))
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: read body: %w", redactURL(u), err)
	}
	if len(body) > maxBody {
		return nil, 0, &SourceError{Method: "GET", URL: redactURL(u), Status: res.StatusCode, Message: "answer larger than 64 MiB"}
	}
	if res.StatusCode == http.StatusOK {
		return body, 0, nil
	}
	se := &SourceError{Method: "GET", URL: redactURL(u), Status: res.StatusCode, Message: http.StatusText(res.StatusCode)}
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		se.Code, se.Message = e.Code, e.Message
	}
	if res.StatusCode == http.StatusUnauthorized {
		return nil, 0, fmt.Errorf("%w: %w", ErrCredentials, se)
	}
	return nil, parseRetryAfter(res.Header.Get("Retry-After")), se
}

// parseRetryAfter reads delta-seconds or an HTTP date; 0 when absent.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// redactURL drops user info from u for messages.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
}

// pageMeta is the paging envelope of REST v1 listings.
type pageMeta struct {
	NextPageURL *string `json:"next_page_url"`
}

// list GETs every page of the collection at path (relative to BaseURL,
// with its query) and calls fn with each element of the array key.
func (s *Source) list(ctx context.Context, path, key string, fn func(json.RawMessage) error) error {
	return s.listPages(ctx, path, key, func(elems []json.RawMessage) error {
		for _, e := range elems {
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
}

// listPages GETs every page of the collection at path (relative to
// BaseURL, with its query) and calls fn with each page's elements of the
// array key (also with none, for an empty page); fn must not keep elems.
// next_page_url's path and query are followed on the source's own origin,
// so that the credentials never go elsewhere.
func (s *Source) listPages(ctx context.Context, path, key string, fn func(elems []json.RawMessage) error) error {
	base, err := url.Parse(s.BaseURL)
	if err != nil {
		return fmt.Errorf("transfer: source URL: %w", err)
	}
	u := s.BaseURL + path
	seen := map[string]bool{}
	empty := 0 // pages in a row without elements
	for u != "" {
		if seen[u] {
			return fmt.Errorf("transfer: the source's next_page_url %s repeats a page", redactURL(u))
		}
		seen[u] = true
		var page map[string]json.RawMessage
		if err := s.getJSON(ctx, u, &page); err != nil {
			return err
		}
		var elems []json.RawMessage
		raw, ok := page[key]
		if !ok {
			// Not an empty collection: taking it for one would delete the
			// target's copies of what the source still has.
			return fmt.Errorf("transfer: GET %s: the answer has no %q list", redactURL(u), key)
		}
		if err := json.Unmarshal(raw, &elems); err != nil {
			return fmt.Errorf("transfer: GET %s: %s: %w", redactURL(u), key, err)
		}
		if err := fn(elems); err != nil {
			return err
		}
		var meta pageMeta
		if raw, ok := page["meta"]; ok {
			if err := json.Unmarshal(raw, &meta); err != nil {
				return fmt.Errorf("transfer: GET %s: meta: %w", redactURL(u), err)
			}
		}
		if len(elems) == 0 {
			empty++
		} else {
			empty = 0
		}
		if meta.NextPageURL != nil && *meta.NextPageURL != "" && empty > maxEmptyPages {
			return fmt.Errorf("transfer: GET %s: %d empty pages in a row that each name a next page", redactURL(u), empty)
		}
		u = ""
		if meta.NextPageURL != nil && *meta.NextPageURL != "" {
			next, err := url.Parse(*meta.NextPageURL)
			if err != nil {
				return fmt.Errorf("transfer: next_page_url: %w", err)
			}
			// Only its path and query are followed, on the source's own
			// origin: a source names itself by another origin when it sits
			// behind a proxy (Chorus's --public-url) or leaves out a default
			// port (Twilio), and the credentials go nowhere but BaseURL.
			u = base.ResolveReference(&url.URL{Path: next.Path, RawPath: next.RawPath, RawQuery: next.RawQuery}).String()
		}
	}
	return nil
}

// Wire types: the fields of REST v1 resources that the import keeps.

type serviceWire struct {
	SID                           string  `json:"sid"`
	AccountSID                    string  `json:"account_sid"`
	UniqueName                    *string `json:"unique_name"`
	FriendlyName                  *string `json:"friendly_name"`
	DateCreated                   string  `json:"date_created"`
	DateUpdated                   string  `json:"date_updated"`
	WebhookURL                    *string `json:"webhook_url"`
	WebhooksFromRestEnabled       bool    `json:"webhooks_from_rest_enabled"`
	ReachabilityWebhooksEnabled   bool    `json:"reachability_webhooks_enabled"`
	ACLEnabled                    bool    `json:"acl_enabled"`
	ReachabilityDebouncingEnabled bool    `json:"reachability_debouncing_enabled"`
	ReachabilityDebouncingWindow  int     `json:"reachability_debouncing_window"`
}

type objectWire struct {
	SID         string          `json:"sid"`
	AccountSID  string          `json:"account_sid"`
	ServiceSID  string          `json:"service_sid"`
	UniqueName  *string         `json:"unique_name"`
	Revision    string          `json:"revision"`
	Data        json.RawMessage `json:"data"`
	DateExpires *string         `json:"date_expires"`
	DateCreated string          `json:"date_created"`
	DateUpdated string          `json:"date_updated"`
	CreatedBy   string          `json:"created_by"`
}

type itemWire struct {
	Index       *int64          `json:"index"`
	Key         *string         `json:"key"`
	Revision    string          `json:"revision"`
	Data        json.RawMessage `json:"data"`
	DateExpires *string         `json:"date_expires"`
	DateCreated string          `json:"date_created"`
	DateUpdated string          `json:"date_updated"`
	CreatedBy   string          `json:"created_by"`
}

type permissionWire struct {
	Identity string `json:"identity"`
	Read     bool   `json:"read"`
	Write    bool   `json:"write"`
	Manage   bool   `json:"manage"`
}

func parseTime(field, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q: %w", field, s, err)
	}
	return t.UTC(), nil
}

func parseTimePtr(field string, s *string) (*time.Time, error) {
	if s == nil || *s == "" {
		return nil, nil
	}
	t, err := parseTime(field, *s)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

func str(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// revision parses a revision the source shows (hex in Twilio and Chorus);
// anything else counts as 0.
func revision(s string) int64 {
	r, err := chorus.ParseRevision(s)
	if err != nil {
		return 0
	}
	return r
}

// compactJSON validates data and removes insignificant white space,
// keeping the order of object keys.
func compactJSON(raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, err
	}
	return json.RawMessage(b.Bytes()), nil
}

func (w *serviceWire) service() (*chorus.Service, error) {
	if !chorus.IsSID(chorus.PrefixService, w.SID) || !chorus.IsSID(chorus.PrefixAccount, w.AccountSID) {
		return nil, fmt.Errorf("service %q of account %q: not a service SID", w.SID, w.AccountSID)
	}
	created, err := parseTime("date_created", w.DateCreated)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", w.SID, err)
	}
	updated, err := parseTime("date_updated", w.DateUpdated)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", w.SID, err)
	}
	return &chorus.Service{
		SID: w.SID, AccountSID: w.AccountSID, UniqueName: str(w.UniqueName), FriendlyName: str(w.FriendlyName),
		WebhookURL: str(w.WebhookURL), WebhooksFromRestEnabled: w.WebhooksFromRestEnabled,
		ReachabilityWebhooksEnabled: w.ReachabilityWebhooksEnabled, ACLEnabled: w.ACLEnabled,
		ReachabilityDebouncingEnabled: w.ReachabilityDebouncingEnabled,
		ReachabilityDebouncingWindow:  w.ReachabilityDebouncingWindow,
		DateCreated:                   created, DateUpdated: updated,
	}, nil
}

func (w *objectWire) object(k chorus.Kind, svc *chorus.Service) (*chorus.Object, error) {
	if !chorus.IsSID(k.Prefix(), w.SID) {
		return nil, fmt.Errorf("%s %q: not a %s SID", k, w.SID, k)
	}
	o := &chorus.Object{
		Kind: k, SID: w.SID, AccountSID: svc.AccountSID, ServiceSID: svc.SID, UniqueName: str(w.UniqueName),
		Revision: revision(w.Revision), CreatedBy: w.CreatedBy,
	}
	var err error
	if o.DateCreated, err = parseTime("date_created", w.DateCreated); err != nil {
		return nil, fmt.Errorf("%s %s: %w", k, w.SID, err)
	}
	if o.DateUpdated, err = parseTime("date_updated", w.DateUpdated); err != nil {
		return nil, fmt.Errorf("%s %s: %w", k, w.SID, err)
	}
	if o.DateExpires, err = parseTimePtr("date_expires", w.DateExpires); err != nil {
		return nil, fmt.Errorf("%s %s: %w", k, w.SID, err)
	}
	if k == chorus.KindDocument {
		if o.Data, err = compactJSON(w.Data); err != nil {
			return nil, fmt.Errorf("%s %s: data: %w", k, w.SID, err)
		}
		if o.Data == nil {
			o.Data = json.RawMessage("{}")
		}
	}
	return o, nil
}

func (w *itemWire) item(obj *chorus.Object) (*chorus.Item, error) {
	it := &chorus.Item{Kind: obj.Kind, ObjectSID: obj.SID, Revision: revision(w.Revision), CreatedBy: w.CreatedBy}
	switch {
	case obj.Kind == chorus.KindList && w.Index != nil && *w.Index >= 0:
		it.Index = *w.Index
	case obj.Kind == chorus.KindMap && w.Key != nil && *w.Key != "":
		it.Key = *w.Key
	default:
		return nil, fmt.Errorf("item of %s %s without a valid index or key", obj.Kind, obj.SID)
	}
	var err error
	if it.DateCreated, err = parseTime("date_created", w.DateCreated); err != nil {
		return nil, fmt.Errorf("item of %s: %w", obj.SID, err)
	}
	if it.DateUpdated, err = parseTime("date_updated", w.DateUpdated); err != nil {
		return nil, fmt.Errorf("item of %s: %w", obj.SID, err)
	}
	if it.DateExpires, err = parseTimePtr("date_expires", w.DateExpires); err != nil {
		return nil, fmt.Errorf("item of %s: %w", obj.SID, err)
	}
	if it.Data, err = compactJSON(w.Data); err != nil {
		return nil, fmt.Errorf("item of %s: data: %w", obj.SID, err)
	}
	if it.Data == nil {
		it.Data = json.RawMessage("{}")
	}
	return it, nil
}

// Services returns the account's services, oldest first.
func (s *Source) Services(ctx context.Context) ([]*chorus.Service, error) {
	var out []*chorus.Service
	err := s.list(ctx, "/v1/Services"+s.pageQuery(), "services", func(raw json.RawMessage) error {
		var w serviceWire
		if err := json.Unmarshal(raw, &w); err != nil {
			return fmt.Errorf("transfer: service: %w", err)
		}
		svc, err := w.service()
		if err != nil {
			return fmt.Errorf("transfer: %w", err)
		}
		out = append(out, svc)
		return nil
	})
	return out, err
}

// pageQuery is the query of a listing's first page.
func (s *Source) pageQuery() string {
	n := s.PageSize
	if n <= 0 {
		n = 1000
	}
	return "?PageSize=" + strconv.Itoa(n)
}

func objectsPath(svc *chorus.Service, k chorus.Kind) string {
	return "/v1/Services/" + url.PathEscape(svc.SID) + "/" + k.Collection()
}

// Objects calls fn with the service's objects of kind k as each page
// arrives. Twilio may still list an object that expired and was not
// purged yet; it is left out.
func (s *Source) Objects(ctx context.Context, svc *chorus.Service, k chorus.Kind, fn func(*chorus.Object) error) error {
	now := time.Now()
	return s.list(ctx, objectsPath(svc, k)+s.pageQuery(), strings.ToLower(k.Collection()), func(raw json.RawMessage) error {
		var w objectWire
		if err := json.Unmarshal(raw, &w); err != nil {
			return fmt.Errorf("transfer: %s: %w", k, err)
		}
		o, err := w.object(k, svc)
		if err != nil {
			return fmt.Errorf("transfer: %w", err)
		}
		if o.Expired(now) {
			return nil
		}
		return fn(o)
	})
}

// childrenPath is the first page of an object's Items or Permissions.
func (s *Source) childrenPath(obj *chorus.Object, children string) string {
	return objectsPath(&chorus.Service{SID: obj.ServiceSID}, obj.Kind) + "/" + url.PathEscape(obj.SID) + "/" + children + s.pageQuery()
}

// Items calls fn with a list's items in index order or a map's in key
// order (the source's order), one page at a time, leaving out those that
// expired (see Objects): an object of any size is never held whole. A page
// that only held expired items is not passed on. fn may keep the page; it
// stops at fn's first error and returns it.
func (s *Source) Items(ctx context.Context, obj *chorus.Object, fn func([]*chorus.Item) error) error {
	now := time.Now()
	path := s.childrenPath(obj, "Items")
	return s.listPages(ctx, path, "items", func(elems []json.RawMessage) error {
		page := make([]*chorus.Item, 0, len(elems))
		for _, raw := range elems {
			var w itemWire
			if err := json.Unmarshal(raw, &w); err != nil {
				return fmt.Errorf("transfer: item of %s: %w", obj.SID, err)
			}
			it, err := w.item(obj)
			if err != nil {
				return fmt.Errorf("transfer: %w", err)
			}
			if !it.Expired(now) {
				page = append(page, it)
			}
		}
		if len(page) == 0 {
			return nil
		}
		return fn(page)
	})
}

// Permissions returns a document's, list's or map's permissions.
func (s *Source) Permissions(ctx context.Context, obj *chorus.Object) ([]*chorus.Permission, error) {
	var out []*chorus.Permission
	path := s.childrenPath(obj, "Permissions")
	err := s.list(ctx, path, "permissions", func(raw json.RawMessage) error {
		var w permissionWire
		if err := json.Unmarshal(raw, &w); err != nil {
			return fmt.Errorf("transfer: permission of %s: %w", obj.SID, err)
		}
		if w.Identity == "" {
			return fmt.Errorf("transfer: permission of %s without identity", obj.SID)
		}
		out = append(out, &chorus.Permission{ObjectSID: obj.SID, Identity: w.Identity, Read: w.Read, Write: w.Write, Manage: w.Manage})
		return nil
	})
	return out, err
}
