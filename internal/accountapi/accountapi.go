package accountapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
)

// maxBodyBytes bounds a request body (a friendly name).
const maxBodyBytes = 16 << 10

// Paging defaults of API v2010.
const (
	defaultPageSize = 50
	maxPageSize     = 1000
)

// SessionRevoker closes the live realtime sessions whose access tokens
// were signed by one of keySIDs, on every node. *gateway.Gateway
// implements it.
type SessionRevoker interface {
	RevokeKeys(ctx context.Context, accountSID string, keySIDs ...string) error
}

// Config configures the handler.
type Config struct {
	Engine *engine.Engine
	// Revoker, when set, closes the sessions of deleted keys.
	Revoker SessionRevoker
	// PublicURL is the base of the url fields; "" derives it from each
	// request.
	PublicURL string
	Logger    *slog.Logger // default slog.Default()
}

// New returns the handler. It expects full request paths; mount it at
// /2010-04-01/ and /v1/AuthTokens/.
func New(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &handler{cfg: cfg, log: cfg.Logger.With("component", "accountapi"), mux: http.NewServeMux()}
	const acct = "/2010-04-01/Accounts/{AccountSid}"
	h.mux.HandleFunc("GET "+acct+"/Keys.json", h.wrap(keyPagingParams, h.listKeys))
	h.mux.HandleFunc("POST "+acct+"/Keys.json", h.wrap(keyParams, h.createKey))
	h.mux.HandleFunc("GET "+acct+"/Keys/{Sid}", h.wrap(nil, h.fetchKey))
	h.mux.HandleFunc("POST "+acct+"/Keys/{Sid}", h.wrap(keyParams, h.updateKey))
	h.mux.HandleFunc("DELETE "+acct+"/Keys/{Sid}", h.wrap(nil, h.deleteKey))
	for _, prefix := range []string{acct + "/AuthTokens", "/v1/AuthTokens"} {
		ext := ""
		if strings.HasPrefix(prefix, "/2010") {
			ext = ".json"
		}
		h.mux.HandleFunc("POST "+prefix+"/Secondary"+ext, h.wrap(nil, h.createSecondary))
		h.mux.HandleFunc("DELETE "+prefix+"/Secondary"+ext, h.wrap(nil, h.deleteSecondary))
		h.mux.HandleFunc("POST "+prefix+"/Promote"+ext, h.wrap(nil, h.promote))
	}
	// Known paths with another method (OPTIONS too): 405 (20004) with the
	// Allow header, before and whatever the credentials, so that the
	// answer says nothing about them.
	methodNotAllowed := func(allow string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			twiliohttp.WriteError(w, r, h.log, chorus.ErrMethod)
		}
	}
	h.mux.HandleFunc(acct+"/Keys.json", methodNotAllowed("GET, HEAD, POST"))
	h.mux.HandleFunc(acct+"/Keys/{Sid}", methodNotAllowed("DELETE, GET, HEAD, POST"))
	for _, p := range []string{acct + "/AuthTokens/Secondary.json", "/v1/AuthTokens/Secondary"} {
		h.mux.HandleFunc(p, methodNotAllowed("DELETE, POST"))
	}
	for _, p := range []string{acct + "/AuthTokens/Promote.json", "/v1/AuthTokens/Promote"} {
		h.mux.HandleFunc(p, methodNotAllowed("POST"))
	}
	h.mux.HandleFunc("/", h.wrap(nil, func(http.ResponseWriter, *http.Request, *call) error { return chorus.ErrNotFound }))
	return h
}

type handler struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
}

// call is one authenticated request.
type call struct {
	cred engine.Credential
	base string
	form url.Values // the request's parameters (twiliohttp.ReadForm)
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Twilio-Request-Id", chorus.NewSID(chorus.PrefixRequest))
	h.mux.ServeHTTP(w, r)
}

// keyParams are what creating or updating a key takes. Each route names
// its parameters (wrap); any other, or one given twice, is refused (400,
// 54060) rather than ignored, as REST v1 does (a key created with Bogus=1
// was answered 201).
var keyParams = []string{"FriendlyName"}

// keyPagingParams are the paging parameters of the Keys listing: its pages
// are numbered (next_page_uri has Page=), and a PageToken, which it has
// no use for, is refused rather than ignored.
var keyPagingParams = []string{"PageSize", "Page"}

func (h *handler) wrap(params []string, fn func(http.ResponseWriter, *http.Request, *call) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := h.serve(w, r, params, fn)
		if err != nil {
			twiliohttp.WriteError(w, r, h.log, err)
		}
	}
}

// errBearer refuses a Bearer credential, a console session above all: a
// session lives at most engine.ConsoleSessionMaxAge, and must not mint
// credentials that outlive it (a key, a secondary auth token that a
// Promote would make the only one).
var errBearer = chorus.Errorf(chorus.ErrPermissionDenied,
	"Permission Denied: keys and auth tokens are managed with HTTP Basic authentication (the account SID and auth token, "+
		"or a main API key SID and secret), never with a console session or another Bearer token")

