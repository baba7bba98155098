package server

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
)

// BenchmarkServerREST measures a durable document update through the
// whole HTTP edge a user calls (browser guard, limits, text check, login
// throttle, then the API and the SQLite engine), over loopback HTTP with
// Basic auth: sequentially, and from 32 closed-loop clients (rtbench's
// publish shape). internal/httpapi's BenchmarkREST is the API alone.
func BenchmarkServerREST(b *testing.B) {
	s := newServer(b, Config{})
	srv := httptest.NewServer(s.Handler())
	b.Cleanup(srv.Close)
	srv.Client().Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	creds := s.Credentials()
	base := srv.URL + "/v1/Services/" + creds.ServiceSID + "/Documents"
	post := func(path string, form url.Values) int {
		req, err := http.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(creds.AccountSID, creds.AuthToken)
		resp, err := srv.Client().Do(req)
		if err != nil {
			b.Fatal(err)
		}
		// Read to the end, as rtbench and the helper libraries do, so that
		// the connection is reused: an unread body closes it, and each
		// request then paid a new connection's connect, accept and close.
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const docs = 32
	for i := range docs {
		if code := post(base, url.Values{"UniqueName": {fmt.Sprintf("d%d", i)}, "Data": {`{"a":1}`}}); code != 201 {
			b.Fatalf("create = %d", code)
		}
	}
	form := url.Values{"Data": {`{"title":"Quarterly report","status":"in review","owner":"alice","n":42}`}}
	b.Run("op=update-document", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if code := post(base+"/d0", form); code != 200 {
				b.Fatal(code)
			}
		}
	})
	b.Run("op=update-document/clients=32", func(b *testing.B) {
		procs := runtime.GOMAXPROCS(0)
		b.SetParallelism((docs + procs - 1) / procs)
		b.ReportAllocs()
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			path := fmt.Sprintf("%s/d%d", base, next.Add(1)%docs)
			for pb.Next() {
				if code := post(path, form); code != 200 {
					b.Error(code)
					return
				}
			}
		})
	})
}
