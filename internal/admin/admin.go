package admin

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/gateway"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
	"github.com/chorus-sync/chorus/token"
)

// Defaults.
const (
	// RateWindow is the span events_per_second is averaged over.
	RateWindow = 5 * time.Second
	// DefaultTokenTTL is the lifetime of console tokens without Ttl.
	DefaultTokenTTL = time.Hour
	// DefaultIdentity is the identity of console tokens without Identity.
	DefaultIdentity = "console"

	maxBodyBytes = 16 << 10
	maxSamples   = 64
)

// GatewayStats is what the admin API needs from the realtime gateway;
// *gateway.Gateway implements it.
type GatewayStats interface {
	Stats() gateway.Stats
}

var _ GatewayStats = (*gateway.Gateway)(nil)

// Config configures the admin handler.
type Config struct {
	Engine *engine.Engine
	// Gateway reports connection and subscription counts; nil reports
	// them as null.
	Gateway interface{ Stats() gateway.Stats }
	// Webhooks reports webhook health (GET /admin/v1/Webhooks); nil: 404.
	Webhooks WebhookHealth
	// OperatorAccount is the account whose credentials see the node's
	// totals in Stats (the operator's: the bootstrapped account); other
	// accounts see their own counts only. "": no account sees them.
	OperatorAccount string
	Logger          *slog.Logger // default slog.Default()
}

// New returns the admin API handler. It expects full request paths
// (/admin/v1/...).
func New(cfg Config) http.Handler {
	return newHandler(cfg, time.Now)
}

func newHandler(cfg Config, now func() time.Time) *handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &handler{
		eng:      cfg.Engine,
		gw:       cfg.Gateway,
		operator: cfg.OperatorAccount,
		hooks:    cfg.Webhooks,
		log:      cfg.Logger.With("component", "admin"),
		now:      now,
		mux:      http.NewServeMux(),
	}
	h.mux.HandleFunc("POST /admin/v1/Session", h.session)
	h.mux.HandleFunc("DELETE /admin/v1/Session", h.signOut)
	h.mux.HandleFunc("GET /admin/v1/Account", h.wrap(h.account))
	h.mux.HandleFunc("GET /admin/v1/Stats", h.wrap(h.stats))
	h.mux.HandleFunc("POST /admin/v1/Tokens", h.wrap(h.mintToken))
	h.mux.HandleFunc("GET /admin/v1/Webhooks", h.wrap(h.webhooks))
	h.mux.HandleFunc("GET /admin/v1/Webhooks/{service}/Abandoned", h.wrap(h.abandoned))
	h.mux.HandleFunc("DELETE /admin/v1/Webhooks/{service}/Abandoned", h.wrap(h.purgeAbandoned))
	h.mux.HandleFunc("POST /admin/v1/Webhooks/{service}/Abandoned/Replay", h.wrap(h.replayAbandoned))
	// Known paths with another method (OPTIONS too): 405 (20004) before
	// and whatever the credentials, so that the answer says nothing
	// about them.
	for path, allow := range map[string]string{
		"/admin/v1/Session": "POST, DELETE", "/admin/v1/Account": "GET, HEAD", "/admin/v1/Stats": "GET, HEAD",
		"/admin/v1/Tokens": "POST", "/admin/v1/Webhooks": "GET, HEAD",
		"/admin/v1/Webhooks/{service}/Abandoned": "GET, HEAD, DELETE", "/admin/v1/Webhooks/{service}/Abandoned/Replay": "POST",
	} {
		h.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			h.writeError(w, r, chorus.ErrMethod)
		})
	}
	h.mux.HandleFunc("/", h.wrap(func(http.ResponseWriter, *http.Request, *caller) error {
		return chorus.ErrNotFound
	}))
	return h
}

type handler struct {
	eng      *engine.Engine
	gw       interface{ Stats() gateway.Stats }
	operator string
	hooks    WebhookHealth
	log      *slog.Logger
	now      func() time.Time
	mux      *http.ServeMux

	mu      sync.Mutex
	samples []sample // oldest first, at most maxSamples
}

type sample struct {
	at     time.Time
	events uint64
}

