package server

import (
	"net"
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
// use credentials the browser holds (CSRF). "This server" is the public
// URL's host, or the request's Host when that is one of ours (ownHost):
// an Origin that merely equals an arbitrary Host is what a DNS-rebinding
// page sends. Sec-Fetch-Site: same-origin is trusted whatever the Host: a
// rebinding page is same-origin with itself, but it holds no credentials
// for the APIs (no Basic challenge means the browser caches none, and
// console sessions live in the console's own page memory), and /token,
// which needs none, checks the Host itself (tokenRequestAllowed). No 401
// carries a Basic challenge either, so browsers never prompt for and cache
// API credentials.
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

// isAPI reports the requests to the authenticated APIs. POST and OPTIONS
// /v1/token are the EMS token exchange (see the browser policy above);
// any other method there reaches REST v1, which checks Basic credentials
// like every API and so gets the API's throttle and cross-site check.
func isAPI(r *http.Request) bool {
	path := r.URL.Path
	if path == "/v1/token" && (r.Method == http.MethodPost || r.Method == http.MethodOptions) {
		return false
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
	if strings.EqualFold(u.Host, r.Host) && s.ownHost(r.Host) {
		return false
	}
	if p, err := url.Parse(s.cfg.PublicURL); err == nil && p.Host != "" && strings.EqualFold(u.Host, p.Host) {
		return false
	}
	return true
}

// ownHost reports whether a Host header names this server in a way DNS
// rebinding cannot fake: a loopback name or address, any IP literal (a
// rebinding page's origin is a DNS name the attacker controls, never an
// address), the public URL's host or the listen address's host. An Origin
// equal to any other Host (rebind.evil.example, pointed at this server)
// proves nothing.
func (s *Server) ownHost(hostport string) bool {
	return net.ParseIP(hostOnly(hostport)) != nil || s.namedHost(hostport)
}

// namedHost reports whether a Host header is a loopback name or address,
// the public URL's host or the listen address's host: ownHost without the
// other IP literals, which a loopback peer sends only through a forwarder
// (socat, ssh -L, a proxy that adds no X-Forwarded-For) from elsewhere.
func (s *Server) namedHost(hostport string) bool {
	h := hostOnly(hostport)
	if loopbackHost(hostport) {
		return true
	}
	if pub := publicHost(s.cfg.PublicURL); pub != "" && sameHost(hostport, pub) {
		return true
	}
	if lh, _, err := net.SplitHostPort(s.cfg.Listen); err == nil && lh != "" && strings.EqualFold(lh, h) {
		return true
	}
	return false
}

// securityHeaders sets the headers every response gets, and the page
// policy on everything that is not an API.
func securityHeaders(h http.Header, api bool) {
	noSniff.Set(h)
	noFrames.Set(h)
	noReferrer.Set(h)
	if api {
		apiPolicy.Set(h)
	} else {
		pagePolicy.Set(h)
	}
}

var (
	noSniff    = twiliohttp.NewStaticHeader("X-Content-Type-Options", "nosniff")
	noFrames   = twiliohttp.NewStaticHeader("X-Frame-Options", "DENY")
	noReferrer = twiliohttp.NewStaticHeader("Referrer-Policy", "no-referrer")
	apiPolicy  = twiliohttp.NewStaticHeader("Content-Security-Policy", apiCSP)
	pagePolicy = twiliohttp.NewStaticHeader("Content-Security-Policy", pageCSP)
)

// browserGuard refuses cross-site API requests and sets the security
// headers.
func (s *Server) browserGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api := isAPI(r)
		securityHeaders(w.Header(), api)
		if api && s.crossSite(r) {
			twiliohttp.WriteJSON(w, http.StatusForbidden, twiliohttp.BodyFor(r, errCrossSite))
			return
		}
		next.ServeHTTP(w, r)
	})
}
