package engine

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/chorus-sync/chorus"
)

// Subscribable checks that a may subscribe to the object with SID sid (it
// exists, is not expired, and a may read it) and returns it. The gateway
// turns a 404 or 403 into subscription_failed.
func (e *Engine) Subscribable(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, sid string) (*chorus.Object, error) {
	if !chorus.IsSID(k.Prefix(), sid) {
		return nil, k.NotFound()
	}
	return e.Object(ctx, a, svc, k, sid)
}

// recentObjectStore is a store that keeps recently written objects in
// memory (the SQLite store's RecentObject).
type recentObjectStore interface {
	RecentObject(ctx context.Context, k chorus.Kind, serviceSID, sid string) (*chorus.Object, bool, error)
}

// SubscribableRecent is Subscribable for a caller that has subscribed to
// the object's topic on the Bus first: it may answer from the store's
// memory of recently written objects, without a read transaction. The
// object returned has no Data, and it may lack changes committed just
// before the call; every such change is published on the Bus after the
// call began, so the caller receives it. The same checks apply: the object
// exists in svc, has not expired, and a may read it (with ACLs on, for an
// identity, it reads the permission from the store).
func (e *Engine) SubscribableRecent(ctx context.Context, a Actor, svc *chorus.Service, k chorus.Kind, sid string) (*chorus.Object, error) {
	rs, ok := e.cfg.Store.(recentObjectStore)
	if !ok || needsPermission(a, svc) || !chorus.IsSID(k.Prefix(), sid) {
		return e.Subscribable(ctx, a, svc, k, sid)
	}
	obj, ok, err := rs.RecentObject(ctx, k, svc.SID, sid)
	if err != nil {
		return nil, err
	}
	if !ok {
		return e.Subscribable(ctx, a, svc, k, sid)
	}
	if obj.Expired(e.cfg.Now()) {
		return nil, k.NotFound()
	}
	return obj, nil
}

// Events returns the logged events of object objectSID of service
// serviceSID with ID > afterID, at most limit, straight from the log (the
// gateway fills delivery gaps with it).
func (e *Engine) Events(ctx context.Context, serviceSID, objectSID string, afterID int64, limit int) ([]*chorus.Event, error) {
	var evs []*chorus.Event
	err := e.view(ctx, func(tx chorus.ReadTx) (err error) {
		evs, err = tx.Events(ctx, objectSID, afterID, limit)
		return err
	})
	return ofService(evs, serviceSID), err
}

// lastEventIDsBatch bounds the objects of one LastEventIDs query.
const lastEventIDsBatch = 500

