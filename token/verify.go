package token

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chorus-sync/chorus"
)

// MaxTokenBytes bounds the size of a token Verify will parse.
const MaxTokenBytes = 64 << 10

// DefaultSkew is the clock skew a Verifier tolerates when Skew is zero.
const DefaultSkew = 60 * time.Second

// Claims is what a verified token says.
type Claims struct {
	ID        string     // jti
	Issuer    string     // iss: the API key SID
	Subject   string     // sub: the account SID
	IssuedAt  time.Time  // iat; zero if absent
	NotBefore time.Time  // nbf; zero if absent
	Expires   time.Time  // exp
	Identity  string     // grants.identity
	Sync      *SyncGrant // grants.data_sync; nil if absent
	Region    string     // twr header; "" if absent
	Algorithm string     // alg header
}

// KeyLookup returns the API key with the given SID. A missing key is an
// error for which errors.Is(err, chorus.ErrNotFound) holds (or any
// *chorus.Error with status 404), or a nil key with a nil error.
type KeyLookup func(ctx context.Context, apiKeySID string) (*chorus.APIKey, error)

// Verifier checks Access Tokens. The zero value is not usable: Keys is
// required.
type Verifier struct {
	Keys KeyLookup
	// Skew is the clock skew tolerated on nbf and the 24 h lifetime limit;
	// 0 means DefaultSkew. A negative value means no skew. exp has none: a
	// token past it is expired, as the session it would open is closed at
	// exp (410), which would strand the SDK (it renews on the 401 of an
	// expired token, but cannot in the middle of closing).
	Skew time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// AllowHS384HS512 also accepts HS384 and HS512 (twilio-node can emit
	// them; Twilio's servers reject them).
	AllowHS384HS512 bool
	// RequireSync rejects tokens without a data_sync grant.
	RequireSync bool
}

var parser = jwt.NewParser(jwt.WithoutClaimsValidation())

// Verify checks raw and returns its claims. Every rejection of the token is
// a *chorus.Error with the code of the reason (20101-20160) whose cause
// says more; an error of the key lookup other than not-found is returned
// wrapped, as is.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	if v.Keys == nil {
		return nil, errors.New("token: verify: Verifier.Keys is nil")
	}
	if raw == "" {
		return nil, chorus.Errorf(chorus.ErrTokenNotJWT, "Invalid Token: empty")
	}
	if len(raw) > MaxTokenBytes {
		return nil, chorus.Errorf(chorus.ErrTokenInvalid, "Invalid Access Token: longer than %d bytes", MaxTokenBytes)
	}
	if strings.Count(raw, ".") != 2 {
		return nil, chorus.Errorf(chorus.ErrTokenNotJWT, "Invalid Token: not a JWT (expected three dot-separated segments)")
	}

	mc := jwt.MapClaims{}
	tok, parts, err := parser.ParseUnverified(raw, mc)
	var sigErr error // a signature that is not base64url: reported after the header checks
	switch {
	case err == nil:
	case tok == nil:
		return nil, wrap(chorus.Errorf(chorus.ErrTokenNotJWT, "Invalid Token: not a JWT"), err)
	case tok.Method == nil && errors.Is(err, jwt.ErrTokenUnverifiable):
		// Unknown or missing alg: the header checks below name it.
	case tok.Method == nil:
		return nil, wrap(chorus.Errorf(chorus.ErrTokenInvalid, "Invalid Access Token: header or payload is not base64url-encoded JSON"), err)
	default:
		sigErr = err
	}

	c := &Claims{}
	if err := v.checkHeader(tok.Header, c); err != nil {
		return nil, err
	}

	// Issuer and subject.
	iss, ok := mc["iss"].(string)
	if !ok || !chorus.IsSID(chorus.PrefixAPIKey, iss) {
		return nil, chorus.Errorf(chorus.ErrTokenIssuer, "Invalid Access Token issuer/subject: iss must be an API key SID")
	}
	sub, ok := mc["sub"].(string)
	if !ok || !chorus.IsSID(chorus.PrefixAccount, sub) {
		return nil, chorus.Errorf(chorus.ErrTokenIssuer, "Invalid Access Token issuer/subject: sub must be an account SID")
	}
	key, err := v.Keys(ctx, iss)
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("token: verify: look up API key %s: %w", iss, err)
	}
	if err != nil || key == nil {
		return nil, wrap(chorus.Errorf(chorus.ErrTokenIssuer, "Invalid Access Token issuer/subject: unknown API key %s", iss), err)
	}
	if key.AccountSID != sub {
		return nil, chorus.Errorf(chorus.ErrTokenIssuer, "Invalid Access Token issuer/subject: API key %s does not belong to account %s", iss, sub)
	}
	c.Issuer, c.Subject = iss, sub

	// Signature.
	if key.Secret == "" {
		return nil, chorus.Errorf(chorus.ErrTokenSignature, "Invalid Access Token signature: API key %s has no secret", iss)
	}
	if sigErr != nil {
		return nil, wrap(chorus.Errorf(chorus.ErrTokenSignature, "Invalid Access Token signature: not base64url"), sigErr)
	}
	if err := tok.Method.Verify(parts[0]+"."+parts[1], tok.Signature, []byte(key.Secret)); err != nil {
		return nil, wrap(chorus.Errorf(chorus.ErrTokenSignature, "Invalid Access Token signature"), err)
	}

	if err := v.checkTimes(mc, c); err != nil {
		return nil, err
	}
	if jti, ok := mc["jti"]; ok {
		if c.ID, ok = jti.(string); !ok {
			return nil, chorus.Errorf(chorus.ErrTokenInvalid, "Invalid Access Token: jti must be a string")
		}
	}
	if err := v.checkGrants(mc["grants"], c); err != nil {
		return nil, err
	}
	return c, nil
}

