package httpapi

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// The parameters of REST v1's operations, as the helper libraries send
// them (twilio-node 3.x to 6.x, twilio-python, twilio-go; their
// lib/rest/sync/v1 sources). Names are case-sensitive, as on Twilio.
var (
	pagingParams      = twiliohttp.PagingParams
	itemPageParam     = append([]string{"Order", "From", "Bounds"}, pagingParams...)
	serviceParamNames = []string{"FriendlyName", "WebhookUrl", "ReachabilityWebhooksEnabled", "AclEnabled",
		"ReachabilityDebouncingEnabled", "ReachabilityDebouncingWindow", "WebhooksFromRestEnabled"}
	itemWriteParams = []string{"Data", "Ttl", "ItemTtl", "CollectionTtl"}
	permParams      = []string{"Read", "Write", "Manage"}
)

// objectParams are the parameters of creating (create) or updating an
// object of kind k: no update renames one.
func objectParams(k chorus.Kind, create bool) []string {
	var ps []string
	if create {
		ps = append(ps, "UniqueName")
	}
	switch k {
	case chorus.KindDocument:
		ps = append(ps, "Data", "Ttl")
	case chorus.KindList, chorus.KindMap:
		ps = append(ps, "Ttl", "CollectionTtl")
	default:
		ps = append(ps, "Ttl")
	}
	return ps
}

// value returns the first value of a form field and whether it was sent.
func value(f url.Values, name string) (string, bool) {
	vs, ok := f[name]
	if !ok || len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

// optString returns a string field, nil when absent.
func optString(f url.Values, name string) *string {
	v, ok := value(f, name)
	if !ok {
		return nil
	}
	return &v
}

// optBool parses a boolean field ("true"/"false", case-insensitive; also
// "1"/"0"), nil when absent.
func optBool(f url.Values, name string) (*bool, error) {
	v, ok := value(f, name)
	if !ok {
		return nil, nil
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1":
		b := true
		return &b, nil
	case "false", "0":
		b := false
		return &b, nil
	}
	return nil, chorus.Errorf(chorus.ErrInvalidParameter, "Invalid parameter %s: expected true or false, got %q", name, twiliohttp.Clip(v))
}

// reqBool parses a required boolean field.
func reqBool(f url.Values, name string) (bool, error) {
	b, err := optBool(f, name)
	if err != nil {
		return false, err
	}
	if b == nil {
		return false, chorus.Errorf(chorus.ErrInvalidParameter, "Missing required parameter %s: expected true or false", name)
	}
	return *b, nil
}

// optInt parses an integer field, nil when absent.
func optInt(f url.Values, name string) (*int, error) {
	v, ok := value(f, name)
	if !ok {
		return nil, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return nil, chorus.Wrap(chorus.Errorf(chorus.ErrInvalidParameter, "Invalid parameter %s: expected an integer, got %q", name, twiliohttp.Clip(v)), err)
	}
	return &n, nil
}

// optTTL parses a TTL field: absent is nil; empty is 0, never expires (a
// TTL is "empty or an integer from 0 to 31,536,000": twilio-node sends
// ttl: null as Ttl=, which must clear an expiry, not be ignored);
// otherwise an integer from 0 to chorus.MaxTTL, else 54011.
func optTTL(f url.Values, name string) (*int, error) {
	v, ok := value(f, name)
	if !ok {
		return nil, nil
	}
	if strings.TrimSpace(v) == "" {
		never := 0
		return &never, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 || n > chorus.MaxTTL {
		e := chorus.Errorf(chorus.ErrInvalidTTL, "Invalid %s %q: expected an integer from 0 to %d", name, twiliohttp.Clip(v), chorus.MaxTTL)
		if err != nil {
			return nil, chorus.Wrap(e, err)
		}
		return nil, e
	}
	return &n, nil
}

// ttlPair parses a primary TTL field and its alias; the primary wins when
// both are sent ("If both parameters are provided, this value is
// ignored"), but both must be valid.
func ttlPair(f url.Values, primary, alias string) (*int, error) {
	p, err := optTTL(f, primary)
	if err != nil {
		return nil, err
	}
	a, err := optTTL(f, alias)
	if err != nil {
		return nil, err
	}
	if p != nil {
		return p, nil
	}
	return a, nil
}

// optData parses a Data field: JSON text whose compacted form the engine
// holds to limit bytes (twilio-python's json.dumps adds a space after every
// ',' and ':'); here only text over 4×limit is refused before parsing, as
// the engine does. It returns nil when the field is absent. Too large is
// 54006, not JSON 54008.
func optData(f url.Values, limit int) (json.RawMessage, error) {
	v, ok := value(f, "Data")
	if !ok {
		return nil, nil
	}
	if len(v) > maxDataEscape*limit {
		return nil, chorus.Errorf(chorus.ErrTooLarge, "Request entity too large: Data is %d bytes, the limit is %d", len(v), limit)
	}
	if !json.Valid([]byte(v)) {
		return nil, chorus.Errorf(chorus.ErrInvalidJSON, "Invalid JSON in parameter Data")
	}
	return json.RawMessage(v), nil
}

// reqData is optData for a required Data field; missing is missing.
func reqData(f url.Values, limit int, missing *chorus.Error) (json.RawMessage, error) {
	d, err := optData(f, limit)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, chorus.Errorf(missing, "Missing required parameter Data")
	}
	return d, nil
}

// ifMatch validates the If-Match header, given as its values
// (r.Header.Values). It returns "" when absent or "*" (unconditional),
// else the revision in canonical form. A malformed value is 54003, and so
// are an empty header and a repeated one: a condition the caller sent is
// never dropped (an empty ifMatch from a helper library is a bug in the
// caller, not a request to write unconditionally).
func ifMatch(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", chorus.Errorf(chorus.ErrInvalidIfMatch, "Invalid If-Match header: sent %d times, expected one revision", len(values))
	}
	h := strings.TrimSpace(values[0])
	switch h {
	case "":
		return "", chorus.Errorf(chorus.ErrInvalidIfMatch, "Invalid If-Match header: empty, expected a revision (or no If-Match header)")
	case "*":
		return "", nil
	}
	r, err := chorus.ParseRevision(h)
	if err != nil {
		return "", chorus.Wrap(chorus.Errorf(chorus.ErrInvalidIfMatch, "Invalid If-Match header %q: expected a revision", twiliohttp.Clip(h)), err)
	}
	return chorus.FormatRevision(r), nil
}

