package engine

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/chorus-sync/chorus"
)

// access is what an operation needs of the ACL.
type access int

const (
	accessRead access = iota
	accessWrite
	accessManage
)

// authorize enforces the service's ACL for non-system actors.
func authorize(ctx context.Context, tx chorus.ReadTx, a Actor, svc *chorus.Service, obj *chorus.Object, need access) error {
	if !needsPermission(a, svc) {
		return nil
	}
	if !validText(a.Identity) {
		return chorus.ErrForbidden
	}
	p, err := tx.Permission(ctx, obj.SID, a.Identity)
	if isNotFound(err) {
		return chorus.ErrForbidden
	}
	if err != nil {
		return err
	}
	ok := (need == accessRead && p.Read) || (need == accessWrite && p.Write) || (need == accessManage && p.Manage)
	if !ok {
		return chorus.ErrForbidden
	}
	return nil
}

// needsPermission reports whether a's access to svc's objects depends on
// their permissions: with ACLs on, for everyone but the system.
func needsPermission(a Actor, svc *chorus.Service) bool {
	return svc.ACLEnabled && !a.System
}

// lookup finds a live object of kind k in svc by SID or unique name.
// Expired objects are not found: TTL hides them at once, before the sweeper
// deletes them.
func (e *Engine) lookup(ctx context.Context, tx chorus.ReadTx, svc *chorus.Service, k chorus.Kind, id string) (*chorus.Object, error) {
	sid, name, err := objectRef(k, id)
	if err != nil {
		return nil, err
	}
	var obj *chorus.Object
	if sid != "" {
		obj, err = tx.Object(ctx, k, svc.SID, sid)
	} else {
		obj, err = tx.ObjectByName(ctx, k, svc.SID, name)
	}
	if err != nil {
		return nil, notFoundAs(err, k.NotFound())
	}
	if obj.Expired(e.cfg.Now()) {
		return nil, k.NotFound()
	}
	return obj, nil
}

// objectRef reads the id of an object of kind k in a URL: its SID or its
// unique name (one of the two is set), or the error that answers it (an
// id shaped like another kind's SID, or not valid text).
func objectRef(k chorus.Kind, id string) (sid, name string, err error) {
	switch {
	case chorus.IsSID(k.Prefix(), id):
		return id, "", nil
	case chorus.LooksLikeSID(id) || id == "":
		return "", "", k.NotFound()
	case !validText(id):
		return "", "", chorus.ErrUniqueNameInvalid
	}
	return "", id, nil
}

// CreateObject creates a document, list, map or stream.
func (e *Engine) CreateObject(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, p CreateObject) (*chorus.Object, error) {
	if k.Prefix() == "" {
		return nil, chorus.ErrNotFound
	}
	if p.UniqueName != "" {
		if err := validUniqueName(p.UniqueName); err != nil {
			return nil, err
		}
	}
	if err := validTTL(p.TTL); err != nil {
		return nil, err
	}
	var data json.RawMessage
	switch {
	case k == chorus.KindDocument && p.Data == nil:
		data = json.RawMessage("{}")
	case k == chorus.KindDocument || (k == chorus.KindList && p.Data != nil):
		d, err := validData(p.Data, chorus.MaxDataBytes, objectDataErr(k))
		if err != nil {
			return nil, err
		}
		data = d
	}
	var obj *chorus.Object
	err := e.update(ctx, a, func(tx chorus.Tx, c *change) error {
		if p.UniqueName != "" {
			if err := e.dropExpiredName(ctx, tx, c, svc, k, p.UniqueName); err != nil {
				return err
			}
		}
		created := e.createdAt(c.now)
		obj = &chorus.Object{
			Kind: k, SID: chorus.NewSID(k.Prefix()), AccountSID: svc.AccountSID, ServiceSID: svc.SID,
			UniqueName: p.UniqueName, Data: data, CreatedBy: a.Identity,
			DateCreated: created, DateUpdated: created, DateExpires: chorus.ExpiresAt(created, deref(p.TTL)),
		}
		if err := tx.InsertObject(ctx, obj); err != nil {
			return err
		}
		return c.emit(ctx, tx, obj, &chorus.Event{Type: createdEvent[k], Data: obj.Data, Revision: obj.RevisionString()})
	})
	if err != nil {
		return nil, err
	}
	return obj, nil
}

