package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-sync/chorus"
)

// Event is one change to an open object, delivered once per event id and
// in id order (stream messages carry no id and are not deduplicated).
type Event struct {
	Type      chorus.EventType
	ObjectSID string
	ID        int64 // per-object event id; 0 for stream messages
	// Data is the document's new data, the item's new data (its data
	// before removal for *_item_removed), the list's new context, or the
	// stream message.
	Data        json.RawMessage
	Revision    string // document_revision or item_revision
	Index       int64  // list item index
	Key         string // map item key
	ItemURL     string
	MessageSID  string
	DateCreated time.Time
	DateExpires *time.Time
	// Local reports that this client's own write caused the event.
	Local bool
	// Err is the server's error of an EventSubscriptionFailed.
	Err error

	objRevision string // list_revision / map_revision
}

// EventSubscriptionFailed is the Type of the last event of a handle whose
// subscription the server ended while it was open (subscription_failed,
// e.g. 403/54007 after the identity lost read access). Event.Err holds the
// server's *chorus.Error; the Events channels are closed after it, as after
// a removal, and Err reports it. A later open of the object subscribes
// again.
const EventSubscriptionFailed chorus.EventType = "subscription_failed"

// entity is the shared state of an open object: one subscription, shared
// by every handle (Document, List, Map or Stream) this Client opened for
// the object.
type entity struct {
	c           *Client
	kind        chorus.Kind
	sid         string
	uniqueName  string
	url         string
	itemsURL    string
	contextURL  string
	messagesURL string

	mu          sync.Mutex
	data        json.RawMessage
	revision    string
	stateID     int64 // event id of data/revision
	delivered   int64 // last event id delivered; the resubscribe position
	dateUpdated time.Time
	dateExpires *time.Time
	removed     bool
	closed      bool  // every handle closed; out of Client.objects
	failErr     error // the subscription failed; out of Client.objects
	handles     []*handle
	local       map[int64]struct{}

	subCorr   int64 // correlation id of the latest establish
	estCorr   int64 // correlation id of the latest subscription_established
	estabDone bool
	estab     chan struct{} // closed on the first established or failed
	subErr    error
}

// handle is one open of an object: its own Events channels and callbacks
// over the entity it shares with the other handles of the same object.
// Close ends this handle alone, once.
type handle struct {
	*entity

	done      chan struct{} // closed by Close
	closeOnce sync.Once

	// sendMu is held by the dispatcher while it sends to this handle's
	// channels and by whoever closes them, so that no channel is closed
	// during a send. Lock order: sendMu → hmu → dispatcher.mu.
	sendMu sync.Mutex

	hmu     sync.Mutex
	hclosed bool // Close was called
	ended   bool // the channels were closed after a removal or failure
	chans   []chan Event
	cbs     []callback
	nextCB  int
}

type callback struct {
	id int
	fn func(Event)
}

// SID is the object's SID.
func (e *entity) SID() string { return e.sid }

// UniqueName is the object's unique name, "" if it has none.
func (e *entity) UniqueName() string { return e.uniqueName }

// URL is the object's CDS URL.
func (e *entity) URL() string { return e.url }

// LastEventID is the id of the last event delivered for the object.
func (e *entity) LastEventID() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.delivered
}

// Removed reports whether the object was removed.
func (e *entity) Removed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.removed
}

// over reports whether the object's events ended (removal or failure).
func (e *entity) over() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.removed || e.failErr != nil
}

// newHandle adds a handle to e.
func (e *entity) newHandle() *handle {
	h := &handle{entity: e, done: make(chan struct{})}
	e.mu.Lock()
	e.handles = append(e.handles, h)
	e.mu.Unlock()
	return h
}

// Err reports why the handle receives no more events: the server's
// *chorus.Error if the subscription failed (see EventSubscriptionFailed),
// ErrClosed after Close of the handle or of the Client, and nil while it
// is live and after the object's removal (see Removed).
func (h *handle) Err() error {
	h.entity.mu.Lock()
	err := h.failErr
	h.entity.mu.Unlock()
	if err != nil {
		return err
	}
	if h.isClosed() || h.c.ctx.Err() != nil {
		return ErrClosed
	}
	return nil
}

