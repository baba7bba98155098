package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/chorus-sync/chorus"
)

// Bootstrap makes want the valid credentials: it creates or updates the
// account, key and service it names, and records them as the operator's
// (chorus.OperatorCredentials). With want zero it generates a development
// account, key and default service on first start and returns the stored
// ones afterwards (StoredCredentials). created reports whether anything
// was generated or changed.
func (e *Engine) Bootstrap(ctx context.Context, want Credentials) (got Credentials, created bool, err error) {
	given := want != (Credentials{})
	if !given {
		got, err = e.storedCredentials(ctx)
		switch {
		case err == nil:
			// The stored ones, recorded below if the store only had them
			// guessed (a store from before they were recorded).
			want = got
		case errors.Is(err, ErrOperatorKeyGone):
			// Revoked (after a leak, say): a new main key for the same
			// account, never a new account beside the one with the data.
			want = got
			want.APIKeySID, want.APISecret = chorus.NewSID(chorus.PrefixAPIKey), chorus.NewSecret(32)
			e.log.Warn("the operator's API key was revoked: generated a new main key for the account", "account_sid", want.AccountSID, "api_key_sid", want.APIKeySID)
		case !isNotFound(err):
			return Credentials{}, false, fmt.Errorf("engine: bootstrap: %w", err)
		default:
			want = Credentials{
				AccountSID: chorus.NewSID(chorus.PrefixAccount),
				AuthToken:  chorus.NewSecret(32),
				APIKeySID:  chorus.NewSID(chorus.PrefixAPIKey),
				APISecret:  chorus.NewSecret(32),
				ServiceSID: chorus.NewSID(chorus.PrefixService),
			}
		}
	}
	if err := validCredentials(want); err != nil {
		return Credentials{}, false, err
	}
	now := e.now()
	var droppedSecondary, promoted, rotated bool
	err = e.update(ctx, SystemActor(), func(tx chorus.Tx, c *change) error {
		created, droppedSecondary, promoted, rotated = false, false, false, false
		acct, err := tx.Account(ctx, want.AccountSID)
		existed := err == nil
		switch {
		case isNotFound(err):
			acct = &chorus.Account{SID: want.AccountSID, FriendlyName: "Chorus account", DateCreated: now}
		case err != nil:
			return err
		}
		if given {
			if err := checkNotReplaced(ctx, tx, acct, want); err != nil {
				return err
			}
		}
		credsChanged := acct.AuthToken != want.AuthToken
		acct.AuthToken = want.AuthToken
		key, err := tx.APIKey(ctx, want.APIKeySID)
		switch {
		case isNotFound(err):
			key = &chorus.APIKey{SID: want.APIKeySID, FriendlyName: "Chorus key", DateCreated: now, DateUpdated: now}
		case err != nil:
			return err
		}
		keyChanged := key.Secret != want.APISecret || key.AccountSID != want.AccountSID || !key.Main
		rotated = existed && (credsChanged || keyChanged)
		// New operator credentials (a rotation, or the answer to a leak)
		// also end a secondary auth token, which whoever held the old
		// ones may have created. The same credentials at a restart keep
		// it: a rotation in progress survives the nodes' restarts.
		if (credsChanged || keyChanged) && acct.SecondaryAuthToken != "" {
			// TWILIO_AUTH_TOKEN naming the secondary promotes it.
			droppedSecondary = acct.SecondaryAuthToken != want.AuthToken
			promoted = !droppedSecondary
			acct.SecondaryAuthToken, acct.SecondaryDateCreated = "", zeroTime
			credsChanged = true
		}
		if credsChanged {
			created = true
			if err := tx.PutAccount(ctx, acct); err != nil {
				return err
			}
		}
		if keyChanged {
			// The operator's key is a main key: it may manage keys.
			key.Secret, key.AccountSID, key.Main = want.APISecret, want.AccountSID, true
			created = true
			if err := tx.PutAPIKey(ctx, key); err != nil {
				return err
			}
		}
		op := &chorus.OperatorCredentials{AccountSID: want.AccountSID, APIKeySID: want.APIKeySID, ServiceSID: want.ServiceSID}
		switch was, err := tx.OperatorCredentials(ctx); {
		case isNotFound(err) || (err == nil && *was != *op):
			if err := tx.PutOperatorCredentials(ctx, op); err != nil {
				return err
			}
		case err != nil:
			return err
		}
		if want.ServiceSID == "" {
			return nil
		}
		svc, err := tx.Service(ctx, want.ServiceSID)
		switch {
		case isNotFound(err):
			created = true
			// createdAt: services order by creation ("default" is the
			// oldest), so one created in the same millisecond must not tie.
			at := e.createdAt(now)
			return tx.PutService(ctx, &chorus.Service{
				SID: want.ServiceSID, AccountSID: want.AccountSID, FriendlyName: "Default Service",
				ReachabilityDebouncingWindow: 5000, DateCreated: at, DateUpdated: at,
			})
		case err != nil:
			return err
		case svc.AccountSID != want.AccountSID:
			return fmt.Errorf("service %s belongs to account %s, not %s", svc.SID, svc.AccountSID, want.AccountSID)
		}
		return nil
	})
	if err != nil {
		e.creds.drop()
		return Credentials{}, false, fmt.Errorf("engine: bootstrap: %w", err)
	}
	if created {
		e.credentialsChanged(ctx)
	}
	switch {
	case droppedSecondary:
		e.log.Warn("revoked the secondary auth token: the operator's credentials changed", "account_sid", want.AccountSID)
	case promoted:
		e.log.Info("the secondary auth token is the primary now: TWILIO_AUTH_TOKEN names it", "account_sid", want.AccountSID)
	}
	if rotated {
		e.warnStandardKeys(ctx, want.AccountSID)
	}
	return want, created, nil
}

