package token

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chorus-sync/chorus"
)

// Header and lifetime constants of Twilio Access Tokens.
const (
	// ContentType is the cty header of every Twilio Access Token.
	ContentType = "twilio-fpa;v=1"
	// DefaultTTL is the lifetime Mint uses when Params.TTL is zero.
	DefaultTTL = time.Hour
	// MaxTTL is the longest lifetime Twilio accepts.
	MaxTTL = 24 * time.Hour
)

// SyncGrant is the data_sync grant: which Sync service the token is for and,
// optionally, which endpoint (device or app instance) holds it.
type SyncGrant struct {
	ServiceSID string `json:"service_sid,omitempty"` // IS… or "default"; "" = the account's default service
	EndpointID string `json:"endpoint_id,omitempty"`
}

// Params are the inputs of Mint.
type Params struct {
	AccountSID string // AC…, the token's sub
	APIKeySID  string // SK…, the token's iss
	APISecret  string // the API key's secret, the HMAC key
	Identity   string // the end user; 1..256 characters
	ServiceSID string // data_sync.service_sid; "" omits it
	EndpointID string // data_sync.endpoint_id; "" omits it
	Region     string // the twr header; "" omits it
	// IDSuffix is appended to the jti (APIKeySID-iat, as twilio-node
	// writes it): an issuer's mark on the tokens it minted.
	IDSuffix string

	TTL       time.Duration    // 0 = DefaultTTL; at most MaxTTL; whole seconds
	NotBefore time.Time        // zero = no nbf claim
	Now       func() time.Time // default time.Now
}

// mintClaims is the payload Mint signs. Field order follows twilio-node
// (jti, grants, nbf, iat, exp, iss, sub).
type mintClaims struct {
	ID        string     `json:"jti"`
	Grants    mintGrants `json:"grants"`
	NotBefore *int64     `json:"nbf,omitempty"`
	IssuedAt  int64      `json:"iat"`
	Expires   int64      `json:"exp"`
	Issuer    string     `json:"iss"`
	Subject   string     `json:"sub"`
}

type mintGrants struct {
	Identity string    `json:"identity"`
	DataSync SyncGrant `json:"data_sync"`
}

func numericDate(sec int64) *jwt.NumericDate { return jwt.NewNumericDate(time.Unix(sec, 0)) }

// The jwt.Claims methods; golang-jwt only needs them for validation, which
// Mint does not use, but NewWithClaims requires the interface.
func (c mintClaims) GetExpirationTime() (*jwt.NumericDate, error) { return numericDate(c.Expires), nil }
func (c mintClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return numericDate(c.IssuedAt), nil }
func (c mintClaims) GetNotBefore() (*jwt.NumericDate, error) {
	if c.NotBefore == nil {
		return nil, nil
	}
	return numericDate(*c.NotBefore), nil
}
func (c mintClaims) GetIssuer() (string, error)             { return c.Issuer, nil }
func (c mintClaims) GetSubject() (string, error)            { return c.Subject, nil }
func (c mintClaims) GetAudience() (jwt.ClaimStrings, error) { return nil, nil }

// Mint returns a signed HS256 Access Token carrying a Sync grant.
//
// It fails when a SID has the wrong shape, the secret or identity is empty,
// the identity is longer than 256 characters, the TTL is negative, shorter
// than a second or longer than MaxTTL, or the token would be longer than
// MaxTokenBytes (which Verify refuses).
func Mint(p Params) (string, error) {
	if err := p.validate(); err != nil {
		return "", fmt.Errorf("token: mint: %w", err)
	}
	ttl := p.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	iat := now().Unix()
	c := mintClaims{
		ID:       fmt.Sprintf("%s-%d%s", p.APIKeySID, iat, p.IDSuffix),
		Grants:   mintGrants{Identity: p.Identity, DataSync: SyncGrant{ServiceSID: p.ServiceSID, EndpointID: p.EndpointID}},
		IssuedAt: iat,
		Expires:  iat + int64(ttl/time.Second),
		Issuer:   p.APIKeySID,
		Subject:  p.AccountSID,
	}
	if !p.NotBefore.IsZero() {
		nbf := p.NotBefore.Unix()
		c.NotBefore = &nbf
	}
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	t.Header["cty"] = ContentType
	if p.Region != "" {
		t.Header["twr"] = p.Region
	}
	s, err := t.SignedString([]byte(p.APISecret))
	if err != nil {
		return "", fmt.Errorf("token: mint: %w", err)
	}
	if len(s) > MaxTokenBytes {
		// Verify refuses it: handing it out would only fail later.
		return "", fmt.Errorf("token: mint: the token would be %d bytes, more than the %d Chorus accepts (a long endpoint ID?)", len(s), MaxTokenBytes)
	}
	return s, nil
}

func (p *Params) validate() error {
	switch {
	case !chorus.IsSID(chorus.PrefixAccount, p.AccountSID):
		return fmt.Errorf("account SID %q is not AC followed by 32 hex digits", p.AccountSID)
	case !chorus.IsSID(chorus.PrefixAPIKey, p.APIKeySID):
		return fmt.Errorf("API key SID %q is not SK followed by 32 hex digits", p.APIKeySID)
	case p.APISecret == "":
		return errors.New("API secret is empty")
	case p.Identity == "":
		return errors.New("identity is empty")
	case !chorus.ValidIdentity(p.Identity):
		return fmt.Errorf("identity is not 1-%d characters of valid UTF-8 without NUL", chorus.MaxIdentityLen)
	case p.ServiceSID != "" && !validServiceSID(p.ServiceSID):
		return fmt.Errorf("service SID %q is neither IS followed by 32 hex digits nor \"default\"", p.ServiceSID)
	case p.TTL < 0:
		return fmt.Errorf("TTL %v is negative", p.TTL)
	case p.TTL > 0 && p.TTL < time.Second:
		return fmt.Errorf("TTL %v is shorter than one second", p.TTL)
	case p.TTL > MaxTTL:
		return fmt.Errorf("TTL %v exceeds the maximum of %v", p.TTL, MaxTTL)
	}
	return nil
}

func validServiceSID(s string) bool {
	return s == "default" || chorus.IsSID(chorus.PrefixService, s)
}
