package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/livequery"
	"github.com/chorus-sync/chorus/protocol"
)

// Live Query and Instant Query over Maps (the SDK's client.liveQuery and
// client.instantQuery). Every Map is an index: the index name is the Map's
// unique name or SID, and an identity may query a Map it may read.
//
// POST /v3/Insights/<index>/Items {"query_string", "type"?} scans the Map
// and answers its matching items; with "type":"live_query" it also opens a
// live query on the connection, which the SDK then subscribes to
// (object_type "live_query", object_sid = the query_id). A live query rides
// on the Map's topic: the topic, ordered and fed by the Bus like any other,
// offers each item event to the live queries of that Map only, which
// re-evaluate the one item and push live_query_item_updated or
// live_query_item_removed when it enters, changes in or leaves the result.

// errQueryCap marks a live query refused by MaxLiveQueriesPerIdentity.
var errQueryCap = errors.New("gateway: the identity holds its live queries' limit")

// Limits of live and instant queries.
const (
	// MaxLiveQueriesPerConn bounds the live queries a connection holds
	// (open or subscribed).
	MaxLiveQueriesPerConn = 20
	// MaxQueryResult bounds a result: a query matching more items fails
	// with 54006, and a live query whose result grows past it ends the
	// connection (the SDK's re-subscription then fails with 54006).
	MaxQueryResult = 1000
	// MaxQueryResultBytes bounds the keys and data of a result (a reply
	// must fit the connection's send queue); over it, 54006 as well.
	MaxQueryResultBytes = 4 << 20
	// MaxQueryScan bounds the items of a Map a query scans.
	MaxQueryScan = 100_000
	// maxQueryBacklog bounds the events a live query keeps while its Map
	// is scanned, and the frames it keeps until the SDK subscribes (also
	// by bytes); past it, the query rescans when the SDK subscribes.
	maxQueryBacklog      = 1000
	maxQueryBacklogBytes = 256 << 10
)

// liveQueryType is the SDK's object_type of a live query.
const liveQueryType = "live_query"

var errQueryResultGrew = errors.New("gateway: a live query's result grew past the limit")

type lqState uint8

const (
	lqScanning lqState = iota // the Map is being read: events are kept raw
	lqPending                 // read; frames are kept until the SDK subscribes
	lqLive                    // frames go out as events arrive
)

// liveQuery is one connection's live query over one Map. Its mutable
// fields are guarded by the topic's mutex.
type liveQuery struct {
	c      *conn
	t      *topic
	id     string // query_id
	mapSID string
	q      *livequery.Query

	state        lqState
	gone         bool
	use          *identityUse     // counts the query (countQuery) until it is gone
	keys         map[string]int64 // the keys in the result → revision (event id)
	buf          []*chorus.Event  // lqScanning: events in arrival order
	pending      [][]byte         // lqPending: frames for the SDK
	pendingBytes int
	stale        bool // backlog overflowed: rescan on subscribe
	// Events up to floor are in the scan. Events in (floor, ceil] may be:
	// window holds the revision the scan saw for the keys changed then.
	floor, ceil int64
	window      map[string]int64
	// denied is why the query ended when read access to its Map was
	// withdrawn (gone is then set too); see denyQuery in access.go.
	denied *chorus.Error
	// access: the access generations before the query's authorization
	// was read (worker only; see recheckQueryIfChanged).
	access accessToken
	// retrying: a re-check the store failed is being retried; failedChecks
	// counts such failures (recheckQuery).
	retrying     atomic.Bool
	failedChecks atomic.Uint64
}

// queryID names a live query: stable for one Map and expression, so that
// the SDK's cache shares one live query between equal calls.
func queryID(svc, mapSID, expr string) string {
	h := sha256.Sum256([]byte(svc + "\x00" + mapSID + "\x00" + expr))
	return "QY" + hex.EncodeToString(h[:16])
}

