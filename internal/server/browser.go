package server

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// Browser policy.
//
// The APIs (/v1/, /admin/, /2010-04-01/) are for servers and the
// same-origin console: the twilio-sync SDK talks to Chorus only over the
// websocket (its CDS calls are tunnelled through Twilsock), and the twilio
// helper libraries send neither Origin nor Sec-Fetch-*. The exceptions are
// twilio-sync 0.5–0.7's EMS token exchange (POST /v1/token) and their
// plain-HTTP CDS calls (/v3/): browsers make those cross-origin by design,
// and they carry the access token in the request itself, never a
// credential the browser holds, so they are not APIs in this sense. A browser request
// from another site (Sec-Fetch-Site: cross-site or same-site, or, from a
// browser without Fetch Metadata, an Origin other than this server) is
// refused with 403 before it reaches a handler, so a page elsewhere cannot
// use credentials the browser holds (CSRF). No 401 carries a Basic
// challenge either, so browsers never prompt for and cache API
// credentials.
//
// Pages (the quickstart and the console) get a Content-Security-Policy
// that allows only this origin's scripts, styles and connections, may not
// be framed, and send no Referer elsewhere.
const (
	pageCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
	apiCSP = "default-src 'none'; frame-ancestors 'none'"
)

// errCrossSite is the refusal of a cross-site browser request.
var errCrossSite = chorus.Errorf(chorus.ErrForbiddenRequest, "Cross-site requests are not allowed: call this API from your server, or from a page on this origin")

// isAPI reports the paths of the authenticated APIs.
func isAPI(path string) bool {
	if path == "/v1/token" {
		return false // the EMS token exchange: see the browser policy above
	}
	return strings.HasPrefix(path, "/v1/") || strings.HasPrefix(path, "/admin/") || strings.HasPrefix(path, "/2010-04-01/")
}

// crossSite reports a browser request made by a page of another site.
func (s *Server) crossSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return false
	case "cross-site", "same-site":
		return true
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false // not a browser, or a same-origin GET
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return true // "null" (sandboxed frames, file:) or garbage
	}
	if strings.EqualFold(u.Host, r.Host) {
		return false
	}
	if p, err := url.Parse(s.cfg.PublicURL); err == nil && p.Host != "" && strings.EqualFold(u.Host, p.Host) {
		return false
	}
	return true
}

// securityHeaders sets the headers every response gets, and the page
// policy on everything that is not an API.
func securityHeaders(h http.Header, api bool) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	if api {
		h.Set("Content-Security-Policy", apiCSP)
	} else {
		h.Set("Content-Security-Policy", pageCSP)
	}
}

// browserGuard refuses cross-site API requests and sets the security
// headers.
func (s *Server) browserGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api := isAPI(r.URL.Path)
		securityHeaders(w.Header(), api)
		if api && s.crossSite(r) {
			twiliohttp.WriteJSON(w, http.StatusForbidden, twiliohttp.Body(errCrossSite))
			return
		}
		next.ServeHTTP(w, r)
	})
}