func (h *handle) isClosed() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// Events returns a new channel that receives every later event of the
// object. It is closed after the object's removal event or the
// subscription's failure (EventSubscriptionFailed), when the handle is
// closed, or when the Client is closed. Drain it until the handle is
// closed: a full channel holds up the Client's event delivery (a closed
// handle's channels never do).
func (h *handle) Events() <-chan Event {
	ch := make(chan Event, h.c.opts.EventBuffer)
	if h.over() {
		close(ch)
		return ch
	}
	h.hmu.Lock()
	defer h.hmu.Unlock()
	if h.hclosed || h.ended || !h.c.disp.register(ch) {
		close(ch)
		return ch
	}
	h.chans = append(h.chans, ch)
	return ch
}

// OnEvent calls fn for every later event of the object, on the Client's
// dispatcher goroutine, until the handle is closed. The returned func
// removes it.
func (h *handle) OnEvent(fn func(Event)) (remove func()) {
	h.hmu.Lock()
	defer h.hmu.Unlock()
	if h.hclosed {
		return func() {}
	}
	h.nextCB++
	id := h.nextCB
	h.cbs = append(h.cbs, callback{id, fn})
	return func() {
		h.hmu.Lock()
		defer h.hmu.Unlock()
		h.cbs = slices.DeleteFunc(h.cbs, func(cb callback) bool { return cb.id == id })
	}
}

// Close releases this handle: its Events channels are closed at once and
// its callbacks removed. Closing a handle again does nothing, and never
// affects the other handles of the object. When every handle of the
// object opened by this Client is closed, the subscription is canceled.
func (h *handle) Close() error {
	first := false
	h.closeOnce.Do(func() {
		first = true
		close(h.done) // a send to this handle in progress gives up
	})
	if !first {
		return nil
	}
	h.sendMu.Lock()
	h.hmu.Lock()
	h.hclosed = true
	chans := h.chans
	h.chans, h.cbs = nil, nil
	h.hmu.Unlock()
	h.c.disp.closeChans(chans)
	h.sendMu.Unlock()
	return h.entity.release(h)
}

// release drops h from e; the last handle cancels the subscription.
func (e *entity) release(h *handle) error {
	c := e.c
	c.mu.Lock()
	e.mu.Lock()
	e.handles = slices.DeleteFunc(e.handles, func(x *handle) bool { return x == h })
	last := len(e.handles) == 0 && !e.closed
	cancelSub := last && !e.removed && e.failErr == nil
	var canceled chan struct{}
	if last {
		e.closed = true
		if c.objects[e.sid] == e {
			delete(c.objects, e.sid)
		}
		if cancelSub {
			// A new open of the object waits for the cancel to be sent, so
			// that the server sees it before the new establish.
			canceled = make(chan struct{})
			c.canceling[e.sid] = canceled
		}
	}
	e.mu.Unlock()
	s := c.sess
	c.mu.Unlock()
	if !cancelSub {
		return nil
	}
	defer func() {
		c.mu.Lock()
		if c.canceling[e.sid] == canceled {
			delete(c.canceling, e.sid)
		}
		c.mu.Unlock()
		close(canceled)
	}()
	if s == nil {
		return nil // the server forgets subscriptions with the socket
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.RequestTimeout)
	defer cancel()
	body, _ := json.Marshal(map[string]any{
		"event_protocol_version": 4, "action": "cancel", "correlation_id": c.corr.Add(1),
		"retried_requests": 0, "ttl_in_s": -1,
		"requests": []map[string]string{{"object_sid": e.sid, "object_type": string(e.kind)}},
	})
	if _, err := c.do(ctx, &upstream{method: http.MethodPost, url: c.base + "/v4/Subscriptions", body: body}); err != nil &&
		!errors.Is(err, ErrDisconnected) && !errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}

// markLocal records the event id of this client's own write.
func (e *entity) markLocal(id int64) {
	if id <= 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if id > e.delivered {
		if e.local == nil {
			e.local = make(map[int64]struct{})
		}
		e.local[id] = struct{}{}
	}
}