// isInsights reports whether a CDS path (segments) is an Insights query:
// a read, although a POST, so it parks no events (see handleMessage).
func isInsights(segs []string) bool {
	return len(segs) > 1 && segs[1] == "Insights" || len(segs) > 3 && segs[1] == "Services" && segs[3] == "Insights"
}

type insightsBody struct {
	QueryString *string `json:"query_string"`
	Type        string  `json:"type"`
}

// insights answers /v3/Insights/<index>/Items.
func (c *conn) insights(ctx context.Context, r *request, segs []string) response {
	if len(segs) != 3 || segs[2] != "Items" {
		return errorResponse(chorus.ErrNotFound)
	}
	if r.method != http.MethodPost {
		return errorResponse(chorus.ErrMethod)
	}
	var b insightsBody
	if err := json.Unmarshal(r.body, &b); err != nil {
		return errorResponse(chorus.Wrap(chorus.ErrInvalidJSON, err))
	}
	if b.QueryString == nil {
		return errorResponse(chorus.Errorf(chorus.ErrInvalidQuery, "Invalid query: query_string is required"))
	}
	q, err := livequery.Parse(*b.QueryString)
	if err != nil {
		return errorResponse(chorus.AsError(err))
	}
	switch b.Type {
	case "":
		obj, err := c.queryMap(ctx, segs[1])
		if err != nil {
			return c.errResponse(r, err)
		}
		items, _, err := c.scanMap(ctx, obj.SID, q, 0)
		if err != nil {
			return c.errResponse(r, err)
		}
		return response{http.StatusOK, appendQueryResult(nil, "", 0, items)}
	case liveQueryType:
		return c.openLiveQuery(ctx, r, segs[1], q)
	}
	return errorResponse(chorus.Errorf(chorus.ErrInvalidParameter, "Invalid query type %q", b.Type))
}

// queryMap resolves an index name to a Map the identity may read.
func (c *conn) queryMap(ctx context.Context, index string) (*chorus.Object, error) {
	if index == "" {
		return nil, chorus.Errorf(chorus.ErrInvalidIndexName, "Invalid index name: expected a Map's unique name or SID")
	}
	obj, err := c.g.cfg.Engine.Object(ctx, c.actor, c.svc, chorus.KindMap, index)
	if errors.Is(err, chorus.ErrMapNotFound) {
		return nil, chorus.Errorf(chorus.ErrInvalidIndexName, "Invalid index name: no Map with this unique name or SID")
	}
	return obj, err
}

