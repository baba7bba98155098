package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
	"unique"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/protocol"
)

// request is one upstream (tunnelled HTTP) request.
type request struct {
	method  string
	segs    []string // decoded path segments
	query   url.Values
	ifMatch string
	body    []byte
	base    string // public URL base for this reply
}

// response is an HTTP status and a JSON body (nil = empty).
type response struct {
	status int
	body   []byte
}

func jsonResponse(status int, v any) response {
	b, err := json.Marshal(v)
	if err != nil {
		return errorResponse(chorus.Wrap(chorus.ErrInternal, err))
	}
	return response{status, b}
}

// errorResponse renders a Twilio error body.
func errorResponse(e *chorus.Error) response {
	b := []byte(`{"status":`)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"code":`...)
	b = strconv.AppendInt(b, int64(e.Code), 10)
	b = append(b, `,"message":`...)
	b = protocol.AppendJSONString(b, e.Message)
	b = append(b, `,"more_info":`...)
	b = protocol.AppendJSONString(b, e.MoreInfo())
	b = append(b, '}')
	return response{e.Status, b}
}

// maxHost bounds the host a request names (a DNS name is at most 253
// bytes; a port and brackets add a few).
const maxHost = 261

// validHost reports whether a request's host may become the base of the
// URLs in its answers and in its session's events: a host name (also an
// internationalized one, as UTF-8), an IPv4 or a bracketed IPv6 address
// (with a zone), with an optional port (the SDK sends its cdsUri's
// host). Each distinct base costs every event of a topic one more
// encoding, so a client must not make it long or arbitrary.
func validHost(h string) bool {
	if h == "" || len(h) > maxHost {
		return false
	}
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c >= 0x80: // an IDN as UTF-8
		case c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']' || c == '%': // % for an IPv6 zone
		default:
			return false
		}
	}
	return true
}

// internBase returns the canonical copy of a public base URL. The hub
// compares the base of every subscriber to pick the frame to send, and
// equal strings that share their bytes compare at once.
func internBase(base string) string { return unique.Make(base).Value() }

// handleMessage answers one upstream request.
func (c *conn) handleMessage(ctx context.Context, f *protocol.Frame) error {
	if !c.isInitialized() {
		return errNotInitialized
	}
	id := f.Header.ID
	if c.refusedWhileClosing(id) {
		return nil
	}
	m, err := protocol.ParseMessage(&f.Header)
	if err != nil {
		c.sendHTTP(id, errorResponse(chorus.Errorf(chorus.ErrInvalidParameter, "Invalid request: %v", err)))
		return nil
	}
	hr := &m.Request
	base := c.g.cfg.PublicURL
	if base == "" {
		host := hr.Host
		if host == "" {
			host = "localhost"
		}
		if !validHost(host) {
			c.sendHTTP(id, errorResponse(chorus.Errorf(chorus.ErrInvalidParameter, "Invalid host: want a host name or address with an optional port")))
			return nil
		}
		base = "http://" + host
	}
	base = strings.TrimSuffix(base, "/")
	if c.base == "" {
		c.base = internBase(base)
	}
	r := &request{method: strings.ToUpper(hr.Method), base: base, ifMatch: hr.Header("If-Match")}
	if r.segs, err = hr.PathSegments(); err != nil {
		c.sendHTTP(id, errorResponse(chorus.Errorf(chorus.ErrNotFound, "Invalid path")))
		return nil
	}
	if r.query, err = hr.Query(); err != nil {
		c.sendHTTP(id, errorResponse(chorus.Errorf(chorus.ErrInvalidParameter, "Invalid query parameter")))
		return nil
	}
	if r.method != http.MethodDelete && r.method != http.MethodGet {
		r.body = f.Payload
	}
	if isEMSToken(r.segs) { // twilio-sync 0.5–0.7, see ems.go
		c.sendHTTP(id, c.g.emsToken(ctx, r.method, f.Payload, c))
		return nil
	}
	if len(r.segs) == 2 && r.segs[0] == "v4" && r.segs[1] == "Subscriptions" {
		c.handleSubscriptions(ctx, id, r)
		return nil
	}
	write := r.method != http.MethodGet && !isInsights(r.segs)
	if write {
		// Park events until the reply is queued: the writer learns of its
		// write from the reply first (isLocal: true).
		c.q.hold()
	}
	resp := c.route(ctx, r)
	frame := protocol.AppendHTTPReply(nil, id, protocol.Status{Code: resp.status, Status: http.StatusText(resp.status)}, resp.body)
	if write {
		if !c.q.release(frame) {
			c.slow()
		}
	} else {
		c.send(frame)
	}
	return nil
}

func (c *conn) sendHTTP(id string, resp response) {
	c.send(protocol.AppendHTTPReply(nil, id, protocol.Status{Code: resp.status, Status: http.StatusText(resp.status)}, resp.body))
}

// errResponse renders err for the client, logging a server-side one once:
// 5xx errors become 20500, but for an unavailable dependency (20503).
func (c *conn) errResponse(r *request, err error) response {
	e := chorus.AsError(err)
	switch {
	case e.Code == chorus.ErrUnavailable.Code:
		// A dependency down (the store, the bus): the client may retry,
		// and REST says the same. Its message names no cause.
		c.logger().Warn("gateway: upstream request", slog.String(logMethod, r.method),
			slog.String(logPath, strings.Join(r.segs, "/")), slog.Any(logError, err))
	case e.Status >= 500:
		c.logger().Error("gateway: upstream request", slog.String(logMethod, r.method),
			slog.String(logPath, strings.Join(r.segs, "/")), slog.Any(logError, err))
		return errorResponse(chorus.ErrInternal)
	}
	return errorResponse(e)
}

var kindByCollection = map[string]chorus.Kind{
	"Documents": chorus.KindDocument,
	"Lists":     chorus.KindList,
	"Maps":      chorus.KindMap,
	"Streams":   chorus.KindStream,
}

// route dispatches a CDS request by path.
func (c *conn) route(ctx context.Context, r *request) response {
	segs := r.segs
	if len(segs) < 2 || segs[0] != "v3" {
		return errorResponse(chorus.ErrNotFound)
	}
	segs = segs[1:]
	if segs[0] == "Services" {
		if len(segs) < 3 {
			return errorResponse(chorus.ErrNotFound)
		}
		if segs[1] != c.svc.SID && (c.svc.UniqueName == "" || segs[1] != c.svc.UniqueName) {
			return errorResponse(chorus.Errorf(chorus.ErrForbidden, "Access forbidden: the token is for another service"))
		}
		segs = segs[2:]
	}
	if segs[0] == "Insights" {
		return c.insights(ctx, r, segs) // live and instant queries over Maps
	}
	k, ok := kindByCollection[segs[0]]
	if !ok {
		return errorResponse(chorus.ErrNotFound)
	}
	if len(segs) == 1 {
		if r.method != http.MethodPost {
			return errorResponse(chorus.ErrMethod)
		}
		return c.createObject(ctx, r, k)
	}
	id := segs[1]
	if id == "" {
		return errorResponse(chorus.ErrNotFound)
	}
	switch {
	case len(segs) == 2:
		return c.object(ctx, r, k, id)
	case segs[2] == "Items" && (k == chorus.KindList || k == chorus.KindMap):
		if len(segs) == 3 {
			return c.items(ctx, r, k, id)
		}
		if len(segs) == 4 {
			return c.item(ctx, r, k, id, segs[3])
		}
	case segs[2] == "Context" && k == chorus.KindList && len(segs) == 3:
		return c.context(ctx, r, id)
	case segs[2] == "Messages" && k == chorus.KindStream && len(segs) == 3:
		if r.method != http.MethodPost {
			return errorResponse(chorus.ErrMethod)
		}
		return c.publish(ctx, r, id)
	}
	return errorResponse(chorus.ErrNotFound)
}

// body is a CDS request body. Raw fields distinguish absent (nil) from
// null.
type body struct {
	UniqueName json.RawMessage `json:"unique_name"`
	Data       json.RawMessage `json:"data"`
	Context    json.RawMessage `json:"context"`
	TTL        json.RawMessage `json:"ttl"`
	Key        json.RawMessage `json:"key"`
}

func parseBody(r *request) (*body, *int, *chorus.Error) {
	b := new(body)
	if len(bytes.TrimSpace(r.body)) > 0 {
		if err := json.Unmarshal(r.body, b); err != nil {
			return nil, nil, chorus.Wrap(chorus.ErrInvalidJSON, err)
		}
	}
	var ttl *int
	if len(b.TTL) > 0 && string(b.TTL) != "null" {
		var n json.Number
		if err := json.Unmarshal(b.TTL, &n); err != nil {
			return nil, nil, chorus.Wrap(chorus.ErrInvalidTTL, err)
		}
		v, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || v < 0 || v > chorus.MaxTTL {
			return nil, nil, chorus.ErrInvalidTTL
		}
		t := int(v)
		ttl = &t
	}
	return b, ttl, nil
}

func (b *body) uniqueName() (string, *chorus.Error) {
	if len(b.UniqueName) == 0 || string(b.UniqueName) == "null" {
		return "", nil
	}
	s, err := decodeText(b.UniqueName)
	if err != nil {
		return "", chorus.Wrap(chorus.ErrUniqueNameInvalid, err)
	}
	return s, nil
}

// key is the item key of a Map item create; ok is false when absent or
// null.
func (b *body) key() (key string, ok bool, e *chorus.Error) {
	if len(b.Key) == 0 || string(b.Key) == "null" {
		return "", false, nil
	}
	s, err := decodeText(b.Key)
	if err != nil {
		return "", false, chorus.Wrap(chorus.ErrMapItemKey, err)
	}
	return s, true, nil
}

// errReplacedText refuses a JSON string that decoding would change.
var errReplacedText = errors.New("a lone UTF-16 surrogate or invalid UTF-8: the text cannot be stored as sent")

// decodeText decodes the JSON string raw, refusing one that encoding/json
// would silently change: it reads a lone surrogate escape (\ud800) or
// invalid UTF-8 as U+FFFD, which would store another name or key than the
// client sent.
func decodeText(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	if !utf8.Valid(raw) || loneSurrogate(raw) {
		return "", errReplacedText
	}
	return s, nil
}

// loneSurrogate reports a \uXXXX escape of a UTF-16 surrogate that is not
// half of a pair in the JSON string raw (which json.Unmarshal accepted).
func loneSurrogate(raw []byte) bool {
	unit := func(i int) (rune, bool) { // the escape at raw[i:], if any
		if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
			return 0, false
		}
		n, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 16)
		return rune(n), err == nil
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		r, ok := unit(i)
		if !ok {
			i++ // another escape: skip its character
			continue
		}
		switch {
		case utf16.IsSurrogate(r) && r < 0xDC00: // high: a low must follow
			if lo, ok := unit(i + 6); !ok || lo < 0xDC00 || lo > 0xDFFF {
				return true
			}
			i += 11
		case utf16.IsSurrogate(r): // a low without a high
			return true
		default:
			i += 5
		}
	}
	return false
}

// tooLarge checks the data size limits.
func tooLarge(data json.RawMessage, limit int) *chorus.Error {
	if len(data) > limit {
		return chorus.Errorf(chorus.ErrTooLarge, "Request entity too large: data exceeds %d bytes", limit)
	}
	return nil
}

func (c *conn) createObject(ctx context.Context, r *request, k chorus.Kind) response {
	b, ttl, e := parseBody(r)
	if e != nil {
		return errorResponse(e)
	}
	name, e := b.uniqueName()
	if e != nil {
		return errorResponse(e)
	}
	p := engine.CreateObject{UniqueName: name, TTL: ttl}
	switch k {
	case chorus.KindDocument:
		p.Data = b.Data
	case chorus.KindList:
		p.Data = b.Context
	}
	if string(bytes.TrimSpace(p.Data)) == "null" {
		// twilio-sync 0.5–0.7 send "data": null / "context": null for
		// "none given" on create.
		p.Data = nil
	}
	if e := tooLarge(p.Data, chorus.MaxDataBytes); e != nil {
		return errorResponse(e)
	}
	obj, err := c.g.cfg.Engine.CreateObject(ctx, c.actor, c.svc, k, p)
	if err != nil {
		return c.errResponse(r, err)
	}
	return response{http.StatusCreated, appendObject(nil, obj, r.base, nil)}
}

func (c *conn) object(ctx context.Context, r *request, k chorus.Kind, id string) response {
	eng := c.g.cfg.Engine
	switch r.method {
	case http.MethodGet:
		withItems := k == chorus.KindMap && hasValue(r.query["Include"], "items")
		fetch := eng.FetchObject
		if withItems {
			fetch = eng.Object // the map comes with its items: read it in a transaction, as before
		}
		obj, err := fetch(ctx, c.actor, c.svc, k, id)
		if err != nil {
			return c.errResponse(r, err)
		}
		var items []*chorus.Item
		if withItems {
			page, err := eng.Items(ctx, c.actor, c.svc, k, obj.SID, engine.ItemPageRequest{PageSize: chorus.MaxPageSize, HideExpired: true})
			if err != nil {
				return c.errResponse(r, err)
			}
			items = includedItems(page.Items, c.g.cfg.SendQueueBytes)
			if items == nil {
				items = []*chorus.Item{}
			}
		}
		return response{http.StatusOK, appendObject(nil, obj, r.base, items)}
	case http.MethodPost:
		b, ttl, e := parseBody(r)
		if e != nil {
			return errorResponse(e)
		}
		p := engine.UpdateObject{TTL: ttl, IfMatch: r.ifMatch}
		switch k {
		case chorus.KindDocument:
			p.Data = b.Data
		case chorus.KindList:
			p.Data = b.Context
		}
		if e := tooLarge(p.Data, chorus.MaxDataBytes); e != nil {
			return errorResponse(e)
		}
		obj, err := eng.UpdateObject(ctx, c.actor, c.svc, k, id, p)
		if err != nil {
			return c.errResponse(r, err)
		}
		return response{http.StatusOK, appendObject(nil, obj, r.base, nil)}
	case http.MethodDelete:
		obj, err := eng.DeleteObject(ctx, c.actor, c.svc, k, id)
		if err != nil {
			return c.errResponse(r, err)
		}
		return jsonResponse(http.StatusOK, map[string]any{
			"sid": obj.SID, "last_event_id": obj.LastEventID, "date_updated": isoTime(c.g.cfg.Now()),
		})
	}
	return errorResponse(chorus.ErrMethod)
}

func hasValue(vs []string, want string) bool {
	for _, v := range vs {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), want) {
				return true
			}
		}
	}
	return false
}

func isoTime(t time.Time) string { return t.UTC().Format(isoMillis) }

// parseRef parses an item path segment.
func parseRef(k chorus.Kind, seg string) (chorus.ItemRef, *chorus.Error) {
	if k == chorus.KindMap {
		if seg == "" || len(seg) > chorus.MaxKeyLen {
			return chorus.ItemRef{}, chorus.ErrMapItemKey
		}
		return chorus.ItemRef{Key: seg}, nil
	}
	n, err := strconv.ParseInt(seg, 10, 64)
	if err != nil || n < 0 {
		return chorus.ItemRef{}, chorus.ErrInvalidIndex
	}
	return chorus.ItemRef{Index: n}, nil
}

func (c *conn) item(ctx context.Context, r *request, k chorus.Kind, id, seg string) response {
	ref, e := parseRef(k, seg)
	if e != nil {
		return errorResponse(e)
	}
	eng := c.g.cfg.Engine
	switch r.method {
	case http.MethodGet:
		it, err := eng.Item(ctx, c.actor, c.svc, k, id, ref)
		if err != nil {
			return c.errResponse(r, err)
		}
		return response{http.StatusOK, appendItem(nil, it, r.base, c.svc.SID, true)}
	case http.MethodPost, http.MethodPut:
		b, ttl, e := parseBody(r)
		if e != nil {
			return errorResponse(e)
		}
		if e := tooLarge(b.Data, chorus.MaxDataBytes); e != nil {
			return errorResponse(e)
		}
		w := engine.ItemWrite{Mode: engine.Update, Data: b.Data, ItemTTL: ttl, IfMatch: r.ifMatch}
		if r.method == http.MethodPut {
			if k != chorus.KindMap {
				return errorResponse(chorus.ErrMethod)
			}
			w.Mode = engine.Upsert
			if strings.TrimSpace(r.ifMatch) == "-1" {
				w.Mode, w.IfMatch, w.ConflictStatus412 = engine.CreateOnly, "", true
			}
		}
		it, created, err := eng.WriteItem(ctx, c.actor, c.svc, k, id, ref, w)
		if err != nil {
			return c.errResponse(r, err)
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		return response{status, appendItem(nil, it, r.base, c.svc.SID, false)}
	case http.MethodDelete:
		it, err := eng.DeleteItem(ctx, c.actor, c.svc, k, id, ref, r.ifMatch)
		if err != nil {
			return c.errResponse(r, err)
		}
		m := map[string]any{"last_event_id": it.LastEventID, "date_updated": isoTime(it.DateUpdated)}
		if k == chorus.KindMap {
			m["key"] = it.Key
		} else {
			m["index"] = it.Index
		}
		return jsonResponse(http.StatusOK, m)
	}
	return errorResponse(chorus.ErrMethod)
}

func (c *conn) items(ctx context.Context, r *request, k chorus.Kind, id string) response {
	switch r.method {
	case http.MethodGet:
		return c.itemsPage(ctx, r, k, id)
	case http.MethodPost:
		b, ttl, e := parseBody(r)
		if e != nil {
			return errorResponse(e)
		}
		if e := tooLarge(b.Data, chorus.MaxDataBytes); e != nil {
			return errorResponse(e)
		}
		w := engine.ItemWrite{Mode: engine.CreateOnly, Data: b.Data, ItemTTL: ttl}
		if k == chorus.KindList {
			it, err := c.g.cfg.Engine.AddListItem(ctx, c.actor, c.svc, id, w)
			if err != nil {
				return c.errResponse(r, err)
			}
			return response{http.StatusCreated, appendItem(nil, it, r.base, c.svc.SID, false)}
		}
		key, ok, e := b.key()
		if e != nil {
			return errorResponse(e)
		}
		if !ok {
			return errorResponse(chorus.ErrMapItemKey)
		}
		it, _, err := c.g.cfg.Engine.WriteItem(ctx, c.actor, c.svc, k, id, chorus.ItemRef{Key: key}, w)
		if err != nil {
			resp := c.errResponse(r, err)
			if resp.status == http.StatusConflict {
				resp.body = withItemLink(resp.body, objectURL(r.base, c.svc.SID, k, id)+"/Items/"+encodeURIComponent(key))
			}
			return resp
		}
		return response{http.StatusCreated, appendItem(nil, it, r.base, c.svc.SID, false)}
	}
	return errorResponse(chorus.ErrMethod)
}

// pageToken is the opaque paging token of item pages: the page after From
// in Order, Size items a page, or with Back the page before From, still
// in Order. twilio-sync up to 3.2.x sends only the PageToken on
// nextPage()/prevPage() and shows the items as they come, so the token
// carries everything the page needs; an explicit PageSize still wins.
// Tokens without a size (issued before it was added) give the default
// page size; previous-page tokens issued before Back was added name the
// opposite order and still work as they did (the page before, reversed).
type pageToken struct {
	From  string `json:"from"`
	Order string `json:"order"`
	Size  int    `json:"size,omitempty"`
	Back  bool   `json:"back,omitempty"`
	// Incl: From itself belongs to the page (the token of an empty page's
	// neighbour, whose edge is From).
	Incl bool `json:"incl,omitempty"`
}

func encodeToken(from, order string, size int, back bool) string {
	return pageToken{From: from, Order: order, Size: size, Back: back}.encode()
}

func (pt pageToken) encode() string {
	b, _ := json.Marshal(pt)
	return base64.RawURLEncoding.EncodeToString(b)
}

func oppositeOrder(order string) string {
	if order == "desc" {
		return "asc"
	}
	return "desc"
}

func itemPos(k chorus.Kind, it *chorus.Item) string {
	if k == chorus.KindMap {
		return it.Key
	}
	return strconv.FormatInt(it.Index, 10)
}

// itemsPage answers the SDK's item queries: one item by Index or Key, or
// a page From (inclusive) in Order.
func (c *conn) itemsPage(ctx context.Context, r *request, k chorus.Kind, id string) response {
	eng := c.g.cfg.Engine
	q := r.query
	single, isSingle := "", false
	if k == chorus.KindList && q.Has("Index") {
		single, isSingle = q.Get("Index"), true
	}
	if k == chorus.KindMap && q.Has("Key") {
		single, isSingle = q.Get("Key"), true
	}
	if isSingle {
		ref, e := parseRef(k, single)
		if e != nil {
			return errorResponse(e)
		}
		items := []*chorus.Item{}
		it, err := eng.Item(ctx, c.actor, c.svc, k, id, ref)
		switch {
		case err == nil:
			items = append(items, it)
		case errors.Is(err, k.ItemNotFound()):
		default:
			return c.errResponse(r, err)
		}
		return response{http.StatusOK, appendItemsPage(nil, items, r.base, c.svc.SID, 1, "", "")}
	}

	order := strings.ToLower(q.Get("Order"))
	if order == "" {
		order = "asc"
	}
	if order != "asc" && order != "desc" {
		return errorResponse(chorus.ErrInvalidOrder)
	}
	pageSize := chorus.DefaultPageSize
	if s := q.Get("PageSize"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return errorResponse(chorus.ErrInvalidPageSize)
		}
		pageSize = min(n, cdsMaxPageItems)
	}
	from, bounds, back := q.Get("From"), "inclusive", false
	if b := q.Get("Bounds"); b != "" {
		bounds = strings.ToLower(b)
	}
	if tok := q.Get("PageToken"); tok != "" {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		var pt pageToken
		if err != nil || json.Unmarshal(raw, &pt) != nil || (pt.Order != "asc" && pt.Order != "desc") || pt.Size < 0 {
			return errorResponse(chorus.ErrInvalidPageToken)
		}
		from, order, bounds, back = pt.From, pt.Order, "exclusive", pt.Back
		if pt.Incl {
			bounds = "inclusive"
		}
		if pt.Size > 0 && !q.Has("PageSize") {
			pageSize = min(pt.Size, cdsMaxPageItems)
		}
	}
	// A previous page is read backwards from From and shown in order.
	fetchOrder := order
	if back {
		fetchOrder = oppositeOrder(order)
	}
	page, err := eng.Items(ctx, c.actor, c.svc, k, id, engine.ItemPageRequest{
		Order: fetchOrder, From: from, Bounds: bounds, PageSize: pageSize + 1, HideExpired: true,
	})
	if err != nil {
		return c.errResponse(r, err)
	}
	items := page.Items
	more := len(items) > pageSize // past the page, in the direction read
	if more {
		items = items[:pageSize]
	}
	if back {
		slices.Reverse(items)
	}
	// The token of the far side is known from the read; the near side's
	// (previous for a page read forwards, next for one read backwards)
	// needs to know whether anything lies beyond the page's edge (or
	// beyond From when the page is empty).
	prev, next := "", ""
	edge, beyond := from, oppositeOrder(order)
	if back {
		if more {
			prev = encodeToken(itemPos(k, items[0]), order, pageSize, true)
		}
		beyond = order
		if len(items) > 0 {
			edge = itemPos(k, items[len(items)-1])
		}
	} else {
		if more {
			next = encodeToken(itemPos(k, items[len(items)-1]), order, pageSize, false)
		}
		if len(items) > 0 {
			edge = itemPos(k, items[0])
		}
	}
	if edge != "" {
		// An empty page's edge is From, which may be an item (the edge of
		// the page the client came from, everything beyond it since
		// removed): the neighbour page holds it.
		incl := len(items) == 0
		edgeBounds := "exclusive"
		if incl {
			edgeBounds = "inclusive"
		}
		across, err := eng.Items(ctx, c.actor, c.svc, k, id, engine.ItemPageRequest{
			Order: beyond, From: edge, Bounds: edgeBounds, PageSize: 1, HideExpired: true,
		})
		if err != nil {
			return c.errResponse(r, err)
		}
		if len(across.Items) > 0 {
			pt := pageToken{From: edge, Order: order, Size: pageSize, Back: !back, Incl: incl}
			if back {
				next = pt.encode()
			} else {
				prev = pt.encode()
			}
		}
	}
	if items == nil {
		items = []*chorus.Item{}
	}
	return response{http.StatusOK, appendItemsPage(nil, items, r.base, c.svc.SID, pageSize, prev, next)}
}

func (c *conn) context(ctx context.Context, r *request, id string) response {
	eng := c.g.cfg.Engine
	var obj *chorus.Object
	var err error
	switch r.method {
	case http.MethodGet:
		obj, err = eng.Object(ctx, c.actor, c.svc, chorus.KindList, id)
	case http.MethodPost:
		b, _, e := parseBody(r)
		if e != nil {
			return errorResponse(e)
		}
		data := b.Data
		if data == nil {
			data = b.Context
		}
		if e := tooLarge(data, chorus.MaxDataBytes); e != nil {
			return errorResponse(e)
		}
		obj, err = eng.UpdateObject(ctx, c.actor, c.svc, chorus.KindList, id, engine.UpdateObject{Data: data})
	default:
		return errorResponse(chorus.ErrMethod)
	}
	if err != nil {
		return c.errResponse(r, err)
	}
	b := []byte(`{"data":`)
	if len(obj.Data) == 0 {
		b = append(b, "{}"...)
	} else {
		b = appendRaw(b, obj.Data)
	}
	b = append(b, `,"last_event_id":`...)
	b = strconv.AppendInt(b, obj.LastEventID, 10)
	b = append(b, `,"date_updated":`...)
	b = appendTime(b, obj.DateUpdated)
	return response{http.StatusOK, append(b, '}')}
}

func (c *conn) publish(ctx context.Context, r *request, id string) response {
	b, _, e := parseBody(r)
	if e != nil {
		return errorResponse(e)
	}
	if e := tooLarge(b.Data, chorus.MaxMessageBytes); e != nil {
		return errorResponse(e)
	}
	msg, err := c.g.cfg.Engine.PublishMessage(ctx, c.actor, c.svc, id, b.Data)
	if err != nil {
		return c.errResponse(r, err)
	}
	out := []byte(`{"sid":`)
	out = protocol.AppendJSONString(out, msg.SID)
	out = append(out, `,"data":`...)
	out = appendRaw(out, msg.Data)
	return response{http.StatusCreated, append(out, '}')}
}

// appendObject renders an object descriptor; items != nil adds "items"
// (map Include=items).
func appendObject(dst []byte, o *chorus.Object, base string, items []*chorus.Item) []byte {
	u := objectURL(base, o.ServiceSID, o.Kind, o.SID)
	dst = append(dst, `{"sid":`...)
	dst = protocol.AppendJSONString(dst, o.SID)
	dst = append(dst, `,"account_sid":`...)
	dst = protocol.AppendJSONString(dst, o.AccountSID)
	dst = append(dst, `,"service_sid":`...)
	dst = protocol.AppendJSONString(dst, o.ServiceSID)
	dst = append(dst, `,"unique_name":`...)
	if o.UniqueName == "" {
		dst = append(dst, "null"...)
	} else {
		dst = protocol.AppendJSONString(dst, o.UniqueName)
	}
	dst = append(dst, `,"url":`...)
	dst = protocol.AppendJSONString(dst, u)
	switch o.Kind {
	case chorus.KindDocument:
		dst = append(dst, `,"revision":`...)
		dst = protocol.AppendJSONString(dst, o.RevisionString())
		dst = append(dst, `,"last_event_id":`...)
		dst = strconv.AppendInt(dst, o.LastEventID, 10)
		dst = append(dst, `,"data":`...)
		if len(o.Data) == 0 {
			dst = append(dst, "{}"...)
		} else {
			dst = appendRaw(dst, o.Data)
		}
		dst = append(dst, `,"links":{"permissions":`...)
		dst = protocol.AppendJSONString(dst, u+"/Permissions")
		dst = append(dst, '}')
	case chorus.KindList, chorus.KindMap:
		dst = append(dst, `,"revision":`...)
		dst = protocol.AppendJSONString(dst, o.RevisionString())
		dst = append(dst, `,"last_event_id":`...)
		dst = strconv.AppendInt(dst, o.LastEventID, 10)
		dst = append(dst, `,"links":{"items":`...)
		dst = protocol.AppendJSONString(dst, u+"/Items")
		if o.Kind == chorus.KindList {
			dst = append(dst, `,"context":`...)
			dst = protocol.AppendJSONString(dst, u+"/Context")
		}
		dst = append(dst, `,"permissions":`...)
		dst = protocol.AppendJSONString(dst, u+"/Permissions")
		dst = append(dst, '}')
	case chorus.KindStream:
		dst = append(dst, `,"links":{"messages":`...)
		dst = protocol.AppendJSONString(dst, u+"/Messages")
		dst = append(dst, `,"permissions":`...)
		dst = protocol.AppendJSONString(dst, u+"/Permissions")
		dst = append(dst, '}')
	}
	dst = append(dst, `,"created_by":`...)
	dst = protocol.AppendJSONString(dst, o.CreatedBy)
	dst = append(dst, `,"date_created":`...)
	dst = appendTime(dst, o.DateCreated)
	dst = append(dst, `,"date_updated":`...)
	dst = appendTime(dst, o.DateUpdated)
	dst = append(dst, `,"date_expires":`...)
	dst = appendTimePtr(dst, o.DateExpires)
	if items != nil {
		dst = append(dst, `,"items":[`...)
		for i, it := range items {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendItem(dst, it, base, o.ServiceSID, true)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

// appendItem renders an item descriptor.
func appendItem(dst []byte, it *chorus.Item, base, service string, withData bool) []byte {
	dst = append(dst, '{')
	if it.Kind == chorus.KindMap {
		dst = append(dst, `"key":`...)
		dst = protocol.AppendJSONString(dst, it.Key)
		dst = append(dst, `,"map_sid":`...)
	} else {
		dst = append(dst, `"index":`...)
		dst = strconv.AppendInt(dst, it.Index, 10)
		dst = append(dst, `,"list_sid":`...)
	}
	dst = protocol.AppendJSONString(dst, it.ObjectSID)
	dst = append(dst, `,"url":`...)
	dst = protocol.AppendJSONString(dst, itemURL(base, service, it.Kind, it.ObjectSID, it.Index, it.Key))
	dst = append(dst, `,"revision":`...)
	dst = protocol.AppendJSONString(dst, it.RevisionString())
	dst = append(dst, `,"last_event_id":`...)
	dst = strconv.AppendInt(dst, it.LastEventID, 10)
	if withData || len(it.Data) > 0 {
		dst = append(dst, `,"data":`...)
		if len(it.Data) == 0 {
			dst = append(dst, "{}"...)
		} else {
			dst = appendRaw(dst, it.Data)
		}
	}
	dst = append(dst, `,"created_by":`...)
	dst = protocol.AppendJSONString(dst, it.CreatedBy)
	dst = append(dst, `,"date_created":`...)
	dst = appendTime(dst, it.DateCreated)
	dst = append(dst, `,"date_updated":`...)
	dst = appendTime(dst, it.DateUpdated)
	dst = append(dst, `,"date_expires":`...)
	dst = appendTimePtr(dst, it.DateExpires)
	return append(dst, '}')
}

// includedItems returns the first of a map's items that a map descriptor
// carries (Include=items): as many as fit in maxIncludedBytes of data, and
// in a quarter of the session's send queue (queueBytes). The SDK puts them
// in its cache, so that a later get(key) needs no request, and reads pages
// for anything else; a reply bigger than the send queue closed the session
// as a slow consumer instead (1,000 items of 16 KiB: twilio-sync 4.0.1's
// map({includeItems: true}) failed with "disconnected").
func includedItems(items []*chorus.Item, queueBytes int) []*chorus.Item {
	budget := min(maxIncludedBytes, queueBytes/4)
	for i, it := range items {
		if budget -= len(it.Data) + len(it.Key) + includedItemOverhead; budget < 0 {
			return items[:i]
		}
	}
	return items
}

// maxIncludedBytes bounds the data of the items a map descriptor carries;
// includedItemOverhead is about what an item's other fields add.
const (
	maxIncludedBytes     = 1 << 20
	includedItemOverhead = 320
)

// cdsMaxPageItems is the most items a page of list or map items holds
// over CDS, whatever PageSize asks for, as Twilio does: "The max page size
// is 1000. Note: PageSize between 100 and 1000 returns at most 100 items"
// (twilio-sync 4.x, SyncList.getItems and SyncMap.getItems). The SDK reads
// on with the page's next token. REST v1 pages hold up to 1,000.
const cdsMaxPageItems = 100

func appendItemsPage(dst []byte, items []*chorus.Item, base, service string, pageSize int, prev, next string) []byte {
	dst = append(dst, `{"items":[`...)
	for i, it := range items {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendItem(dst, it, base, service, true)
	}
	dst = append(dst, `],"meta":{"page_size":`...)
	dst = strconv.AppendInt(dst, int64(pageSize), 10)
	dst = append(dst, `,"previous_token":`...)
	if prev == "" {
		dst = append(dst, "null"...)
	} else {
		dst = protocol.AppendJSONString(dst, prev)
	}
	dst = append(dst, `,"next_token":`...)
	if next == "" {
		dst = append(dst, "null"...)
	} else {
		dst = protocol.AppendJSONString(dst, next)
	}
	return append(dst, `,"key":"items"}}`...)
}

// withItemLink adds "links": {"item": url} to an error body: twilio-sync
// 0.5 creates map items with POST and, on 409, updates the existing item
// at err.body.links.item (SDK-NOTES.md).
func withItemLink(errBody []byte, url string) []byte {
	if len(errBody) == 0 || errBody[len(errBody)-1] != '}' {
		return errBody
	}
	out := append(errBody[:len(errBody)-1:len(errBody)-1], `,"links":{"item":`...)
	out = protocol.AppendJSONString(out, url)
	return append(out, "}}"...)
}