func (v *Verifier) checkHeader(h map[string]any, c *Claims) error {
	if typ, ok := h["typ"].(string); !ok || typ != "JWT" {
		return chorus.Errorf(chorus.ErrTokenHeader, "Invalid Access Token header: typ must be \"JWT\", got %s", show(h["typ"]))
	}
	if cty, ok := h["cty"].(string); !ok || cty != ContentType {
		return chorus.Errorf(chorus.ErrTokenHeader, "Invalid Access Token header: cty must be %q, got %s", ContentType, show(h["cty"]))
	}
	alg, _ := h["alg"].(string)
	switch {
	case alg == jwt.SigningMethodHS256.Alg():
	case v.AllowHS384HS512 && (alg == jwt.SigningMethodHS384.Alg() || alg == jwt.SigningMethodHS512.Alg()):
	default:
		return chorus.Errorf(chorus.ErrTokenHeader, "Invalid Access Token header: alg must be HS256, got %s", show(h["alg"]))
	}
	c.Algorithm = alg
	if twr, ok := h["twr"]; ok {
		if c.Region, ok = twr.(string); !ok {
			return chorus.Errorf(chorus.ErrTokenHeader, "Invalid Access Token header: twr must be a string")
		}
	}
	return nil
}

func (v *Verifier) checkTimes(mc jwt.MapClaims, c *Claims) error {
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	skew := v.Skew
	switch {
	case skew == 0:
		skew = DefaultSkew
	case skew < 0:
		skew = 0
	}

	exp, err := mc.GetExpirationTime()
	if err != nil {
		return wrap(chorus.Errorf(chorus.ErrTokenExpired, "Access Token expiration date invalid: exp is not a NumericDate"), err)
	}
	if exp == nil {
		return chorus.Errorf(chorus.ErrTokenExpired, "Access Token expiration date invalid: exp is required")
	}
	nbf, err := mc.GetNotBefore()
	if err != nil {
		return wrap(chorus.Errorf(chorus.ErrTokenNotYetValid, "Access Token not yet valid: nbf is not a NumericDate"), err)
	}
	iat, err := mc.GetIssuedAt()
	if err != nil {
		return wrap(chorus.Errorf(chorus.ErrTokenInvalid, "Invalid Access Token: iat is not a NumericDate"), err)
	}
	c.Expires = exp.Time
	if nbf != nil {
		c.NotBefore = nbf.Time
	}
	if iat != nil {
		c.IssuedAt = iat.Time
	}

	if !now.Before(c.Expires) {
		return chorus.Errorf(chorus.ErrTokenExpired, "Access Token expired at %s", c.Expires.UTC().Format(time.RFC3339))
	}
	if nbf != nil && c.NotBefore.After(now.Add(skew)) {
		return chorus.Errorf(chorus.ErrTokenNotYetValid, "Access Token not yet valid: nbf is %s", c.NotBefore.UTC().Format(time.RFC3339))
	}
	base := c.IssuedAt
	if base.IsZero() {
		base = c.NotBefore
	}
	if !base.IsZero() && c.Expires.Sub(base) > MaxTTL {
		return chorus.Errorf(chorus.ErrTokenLifetime, "Expiration Time Exceeds Maximum Time Allowed: lifetime %v exceeds %v", c.Expires.Sub(base), MaxTTL)
	}
	if c.Expires.Sub(now) > MaxTTL+skew {
		return chorus.Errorf(chorus.ErrTokenLifetime, "Expiration Time Exceeds Maximum Time Allowed: expires more than %v from now", MaxTTL)
	}
	return nil
}