// apply handles one event routed to the object.
func (e *entity) apply(ev Event) {
	e.mu.Lock()
	if e.removed || e.closed || e.failErr != nil {
		e.mu.Unlock()
		return
	}
	if ev.ID > 0 {
		if ev.ID <= e.delivered {
			e.mu.Unlock()
			return // duplicate (replay after reconnect, re-poke)
		}
		e.delivered = ev.ID
		if _, ok := e.local[ev.ID]; ok {
			ev.Local = true
			delete(e.local, ev.ID)
		}
		if ev.ID > e.stateID {
			e.stateID = ev.ID
			switch ev.Type {
			case chorus.EventDocumentUpdated:
				e.data, e.revision = ev.Data, ev.Revision
				e.dateUpdated, e.dateExpires = ev.DateCreated, ev.DateExpires
			case chorus.EventListContextUpdated:
				e.data = ev.Data
			}
			if ev.objRevision != "" {
				e.revision = ev.objRevision
			}
		}
	}
	removal := ev.Type.Removal()
	if removal {
		e.removed = true
	}
	listen := len(e.handles) > 0
	e.mu.Unlock()
	if listen {
		e.c.disp.push(dispatchItem{e: e, ev: ev})
	}
	if removal {
		e.c.forget(e)
	}
}

// established records a subscription_established.
func (e *entity) established(corr int64) {
	e.mu.Lock()
	e.estCorr = max(e.estCorr, corr)
	first := !e.estabDone
	e.estabDone = true
	e.mu.Unlock()
	if first {
		close(e.estab)
	}
}

// failed records a subscription_failed for the establish corr (0: the
// server ended a live subscription, e.g. after an access change). 404
// means the object is gone: its removal. Any other failure ends the
// subscription: the entity leaves the routing table (a later open
// subscribes again) and its handles get EventSubscriptionFailed.
func (e *entity) failed(corr int64, err *chorus.Error) {
	c := e.c
	c.mu.Lock()
	e.mu.Lock()
	if (corr != 0 && corr < e.subCorr) || e.removed || e.closed || e.failErr != nil {
		// An answer to an earlier establish, or the entity is done.
		e.mu.Unlock()
		c.mu.Unlock()
		return
	}
	first := !e.estabDone
	e.estabDone = true
	if first {
		e.subErr = err
	}
	gone := err.Status == http.StatusNotFound
	if !gone {
		e.failErr = err
		if c.objects[e.sid] == e {
			delete(c.objects, e.sid)
		}
	}
	listen := len(e.handles) > 0
	e.mu.Unlock()
	c.mu.Unlock()
	if first {
		close(e.estab)
	}
	switch {
	case gone:
		e.apply(Event{Type: removalType(e.kind), ObjectSID: e.sid})
	case listen && !first: // a failed open reports it to its caller instead
		c.log.Debug("client: subscription failed", slog.String("sid", e.sid), slog.Any("err", err))
		c.disp.push(dispatchItem{e: e, ev: Event{Type: EventSubscriptionFailed, ObjectSID: e.sid, Err: err}})
	}
}

func removalType(k chorus.Kind) chorus.EventType {
	switch k {
	case chorus.KindList:
		return chorus.EventListRemoved
	case chorus.KindMap:
		return chorus.EventMapRemoved
	case chorus.KindStream:
		return chorus.EventStreamRemoved
	}
	return chorus.EventDocumentRemoved
}

