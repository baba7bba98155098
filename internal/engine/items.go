package engine

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chorus-sync/chorus"
)

func itemDataErr(k chorus.Kind) *chorus.Error {
	if k == chorus.KindMap {
		return chorus.ErrMapItemData
	}
	return chorus.ErrListItemData
}

func itemRevisionErr(k chorus.Kind) *chorus.Error {
	if k == chorus.KindMap {
		return chorus.ErrMapItemRevision
	}
	return chorus.ErrListItemRevision
}

// errMapItemExists412 is 54208 with the status the SDK handles for a PUT
// with If-Match: -1.
var errMapItemExists412 = &chorus.Error{Status: http.StatusPreconditionFailed, Code: chorus.ErrMapItemExists.Code, Message: chorus.ErrMapItemExists.Message}

func itemEvent(k chorus.Kind, added, removed bool) chorus.EventType {
	switch {
	case k == chorus.KindMap && added:
		return chorus.EventMapItemAdded
	case k == chorus.KindMap && removed:
		return chorus.EventMapItemRemoved
	case k == chorus.KindMap:
		return chorus.EventMapItemUpdated
	case added:
		return chorus.EventListItemAdded
	case removed:
		return chorus.EventListItemRemoved
	}
	return chorus.EventListItemUpdated
}

// checkItemWrite validates the parts of w that do not need the store.
func checkItemWrite(k chorus.Kind, w *ItemWrite) error {
	if err := validTTL(w.ItemTTL); err != nil {
		return err
	}
	if err := validTTL(w.CollectionTTL); err != nil {
		return err
	}
	if w.Data != nil {
		d, err := validData(w.Data, chorus.MaxDataBytes, itemDataErr(k))
		if err != nil {
			return err
		}
		w.Data = d
	}
	if w.IfMatch != "" && w.IfMatch != "-1" {
		if _, err := chorus.ParseRevision(w.IfMatch); err != nil {
			return err
		}
	}
	return nil
}

// AddListItem appends an item to a list.
func (e *Engine) AddListItem(ctx context.Context, a Actor, svc *chorus.Service, listID string, w ItemWrite) (*chorus.Item, error) {
	if w.Data == nil {
		return nil, chorus.Errorf(chorus.ErrListItemData, "Invalid List Item data: Data is required")
	}
	if err := checkItemWrite(chorus.KindList, &w); err != nil {
		return nil, err
	}
	var it *chorus.Item
	err := e.update(ctx, a, func(tx chorus.Tx, c *change) error {
		obj, err := e.lookup(ctx, tx, svc, chorus.KindList, listID)
		if err != nil {
			return err
		}
		if err := authorize(ctx, tx, a, svc, obj, accessWrite); err != nil {
			return err
		}
		it = &chorus.Item{
			Kind: chorus.KindList, ObjectSID: obj.SID, Index: obj.NextIndex, Data: w.Data, CreatedBy: a.Identity,
			DateCreated: c.now, DateUpdated: c.now, DateExpires: chorus.ExpiresAt(c.now, deref(w.ItemTTL)),
		}
		obj.NextIndex++
		return e.commitItem(ctx, tx, c, obj, it, w.CollectionTTL, chorus.EventListItemAdded)
	})
	if err != nil {
		return nil, err
	}
	return it, nil
}

// commitItem writes it, bumps its collection and logs the item event.
func (e *Engine) commitItem(ctx context.Context, tx chorus.Tx, c *change, obj *chorus.Object, it *chorus.Item, collectionTTL *int, typ chorus.EventType) error {
	obj.Revision++
	obj.DateUpdated = c.now
	if collectionTTL != nil {
		obj.DateExpires = chorus.ExpiresAt(c.now, *collectionTTL)
	}
	ev := &chorus.Event{
		Type: typ, Revision: obj.RevisionString(), ItemIndex: it.Index, ItemKey: it.Key,
		ItemRevision: it.RevisionString(), ItemData: it.Data, DateExpires: it.DateExpires,
	}
	if err := c.emit(ctx, tx, obj, ev); err != nil {
		return err
	}
	it.LastEventID = ev.ID
	if err := tx.PutItem(ctx, it); err != nil {
		return err
	}
	return tx.UpdateObject(ctx, obj)
}

