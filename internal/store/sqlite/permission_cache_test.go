package sqlite

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/chorus-sync/chorus"
)

// TestPermissionCacheCoherent runs 300 rounds of random concurrent
// requests that grant, change, revoke and read permissions (some of them
// failing after their writes, some writing a permission on a missing
// object), deletes documents with their permissions, and lets another
// store write the file; after every round Permission in Update (the
// writer's rows) must answer exactly what Permission in View (SQLite)
// does, for every identity on every document. A stale row here would
// grant what was revoked.
func TestPermissionCacheCoherent(t *testing.T) {
	ctx := context.Background()
	s, path := openFile(t)
	seedDoc(t, s) // the service
	now := time.Unix(1_700_000_000, 0).UTC()
	newDoc := func() *chorus.Object {
		o := &chorus.Object{Kind: chorus.KindDocument, SID: chorus.NewSID(chorus.PrefixDocument), AccountSID: "AC1",
			ServiceSID: "IS1", CreatedBy: "t", DateCreated: now, DateUpdated: now}
		if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.InsertObject(ctx, o) }); err != nil {
			t.Fatal(err)
		}
		return o
	}
	docs := []*chorus.Object{newDoc(), newDoc()}
	identities := []string{"alice", "bob", "carol"}
	type target struct{ object, identity string }
	targets := func() []target {
		var ts []target
		for _, d := range docs {
			for _, id := range identities {
				ts = append(ts, target{d.SID, id})
			}
		}
		return ts
	}
	errFail := errors.New("fail after writing")
	op := func(seed uint64, ts []target) func(tx chorus.Tx) error {
		r := rand.New(rand.NewPCG(seed, 7))
		return func(tx chorus.Tx) error {
			for range 1 + r.IntN(3) {
				tg := ts[r.IntN(len(ts))]
				switch r.IntN(4) {
				case 0:
					p := &chorus.Permission{ObjectSID: tg.object, Identity: tg.identity,
						Read: r.IntN(2) == 0, Write: r.IntN(2) == 0, Manage: r.IntN(2) == 0}
					if r.IntN(15) == 0 { // a permission on no object: refused, and SQLite goes on
						bogus := *p
						bogus.ObjectSID = chorus.NewSID(chorus.PrefixDocument)
						if err := tx.PutPermission(ctx, &bogus); err == nil {
							return fmt.Errorf("PutPermission on a missing object = nil")
						}
						if _, err := tx.Permission(ctx, bogus.ObjectSID, bogus.Identity); !errors.Is(err, chorus.ErrNotFound) {
							return fmt.Errorf("Permission after a refused put = %w, want not found", err)
						}
					}
					if err := tx.PutPermission(ctx, p); err != nil {
						return err
					}
					p.Read, p.Write, p.Manage = true, true, true // the caller's, not the cache's
				case 1:
					if err := tx.DeletePermission(ctx, tg.object, tg.identity); err != nil && !errors.Is(err, chorus.ErrNotFound) {
						return err
					}
				default:
					p, err := tx.Permission(ctx, tg.object, tg.identity)
					if err != nil && !errors.Is(err, chorus.ErrNotFound) {
						return err
					}
					if p != nil { // the caller owns what it got
						p.Read, p.Write, p.Manage = true, true, true
					}
				}
			}
			if r.IntN(5) == 0 {
				return errFail
			}
			return nil
		}
	}
	read := func(in func(func(chorus.ReadTx) error) error, ts []target) []string {
		out := make([]string, len(ts))
		if err := in(func(tx chorus.ReadTx) error {
			for i, tg := range ts {
				p, err := tx.Permission(ctx, tg.object, tg.identity)
				switch {
				case errors.Is(err, chorus.ErrNotFound):
					out[i] = "none"
				case err != nil:
					return err
				default:
					out[i] = fmt.Sprintf("%+v", *p)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	inWriter, inView := readIn(ctx, s)
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 300 {
		ts := targets()
		var wg sync.WaitGroup
		for range 1 + rng.IntN(4) {
			seed := rng.Uint64()
			wg.Go(func() {
				if err := s.Update(ctx, op(seed, ts)); err != nil && !errors.Is(err, errFail) {
					t.Errorf("round %d: %v", round, err)
				}
			})
		}
		wg.Wait()
		switch rng.IntN(20) {
		case 0: // a document goes, with its permissions; a new one takes its place
			gone := docs[0]
			if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.DeleteObject(ctx, gone.SID) }); err != nil {
				t.Fatal(err)
			}
			docs[0] = newDoc()
			for _, id := range identities {
				for _, in := range []func(func(chorus.ReadTx) error) error{inWriter, inView} {
					if err := in(func(tx chorus.ReadTx) error {
						_, err := tx.Permission(ctx, gone.SID, id)
						return err
					}); !errors.Is(err, chorus.ErrNotFound) {
						t.Fatalf("round %d: permission of %s on a deleted document: %v", round, id, err)
					}
				}
			}
		case 1: // another store revokes or grants
			o, err := Open(ctx, path, nil)
			if err != nil {
				t.Fatal(err)
			}
			d := docs[rng.IntN(len(docs))]
			err = o.Update(ctx, func(tx chorus.Tx) error {
				if rng.IntN(2) == 0 {
					return tx.DeletePermission(ctx, d.SID, "alice")
				}
				return tx.PutPermission(ctx, &chorus.Permission{ObjectSID: d.SID, Identity: "alice", Read: true})
			})
			o.Close()
			if err != nil && !errors.Is(err, chorus.ErrNotFound) {
				t.Fatal(err)
			}
		}
		ts = targets()
		got, want := read(inWriter, ts), read(inView, ts)
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("round %d: Permission(%s, %s) in Update = %s, in View = %s", round, ts[i].object, ts[i].identity, got[i], want[i])
			}
		}
	}
	var hits int
	if err := s.Update(ctx, func(chorus.Tx) error { hits = s.objs.perms.hits; return nil }); err != nil {
		t.Fatal(err)
	}
	if hits == 0 {
		t.Fatal("the writer's permission rows never answered a read: the test checked nothing")
	}

	// A deleted service takes its objects' permissions with it.
	ts := targets()
	if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.DeleteService(ctx, "IS1") }); err != nil {
		t.Fatal(err)
	}
	for i, got := range read(inWriter, ts) {
		if got != "none" {
			t.Errorf("Permission(%v) after its service was deleted = %s", ts[i], got)
		}
	}
}