// LastEventIDs returns the ID of the newest logged event of each of the
// objects that has one (chorus.ReadTx.LastEventIDs), by object SID,
// reading lastEventIDsBatch objects per query. It is how a resync finds
// the few objects that missed something among the many that did not, with
// a query per batch rather than one per object.
func (e *Engine) LastEventIDs(ctx context.Context, objectSIDs []string) (map[string]int64, error) {
	out := make(map[string]int64, len(objectSIDs))
	for batch := range slices.Chunk(objectSIDs, lastEventIDsBatch) {
		err := e.view(ctx, func(tx chorus.ReadTx) error {
			ids, err := tx.LastEventIDs(ctx, batch)
			maps.Copy(out, ids)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ofService keeps the events of service serviceSID. An object's SID may
// have logged events of another object that held it before, in another
// service or account: deleted, and the SID reused by an import (which
// keeps its source's SIDs). Those are never anyone else's to see.
func ofService(evs []*chorus.Event, serviceSID string) []*chorus.Event {
	out := evs[:0]
	for _, ev := range evs {
		if ev.ServiceSID == serviceSID {
			out = append(out, ev)
		}
	}
	return out
}

// Replay returns what a subscriber at position afterID missed: the logged
// events with ID > afterID in order (at most limit), as far as the log has
// them without a gap. When the log no longer has the event after afterID
// (trimmed), it returns synthetic catch-up events instead and
// truncated=true (see catchUp). A caller at the last returned ID calls
// again for the rest.
func (e *Engine) Replay(ctx context.Context, obj *chorus.Object, afterID int64, limit int) (events []*chorus.Event, truncated bool, err error) {
	if obj.Kind == chorus.KindStream || afterID >= obj.LastEventID {
		return nil, false, nil
	}
	err = e.view(ctx, func(tx chorus.ReadTx) error {
		events, err = tx.Events(ctx, obj.SID, afterID, limit)
		if err != nil {
			return err
		}
		if events = unbroken(ofService(events, obj.ServiceSID), afterID); len(events) > 0 {
			return nil
		}
		// The log was trimmed past afterID: catch up from current state.
		truncated = true
		events, err = e.catchUp(ctx, tx, obj, afterID, limit)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("engine: replay %s after %d: %w", obj.SID, afterID, err)
	}
	return events, truncated, nil
}

// unbroken is the run of evs that follows afterID without a gap in IDs:
// what a subscriber at afterID may be sent as it was logged. A log that
// starts later (trimmed) gives nothing; one with a hole further on (an
// event trimmed out of order, its clock having stepped back) ends before it.
func unbroken(evs []*chorus.Event, afterID int64) []*chorus.Event {
	for i, ev := range evs {
		if ev.ID != afterID+int64(i)+1 {
			return evs[:i]
		}
	}
	return evs
}

// catchUp synthesizes events that bring a subscriber at afterID to the
// object's current state, at most limit. For a list or map they are the
// items changed since afterID as they are now, merged in ID order with the
// item removals (and a list's context updates) the log still holds:
// replayed in that order they leave every item as it is now (an item
// removed and added again is removed, then updated) and every removed item
// gone, as far as the log reaches back. Item removals older than the log
// cannot be recreated.
func (e *Engine) catchUp(ctx context.Context, tx chorus.ReadTx, obj *chorus.Object, afterID int64, limit int) ([]*chorus.Event, error) {
	cur, err := tx.Object(ctx, obj.Kind, obj.ServiceSID, obj.SID)
	if err != nil {
		return nil, err
	}
	base := chorus.Event{
		AccountSID: cur.AccountSID, ServiceSID: cur.ServiceSID, ObjectSID: cur.SID, Kind: cur.Kind,
		UniqueName: cur.UniqueName, Revision: cur.RevisionString(), DateCreated: cur.DateUpdated,
		Identity: chorus.SystemIdentity,
	}
	if cur.Kind == chorus.KindDocument {
		ev := base
		ev.Type, ev.ID, ev.Data, ev.DateExpires = chorus.EventDocumentUpdated, cur.LastEventID, cur.Data, cur.DateExpires
		return []*chorus.Event{&ev}, nil
	}
	items, err := tx.ItemsChangedSince(ctx, cur.SID, afterID, limit)
	if err != nil {
		return nil, err
	}
	// A source that filled its limit may have more after its last ID:
	// nothing beyond that is sent yet, or the next call, starting after
	// it, would skip the rest of that source. The log is read only that
	// far, so that the calls of one catch-up read it once between them.
	through := int64(math.MaxInt64)
	if limit > 0 && len(items) == limit {
		through = items[len(items)-1].LastEventID
	}
	types := []chorus.EventType{itemEvent(cur.Kind, false, true)}
	if cur.Kind == chorus.KindList {
		types = append(types, chorus.EventListContextUpdated)
	}
	// Only the service's own events: another service's, under a reused
	// SID, would fill the limit unseen (see ofService).
	logged, err := tx.EventsOfType(ctx, cur.ServiceSID, cur.SID, types, afterID, through, limit)
	if err != nil {
		return nil, err
	}
	if limit > 0 && len(logged) == limit {
		through = logged[len(logged)-1].ID
	}
	out := make([]*chorus.Event, 0, len(items)+len(logged))
	for len(items) > 0 || len(logged) > 0 {
		var ev *chorus.Event
		if len(logged) > 0 && (len(items) == 0 || logged[0].ID < items[0].LastEventID) {
			ev, logged = logged[0], logged[1:]
		} else {
			it := items[0]
			items = items[1:]
			cp := base
			cp.Type, cp.ID = itemEvent(cur.Kind, false, false), it.LastEventID
			cp.ItemIndex, cp.ItemKey, cp.ItemRevision, cp.ItemData = it.Index, it.Key, it.RevisionString(), it.Data
			cp.DateCreated, cp.DateExpires = it.DateUpdated, it.DateExpires
			ev = &cp
		}
		if ev.ID > through {
			break
		}
		out = append(out, ev)
	}
	return out, nil
}

// Run sweeps expired objects and items (deleting them and publishing their
// removal events) and trims the event log, every SweepInterval until ctx
// is done.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if e.cfg.Leader != nil && !e.cfg.Leader(ctx) {
			continue
		}
		if err := e.Sweep(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("sweep", "err", err)
		}
	}
}

// sweepBatch bounds the work of one sweep transaction.
const sweepBatch = 200

// Sweep deletes what has expired, publishing removal events, and trims the
// event log once.
func (e *Engine) Sweep(ctx context.Context) error {
	// Each pass lists up to sweepBatch rows and removes those still
	// expired; another pass follows while a full list removed something
	// (a list of rows that all stay is left to the next sweep).
	for {
		listed, removed, err := e.sweepObjects(ctx)
		if err != nil {
			return fmt.Errorf("engine: sweep objects: %w", err)
		}
		if listed < sweepBatch || removed == 0 {
			break
		}
	}
	for {
		listed, removed, err := e.sweepItems(ctx)
		if err != nil {
			return fmt.Errorf("engine: sweep items: %w", err)
		}
		if listed < sweepBatch || removed == 0 {
			break
		}
	}
	return e.trimEvents(ctx)
}

// fullTrimEvery is how often the log trim looks at the whole log. The trims
// between look only at events that became old since the last one, so that
// what a trim keeps (each object's newest events) costs a scan once per
// period, not at every sweep.
const fullTrimEvery = time.Hour

// trimEvents trims the event log: see Config.EventRetention, EventKeep and
// TrimChunk.
func (e *Engine) trimEvents(ctx context.Context) error {
	e.trimMu.Lock()
	defer e.trimMu.Unlock()
	now := e.now()
	p := chorus.EventTrim{Before: now.Add(-e.cfg.EventRetention), Keep: e.cfg.EventKeep}
	if !e.trimmedTo.IsZero() && now.Sub(e.lastFullTrim) < fullTrimEvery && !p.Before.Before(e.trimmedTo) {
		p.After = e.trimmedTo
		if err := e.trim(ctx, p); err != nil {
			return err
		}
	} else {
		if err := e.trimWhole(ctx, p); err != nil {
			return err
		}
		e.lastFullTrim = now
	}
	e.trimmedTo = p.Before
	return nil
}

// trimWhole trims the whole log below p.Before in creation order, in
// transactions of about TrimChunk events each, so that no one of them holds
// the writer for long (on SQLite one transaction over 200,000 kept events
// took 0.3 s).
func (e *Engine) trimWhole(ctx context.Context, p chorus.EventTrim) error {
	var from time.Time // zero: from the oldest event
	for {
		var end time.Time
		var more bool
		err := e.view(ctx, func(tx chorus.ReadTx) (err error) {
			end, more, err = tx.EventTime(ctx, from, e.cfg.TrimChunk)
			return err
		})
		if err != nil {
			return err
		}
		chunk := p
		chunk.After = from
		if !more || !end.Before(p.Before) {
			return e.trim(ctx, chunk) // the rest
		}
		if !end.After(from) {
			// More than a chunk created at one instant: all of them.
			end = from.Add(time.Nanosecond)
		}
		chunk.Before = end
		if err := e.trim(ctx, chunk); err != nil {
			return err
		}
		from = end
	}
}

// trim runs one trim transaction.
func (e *Engine) trim(ctx context.Context, p chorus.EventTrim) error {
	return e.upkeep(ctx, func(tx chorus.Tx, _ *change) error {
		_, err := tx.TrimEvents(ctx, p)
		return err
	})
}

func (e *Engine) sweepObjects(ctx context.Context) (listed, removed int, err error) {
	err = e.upkeep(ctx, func(tx chorus.Tx, c *change) error {
		objs, err := tx.ExpiredObjects(ctx, c.now, sweepBatch)
		if err != nil {
			return err
		}
		listed, removed = len(objs), 0
		for _, o := range objs {
			// The list was read without locks: a write may have extended
			// the object's TTL since (PostgreSQL, another request or node).
			// Read it again, locked, and sweep it only if still expired.
			cur, err := e.objectBySID(ctx, tx, o.Kind, o.SID)
			if isNotFound(err) {
				continue // deleted meanwhile
			}
			if err != nil {
				return err
			}
			if !cur.Expired(c.now) {
				continue
			}
			if err := e.removeObject(ctx, tx, c, cur); err != nil {
				return err
			}
			removed++
		}
		return nil
	})
	return listed, removed, err
}

func (e *Engine) sweepItems(ctx context.Context) (listed, removed int, err error) {
	err = e.upkeep(ctx, func(tx chorus.Tx, c *change) error {
		items, err := tx.ExpiredItems(ctx, c.now, sweepBatch)
		if err != nil {
			return err
		}
		listed, removed = len(items), 0
		objs := map[string]*chorus.Object{}
		for _, it := range items {
			obj, ok := objs[it.ObjectSID]
			if !ok {
				o, err := e.objectBySID(ctx, tx, it.Kind, it.ObjectSID)
				if err != nil && !isNotFound(err) {
					return err
				}
				obj, objs[it.ObjectSID] = o, o // nil: deleted meanwhile, with its items
			}
			if obj == nil {
				continue
			}
			// As in sweepObjects: the item may have been written since the
			// unlocked list; with its object locked, read it again.
			cur, err := tx.Item(ctx, obj.SID, chorus.ItemRef{Index: it.Index, Key: it.Key})
			if isNotFound(err) {
				continue
			}
			if err != nil {
				return err
			}
			if !cur.Expired(c.now) {
				continue
			}
			if err := e.removeItem(ctx, tx, c, obj, cur); err != nil {
				return err
			}
			removed++
		}
		return nil
	})
	return listed, removed, err
}

// objectBySID finds an object by SID in any service, for the sweeper:
// expired items do not carry their service.
func (e *Engine) objectBySID(ctx context.Context, tx chorus.ReadTx, k chorus.Kind, sid string) (*chorus.Object, error) {
	return tx.Object(ctx, k, "", sid)
}