// WriteItem updates, upserts or creates a list or map item according to
// w.Mode. created reports whether the item is new.
func (e *Engine) WriteItem(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, objectID string, ref chorus.ItemRef, w ItemWrite) (it *chorus.Item, created bool, err error) {
	if k == chorus.KindMap {
		if err := validKey(ref.Key); err != nil {
			return nil, false, err
		}
	} else if w.Mode != Update || ref.Index < 0 {
		return nil, false, chorus.ErrInvalidIndex
	}
	if err := checkItemWrite(k, &w); err != nil {
		return nil, false, err
	}
	if w.IfMatch == "-1" {
		w.Mode, w.IfMatch, w.ConflictStatus412 = CreateOnly, "", true
	}
	if w.Mode == Update && w.Data == nil && w.ItemTTL == nil && w.CollectionTTL == nil {
		return nil, false, chorus.ErrNoParameters
	}
	err = e.update(ctx, a, func(tx chorus.Tx, c *change) error {
		created = false
		obj, err := e.lookup(ctx, tx, svc, k, objectID)
		if err != nil {
			return err
		}
		if err := authorize(ctx, tx, a, svc, obj, accessWrite); err != nil {
			return err
		}
		old, err := tx.Item(ctx, obj.SID, ref)
		switch {
		case isNotFound(err) || (err == nil && old.Expired(c.now)):
			old = nil
		case err != nil:
			return err
		}
		it, created, err = nextItem(k, obj, old, ref, w, a, c)
		if err != nil {
			return err
		}
		if !created && w.Data == nil {
			// TTL only: no new revision and no event, as for documents.
			if w.CollectionTTL != nil {
				obj.DateExpires = chorus.ExpiresAt(c.now, *w.CollectionTTL)
			}
			if err := tx.PutItem(ctx, it); err != nil {
				return err
			}
			return tx.UpdateObject(ctx, obj)
		}
		return e.commitItem(ctx, tx, c, obj, it, w.CollectionTTL, itemEvent(k, created, false))
	})
	if err != nil {
		return nil, false, err
	}
	return it, created, nil
}

// nextItem decides what a write does to old (nil when absent) and returns
// the item to store.
func nextItem(k chorus.Kind, obj *chorus.Object, old *chorus.Item, ref chorus.ItemRef, w ItemWrite, a Actor, c *change) (*chorus.Item, bool, error) {
	if old == nil {
		switch {
		case w.Mode == Update:
			return nil, false, k.ItemNotFound()
		case w.IfMatch != "": // a revision of an item that is gone: 412, never 404
			return nil, false, itemRevisionErr(k)
		case w.Data == nil:
			return nil, false, chorus.Errorf(itemDataErr(k), "%s: Data is required", itemDataErr(k).Message)
		}
		return &chorus.Item{
			Kind: k, ObjectSID: obj.SID, Index: ref.Index, Key: ref.Key, Data: w.Data, CreatedBy: a.Identity,
			DateCreated: c.now, DateUpdated: c.now, DateExpires: chorus.ExpiresAt(c.now, deref(w.ItemTTL)),
		}, true, nil
	}
	if w.Mode == CreateOnly {
		if w.ConflictStatus412 {
			return nil, false, errMapItemExists412
		}
		return nil, false, chorus.ErrMapItemExists
	}
	if w.IfMatch != "" {
		rev, _ := chorus.ParseRevision(w.IfMatch) // validated in checkItemWrite
		if rev != old.Revision {
			return nil, false, itemRevisionErr(k)
		}
	}
	it := *old
	if w.Data != nil {
		it.Data = w.Data
		it.Revision++
	}
	if w.ItemTTL != nil {
		it.DateExpires = chorus.ExpiresAt(c.now, *w.ItemTTL)
	}
	it.DateUpdated = c.now
	return &it, false, nil
}

