package server

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// errBadText refuses text that no store can hold: PostgreSQL rejects NUL
// and invalid UTF-8 in text columns, and SQLite would store what the other
// refuses.
var errBadText = chorus.Errorf(chorus.ErrInvalidParameter, "Invalid parameter: the URL path, parameter names and values must be valid UTF-8 without NUL")

// textOK reports text every store accepts.
func textOK(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

func valuesOK(v url.Values) bool {
	for k, vs := range v {
		if !textOK(k) {
			return false
		}
		for _, x := range vs {
			if !textOK(x) {
				return false
			}
		}
	}
	return true
}

// checkText answers 400 (54060) to an API request whose decoded path or
// query holds NUL or invalid UTF-8, before any handler or store sees it, so
// every route and every store behaves the same. (The engine checks names,
// keys and identities itself too, for the websocket path.) The form body
// is checkBody's, after the login throttle.
func (s *Server) checkText(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !textOK(r.URL.Path) {
			twiliohttp.WriteJSON(w, http.StatusBadRequest, twiliohttp.BodyFor(r, errBadText))
			return
		}
		// ParseQuery returns every pair it could decode, with or without
		// an error: check them all.
		if q, _ := url.ParseQuery(r.URL.RawQuery); !valuesOK(q) {
			twiliohttp.WriteJSON(w, http.StatusBadRequest, twiliohttp.BodyFor(r, errBadText))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkBody reads an API request's form body, within the body bound,
// answers 400 (54060) when it holds NUL or invalid UTF-8, and hands it on
// parsed. It reads only the body of a request whose Authorization header
// authenticates: every API authenticates by that header, so any other
// request gets its 401 with its body unread, and a client without
// credentials cannot make the server hold a body (up to the bound, 160
// KiB) for each connection it opens. It runs inside the login throttle,
// so a flood of bad credentials is refused before the check reads the
// store for each.
func (s *Server) checkBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		if !s.authenticates(r) {
			// Answered 401 unread; without this net/http would read and
			// discard up to 256 KiB of it first, waiting on the client.
			w.Header().Set("Connection", "close")
			next.ServeHTTP(w, r)
			return
		}
		// ParseMediaType names the type even when a parameter is broken
		// (mediaErr): the body is checked all the same, but only a clean
		// header is handed on parsed, as httpapi would refuse the other.
		ct, _, mediaErr := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if ct == "application/x-www-form-urlencoded" {
			if err := twiliohttp.CheckContentEncoding(r); err != nil {
				twiliohttp.WriteJSON(w, http.StatusUnsupportedMediaType, twiliohttp.BodyFor(r, chorus.AsError(err)))
				return
			}
			b, err := io.ReadAll(r.Body)
			if err != nil {
				var mbe *http.MaxBytesError
				if errors.As(err, &mbe) {
					twiliohttp.WriteJSON(w, http.StatusRequestEntityTooLarge, twiliohttp.BodyFor(r, chorus.ErrTooLarge))
					return
				}
				twiliohttp.WriteJSON(w, http.StatusBadRequest, twiliohttp.BodyFor(r, chorus.Errorf(chorus.ErrInvalidParameter, "Invalid request body: could not read it")))
				return
			}
			v, err := url.ParseQuery(string(b))
			if !valuesOK(v) {
				twiliohttp.WriteJSON(w, http.StatusBadRequest, twiliohttp.BodyFor(r, errBadText))
				return
			}
			if err == nil && mediaErr == nil {
				// The API need not parse it again (httpapi.parseForm).
				r.Body = &twiliohttp.ParsedForm{Reader: bytes.NewReader(b), Size: len(b), Values: v}
			} else {
				r.Body = io.NopCloser(bytes.NewReader(b))
			}
		}
		next.ServeHTTP(w, r)
	})
}

// authenticates reports whether r's Authorization header names valid
// credentials (Basic, or a console session's Bearer token). A store
// error counts as yes: the API then answers as it can.
func (s *Server) authenticates(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if h == "" {
		return false
	}
	_, err := s.eng.AuthenticateHeader(r.Context(), h)
	return err == nil || chorus.ErrorCode(err) != chorus.ErrAuthenticate.Code
}