// A revocation in a request that fails is undone with it: the writer's
// row must come back as SQLite has it, not as the failed request left it.
func TestPermissionCacheRolledBack(t *testing.T) {
	ctx := context.Background()
	s, _ := openFile(t)
	doc := seedDoc(t, s)
	grant := &chorus.Permission{ObjectSID: doc.SID, Identity: "alice", Read: true, Write: true}
	if err := s.Update(ctx, func(tx chorus.Tx) error { return tx.PutPermission(ctx, grant) }); err != nil {
		t.Fatal(err)
	}
	get := func(tx chorus.ReadTx) (string, error) {
		p, err := tx.Permission(ctx, doc.SID, "alice")
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%+v", *p), nil
	}
	errFail := errors.New("fail")
	errs := batchOf(t, s,
		func(tx chorus.Tx) error { _, err := get(tx); return err }, // fills the row
		func(tx chorus.Tx) error {
			if err := tx.DeletePermission(ctx, doc.SID, "alice"); err != nil {
				return err
			}
			return errFail
		},
		func(tx chorus.Tx) error {
			if err := tx.PutPermission(ctx, &chorus.Permission{ObjectSID: doc.SID, Identity: "alice", Read: true}); err != nil {
				return err
			}
			return errFail
		},
	)
	if errs[0] != nil || !errors.Is(errs[1], errFail) || !errors.Is(errs[2], errFail) {
		t.Fatalf("batch = %v", errs)
	}
	var inWriter string
	if err := s.Update(ctx, func(tx chorus.Tx) (err error) { inWriter, err = get(tx); return err }); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%+v", *grant); inWriter != want {
		t.Errorf("after failed requests, the writer reads %s, want %s", inWriter, want)
	}
}