// Item returns one item.
func (e *Engine) Item(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, objectID string, ref chorus.ItemRef) (*chorus.Item, error) {
	if k == chorus.KindMap && !validText(ref.Key) {
		return nil, chorus.ErrMapItemKey
	}
	var it *chorus.Item
	err := e.view(ctx, func(tx chorus.ReadTx) error {
		obj, err := e.lookup(ctx, tx, svc, k, objectID)
		if err != nil {
			return err
		}
		if err := authorize(ctx, tx, a, svc, obj, accessRead); err != nil {
			return err
		}
		it, err = tx.Item(ctx, obj.SID, ref)
		if err != nil {
			return notFoundAs(err, k.ItemNotFound())
		}
		if it.Expired(e.cfg.Now()) {
			return k.ItemNotFound()
		}
		return nil
	})
	return it, err
}

// itemPos is an item's place in its collection's order, as a string.
func itemPos(it *chorus.Item) string {
	if it.Kind == chorus.KindMap {
		return it.Key
	}
	return strconv.FormatInt(it.Index, 10)
}

// setFrom fills the From fields of q from a position string.
func setFrom(q *chorus.ItemQuery, k chorus.Kind, pos string, inclusive bool) error {
	q.HasFrom, q.Inclusive = true, inclusive
	if k == chorus.KindMap {
		if !validText(pos) {
			return chorus.Errorf(chorus.ErrInvalidParameter, "Invalid From: expected valid UTF-8 without NUL")
		}
		q.FromKey = pos
		return nil
	}
	n, err := strconv.ParseInt(pos, 10, 64)
	if err != nil || n < 0 {
		return chorus.Errorf(chorus.ErrInvalidIndex, "Invalid From %q: expected a non-negative integer list index", pos)
	}
	q.FromIndex = n
	return nil
}

// Items pages a list's or map's items.
func (e *Engine) Items(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, objectID string, p ItemPageRequest) (Page[*chorus.Item], error) {
	var page Page[*chorus.Item]
	size, err := pageSize(p.PageSize)
	if err != nil {
		return page, err
	}
	order, inclusive := p.Order, true
	switch order {
	case "", "asc":
		order = "asc"
	case "desc":
	default:
		return page, chorus.ErrInvalidOrder
	}
	switch p.Bounds {
	case "", "inclusive":
	case "exclusive":
		inclusive = false
	default:
		return page, chorus.ErrInvalidBounds
	}
	from, before := p.From, false
	page.Filters = ItemFilters{Order: p.Order, From: p.From, Bounds: p.Bounds}
	var scope string // the object's SID a token names, if any
	if p.Token != "" {
		var t itemToken
		if err := decodeToken(p.Token, &t); err != nil {
			return page, err
		}
		if t.O != "asc" && t.O != "desc" {
			return page, chorus.ErrInvalidPageToken
		}
		if t.K != "" {
			issued, ok := tokenFilters(t.R)
			if !ok || !sameFilters(issued, page.Filters) {
				return page, chorus.Errorf(chorus.ErrInvalidPageToken,
					"Invalid PageToken: it pages with another Order, From or Bounds than this request's")
			}
			// A token sent alone pages, and issues tokens, with its own.
			page.Filters = issued
		}
		from, order, inclusive, before, scope = t.F, t.O, t.I, t.B, t.K
	}
	request := page.Filters.Order + "|" + page.Filters.Bounds + "|" + page.Filters.From // as next_page_url repeats them
	q := chorus.ItemQuery{Kind: k, Desc: order == "desc", Limit: size + 1, Now: e.cfg.Now()}
	if from != "" || p.Token != "" {
		if err := setFrom(&q, k, from, inclusive); err != nil {
			return page, err
		}
	}
	if before {
		q.Desc = !q.Desc
	}
	page.PageSize = size
	err = e.view(ctx, func(tx chorus.ReadTx) error {
		obj, err := e.lookup(ctx, tx, svc, k, objectID)
		if err != nil {
			return err
		}
		if err := authorize(ctx, tx, a, svc, obj, accessRead); err != nil {
			return err
		}
		if !inScope(scope, obj.SID) {
			return chorus.Errorf(chorus.ErrInvalidPageToken, "Invalid PageToken: it pages another listing")
		}
		tok := func(t itemToken) string {
			t.O, t.K, t.R = order, obj.SID, request
			return encodeToken(t)
		}
		rows, err := tx.Items(ctx, obj.SID, q)
		if err != nil {
			return err
		}
		more := len(rows) > size
		if more {
			rows = rows[:size]
		}
		if before {
			slices.Reverse(rows)
			page.Items = rows
			if len(rows) > 0 {
				page.NextToken = tok(itemToken{F: itemPos(rows[len(rows)-1])})
				if more {
					page.PrevToken = tok(itemToken{F: itemPos(rows[0]), B: true})
				}
			}
			return nil
		}
		page.Items = rows
		if more {
			page.NextToken = tok(itemToken{F: itemPos(rows[len(rows)-1])})
		}
		return e.setPrevToken(ctx, tx, obj.SID, q, &page, tok)
	})
	return page, err
}

