package sqlite

import (
	"strings"

	"github.com/chorus-sync/chorus"
)

// The writer's permission rows are bounded in number and in identity
// length (an identity is at most chorus.MaxIdentityLen characters, 4 bytes
// each): at most ~5 MiB.
const (
	maxCachedPermissions   = 4096
	maxCachedIdentityBytes = 4 * chorus.MaxIdentityLen
)

// permissionCache is the writer's cache of permission rows, part of its
// objectCache: with ACLs on, every write by an SDK client reads the
// client's permission on the object first (engine.authorize), and a row
// read by an earlier write is served from memory instead of SQLite.
//
// A stale row here would grant what an operator revoked, so it follows
// the object rows' rules exactly. Only the writer connection writes
// permissions, and every way it does so goes through tx: PutPermission
// holds the row it wrote, DeletePermission drops its row before its
// statement runs, DeleteObject (whose cascade deletes the object's
// permissions) drops the object's rows, and objectCache.clear, which runs
// whenever writes may be undone (a rolled-back batch or savepoint, a
// failed COMMIT), when another process wrote the file (data_version) and
// on DeleteService (whose cascade deletes them too), empties it. Only
// rows that exist are held: a missing permission is read from SQLite
// every time.
//
// Rows are keyed by object, then identity, so that dropping an object's
// rows costs no scan. Keys own their memory: an identity cut from a
// request body does not pin the body. Used by the writer goroutine only:
// no lock.
type permissionCache struct {
	m    map[string]map[string]permissionFlags // object SID → identity → flags
	n    int                                   // rows in m
	hits int                                   // reads answered from m (for tests)
}

// permissionFlags is what a permission row grants.
type permissionFlags struct{ read, write, manage bool }

// get returns a copy of the row of identity on objectSID, if held.
func (c *permissionCache) get(objectSID, identity string) (*chorus.Permission, bool) {
	f, ok := c.m[objectSID][identity]
	if !ok {
		return nil, false
	}
	c.hits++
	return &chorus.Permission{ObjectSID: objectSID, Identity: identity, Read: f.read, Write: f.write, Manage: f.manage}, true
}

// put holds p, a row SQLite returned or the writer just wrote.
func (c *permissionCache) put(p *chorus.Permission) {
	c.del(p.ObjectSID, p.Identity)
	if len(p.Identity) > maxCachedIdentityBytes {
		return
	}
	for c.n >= maxCachedPermissions && len(c.m) > 0 {
		c.evictOne()
	}
	rows, ok := c.m[p.ObjectSID]
	if !ok {
		rows = make(map[string]permissionFlags)
		c.m[strings.Clone(p.ObjectSID)] = rows
	}
	rows[strings.Clone(p.Identity)] = permissionFlags{read: p.Read, write: p.Write, manage: p.Manage}
	c.n++
}

// del forgets the row of identity on objectSID.
func (c *permissionCache) del(objectSID, identity string) {
	rows := c.m[objectSID]
	if _, ok := rows[identity]; !ok {
		return
	}
	delete(rows, identity)
	c.n--
	if len(rows) == 0 {
		delete(c.m, objectSID)
	}
}

// dropObject forgets the rows of objectSID.
func (c *permissionCache) dropObject(objectSID string) {
	c.n -= len(c.m[objectSID])
	delete(c.m, objectSID)
}

// evictOne forgets one row, at random.
func (c *permissionCache) evictOne() {
	for obj, rows := range c.m {
		for id := range rows {
			c.del(obj, id)
			return
		}
	}
}

func (c *permissionCache) clear() {
	clear(c.m)
	c.n = 0
}
