package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/twiliohttp"
	"github.com/chorus-sync/chorus/token"
)

// DevTokens says whether the server answers /token, the quickstart's
// development token endpoint.
type DevTokens int

const (
	// DevTokensAuto turns /token on only where that is safe: when the
	// credentials are the data directory's own generated ones (Creds is
	// zero), Listen is a loopback address and nothing says a reverse
	// proxy forwards to it (no PublicURL, no TrustedProxies), or when an
	// IdentitySource was configured (the app authenticates callers
	// itself).
	DevTokensAuto DevTokens = iota
	// DevTokensOn serves /token whatever the credentials and address.
	DevTokensOn
	// DevTokensOff answers /token with 404 (20404).
	DevTokensOff
)

// maxTokenForm bounds a POST /token body (a token and little else).
const maxTokenForm = 2 * token.MaxTokenBytes

// errDevTokensOff answers /token when the endpoint is off.
var errDevTokensOff = chorus.Errorf(chorus.ErrNotFound,
	"The /token endpoint is off. It is a development convenience: start chorus with --dev-tokens "+
		"(or CHORUS_DEV_TOKENS=1) to turn it on; a production app mints access tokens in its own backend")

// devTokensOn decides the auto mode; see DevTokensAuto.
func devTokensOn(cfg Config) bool {
	switch cfg.DevTokens {
	case DevTokensOn:
		return true
	case DevTokensOff:
		return false
	}
	if cfg.Identities != nil {
		return true
	}
	// Behind a reverse proxy a loopback listener serves the internet.
	proxied := cfg.PublicURL != "" || len(cfg.Transport.TrustedProxies) > 0
	return cfg.Creds.AccountSID == "" && isLoopback(cfg.Listen) && !proxied
}

// errTokenHost refuses /token for a Host or a forwarded request it does
// not serve.
var errTokenHost = chorus.Errorf(chorus.ErrForbiddenRequest,
	"The /token endpoint answers only requests from this machine to localhost (or, with --dev-tokens-public, to the --public-url host), "+
		"never requests forwarded by a proxy unless --dev-tokens-public is set")

// tokenRequestAllowed reports whether /token may answer r: its Host must be
// a loopback name or address (any port) and its TCP peer a loopback
// address, or, with DevTokensPublic, the Host the public URL's host; and a
// request a proxy forwarded (see proxied) is refused unless
// DevTokensPublic. The Host check is what defeats DNS rebinding: a page of
// evil.example whose name now resolves to 127.0.0.1 still sends Host:
// evil.example. The peer check keeps a remote client from merely claiming
// Host: localhost.
func (s *Server) tokenRequestAllowed(r *http.Request) bool {
	if proxied(r) && !s.cfg.DevTokensPublic {
		return false
	}
	if peer := net.ParseIP(hostOf(r.RemoteAddr)); loopbackHost(r.Host) && peer != nil && peer.IsLoopback() {
		return true
	}
	pub := publicHost(s.cfg.PublicURL)
	return s.cfg.DevTokensPublic && pub != "" && sameHost(r.Host, pub)
}

// loopbackHost reports whether the Host header host[:port] names this
// machine's loopback: localhost (or a name under .localhost), 127.0.0.0/8
// or ::1.
func loopbackHost(hostport string) bool {
	h := hostOnly(hostport)
	if strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// hostOnly is the host of a Host header without its port and brackets.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// sameHost compares two Host values, a missing port meaning the default
// one: "example.com" matches "example.com:443" only through the public
// URL's scheme, so ports are compared only when both have one.
func sameHost(a, b string) bool {
	if strings.EqualFold(a, b) {
		return true
	}
	_, pa, errA := net.SplitHostPort(a)
	_, pb, errB := net.SplitHostPort(b)
	if errA == nil && errB == nil && pa != pb {
		return false
	}
	return strings.EqualFold(hostOnly(a), hostOnly(b))
}

// isLoopback reports whether the listen address addr names only loopback
// interfaces (127.0.0.0/8, ::1 or localhost). ":3000" (every interface)
// is not.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// DevTokensOn reports whether /token is served.
func (s *Server) DevTokensOn() bool { return s.devTokens }

// tokenResponse is the body of /token, as Twilio's quickstarts send it.
type tokenResponse struct {
	Identity string `json:"identity"`
	Token    string `json:"token"`
}

// serveToken mints a quickstart token: for a new identity (from the
// IdentitySource), or, when the caller presents a still-valid token of
// this server's account and service (Authorization: Bearer, or the form
// field "token" of a POST), for that token's identity again.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if !s.devTokens {
		twiliohttp.WriteError(w, r, s.log, errDevTokensOff)
		return
	}
	if !s.tokenRequestAllowed(r) {
		twiliohttp.WriteError(w, r, s.log, errTokenHost)
		return
	}
	identity, err := s.tokenIdentity(w, r)
	if err == nil && reservedIdentity(identity) {
		err = chorus.Errorf(chorus.ErrForbidden, "The identity %q is reserved; /token never mints it", identity)
	}
	var tok string
	if err == nil {
		tok, err = s.mintDevToken(r.Context(), identity)
	}
	if err != nil {
		twiliohttp.WriteError(w, r, s.log, err)
		return
	}
	twiliohttp.WriteJSON(w, http.StatusOK, tokenResponse{Identity: identity, Token: tok})
}

