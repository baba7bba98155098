package transfer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/transfer"
)

// An account is copied as its pages arrive, not listed whole first: the
// import holds a page and the objects in flight, whatever the account's
// size. Against a Chorus source listing 2 lists a page, the first list's
// items are read before the last page of lists is asked for, and the
// progress says the total is open until the listing ends.
func TestImportCopiesWhileListing(t *testing.T) {
	ctx := context.Background()
	src, eng, svc, _ := sourceNode(t)
	const lists = 6
	for i := range lists {
		o, err := eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindList, engine.CreateObject{})
		if err != nil {
			t.Fatal(err)
		}
		w := engine.ItemWrite{Mode: engine.CreateOnly, Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
		if _, err := eng.AddListItem(ctx, engine.SystemActor(), svc, o.SID, w); err != nil {
			t.Fatal(err)
		}
	}

	// A proxy in front of the source records the order of its requests.
	target, err := url.Parse(src.url)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		log []string
	)
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		log = append(log, r.URL.RequestURI())
		mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	s := src.source()
	s.BaseURL = front.URL
	s.PageSize = 2

	st, _ := openSQLite(t)
	var progress []transfer.Progress
	rep, err := transfer.Import(ctx, s, st, transfer.Options{Account: account(src), Concurrency: 1,
		Progress: func(p transfer.Progress) { progress = append(progress, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Objects.Created != lists || rep.Items.Created != lists {
		t.Fatalf("objects %+v, items %+v; want %d lists with an item each", rep.Objects, rep.Items, lists)
	}

	firstItems, lastPage := -1, -1
	for i, u := range log {
		switch {
		case strings.Contains(u, "/Items") && firstItems < 0:
			firstItems = i
		case strings.Contains(u, "/Lists?") && strings.Contains(u, "PageToken="):
			lastPage = i
		}
	}
	if firstItems < 0 || lastPage < 0 {
		t.Fatalf("no items read or no second page of lists asked for: %q", log)
	}
	if firstItems > lastPage {
		t.Errorf("the first list's items were read (request %d) after the last page of lists (request %d): the account was listed whole first\n%s",
			firstItems, lastPage, strings.Join(log, "\n"))
	}

	last := progress[len(progress)-1]
	if last.Listing || last.ObjectsTotal != lists || last.ObjectsDone != lists {
		t.Errorf("last progress %+v, want %d of %d objects with the listing over", last, lists, lists)
	}
	if !progress[0].Listing {
		t.Errorf("first progress %+v says the listing was over after one object of %d", progress[0], lists)
	}
}