// open finds or creates an object, registers a new handle of it and waits
// until its subscription is established.
func (c *Client) open(ctx context.Context, k chorus.Kind, id string, mode OpenMode) (*handle, error) {
	base := c.base + "/v3/" + k.Collection()
	get := func() (*reply, error) {
		return c.do(ctx, &upstream{method: http.MethodGet, url: base + "/" + encodeURIComponent(id)})
	}
	create := func() (*reply, error) {
		b := map[string]any{}
		if id != "" {
			b["unique_name"] = id
		}
		if k == chorus.KindDocument {
			b["data"] = json.RawMessage(`{}`)
		}
		body, _ := json.Marshal(b)
		return c.do(ctx, &upstream{method: http.MethodPost, url: base, body: body})
	}
	var r *reply
	var err error
	switch {
	case mode == CreateNew || (mode == OpenOrCreate && id == ""):
		r, err = create()
	case mode == OpenExisting:
		if id == "" {
			return nil, errors.New("client: open: empty id")
		}
		r, err = get()
	case mode == OpenOrCreate:
		for range 3 {
			if r, err = get(); !isStatus(err, http.StatusNotFound) {
				break
			}
			if r, err = create(); !isStatus(err, http.StatusConflict) {
				break // created, or failed otherwise
			}
		}
	default:
		return nil, errors.New("client: open: invalid mode")
	}
	if err != nil {
		return nil, err
	}
	var d descriptor
	if err := json.Unmarshal(r.body, &d); err != nil || d.SID == "" || d.URL == "" {
		return nil, errors.New("client: open: malformed descriptor")
	}

	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	// c.objects holds live entities: closing the last handle and a failure
	// take theirs out under c.mu, a removal right after it is marked.
	c.mu.Lock()
	e := c.objects[d.SID]
	fresh := e == nil
	if fresh {
		e = &entity{c: c, kind: k, sid: d.SID, url: d.URL, itemsURL: d.Links.Items, contextURL: d.Links.Context,
			messagesURL: d.Links.Messages, data: d.Data, revision: d.Revision, estab: make(chan struct{}),
			dateUpdated: parseTime(d.DateUpdated), dateExpires: parseTimePtr(d.DateExpires)}
		if d.UniqueName != nil {
			e.uniqueName = *d.UniqueName
		}
		if d.LastEventID != nil {
			e.stateID, e.delivered = *d.LastEventID, *d.LastEventID
		}
		c.objects[d.SID] = e
	}
	h := e.newHandle()
	canceling := c.canceling[d.SID]
	c.mu.Unlock()

	if fresh {
		if canceling != nil { // an earlier handle's cancel goes first
			select {
			case <-canceling:
			case <-ctx.Done():
				h.Close()
				return nil, ctx.Err()
			}
		}
		s, err := c.session(ctx)
		if err == nil {
			err = c.subscribe(ctx, s, []*entity{e})
		}
		if err != nil && !errors.Is(err, ErrDisconnected) {
			h.Close()
			return nil, err
		}
	}
	select {
	case <-e.estab:
	case <-ctx.Done():
		h.Close()
		return nil, ctx.Err()
	}
	e.mu.Lock()
	subErr := e.subErr
	e.mu.Unlock()
	if subErr != nil {
		h.Close()
		return nil, subErr
	}
	return h, nil
}

func isStatus(err error, status int) bool {
	var ce *chorus.Error
	return errors.As(err, &ce) && ce.Status == status
}

// forget drops e from the routing table.
func (c *Client) forget(e *entity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.objects[e.sid] == e {
		delete(c.objects, e.sid)
	}
}

func (c *Client) lookup(sid string) *entity {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.objects[sid]
}

// subscribe sends one establish batch on s and arms the re-poke: an entry
// that sees no subscription_established within the server's delivery
// estimate is established again.
func (c *Client) subscribe(ctx context.Context, s *session, ents []*entity) error {
	corr := c.corr.Add(1)
	reqs := make([]map[string]any, 0, len(ents))
	for _, e := range ents {
		e.mu.Lock()
		e.subCorr = corr
		var last any = e.delivered
		if e.kind == chorus.KindStream {
			last = nil
		}
		e.mu.Unlock()
		reqs = append(reqs, map[string]any{"object_sid": e.sid, "object_type": string(e.kind), "last_event_id": last})
	}
	body, _ := json.Marshal(map[string]any{
		"event_protocol_version": 4, "action": "establish", "correlation_id": corr,
		"retried_requests": 0, "ttl_in_s": -1, "requests": reqs,
	})
	r, err := c.do(ctx, &upstream{method: http.MethodPost, url: c.base + "/v4/Subscriptions", body: body})
	if err != nil {
		return err
	}
	var resp struct {
		EstimatedMS int `json:"estimated_delivery_in_ms"`
	}
	if jsonUnmarshal(r.body, &resp) != nil || resp.EstimatedMS <= 0 {
		return nil
	}
	time.AfterFunc(time.Duration(resp.EstimatedMS)*time.Millisecond, func() {
		c.mu.Lock()
		current := c.sess == s
		c.mu.Unlock()
		if !current {
			return // the reconnect re-establishes everything
		}
		var again []*entity
		for _, e := range ents {
			e.mu.Lock()
			if e.subCorr == corr && e.estCorr < corr && !e.removed && !e.closed && e.failErr == nil {
				again = append(again, e)
			}
			e.mu.Unlock()
		}
		if len(again) > 0 {
			c.log.Debug("client: re-establishing subscriptions", slog.Int("count", len(again)))
			if err := c.subscribe(s.ctx, s, again); err != nil && s.ctx.Err() == nil {
				c.log.Warn("client: re-establish", slog.Any("err", err))
			}
		}
	})
	return nil
}

