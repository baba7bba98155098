package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// BenchmarkREST measures one round trip over loopback HTTP, Basic auth
// included, against the SQLite-backed engine: sequentially, and from 32
// closed-loop clients (rtbench's publish shape: each writes its own of 32
// documents, or its own key of one map; every write is durable before its
// answer).
func BenchmarkREST(b *testing.B) {
	f := newFixture(b)
	svc := "/v1/Services/" + f.svc
	const docs = 32
	for i := range docs {
		name := fmt.Sprintf("d%d", i)
		if resp, body := f.do(http.MethodPost, svc+"/Documents", url.Values{"UniqueName": {name}, "Data": {`{"a":1}`}}, nil); resp.StatusCode != 201 {
			b.Fatalf("create = %d %s", resp.StatusCode, body)
		}
	}
	// A map with an item per client: a map item set by key is how Sync
	// is used as a key-value store.
	if resp, body := f.do(http.MethodPost, svc+"/Maps", url.Values{"UniqueName": {"m"}}, nil); resp.StatusCode != 201 {
		b.Fatalf("create map = %d %s", resp.StatusCode, body)
	}
	for i := range docs {
		if resp, body := f.do(http.MethodPost, svc+"/Maps/m/Items", url.Values{"Key": {fmt.Sprintf("k%d", i)}, "Data": {`{"a":1}`}}, nil); resp.StatusCode != 201 {
			b.Fatalf("create item = %d %s", resp.StatusCode, body)
		}
	}
	// The default transport keeps 2 idle connections per host; 32 clients
	// would keep dialling.
	f.srv.Client().Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	form := url.Values{"Data": {`{"title":"Quarterly report","status":"in review","owner":"alice","n":42}`}}
	// sequential runs one client on path.
	sequential := func(b *testing.B, method, path string, form url.Values) {
		b.ReportAllocs()
		for b.Loop() {
			if resp, _ := f.do(method, path, form, nil); resp.StatusCode != 200 {
				b.Fatal(resp.Status)
			}
		}
	}
	b.Run("op=fetch-document", func(b *testing.B) { sequential(b, http.MethodGet, svc+"/Documents/d0", nil) })
	b.Run("op=update-document", func(b *testing.B) { sequential(b, http.MethodPost, svc+"/Documents/d0", form) })
	// parallel runs 32 closed-loop clients, client i on pathOf(i).
	parallel := func(b *testing.B, method string, form url.Values, pathOf func(i int64) string) {
		procs := runtime.GOMAXPROCS(0)
		b.SetParallelism((docs + procs - 1) / procs)
		b.ReportAllocs()
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			path := pathOf(next.Add(1) % docs)
			for pb.Next() {
				if resp, _ := f.do(method, path, form, nil); resp.StatusCode != 200 {
					b.Error(resp.Status)
					return
				}
			}
		})
	}
	doc := func(i int64) string { return fmt.Sprintf("%s/Documents/d%d", svc, i) }
	b.Run("op=fetch-document/clients=32", func(b *testing.B) { parallel(b, http.MethodGet, nil, doc) })
	b.Run("op=update-document/clients=32", func(b *testing.B) { parallel(b, http.MethodPost, form, doc) })
	b.Run("op=update-map-item", func(b *testing.B) { sequential(b, http.MethodPost, svc+"/Maps/m/Items/k0", form) })
	b.Run("op=update-map-item/clients=32", func(b *testing.B) {
		parallel(b, http.MethodPost, form, func(i int64) string { return fmt.Sprintf("%s/Maps/m/Items/k%d", svc, i) })
	})
}

// BenchmarkWriteObject measures rendering a document as a REST response
// body, the last step of every document write and fetch.
func BenchmarkWriteObject(b *testing.B) {
	svc := &chorus.Service{SID: "IS0123456789abcdef0123456789abcdef", AccountSID: "AC0123456789abcdef0123456789abcdef"}
	now := time.Now()
	o := &chorus.Object{Kind: chorus.KindDocument, SID: "ET0123456789abcdef0123456789abcdef", UniqueName: "hist:bench-7",
		ServiceSID: svc.SID, AccountSID: svc.AccountSID, Revision: 41, DateCreated: now, DateUpdated: now, CreatedBy: "system",
		Data: json.RawMessage(`{"title":"Quarterly report","status":"in review","owner":"alice","n":42}`)}
	w := discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		twiliohttp.WriteJSON(w, http.StatusOK, objectView{"http://127.0.0.1:3000", svc, o})
		clear(w.h)
	}
}

type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}
