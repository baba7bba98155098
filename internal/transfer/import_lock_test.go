package transfer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/servertest"
	"github.com/chorus-sync/chorus/internal/store/postgres"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/transfer"
)

// TestImportItemsLockTheObject: an import into a live PostgreSQL target
// writes a collection's items under the collection's row lock, as the
// engine's item writes do; the sweeper relies on that lock when it
// re-reads an expired item before deleting it. A raw transaction holds
// the map's lock: the import's items must not commit until it ends.
func TestImportItemsLockTheObject(t *testing.T) {
	ctx := context.Background()
	srcStore, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "src.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srcStore.Close() })
	eng := engine.New(engine.Config{Store: srcStore, Bus: mem.New()})
	creds, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := eng.Service(ctx, creds.AccountSID, creds.ServiceSID)
	if err != nil {
		t.Fatal(err)
	}
	sys := engine.SystemActor()
	m, err := eng.CreateObject(ctx, sys, svc, chorus.KindMap, engine.CreateObject{})
	if err != nil {
		t.Fatal(err)
	}
	put := func(from, to int) {
		for i := from; i < to; i++ {
			if _, _, err := eng.WriteItem(ctx, sys, svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: fmt.Sprint("k", i)},
				engine.ItemWrite{Mode: engine.Upsert, Data: json.RawMessage(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 3)

	dsn := servertest.NewDatabase(t)
	dst, err := postgres.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	from := &transfer.StoreReader{Store: srcStore}
	if _, err := transfer.Import(ctx, from, dst, transfer.Options{}); err != nil {
		t.Fatalf("first Import: %v", err)
	}
	put(3, 8) // five new items for the second run

	lock := servertest.Connect(t, dsn, nil)
	watch := servertest.Connect(t, dsn, nil)
	items := func() int {
		var n int
		if err := watch.QueryRow(ctx, `SELECT count(*) FROM items WHERE object_sid = $1`, m.SID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	w, err := lock.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Rollback(ctx)
	if _, err := w.Exec(ctx, `SELECT 1 FROM objects WHERE sid = $1 FOR NO KEY UPDATE`, m.SID); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := transfer.Import(ctx, from, dst, transfer.Options{})
		done <- err
	}()
	servertest.WaitForLockWait(t, watch, done, "the import")
	if n := items(); n != 3 {
		t.Errorf("the target holds %d items while the map is locked, want the 3 of the first run", n)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("second Import: %v", err)
	}
	if n := items(); n != 8 {
		t.Errorf("the target holds %d items after the import, want 8", n)
	}
}
