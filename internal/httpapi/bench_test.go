package httpapi

import (
	"net/http"
	"net/url"
	"testing"
)

// BenchmarkREST measures one round trip over loopback HTTP, Basic auth
// included, against the SQLite-backed engine.
func BenchmarkREST(b *testing.B) {
	f := newFixture(b)
	svc := "/v1/Services/" + f.svc
	if resp, body := f.do(http.MethodPost, svc+"/Documents", url.Values{"UniqueName": {"d"}, "Data": {`{"a":1}`}}, nil); resp.StatusCode != 201 {
		b.Fatalf("create = %d %s", resp.StatusCode, body)
	}
	b.Run("op=fetch-document", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if resp, _ := f.do(http.MethodGet, svc+"/Documents/d", nil, nil); resp.StatusCode != 200 {
				b.Fatal(resp.Status)
			}
		}
	})
	b.Run("op=update-document", func(b *testing.B) {
		b.ReportAllocs()
		form := url.Values{"Data": {`{"a":2}`}}
		for b.Loop() {
			if resp, _ := f.do(http.MethodPost, svc+"/Documents/d", form, nil); resp.StatusCode != 200 {
				b.Fatal(resp.Status)
			}
		}
	})
}
