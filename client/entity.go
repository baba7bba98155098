package client

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
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

	objRevision string // list_revision / map_revision
}

// entity is the shared state of an open object; Document, List, Map and
// Stream embed it.
type entity struct {
	c           *Client
	kind        chorus.Kind
	sid         string
	uniqueName  string
	url         string
	itemsURL    string
	contextURL  string
	messagesURL string
	handle      any // *Document, *List, *Map or *Stream

	mu          sync.Mutex
	data        json.RawMessage
	revision    string
	stateID     int64 // event id of data/revision
	delivered   int64 // last event id delivered; the resubscribe position
	dateUpdated time.Time
	dateExpires *time.Time
	removed     bool
	closed      bool
	refs        int
	local       map[int64]struct{}
	chans       []chan Event
	cbs         []callback
	nextCB      int

	subCorr   int64 // correlation id of the latest establish
	estCorr   int64 // correlation id of the latest subscription_established
	estabDone bool
	estab     chan struct{} // closed on the first established or failed
	subErr    error
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

// Events returns a new channel that receives every later event of the
// object. It is closed after the object's removal event, when the handle
// is closed, or when the Client is closed. Drain it: a full channel holds
// up the Client's event delivery.
func (e *entity) Events() <-chan Event {
	ch := make(chan Event, e.c.opts.EventBuffer)
	if !e.c.disp.register(ch) {
		close(ch)
		return ch
	}
	e.mu.Lock()
	if e.closed || e.removed {
		e.mu.Unlock()
		e.c.disp.push(dispatchItem{closeChans: []chan Event{ch}})
		return ch
	}
	e.chans = append(e.chans, ch)
	e.mu.Unlock()
	return ch
}

// OnEvent calls fn for every later event of the object, on the Client's
// dispatcher goroutine. The returned func removes it.
func (e *entity) OnEvent(fn func(Event)) (remove func()) {
	e.mu.Lock()
	e.nextCB++
	id := e.nextCB
	e.cbs = append(e.cbs, callback{id, fn})
	e.mu.Unlock()
	return func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.cbs = slices.DeleteFunc(e.cbs, func(cb callback) bool { return cb.id == id })
	}
}

// Close releases this handle. When every handle of the object opened by
// this Client is closed, the subscription is canceled and the Events
// channels are closed.
func (e *entity) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.refs--
	if e.refs > 0 {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	chans := e.chans
	e.chans, e.cbs = nil, nil
	removed := e.removed
	e.mu.Unlock()
	c := e.c
	c.forget(e)
	c.disp.push(dispatchItem{closeChans: chans})
	if removed {
		return nil
	}
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
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
	if e.removed || e.closed {
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
	listen := len(e.chans) > 0 || len(e.cbs) > 0
	e.mu.Unlock()
	if listen || removal {
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

// failed records a subscription_failed; 404 means the object is gone.
func (e *entity) failed(err *chorus.Error) {
	e.mu.Lock()
	e.subErr = err
	first := !e.estabDone
	e.estabDone = true
	e.mu.Unlock()
	if first {
		close(e.estab)
	}
	if err.Status == http.StatusNotFound {
		e.apply(Event{Type: removalType(e.kind), ObjectSID: e.sid})
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

// open finds or creates an object, registers it and waits until its
// subscription is established.
func (c *Client) open(ctx context.Context, k chorus.Kind, id string, mode OpenMode, newHandle func(*entity) any) (*entity, error) {
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
		e.handle = newHandle(e)
		c.objects[d.SID] = e
	}
	e.mu.Lock()
	e.refs++
	e.mu.Unlock()
	c.mu.Unlock()

	if fresh {
		s, err := c.session(ctx)
		if err == nil {
			err = c.subscribe(ctx, s, []*entity{e})
		}
		if err != nil && !errors.Is(err, ErrDisconnected) {
			e.Close()
			return nil, err
		}
	}
	select {
	case <-e.estab:
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	e.mu.Lock()
	subErr := e.subErr
	e.mu.Unlock()
	if subErr != nil {
		e.Close()
		return nil, subErr
	}
	return e, nil
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
			if e.subCorr == corr && e.estCorr < corr && !e.removed && !e.closed && e.subErr == nil {
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
		return e.removed || e.closed || e.subErr != nil
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
				e.failed(ce)
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

// dispatchItem is an event for e's listeners, or channels to close.
type dispatchItem struct {
	e          *entity
	ev         Event
	closeChans []chan Event
}

// dispatcher runs callbacks and feeds Events channels in arrival order,
// off the reader goroutine. Its queue is unbounded.
type dispatcher struct {
	wake chan struct{}
	done chan struct{}

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

func (d *dispatcher) run(ctx context.Context) {
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
				if !d.deliver(ctx, it) {
					return
				}
			}
		}
	}
}

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

func (d *dispatcher) deliver(ctx context.Context, it dispatchItem) bool {
	if it.e == nil {
		d.closeChans(it.closeChans)
		return true
	}
	e := it.e
	e.mu.Lock()
	cbs := slices.Clone(e.cbs)
	chans := slices.Clone(e.chans)
	removal := it.ev.Type.Removal()
	if removal {
		e.chans = nil
	}
	e.mu.Unlock()
	for _, cb := range cbs {
		cb.fn(it.ev)
	}
	for _, ch := range chans {
		d.mu.Lock()
		_, ok := d.open[ch]
		d.mu.Unlock()
		if !ok {
			continue
		}
		select {
		case ch <- it.ev:
		case <-ctx.Done():
			return false
		}
	}
	if removal {
		d.closeChans(chans)
	}
	return true
}