// warnStandardKeys names, after the operator's credentials changed (a
// rotation, perhaps the answer to a leak), the standard API keys of the
// account, which stay valid: whoever held the old credentials may have
// created some through the Keys API. SIDs, names and dates only.
func (e *Engine) warnStandardKeys(ctx context.Context, accountSID string) {
	var keys []*chorus.APIKey
	if err := e.view(ctx, func(tx chorus.ReadTx) error {
		var err error
		keys, err = tx.APIKeys(ctx, accountSID)
		return err
	}); err != nil {
		e.log.Warn("the operator's credentials changed; could not list the standard API keys, which stay valid", "account_sid", accountSID, "err", err)
		return
	}
	// One group per key, named by its SID: a friendly name (which whoever
	// made the key chose) stays with its key.
	attrs := []any{"account_sid", accountSID}
	for _, k := range keys {
		if !k.Main {
			attrs = append(attrs, slog.Group(k.SID, "friendly_name", k.FriendlyName, "date_created", k.DateCreated.UTC().Format(time.RFC3339)))
		}
	}
	if len(attrs) == 2 {
		return
	}
	e.log.Warn("the operator's credentials changed; the standard API keys created through the Keys API stay valid: "+
		"if the old credentials leaked, revoke those you do not know (chorus admin keys revoke SK…)", attrs...)
}

// StaleCredentialsError is Bootstrap's refusal of given credentials that
// were replaced since they were in use: an auth token or API key secret
// replaced or dropped (a rotation through the API, or another node started
// with newer ones), or a revoked key. Applying them would undo the
// rotation for the whole cluster: bring back a retired, perhaps leaked,
// secret and revoke the new ones.
type StaleCredentialsError struct {
	Replaced []string // which: "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY", "TWILIO_API_SECRET"
}

func (e *StaleCredentialsError) Error() string {
	return fmt.Sprintf("the credentials given (%s) were replaced since: a rotation happened after they were set", strings.Join(e.Replaced, ", "))
}