func (h *handler) serve(w http.ResponseWriter, r *http.Request, params []string, fn func(http.ResponseWriter, *http.Request, *call) error) error {
	authorization := r.Header.Get("Authorization")
	if scheme, _, _ := strings.Cut(authorization, " "); strings.EqualFold(scheme, "Bearer") {
		return errBearer
	}
	cred, err := h.cfg.Engine.AuthenticateHeader(r.Context(), authorization)
	if err != nil {
		if chorus.ErrorCode(err) == chorus.ErrAuthenticate.Code {
			return chorus.ErrAuthenticate
		}
		return err
	}
	if ac := r.PathValue("AccountSid"); ac != "" && ac != cred.AccountSID {
		return chorus.Errorf(chorus.ErrNotFound, "The requested resource %s was not found", r.URL.Path)
	}
	// urlencoded or multipart (twilio-node up to 3.40), as the REST API
	form, err := twiliohttp.ReadForm(w, r, maxBodyBytes)
	if err != nil {
		return err
	}
	if err := twiliohttp.CheckParams(form, params); err != nil {
		return err
	}
	return fn(w, r, &call{cred: cred, base: h.baseURL(r), form: form})
}

func (h *handler) baseURL(r *http.Request) string {
	if h.cfg.PublicURL != "" {
		return strings.TrimRight(h.cfg.PublicURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := strings.ToLower(strings.TrimSpace(strings.Split(r.Header.Get("X-Forwarded-Proto"), ",")[0])); p == "http" || p == "https" {
		scheme = p
	}
	return scheme + "://" + r.Host
}

// rfc2822 is how API v2010 writes times: "Wed, 03 Dec 2026 14:30:08 +0000".
func rfc2822(t time.Time) string { return t.UTC().Format(time.RFC1123Z) }

// iso8601 is how the Accounts API v1 writes times: "2026-12-03T14:30:08Z".
func iso8601(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// keyJSON is an API v2010 Key; Secret only in the answer to a create.
type keyJSON struct {
	SID          string `json:"sid"`
	FriendlyName string `json:"friendly_name"`
	DateCreated  string `json:"date_created"`
	DateUpdated  string `json:"date_updated"`
	Secret       string `json:"secret,omitempty"`
}

func keyOut(k *chorus.APIKey) keyJSON {
	updated := k.DateUpdated
	if updated.IsZero() {
		updated = k.DateCreated
	}
	return keyJSON{SID: k.SID, FriendlyName: k.FriendlyName, DateCreated: rfc2822(k.DateCreated), DateUpdated: rfc2822(updated)}
}

// keySID is the {Sid} of …/Keys/{Sid}.json.
func keySID(r *http.Request) (string, error) {
	sid, ok := strings.CutSuffix(r.PathValue("Sid"), ".json")
	if !ok {
		return "", chorus.Errorf(chorus.ErrNotFound, "The requested resource %s was not found", r.URL.Path)
	}
	return sid, nil
}

func (h *handler) createKey(w http.ResponseWriter, r *http.Request, c *call) error {
	k, err := h.cfg.Engine.CreateAPIKey(r.Context(), c.cred, c.form.Get("FriendlyName"))
	if err != nil {
		return err
	}
	h.log.Info("created API key", "account_sid", k.AccountSID, "api_key_sid", k.SID, "by", c.cred.SID)
	out := keyOut(k)
	out.Secret = k.Secret
	twiliohttp.WriteJSON(w, http.StatusCreated, out)
	return nil
}

// keyPage is an API v2010 list page.
type keyPage struct {
	Keys            []keyJSON `json:"keys"`
	End             int       `json:"end"`
	FirstPageURI    string    `json:"first_page_uri"`
	NextPageURI     *string   `json:"next_page_uri"`
	Page            int       `json:"page"`
	PageSize        int       `json:"page_size"`
	PreviousPageURI *string   `json:"previous_page_uri"`
	Start           int       `json:"start"`
	URI             string    `json:"uri"`
}

func (h *handler) listKeys(w http.ResponseWriter, r *http.Request, c *call) error {
	size, page := defaultPageSize, 0
	if s := c.form.Get("PageSize"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxPageSize {
			return chorus.Errorf(chorus.ErrInvalidParameter, "Invalid PageSize %q: expected an integer from 1 to %d", s, maxPageSize)
		}
		size = n
	}
	if s := c.form.Get("Page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 1<<20 {
			return chorus.Errorf(chorus.ErrInvalidParameter, "Invalid Page %q: expected a non-negative integer", s)
		}
		page = n
	}
	keys, err := h.cfg.Engine.APIKeys(r.Context(), c.cred)
	if err != nil {
		return err
	}
	path := r.URL.Path
	uri := func(p int) string { return fmt.Sprintf("%s?PageSize=%d&Page=%d", path, size, p) }
	start := min(page*size, len(keys))
	end := min(start+size, len(keys))
	out := keyPage{Keys: []keyJSON{}, FirstPageURI: uri(0), Page: page, PageSize: size, Start: start, URI: uri(page)}
	for _, k := range keys[start:end] {
		out.Keys = append(out.Keys, keyOut(k))
	}
	out.End = max(end-1, start)
	if end < len(keys) {
		next := uri(page + 1)
		out.NextPageURI = &next
	}
	if page > 0 {
		prev := uri(page - 1)
		out.PreviousPageURI = &prev
	}
	twiliohttp.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (h *handler) fetchKey(w http.ResponseWriter, r *http.Request, c *call) error {
	sid, err := keySID(r)
	if err != nil {
		return err
	}
	k, err := h.cfg.Engine.FetchAPIKey(r.Context(), c.cred, sid)
	if err != nil {
		return keyNotFound(err, sid)
	}
	twiliohttp.WriteJSON(w, http.StatusOK, keyOut(k))
	return nil
}

func (h *handler) updateKey(w http.ResponseWriter, r *http.Request, c *call) error {
	sid, err := keySID(r)
	if err != nil {
		return err
	}
	var name *string
	if c.form.Has("FriendlyName") {
		n := c.form.Get("FriendlyName")
		name = &n
	}
	k, err := h.cfg.Engine.UpdateAPIKey(r.Context(), c.cred, sid, name)
	if err != nil {
		return keyNotFound(err, sid)
	}
	twiliohttp.WriteJSON(w, http.StatusOK, keyOut(k))
	return nil
}

func (h *handler) deleteKey(w http.ResponseWriter, r *http.Request, c *call) error {
	sid, err := keySID(r)
	if err != nil {
		return err
	}
	if err := h.cfg.Engine.DeleteAPIKey(r.Context(), c.cred, sid); err != nil {
		return keyNotFound(err, sid)
	}
	if h.cfg.Revoker != nil {
		// The key is gone: tokens it signed no longer verify. Closing the
		// sessions they opened is best effort beyond that.
		if err := h.cfg.Revoker.RevokeKeys(context.WithoutCancel(r.Context()), c.cred.AccountSID, sid); err != nil {
			h.log.Error("close the sessions of a revoked key", "api_key_sid", sid, "err", err)
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func keyNotFound(err error, sid string) error {
	if errors.Is(err, chorus.ErrNotFound) && chorus.ErrorCode(err) == chorus.ErrNotFound.Code {
		return chorus.Errorf(chorus.ErrNotFound, "The requested resource /Keys/%s was not found", sid)
	}
	return err
}

// secondaryJSON is Twilio's SecondaryAuthToken resource.
type secondaryJSON struct {
	AccountSID         string `json:"account_sid"`
	DateCreated        string `json:"date_created"`
	DateUpdated        string `json:"date_updated"`
	SecondaryAuthToken string `json:"secondary_auth_token"`
	URL                string `json:"url"`
}

// promotionJSON is Twilio's AuthTokenPromotion resource.
type promotionJSON struct {
	AccountSID  string `json:"account_sid"`
	AuthToken   string `json:"auth_token"`
	DateCreated string `json:"date_created"`
	DateUpdated string `json:"date_updated"`
	URL         string `json:"url"`
}

func (h *handler) createSecondary(w http.ResponseWriter, r *http.Request, c *call) error {
	a, err := h.cfg.Engine.CreateSecondaryAuthToken(r.Context(), c.cred)
	if err != nil {
		return err
	}
	t := iso8601(a.SecondaryDateCreated)
	twiliohttp.WriteJSON(w, http.StatusCreated, secondaryJSON{
		AccountSID: a.SID, DateCreated: t, DateUpdated: t, SecondaryAuthToken: a.SecondaryAuthToken,
		URL: c.base + "/v1/AuthTokens/Secondary",
	})
	return nil
}

func (h *handler) deleteSecondary(w http.ResponseWriter, r *http.Request, c *call) error {
	if err := h.cfg.Engine.DeleteSecondaryAuthToken(r.Context(), c.cred); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *handler) promote(w http.ResponseWriter, r *http.Request, c *call) error {
	a, err := h.cfg.Engine.PromoteSecondaryAuthToken(r.Context(), c.cred)
	if err != nil {
		return err
	}
	twiliohttp.WriteJSON(w, http.StatusOK, promotionJSON{
		AccountSID: a.SID, AuthToken: a.AuthToken, DateCreated: iso8601(a.SecondaryDateCreated),
		DateUpdated: iso8601(time.Now()), URL: c.base + "/v1/AuthTokens/Promote",
	})
	return nil
}