// takeScanSlot takes one of the gateway's scan slots (give it back with
// <-g.scanSlots), at once when one is free, else waiting for at most
// Config.QueryScanWait: then it fails with 503, which the SDK retries.
func (g *Gateway) takeScanSlot(ctx context.Context) error {
	select {
	case g.scanSlots <- struct{}{}:
		return nil
	default:
	}
	wait := time.NewTimer(g.cfg.QueryScanWait)
	defer wait.Stop()
	select {
	case g.scanSlots <- struct{}{}:
		return nil
	case <-wait.C:
		return chorus.Errorf(chorus.ErrUnavailable, "Service unavailable: the server is busy with other queries; retry")
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// DefaultQueryScans is Config.QueryScans's default: half of the SQLite
// store's 4 readers. A scan reads up to MaxQueryScan items, a page of 1,000
// at a time; 20 sessions querying a Map of 5,000 items of 16 KiB at once
// kept every reader busy, and other users' reads waited p99 376 ms.
const DefaultQueryScans = 2

// DefaultQueryScanWait is Config.QueryScanWait's default: a query that
// waited that long for a scan is answered 503, which the SDK retries
// (after 4 s or more), rather than hold its session's other requests,
// which run one at a time, for as long as others keep the scans busy.
const DefaultQueryScanWait = 5 * time.Second

// scanMap reads the Map's items and returns those that match q. With
// floor > 0 it also returns the revisions of the items it read that changed
// after event floor. It waits for one of the gateway's scan slots
// (Config.QueryScans) first, for at most Config.QueryScanWait.
func (c *conn) scanMap(ctx context.Context, mapSID string, q *livequery.Query, floor int64) ([]*chorus.Item, map[string]int64, error) {
	if err := c.g.takeScanSlot(ctx); err != nil {
		return nil, nil, err
	}
	defer func() { <-c.g.scanSlots }()
	var (
		out     []*chorus.Item
		window  map[string]int64
		scanned int
		size    int
		tok     string
	)
	for {
		page, err := c.g.cfg.Engine.Items(ctx, c.actor, c.svc, chorus.KindMap, mapSID, engine.ItemPageRequest{
			PageSize: chorus.MaxPageSize, Token: tok, HideExpired: true,
		})
		if err != nil {
			return nil, nil, err
		}
		for _, it := range page.Items {
			if floor > 0 && it.LastEventID > floor {
				if window == nil {
					window = make(map[string]int64)
				}
				window[it.Key] = it.LastEventID
			}
			data, err := livequery.Decode(it.Data)
			if err != nil {
				data = map[string]any{}
			}
			if q.Match(it.Key, data) {
				size += len(it.Key) + len(it.Data)
				if len(out) >= MaxQueryResult || size > MaxQueryResultBytes {
					return nil, nil, chorus.Errorf(chorus.ErrTooLarge, "Request entity too large: the query matches more than %d items or %d bytes; narrow it", MaxQueryResult, MaxQueryResultBytes)
				}
				out = append(out, it)
			}
		}
		scanned += len(page.Items)
		if page.NextToken == "" || len(page.Items) == 0 {
			return out, window, nil
		}
		if scanned >= MaxQueryScan {
			return nil, nil, chorus.Errorf(chorus.ErrTooLarge, "Request entity too large: the Map has more than %d items to query", MaxQueryScan)
		}
		tok = page.NextToken
	}
}

// openLiveQuery answers a liveQuery request: the matching items, and a live
// query kept on the connection until the SDK subscribes to it.
func (c *conn) openLiveQuery(ctx context.Context, r *request, index string, q *livequery.Query) response {
	obj, err := c.queryMap(ctx, index)
	if err != nil {
		return c.errResponse(r, err)
	}
	id := queryID(c.svc.SID, obj.SID, q.String())
	c.mu.Lock()
	lq := c.queries[id]
	n := len(c.queries)
	c.mu.Unlock()
	if lq != nil {
		// The SDK already holds this query: it keeps its own items and
		// ignores these; answer the current result.
		items, _, err := c.scanMap(ctx, obj.SID, q, 0)
		if err != nil {
			return c.errResponse(r, err)
		}
		return response{http.StatusOK, appendQueryResult(nil, id, obj.LastEventID, items)}
	}
	if n >= MaxLiveQueriesPerConn {
		// 400, not 54419's usual 429: the SDK retries a 429 on Insights
		// requests for 90 s, and this one does not pass with time.
		e := chorus.Errorf(chorus.ErrTooManySubscriptions, "Too many live queries for this connection: the limit is %d", MaxLiveQueriesPerConn)
		e.Status = http.StatusBadRequest
		return errorResponse(e)
	}
	lq, items, last, err := c.startLiveQuery(ctx, id, obj.SID, q)
	if err != nil {
		return c.errResponse(r, err)
	}
	c.mu.Lock()
	offline := c.offline // requests run one at a time: only teardown races
	if !offline {
		c.queries[id] = lq
	}
	c.mu.Unlock()
	if offline {
		c.g.hub.releaseQuery(lq)
		return errorResponse(chorus.ErrUnavailable)
	}
	if err := c.recheckQueryIfChanged(ctx, lq); err != nil {
		return c.errResponse(r, err)
	}
	return response{http.StatusOK, appendQueryResult(nil, id, last, items)}
}

// startLiveQuery attaches a new live query to the Map's topic, scans the
// Map and leaves the query pending with what changed meanwhile.
func (c *conn) startLiveQuery(ctx context.Context, id, mapSID string, q *livequery.Query) (*liveQuery, []*chorus.Item, int64, error) {
	h := c.g.hub
	if !c.g.countQuery(c.use) {
		// 400 to a liveQuery request, as over MaxLiveQueriesPerConn (a 429
		// the SDK would retry for 90 s); a subscription is left pending
		// (establishLiveQuery).
		e := chorus.Errorf(chorus.ErrTooManySubscriptions, "Too many live queries for this identity on this server: the limit is %d", c.g.cfg.MaxLiveQueriesPerIdentity)
		e.Status = http.StatusBadRequest
		return nil, nil, 0, fmt.Errorf("%w: %w", errQueryCap, e)
	}
	t, err := h.acquire(mapSID, chorus.KindMap)
	if err != nil {
		c.use.uncountQuery()
		return nil, nil, 0, chorus.Wrap(chorus.ErrUnavailable, err)
	}
	lq := &liveQuery{c: c, t: t, id: id, mapSID: mapSID, q: q, state: lqScanning, use: c.use}
	t.mu.Lock()
	if t.queries == nil {
		t.queries = make(map[*liveQuery]struct{})
	}
	t.queries[lq] = struct{}{}
	t.mu.Unlock()
	// From here on, access changes re-check lq (see denyQuery); one that
	// the scan's reads did not see yet is caught after registration.
	lq.access = c.accessToken(t)
	c.refreshService()
	items, last, err := c.scanLiveQuery(ctx, lq)
	if err != nil {
		h.releaseQuery(lq)
		return nil, nil, 0, err
	}
	return lq, items, last, nil
}

// scanLiveQuery (re)reads the Map of lq, which is attached to its topic,
// and applies the events that arrived meanwhile. It returns the matching
// items as read and the Map's last event id before the read.
func (c *conn) scanLiveQuery(ctx context.Context, lq *liveQuery) ([]*chorus.Item, int64, error) {
	eng := c.g.cfg.Engine
	t := lq.t
	t.mu.Lock()
	lq.state, lq.buf, lq.pending, lq.pendingBytes, lq.stale = lqScanning, nil, nil, 0, false
	t.mu.Unlock()
	// The Map's position read after the topic took the query: every later
	// event reaches the query.
	before, err := eng.Subscribable(ctx, c.actor, c.svc, chorus.KindMap, lq.mapSID)
	if err != nil {
		return nil, 0, err
	}
	t.setBaseline(before)
	items, window, err := c.scanMap(ctx, lq.mapSID, lq.q, before.LastEventID)
	if err != nil {
		return nil, 0, err
	}
	after, err := eng.Subscribable(ctx, c.actor, c.svc, chorus.KindMap, lq.mapSID)
	if err != nil {
		return nil, 0, err
	}
	keys := make(map[string]int64, len(items))
	for _, it := range items {
		keys[it.Key] = it.LastEventID
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if lq.gone {
		if lq.denied != nil {
			return nil, 0, lq.denied
		}
		return nil, 0, chorus.ErrMapNotFound
	}
	lq.keys, lq.floor, lq.ceil, lq.window = keys, before.LastEventID, after.LastEventID, window
	buf := lq.buf
	lq.buf, lq.state = nil, lqPending
	if lq.stale { // too many events during the scan
		return nil, 0, chorus.Errorf(chorus.ErrUnavailable, "Service unavailable: the Map changed too fast to query; retry")
	}
	var dec eventData
	for _, e := range buf {
		dec.reset(e)
		lq.offerLocked(e, &dec)
	}
	if lq.gone { // removed during the scan
		return nil, 0, chorus.Errorf(chorus.ErrInvalidIndexName, "Invalid index name: the Map was removed")
	}
	return items, before.LastEventID, nil
}

// eventData decodes an event's item data once for every live query of a
// topic.
type eventData struct {
	e    *chorus.Event
	v    any
	done bool
}

func (d *eventData) reset(e *chorus.Event) { *d = eventData{e: e} }

func (d *eventData) get() any {
	if !d.done {
		d.done = true
		v, err := livequery.Decode(d.e.ItemData)
		if err != nil {
			v = map[string]any{}
		}
		d.v = v
	}
	return d.v
}

// offerQueriesLocked offers e to the topic's live queries.
func (t *topic) offerQueriesLocked(e *chorus.Event) {
	var d eventData
	d.reset(e)
	for lq := range t.queries {
		lq.offerLocked(e, &d)
	}
}

// offerLocked applies one Map event to the query's result and emits what
// the SDK must learn of it.
func (lq *liveQuery) offerLocked(e *chorus.Event, d *eventData) {
	if lq.gone {
		return
	}
	if lq.state == lqScanning {
		if len(lq.buf) >= maxQueryBacklog {
			lq.stale, lq.buf = true, nil
		} else if !lq.stale {
			lq.buf = append(lq.buf, e)
		}
		return
	}
	switch e.Type {
	case chorus.EventMapRemoved:
		lq.gone = true
		lq.keys = nil
		lq.emitLocked(lq.batchFrame(nil, ""))
		go lq.c.dropLiveQuery(lq) // not inline: the Bus lock is held by our caller
		return
	case chorus.EventMapItemAdded, chorus.EventMapItemUpdated, chorus.EventMapItemRemoved:
	default:
		return
	}
	k := e.ItemKey
	if e.ID <= lq.floor {
		return
	}
	if e.ID <= lq.ceil {
		if rev, ok := lq.window[k]; ok && rev >= e.ID {
			return
		}
	} else if lq.window != nil {
		lq.window = nil // past the scan: every event is news
	}
	rev, in := lq.keys[k]
	if in && rev >= e.ID {
		return
	}
	match := e.Type != chorus.EventMapItemRemoved && lq.q.Match(k, d.get())
	switch {
	case match:
		if !in && len(lq.keys) >= MaxQueryResult {
			lq.overflowLocked()
			return
		}
		lq.keys[k] = e.ID
		lq.emitLocked(lq.itemFrame("live_query_item_updated", e))
	case in:
		delete(lq.keys, k)
		lq.emitLocked(lq.itemFrame("live_query_item_removed", e))
	}
}

// overflowLocked handles a result grown past MaxQueryResult.
func (lq *liveQuery) overflowLocked() {
	if lq.state == lqPending {
		lq.stale, lq.pending, lq.pendingBytes = true, nil, 0
		return
	}
	// No message tells the SDK that a live query ended; a new session
	// does: its re-subscription fails with 54006.
	lq.gone = true
	lq.c.logger().Warn("gateway: live query result over the limit; closing the session",
		slog.String(logObject, lq.mapSID), slog.Int("limit", MaxQueryResult))
	lq.c.fail(errQueryResultGrew)
}

func (lq *liveQuery) emitLocked(f []byte) {
	switch lq.state {
	case lqLive:
		lq.c.sendEvent(f)
	case lqPending:
		if lq.stale {
			return
		}
		if len(lq.pending) >= maxQueryBacklog || lq.pendingBytes+len(f) > maxQueryBacklogBytes {
			lq.stale, lq.pending, lq.pendingBytes = true, nil, 0
			return
		}
		lq.pending = append(lq.pending, f)
		lq.pendingBytes += len(f)
	}
}

// itemFrame encodes a live_query_item_* notification for e.
func (lq *liveQuery) itemFrame(eventType string, e *chorus.Event) []byte {
	b := []byte(`{"event_type":"`)
	b = append(b, eventType...)
	b = append(b, `","event":{"query_id":`...)
	b = protocol.AppendJSONString(b, lq.id)
	b = append(b, `,"item_key":`...)
	b = protocol.AppendJSONString(b, e.ItemKey)
	if eventType == "live_query_item_updated" {
		b = append(b, `,"item_data":`...)
		if len(e.ItemData) == 0 {
			b = append(b, "{}"...)
		} else {
			b = appendRaw(b, e.ItemData)
		}
	}
	b = append(b, `,"item_revision":`...)
	b = strconv.AppendInt(b, e.ID, 10)
	b = append(b, `,"last_event_id":`...)
	b = strconv.AppendInt(b, e.ID, 10)
	b = append(b, "}}"...)
	return protocol.AppendNotification(nil, protocol.NewID(), protocol.MessageTypeSyncEvent, b)
}

// batchFrame encodes a live_query_updated notification: the whole result,
// which the SDK diffs against what it holds.
func (lq *liveQuery) batchFrame(items []*chorus.Item, corr json.Number) []byte {
	b := []byte(`{"event_type":"live_query_updated"`)
	if corr != "" {
		b = append(b, `,"correlation_id":`...)
		b = append(b, corr...)
	}
	b = append(b, `,"event":{"query_id":`...)
	b = protocol.AppendJSONString(b, lq.id)
	b = append(b, `,"items":`...)
	b = appendQueryItems(b, items)
	b = append(b, "}}"...)
	return protocol.AppendNotification(nil, protocol.NewID(), protocol.MessageTypeSyncEvent, b)
}

// appendQueryItems renders [{"key","data","revision"}…]; the revision is
// the item's last event id, which the SDK compares as a number.
func appendQueryItems(dst []byte, items []*chorus.Item) []byte {
	dst = append(dst, '[')
	for i, it := range items {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"key":`...)
		dst = protocol.AppendJSONString(dst, it.Key)
		dst = append(dst, `,"data":`...)
		if len(it.Data) == 0 {
			dst = append(dst, "{}"...)
		} else {
			dst = appendRaw(dst, it.Data)
		}
		dst = append(dst, `,"revision":`...)
		dst = strconv.AppendInt(dst, it.LastEventID, 10)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// appendQueryResult renders a query reply; id "" is an instant query.
func appendQueryResult(dst []byte, id string, last int64, items []*chorus.Item) []byte {
	dst = append(dst, '{')
	if id != "" {
		dst = append(dst, `"query_id":`...)
		dst = protocol.AppendJSONString(dst, id)
		dst = append(dst, `,"last_event_id":`...)
		dst = strconv.AppendInt(dst, last, 10)
		dst = append(dst, ',')
	}
	dst = append(dst, `"items":`...)
	dst = appendQueryItems(dst, items)
	return append(dst, '}')
}

// establishLiveQuery subscribes the SDK to a live query: the one its
// liveQuery request opened on this connection, or, after a reconnect, a new
// one built from index_name and query_string whose result goes out as a
// live_query_updated that the SDK diffs with what it holds.
func (c *conn) establishLiveQuery(ctx context.Context, corr json.Number, id, index, expr string) {
	fail := func(err error) {
		if ctx.Err() != nil {
			return
		}
		ce := chorus.AsError(err)
		if ce.Status >= 500 {
			if ce.Code != chorus.ErrUnavailable.Code {
				c.logger().Error("gateway: establish live query", slog.String(logObject, id), slog.Any(logError, err))
			}
			return // left pending, as in establish: the SDK asks again
		}
		c.failed(corr, id, ce)
	}
	c.mu.Lock()
	lq := c.queries[id]
	n := len(c.queries)
	c.mu.Unlock()
	var items []*chorus.Item
	resync := false
	if lq == nil {
		if n >= MaxLiveQueriesPerConn {
			fail(chorus.Errorf(chorus.ErrTooManySubscriptions, "Too many live queries for this connection: the limit is %d", MaxLiveQueriesPerConn))
			return
		}
		q, err := livequery.Parse(expr)
		if err != nil {
			fail(err)
			return
		}
		obj, err := c.queryMap(ctx, index)
		if err != nil {
			fail(err)
			return
		}
		lq, items, _, err = c.startLiveQuery(ctx, id, obj.SID, q)
		if errors.Is(err, errQueryCap) {
			// Left pending: the SDK asks again 5 s later, and gets in once
			// the identity's old sessions have let go of theirs (a session
			// cut by a network drop is ended only when its pings go
			// unanswered, up to 90 s). A subscription_failed would end
			// the query in the SDK for good.
			c.logger().Debug("gateway: live query left pending: the identity holds its limit", slog.String(logObject, id))
			return
		}
		if err != nil {
			fail(err)
			return
		}
		c.mu.Lock()
		offline := c.offline
		if !offline {
			c.queries[id] = lq
		}
		c.mu.Unlock()
		if offline {
			c.g.hub.releaseQuery(lq)
			fail(chorus.ErrUnavailable)
			return
		}
		if err := c.recheckQueryIfChanged(ctx, lq); err != nil {
			fail(err)
			return
		}
		resync = true
	} else {
		t := lq.t
		t.mu.Lock()
		stale := lq.stale && lq.state == lqPending
		t.mu.Unlock()
		if stale {
			var err error
			if items, _, err = c.scanLiveQuery(ctx, lq); err != nil {
				c.dropLiveQuery(lq)
				fail(err)
				return
			}
			resync = true
		}
	}
	t := lq.t
	t.mu.Lock()
	if lq.gone {
		denied := lq.denied
		t.mu.Unlock()
		c.dropLiveQuery(lq)
		if denied != nil {
			fail(denied)
			return
		}
		fail(chorus.Errorf(chorus.ErrInvalidIndexName, "Invalid index name: the Map was removed"))
		return
	}
	if lq.state == lqPending {
		if resync {
			c.sendEvent(lq.batchFrame(items, corr))
		}
		for _, f := range lq.pending {
			c.sendEvent(f)
		}
		lq.pending, lq.pendingBytes, lq.state = nil, 0, lqLive
	}
	// Sent under the topic's lock: a denial (denyQuery) comes after it.
	sendSync(c, "subscription_established", corr, []map[string]any{{
		"object_sid": id, "object_type": liveQueryType, "replay_status": "completed", "last_event_id": lq.ceil,
	}})
	t.mu.Unlock()
}

// cancelLiveQuery ends the live query id; false if there is none.
func (c *conn) cancelLiveQuery(id string) bool {
	c.mu.Lock()
	lq := c.queries[id]
	c.mu.Unlock()
	if lq == nil {
		return false
	}
	c.dropLiveQuery(lq)
	return true
}

// dropLiveQuery removes lq from the connection and its topic.
func (c *conn) dropLiveQuery(lq *liveQuery) {
	c.mu.Lock()
	mine := c.queries[lq.id] == lq
	if mine {
		delete(c.queries, lq.id)
	}
	c.mu.Unlock()
	if mine {
		c.g.hub.releaseQuery(lq)
	}
}

// dropLiveQueries ends every live query of the connection (teardown).
func (c *conn) dropLiveQueries() {
	c.mu.Lock()
	qs := c.queries
	c.queries = make(map[string]*liveQuery)
	c.mu.Unlock()
	for _, lq := range qs {
		c.g.hub.releaseQuery(lq)
	}
}

// releaseQuery detaches lq from its topic and drops its reference.
func (h *hub) releaseQuery(lq *liveQuery) {
	t := lq.t
	t.mu.Lock()
	lq.use.uncountQuery()
	lq.use = nil // counted down once, however often released
	lq.gone = true
	delete(t.queries, lq)
	t.mu.Unlock()
	h.release(t, nil)
}

// liveQueries counts the live queries of all topics (stats, tests).
func (h *hub) liveQueries() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, t := range h.topics {
		t.mu.Lock()
		n += len(t.queries)
		t.mu.Unlock()
	}
	return n
}