// resubscribe establishes every open object on a new session, from the
// last event each one delivered.
func (c *Client) resubscribe(s *session) {
	c.mu.Lock()
	var ents []*entity
	for _, e := range c.objects {
		ents = append(ents, e)
	}
	c.mu.Unlock()
	ents = slices.DeleteFunc(ents, func(e *entity) bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.removed || e.closed || e.failErr != nil
	})
	for batch := range slices.Chunk(ents, 100) {
		if err := c.subscribe(s.ctx, s, batch); err != nil {
			if s.ctx.Err() == nil {
				c.log.Warn("client: re-establish after reconnect", slog.Any("err", err))
			}
			return
		}
	}
}

// notification is the payload of a notification frame.
type notification struct {
	EventType     string            `json:"event_type"`
	CorrelationID json.Number       `json:"correlation_id"`
	Event         json.RawMessage   `json:"event"`
	Events        []json.RawMessage `json:"events"`
}

type wireEvent struct {
	ID               int64           `json:"id"`
	DocumentSID      string          `json:"document_sid"`
	ListSID          string          `json:"list_sid"`
	MapSID           string          `json:"map_sid"`
	StreamSID        string          `json:"stream_sid"`
	DocumentRevision string          `json:"document_revision"`
	DocumentData     json.RawMessage `json:"document_data"`
	ItemIndex        int64           `json:"item_index"`
	ItemKey          string          `json:"item_key"`
	ItemURL          string          `json:"item_url"`
	ItemRevision     string          `json:"item_revision"`
	ItemData         json.RawMessage `json:"item_data"`
	ListRevision     string          `json:"list_revision"`
	MapRevision      string          `json:"map_revision"`
	ContextData      json.RawMessage `json:"context_data"`
	MessageSID       string          `json:"message_sid"`
	MessageData      json.RawMessage `json:"message_data"`
	DateCreated      string          `json:"date_created"`
	DateExpires      *string         `json:"date_expires"`

	// subscription_* entries
	ObjectSID    string `json:"object_sid"`
	ReplayStatus string `json:"replay_status"`
	Error        *struct {
		Status  int    `json:"status"`
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// handleNotification routes one notification (reader goroutine).
func (c *Client) handleNotification(s *session, payload []byte) {
	var n notification
	if err := json.Unmarshal(payload, &n); err != nil {
		c.log.Debug("client: malformed notification", slog.Any("err", err))
		return
	}
	raws := n.Events
	if len(raws) == 0 && len(n.Event) > 0 {
		raws = []json.RawMessage{n.Event}
	}
	corr, _ := n.CorrelationID.Int64()
	for _, raw := range raws {
		var w wireEvent
		if err := json.Unmarshal(raw, &w); err != nil {
			c.log.Debug("client: malformed event", slog.Any("err", err))
			continue
		}
		switch n.EventType {
		case "subscription_established":
			if e := c.lookup(w.ObjectSID); e != nil && w.ReplayStatus == "completed" {
				e.established(corr)
			} else if e != nil && w.ReplayStatus == "interrupted" {
				go c.subscribe(s.ctx, s, []*entity{e})
			}
			continue
		case "subscription_failed":
			if e := c.lookup(w.ObjectSID); e != nil {
				ce := &chorus.Error{Message: "subscription failed"}
				if w.Error != nil {
					ce = &chorus.Error{Status: w.Error.Status, Code: w.Error.Code, Message: w.Error.Message}
				}
				e.failed(corr, ce)
			}
			continue
		case "subscription_canceled":
			continue
		}
		if !strings.HasPrefix(n.EventType, "document_") && !strings.HasPrefix(n.EventType, "list_") &&
			!strings.HasPrefix(n.EventType, "map_") && !strings.HasPrefix(n.EventType, "stream_") {
			continue
		}
		sid := cmp(w.DocumentSID, w.ListSID, w.MapSID, w.StreamSID)
		e := c.lookup(sid)
		if e == nil {
			continue
		}
		ev := Event{Type: chorus.EventType(n.EventType), ObjectSID: sid, ID: w.ID, Index: w.ItemIndex, Key: w.ItemKey,
			ItemURL: w.ItemURL, MessageSID: w.MessageSID, DateCreated: parseTime(w.DateCreated),
			DateExpires: parseTimePtr(w.DateExpires), objRevision: cmp(w.ListRevision, w.MapRevision)}
		switch {
		case w.DocumentData != nil || w.DocumentRevision != "":
			ev.Data, ev.Revision = w.DocumentData, w.DocumentRevision
		case w.ContextData != nil:
			ev.Data = w.ContextData
		case w.MessageData != nil:
			ev.Data = w.MessageData
		default:
			ev.Data, ev.Revision = w.ItemData, w.ItemRevision
		}
		e.apply(ev)
	}
}

func cmp(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// dispatchItem is an event for e's handles.
type dispatchItem struct {
	e  *entity
	ev Event
}

// dispatcher runs callbacks and feeds Events channels in arrival order,
// off the reader goroutine. Its queue is unbounded.
type dispatcher struct {
	wake chan struct{}
	done chan struct{}
	gid  atomic.Uint64 // the dispatcher goroutine's id

	mu     sync.Mutex
	q      []dispatchItem
	open   map[chan Event]struct{}
	exited bool
}

func newDispatcher() *dispatcher {
	return &dispatcher{wake: make(chan struct{}, 1), done: make(chan struct{}), open: make(map[chan Event]struct{})}
}

func (d *dispatcher) register(ch chan Event) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.exited {
		return false
	}
	d.open[ch] = struct{}{}
	return true
}

func (d *dispatcher) push(it dispatchItem) {
	d.mu.Lock()
	d.q = append(d.q, it)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// onDispatcher reports whether the caller runs on the dispatcher
// goroutine, i.e. in a callback.
func (d *dispatcher) onDispatcher() bool {
	id := d.gid.Load()
	return id != 0 && id == goid()
}

// goid is the calling goroutine's id, from the first line of its stack
// trace ("goroutine 18 [running]:"); 0 if that cannot be read.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b, ok := bytes.CutPrefix(b, []byte("goroutine "))
	if !ok {
		return 0
	}
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}

func (d *dispatcher) run(ctx context.Context) {
	d.gid.Store(goid())
	defer close(d.done)
	defer func() {
		d.mu.Lock()
		d.exited = true
		for ch := range d.open {
			close(ch)
		}
		d.open = nil
		d.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		}
		for {
			d.mu.Lock()
			batch := d.q
			d.q = nil
			d.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for _, it := range batch {
				if ctx.Err() != nil || !d.deliver(ctx, it) {
					return
				}
			}
		}
	}
}

// closeChans closes those of chans still open.
func (d *dispatcher) closeChans(chans []chan Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ch := range chans {
		if _, ok := d.open[ch]; ok {
			delete(d.open, ch)
			close(ch)
		}
	}
}

// deliver runs the callbacks of e's handles, then feeds their channels.
// After a removal or failure the channels are closed.
func (d *dispatcher) deliver(ctx context.Context, it dispatchItem) bool {
	e := it.e
	e.mu.Lock()
	hs := slices.Clone(e.handles)
	e.mu.Unlock()
	for _, h := range hs {
		h.hmu.Lock()
		cbs := slices.Clone(h.cbs)
		h.hmu.Unlock()
		for _, cb := range cbs {
			if ctx.Err() != nil {
				return false
			}
			if h.isClosed() {
				break
			}
			cb.fn(it.ev)
		}
	}
	end := it.ev.Type.Removal() || it.ev.Type == EventSubscriptionFailed
	for _, h := range hs {
		if !d.send(ctx, h, it.ev, end) {
			return false
		}
	}
	return true
}

// send feeds ev to h's channels; a closed handle (or Client) ends the
// wait for a full one. end closes them after ev.
func (d *dispatcher) send(ctx context.Context, h *handle, ev Event, end bool) bool {
	h.sendMu.Lock()
	defer h.sendMu.Unlock()
	h.hmu.Lock()
	chans := h.chans
	if end {
		h.chans, h.ended = nil, true
	} else {
		chans = slices.Clone(chans)
	}
	h.hmu.Unlock()
loop:
	for _, ch := range chans {
		if h.isClosed() {
			break
		}
		select {
		case ch <- ev:
		case <-h.done:
			break loop
		case <-ctx.Done():
			return false // run closes every channel
		}
	}
	if end {
		d.closeChans(chans)
	}
	return true
}
