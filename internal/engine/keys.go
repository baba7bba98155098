package engine

import (
	"context"
	"crypto/subtle"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/chorus-sync/chorus"
)

// MinSecretLen is the shortest auth token or API secret an operator may
// configure, and the length of the ones Chorus generates.
const MinSecretLen = 32

// maxFriendlyName bounds a key's friendly name (Twilio: 64 characters).
const maxFriendlyName = 64

// Credential is what authenticated a request.
type Credential struct {
	AccountSID string
	// SID is the account SID (auth token, primary or secondary) or the API
	// key SID.
	SID string
	// Main reports whether the credential may manage the account's keys
	// and auth tokens: the auth token or a main key.
	Main bool
	// SessionEnd is, for a console session, when it ends whatever its
	// renewals (its sign-in plus ConsoleSessionMaxAge); zero otherwise.
	SessionEnd time.Time
	// authToken is the auth token the caller authenticated with (Basic,
	// or a console session opened with it); "" for an API key.
	authToken string
}

// AuthToken is the auth token the caller authenticated with (Basic, or a
// console session opened with it), which marks the access tokens minted
// for it (AuthTokenSuffix); "" for an API key.
func (c Credential) AuthToken() string { return c.authToken }

// AuthenticateCredential checks REST Basic credentials: account SID with
// its auth token (primary or secondary) or API key SID with its secret.
// The credential comes from the engine's cache (cache.go), which every
// change of credentials on any node drops, so that a deleted key or a
// replaced token stops authenticating at once. It returns ErrAuthenticate
// for anything else.
func (e *Engine) AuthenticateCredential(ctx context.Context, username, password string) (Credential, error) {
	if username == "" || password == "" {
		return Credential{}, chorus.ErrAuthenticate
	}
	cs, err := e.credentialSecrets(ctx, username)
	if isNotFound(err) {
		return Credential{}, chorus.ErrAuthenticate
	}
	if err != nil {
		return Credential{}, fmt.Errorf("engine: authenticate: %w", err)
	}
	ok := 0
	for _, s := range cs.secrets {
		// An empty secret (a revoked account, no secondary) matches nothing:
		// password is not empty.
		ok |= subtle.ConstantTimeCompare([]byte(s), []byte(password))
	}
	if ok != 1 {
		return Credential{}, chorus.ErrAuthenticate
	}
	c := cs.cred
	if c.SID == c.AccountSID {
		c.authToken = password
	}
	return c, nil
}

// canManage refuses standard keys.
func canManage(c Credential) error {
	if !c.Main {
		return chorus.ErrPermissionDenied
	}
	return nil
}

func validFriendlyName(name string) error {
	if !utf8.ValidString(name) || strings.ContainsRune(name, 0) || utf8.RuneCountInString(name) > maxFriendlyName {
		return chorus.Errorf(chorus.ErrInvalidFriendly, "Invalid friendly name: expected at most %d characters of UTF-8 text without NUL", maxFriendlyName)
	}
	return nil
}

// updateCreds runs fn in a store transaction without counting it as a Sync
// write.
func (e *Engine) updateCreds(ctx context.Context, fn func(tx chorus.Tx) error) error {
	err := e.cfg.Store.Update(ctx, fn)
	if err != nil {
		// A failed commit may still have committed (a lost answer).
		e.creds.drop()
		return err
	}
	e.credentialsChanged(ctx)
	return nil
}

// CreateAPIKey creates a standard API key of c's account; its secret is in
// the result, and only there.
func (e *Engine) CreateAPIKey(ctx context.Context, c Credential, friendlyName string) (*chorus.APIKey, error) {
	if err := canManage(c); err != nil {
		return nil, err
	}
	if err := validFriendlyName(friendlyName); err != nil {
		return nil, err
	}
	now := e.now()
	k := &chorus.APIKey{
		SID: chorus.NewSID(chorus.PrefixAPIKey), AccountSID: c.AccountSID, Secret: chorus.NewSecret(MinSecretLen),
		FriendlyName: friendlyName, DateCreated: now, DateUpdated: now,
	}
	if err := e.updateCreds(ctx, func(tx chorus.Tx) error { return tx.PutAPIKey(ctx, k) }); err != nil {
		return nil, fmt.Errorf("engine: create api key: %w", err)
	}
	return k, nil
}

