package engine

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/chorus-sync/chorus"
)

// Console sessions stand in for the auth token or API secret in the admin
// console: POST /admin/v1/Session trades Basic credentials for a
// short-lived bearer token that the console keeps in memory only, so no
// long-lived secret sits where scripts of other pages on the origin could
// read it.
//
// A session token is stateless, so any node of a cluster accepts it:
//
//	chorus-session.<base64url(JSON {a, c, e, s, i, n})>.<base64url(HMAC-SHA256)>
//
// a is the account, c the credential that signed in (AC… or SK…), e the
// expiry and s the sign-in time (unix seconds), i a random id of the
// sign-in, n a random nonce. Renewal carries s and i over and never sets
// e beyond s + ConsoleSessionMaxAge, so a captured session dies within
// that even if its holder keeps renewing it; signing out
// (SignOutConsoleSession) ends the sign-in i on every node at once.
// The MAC key is derived from that credential's secret, so deleting the
// key, or promoting a secondary auth token over the primary that signed
// in, ends the session at once.
const (
	// ConsoleSessionTTL is how long a console session lasts; the console
	// renews it while it is open.
	ConsoleSessionTTL = 15 * time.Minute
	// ConsoleSessionMaxAge bounds a console session's total lifetime,
	// renewals included, from its sign-in.
	ConsoleSessionMaxAge = 12 * time.Hour

	sessionPrefix  = "chorus-session."
	sessionContext = "chorus console session v1"
	maxSessionLen  = 1024
)

type sessionClaims struct {
	Account    string `json:"a"`
	Credential string `json:"c"`
	Expires    int64  `json:"e"`
	SignedIn   int64  `json:"s"`
	SignIn     string `json:"i,omitempty"` // none in tokens of versions before sign-out
	Nonce      string `json:"n"`
}

// signInID names the sign-in of a session for SignOutConsoleSession: its
// id, or for a token of a version without one its sign-in time, which
// every token renewed from it carries too.
func (sc sessionClaims) signInID() string {
	if sc.SignIn != "" {
		return sc.SignIn
	}
	return "s" + strconv.FormatInt(sc.SignedIn, 10)
}

