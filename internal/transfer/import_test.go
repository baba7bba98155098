package transfer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/servertest"
	"github.com/chorus-sync/chorus/internal/store/postgres"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/transfer"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// node is a Chorus server running in-process on 127.0.0.1.
type node struct {
	url   string
	srv   *server.Server
	creds engine.Credentials
	stop  func()
}

// sourceNode starts a node to import from, with fresh credentials, and
// returns its engine and its service.
func sourceNode(t testing.TB) (*node, *engine.Engine, *chorus.Service, engine.Credentials) {
	t.Helper()
	creds := servertest.NewCredentials()
	src := startNode(t, server.Config{DataDir: t.TempDir(), Creds: creds})
	eng := src.srv.Engine()
	svc, err := eng.Service(context.Background(), creds.AccountSID, creds.ServiceSID)
	if err != nil {
		t.Fatal(err)
	}
	return src, eng, svc, creds
}

func startNode(t testing.TB, cfg server.Config) *node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg.Logger = quiet
	cfg.WebhooksAllowPrivate = true        // populate gives a service a loopback webhook URL
	cfg.ShutdownTimeout = 30 * time.Second // generous: a loaded machine
	srv, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Run(runCtx, ln); err != nil {
			t.Errorf("server.Run: %v", err)
		}
	}()
	var once sync.Once
	n := &node{url: "http://" + ln.Addr().String(), srv: srv, creds: cfg.Creds}
	n.stop = func() {
		once.Do(func() {
			stop()
			<-done
		})
	}
	t.Cleanup(n.stop)
	return n
}

func (n *node) source() *transfer.Source {
	return &transfer.Source{BaseURL: n.url, Username: n.creds.APIKeySID, Password: n.creds.APISecret, Logger: quiet, MaxBackoff: 50 * time.Millisecond}
}

// dataset is what populate wrote.
type dataset struct {
	services []string
	objects  int
	items    int
}