// APIKeys lists c's account's keys, oldest first.
func (e *Engine) APIKeys(ctx context.Context, c Credential) ([]*chorus.APIKey, error) {
	if err := canManage(c); err != nil {
		return nil, err
	}
	var keys []*chorus.APIKey
	err := e.view(ctx, func(tx chorus.ReadTx) (err error) {
		keys, err = tx.APIKeys(ctx, c.AccountSID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("engine: list api keys: %w", err)
	}
	return keys, nil
}

// accountKey reads key sid of the account; another account's key is
// not found.
func accountKey(ctx context.Context, tx chorus.ReadTx, accountSID, sid string) (*chorus.APIKey, error) {
	if !chorus.IsSID(chorus.PrefixAPIKey, sid) {
		return nil, chorus.ErrNotFound
	}
	k, err := tx.APIKey(ctx, sid)
	if isNotFound(err) || (err == nil && k.AccountSID != accountSID) {
		return nil, chorus.ErrNotFound
	}
	return k, err
}

// FetchAPIKey returns key sid of c's account (ErrNotFound, 20404, when
// there is none).
func (e *Engine) FetchAPIKey(ctx context.Context, c Credential, sid string) (*chorus.APIKey, error) {
	if err := canManage(c); err != nil {
		return nil, err
	}
	var k *chorus.APIKey
	err := e.view(ctx, func(tx chorus.ReadTx) (err error) {
		k, err = accountKey(ctx, tx, c.AccountSID, sid)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("engine: fetch api key: %w", err)
	}
	return k, nil
}

// UpdateAPIKey renames key sid of c's account.
func (e *Engine) UpdateAPIKey(ctx context.Context, c Credential, sid string, friendlyName *string) (*chorus.APIKey, error) {
	if err := canManage(c); err != nil {
		return nil, err
	}
	if friendlyName != nil {
		if err := validFriendlyName(*friendlyName); err != nil {
			return nil, err
		}
	}
	var k *chorus.APIKey
	err := e.updateCreds(ctx, func(tx chorus.Tx) (err error) {
		k, err = accountKey(ctx, tx, c.AccountSID, sid)
		if err != nil || friendlyName == nil {
			return err
		}
		k.FriendlyName, k.DateUpdated = *friendlyName, e.now()
		return tx.PutAPIKey(ctx, k)
	})
	if err != nil {
		return nil, fmt.Errorf("engine: update api key: %w", err)
	}
	return k, nil
}

// DeleteAPIKey deletes key sid of c's account. From the commit on, the key
// neither authenticates REST calls nor verifies access tokens; closing the
// live sessions its tokens opened is the caller's (the gateway's).
func (e *Engine) DeleteAPIKey(ctx context.Context, c Credential, sid string) error {
	if err := canManage(c); err != nil {
		return err
	}
	err := e.updateCreds(ctx, func(tx chorus.Tx) error {
		if _, err := accountKey(ctx, tx, c.AccountSID, sid); err != nil {
			return err
		}
		return tx.DeleteAPIKey(ctx, sid)
	})
	if err != nil {
		return fmt.Errorf("engine: delete api key: %w", err)
	}
	e.log.Info("revoked API key", "account_sid", c.AccountSID, "api_key_sid", sid, "by", c.SID)
	return nil
}

// CreateSecondaryAuthToken gives c's account a new secondary auth token
// (replacing one it had). Both tokens authenticate until one is promoted
// or the secondary deleted.
func (e *Engine) CreateSecondaryAuthToken(ctx context.Context, c Credential) (*chorus.Account, error) {
	if err := canManage(c); err != nil {
		return nil, err
	}
	var a *chorus.Account
	err := e.updateCreds(ctx, func(tx chorus.Tx) (err error) {
		if a, err = tx.Account(ctx, c.AccountSID); err != nil {
			return err
		}
		a.SecondaryAuthToken, a.SecondaryDateCreated = chorus.NewSecret(MinSecretLen), e.now()
		return tx.PutAccount(ctx, a)
	})
	if err != nil {
		return nil, fmt.Errorf("engine: create secondary auth token: %w", err)
	}
	e.log.Info("created a secondary auth token", "account_sid", c.AccountSID, "by", c.SID)
	return a, nil
}

var zeroTime time.Time

// errNoSecondary answers a delete or promotion without a secondary token.
var errNoSecondary = chorus.Errorf(chorus.ErrNotFound, "The account has no secondary auth token")

// DeleteSecondaryAuthToken drops c's account's secondary auth token.
func (e *Engine) DeleteSecondaryAuthToken(ctx context.Context, c Credential) error {
	if err := canManage(c); err != nil {
		return err
	}
	err := e.updateCreds(ctx, func(tx chorus.Tx) error {
		a, err := tx.Account(ctx, c.AccountSID)
		if err != nil {
			return err
		}
		if a.SecondaryAuthToken == "" {
			return errNoSecondary
		}
		a.SecondaryAuthToken, a.SecondaryDateCreated = "", zeroTime
		return tx.PutAccount(ctx, a)
	})
	if err != nil {
		return fmt.Errorf("engine: delete secondary auth token: %w", err)
	}
	e.log.Info("deleted the secondary auth token", "account_sid", c.AccountSID, "by", c.SID)
	return nil
}

// PromoteSecondaryAuthToken makes c's account's secondary auth token the
// primary one; the old primary stops authenticating (and signing
// webhooks) at once. The result's SecondaryDateCreated is when the new
// primary was created.
func (e *Engine) PromoteSecondaryAuthToken(ctx context.Context, c Credential) (*chorus.Account, error) {
	if err := canManage(c); err != nil {
		return nil, err
	}
	var a *chorus.Account
	var created = zeroTime
	err := e.updateCreds(ctx, func(tx chorus.Tx) (err error) {
		if a, err = tx.Account(ctx, c.AccountSID); err != nil {
			return err
		}
		if a.SecondaryAuthToken == "" {
			return errNoSecondary
		}
		created = a.SecondaryDateCreated
		a.AuthToken, a.SecondaryAuthToken, a.SecondaryDateCreated = a.SecondaryAuthToken, "", zeroTime
		return tx.PutAccount(ctx, a)
	})
	if err != nil {
		return nil, fmt.Errorf("engine: promote secondary auth token: %w", err)
	}
	e.log.Info("promoted the secondary auth token; the old primary is revoked", "account_sid", c.AccountSID, "by", c.SID)
	out := *a
	out.SecondaryDateCreated = created
	return &out, nil
}

// Revoked lists what RevokeOthers revoked.
type Revoked struct {
	Accounts []string // account SIDs whose auth tokens were cleared
	APIKeys  []*chorus.APIKey
}

// RevokeOthers makes keep the operator's only credentials: every other
// account's keys are deleted and its auth tokens cleared (its data stays,
// but nothing authenticates as it); in keep's account every other main key
// is deleted (an earlier TWILIO_API_KEY, generated development keys). Its
// secondary auth token stays, so that a rotation in progress survives
// restarts; Bootstrap drops it when the operator's credentials change.
// Standard keys created through the Keys API stay: they are managed, and
// revoked, there. The caller closes live
// sessions opened with tokens of the deleted keys.
func (e *Engine) RevokeOthers(ctx context.Context, keep Credentials) (Revoked, error) {
	var r Revoked
	err := e.updateCreds(ctx, func(tx chorus.Tx) error {
		r = Revoked{}
		accts, err := tx.Accounts(ctx)
		if err != nil {
			return err
		}
		for _, a := range accts {
			keys, err := tx.APIKeys(ctx, a.SID)
			if err != nil {
				return err
			}
			for _, k := range keys {
				if a.SID == keep.AccountSID && (k.SID == keep.APIKeySID || !k.Main) {
					continue
				}
				switch err := tx.DeleteAPIKey(ctx, k.SID); {
				case isNotFound(err):
					continue // another node starting at the same time revoked it
				case err != nil:
					return err
				}
				r.APIKeys = append(r.APIKeys, k)
			}
			switch {
			case a.SID != keep.AccountSID && (a.AuthToken != "" || a.SecondaryAuthToken != ""):
				a.AuthToken, a.SecondaryAuthToken, a.SecondaryDateCreated = "", "", zeroTime
				r.Accounts = append(r.Accounts, a.SID)
			default:
				continue
			}
			if err := tx.PutAccount(ctx, a); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Revoked{}, fmt.Errorf("engine: revoke other credentials: %w", err)
	}
	return r, nil
}