// tokenFilters reads the filters an item token was issued with (its R:
// "order|bounds|from").
func tokenFilters(r string) (ItemFilters, bool) {
	parts := strings.SplitN(r, "|", 3) // order and bounds hold no "|"; from may
	if len(parts) != 3 {
		return ItemFilters{}, false
	}
	return ItemFilters{Order: parts[0], Bounds: parts[1], From: parts[2]}, true
}

// sameFilters reports whether the filters a request sends beside a token
// agree with those the token was issued with: each that is sent must be
// the same; one left out is the token's (a client that sends the token
// alone).
func sameFilters(issued, sent ItemFilters) bool {
	agree := func(issued, sent, def string) bool {
		return sent == "" || sent == issued || (sent == def && issued == "")
	}
	return agree(issued.Order, sent.Order, "asc") && agree(issued.From, sent.From, "") &&
		agree(issued.Bounds, sent.Bounds, "inclusive")
}

// setPrevToken sets PrevToken when an item precedes the page in its order.
func (e *Engine) setPrevToken(ctx context.Context, tx chorus.ReadTx, objectSID string, q chorus.ItemQuery, page *Page[*chorus.Item], tok func(itemToken) string) error {
	probe := q
	probe.Desc, probe.Limit = !q.Desc, 1
	switch {
	case len(page.Items) > 0:
		if err := setFrom(&probe, q.Kind, itemPos(page.Items[0]), false); err != nil {
			return err
		}
	case q.HasFrom:
		// Nothing at or after From: whatever lies before From precedes.
		probe.Inclusive = !q.Inclusive
	default:
		return nil
	}
	rows, err := tx.Items(ctx, objectSID, probe)
	if err != nil || len(rows) == 0 {
		return err
	}
	if len(page.Items) == 0 {
		// Page backwards from the nearest preceding item, included.
		page.PrevToken = tok(itemToken{F: itemPos(rows[0]), B: true, I: true})
		return nil
	}
	page.PrevToken = tok(itemToken{F: itemPos(page.Items[0]), B: true})
	return nil
}

