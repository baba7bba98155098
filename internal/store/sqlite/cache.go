package sqlite

import (
	"bytes"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/sqlrow"
)

// maxCachedObjects bounds the writer's object cache.
const maxCachedObjects = 4096

// objectCache is the writer's cache of object rows, keyed by SID: a read
// of an object inside Update (every write reads its object first) is
// served from it instead of SQLite.
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
type objectCache struct {
	m map[string]*chorus.Object
}

func newObjectCache() *objectCache {
	return &objectCache{m: make(map[string]*chorus.Object)}
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

// put caches o as SQLite would return it. Rows whose round trip the cache
// cannot reproduce exactly (empty, non-NULL data) are dropped instead.
func (c *objectCache) put(o *chorus.Object) {
	if c == nil {
		return
	}
	if o.Data != nil && len(o.Data) == 0 {
		delete(c.m, o.SID)
		return
	}
	if _, ok := c.m[o.SID]; !ok && len(c.m) >= maxCachedObjects {
		for k := range c.m { // evict one at random
			delete(c.m, k)
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
}

func (c *objectCache) del(sid string) {
	if c != nil {
		delete(c.m, sid)
	}
}

func (c *objectCache) clear() {
	if c != nil {
		clear(c.m)
	}
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