// checkNotReplaced refuses want when its secrets or key were replaced
// since (StaleCredentialsError). acct is want's account as stored; a
// secret it holds now is current, whatever its past.
func checkNotReplaced(ctx context.Context, tx chorus.Tx, acct *chorus.Account, want Credentials) error {
	var replaced []string
	if want.AuthToken != acct.AuthToken && want.AuthToken != acct.SecondaryAuthToken {
		retired, err := tx.SecretRetired(ctx, want.AuthToken)
		if err != nil {
			return err
		}
		if retired {
			replaced = append(replaced, "TWILIO_AUTH_TOKEN")
		}
	}
	key, err := tx.APIKey(ctx, want.APIKeySID)
	switch {
	case isNotFound(err):
		revoked, err := tx.APIKeyRevoked(ctx, want.APIKeySID)
		if err != nil {
			return err
		}
		if revoked {
			replaced = append(replaced, "TWILIO_API_KEY")
		}
	case err != nil:
		return err
	case key.Secret != want.APISecret:
		retired, err := tx.SecretRetired(ctx, want.APISecret)
		if err != nil {
			return err
		}
		if retired {
			replaced = append(replaced, "TWILIO_API_SECRET")
		}
	}
	if len(replaced) > 0 {
		return &StaleCredentialsError{Replaced: replaced}
	}
	return nil
}

func validCredentials(c Credentials) error {
	switch {
	case !chorus.IsSID(chorus.PrefixAccount, c.AccountSID):
		return fmt.Errorf("engine: account SID %q: want AC followed by 32 lower-case hex digits", c.AccountSID)
	case !chorus.IsSID(chorus.PrefixAPIKey, c.APIKeySID):
		return fmt.Errorf("engine: API key SID %q: want SK followed by 32 lower-case hex digits", c.APIKeySID)
	case c.ServiceSID != "" && !chorus.IsSID(chorus.PrefixService, c.ServiceSID):
		return fmt.Errorf("engine: service SID %q: want IS followed by 32 lower-case hex digits", c.ServiceSID)
	case c.AuthToken == "" || c.APISecret == "":
		return fmt.Errorf("engine: auth token and API secret must not be empty")
	}
	return nil
}

// ErrOperatorKeyGone: the operator's account is there, but its recorded
// key was revoked and it has no other main key. Bootstrap gives it a new
// one; it is never a reason to make another operator account.
// StoredCredentials returns it with the rest of the credentials.
var ErrOperatorKeyGone = fmt.Errorf("the operator's API key was revoked (restart chorus serve to generate a new one): %w", chorus.ErrNotFound)

// storedCredentials returns the operator's credentials as the store
// records them (Bootstrap), with their secrets: the recorded key, or the
// account's oldest main key if that one was revoked (ErrOperatorKeyGone,
// with the rest filled in, if it has none); the recorded service, or the
// account's oldest if that one is gone. A store from before they were
// recorded names none: then they are the oldest account with a main key
// and that key (an imported account without a main key is a tenant's,
// never the operator's). ErrNotFound when there are none, or the account
// was revoked.
func (e *Engine) storedCredentials(ctx context.Context) (Credentials, error) {
	var c Credentials
	var keyGone bool
	err := e.view(ctx, func(tx chorus.ReadTx) error {
		op, err := tx.OperatorCredentials(ctx)
		switch {
		case isNotFound(err):
			if op, err = guessOperator(ctx, tx); err != nil {
				return err
			}
		case err != nil:
			return err
		}
		acct, err := tx.Account(ctx, op.AccountSID)
		if err != nil {
			return err
		}
		if acct.AuthToken == "" {
			return chorus.ErrNotFound
		}
		c = Credentials{AccountSID: acct.SID, AuthToken: acct.AuthToken}
		key, err := operatorKey(ctx, tx, acct.SID, op.APIKeySID)
		switch {
		case err != nil:
			return err
		case key == nil:
			keyGone = true
		default:
			c.APIKeySID, c.APISecret = key.SID, key.Secret
		}
		c.ServiceSID, err = operatorService(ctx, tx, acct.SID, op.ServiceSID)
		return err
	})
	if err == nil && keyGone {
		err = ErrOperatorKeyGone
	}
	return c, err
}