// DeleteItem deletes an item (If-Match optional) and returns it as it was,
// with LastEventID set to the removal event's id and DateUpdated to the
// time of removal.
func (e *Engine) DeleteItem(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, objectID string, ref chorus.ItemRef, ifMatch string) (*chorus.Item, error) {
	if k == chorus.KindMap && !validText(ref.Key) {
		return nil, chorus.ErrMapItemKey
	}
	rev, err := ifMatchRevision(ifMatch)
	if err != nil {
		return nil, err
	}
	var it *chorus.Item
	err = e.update(ctx, a, func(tx chorus.Tx, c *change) error {
		obj, err := e.lookup(ctx, tx, svc, k, objectID)
		if err != nil {
			return err
		}
		if err := authorize(ctx, tx, a, svc, obj, accessWrite); err != nil {
			return err
		}
		it, err = tx.Item(ctx, obj.SID, ref)
		if err != nil {
			return notFoundAs(err, k.ItemNotFound())
		}
		if it.Expired(c.now) {
			return k.ItemNotFound()
		}
		if rev >= 0 && rev != it.Revision {
			return itemRevisionErr(k)
		}
		return e.removeItem(ctx, tx, c, obj, it)
	})
	if err != nil {
		return nil, err
	}
	return it, nil
}

// removeItem deletes it and logs its removal (carrying its last data).
func (e *Engine) removeItem(ctx context.Context, tx chorus.Tx, c *change, obj *chorus.Object, it *chorus.Item) error {
	if err := tx.DeleteItem(ctx, obj.SID, chorus.ItemRef{Index: it.Index, Key: it.Key}); err != nil {
		return err
	}
	obj.Revision++
	obj.DateUpdated = c.now
	ev := &chorus.Event{
		Type: itemEvent(it.Kind, false, true), Revision: obj.RevisionString(), ItemIndex: it.Index, ItemKey: it.Key,
		ItemRevision: it.RevisionString(), ItemData: it.Data,
	}
	if err := c.emit(ctx, tx, obj, ev); err != nil {
		return err
	}
	it.LastEventID = ev.ID
	it.DateUpdated = c.now
	return tx.UpdateObject(ctx, obj)
}

// DefaultMessageConfirmWait is how long a stream message's publish waits
// for the bus to confirm it. A stall shorter than that delivers the
// message once and answers 201 (a 2 s wait answered 503 during a 12 s NATS
// freeze, the SDK published again, and the first copy arrived as well: 3
// in all). It is short enough that a session's requests queued behind the
// publish (an SDK session's are served one at a time) stay within
// twilsock's 20 s request timeout: later publishes do not wait again while
// the bus is known to be stalled (postMessage).
const DefaultMessageConfirmWait = 10 * time.Second

// disconnectCounter is a Bus that counts the connections it lost (nats):
// what was published before a loss may have gone with the connection.
type disconnectCounter interface{ Disconnects() uint64 }

func busDisconnects(b chorus.Bus) uint64 {
	if d, ok := b.(disconnectCounter); ok {
		return d.Disconnects()
	}
	return 0
}

// confirmPublished waits until the bus has everything published before
// the call (Ping) on the connection it was published on (gen, from
// busDisconnects), for at most MessageConfirmWait. Publish only buffers a
// message: a bus cut off unnoticed (a NATS stall, a network cut) took 859
// messages a tester published, and they reached nobody. A stalled server
// that answers within the wait has the message once, and its publisher a
// 201 rather than a 503 it would retry. After a lost connection, or past
// the wait, the outcome is unknown.
func (e *Engine) confirmPublished(ctx context.Context, gen uint64) error {
	deadline := time.Now().Add(e.cfg.MessageConfirmWait)
	for {
		err := e.cfg.Bus.Ping(ctx)
		if busDisconnects(e.cfg.Bus) != gen {
			return chorus.Wrap(chorus.ErrUnavailable, errors.New("the bus lost its connection before confirming the message"))
		}
		if err == nil {
			e.busStalled.Store(false)
			return nil
		}
		if !time.Now().Before(deadline) {
			e.busStalled.Store(true)
			return err
		}
		time.Sleep(min(100*time.Millisecond, time.Until(deadline))) // a Ping that failed at once
	}
}

// probeBus pings a stalled bus in the background, one ping at a time, and
// clears busStalled when it answers.
func (e *Engine) probeBus() {
	if !e.probing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer e.probing.Store(false)
		if e.cfg.Bus.Ping(context.Background()) == nil {
			e.busStalled.Store(false)
		}
	}()
}