// populate writes several services with thousands of objects and items,
// TTLs, permissions, updates and deletions, and unique names and keys with
// spaces and non-ASCII characters, through the engine (the same path as
// REST and the SDK).
func populate(t testing.TB, n *node, docs, lists, maps, perObject int) dataset {
	t.Helper()
	ctx := context.Background()
	eng := n.srv.Engine()
	acct := n.creds.AccountSID
	sys := engine.SystemActor()
	ptr := func(s string) *string { return &s }
	yes, win := true, 3000
	var svcs []*chorus.Service
	first, err := eng.Service(ctx, acct, n.creds.ServiceSID)
	if err != nil {
		t.Fatal(err)
	}
	svcs = append(svcs, first)
	s2, err := eng.CreateService(ctx, acct, engine.ServiceParams{UniqueName: ptr("svc two ü"), FriendlyName: ptr("Zwei — ✓"), ACLEnabled: &yes})
	if err != nil {
		t.Fatal(err)
	}
	s3, err := eng.CreateService(ctx, acct, engine.ServiceParams{FriendlyName: ptr("third"), WebhookURL: ptr("http://127.0.0.1:9/hook"),
		ReachabilityDebouncingEnabled: &yes, ReachabilityDebouncingWindow: &win})
	if err != nil {
		t.Fatal(err)
	}
	svcs = append(svcs, s2, s3)

	jobs := make(chan func() error)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for job := range jobs {
				if err := job(); err != nil {
					failed.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	var ds dataset
	ttl := 3600
	for si, svc := range svcs {
		ds.services = append(ds.services, svc.SID)
		for i := range docs {
			ds.objects++
			jobs <- func() error {
				p := engine.CreateObject{Data: json.RawMessage(fmt.Sprintf(`{"i":%d,"z":"ü","a":[1,2]}`, i))}
				if i%3 == 0 {
					p.UniqueName = fmt.Sprintf("doc %d — café ☕ s%d", i, si)
				}
				if i%5 == 0 {
					p.TTL = &ttl
				}
				a := sys
				if i%4 == 1 {
					a = engine.Actor{Identity: "alice é", System: true}
				}
				d, err := eng.CreateObject(ctx, a, svc, chorus.KindDocument, p)
				if err != nil {
					return err
				}
				if i%7 == 0 {
					if _, err := eng.UpdateObject(ctx, sys, svc, chorus.KindDocument, d.SID, engine.UpdateObject{Data: json.RawMessage(`{"updated":true}`)}); err != nil {
						return err
					}
				}
				if i%10 == 0 {
					for _, id := range []string{"bob", "user ü 1"} {
						if _, err := eng.SetPermission(ctx, svc, chorus.KindDocument, d.SID, chorus.Permission{Identity: id, Read: true, Write: id == "bob"}); err != nil {
							return err
						}
					}
				}
				return nil
			}
		}
		for _, k := range []chorus.Kind{chorus.KindList, chorus.KindMap} {
			count := lists
			if k == chorus.KindMap {
				count = maps
			}
			for i := range count {
				ds.objects++
				ds.items += perObject - perObject/6
				jobs <- func() error {
					p := engine.CreateObject{UniqueName: fmt.Sprintf("%s %d ☃ s%d", k, i, si)}
					if i%4 == 0 {
						p.TTL = &ttl
					}
					if k == chorus.KindList && i%5 == 0 {
						p.Data = json.RawMessage(fmt.Sprintf(`{"context":%d}`, i)) // shown by the store only
					}
					o, err := eng.CreateObject(ctx, sys, svc, k, p)
					if err != nil {
						return err
					}
					for j := range perObject {
						w := engine.ItemWrite{Mode: engine.CreateOnly, Data: json.RawMessage(fmt.Sprintf(`{"j":%d,"s":"ß"}`, j))}
						if j%5 == 0 {
							w.ItemTTL = &ttl
						}
						ref := chorus.ItemRef{Key: fmt.Sprintf("key %d/ü ☃", j)}
						if k == chorus.KindList {
							it, err := eng.AddListItem(ctx, sys, svc, o.SID, w)
							if err != nil {
								return err
							}
							ref = chorus.ItemRef{Index: it.Index}
						} else if _, _, err := eng.WriteItem(ctx, sys, svc, k, o.SID, ref, w); err != nil {
							return err
						}
						if j%6 == 0 { // gaps in list indexes; removed map keys
							if _, err := eng.DeleteItem(ctx, sys, svc, k, o.SID, ref, ""); err != nil {
								return err
							}
						} else if j%9 == 1 {
							w := engine.ItemWrite{Mode: engine.Update, Data: json.RawMessage(`{"again":1}`)}
							if _, _, err := eng.WriteItem(ctx, sys, svc, k, o.SID, ref, w); err != nil {
								return err
							}
						}
					}
					if i%3 == 0 {
						if _, err := eng.SetPermission(ctx, svc, k, o.SID, chorus.Permission{Identity: "carol ✓", Read: true, Manage: true}); err != nil {
							return err
						}
					}
					return nil
				}
			}
		}
		for i := range 5 {
			ds.objects++
			jobs <- func() error {
				_, err := eng.CreateObject(ctx, sys, svc, chorus.KindStream, engine.CreateObject{UniqueName: fmt.Sprintf("stream %d ü", i)})
				return err
			}
		}
	}
	close(jobs)
	wg.Wait()
	if p := failed.Load(); p != nil {
		t.Fatalf("populate: %v", *p)
	}
	return ds
}

// rest GETs path (or an absolute URL) from n with its API key.
func rest(t *testing.T, n *node, path string) map[string]any {
	t.Helper()
	u := path
	if !strings.HasPrefix(u, "http") {
		u = n.url + path
	}
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.SetBasicAuth(n.creds.APIKeySID, n.creds.APISecret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, res.StatusCode, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// restAll pages a collection and returns its elements keyed by id, with
// the fields that name the server (url, links) removed.
func restAll(t *testing.T, n *node, path, key, id string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	u := path + "?PageSize=1000"
	for u != "" {
		page := rest(t, n, u)
		elems, _ := page[key].([]any)
		for _, e := range elems {
			m := e.(map[string]any)
			delete(m, "url")
			delete(m, "links")
			out[fmt.Sprint(m[id])] = m
		}
		u = ""
		if next, ok := page["meta"].(map[string]any)["next_page_url"].(string); ok && next != "" && len(elems) > 0 {
			u = next
		}
	}
	return out
}

func compareSets(t *testing.T, what string, want, got map[string]map[string]any) int {
	t.Helper()
	bad := 0
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			t.Errorf("%s %s: missing in the target", what, id)
			bad++
		} else if !reflect.DeepEqual(w, g) {
			wj, _ := json.Marshal(w)
			gj, _ := json.Marshal(g)
			t.Errorf("%s %s differs:\n source %s\n target %s", what, id, wj, gj)
			bad++
		}
		if bad > 10 {
			t.FailNow()
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("%s %s: in the target only", what, id)
		}
	}
	return len(want)
}

// compareREST compares every service, object, item and permission of the
// services field by field through the REST API of both nodes. It returns
// how many objects and items it compared.
func compareREST(t *testing.T, src, dst *node, services []string) (objects, items int) {
	t.Helper()
	compareSets(t, "service", restAll(t, src, "/v1/Services", "services", "sid"), restAll(t, dst, "/v1/Services", "services", "sid"))
	for _, svc := range services {
		for _, k := range chorus.Kinds {
			path := "/v1/Services/" + svc + "/" + k.Collection()
			key := strings.ToLower(k.Collection())
			want := restAll(t, src, path, key, "sid")
			objects += compareSets(t, string(k), want, restAll(t, dst, path, key, "sid"))
			if k == chorus.KindStream {
				continue
			}
			for sid := range want {
				if k != chorus.KindDocument {
					id := "index"
					if k == chorus.KindMap {
						id = "key"
					}
					items += compareSets(t, string(k)+" "+sid+" item",
						restAll(t, src, path+"/"+sid+"/Items", "items", id), restAll(t, dst, path+"/"+sid+"/Items", "items", id))
				}
				compareSets(t, string(k)+" "+sid+" permission",
					restAll(t, src, path+"/"+sid+"/Permissions", "permissions", "identity"), restAll(t, dst, path+"/"+sid+"/Permissions", "permissions", "identity"))
			}
		}
	}
	return objects, items
}

func account(n *node) transfer.Account {
	return transfer.Account{SID: n.creds.AccountSID, AuthToken: n.creds.AuthToken, APIKeySID: n.creds.APIKeySID, APISecret: n.creds.APISecret}
}

func openSQLite(t testing.TB) (chorus.Store, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, server.DBFile), quiet)
	if err != nil {
		t.Fatal(err)
	}
	return st, dir
}