// operatorKey is the account's key sid, or, if it was revoked, the
// account's oldest main key; nil if it has none.
func operatorKey(ctx context.Context, tx chorus.ReadTx, account, sid string) (*chorus.APIKey, error) {
	switch key, err := tx.APIKey(ctx, sid); {
	case err == nil && key.AccountSID == account:
		return key, nil
	case err != nil && !isNotFound(err):
		return nil, err
	}
	return oldestMainKey(ctx, tx, account)
}

// oldestMainKey is the account's oldest main key; nil if it has none.
func oldestMainKey(ctx context.Context, tx chorus.ReadTx, account string) (*chorus.APIKey, error) {
	keys, err := tx.APIKeys(ctx, account)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if k.Main {
			return k, nil
		}
	}
	return nil, nil
}

// operatorService is the operator's service: sid, the one recorded, also
// when it was deleted (Bootstrap makes it anew: "default" never moves to
// another of the account's services, which tokens minted without a service
// were never meant to reach), unless another account holds it; with none
// recorded (a store from before they were), the account's oldest
// service; "" if it has none.
func operatorService(ctx context.Context, tx chorus.ReadTx, account, sid string) (string, error) {
	if sid != "" {
		switch svc, err := tx.Service(ctx, sid); {
		case err == nil && svc.AccountSID == account, isNotFound(err):
			return sid, nil
		case err != nil:
			return "", err
		}
	}
	svcs, err := tx.Services(ctx, account, chorus.ObjectQuery{Limit: 1})
	if err != nil || len(svcs) == 0 {
		return "", err
	}
	return svcs[0].SID, nil
}