// postMessage hands a stream message's events to the bus and waits for it
// to confirm them (confirmPublished); the error is the publisher's 503.
// After a message waited its whole wait, the next are not given to the
// bus (each copy would arrive beside its publisher's retry once the bus is
// back) and are refused at once, while a ping in the background asks
// whether the bus answers again (a ping here took 2 s per message, and an
// SDK session's queued requests waited behind them).
func (e *Engine) postMessage(ctx context.Context, events []*chorus.Event) error {
	if e.cfg.Bus == nil {
		return nil
	}
	if e.busStalled.Load() {
		e.probeBus()
		e.warnUnpublished(errors.New("the bus did not confirm an earlier message and has not answered since"))
		return chorus.Errorf(chorus.ErrUnavailable, "Service unavailable: the message was not published (the cluster's message bus is not answering)")
	}
	bctx := context.WithoutCancel(ctx)
	gen := busDisconnects(e.cfg.Bus)
	if err := e.cfg.Bus.Publish(bctx, events...); err != nil {
		e.warnUnpublished(err)
		return chorus.Errorf(chorus.ErrUnavailable, "Service unavailable: the message was not published (the cluster's message bus is out of reach)")
	}
	if err := e.confirmPublished(bctx, gen); err != nil {
		e.warnUnpublished(err)
		return chorus.Errorf(chorus.ErrUnavailable,
			"Service unavailable: the cluster's message bus did not confirm the message; it may still reach subscribers")
	}
	e.posted.Add(uint64(len(events)))
	return nil
}

// PublishMessage publishes a message to a stream.
func (e *Engine) PublishMessage(ctx context.Context, a Actor, svc *chorus.Service, streamID string, data json.RawMessage) (*chorus.StreamMessage, error) {
	if data == nil {
		return nil, chorus.Errorf(chorus.ErrStreamMessageData, "Invalid Stream Message data: Data is required")
	}
	d, err := validData(data, chorus.MaxMessageBytes, chorus.ErrStreamMessageData)
	if err != nil {
		return nil, err
	}
	msg := &chorus.StreamMessage{SID: chorus.NewSID(chorus.PrefixStreamMessage), Data: d}
	var (
		obj *chorus.Object
		ev  = &chorus.Event{Type: chorus.EventStreamMessagePublished, Data: d, MessageSID: msg.SID}
	)
	// Messages are ephemeral: nothing is written, only the stream checked.
	err = e.view(ctx, func(tx chorus.ReadTx) (err error) {
		obj, err = e.lookup(ctx, tx, svc, chorus.KindStream, streamID)
		if err != nil {
			return err
		}
		return authorize(ctx, tx, a, svc, obj, accessWrite)
	})
	if err != nil {
		return nil, err
	}
	c := &change{actor: a, now: e.now()}
	if err := c.emit(ctx, nil, obj, ev); err != nil {
		return nil, err
	}
	// The message is kept nowhere, so it goes to the subscribers first: a
	// bus that does not take it (NATS down) means that none gets it, and
	// the publisher is told so (503) rather than answered as if it had
	// been published, and no webhook says it was. A tester's publishers
	// had 459 messages acknowledged and lost during a NATS outage.
	if err := e.postMessage(ctx, c.events); err != nil {
		return nil, err
	}
	if o := e.cfg.Outbox; o != nil && o.Wants(ev) {
		// The message itself is not stored, but its webhook is. The
		// subscribers have the message now: a failure here must not make
		// its publisher send it again (to them twice), so it is logged
		// and the publish answered as done.
		wctx := context.WithoutCancel(ctx)
		if err := e.cfg.Store.Update(wctx, func(tx chorus.Tx) error { return o.Append(wctx, tx, c.events) }); err != nil {
			e.log.Warn("publish message: delivered, but its webhook could not be recorded", "stream", obj.SID, "message", msg.SID, "err", err)
		}
	}
	if e.cfg.Observe != nil {
		e.cfg.Observe(c.events)
	}
	return msg, nil
}
