package twiliohttp

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chorus-sync/chorus"
)

// maxBodyBytes is the bound the tests read bodies with (the REST v1 API's).
const maxBodyBytes = 64 << 10

// FuzzReadForm: any body under any form Content-Type parses or fails with
// a Twilio error, never panics, and what parses stays within the limits.
func FuzzReadForm(f *testing.F) {
	f.Add("multipart/form-data; boundary=Q", "--Q\r\nContent-Disposition: form-data; name=\"UniqueName\"\r\n\r\na\r\n--Q\r\nContent-Disposition: form-data; name=\"Data\"\r\n\r\n{\"x\":[1]}\r\n--Q--\r\n")
	f.Add("multipart/form-data; boundary=B", "--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--B--")
	f.Add("multipart/form-data; boundary=B", "--B\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n=C3=A9\r\n--B--\r\n")
	f.Add("application/x-www-form-urlencoded", "a=1&b=%zz;c")
	f.Add("", "x")
	f.Add("text/plain", "")
	f.Fuzz(func(t *testing.T, ct, body string) {
		r := httptest.NewRequest(http.MethodPost, "/v1/Services?x=1", strings.NewReader(body))
		if ct != "" {
			r.Header.Set("Content-Type", ct)
		}
		form, err := ReadForm(httptest.NewRecorder(), r, maxBodyBytes)
		if err != nil {
			if code := chorus.ErrorCode(err); code != 20415 && code != 54060 && code != 54006 {
				t.Fatalf("readForm(%q) error %v: not a form error", ct, err)
			}
			return
		}
		n, size := 0, 0
		for k, vs := range form {
			for _, v := range vs {
				n++
				size += len(k) + len(v)
			}
		}
		if size > maxBodyBytes+2 {
			t.Fatalf("readForm kept %d bytes of a body bounded to %d", size, maxBodyBytes)
		}
		if strings.HasPrefix(strings.ToLower(ct), "multipart/") && n > MaxFormParts+1 {
			t.Fatalf("readForm kept %d fields, limit %d", n, MaxFormParts)
		}
		if xs := form["x"]; len(xs) == 0 || xs[len(xs)-1] != "1" {
			t.Fatalf("query parameter lost: %v", form)
		}
	})
}

// TestContentEncodingRefused: a body with a Content-Encoding the server
// does not decode is refused with 415, whatever its Content-Type, and
// identity is no encoding at all.
func TestContentEncodingRefused(t *testing.T) {
	for _, tc := range []struct {
		enc  string
		want int // 0: parses
	}{
		{"gzip", 20415}, {"br", 20415}, {"identity, gzip", 20415}, {"deflate", 20415},
		{"identity", 0}, {"", 0}, {"IDENTITY", 0},
	} {
		for _, ct := range []string{"application/x-www-form-urlencoded", "multipart/form-data; boundary=Q"} {
			body := "FriendlyName=x"
			if strings.HasPrefix(ct, "multipart") {
				body = "--Q\r\nContent-Disposition: form-data; name=\"FriendlyName\"\r\n\r\nx\r\n--Q--\r\n"
			}
			r := httptest.NewRequest(http.MethodPost, "/x", strings.NewReader(body))
			r.Header.Set("Content-Type", ct)
			if tc.enc != "" {
				r.Header.Set("Content-Encoding", tc.enc)
			}
			form, err := ReadForm(httptest.NewRecorder(), r, maxBodyBytes)
			if got := chorus.ErrorCode(err); got != tc.want {
				t.Errorf("%s, Content-Encoding %q: error %v (code %d), want code %d", ct, tc.enc, err, got, tc.want)
			}
			if tc.want == 0 && form.Get("FriendlyName") != "x" {
				t.Errorf("%s, Content-Encoding %q: form %v", ct, tc.enc, form)
			}
		}
	}
}

// TestBodyOfReadOrRemovalRefused: a GET or DELETE takes its parameters in
// the query string; one sent in a body is refused (54060), not ignored,
// while a body without parameters passes with or without a Content-Type:
// empty (twilio-go sends an empty form body with one), blank, or "{}".
func TestBodyOfReadOrRemovalRefused(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodDelete, http.MethodHead} {
		for _, tc := range []struct {
			ct, body string
			want     int
		}{
			{"application/x-www-form-urlencoded", "PageSize=1", 54060},
			{"application/json", `{"PageSize":1}`, 54060},
			{"", "x", 54060},
			{"application/x-www-form-urlencoded", "", 0},
			{"", "", 0},
			{"application/json", "\n", 0},
			{"application/json", " { } ", 0},
			{"application/json", "{}x", 54060},
			{"application/json", `{"a":1}`, 54060},
		} {
			r := httptest.NewRequest(method, "/v1/Services?PageSize=5", strings.NewReader(tc.body))
			if tc.ct != "" {
				r.Header.Set("Content-Type", tc.ct)
			}
			form, err := ReadForm(httptest.NewRecorder(), r, maxBodyBytes)
			if got := chorus.ErrorCode(err); got != tc.want {
				t.Errorf("%s with body %q (%s): error %v (code %d), want code %d", method, tc.body, tc.ct, err, got, tc.want)
				continue
			}
			if tc.want == 0 && form.Get("PageSize") != "5" {
				t.Errorf("%s with an empty body: form %v, want the query's PageSize=5", method, form)
			}
		}
	}
}