// guessOperator finds the operator's credentials in a store that does not
// record them: the oldest account that was not revoked and has a main key,
// and its oldest main key (the service: see storedCredentials).
func guessOperator(ctx context.Context, tx chorus.ReadTx) (*chorus.OperatorCredentials, error) {
	accts, err := tx.Accounts(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range accts {
		if a.AuthToken == "" {
			continue
		}
		switch k, err := oldestMainKey(ctx, tx, a.SID); {
		case err != nil:
			return nil, err
		case k != nil:
			return &chorus.OperatorCredentials{AccountSID: a.SID, APIKeySID: k.SID}, nil
		}
	}
	return nil, chorus.ErrNotFound
}

// StoredCredentials returns the credentials Bootstrap generated or was
// given last, without creating anything (ErrNotFound when none).
func (e *Engine) StoredCredentials(ctx context.Context) (Credentials, error) {
	return e.storedCredentials(ctx)
}

// Authenticate checks REST Basic credentials (see AuthenticateCredential)
// and returns the account SID, or ErrAuthenticate.
func (e *Engine) Authenticate(ctx context.Context, username, password string) (accountSID string, err error) {
	c, err := e.AuthenticateCredential(ctx, username, password)
	return c.AccountSID, err
}

// APIKey returns an API key (access token verification); ErrNotFound when
// there is none.
func (e *Engine) APIKey(ctx context.Context, sid string) (*chorus.APIKey, error) {
	var k *chorus.APIKey
	err := e.view(ctx, func(tx chorus.ReadTx) (err error) {
		k, err = tx.APIKey(ctx, sid)
		return err
	})
	return k, err
}

// Account returns an account (webhook signing); ErrNotFound when there is
// none.
func (e *Engine) Account(ctx context.Context, sid string) (*chorus.Account, error) {
	var a *chorus.Account
	err := e.view(ctx, func(tx chorus.ReadTx) (err error) {
		a, err = tx.Account(ctx, sid)
		return err
	})
	return a, err
}

// CreateService creates a service in the account.
func (e *Engine) CreateService(ctx context.Context, accountSID string, p ServiceParams) (*chorus.Service, error) {
	if err := e.validServiceParams(p); err != nil {
		return nil, err
	}
	now := e.createdAt(e.now()) // after every service this process created: paging and "default" follow creation
	s := &chorus.Service{
		SID: chorus.NewSID(chorus.PrefixService), AccountSID: accountSID,
		ReachabilityDebouncingWindow: 5000, DateCreated: now, DateUpdated: now,
	}
	applyServiceParams(s, p)
	err := e.update(ctx, SystemActor(), func(tx chorus.Tx, c *change) error {
		return tx.PutService(ctx, s)
	})
	if err != nil {
		return nil, fmt.Errorf("engine: create service: %w", err)
	}
	return s, nil
}

func applyServiceParams(s *chorus.Service, p ServiceParams) {
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	setb := func(dst *bool, src *bool) {
		if src != nil {
			*dst = *src
		}
	}
	set(&s.UniqueName, p.UniqueName)
	set(&s.FriendlyName, p.FriendlyName)
	set(&s.WebhookURL, p.WebhookURL)
	setb(&s.WebhooksFromRestEnabled, p.WebhooksFromRestEnabled)
	setb(&s.ReachabilityWebhooksEnabled, p.ReachabilityWebhooksEnabled)
	setb(&s.ACLEnabled, p.ACLEnabled)
	setb(&s.ReachabilityDebouncingEnabled, p.ReachabilityDebouncingEnabled)
	if p.ReachabilityDebouncingWindow != nil {
		s.ReachabilityDebouncingWindow = *p.ReachabilityDebouncingWindow
	}
}

// Service returns the account's service by SID, or by the alias "default"
// (the operator's configured service in the operator's account; another
// account's oldest service). Another account's service is 54056 (403);
// a missing one 54050.
//
// Services named by SID come from the engine's cache (cache.go), which
// every change of a service on any node drops.
func (e *Engine) Service(ctx context.Context, accountSID, sid string) (*chorus.Service, error) {
	if sid != "default" {
		if !chorus.IsSID(chorus.PrefixService, sid) {
			return nil, chorus.ErrServiceNotFound
		}
		s, err := e.cachedService(ctx, sid)
		if err != nil {
			return nil, notFoundAs(err, chorus.ErrServiceNotFound)
		}
		if s.AccountSID != accountSID {
			return nil, chorus.ErrServiceAccount
		}
		return s, nil
	}
	var s *chorus.Service
	err := e.view(ctx, func(tx chorus.ReadTx) (err error) {
		s, err = serviceIn(ctx, tx, accountSID, sid)
		return err
	})
	return s, err
}

// ForgetServices drops the cached services. A caller that heard of a
// change of a service (a gateway handling chorus.EventServiceChanged)
// calls it before it reads the service, which then reflects the change
// whether or not the engine heard of it yet.
func (e *Engine) ForgetServices() { e.services.drop() }

func serviceIn(ctx context.Context, tx chorus.ReadTx, accountSID, sid string) (*chorus.Service, error) {
	if sid == "default" {
		// The operator's account: the service it was configured with
		// (TWILIO_SYNC_SERVICE_SID, or the one generated), and no other.
		// Once it is deleted, "default" names nothing until a node starts
		// again (and makes it anew): tokens minted without a service
		// moved to whichever service of the account was the oldest then,
		// which the operator never meant them to reach.
		switch op, err := tx.OperatorCredentials(ctx); {
		case err == nil && op.AccountSID == accountSID && op.ServiceSID != "":
			s, err := tx.Service(ctx, op.ServiceSID)
			if err != nil {
				return nil, notFoundAs(err, chorus.ErrServiceNotFound)
			}
			return s, nil
		case err != nil && !isNotFound(err):
			return nil, err
		}
		svcs, err := tx.Services(ctx, accountSID, chorus.ObjectQuery{Limit: 1})
		if err != nil {
			return nil, err
		}
		if len(svcs) == 0 {
			return nil, chorus.ErrServiceNotFound
		}
		return svcs[0], nil
	}
	if !chorus.IsSID(chorus.PrefixService, sid) {
		return nil, chorus.ErrServiceNotFound
	}
	s, err := tx.Service(ctx, sid)
	if err != nil {
		return nil, notFoundAs(err, chorus.ErrServiceNotFound)
	}
	if s.AccountSID != accountSID {
		return nil, chorus.ErrServiceAccount
	}
	return s, nil
}

// Services pages the account's services.
func (e *Engine) Services(ctx context.Context, accountSID string, p PageRequest) (Page[*chorus.Service], error) {
	size, after, backward, err := pageStart(p, "services")
	if err != nil {
		return Page[*chorus.Service]{}, err
	}
	var page Page[*chorus.Service]
	err = e.view(ctx, func(tx chorus.ReadTx) (err error) {
		ks := keyset[*chorus.Service, chorus.Cursor]{
			fetch: func(after chorus.Cursor, backward bool, limit int) ([]*chorus.Service, error) {
				return tx.Services(ctx, accountSID, chorus.ObjectQuery{After: after, Backward: backward, Limit: limit})
			},
			key: func(s *chorus.Service) chorus.Cursor {
				return chorus.Cursor{DateCreated: s.DateCreated, SID: s.SID}
			},
			token: cursorTokens("services"),
		}
		page, err = ks.page(size, after, backward, p.Token != "")
		return err
	})
	if err != nil {
		return Page[*chorus.Service]{}, err
	}
	return page, nil
}

// UpdateService updates a service.
func (e *Engine) UpdateService(ctx context.Context, accountSID, sid string, p ServiceParams) (*chorus.Service, error) {
	if err := e.validServiceParams(p); err != nil {
		return nil, err
	}
	p.UniqueName = nil // read-only after creation
	var s *chorus.Service
	err := e.update(ctx, SystemActor(), func(tx chorus.Tx, c *change) (err error) {
		s, err = serviceIn(ctx, tx, accountSID, sid)
		if err != nil {
			return err
		}
		applyServiceParams(s, p)
		s.DateUpdated = c.now
		return tx.PutService(ctx, s)
	})
	if err != nil {
		e.services.drop() // a failed commit may still have committed
		return nil, err
	}
	// Engines drop their cached copy; gateways refresh their sessions'
	// copy of the service (the ACL switch) and, with ACLs on, re-check
	// their subscriptions.
	e.serviceChanged(ctx, s)
	return s, nil
}

// DeleteService deletes a service and everything in it.
func (e *Engine) DeleteService(ctx context.Context, accountSID, sid string) error {
	// The webhooks still pending, deleted with the service, for the log:
	// counted in a read beforehand, not in the write (the count reads the
	// whole outbox, which would hold every other write back).
	pending := map[string]int{}
	_ = e.view(ctx, func(tx chorus.ReadTx) error {
		backlog, err := tx.OutboxBacklog(ctx)
		for _, b := range backlog {
			pending[b.ServiceSID] = b.Pending
		}
		return err
	})
	var s *chorus.Service
	err := e.update(ctx, SystemActor(), func(tx chorus.Tx, c *change) (err error) {
		s, err = serviceIn(ctx, tx, accountSID, sid)
		if err != nil {
			return err
		}
		return tx.DeleteService(ctx, s.SID)
	})
	if err != nil {
		e.services.drop() // a failed commit may still have committed
		return err
	}
	if n := pending[s.SID]; n > 0 {
		e.log.Warn("deleted a service with webhooks pending: they are dropped, never sent",
			"account_sid", accountSID, "service_sid", s.SID, "webhooks", n)
	}
	e.serviceChanged(ctx, s)
	return nil
}