func logRate(t *testing.T, what string, rep *transfer.Report) {
	t.Helper()
	t.Logf("%s: %d objects, %d items in %.2fs: %.0f objects/s, %.0f items/s, %d requests (%d retried)", what,
		rep.Objects.Created+rep.Objects.Updated+rep.Objects.Unchanged, rep.Items.Created+rep.Items.Updated+rep.Items.Unchanged,
		rep.Elapsed.Seconds(), rep.ObjectsPerSec, rep.ItemsPerSec, rep.Requests, rep.Retries)
}

// TestImport copies a populated Chorus into fresh SQLite and PostgreSQL
// stores, restores a pg_dump of the latter, and compares everything
// through REST each time; then it interrupts an import, changes the
// source, and checks that re-runs converge, survive a faulty source,
// refuse conflicts and reject bad credentials without writing.
func TestImport(t *testing.T) {
	ctx := context.Background()
	creds := servertest.NewCredentials()
	src := startNode(t, server.Config{DataDir: t.TempDir(), Creds: creds})
	start := time.Now()
	ds := populate(t, src, 200, 20, 20, 24)
	t.Logf("populated %d services, %d objects, ~%d items in %v", len(ds.services), ds.objects, ds.items, time.Since(start).Round(time.Millisecond))

	t.Run("sqlite", func(t *testing.T) {
		st, _ := openSQLite(t)
		s := src.source()
		s.PageSize = 64 // listings cross page boundaries
		rep, err := transfer.Import(ctx, s, st, transfer.Options{Account: account(src)})
		if err != nil {
			t.Fatalf("Import: %v", err)
		}
		logRate(t, "Chorus → SQLite", rep)
		if rep.Objects.Created != ds.objects || rep.Services.Created != 3 || len(rep.Conflicts) != 0 || !rep.AccountCreated {
			t.Errorf("report %+v, want %d objects and 3 services created, no conflicts", rep, ds.objects)
		}
		dst := startNode(t, server.Config{Store: st, Creds: creds})
		objs, items := compareREST(t, src, dst, ds.services)
		if objs != ds.objects || items < ds.items {
			t.Errorf("compared %d objects and %d items, want %d and at least %d", objs, items, ds.objects, ds.items)
		}
	})

	t.Run("postgres+pg_dump", func(t *testing.T) {
		dsn := servertest.NewDatabase(t)
		st, err := postgres.Open(ctx, dsn, quiet)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := transfer.Import(ctx, src.source(), st, transfer.Options{Account: account(src)})
		if err != nil {
			st.Close()
			t.Fatalf("Import: %v", err)
		}
		logRate(t, "Chorus → PostgreSQL", rep)
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}

		// pg_dump of the imported database, restored into a fresh one,
		// serves the same data as the source (README: "Backups"): this
		// checks the import into PostgreSQL and the dump at once.
		dump := filepath.Join(t.TempDir(), "chorus.dump")
		if out, err := exec.Command("pg_dump", "--format=custom", "--no-owner", "--file", dump, "--dbname", dsn).CombinedOutput(); err != nil {
			t.Fatalf("pg_dump: %v\n%s", err, out)
		}
		fresh := servertest.NewDatabase(t)
		if out, err := exec.Command("pg_restore", "--no-owner", "--exit-on-error", "--dbname", fresh, dump).CombinedOutput(); err != nil {
			t.Fatalf("pg_restore: %v\n%s", err, out)
		}
		restored := startNode(t, server.Config{StoreURL: fresh, Creds: creds})
		compareREST(t, src, restored, ds.services)
	})

	t.Run("store to postgres", func(t *testing.T) {
		dsn := servertest.NewDatabase(t)
		st, err := postgres.Open(ctx, dsn, quiet)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		// Pages of 7 objects: a kind's listing crosses page boundaries.
		from := &transfer.StoreReader{Store: src.srv.Engine().Store(), PageSize: 7}
		rep, err := transfer.Import(ctx, from, st, transfer.Options{})
		if err != nil {
			t.Fatalf("Import: %v", err)
		}
		logRate(t, "SQLite store → PostgreSQL", rep)
		if rep.Objects.Created != ds.objects || len(rep.Conflicts) != 0 {
			t.Errorf("report %+v, want %d objects created", rep, ds.objects)
		}
		compareStores(t, from.Store, st, creds.AccountSID)
		rep, err = transfer.Import(ctx, from, st, transfer.Options{})
		if err != nil || rep.Objects.Unchanged != ds.objects || rep.Items.Created+rep.Items.Updated+rep.Items.Deleted != 0 {
			t.Errorf("second copy = %v, report objects %+v items %+v, want all unchanged", err, rep.Objects, rep.Items)
		}
	})

	resumed := t.TempDir() // the resumed import's, reused by "conflicts"
	t.Run("resume", func(t *testing.T) {
		st, err := sqlite.Open(ctx, filepath.Join(resumed, server.DBFile), quiet)
		if err != nil {
			t.Fatal(err)
		}
		// Interrupt the first run half way.
		cctx, cancel := context.WithCancel(ctx)
		rep, err := transfer.Import(cctx, src.source(), st, transfer.Options{Account: account(src), Progress: func(p transfer.Progress) {
			if p.ObjectsDone >= p.ObjectsTotal/2 {
				cancel()
			}
		}})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted Import = %v, want context.Canceled", err)
		}
		if n := rep.Objects.Created; n == 0 || n >= ds.objects {
			t.Errorf("interrupted import created %d objects, want some of %d", n, ds.objects)
		}
		// The source changes meanwhile (a live source).
		changeSource(t, src)
		rep, err = transfer.Import(ctx, src.source(), st, transfer.Options{Account: account(src)})
		if err != nil {
			t.Fatalf("second Import: %v", err)
		}
		if rep.Objects.Created == 0 || rep.Objects.Created+rep.Objects.Updated+rep.Objects.Unchanged != ds.objects+1 {
			t.Errorf("second run report objects %+v, want %d objects in all", rep.Objects, ds.objects+1)
		}
		// A third run finds nothing to do.
		rep, err = transfer.Import(ctx, src.source(), st, transfer.Options{Account: account(src)})
		if err != nil {
			t.Fatalf("third Import: %v", err)
		}
		if rep.Objects.Created+rep.Objects.Updated != 0 || rep.Items.Created+rep.Items.Updated+rep.Items.Deleted != 0 ||
			rep.Permissions.Created+rep.Permissions.Updated+rep.Permissions.Deleted != 0 {
			t.Errorf("third run wrote: %+v %+v %+v", rep.Objects, rep.Items, rep.Permissions)
		}
		checkEventIDs(t, st, rep)

		// What a run killed inside a new map leaves: the row with the
		// marker date (the Unix epoch) and only some items. The next run
		// copies the rest.
		removed := 0
		err = st.Update(ctx, func(tx chorus.Tx) error {
			removed = 0
			m, err := tx.ObjectByName(ctx, chorus.KindMap, ds.services[1], "map 3 ☃ s1")
			if err != nil {
				return err
			}
			m.DateUpdated = time.Unix(0, 0).UTC()
			if err := tx.UpdateObject(ctx, m); err != nil {
				return err
			}
			items, err := tx.Items(ctx, m.SID, chorus.ItemQuery{Kind: chorus.KindMap})
			if err != nil {
				return err
			}
			for _, it := range items[len(items)/2:] {
				if err := tx.DeleteItem(ctx, m.SID, chorus.ItemRef{Key: it.Key}); err != nil {
					return err
				}
				removed++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		rep, err = transfer.Import(ctx, src.source(), st, transfer.Options{Account: account(src)})
		if err != nil {
			t.Fatalf("fourth Import: %v", err)
		}
		if rep.Objects.Updated != 1 || rep.Items.Created != removed || removed == 0 {
			t.Errorf("after an interrupted map: objects %+v items %+v, want 1 object updated and %d items created", rep.Objects, rep.Items, removed)
		}
		checkEventIDs(t, st, rep)
		dst := startNode(t, server.Config{Store: st, Creds: creds})
		compareREST(t, src, dst, ds.services)
	})

	t.Run("faulty source", func(t *testing.T) {
		var n atomic.Int64
		// The first request for every other URL fails, in turn with a 429,
		// a 502 and a dropped connection; the retry passes.
		var mu sync.Mutex
		seen := map[string]bool{}
		proxy := faultProxy(t, src.url, func(i int64, path string) int {
			mu.Lock()
			defer mu.Unlock()
			if seen[path] || i%2 == 0 {
				return 0
			}
			seen[path] = true
			return []int{http.StatusTooManyRequests, http.StatusBadGateway, -1}[len(seen)%3]
		}, &n)
		s := src.source()
		s.BaseURL = proxy
		st, _ := openSQLite(t)
		rep, err := transfer.Import(ctx, s, st, transfer.Options{Account: account(src), Services: []string{"svc two ü"}})
		if err != nil {
			t.Fatalf("Import through faults: %v", err)
		}
		if rep.Retries == 0 || rep.Services.Created != 1 {
			t.Errorf("report %+v: want retries and one service", rep)
		}
		dst := startNode(t, server.Config{Store: st, Creds: creds})
		compareSets(t, "document", restAll(t, src, "/v1/Services/"+ds.services[1]+"/Documents", "documents", "sid"),
			restAll(t, dst, "/v1/Services/"+ds.services[1]+"/Documents", "documents", "sid"))
		compareSets(t, "map", restAll(t, src, "/v1/Services/"+ds.services[1]+"/Maps", "maps", "sid"),
			restAll(t, dst, "/v1/Services/"+ds.services[1]+"/Maps", "maps", "sid"))
	})

	t.Run("source goes away", func(t *testing.T) {
		var n atomic.Int64
		proxy := faultProxy(t, src.url, func(i int64, _ string) int {
			if i > 40 {
				return http.StatusServiceUnavailable
			}
			return 0
		}, &n)
		s := src.source()
		s.BaseURL, s.Attempts = proxy, 3
		st, _ := openSQLite(t)
		defer st.Close()
		rep, err := transfer.Import(ctx, s, st, transfer.Options{Account: account(src)})
		if err == nil || !strings.Contains(err.Error(), "gave up after 3 attempts") || !strings.Contains(err.Error(), "503") {
			t.Fatalf("Import from a dead source = %v, want an error saying it gave up on 503s", err)
		}
		if rep.Services.Created == 0 {
			t.Errorf("report %+v: want what was copied before the failure", rep)
		}
	})

	t.Run("conflicts", func(t *testing.T) {
		if _, err := os.Stat(filepath.Join(resumed, server.DBFile)); err != nil {
			t.Fatalf("needs the store of the resume test: %v", err)
		}
		st, err := sqlite.Open(ctx, filepath.Join(resumed, server.DBFile), quiet)
		if err != nil {
			t.Fatal(err)
		}
		// The target gets its own object under a source object's unique
		// name, and a source SID in another service.
		name := "doc 0 — café ☕ s0"
		var victim, moved *chorus.Object
		err = st.Update(ctx, func(tx chorus.Tx) error {
			var err error
			if victim, err = tx.ObjectByName(ctx, chorus.KindDocument, ds.services[0], name); err != nil {
				return err
			}
			if err := tx.DeleteObject(ctx, victim.SID); err != nil {
				return err
			}
			now := time.Now().UTC().Truncate(time.Millisecond)
			other := &chorus.Object{Kind: chorus.KindDocument, SID: chorus.NewSID(chorus.PrefixDocument), AccountSID: victim.AccountSID,
				ServiceSID: victim.ServiceSID, UniqueName: name, Data: json.RawMessage(`{"mine":1}`), LastEventID: 1,
				CreatedBy: "system", DateCreated: now, DateUpdated: now}
			if err := tx.InsertObject(ctx, other); err != nil {
				return err
			}
			objs, err := tx.Objects(ctx, chorus.KindMap, ds.services[2], chorus.ObjectQuery{Limit: 1})
			if err != nil {
				return err
			}
			moved = objs[0]
			if err := tx.DeleteObject(ctx, moved.SID); err != nil {
				return err
			}
			m := *moved
			m.ServiceSID, m.UniqueName = ds.services[1], "moved"
			return tx.InsertObject(ctx, &m)
		})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := transfer.Import(ctx, src.source(), st, transfer.Options{Account: account(src)})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, c := range rep.Conflicts {
			got[c.SID] = true
		}
		if rep.Objects.Refused != 2 || !got[victim.SID] || !got[moved.SID] {
			t.Errorf("conflicts %+v (refused %d), want %s and %s", rep.Conflicts, rep.Objects.Refused, victim.SID, moved.SID)
		}
		err = st.View(ctx, func(tx chorus.ReadTx) error {
			o, err := tx.ObjectByName(ctx, chorus.KindDocument, ds.services[0], name)
			if err != nil {
				return err
			}
			if string(o.Data) != `{"mine":1}` {
				t.Errorf("refused object was overwritten: %s", o.Data)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		rep, err = transfer.Import(ctx, src.source(), st, transfer.Options{Account: account(src), Overwrite: true})
		if err != nil || len(rep.Conflicts) != 0 || rep.Objects.Created != 2 {
			t.Fatalf("Import --overwrite = %v, report %+v, want the 2 objects created", err, rep)
		}
		// What it deleted to do so is reported (it said "0 deleted").
		deleted := map[string]string{}
		for _, n := range rep.Notes {
			if strings.HasPrefix(n.Reason, "deleted by --overwrite") {
				deleted[n.SID] = n.UniqueName
			}
		}
		if rep.Objects.Deleted != 2 || len(deleted) != 2 || deleted[moved.SID] != "moved" || !slices.Contains(slices.Collect(maps.Values(deleted)), name) {
			t.Errorf("--overwrite: %d deleted, notes %+v; want the target's document %q and map %s", rep.Objects.Deleted, rep.Notes, name, moved.SID)
		}
		dst := startNode(t, server.Config{Store: st, Creds: creds})
		for _, c := range []struct{ svc, kind, sid string }{{ds.services[0], "Documents", victim.SID}, {ds.services[2], "Maps", moved.SID}} {
			path := "/v1/Services/" + c.svc + "/" + c.kind + "/" + c.sid
			w, g := rest(t, src, path), rest(t, dst, path)
			delete(w, "url")
			delete(g, "url")
			delete(w, "links")
			delete(g, "links")
			if !reflect.DeepEqual(w, g) {
				t.Errorf("%s after --overwrite:\n source %v\n target %v", c.sid, w, g)
			}
		}
		if got := restAll(t, dst, "/v1/Services/"+ds.services[1]+"/Maps", "maps", "sid"); got[moved.SID] != nil {
			t.Errorf("--overwrite left the conflicting map %s in service %s", moved.SID, ds.services[1])
		}
	})

	t.Run("wrong credentials", func(t *testing.T) {
		st, _ := openSQLite(t)
		defer st.Close()
		s := src.source()
		s.Password = "wrong"
		_, err := transfer.Import(ctx, s, st, transfer.Options{Account: account(src)})
		if !errors.Is(err, transfer.ErrCredentials) {
			t.Fatalf("Import with a wrong secret = %v, want ErrCredentials", err)
		}
		err = st.View(ctx, func(tx chorus.ReadTx) error {
			accts, err := tx.Accounts(ctx)
			if len(accts) != 0 {
				t.Errorf("the target has %d accounts after a refused import", len(accts))
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// changeSource changes the source between two runs: a document update, an
// item added, changed and removed, a permission changed and removed, a new
// object.
func changeSource(t *testing.T, n *node) {
	t.Helper()
	ctx := context.Background()
	eng := n.srv.Engine()
	sys := engine.SystemActor()
	svc, err := eng.Service(ctx, n.creds.AccountSID, n.creds.ServiceSID)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = eng.UpdateObject(ctx, sys, svc, chorus.KindDocument, "doc 3 — café ☕ s0", engine.UpdateObject{Data: json.RawMessage(`{"changed":"later"}`)})
	must(err)
	list, mp := "list 1 ☃ s0", "map 2 ☃ s0"
	_, err = eng.AddListItem(ctx, sys, svc, list, engine.ItemWrite{Data: json.RawMessage(`{"new":1}`)})
	must(err)
	_, _, err = eng.WriteItem(ctx, sys, svc, chorus.KindList, list, chorus.ItemRef{Index: 1}, engine.ItemWrite{Mode: engine.Update, Data: json.RawMessage(`{"new":2}`)})
	must(err)
	_, err = eng.DeleteItem(ctx, sys, svc, chorus.KindList, list, chorus.ItemRef{Index: 2}, "")
	must(err)
	_, err = eng.DeleteItem(ctx, sys, svc, chorus.KindMap, mp, chorus.ItemRef{Key: "key 1/ü ☃"}, "")
	must(err)
	_, err = eng.SetPermission(ctx, svc, chorus.KindMap, "map 0 ☃ s0", chorus.Permission{Identity: "carol ✓", Write: true})
	must(err)
	must(eng.DeletePermission(ctx, svc, chorus.KindDocument, "doc 0 — café ☕ s0", "bob"))
	_, err = eng.CreateObject(ctx, sys, svc, chorus.KindDocument, engine.CreateObject{UniqueName: "late ✓", Data: json.RawMessage(`{"late":true}`)})
	must(err)
}

// checkEventIDs checks the invariants the gateway relies on: every
// imported object's LastEventID is above the event base and at least that
// of each of its items, and a collection's items have distinct ids.
func checkEventIDs(t *testing.T, st chorus.Store, rep *transfer.Report) {
	t.Helper()
	ctx := context.Background()
	base := time.Now().Add(-time.Hour).UnixMilli()
	err := st.View(ctx, func(tx chorus.ReadTx) error {
		svcs, err := tx.Services(ctx, rep.AccountSID, chorus.ObjectQuery{})
		if err != nil {
			return err
		}
		for _, svc := range svcs {
			for _, k := range []chorus.Kind{chorus.KindDocument, chorus.KindList, chorus.KindMap} {
				objs, err := tx.Objects(ctx, k, svc.SID, chorus.ObjectQuery{})
				if err != nil {
					return err
				}
				for _, o := range objs {
					if o.LastEventID < base {
						t.Errorf("%s LastEventID %d, want above %d", o.SID, o.LastEventID, base)
					}
					items, err := tx.Items(ctx, o.SID, chorus.ItemQuery{Kind: k})
					if err != nil {
						return err
					}
					seen := map[int64]bool{}
					for _, it := range items {
						if it.LastEventID > o.LastEventID || it.LastEventID < base || seen[it.LastEventID] {
							t.Errorf("%s item %d %q: LastEventID %d (object %d, duplicate %v)", o.SID, it.Index, it.Key, it.LastEventID, o.LastEventID, seen[it.LastEventID])
						}
						seen[it.LastEventID] = true
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// faultProxy forwards to target, except that request i (1-based) for path
// answers the status fault(i, path) returns (with Retry-After: 0 for 429), or drops the
// connection for -1.
func faultProxy(t *testing.T, target string, fault func(i int64, path string) int, n *atomic.Int64) string {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch f := fault(n.Add(1), r.URL.RequestURI()); f {
		case 0:
			rp.ServeHTTP(w, r)
		case -1:
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close()
			}
		default:
			if f == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", "0")
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(f)
			fmt.Fprintf(w, `{"code":20429,"message":"fault %d","status":%d}`, f, f)
		}
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String()
}

// compareStores checks that dst holds exactly what src does, to the
// millisecond, apart from event ids: credentials, services, objects (with
// list context and next index), items and permissions.
func compareStores(t *testing.T, src, dst chorus.Store, acct string) {
	t.Helper()
	ctx := context.Background()
	type snapshot struct {
		accts []*chorus.Account
		keys  []*chorus.APIKey
		svcs  []*chorus.Service
		objs  []chorus.Object
		items []chorus.Item
		perms []*chorus.Permission
	}
	read := func(st chorus.Store) snapshot {
		var s snapshot
		err := st.View(ctx, func(tx chorus.ReadTx) error {
			var err error
			if s.accts, err = tx.Accounts(ctx); err != nil {
				return err
			}
			if s.keys, err = tx.APIKeys(ctx, acct); err != nil {
				return err
			}
			if s.svcs, err = tx.Services(ctx, acct, chorus.ObjectQuery{}); err != nil {
				return err
			}
			for _, svc := range s.svcs {
				for _, k := range chorus.Kinds {
					objs, err := tx.Objects(ctx, k, svc.SID, chorus.ObjectQuery{})
					if err != nil {
						return err
					}
					for _, o := range objs {
						c := *o
						c.LastEventID = 0
						s.objs = append(s.objs, c)
						items, err := tx.Items(ctx, o.SID, chorus.ItemQuery{Kind: k})
						if err != nil {
							return err
						}
						for _, it := range items {
							c := *it
							c.LastEventID = 0
							s.items = append(s.items, c)
						}
						ps, err := tx.Permissions(ctx, o.SID, chorus.PermissionQuery{})
						if err != nil {
							return err
						}
						s.perms = append(s.perms, ps...)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	want, got := read(src), read(dst)
	if len(want.objs) == 0 || len(want.items) == 0 {
		t.Fatalf("nothing to compare: %d objects, %d items", len(want.objs), len(want.items))
	}
	for _, c := range []struct {
		what      string
		want, got any
	}{
		{"accounts", want.accts, got.accts}, {"API keys", want.keys, got.keys}, {"services", want.svcs, got.svcs},
		{"objects", want.objs, got.objs}, {"items", want.items, got.items}, {"permissions", want.perms, got.perms},
	} {
		if !reflect.DeepEqual(c.want, c.got) {
			t.Errorf("%s differ between the stores", c.what)
		}
	}
}

var benchConcurrency = 4

// BenchmarkImport measures import throughput from a Chorus on this machine
// into SQLite and PostgreSQL (objects and items per second of one run).
func BenchmarkImport(b *testing.B) {
	ctx := context.Background()
	creds := servertest.NewCredentials()
	src := startNode(b, server.Config{DataDir: b.TempDir(), Creds: creds})
	ds := populate(b, src, 1000, 30, 30, 100)
	b.Logf("source: %d objects, ~%d items", ds.objects, ds.items)
	for _, target := range []string{"sqlite", "postgres"} {
		b.Run("to="+target, func(b *testing.B) {
			var objs, items, secs float64
			for b.Loop() {
				b.StopTimer()
				var st chorus.Store
				if target == "sqlite" {
					st, _ = openSQLite(b)
				} else {
					var err error
					if st, err = postgres.Open(ctx, servertest.NewDatabase(b), quiet); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				rep, err := transfer.Import(ctx, src.source(), st, transfer.Options{Account: account(src), Concurrency: benchConcurrency})
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				st.Close()
				objs += float64(rep.Objects.Created)
				items += float64(rep.Items.Created)
				secs += rep.Elapsed.Seconds()
				b.StartTimer()
			}
			b.ReportMetric(objs/secs, "objects/s")
			b.ReportMetric(items/secs, "items/s")
		})
	}
}
