package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/chorus-sync/chorus"
)

// maxMutateAttempts bounds the 412 retries of a Mutate.
const maxMutateAttempts = 1000

// Item is a list or map item.
type Item struct {
	Index       int64  // list items
	Key         string // map items
	Data        json.RawMessage
	Revision    string
	LastEventID int64
	URL         string
	DateCreated time.Time
	DateUpdated time.Time
	DateExpires *time.Time
}

// ItemQuery selects a page of items. From is an index (lists) or key
// (maps), inclusive; "" starts at the first item in Order ("asc" by
// default, or "desc"). PageSize defaults to 50; a negative one is refused
// (54454). PageToken, from a previous Page, continues that page's query
// (its page size too, unless PageSize is set) and overrides From and Order.
type ItemQuery struct {
	From      string
	PageSize  int
	Order     string
	PageToken string
}

// Page is one page of items. NextPageToken is "" on the last page.
type Page struct {
	Items         []Item
	NextPageToken string
	PrevPageToken string
}

// Message is a stream message.
type Message struct {
	SID  string
	Data json.RawMessage
}

// Mutator computes new data from the current data. Returning nil data
// cancels the write.
type Mutator func(old json.RawMessage) (json.RawMessage, error)

// writeResult is the body of a write reply.
type writeResult struct {
	Revision    string  `json:"revision"`
	LastEventID int64   `json:"last_event_id"`
	DateUpdated string  `json:"date_updated"`
	DateExpires *string `json:"date_expires"`
}

// Document is an open Sync document.
type Document struct{ *handle }

// Document opens the document id (a SID or unique name; "" with
// OpenOrCreate or CreateNew creates an anonymous one) and subscribes to
// it. Each call returns a new handle with its own Events channels,
// callbacks and Close; handles of the same object share its subscription
// and state, which ends when the last of them is closed.
func (c *Client) Document(ctx context.Context, id string, mode OpenMode) (*Document, error) {
	h, err := c.open(ctx, chorus.KindDocument, id, mode)
	if err != nil {
		return nil, fmt.Errorf("client: open document %q: %w", id, err)
	}
	return &Document{h}, nil
}

// Data is the document's current data (a copy).
func (d *Document) Data() json.RawMessage {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bytes.Clone(d.data)
}

// Revision is the document's current revision.
func (d *Document) Revision() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.revision
}

// DateExpires is when the document expires; nil if never.
func (d *Document) DateExpires() *time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dateExpires
}

// OnUpdate calls fn for every later event of the document (updates and
// the removal); see OnEvent.
func (d *Document) OnUpdate(fn func(Event)) (remove func()) { return d.OnEvent(fn) }

// Set replaces the document's data unconditionally. data is encoded as
// JSON and must encode to an object; nil sets the empty object {}.
func (d *Document) Set(ctx context.Context, data any) error {
	b, err := marshalData(data)
	if err != nil {
		return err
	}
	if _, err := d.write(ctx, b, ""); err != nil {
		return fmt.Errorf("client: set document %s: %w", d.sid, err)
	}
	return nil
}

func (d *Document) write(ctx context.Context, data json.RawMessage, ifMatch string) (*writeResult, error) {
	body, _ := json.Marshal(map[string]json.RawMessage{"data": data})
	r, err := d.c.do(ctx, &upstream{method: http.MethodPost, url: d.url, body: body, ifMatch: ifMatch, local: d.entity})
	if err != nil {
		return nil, err
	}
	var w writeResult
	if err := json.Unmarshal(r.body, &w); err != nil {
		return nil, fmt.Errorf("client: write reply: %w", err)
	}
	d.mu.Lock()
	if w.LastEventID > d.stateID {
		d.stateID, d.data, d.revision = w.LastEventID, data, w.Revision
		d.dateUpdated, d.dateExpires = parseTime(w.DateUpdated), parseTimePtr(w.DateExpires)
	}
	d.mu.Unlock()
	return &w, nil
}