// tokenFormParams are the parameters /token takes: a token to renew, in a
// POST body (or Authorization: Bearer).
var tokenFormParams = []string{"token"}

func (s *Server) tokenIdentity(w http.ResponseWriter, r *http.Request) (string, error) {
	var presented string
	// Other schemes (Basic credentials a browser cached for the origin) are
	// not a token and are ignored.
	if scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " "); strings.EqualFold(scheme, "Bearer") {
		if presented = strings.TrimSpace(cred); presented == "" {
			return "", chorus.Errorf(chorus.ErrTokenInvalid, "Invalid Access Token: empty Bearer token")
		}
	}
	// Nothing is ignored: a renewal that named its token another way (a
	// JSON body, Identity=…) would get a new random identity instead.
	form, err := twiliohttp.ReadForm(w, r, maxTokenForm)
	if err != nil {
		return "", err
	}
	switch {
	case form.Has("identity") || form.Has("Identity"):
		return "", chorus.Errorf(chorus.ErrInvalidParameter,
			"/token does not take an identity: present your still-valid token (Authorization: Bearer) to keep yours")
	case r.URL.Query().Has("token"):
		return "", chorus.Errorf(chorus.ErrInvalidParameter,
			"/token takes a token as Authorization: Bearer or in a POST form body, never in the URL (URLs are logged)")
	}
	if err := twiliohttp.CheckParams(form, tokenFormParams); err != nil {
		return "", err
	}
	if form.Has("token") {
		if presented != "" {
			return "", chorus.Errorf(chorus.ErrInvalidParameter, "/token got a token twice (Authorization: Bearer and the form): give it once")
		}
		if presented = strings.TrimSpace(form.Get("token")); presented == "" {
			return "", chorus.Errorf(chorus.ErrTokenInvalid, "Invalid Access Token: empty token")
		}
	}
	if presented == "" {
		return s.cfg.Identities.Identity(r)
	}
	c, err := s.verifier.Verify(r.Context(), presented)
	if err != nil {
		return "", err
	}
	if c.Subject != s.creds.AccountSID || c.Sync == nil || c.Sync.ServiceSID != s.creds.ServiceSID {
		return "", chorus.Errorf(chorus.ErrTokenGrants, "Invalid Access Token grants: not a token of this server's quickstart service")
	}
	// Renew only what this endpoint minted: signed with the key it signs
	// with, with its mark on the jti, and, for the built-in random
	// identities, of their form. A token another key signed (a standard
	// key's, with a short TTL of its own choosing) must not become a fresh
	// operator-signed one here, nor outlive the deletion of its key; nor
	// may one the console minted with the same key for an identity of its
	// choosing outlive its TTL and the console session.
	if c.Issuer != s.creds.APIKeySID {
		return "", errNotOwnToken
	}
	if _, random := s.cfg.Identities.(RandomIdentity); random && !randomIdentityRE.MatchString(c.Identity) {
		return "", chorus.Errorf(chorus.ErrTokenGrants, "Invalid Access Token grants: /token renews only the random identities it hands out")
	}
	if !strings.HasSuffix(c.ID, devTokenMark) {
		return "", errNotOwnToken
	}
	return c.Identity, nil
}

// devTokenMark ends the jti of the tokens /token mints: the tokens it
// renews.
const devTokenMark = "-quickstart"

// errNotOwnToken refuses to renew a token /token did not mint.
var errNotOwnToken = chorus.Errorf(chorus.ErrTokenIssuer, "Invalid Access Token issuer: /token renews only the tokens it minted")

// mintDevToken signs with the server's own API key, looked up afresh so
// that a key revoked meanwhile signs nothing.
func (s *Server) mintDevToken(ctx context.Context, identity string) (string, error) {
	key, err := s.eng.APIKey(ctx, s.creds.APIKeySID)
	if err != nil {
		if errors.Is(err, chorus.ErrNotFound) {
			return "", chorus.Errorf(chorus.ErrUnavailable, "The server's API key %s was revoked; restart with valid credentials", s.creds.APIKeySID)
		}
		return "", err
	}
	return token.Mint(token.Params{
		AccountSID: key.AccountSID,
		APIKeySID:  key.SID,
		APISecret:  key.Secret,
		Identity:   identity,
		ServiceSID: s.creds.ServiceSID,
		TTL:        s.cfg.TokenTTL,
		IDSuffix:   devTokenMark,
	})
}

// proxied reports a request that shows a reverse proxy forwarded it: a
// forwarding header (X-Forwarded-For, Forwarded, X-Real-IP, Via), or
// HTTP/1.0, which nginx speaks to its upstream unless told otherwise
// (proxy_http_version), with Host: 127.0.0.1:3000 ($proxy_host) and no
// forwarding header: from a loopback peer, with a loopback Host, it would
// otherwise look like this machine's own browser. Browsers, curl, Node
// and Prometheus speak HTTP/1.1 or later. A forwarding header counts when
// it is present at all, empty or not: a client's empty line would
// otherwise hide the line a proxy such as HAProxy adds after it.
func proxied(r *http.Request) bool {
	for _, h := range [...]string{"X-Forwarded-For", "Forwarded", "X-Real-Ip", "Via"} {
		if _, ok := r.Header[h]; ok {
			return true
		}
	}
	return !r.ProtoAtLeast(1, 1)
}
