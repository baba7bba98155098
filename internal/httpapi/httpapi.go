package httpapi

import (
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// maxBodyBytes bounds a request body: a 16 KiB Data value as the helper
// libraries send it, plus a key and a few small fields. Data is measured
// as stored (canonical, unescaped), but on the wire one byte of it can
// take 8: twilio-go's encoding/json writes '<' as \u003c (6 bytes, see
// maxDataEscape), which percent-encoding makes %5Cu003c; twilio-python
// escapes every non-ASCII character (é, 2 bytes, is %5Cu00e9).
const maxBodyBytes = 8*chorus.MaxDataBytes + 16<<10

// maxDataEscape is how many bytes of JSON text one byte of data can take
// when a client escapes it (\u00XX), the bound of a Data parameter's
// length before it is parsed.
const maxDataEscape = 6

// Log attribute keys.
const (
	logMethod    = "method"
	logPath      = "path"
	logRequestID = "request_id"
	logStatus    = "status"
	logCode      = "code"
	logErr       = "err"
)

// CORS headers, as Twilio sends them on every response.
var (
	corsAllowOrigin   = twiliohttp.NewStaticHeader("Access-Control-Allow-Origin", "*")
	corsAllowMethods  = twiliohttp.NewStaticHeader("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
	corsAllowHeaders  = twiliohttp.NewStaticHeader("Access-Control-Allow-Headers", "Accept, Authorization, Content-Type, If-Match, If-Modified-Since, If-None-Match, If-Unmodified-Since, Idempotency-Key")
	corsExposeHeaders = twiliohttp.NewStaticHeader("Access-Control-Expose-Headers", "ETag, Twilio-Request-Id")
	corsMaxAge        = twiliohttp.NewStaticHeader("Access-Control-Max-Age", "600")
)

// noStore keeps responses out of caches: they can hold secrets (a
// Service's webhook_url with its credentials) and data an ACL guards, as
// the admin and Keys APIs already say.
var noStore = twiliohttp.NewStaticHeader("Cache-Control", "no-store")

// Config configures the REST handler.
type Config struct {
	Engine *engine.Engine
	// PublicURL is the externally visible base URL (scheme://host[:port])
	// used in url, links and meta.*_url. "" derives it from each request:
	// X-Forwarded-Proto (else TLS or not) and the Host header.
	PublicURL string
	Logger    *slog.Logger // default slog.Default()
}

// New returns the REST v1 handler. It expects full request paths
// (/v1/Services/...); mount it at /v1/ without stripping the prefix.
func New(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &api{
		eng:    cfg.Engine,
		public: strings.TrimRight(cfg.PublicURL, "/"),
		log:    cfg.Logger.With("component", "httpapi"),
		mux:    http.NewServeMux(),
	}
	a.routes()
	return a
}

type api struct {
	eng    *engine.Engine
	public string
	log    *slog.Logger
	mux    *http.ServeMux
}

// call is the per-request state handed to handlers.
type call struct {
	account string          // authenticated account SID
	base    string          // public base URL, no trailing slash
	form    url.Values      // query and form body, merged (body first)
	svc     *chorus.Service // resolved {ServiceSid}, when the route has one
}

// handler handles one operation; a returned error becomes a Twilio error
// body.
type handler func(w http.ResponseWriter, r *http.Request, c *call) error

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	rid := chorus.NewSID(chorus.PrefixRequest)
	h.Set("Twilio-Request-Id", rid)
	corsAllowOrigin.Set(h)
	corsAllowMethods.Set(h)
	corsAllowHeaders.Set(h)
	corsExposeHeaders.Set(h)
	noStore.Set(h)
	if r.Method == http.MethodOptions {
		corsMaxAge.Set(h)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	// The route first, then the credentials (wrap): a method a path
	// does not take is 405 before they are looked at (and so is not a
	// failed login), as on the other APIs.
	KeepKeyPath(r)
	a.mux.ServeHTTP(w, r)
}

// KeepKeyPath lets a map item's key or a permission's identity, the last
// part of its path, hold "/" and dot segments unescaped, as twilio-go
// sends them. ServeMux cleans "…/Items/a//b" to "…/Items/a/b" and
// "…/Items/x/../y" to "…/Items/y" and answers 307 there: a client that
// does not follow redirects (twilio-go) takes it for success, one that
// does (Go's default client) deletes another item. KeepKeyPath escapes
// that part as one segment in RawPath, which ServeMux matches; Path, and
// so the key, are unchanged. Call it before any ServeMux sees r.
func KeepKeyPath(r *http.Request) {
	esc := r.URL.EscapedPath()
	if !strings.Contains(esc, "/Items/") && !strings.Contains(esc, "/Permissions/") {
		return // every other request: no split, no allocation
	}
	parts := strings.SplitN(esc, "/", 8) // "", v1, Services, S, collection, object, Items|Permissions, tail
	if len(parts) != 8 || parts[1] != "v1" || parts[2] != "Services" {
		return
	}
	switch {
	case parts[6] == "Items" && parts[4] == "Maps":
	case parts[6] == "Permissions" && (parts[4] == "Documents" || parts[4] == "Lists" || parts[4] == "Maps"):
	default:
		return
	}
	tail := parts[7]
	if !strings.Contains(tail, "/") && tail != "." && tail != ".." {
		return
	}
	r.URL.RawPath = strings.Join(parts[:7], "/") + "/" + segmentEscaper.Replace(tail)
}

// segmentEscaper escapes what ServeMux would take for path structure.
var segmentEscaper = strings.NewReplacer("/", "%2F", ".", "%2E")

// authenticate accepts HTTP Basic (account SID + auth token, or API key
// SID + secret) and the admin console's session tokens (Bearer).
func (a *api) authenticate(r *http.Request) (string, error) {
	cred, err := a.eng.AuthenticateHeader(r.Context(), r.Header.Get("Authorization"))
	if err != nil {
		if chorus.ErrorCode(err) == chorus.ErrAuthenticate.Code {
			return "", chorus.ErrAuthenticate
		}
		return "", err
	}
	return cred.AccountSID, nil
}

// baseURL is the scheme://host the client reached us at.
func (a *api) baseURL(r *http.Request) string {
	if a.public != "" {
		return a.public
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
		p, _, _ = strings.Cut(p, ",")
		p = strings.ToLower(strings.TrimSpace(p))
		if p == "http" || p == "https" {
			scheme = p
		}
	}
	return scheme + "://" + r.Host
}

// route registers pattern "METHOD /path", whose operation takes the
// parameters params and, when conditional, an If-Match header, and
// remembers the method for 405s.
func (a *api) route(allowed map[string][]string, pattern string, h handler, params []string, conditional bool) {
	method, path, _ := strings.Cut(pattern, " ")
	allowed[path] = append(allowed[path], method)
	a.mux.Handle(pattern, a.wrap(h, params, conditional))
}

// wrap authenticates the request, parses it, checks that it sends only
// params, each once (twiliohttp.CheckParams), and If-Match only when
// conditional, resolves the service and renders errors.
func (a *api) wrap(h handler, params []string, conditional bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		account, err := a.authenticate(r)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		c := &call{account: account, base: a.baseURL(r)}
		if err := a.parseForm(w, r, c); err != nil {
			a.writeError(w, r, err)
			return
		}
		if err := twiliohttp.CheckParams(c.form, params); err != nil {
			a.writeError(w, r, err)
			return
		}
		if _, sent := r.Header["If-Match"]; sent && !conditional {
			// Ignoring it would answer a conditional request as if it had
			// been met (a create "if revision 3" created).
			a.writeError(w, r, chorus.Errorf(chorus.ErrInvalidParameter,
				"If-Match applies to updates and removals of Documents and of list and map items; this request takes none"))
			return
		}
		if sid := r.PathValue("ServiceSid"); sid != "" {
			svc, err := a.eng.Service(r.Context(), c.account, sid)
			if err != nil {
				a.writeError(w, r, err)
				return
			}
			c.svc = svc
		}
		if err := h(w, r, c); err != nil {
			a.writeError(w, r, err)
		}
	})
}