// newRandomID returns 16 random bytes in base64url.
func newRandomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func sessionMAC(secret, payload string) []byte {
	k := hmac.New(sha256.New, []byte(secret))
	k.Write([]byte(sessionContext))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// NewConsoleSession authenticates Basic credentials like
// AuthenticateCredential and returns a session token for them that
// expires after ConsoleSessionTTL.
func (e *Engine) NewConsoleSession(ctx context.Context, username, password string) (string, Credential, time.Time, error) {
	c, err := e.AuthenticateCredential(ctx, username, password)
	if err != nil {
		return "", Credential{}, time.Time{}, err
	}
	return e.signSession(c, password, sessionClaims{SignedIn: e.cfg.Now().Unix(), SignIn: newRandomID()})
}

// RenewConsoleSession returns a fresh session token for the credential of
// a still-valid session token. It keeps the session's sign-in time: past
// ConsoleSessionMaxAge from it, the caller must sign in again.
func (e *Engine) RenewConsoleSession(ctx context.Context, tok string) (string, Credential, time.Time, error) {
	c, secret, sc, err := e.verifySession(ctx, tok)
	if err != nil {
		return "", Credential{}, time.Time{}, err
	}
	if sc.SignedIn == 0 {
		// A session of a version without the sign-in time: sign in again.
		return "", Credential{}, time.Time{}, chorus.Errorf(chorus.ErrAuthenticate, "Authenticate: sign in again")
	}
	return e.signSession(c, secret, sc)
}

// signSession signs a session token for c that expires after
// ConsoleSessionTTL, with the sign-in of from (its time and id).
func (e *Engine) signSession(c Credential, secret string, from sessionClaims) (string, Credential, time.Time, error) {
	signedIn := from.SignedIn
	exp := e.cfg.Now().Add(ConsoleSessionTTL).Truncate(time.Second)
	if limit := time.Unix(signedIn, 0).Add(ConsoleSessionMaxAge); exp.After(limit) {
		exp = limit
	}
	if !exp.After(e.cfg.Now()) {
		return "", Credential{}, time.Time{}, chorus.Errorf(chorus.ErrAuthenticate,
			"Authenticate: the console session reached its %v limit; sign in again", ConsoleSessionMaxAge)
	}
	var nonce [12]byte
	_, _ = rand.Read(nonce[:])
	body, err := json.Marshal(sessionClaims{Account: c.AccountSID, Credential: c.SID, Expires: exp.Unix(), SignedIn: signedIn,
		SignIn: from.SignIn, Nonce: base64.RawURLEncoding.EncodeToString(nonce[:])})
	if err != nil {
		return "", Credential{}, time.Time{}, fmt.Errorf("engine: console session: %w", err)
	}
	payload := base64.RawURLEncoding.EncodeToString(body)
	c.SessionEnd = time.Unix(signedIn, 0).Add(ConsoleSessionMaxAge)
	return sessionPrefix + payload + "." + base64.RawURLEncoding.EncodeToString(sessionMAC(secret, payload)), c, exp, nil
}

// AuthenticateSession checks a console session token.
func (e *Engine) AuthenticateSession(ctx context.Context, tok string) (Credential, error) {
	c, secret, sc, err := e.verifySession(ctx, tok)
	if err != nil {
		return c, err
	}
	if c.SID == c.AccountSID {
		c.authToken = secret
	}
	c.SessionEnd = time.Unix(sc.Expires, 0) // a session of a version without the sign-in time
	if sc.SignedIn != 0 {
		c.SessionEnd = time.Unix(sc.SignedIn, 0).Add(ConsoleSessionMaxAge)
	}
	return c, nil
}

// SignOutConsoleSession ends the sign-in of a still-valid session token on
// every node: that token, the tokens renewed from it, and any copy of them
// are refused from then on (Tx.SignOutConsole), until they would have
// expired anyway. Other sign-ins of the same credential go on.
func (e *Engine) SignOutConsoleSession(ctx context.Context, tok string) error {
	c, _, sc, err := e.verifySession(ctx, tok)
	if err != nil {
		return err
	}
	if sc.SignedIn == 0 {
		// A session of a version without the sign-in time: its token
		// cannot be renewed (RenewConsoleSession) and ends at its expiry.
		return chorus.Errorf(chorus.ErrAuthenticate, "Authenticate: this console session cannot be signed out; it ends at its expiry")
	}
	end := time.Unix(sc.SignedIn, 0).Add(ConsoleSessionMaxAge)
	err = e.cfg.Store.Update(ctx, func(tx chorus.Tx) error {
		return tx.SignOutConsole(ctx, c.SID, sc.signInID(), end)
	})
	if err != nil {
		return fmt.Errorf("engine: console sign-out: %w", err)
	}
	return nil
}

// verifySession returns the session's credential, the secret that signed
// it and its claims; anything wrong is ErrAuthenticate, a session signed
// out (SignOutConsoleSession) included.
func (e *Engine) verifySession(ctx context.Context, tok string) (Credential, string, sessionClaims, error) {
	rest, ok := strings.CutPrefix(tok, sessionPrefix)
	if !ok || len(tok) > maxSessionLen {
		return Credential{}, "", sessionClaims{}, chorus.ErrAuthenticate
	}
	payload, mac64, ok := strings.Cut(rest, ".")
	mac, err1 := base64.RawURLEncoding.DecodeString(mac64)
	body, err2 := base64.RawURLEncoding.DecodeString(payload)
	var sc sessionClaims
	if !ok || err1 != nil || err2 != nil || json.Unmarshal(body, &sc) != nil {
		return Credential{}, "", sessionClaims{}, chorus.ErrAuthenticate
	}
	now := e.cfg.Now().Unix()
	if now >= sc.Expires || (sc.SignedIn != 0 && now >= sc.SignedIn+int64(ConsoleSessionMaxAge/time.Second)) {
		return Credential{}, "", sessionClaims{}, chorus.Errorf(chorus.ErrAuthenticate, "Authenticate: the console session expired")
	}
	cs, err := e.credentialSecrets(ctx, sc.Credential)
	if isNotFound(err) {
		return Credential{}, "", sessionClaims{}, chorus.ErrAuthenticate
	}
	if err != nil {
		return Credential{}, "", sessionClaims{}, fmt.Errorf("engine: console session: %w", err)
	}
	if cs.cred.AccountSID != sc.Account {
		return Credential{}, "", sessionClaims{}, chorus.ErrAuthenticate
	}
	for _, s := range cs.secrets {
		if s != "" && hmac.Equal(mac, sessionMAC(s, payload)) {
			if err := e.checkSignedOut(ctx, cs.cred.SID, sc); err != nil {
				return Credential{}, "", sessionClaims{}, err
			}
			return cs.cred, s, sc, nil
		}
	}
	return Credential{}, "", sessionClaims{}, chorus.ErrAuthenticate
}

// checkSignedOut refuses a session whose sign-in was signed out. It reads
// the store each time, uncached, so that a sign-out on one node holds on
// every node at once; the console's requests are few.
func (e *Engine) checkSignedOut(ctx context.Context, credential string, sc sessionClaims) error {
	if sc.SignedIn == 0 {
		return nil // of a version without sign-in times: cannot be renewed, nor signed out
	}
	var out bool
	err := e.view(ctx, func(tx chorus.ReadTx) (err error) {
		out, err = tx.ConsoleSignedOut(ctx, credential, sc.signInID())
		return err
	})
	switch {
	case err != nil:
		return fmt.Errorf("engine: console session: %w", err)
	case out:
		return chorus.Errorf(chorus.ErrAuthenticate, "Authenticate: the console session was signed out")
	}
	return nil
}

// ParseBasic parses an Authorization header value of the Basic scheme
// exactly as net/http's Request.BasicAuth does ("Basic " and the base64
// of user:password, nothing more: "Basic  <b64>" is refused), so that
// whatever counts and logs logins by user (the server's throttle) sees the
// same user as authentication.
func ParseBasic(authorization string) (user, pass string, ok bool) {
	const prefix = "Basic "
	if len(authorization) < len(prefix) || !strings.EqualFold(authorization[:len(prefix)], prefix) {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(authorization[len(prefix):])
	if err != nil {
		return "", "", false
	}
	user, pass, ok = strings.Cut(string(raw), ":")
	if !ok {
		return "", "", false
	}
	return user, pass, true
}

// AuthenticateHeader checks an Authorization header value: "Basic …"
// (account SID + auth token, or API key SID + secret) or "Bearer …" with
// a console session token. Anything else is ErrAuthenticate.
func (e *Engine) AuthenticateHeader(ctx context.Context, authorization string) (Credential, error) {
	scheme, cred, _ := strings.Cut(authorization, " ")
	cred = strings.TrimSpace(cred)
	switch {
	case strings.EqualFold(scheme, "Basic"):
		user, pass, ok := ParseBasic(authorization)
		if !ok {
			return Credential{}, chorus.ErrAuthenticate
		}
		return e.AuthenticateCredential(ctx, user, pass)
	case strings.EqualFold(scheme, "Bearer") && strings.HasPrefix(cred, sessionPrefix):
		return e.AuthenticateSession(ctx, cred)
	}
	return Credential{}, chorus.ErrAuthenticate
}

// Access tokens minted through the admin API with the auth token (by a
// console session opened with it, or with Basic auth) are signed by one of
// the account's API keys (an access token names a key), so revoking that
// key ends them, but rotating the auth token would not, although it ends
// the session. Their jti is the minted form "<iss>-<iat>" followed by
// "-console-" and 16 hex digits of an HMAC keyed with the auth token over
// the signing key's secret (its mark), and they are refused once neither
// of the account's auth tokens gives that mark: at init, at updateToken,
// on plain-HTTP CDS requests and the EMS exchange, and, through the
// gateway's pass after every change of credentials, in live sessions. The
// key's secret in the HMAC means a token's holder cannot test guesses of
// the auth token against its mark (an operator's TWILIO_AUTH_TOKEN need not
// be random) without that secret, a main key's (the admin API signs such
// tokens with one), whose holder may manage credentials anyway.
const (
	consoleTokenMark    = "-console-"
	consoleBindingHex   = 16
	consoleBindingLabel = "chorus console token v2"
)

func consoleBinding(authToken, keySecret string) string {
	m := hmac.New(sha256.New, []byte(authToken))
	m.Write([]byte(consoleBindingLabel))
	m.Write([]byte{0})
	m.Write([]byte(keySecret))
	return hex.EncodeToString(m.Sum(nil))[:consoleBindingHex]
}

// AuthTokenSuffix is what an access token minted with the auth token
// authToken and signed with an API key of secret keySecret carries at the
// end of its jti (token.Params.IDSuffix).
func AuthTokenSuffix(authToken, keySecret string) string {
	return consoleTokenMark + consoleBinding(authToken, keySecret)
}

// AuthTokenMark returns the auth token mark of an access token with the
// jti id, signed by key issuer at issuedAt, or "" when it has none: only
// the exact form the admin API mints counts, so a token a backend minted
// with a jti of its own is never taken for one.
func AuthTokenMark(id, issuer string, issuedAt time.Time) string {
	if !strings.Contains(id, consoleTokenMark) {
		return "" // most tokens: no allocation on init's path
	}
	rest, ok := strings.CutPrefix(id, issuer+"-"+strconv.FormatInt(issuedAt.Unix(), 10)+consoleTokenMark)
	if !ok || issuer == "" || issuedAt.IsZero() || len(rest) != consoleBindingHex {
		return ""
	}
	if _, err := hex.DecodeString(rest); err != nil {
		return ""
	}
	return rest
}

// AuthTokenMarkValid reports whether an access token of accountSID with
// the auth token mark (AuthTokenMark; "" is always valid), signed with an
// API key of secret keySecret, may still be used: whether the account has
// that auth token, primary or secondary. It reads the engine's credential
// cache, which every change of credentials drops.
func (e *Engine) AuthTokenMarkValid(ctx context.Context, accountSID, mark, keySecret string) (bool, error) {
	if mark == "" {
		return true, nil
	}
	cs, err := e.credentialSecrets(ctx, accountSID)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("engine: auth token mark: %w", err)
	}
	for _, t := range cs.secrets {
		if t != "" && hmac.Equal([]byte(consoleBinding(t, keySecret)), []byte(mark)) {
			return true, nil
		}
	}
	return false, nil
}

// AuthTokenMarks returns the marks of the account's auth tokens, for
// tokens signed with an API key of secret keySecret, as the store has them
// now (not the cache: a pass after another node's change may run before
// this node's cache hears of it); none for an account that is gone.
func (e *Engine) AuthTokenMarks(ctx context.Context, accountSID, keySecret string) ([]string, error) {
	var tokens [2]string
	err := e.view(ctx, func(tx chorus.ReadTx) error {
		a, err := tx.Account(ctx, accountSID)
		if err == nil {
			tokens = [2]string{a.AuthToken, a.SecondaryAuthToken}
		}
		return err
	})
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("engine: auth token marks: %w", err)
	}
	var marks []string
	for _, t := range tokens {
		if t != "" {
			marks = append(marks, consoleBinding(t, keySecret))
		}
	}
	return marks, nil
}