// caller is the authenticated client of one request.
type caller struct {
	account  string // AC…
	username string // the credential: AC… (auth token) or SK…
	// sessionEnd is, for a console session, when it ends for good (its
	// sign-in plus engine.ConsoleSessionMaxAge); zero for Basic auth.
	sessionEnd time.Time
	// authToken is, for a caller that authenticated with an auth token
	// (Basic, or a console session opened with it), that auth token: the
	// access tokens it mints carry its mark, which makes them die with it
	// (engine.AuthTokenSuffix).
	authToken string
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	h.mux.ServeHTTP(w, r)
}

func (h *handler) wrap(fn func(http.ResponseWriter, *http.Request, *caller) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := h.authenticate(r)
		if err == nil {
			err = fn(w, r, c)
		}
		if err != nil {
			h.writeError(w, r, err)
		}
	}
}

// authenticate accepts HTTP Basic (account SID + auth token, or API key
// SID + secret) and console sessions (Authorization: Bearer).
func (h *handler) authenticate(r *http.Request) (*caller, error) {
	cred, err := h.eng.AuthenticateHeader(r.Context(), r.Header.Get("Authorization"))
	if err != nil {
		if chorus.ErrorCode(err) == chorus.ErrAuthenticate.Code {
			return nil, chorus.ErrAuthenticate
		}
		return nil, err
	}
	return &caller{account: cred.AccountSID, username: cred.SID, sessionEnd: cred.SessionEnd, authToken: cred.AuthToken()}, nil
}

// sessionJSON is the body of POST /admin/v1/Session.
type sessionJSON struct {
	Token         string `json:"token"`
	ExpiresIn     int    `json:"expires_in"` // seconds
	AccountSID    string `json:"account_sid"`
	CredentialSID string `json:"credential_sid"`
	AuthMethod    string `json:"auth_method"`
}

// session trades Basic credentials, or a console session about to expire
// (Bearer), for a new console session token.
func (h *handler) session(w http.ResponseWriter, r *http.Request) {
	var (
		tok  string
		cred engine.Credential
		exp  time.Time
		err  error
	)
	if user, pass, ok := r.BasicAuth(); ok {
		tok, cred, exp, err = h.eng.NewConsoleSession(r.Context(), user, pass)
	} else if scheme, bearer, _ := strings.Cut(r.Header.Get("Authorization"), " "); strings.EqualFold(scheme, "Bearer") {
		tok, cred, exp, err = h.eng.RenewConsoleSession(r.Context(), strings.TrimSpace(bearer))
	} else {
		err = chorus.ErrAuthenticate
	}
	if err != nil {
		if chorus.ErrorCode(err) == chorus.ErrAuthenticate.Code {
			err = chorus.ErrAuthenticate
		}
		h.writeError(w, r, err)
		return
	}
	twiliohttp.WriteJSON(w, http.StatusCreated, sessionJSON{
		Token: tok, ExpiresIn: int(time.Until(exp) / time.Second), AccountSID: cred.AccountSID,
		CredentialSID: cred.SID, AuthMethod: authMethod(cred.SID),
	})
}