// pageParams are the paging query parameters of a list operation.
type pageParams struct {
	size    int    // 0 = default
	page    int    // echoed in meta.page
	token   string // opaque engine token
	filters []kv   // Order/From/Bounds of item listings, in URL order
}

type kv struct{ k, v string }

// parsePage parses PageSize (a positive integer, else 54454; above 1000
// it pages by 1000, as meta.page_size says), Page (>= 0; above 0 only with
// a PageToken) and PageToken.
// The helper libraries send a list's limit as its PageSize when no page
// size is given (twilio-node's Version.readLimits, twilio-python's
// read_limits): list({limit: 5000}) must page, not fail.
func parsePage(f url.Values) (pageParams, error) {
	var p pageParams
	if v, ok := value(f, "PageSize"); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			return p, chorus.Errorf(chorus.ErrInvalidPageSize, "Invalid PageSize %q: expected a positive integer (pages hold at most %d)", twiliohttp.Clip(v), chorus.MaxPageSize)
		}
		p.size = min(n, chorus.MaxPageSize)
	}
	if v, ok := value(f, "Page"); ok && v != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return p, chorus.Errorf(chorus.ErrInvalidParameter, "Invalid Page %q: expected a non-negative integer", twiliohttp.Clip(v))
		}
		p.page = n
	}
	p.token, _ = value(f, "PageToken")
	if p.page > 0 && p.token == "" {
		// Pages are reached by their tokens (meta.next_page_url): the first
		// page answered as page N ignored what was asked for.
		return p, chorus.Errorf(chorus.ErrInvalidParameter, "Page %d needs the PageToken of that page: follow meta.next_page_url", p.page)
	}
	return p, nil
}

// parseItemPage is parsePage plus the item filters, which the engine
// validates (54451, 54452, 54458).
func parseItemPage(f url.Values) (pageParams, error) {
	p, err := parsePage(f)
	if err != nil {
		return p, err
	}
	for _, name := range []string{"From", "Bounds", "Order"} {
		if v, ok := value(f, name); ok {
			p.filters = append(p.filters, kv{name, v})
		}
	}
	return p, nil
}

// setFilters makes the paging URLs repeat the filters the listing pages by
// (engine.Page.Filters): those the request sent, or those of the token it
// sent alone.
func (p *pageParams) setFilters(by engine.ItemFilters) {
	p.filters = p.filters[:0]
	for _, f := range []kv{{"From", by.From}, {"Bounds", by.Bounds}, {"Order", by.Order}} {
		if f.v != "" {
			p.filters = append(p.filters, f)
		}
	}
}

func (p pageParams) filter(name string) string {
	for _, f := range p.filters {
		if f.k == name {
			return f.v
		}
	}
	return ""
}

// parseIndex parses a list item index path segment (54458).
func parseIndex(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, chorus.Errorf(chorus.ErrInvalidIndex, "Invalid List Item index %q: expected a non-negative integer", twiliohttp.Clip(s))
	}
	return n, nil
}