func (a *api) parseForm(w http.ResponseWriter, r *http.Request, c *call) error {
	f, err := twiliohttp.ReadForm(w, r, maxBodyBytes)
	if err != nil {
		return err
	}
	c.form = f
	return nil
}

// fallbacks answers unknown routes with 404 20404 and known routes with a
// wrong method with 405.
func (a *api) fallbacks(allowed map[string][]string) {
	for path, methods := range allowed {
		ms := append([]string{}, methods...)
		if contains(ms, http.MethodGet) {
			ms = append(ms, http.MethodHead)
		}
		ms = append(ms, http.MethodOptions)
		sort.Strings(ms)
		allow := strings.Join(ms, ", ")
		a.mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			a.writeError(w, r, chorus.Errorf(chorus.ErrMethod, "Method %s not allowed on %s", r.Method, r.URL.Path))
		}))
	}
	a.mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Unknown to anyone else than a signed-in caller: 401 first.
		if _, err := a.authenticate(r); err != nil {
			a.writeError(w, r, err)
			return
		}
		a.writeError(w, r, notFound(r))
	}))
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// writeError renders err as a Twilio error (logging unexpected ones once).
// A missing resource is Twilio REST's 404 20404 naming the path, whatever
// the Sync code (54100 Document not found, 54201 Map Item not found…,
// which the SDK's CDS API answers) or message: apps branch on it
// ("update, on 20404 create").
func (a *api) writeError(w http.ResponseWriter, r *http.Request, err error) {
	w.Header().Del("ETag")
	if chorus.AsError(err).Status == http.StatusNotFound {
		err = notFound(r)
	}
	twiliohttp.WriteError(w, r, a.log, err, logRequestID, w.Header().Get("Twilio-Request-Id"))
}

// notFound is Twilio's answer for a resource or route that does not
// exist: 20404 naming the path without the API version, as in "The
// requested resource /Services/IS…/Maps/scores/Items/alice was not found".
func notFound(r *http.Request) error {
	return chorus.Errorf(chorus.ErrNotFound, "The requested resource %s was not found", strings.TrimPrefix(r.URL.Path, "/v1"))
}

// writeNoContent answers a delete.
func writeNoContent(w http.ResponseWriter) {
	w.WriteHeader(http.StatusNoContent)
}

// setETag sets the ETag header to the bare revision, as Twilio does (its
// docs show the ETag going "from 0 to 1" and being passed back verbatim in
// If-Match). If-Match accepts it quoted too.
func setETag(w http.ResponseWriter, revision string) {
	w.Header().Set("ETag", revision)
}