// The writer's permission rows stay within their bounds, count exactly,
// and own their memory.
func TestPermissionCacheBounds(t *testing.T) {
	c := permissionCache{m: make(map[string]map[string]permissionFlags)}
	check := func() {
		t.Helper()
		n := 0
		for obj, rows := range c.m {
			if len(rows) == 0 {
				t.Fatalf("object %s holds an empty set of rows", obj)
			}
			n += len(rows)
		}
		if n != c.n || n > maxCachedPermissions {
			t.Fatalf("n = %d, %d rows held, bound %d", c.n, n, maxCachedPermissions)
		}
	}
	// A request body the object SIDs and identities are cut from: random
	// letters, so that every 40-byte window is a distinct identity.
	r := rand.New(rand.NewPCG(5, 6))
	var b strings.Builder
	for range 1 << 16 {
		b.WriteByte(byte('a' + r.IntN(26)))
	}
	body := b.String()
	inBody := func(s string) bool {
		p, start := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(unsafe.StringData(body)))
		return p >= start && p < start+uintptr(len(body))
	}
	for i := range 2 * maxCachedPermissions {
		c.put(&chorus.Permission{ObjectSID: body[i%7 : i%7+34], Identity: body[100+i : 140+i], Read: true})
	}
	check()
	if c.n != maxCachedPermissions {
		t.Errorf("%d rows held, want %d", c.n, maxCachedPermissions)
	}
	for obj, rows := range c.m {
		for id := range rows {
			if inBody(obj) || inBody(id) {
				t.Fatal("a held row shares the request body's memory")
			}
		}
	}
	c.put(&chorus.Permission{ObjectSID: "ET1", Identity: "alice", Write: true})
	c.put(&chorus.Permission{ObjectSID: "ET1", Identity: "alice", Read: true}) // replaces
	if p, ok := c.get("ET1", "alice"); !ok || !p.Read || p.Write || p.ObjectSID != "ET1" || p.Identity != "alice" {
		t.Errorf("get after a replacing put = %+v, %v", p, ok)
	}
	check()
	c.dropObject("ET1")
	check()
	if _, ok := c.get("ET1", "alice"); ok {
		t.Error("dropObject left a row of its object")
	}
	long := &chorus.Permission{ObjectSID: "ET2", Identity: strings.Repeat("x", maxCachedIdentityBytes+1), Read: true}
	c.put(long)
	if _, ok := c.get("ET2", long.Identity); ok {
		t.Error("a row with an identity over the bound is held")
	}
	check()
	c.clear()
	check()
	if c.n != 0 || len(c.m) != 0 {
		t.Error("clear left rows")
	}
}

// With ACLs on, every write reads its permission inside Update first: the
// second and later such reads are answered from the writer's rows.
func TestPermissionReadServedInWriter(t *testing.T) {
	ctx := context.Background()
	s, _ := openFile(t)
	doc := seedDoc(t, s)
	if err := s.Update(ctx, func(tx chorus.Tx) error {
		return tx.PutPermission(ctx, &chorus.Permission{ObjectSID: doc.SID, Identity: "alice", Write: true})
	}); err != nil {
		t.Fatal(err)
	}
	hits := func() (n int) {
		if err := s.Update(ctx, func(chorus.Tx) error { n = s.objs.perms.hits; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := hits()
	for i := range 3 {
		if err := s.Update(ctx, func(tx chorus.Tx) error {
			p, err := tx.Permission(ctx, doc.SID, "alice")
			if err != nil || !p.Write {
				return fmt.Errorf("permission = %+v, %w", p, err)
			}
			return setData(ctx, doc, fmt.Sprint(i))(tx)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got := hits() - before; got != 3 {
		t.Errorf("%d of 3 permission reads answered from memory", got)
	}
}

// A tx used after its Update returned fails its deletions before they
// touch the writer's caches, which the writer goroutine is using
// meanwhile (the race detector sees it when they do).
func TestLeakedTxLeavesCachesAlone(t *testing.T) {
	ctx := context.Background()
	s, _ := openFile(t)
	doc := seedDoc(t, s)
	var leaked chorus.Tx
	if err := s.Update(ctx, func(tx chorus.Tx) error { leaked = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			if err := errors.Join(leaked.DeletePermission(ctx, doc.SID, "alice"), leaked.DeleteObject(ctx, doc.SID),
				leaked.DeleteItem(ctx, doc.SID, chorus.ItemRef{Key: "k"}), leaked.DeleteService(ctx, doc.ServiceSID)); err == nil {
				t.Error("deletions on a finished tx = nil error, want one")
				return
			}
		}
	}()
	for range 200 {
		if err := s.Update(ctx, func(tx chorus.Tx) error {
			if err := tx.PutPermission(ctx, &chorus.Permission{ObjectSID: doc.SID, Identity: "alice", Read: true}); err != nil {
				return err
			}
			return tx.DeletePermission(ctx, doc.SID, "alice")
		}); err != nil {
			t.Fatal(err)
		}
	}
	<-done
}