// signOut ends the console session of the request's bearer token, on
// every node, the tokens renewed from its sign-in and any copy of them
// included (engine.SignOutConsoleSession): 204.
func (h *handler) signOut(w http.ResponseWriter, r *http.Request) {
	var err error = chorus.ErrAuthenticate
	if scheme, bearer, _ := strings.Cut(r.Header.Get("Authorization"), " "); strings.EqualFold(scheme, "Bearer") {
		err = h.eng.SignOutConsoleSession(r.Context(), strings.TrimSpace(bearer))
	}
	if err != nil {
		if chorus.ErrorCode(err) == chorus.ErrAuthenticate.Code {
			err = chorus.ErrAuthenticate
		}
		h.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func authMethod(sid string) string {
	if chorus.IsSID(chorus.PrefixAPIKey, sid) {
		return "api_key"
	}
	return "auth_token"
}

// accountJSON is the body of GET /admin/v1/Account.
type accountJSON struct {
	AccountSID    string `json:"account_sid"`
	CredentialSID string `json:"credential_sid"`
	AuthMethod    string `json:"auth_method"` // "auth_token" or "api_key"
}

func (h *handler) account(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := emptyBody(w, r); err != nil {
		return err
	}
	twiliohttp.WriteJSON(w, http.StatusOK, accountJSON{AccountSID: c.account, CredentialSID: c.username, AuthMethod: authMethod(c.username)})
	return nil
}

// statsJSON is the body of GET /admin/v1/Stats. Gateway counts are null
// when no gateway is configured; every node total is null for an account
// that is not the operator's (Scope "account").
type statsJSON struct {
	Scope           string   `json:"scope"` // "node" or "account"
	AccountSID      string   `json:"account_sid"`
	Services        int      `json:"services"` // the caller's account's
	Connections     *int     `json:"connections"`
	Subscriptions   *int     `json:"subscriptions"`
	Topics          *int     `json:"topics"`
	Delivered       *uint64  `json:"events_delivered"`
	EventsPerSecond *float64 `json:"events_per_second"`
	EventsPosted    *uint64  `json:"events_posted"`
	Writes          *uint64  `json:"writes"`
	UptimeSeconds   int64    `json:"uptime_seconds"`
	Started         string   `json:"date_started"`
}

func (h *handler) stats(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := emptyBody(w, r); err != nil {
		return err
	}
	es := h.eng.Stats()
	now := h.now()
	var svcs []*chorus.Service
	err := h.eng.Store().View(r.Context(), func(tx chorus.ReadTx) (err error) {
		svcs, err = tx.Services(r.Context(), c.account, chorus.ObjectQuery{Limit: maxCountedServices})
		return err
	})
	if err != nil {
		return fmt.Errorf("admin: stats: %w", err)
	}
	out := statsJSON{
		Scope:         "account",
		AccountSID:    c.account,
		Services:      len(svcs),
		UptimeSeconds: max(int64(now.Sub(es.Started)/time.Second), 0),
		Started:       es.Started.UTC().Format(time.RFC3339),
	}
	rate := h.rate(now, es.EventsPosted)
	if h.operator == "" || c.account != h.operator {
		twiliohttp.WriteJSON(w, http.StatusOK, out)
		return nil
	}
	out.Scope = "node"
	out.EventsPerSecond, out.EventsPosted, out.Writes = &rate, &es.EventsPosted, &es.Writes
	if h.gw != nil {
		gs := h.gw.Stats()
		out.Connections, out.Subscriptions, out.Topics = &gs.Connections, &gs.Subscriptions, &gs.Topics
		out.Delivered = &gs.Delivered
	}
	twiliohttp.WriteJSON(w, http.StatusOK, out)
	return nil
}

// maxCountedServices bounds the services Stats counts.
const maxCountedServices = 10000

// rate records a sample of the events counter and returns events per
// second since the baseline: the oldest sample within RateWindow of now,
// or the newest one before it when none is that recent.
func (h *handler) rate(now time.Time, events uint64) float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	// The baseline is the oldest sample within the window, or the newest
	// one when none is that recent; older samples are dropped.
	base := len(h.samples) - 1
	for i, s := range h.samples {
		if now.Sub(s.at) <= RateWindow {
			base = i
			break
		}
	}
	if base > 0 {
		h.samples = h.samples[base:]
	}
	var r float64
	if len(h.samples) > 0 {
		base := h.samples[0]
		dt := now.Sub(base.at).Seconds()
		if dt > 0 && events >= base.events {
			r = float64(events-base.events) / dt
		}
	}
	h.samples = append(h.samples, sample{at: now, events: events})
	if len(h.samples) > maxSamples {
		h.samples = append(h.samples[:0], h.samples[len(h.samples)-maxSamples:]...)
	}
	return math.Round(r*100) / 100
}

// tokenJSON is the body of POST /admin/v1/Tokens.
type tokenJSON struct {
	Identity   string `json:"identity"`
	Token      string `json:"token"`
	ServiceSID string `json:"service_sid"`
	TTL        int    `json:"ttl"`
}

// tokenParams are the parameters POST /admin/v1/Tokens takes. Any other,
// or one given twice, is refused rather than ignored: "identity" in lower
// case would mint a token for the default identity and answer 201.
var tokenParams = []string{"Identity", "Ttl", "ServiceSid"}

func (h *handler) mintToken(w http.ResponseWriter, r *http.Request, c *caller) error {
	form, err := twiliohttp.ReadForm(w, r, maxBodyBytes)
	if err != nil {
		return err
	}
	if err := twiliohttp.CheckParams(form, tokenParams); err != nil {
		return err
	}
	identity := form.Get("Identity")
	if identity == "" {
		identity = DefaultIdentity
	}
	if !chorus.ValidIdentity(identity) {
		return chorus.ErrIdentityInvalid
	}
	if chorus.ReservedIdentity(identity) {
		return chorus.Errorf(chorus.ErrForbidden, "The identity %q is reserved; no token is minted for it", identity)
	}
	ttl := DefaultTokenTTL
	if s := form.Get("Ttl"); s != "" {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || time.Duration(n)*time.Second > token.MaxTTL {
			return chorus.Errorf(chorus.ErrInvalidParameter,
				"Invalid Ttl %q: expected whole seconds from 1 to %d (with a console session, capped at what remains of the session's %v)",
				s, int(token.MaxTTL/time.Second), engine.ConsoleSessionMaxAge)
		}
		ttl = time.Duration(n) * time.Second
	}
	// A token minted with a console session does not outlive the session:
	// a captured session dies ConsoleSessionMaxAge after its sign-in, and
	// so do the tokens it minted. Tokens minted with the auth token die
	// with it (authToken), however the caller authenticated.
	if !c.sessionEnd.IsZero() {
		left := c.sessionEnd.Sub(h.now()).Truncate(time.Second)
		if left < time.Second {
			return chorus.Errorf(chorus.ErrAuthenticate, "Authenticate: the console session reached its %v limit; sign in again", engine.ConsoleSessionMaxAge)
		}
		ttl = min(ttl, left)
	}
	svcID := form.Get("ServiceSid")
	if svcID == "" {
		svcID = "default"
	}
	svc, err := h.eng.Service(r.Context(), c.account, svcID)
	if err != nil {
		return err
	}
	keySID, secret, err := h.signingKey(r, c)
	if err != nil {
		return err
	}
	suffix := ""
	if c.authToken != "" {
		suffix = engine.AuthTokenSuffix(c.authToken, secret)
	}
	tok, err := token.Mint(token.Params{
		AccountSID: c.account,
		APIKeySID:  keySID,
		APISecret:  secret,
		Identity:   identity,
		ServiceSID: svc.SID,
		TTL:        ttl,
		IDSuffix:   suffix,
		Now:        h.now,
	})
	if err != nil {
		return fmt.Errorf("admin: mint token: %w", err)
	}
	twiliohttp.WriteJSON(w, http.StatusCreated, tokenJSON{Identity: identity, Token: tok, ServiceSID: svc.SID, TTL: int(ttl / time.Second)})
	return nil
}

// errNoAPIKey answers a token request from an account without API keys.
var errNoAPIKey = chorus.Errorf(chorus.ErrInvalidParameter, "The account has no API key to sign access tokens with")

// signingKey picks the API key that signs console tokens: the caller's own
// key when it signed in with one, else the account's oldest main key (its
// oldest key if it has none). The secret is read from the store, so a key
// revoked meanwhile signs nothing.
func (h *handler) signingKey(r *http.Request, c *caller) (sid, secret string, err error) {
	var keys []*chorus.APIKey
	err = h.eng.Store().View(r.Context(), func(tx chorus.ReadTx) error {
		if chorus.IsSID(chorus.PrefixAPIKey, c.username) {
			k, err := tx.APIKey(r.Context(), c.username)
			if err != nil {
				return err
			}
			keys = []*chorus.APIKey{k}
			return nil
		}
		keys, err = tx.APIKeys(r.Context(), c.account)
		return err
	})
	if errors.Is(err, chorus.ErrNotFound) {
		return "", "", chorus.ErrAuthenticate
	}
	if err != nil {
		return "", "", fmt.Errorf("admin: api keys: %w", err)
	}
	if len(keys) == 0 {
		return "", "", errNoAPIKey
	}
	// With the auth token, the oldest main key: a standard key's holder
	// (a backend) must not get tokens marked with the auth token under its
	// own key's secret, with which it could test guesses of the auth token.
	for _, k := range keys {
		if k.Main {
			return k.SID, k.Secret, nil
		}
	}
	return keys[0].SID, keys[0].Secret, nil
}

func (h *handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	twiliohttp.WriteError(w, r, h.log, err)
}
