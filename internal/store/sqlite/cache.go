package sqlite

import (
	"bytes"
	"sync"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/sqlrow"
)

// maxCachedObjects bounds the writer's object cache.
const maxCachedObjects = 4096

// objectCache is the writer's cache of object rows, keyed by SID and by
// unique name: a read of an object inside Update (every write reads its
// object first, by the SID or the unique name in its URL) is served from
// it instead of SQLite.
//
// It holds the rows as the writer's open transaction sees them, which is
// coherent because only the writer connection writes objects and every
// way it does so goes through tx: InsertObject and UpdateObject store the
// row they wrote, DeleteObject drops it, DeleteService (whose cascade
// deletes objects) clears the cache. What can undo those writes clears it
// too: rolling back a batch or a savepoint after a write, and a COMMIT
// that fails. Another process writing the file is detected at the start
// of each batch by PRAGMA data_version, which clears it. It is used by
// the writer goroutine only: no lock.
//
// names maps the unique name of every row in m that has one to its SID,
// and nothing else: each change to m goes through put, del or clear,
// which keep the two in step.
//
// It also feeds the readers' recentObjects: every row it stores or drops
// during a batch is noted in journal and handed over by publish once the
// batch committed; clear empties recentObjects at once.
type objectCache struct {
	m       map[string]*chorus.Object
	names   map[objectName]string     // SIDs of the rows in m by unique name
	journal map[string]*chorus.Object // this batch's rows by SID; nil: deleted
	recent  *recentObjects
}

// objectName is an object's unique name, unique per service and kind (the
// objects_unique_name index).
type objectName struct {
	service string
	kind    chorus.Kind
	name    string
}

func nameOf(o *chorus.Object) objectName {
	return objectName{service: o.ServiceSID, kind: o.Kind, name: o.UniqueName}
}

func newObjectCache() *objectCache {
	return &objectCache{
		m:       make(map[string]*chorus.Object),
		names:   make(map[objectName]string),
		journal: make(map[string]*chorus.Object),
		recent:  &recentObjects{m: make(map[string]recentObject)},
	}
}

// get returns a copy of the cached row of sid, if any.
func (c *objectCache) get(sid string) (*chorus.Object, bool) {
	if c == nil {
		return nil, false
	}
	o, ok := c.m[sid]
	if !ok {
		return nil, false
	}
	return copyObject(o), true
}

// byName returns a copy of the cached row of the object of kind k named
// name in the service, if any.
func (c *objectCache) byName(k chorus.Kind, serviceSID, name string) (*chorus.Object, bool) {
	if c == nil || name == "" {
		return nil, false
	}
	sid, ok := c.names[objectName{service: serviceSID, kind: k, name: name}]
	if !ok {
		return nil, false
	}
	return c.get(sid)
}

// put caches o as SQLite would return it. Rows whose round trip the cache
// cannot reproduce exactly (empty, non-NULL data) are dropped instead.
func (c *objectCache) put(o *chorus.Object) {
	if c == nil {
		return
	}
	if o.Data != nil && len(o.Data) == 0 {
		c.drop(o.SID)
		c.journal[o.SID] = nil
		return
	}
	if _, ok := c.m[o.SID]; ok {
		c.drop(o.SID) // its unique name may have changed
	} else if len(c.m) >= maxCachedObjects {
		for k := range c.m { // evict one at random
			c.drop(k)
			break
		}
	}
	n := copyObject(o)
	// As sqlrow.ScanObject builds them: UTC times without monotonic readings.
	n.DateCreated = sqlrow.Time(sqlrow.Nanos(n.DateCreated))
	n.DateUpdated = sqlrow.Time(sqlrow.Nanos(n.DateUpdated))
	if n.DateExpires != nil {
		t := sqlrow.Time(sqlrow.Nanos(*n.DateExpires))
		n.DateExpires = &t
	}
	c.m[o.SID] = n
	if n.UniqueName != "" {
		c.names[nameOf(n)] = n.SID
	}
	r := *n
	r.Data = nil // recentObjects holds metadata only: bounded memory
	c.journal[o.SID] = &r
}

func (c *objectCache) del(sid string) {
	if c != nil {
		c.drop(sid)
		c.journal[sid] = nil
	}
}

// drop removes the row of sid, and its unique name, from m.
func (c *objectCache) drop(sid string) {
	o, ok := c.m[sid]
	if !ok {
		return
	}
	delete(c.m, sid)
	if k := nameOf(o); o.UniqueName != "" && c.names[k] == sid {
		delete(c.names, k)
	}
}

// clear forgets every row, here and in recentObjects: the database may
// have changed behind the cache's back, or writes the cache holds may be
// undone.
func (c *objectCache) clear() {
	if c != nil {
		clear(c.m)
		clear(c.names)
		clear(c.journal)
		c.recent.clear()
	}
}

// publish hands the rows of the batch that just committed as seq to
// recentObjects. The writer calls it after COMMIT and before the batch's
// requests are answered, so before their events are published.
func (c *objectCache) publish(seq uint64) {
	if c == nil || len(c.journal) == 0 {
		return
	}
	c.recent.apply(c.journal, seq)
	clear(c.journal)
}

// maxRecentObjects bounds recentObjects (rows without data: a few hundred
// bytes each).
const maxRecentObjects = 32768

// recentObjects holds the object rows (without data) the writer wrote or
// read in committed batches, each with the sequence number of its batch,
// so that a reader can get a recently written object without a read
// transaction (Store.RecentObject).
//
// A row here is never newer than the database: it is stored after the
// COMMIT that made it visible. It may be older for a moment: between a
// COMMIT and publish, a reader can still get the previous row (or a row
// whose object that batch deleted). publish runs before the batch's
// requests are answered, so every change a row here lacks is answered,
// and its events published, after the reader's call began. A row may also
// belong to a batch not yet durable; RecentObject waits for it as View
// does. Safe for concurrent use.
type recentObjects struct {
	mu sync.Mutex
	m  map[string]recentObject
}

type recentObject struct {
	o   *chorus.Object // never modified; Data nil
	seq uint64         // the batch that committed o
}

func (r *recentObjects) get(sid string) (recentObject, bool) {
	r.mu.Lock()
	e, ok := r.m[sid]
	r.mu.Unlock()
	return e, ok
}

func (r *recentObjects) apply(rows map[string]*chorus.Object, seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for sid, o := range rows {
		if o == nil {
			delete(r.m, sid)
			continue
		}
		if _, ok := r.m[sid]; !ok && len(r.m) >= maxRecentObjects {
			for k := range r.m { // evict one at random
				delete(r.m, k)
				break
			}
		}
		r.m[sid] = recentObject{o: o, seq: seq}
	}
}

func (r *recentObjects) clear() {
	r.mu.Lock()
	clear(r.m)
	r.mu.Unlock()
}

func copyObject(o *chorus.Object) *chorus.Object {
	n := *o
	if o.Data != nil {
		n.Data = bytes.Clone(o.Data)
	}
	if o.DateExpires != nil {
		t := *o.DateExpires
		n.DateExpires = &t
	}
	return &n
}