// dropExpiredName deletes an expired object that still holds a unique name
// the sweeper has not got to yet, so the name can be taken again.
func (e *Engine) dropExpiredName(ctx context.Context, tx chorus.Tx, c *change, svc *chorus.Service, k chorus.Kind, name string) error {
	old, err := tx.ObjectByName(ctx, k, svc.SID, name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !old.Expired(c.now) {
		return chorus.ErrUniqueNameExists
	}
	return e.removeObject(ctx, tx, c, old)
}

var createdEvent = map[chorus.Kind]chorus.EventType{
	chorus.KindDocument: chorus.EventDocumentCreated,
	chorus.KindList:     chorus.EventListCreated,
	chorus.KindMap:      chorus.EventMapCreated,
	chorus.KindStream:   chorus.EventStreamCreated,
}

var removedEvent = map[chorus.Kind]chorus.EventType{
	chorus.KindDocument: chorus.EventDocumentRemoved,
	chorus.KindList:     chorus.EventListRemoved,
	chorus.KindMap:      chorus.EventMapRemoved,
	chorus.KindStream:   chorus.EventStreamRemoved,
}

// Object returns an object by SID or unique name. Expired objects are not
// found; a missing object is the kind's not-found code (54100 etc.).
func (e *Engine) Object(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, id string) (*chorus.Object, error) {
	var obj *chorus.Object
	err := e.view(ctx, func(tx chorus.ReadTx) (err error) {
		obj, err = e.lookup(ctx, tx, svc, k, id)
		if err != nil {
			return err
		}
		return authorize(ctx, tx, a, svc, obj, accessRead)
	})
	return obj, err
}

// cachedObjectStore is a store that can serve whole object rows from
// memory (the SQLite store's CachedObject).
type cachedObjectStore interface {
	CachedObject(ctx context.Context, k chorus.Kind, serviceSID, sid, name string) (*chorus.Object, bool, error)
}

// FetchObject is Object for a client's fetch (REST and CDS GET): it may
// answer from the store's memory of recently written objects, without a
// read transaction. Like a read transaction begun a moment earlier, the
// object may lack changes committed just before the call, but only those
// whose writes are answered after the call began; a fetch that follows
// the answer to a write sees it (with SQLite, writes by another process
// to the same file are seen up to a second late). Use Object when the
// object is combined with other reads that must not be newer than it.
func (e *Engine) FetchObject(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, id string) (*chorus.Object, error) {
	cs, ok := e.cfg.Store.(cachedObjectStore)
	if !ok || needsPermission(a, svc) {
		return e.Object(ctx, a, svc, k, id)
	}
	sid, name, err := objectRef(k, id)
	if err != nil {
		return nil, err
	}
	obj, ok, err := cs.CachedObject(ctx, k, svc.SID, sid, name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return e.Object(ctx, a, svc, k, id)
	}
	if obj.Expired(e.cfg.Now()) {
		return nil, k.NotFound()
	}
	return obj, nil
}

// Objects pages a service's objects of kind k. With ACLs on, a client sees
// only the objects it may read; its pages are filled past the objects it
// may not.
func (e *Engine) Objects(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, p PageRequest) (Page[*chorus.Object], error) {
	scope := k.Prefix() + svc.SID
	size, after, backward, err := pageStart(p, scope)
	if err != nil {
		return Page[*chorus.Object]{}, err
	}
	now := e.cfg.Now()
	var page Page[*chorus.Object]
	err = e.view(ctx, func(tx chorus.ReadTx) (err error) {
		ks := keyset[*chorus.Object, chorus.Cursor]{
			fetch: func(after chorus.Cursor, backward bool, limit int) ([]*chorus.Object, error) {
				return visibleObjects(ctx, tx, a, svc, k, chorus.ObjectQuery{After: after, Backward: backward, Limit: limit, Now: now})
			},
			key:   objectCursor,
			token: cursorTokens(scope),
		}
		page, err = ks.page(size, after, backward, p.Token != "")
		return err
	})
	if err != nil {
		return Page[*chorus.Object]{}, err
	}
	return page, nil
}

func objectCursor(o *chorus.Object) chorus.Cursor {
	return chorus.Cursor{DateCreated: o.DateCreated, SID: o.SID}
}

// visibleObjects reads objects as tx.Objects does, skipping those a may
// not read: it returns q.Limit of them, or fewer only at the end.
func visibleObjects(ctx context.Context, tx chorus.ReadTx, a Actor, svc *chorus.Service, k chorus.Kind, q chorus.ObjectQuery) ([]*chorus.Object, error) {
	var out []*chorus.Object
	for {
		rows, err := tx.Objects(ctx, k, svc.SID, q)
		if err != nil {
			return nil, err
		}
		for _, o := range rows {
			if len(out) == q.Limit {
				break
			}
			if err := authorize(ctx, tx, a, svc, o, accessRead); err == nil {
				out = append(out, o)
			} else if !errors.Is(err, chorus.ErrForbidden) {
				return nil, err
			}
		}
		if len(out) == q.Limit || len(rows) < q.Limit {
			return out, nil
		}
		q.After = objectCursor(rows[len(rows)-1])
	}
}

// UpdateObject updates an object; the result's LastEventID is the id of the
// event this write produced.
func (e *Engine) UpdateObject(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, id string, p UpdateObject) (*chorus.Object, error) {
	if p.Data == nil && p.TTL == nil {
		return nil, chorus.ErrNoParameters
	}
	if err := validTTL(p.TTL); err != nil {
		return nil, err
	}
	var data json.RawMessage
	if p.Data != nil {
		if k != chorus.KindDocument && k != chorus.KindList {
			return nil, chorus.Errorf(chorus.ErrInvalidParameter, "A %s has no data", k)
		}
		d, err := validData(p.Data, chorus.MaxDataBytes, objectDataErr(k))
		if err != nil {
			return nil, err
		}
		data = d
	}
	rev, err := ifMatchRevision(p.IfMatch)
	if err != nil {
		return nil, err
	}
	var obj *chorus.Object
	err = e.update(ctx, a, func(tx chorus.Tx, c *change) (err error) {
		obj, err = e.lookup(ctx, tx, svc, k, id)
		if err != nil {
			return err
		}
		if err := authorize(ctx, tx, a, svc, obj, accessWrite); err != nil {
			return err
		}
		if rev >= 0 && rev != obj.Revision {
			return chorus.ErrDocumentRevision
		}
		if p.TTL != nil {
			obj.DateExpires = chorus.ExpiresAt(c.now, *p.TTL)
		}
		obj.DateUpdated = c.now
		switch {
		case k == chorus.KindDocument && data != nil:
			// A TTL-only change is no new revision and no event: the SDK's
			// setTtl() keeps its local revision and would otherwise see its
			// own change as remote and pay a 412 on its next update().
			obj.Data = data
			obj.Revision++
			err = c.emit(ctx, tx, obj, &chorus.Event{
				Type: chorus.EventDocumentUpdated, Data: obj.Data, Revision: obj.RevisionString(), DateExpires: obj.DateExpires,
			})
		case k == chorus.KindList && data != nil:
			obj.Data = data
			obj.Revision++
			err = c.emit(ctx, tx, obj, &chorus.Event{
				Type: chorus.EventListContextUpdated, Data: obj.Data, Revision: obj.RevisionString(), DateExpires: obj.DateExpires,
			})
		}
		if err != nil {
			return err
		}
		return tx.UpdateObject(ctx, obj)
	})
	if err != nil {
		return nil, err
	}
	return obj, nil
}

// DeleteObject deletes an object and returns it as it was, with
// LastEventID set to the removal event's id.
func (e *Engine) DeleteObject(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, id string) (*chorus.Object, error) {
	return e.DeleteObjectIf(ctx, a, svc, k, id, "")
}

// DeleteObjectIf is DeleteObject when the object's revision is ifMatch (a
// revision string; "" for any): else 412 54103, and nothing is deleted.
// twilio-node 3.x sends If-Match on a document's removal.
func (e *Engine) DeleteObjectIf(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, id, ifMatch string) (*chorus.Object, error) {
	rev, err := ifMatchRevision(ifMatch)
	if err != nil {
		return nil, err
	}
	var obj *chorus.Object
	err = e.update(ctx, a, func(tx chorus.Tx, c *change) (err error) {
		obj, err = e.lookup(ctx, tx, svc, k, id)
		if err != nil {
			return err
		}
		if err := authorize(ctx, tx, a, svc, obj, accessManage); err != nil {
			return err
		}
		if rev >= 0 && rev != obj.Revision {
			return chorus.ErrDocumentRevision
		}
		return e.removeObject(ctx, tx, c, obj)
	})
	if err != nil {
		return nil, err
	}
	return obj, nil
}

// removeObject logs the removal event and deletes the object.
func (e *Engine) removeObject(ctx context.Context, tx chorus.Tx, c *change, obj *chorus.Object) error {
	obj.DateUpdated = c.now
	if err := c.emit(ctx, tx, obj, &chorus.Event{Type: removedEvent[obj.Kind], Revision: obj.RevisionString()}); err != nil {
		return err
	}
	return tx.DeleteObject(ctx, obj.SID)
}

// ifMatchRevision parses an If-Match revision string: -1 for "" (any).
func ifMatchRevision(ifMatch string) (int64, error) {
	if ifMatch == "" {
		return -1, nil
	}
	return chorus.ParseRevision(ifMatch)
}

func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// objectDataErr is the error for null object data: a document's data or a
// list's context.
func objectDataErr(k chorus.Kind) *chorus.Error {
	if k == chorus.KindList {
		return chorus.Errorf(chorus.ErrDocumentData, "Invalid List context")
	}
	return chorus.ErrDocumentData
}