func (v *Verifier) checkGrants(g any, c *Claims) error {
	grants, ok := g.(map[string]any)
	if !ok {
		return chorus.Errorf(chorus.ErrTokenGrants, "Invalid Access Token grants: grants must be an object")
	}
	id, ok := grants["identity"].(string)
	if !ok {
		return chorus.Errorf(chorus.ErrTokenGrants, "Invalid Access Token grants: identity is required and must be a string")
	}
	if !chorus.ValidIdentity(id) {
		return chorus.Errorf(chorus.ErrTokenGrants, "Invalid Access Token grants: identity must be 1-%d characters of valid UTF-8 without NUL", chorus.MaxIdentityLen)
	}
	if chorus.ReservedIdentity(id) {
		// Its changes would pass for REST's (created_by, webhooks' Identity).
		return chorus.Errorf(chorus.ErrTokenGrants, "Invalid Access Token grants: identity %q is reserved for changes made through the REST API", id)
	}
	c.Identity = id

	ds, present := grants["data_sync"]
	if !present {
		if v.RequireSync {
			return chorus.Errorf(chorus.ErrTokenGrants, "Invalid Access Token grants: data_sync grant is required")
		}
		return nil
	}
	m, ok := ds.(map[string]any)
	if !ok {
		return chorus.Errorf(chorus.ErrTokenGrants, "Invalid Access Token grants: data_sync must be an object")
	}
	sg := &SyncGrant{}
	if s, ok := m["service_sid"]; ok {
		if sg.ServiceSID, ok = s.(string); !ok || !validServiceSID(sg.ServiceSID) {
			return chorus.Errorf(chorus.ErrTokenGrants, "Invalid Access Token grants: data_sync.service_sid must be a Sync service SID or \"default\"")
		}
	}
	if s, ok := m["endpoint_id"]; ok {
		if sg.EndpointID, ok = s.(string); !ok {
			return chorus.Errorf(chorus.ErrTokenGrants, "Invalid Access Token grants: data_sync.endpoint_id must be a string")
		}
	}
	c.Sync = sg
	return nil
}

func isNotFound(err error) bool {
	if errors.Is(err, chorus.ErrNotFound) {
		return true
	}
	var e *chorus.Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// wrap sets e's cause.
func wrap(e *chorus.Error, cause error) *chorus.Error {
	e.Err = cause
	return e
}

// show quotes a header value for an error message, bounded in length.
func show(v any) string {
	if v == nil {
		return "nothing"
	}
	r := []rune(fmt.Sprint(v))
	if len(r) > 32 {
		return fmt.Sprintf("%q…", string(r[:32]))
	}
	return fmt.Sprintf("%q", string(r))
}
