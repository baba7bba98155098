package sqlite

import (
	"bytes"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/store/sqlrow"
)

// The writer's item rows are bounded in number and in bytes (the data of
// 4,096 items of up to 16 KiB would be 64 MiB).
const (
	maxCachedItems     = 4096
	maxCachedItemBytes = 8 << 20
)

// itemCache is the writer's cache of item rows, part of its objectCache:
// every write to a list or map item reads the item first, and a row read
// by an earlier write is served from memory instead of SQLite.
//
// It stays coherent for the reasons objectCache does: only the writer
// connection writes items, and every way it does so goes through tx.
// PutItem replaces a row held here (and caches none it did not hold: list
// appends are never read back), DeleteItem drops it, DeleteObject (whose
// cascade deletes the object's items) drops the object's rows, and
// objectCache.clear, which runs whenever writes may be undone or another
// process wrote the file, empties it. A row the cache cannot reproduce
// exactly as SQLite returns it (empty, non-NULL data) is not held.
//
// Rows are copies that own their memory (strings cloned, so that a key
// cut from a request body does not pin the body), and every read returns
// a copy. Used by the writer goroutine only: no lock.
type itemCache struct {
	m     map[itemKey]*chorus.Item
	bytes int // rowBytes of the rows in m
	hits  int // reads answered from m (for tests)
}

// itemKey is an item's primary key: (object, index, key).
type itemKey struct {
	object string
	ref    chorus.ItemRef
}

func keyOf(it *chorus.Item) itemKey {
	return itemKey{it.ObjectSID, chorus.ItemRef{Index: it.Index, Key: it.Key}}
}

// rowBytes is what a cached row costs, roughly.
func rowBytes(it *chorus.Item) int {
	return 160 + len(it.ObjectSID) + len(it.Key) + len(it.CreatedBy) + len(it.Data)
}

// get returns a copy of the row of the item ref of objectSID, if held.
func (c *itemCache) get(objectSID string, ref chorus.ItemRef) (*chorus.Item, bool) {
	it, ok := c.m[itemKey{objectSID, ref}]
	if !ok {
		return nil, false
	}
	c.hits++
	return copyItem(it), true
}

// fill holds it, a row SQLite returned.
func (c *itemCache) fill(it *chorus.Item) {
	k := keyOf(it)
	old := c.m[k]
	c.del(k)
	if it.Data != nil && len(it.Data) == 0 {
		return
	}
	n := ownedItem(it, old)
	size := rowBytes(n)
	if size > maxCachedItemBytes/64 {
		return
	}
	for len(c.m) > 0 && (len(c.m) >= maxCachedItems || c.bytes+size > maxCachedItemBytes) {
		for k := range c.m { // evict one at random
			c.del(k)
			break
		}
	}
	c.m[k] = n
	c.bytes += size
}

// wrote notes that it was written: a row held for it is replaced.
func (c *itemCache) wrote(it *chorus.Item) {
	if _, ok := c.m[keyOf(it)]; ok {
		c.fill(it)
	}
}

func (c *itemCache) del(k itemKey) {
	if it, ok := c.m[k]; ok {
		c.bytes -= rowBytes(it)
		delete(c.m, k)
	}
}

// dropObject forgets the rows of the items of objectSID.
func (c *itemCache) dropObject(objectSID string) {
	for k := range c.m {
		if k.object == objectSID {
			c.del(k)
		}
	}
}

func (c *itemCache) clear() {
	clear(c.m)
	c.bytes = 0
}

// ownedItem is a copy of it that shares no memory with it, with its times
// as sqlrow.ScanItem builds them (UTC, no monotonic reading). Strings equal
// to those of old (the row it replaces, or nil) are old's, already owned.
func ownedItem(it, old *chorus.Item) *chorus.Item {
	n := copyItem(it)
	if old == nil {
		old = &chorus.Item{}
	}
	n.ObjectSID = ownString(it.ObjectSID, old.ObjectSID)
	n.Key = ownString(it.Key, old.Key)
	n.CreatedBy = ownString(it.CreatedBy, old.CreatedBy)
	n.DateCreated = sqlrow.Time(sqlrow.Nanos(n.DateCreated))
	n.DateUpdated = sqlrow.Time(sqlrow.Nanos(n.DateUpdated))
	if n.DateExpires != nil {
		t := sqlrow.Time(sqlrow.Nanos(*n.DateExpires))
		n.DateExpires = &t
	}
	return n
}

func copyItem(it *chorus.Item) *chorus.Item {
	n := *it
	if it.Data != nil {
		n.Data = bytes.Clone(it.Data)
	}
	if it.DateExpires != nil {
		t := *it.DateExpires
		n.DateExpires = &t
	}
	return &n
}