// Mutate applies fn to the current data and writes the result if the
// document did not change meanwhile (If-Match). On a revision mismatch
// (412) it reads the document again and retries, so concurrent mutations
// are never lost.
func (d *Document) Mutate(ctx context.Context, fn Mutator) error {
	for range maxMutateAttempts {
		d.mu.Lock()
		old, rev := bytes.Clone(d.data), d.revision
		d.mu.Unlock()
		data, err := fn(old)
		if err != nil {
			return err
		}
		if data == nil {
			return nil
		}
		if !json.Valid(data) {
			return errors.New("client: mutate document: mutator returned invalid JSON")
		}
		_, err = d.write(ctx, data, rev)
		if !isStatus(err, http.StatusPreconditionFailed) {
			if err != nil {
				return fmt.Errorf("client: mutate document %s: %w", d.sid, err)
			}
			return nil
		}
		if err := d.refresh(ctx); err != nil {
			return fmt.Errorf("client: mutate document %s: %w", d.sid, err)
		}
	}
	return fmt.Errorf("client: mutate document %s: gave up after %d revision mismatches", d.sid, maxMutateAttempts)
}

// refresh reads the document and adopts it if it is newer.
func (d *Document) refresh(ctx context.Context) error {
	r, err := d.c.do(ctx, &upstream{method: http.MethodGet, url: d.url})
	if err != nil {
		return err
	}
	var desc descriptor
	if err := json.Unmarshal(r.body, &desc); err != nil || desc.LastEventID == nil {
		return errors.New("client: malformed document")
	}
	d.mu.Lock()
	if *desc.LastEventID >= d.stateID {
		d.stateID, d.data, d.revision = *desc.LastEventID, desc.Data, desc.Revision
		d.dateUpdated, d.dateExpires = parseTime(desc.DateUpdated), parseTimePtr(desc.DateExpires)
	}
	d.mu.Unlock()
	return nil
}

// SetTTL makes the document expire ttl from now, rounded up to a second; 0
// removes the expiry, and a negative ttl is refused (54011).
func (d *Document) SetTTL(ctx context.Context, ttl time.Duration) error {
	exp, err := setTTL(ctx, d.entity, d.url, ttl)
	if err != nil {
		return fmt.Errorf("client: set document ttl %s: %w", d.sid, err)
	}
	d.mu.Lock()
	d.dateExpires = exp
	d.mu.Unlock()
	return nil
}

// Remove deletes the document; subscribers get document_removed.
func (d *Document) Remove(ctx context.Context) error {
	if err := remove(ctx, d.entity, d.url); err != nil {
		return fmt.Errorf("client: remove document %s: %w", d.sid, err)
	}
	return nil
}

func setTTL(ctx context.Context, e *entity, u string, ttl time.Duration) (*time.Time, error) {
	secs, err := ttlSeconds(ttl)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(map[string]int64{"ttl": secs})
	r, err := e.c.do(ctx, &upstream{method: http.MethodPost, url: u, body: body, local: e})
	if err != nil {
		return nil, err
	}
	var w writeResult
	_ = jsonUnmarshal(r.body, &w)
	return parseTimePtr(w.DateExpires), nil
}

func remove(ctx context.Context, e *entity, u string) error {
	_, err := e.c.do(ctx, &upstream{method: http.MethodDelete, url: u, local: e})
	return err
}

// collectionOps are the item operations lists and maps share.
type collectionOps struct{ *entity }

func (o collectionOps) itemURL(ref string) string { return o.itemsURL + "/" + ref }

// writeItem sends an item write and returns the item.
func (o collectionOps) writeItem(ctx context.Context, method, u string, data json.RawMessage, ifMatch string) (Item, int, error) {
	body, _ := json.Marshal(map[string]json.RawMessage{"data": data})
	r, err := o.c.do(ctx, &upstream{method: method, url: u, body: body, ifMatch: ifMatch, local: o.entity})
	if err != nil {
		return Item{}, 0, err
	}
	var w wireItem
	if err := json.Unmarshal(r.body, &w); err != nil {
		return Item{}, 0, fmt.Errorf("client: item reply: %w", err)
	}
	it := w.item()
	if it.Data == nil {
		it.Data = data
	}
	return it, r.status, nil
}

