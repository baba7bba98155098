package sqlite

import (
	"bytes"
	"strings"
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
//
// items and perms hold item and permission rows the same way (itemCache,
// permissionCache); clear forgets them too.
type objectCache struct {
	m       map[string]*chorus.Object
	names   nameIndex                 // the rows in m that have a unique name
	journal map[string]*chorus.Object // this batch's rows by SID; nil: deleted
	recent  *recentObjects
	items   itemCache
	perms   permissionCache
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

// nameIndex maps the unique names of a set of rows to their SIDs. Its
// owner adds every named row it stores and removes every row it drops.
type nameIndex map[objectName]string

func (x nameIndex) add(o *chorus.Object) {
	if o.UniqueName != "" {
		x[nameOf(o)] = o.SID
	}
}

// remove forgets o's name, unless another row has taken it since.
func (x nameIndex) remove(o *chorus.Object) {
	if k := nameOf(o); o.UniqueName != "" && x[k] == o.SID {
		delete(x, k)
	}
}

func (x nameIndex) sid(k chorus.Kind, serviceSID, name string) (string, bool) {
	if name == "" {
		return "", false
	}
	sid, ok := x[objectName{service: serviceSID, kind: k, name: name}]
	return sid, ok
}

func newObjectCache() *objectCache {
	return &objectCache{
		m:       make(map[string]*chorus.Object),
		names:   make(nameIndex),
		journal: make(map[string]*chorus.Object),
		recent:  &recentObjects{m: make(map[string]recentObject), names: make(nameIndex)},
		items:   itemCache{m: make(map[itemKey]*chorus.Item)},
		perms:   permissionCache{m: make(map[string]map[string]permissionFlags)},
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
	if c == nil {
		return nil, false
	}
	sid, ok := c.names.sid(k, serviceSID, name)
	if !ok {
		return nil, false
	}
	o, ok := c.get(sid)
	if !ok || o.UniqueName != name {
		return nil, false // never the wrong object, whatever the index says
	}
	return o, true
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
	n := copyObject(o)
	// Own the strings a request may have cut from its body (a unique
	// name in a 64 KiB form would pin the form): reuse the old row's when
	// unchanged, so an update allocates nothing more.
	old, had := c.m[o.SID]
	if !had {
		old = &chorus.Object{}
	}
	n.UniqueName, n.CreatedBy = ownString(n.UniqueName, old.UniqueName), ownString(n.CreatedBy, old.CreatedBy)
	if had {
		c.drop(o.SID) // its unique name may have changed
	} else if len(c.m) >= maxCachedObjects {
		for k := range c.m { // evict one at random
			c.drop(k)
			break
		}
	}
	// As sqlrow.ScanObject builds them: UTC times without monotonic readings.
	n.DateCreated = sqlrow.Time(sqlrow.Nanos(n.DateCreated))
	n.DateUpdated = sqlrow.Time(sqlrow.Nanos(n.DateUpdated))
	if n.DateExpires != nil {
		t := sqlrow.Time(sqlrow.Nanos(*n.DateExpires))
		n.DateExpires = &t
	}
	c.m[o.SID] = n
	c.names.add(n)
	c.journal[o.SID] = n // never modified: put replaces rows whole
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
	c.names.remove(o)
}

// clear forgets every row, here and in recentObjects: the database may
// have changed behind the cache's back, or writes the cache holds may be
// undone.
func (c *objectCache) clear() {
	if c != nil {
		clear(c.m)
		clear(c.names)
		clear(c.journal)
		c.items.clear()
		c.perms.clear()
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

// maxRecentObjects bounds recentObjects' rows, and maxRecentData the
// bytes of data they hold: a new row takes the place of other rows' data
// (makeRoom), or is held without its own (metadata is a few hundred
// bytes).
const (
	maxRecentObjects = 32768
	maxRecentData    = 8 << 20
)

// recentObjects holds the object rows the writer wrote or read in
// committed batches, each with the sequence number of its batch, so that
// a reader can get a recently written object without a read transaction
// (Store.RecentObject, Store.CachedObject), by SID or unique name. Within
// maxRecentData, a row holds its data too.
//
// A row here is never newer than the database: it is stored after the
// COMMIT that made it visible. It may be older for a moment: between a
// COMMIT and publish, a reader can still get the previous row (or a row
// whose object that batch deleted). publish runs before the batch's
// requests are answered, so every change a row here lacks is answered,
// and its events published, after the reader's call began. A row may also
// belong to a batch not yet durable; RecentObject waits for it as View
// does. And the rows only move forward: publish runs before the batch is
// queued for its sync, so a View that saw a batch returned after that
// batch's rows got here. Safe for concurrent use.
type recentObjects struct {
	mu    sync.Mutex
	m     map[string]recentObject
	names nameIndex // the rows in m that have a unique name
	data  int       // bytes of data held
}

type recentObject struct {
	o    *chorus.Object // never modified; Data nil unless full
	full bool           // o.Data is the row's data
	seq  uint64         // the batch that committed o
}

// get returns the row of sid, or of the object of kind k named name in
// the service serviceSID when sid is "".
func (r *recentObjects) get(k chorus.Kind, serviceSID, sid, name string) (recentObject, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	byName := sid == ""
	if byName {
		var ok bool
		if sid, ok = r.names.sid(k, serviceSID, name); !ok {
			return recentObject{}, false
		}
	}
	e, ok := r.m[sid]
	if byName && ok && e.o.UniqueName != name {
		return recentObject{}, false // never the wrong object, whatever the index says
	}
	return e, ok
}

func (r *recentObjects) apply(rows map[string]*chorus.Object, seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for sid, o := range rows {
		if _, ok := r.m[sid]; ok {
			r.drop(sid)
		} else if o != nil && len(r.m) >= maxRecentObjects {
			for k := range r.m { // evict one at random
				r.drop(k)
				break
			}
		}
		if o == nil {
			continue
		}
		e := recentObject{o: o, full: true, seq: seq}
		if r.data+len(o.Data) > maxRecentData && !r.makeRoom(len(o.Data)) {
			n := *o
			n.Data = nil
			e.o, e.full = &n, false
		}
		r.m[sid] = e
		r.names.add(e.o)
		r.data += len(e.o.Data)
	}
}

// makeRoom keeps the newest rows' data within maxRecentData: it drops the
// data of other rows, picked at random (the writer's next write or read of
// one of them brings it back), until n more bytes fit, looking at no more
// than maxRoomScan rows. It reports whether they fit; r.mu is held.
func (r *recentObjects) makeRoom(n int) bool {
	scanned := 0
	for sid, e := range r.m {
		if r.data+n <= maxRecentData || scanned == maxRoomScan {
			break
		}
		scanned++
		if !e.full || len(e.o.Data) == 0 {
			continue
		}
		meta := *e.o
		meta.Data = nil
		r.data -= len(e.o.Data)
		r.m[sid] = recentObject{o: &meta, seq: e.seq}
	}
	return r.data+n <= maxRecentData
}

// maxRoomScan bounds the rows makeRoom looks at for one new row.
const maxRoomScan = 64

// drop removes the row of sid; r.mu is held.
func (r *recentObjects) drop(sid string) {
	e, ok := r.m[sid]
	if !ok {
		return
	}
	delete(r.m, sid)
	r.names.remove(e.o)
	r.data -= len(e.o.Data)
}

func (r *recentObjects) clear() {
	r.mu.Lock()
	clear(r.m)
	clear(r.names)
	r.data = 0
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

// ownString is s with memory of its own: was (a string the cache already
// owns) when they are equal, else a clone of s.
func ownString(s, was string) string {
	if s == was {
		return was
	}
	return strings.Clone(s)
}