// getItem reads one item by Index or Key.
func (o collectionOps) getItem(ctx context.Context, param, value string, notFound *chorus.Error) (Item, error) {
	r, err := o.c.do(ctx, &upstream{method: http.MethodGet, url: o.itemsURL,
		params: map[string]string{"HideExpired": "true", param: value}})
	if err != nil {
		return Item{}, err
	}
	var p struct {
		Items []wireItem `json:"items"`
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		return Item{}, fmt.Errorf("client: items reply: %w", err)
	}
	if len(p.Items) == 0 {
		return Item{}, chorus.Errorf(notFound, "%s", notFound.Message)
	}
	return p.Items[0].item(), nil
}

func (o collectionOps) removeItem(ctx context.Context, u string) error {
	return remove(ctx, o.entity, u)
}

func (o collectionOps) items(ctx context.Context, q ItemQuery, from string) (Page, error) {
	params := map[string]string{"HideExpired": "true"}
	if q.PageToken != "" {
		params["PageToken"] = encodeURIComponent(q.PageToken)
	} else {
		if from != "" {
			params["From"] = from
		}
		if q.Order != "" {
			params["Order"] = encodeURIComponent(q.Order)
		}
	}
	switch {
	case q.PageSize < 0:
		return Page{}, chorus.Errorf(chorus.ErrInvalidPageSize, "Invalid PageSize: %d (0 for the default of 50)", q.PageSize)
	case q.PageSize > 0:
		params["PageSize"] = strconv.Itoa(q.PageSize)
	case q.PageToken == "":
		params["PageSize"] = "50"
		// With a token and no size, the token's own size continues.
	}
	r, err := o.c.do(ctx, &upstream{method: http.MethodGet, url: o.itemsURL, params: params})
	if err != nil {
		return Page{}, err
	}
	var p struct {
		Items []wireItem `json:"items"`
		Meta  struct {
			Next *string `json:"next_token"`
			Prev *string `json:"previous_token"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		return Page{}, fmt.Errorf("client: items reply: %w", err)
	}
	page := Page{Items: make([]Item, 0, len(p.Items))}
	for i := range p.Items {
		page.Items = append(page.Items, p.Items[i].item())
	}
	if p.Meta.Next != nil {
		page.NextPageToken = *p.Meta.Next
	}
	if p.Meta.Prev != nil {
		page.PrevPageToken = *p.Meta.Prev
	}
	return page, nil
}

// mutateItem runs the If-Match retry loop of List.Mutate and Map.Mutate.
// get returns the current item (a not-found error for a missing one);
// put writes data with If-Match rev ("-1": create only).
func mutateItem(ctx context.Context, fn Mutator, get func() (Item, error),
	put func(data json.RawMessage, rev string) (Item, error), allowCreate bool) (Item, error) {
	for range maxMutateAttempts {
		cur, err := get()
		var old json.RawMessage
		rev := cur.Revision
		switch {
		case err == nil:
			old = cur.Data
		case allowCreate && isStatus(err, http.StatusNotFound):
			old, rev = json.RawMessage(`{}`), "-1"
		default:
			return Item{}, err
		}
		data, err := fn(bytes.Clone(old))
		if err != nil {
			return Item{}, err
		}
		if data == nil {
			return cur, nil
		}
		if !json.Valid(data) {
			return Item{}, errors.New("client: mutator returned invalid JSON")
		}
		it, err := put(data, rev)
		if isStatus(err, http.StatusPreconditionFailed) {
			continue
		}
		return it, err
	}
	return Item{}, fmt.Errorf("gave up after %d revision mismatches", maxMutateAttempts)
}

// List is an open Sync list.
type List struct{ *handle }

// List opens the list id and subscribes to it; see Document.
func (c *Client) List(ctx context.Context, id string, mode OpenMode) (*List, error) {
	h, err := c.open(ctx, chorus.KindList, id, mode)
	if err != nil {
		return nil, fmt.Errorf("client: open list %q: %w", id, err)
	}
	return &List{h}, nil
}

func (l *List) ops() collectionOps { return collectionOps{l.entity} }

// Push appends an item and returns it with its index.
func (l *List) Push(ctx context.Context, data any) (Item, error) {
	b, err := marshalData(data)
	if err != nil {
		return Item{}, err
	}
	it, _, err := l.ops().writeItem(ctx, http.MethodPost, l.itemsURL, b, "")
	if err != nil {
		return Item{}, fmt.Errorf("client: push to list %s: %w", l.sid, err)
	}
	return it, nil
}

// Get reads the item at index (404/54151 if there is none).
func (l *List) Get(ctx context.Context, index int64) (Item, error) {
	it, err := l.ops().getItem(ctx, "Index", strconv.FormatInt(index, 10), chorus.ErrListItemNotFound)
	if err != nil {
		return Item{}, fmt.Errorf("client: get list item %s/%d: %w", l.sid, index, err)
	}
	return it, nil
}

// Set replaces the data of the item at index.
func (l *List) Set(ctx context.Context, index int64, data any) (Item, error) {
	b, err := marshalData(data)
	if err != nil {
		return Item{}, err
	}
	it, _, err := l.ops().writeItem(ctx, http.MethodPost, l.ops().itemURL(strconv.FormatInt(index, 10)), b, "")
	if err != nil {
		return Item{}, fmt.Errorf("client: set list item %s/%d: %w", l.sid, index, err)
	}
	return it, nil
}

// Mutate applies fn to the item at index with If-Match, retrying on 412.
func (l *List) Mutate(ctx context.Context, index int64, fn Mutator) (Item, error) {
	idx := strconv.FormatInt(index, 10)
	it, err := mutateItem(ctx, fn,
		func() (Item, error) { return l.ops().getItem(ctx, "Index", idx, chorus.ErrListItemNotFound) },
		func(data json.RawMessage, rev string) (Item, error) {
			it, _, err := l.ops().writeItem(ctx, http.MethodPost, l.ops().itemURL(idx), data, rev)
			return it, err
		}, false)
	if err != nil {
		return Item{}, fmt.Errorf("client: mutate list item %s/%d: %w", l.sid, index, err)
	}
	return it, nil
}

// Remove deletes the item at index.
func (l *List) Remove(ctx context.Context, index int64) error {
	if err := l.ops().removeItem(ctx, l.ops().itemURL(strconv.FormatInt(index, 10))); err != nil {
		return fmt.Errorf("client: remove list item %s/%d: %w", l.sid, index, err)
	}
	return nil
}

// Items reads a page of items; From is an index.
func (l *List) Items(ctx context.Context, q ItemQuery) (Page, error) {
	p, err := l.ops().items(ctx, q, q.From)
	if err != nil {
		return Page{}, fmt.Errorf("client: list items %s: %w", l.sid, err)
	}
	return p, nil
}

// RemoveList deletes the list.
func (l *List) RemoveList(ctx context.Context) error {
	if err := remove(ctx, l.entity, l.url); err != nil {
		return fmt.Errorf("client: remove list %s: %w", l.sid, err)
	}
	return nil
}

// Map is an open Sync map.
type Map struct{ *handle }

// Map opens the map id and subscribes to it; see Document.
func (c *Client) Map(ctx context.Context, id string, mode OpenMode) (*Map, error) {
	h, err := c.open(ctx, chorus.KindMap, id, mode)
	if err != nil {
		return nil, fmt.Errorf("client: open map %q: %w", id, err)
	}
	return &Map{h}, nil
}

func (m *Map) ops() collectionOps { return collectionOps{m.entity} }

// Set creates or replaces the item key. created reports a new item.
func (m *Map) Set(ctx context.Context, key string, data any) (it Item, created bool, err error) {
	b, err := marshalData(data)
	if err != nil {
		return Item{}, false, err
	}
	it, status, err := m.ops().writeItem(ctx, http.MethodPut, m.ops().itemURL(encodeURIComponent(key)), b, "")
	if err != nil {
		return Item{}, false, fmt.Errorf("client: set map item %s/%q: %w", m.sid, key, err)
	}
	return it, status == http.StatusCreated, nil
}

// Get reads the item key (404/54201 if there is none).
func (m *Map) Get(ctx context.Context, key string) (Item, error) {
	it, err := m.ops().getItem(ctx, "Key", encodeURIComponent(key), chorus.ErrMapItemNotFound)
	if err != nil {
		return Item{}, fmt.Errorf("client: get map item %s/%q: %w", m.sid, key, err)
	}
	return it, nil
}

// Mutate applies fn to the item key with If-Match, retrying on 412. A
// missing item is created from fn({}) (If-Match: -1).
func (m *Map) Mutate(ctx context.Context, key string, fn Mutator) (Item, error) {
	enc := encodeURIComponent(key)
	it, err := mutateItem(ctx, fn,
		func() (Item, error) { return m.ops().getItem(ctx, "Key", enc, chorus.ErrMapItemNotFound) },
		func(data json.RawMessage, rev string) (Item, error) {
			it, _, err := m.ops().writeItem(ctx, http.MethodPut, m.ops().itemURL(enc), data, rev)
			return it, err
		}, true)
	if err != nil {
		return Item{}, fmt.Errorf("client: mutate map item %s/%q: %w", m.sid, key, err)
	}
	return it, nil
}

// Remove deletes the item key.
func (m *Map) Remove(ctx context.Context, key string) error {
	if err := m.ops().removeItem(ctx, m.ops().itemURL(encodeURIComponent(key))); err != nil {
		return fmt.Errorf("client: remove map item %s/%q: %w", m.sid, key, err)
	}
	return nil
}

// Items reads a page of items; From is a key.
func (m *Map) Items(ctx context.Context, q ItemQuery) (Page, error) {
	from := ""
	if q.From != "" {
		from = encodeURIComponent(q.From)
	}
	p, err := m.ops().items(ctx, q, from)
	if err != nil {
		return Page{}, fmt.Errorf("client: map items %s: %w", m.sid, err)
	}
	return p, nil
}

// RemoveMap deletes the map.
func (m *Map) RemoveMap(ctx context.Context) error {
	if err := remove(ctx, m.entity, m.url); err != nil {
		return fmt.Errorf("client: remove map %s: %w", m.sid, err)
	}
	return nil
}

// Stream is an open Sync message stream.
type Stream struct{ *handle }

// Stream opens the stream id and subscribes to it; see Document.
func (c *Client) Stream(ctx context.Context, id string, mode OpenMode) (*Stream, error) {
	h, err := c.open(ctx, chorus.KindStream, id, mode)
	if err != nil {
		return nil, fmt.Errorf("client: open stream %q: %w", id, err)
	}
	return &Stream{h}, nil
}

// Publish sends a message (at most 4 KiB of JSON) to every subscriber,
// this client included.
func (s *Stream) Publish(ctx context.Context, data any) (Message, error) {
	b, err := marshalData(data)
	if err != nil {
		return Message{}, err
	}
	body, _ := json.Marshal(map[string]json.RawMessage{"data": b})
	r, err := s.c.do(ctx, &upstream{method: http.MethodPost, url: s.messagesURL, body: body})
	if err != nil {
		return Message{}, fmt.Errorf("client: publish to stream %s: %w", s.sid, err)
	}
	var m struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(r.body, &m); err != nil {
		return Message{}, fmt.Errorf("client: publish reply: %w", err)
	}
	return Message{SID: m.SID, Data: b}, nil
}

// OnMessage calls fn for every message published to the stream later.
func (s *Stream) OnMessage(fn func(Message)) (remove func()) {
	return s.OnEvent(func(ev Event) {
		if ev.Type == chorus.EventStreamMessagePublished {
			fn(Message{SID: ev.MessageSID, Data: ev.Data})
		}
	})
}

// RemoveStream deletes the stream.
func (s *Stream) RemoveStream(ctx context.Context) error {
	if err := remove(ctx, s.entity, s.url); err != nil {
		return fmt.Errorf("client: remove stream %s: %w", s.sid, err)
	}
	return nil
}
