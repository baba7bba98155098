package engine_test

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/logtest"
)

func TestAPIKeys(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	acct := engine.Credential{AccountSID: f.creds.AccountSID, SID: f.creds.AccountSID, Main: true}

	main, err := f.eng.AuthenticateCredential(ctx, f.creds.APIKeySID, f.creds.APISecret)
	if err != nil || !main.Main {
		t.Fatalf("the bootstrap key authenticates as %+v, %v; want a main key", main, err)
	}
	f.clock.Advance(time.Second) // keys list in creation order
	k, err := f.eng.CreateAPIKey(ctx, main, "backend")
	if err != nil || len(k.Secret) != engine.MinSecretLen || k.Main || k.FriendlyName != "backend" {
		t.Fatalf("CreateAPIKey = %+v, %v", k, err)
	}
	std, err := f.eng.AuthenticateCredential(ctx, k.SID, k.Secret)
	if err != nil || std.Main || std.AccountSID != f.creds.AccountSID {
		t.Fatalf("the new key authenticates as %+v, %v; want a standard key of the account", std, err)
	}

	// A standard key may not manage keys.
	if _, err := f.eng.CreateAPIKey(ctx, std, "x"); chorus.ErrorCode(err) != 20003 || chorus.AsError(err).Status != 403 {
		t.Errorf("CreateAPIKey as a standard key = %v, want 403 20003", err)
	}
	if err := f.eng.DeleteAPIKey(ctx, std, f.creds.APIKeySID); chorus.ErrorCode(err) != 20003 {
		t.Errorf("DeleteAPIKey as a standard key = %v, want 20003", err)
	}
	for _, bad := range []string{strings.Repeat("x", 65), "nul\x00", "\xff"} {
		if _, err := f.eng.CreateAPIKey(ctx, acct, bad); chorus.ErrorCode(err) != chorus.ErrInvalidFriendly.Code {
			t.Errorf("CreateAPIKey(name %q) = %v, want 54053", bad, err)
		}
	}

	keys, err := f.eng.APIKeys(ctx, acct)
	if err != nil || len(keys) != 2 || keys[0].SID != f.creds.APIKeySID || keys[1].SID != k.SID {
		t.Fatalf("APIKeys = %v, %v", keys, err)
	}
	name := "renamed"
	f.clock.Advance(time.Minute)
	up, err := f.eng.UpdateAPIKey(ctx, acct, k.SID, &name)
	if err != nil || up.FriendlyName != name || !up.DateUpdated.After(up.DateCreated) {
		t.Fatalf("UpdateAPIKey = %+v, %v", up, err)
	}

	// Another account sees none of them.
	other := engine.Credential{AccountSID: chorus.NewSID(chorus.PrefixAccount), Main: true}
	if _, err := f.eng.FetchAPIKey(ctx, other, k.SID); chorus.ErrorCode(err) != 20404 {
		t.Errorf("FetchAPIKey of another account's key = %v, want 20404", err)
	}
	if err := f.eng.DeleteAPIKey(ctx, other, k.SID); chorus.ErrorCode(err) != 20404 {
		t.Errorf("DeleteAPIKey of another account's key = %v, want 20404", err)
	}

	// Deleted: no more REST, no more tokens, at once.
	if err := f.eng.DeleteAPIKey(ctx, acct, k.SID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.AuthenticateCredential(ctx, k.SID, k.Secret); chorus.ErrorCode(err) != 20003 {
		t.Errorf("a deleted key authenticates: %v", err)
	}
	if _, err := f.eng.APIKey(ctx, k.SID); !errors.Is(err, chorus.ErrNotFound) {
		t.Errorf("APIKey(deleted) = %v, want not found", err)
	}
	if err := f.eng.DeleteAPIKey(ctx, acct, k.SID); chorus.ErrorCode(err) != 20404 {
		t.Errorf("DeleteAPIKey twice = %v, want 20404", err)
	}
}

func TestAuthTokenRotation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c, err := f.eng.AuthenticateCredential(ctx, f.creds.AccountSID, f.creds.AuthToken)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.eng.DeleteSecondaryAuthToken(ctx, c); chorus.ErrorCode(err) != 20404 {
		t.Errorf("DeleteSecondaryAuthToken without one = %v, want 20404", err)
	}
	if _, err := f.eng.PromoteSecondaryAuthToken(ctx, c); chorus.ErrorCode(err) != 20404 {
		t.Errorf("PromoteSecondaryAuthToken without one = %v, want 20404", err)
	}
	a, err := f.eng.CreateSecondaryAuthToken(ctx, c)
	if err != nil || len(a.SecondaryAuthToken) != engine.MinSecretLen {
		t.Fatalf("CreateSecondaryAuthToken = %+v, %v", a, err)
	}
	second := a.SecondaryAuthToken
	// Both authenticate meanwhile.
	for _, tok := range []string{f.creds.AuthToken, second} {
		if _, err := f.eng.Authenticate(ctx, f.creds.AccountSID, tok); err != nil {
			t.Errorf("Authenticate during rotation = %v", err)
		}
	}
	// A session opened with the old primary ends with the promotion; one
	// opened with the secondary lives on.
	oldSess, _, _, err := f.eng.NewConsoleSession(ctx, f.creds.AccountSID, f.creds.AuthToken)
	if err != nil {
		t.Fatal(err)
	}
	newSess, _, _, err := f.eng.NewConsoleSession(ctx, f.creds.AccountSID, second)
	if err != nil {
		t.Fatal(err)
	}
	p, err := f.eng.PromoteSecondaryAuthToken(ctx, c)
	if err != nil || p.AuthToken != second || p.SecondaryAuthToken != "" {
		t.Fatalf("PromoteSecondaryAuthToken = %+v, %v", p, err)
	}
	if _, err := f.eng.Authenticate(ctx, f.creds.AccountSID, f.creds.AuthToken); chorus.ErrorCode(err) != 20003 {
		t.Errorf("the old primary still authenticates: %v", err)
	}
	if acct, err := f.eng.Account(ctx, f.creds.AccountSID); err != nil || acct.AuthToken != second {
		t.Errorf("webhooks sign with %v, %v; want the promoted token", acct, err)
	}
	if _, err := f.eng.AuthenticateSession(ctx, oldSess); chorus.ErrorCode(err) != 20003 {
		t.Errorf("a session of the old primary = %v, want 20003", err)
	}
	if _, err := f.eng.AuthenticateSession(ctx, newSess); err != nil {
		t.Errorf("a session of the promoted token = %v", err)
	}

	// A secondary can also just be dropped.
	if _, err := f.eng.CreateSecondaryAuthToken(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := f.eng.DeleteSecondaryAuthToken(ctx, c); err != nil {
		t.Fatal(err)
	}
	if acct, _ := f.eng.Account(ctx, f.creds.AccountSID); acct.SecondaryAuthToken != "" || acct.AuthToken != second {
		t.Errorf("after deleting the secondary: %+v", acct)
	}
}

func TestConsoleSession(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tok, c, exp, err := f.eng.NewConsoleSession(ctx, f.creds.APIKeySID, f.creds.APISecret)
	if err != nil || c.SID != f.creds.APIKeySID || exp.Sub(f.clock.Now()) > engine.ConsoleSessionTTL {
		t.Fatalf("NewConsoleSession = %q %+v %v %v", tok, c, exp, err)
	}
	if _, _, _, err := f.eng.NewConsoleSession(ctx, f.creds.APIKeySID, "wrong"); chorus.ErrorCode(err) != 20003 {
		t.Errorf("NewConsoleSession(wrong secret) = %v", err)
	}
	got, err := f.eng.AuthenticateHeader(ctx, "Bearer "+tok)
	if err != nil || got != c {
		t.Fatalf("AuthenticateHeader(session) = %+v, %v, want %+v", got, err, c)
	}
	if want := time.Unix(f.clock.Now().Unix(), 0).Add(engine.ConsoleSessionMaxAge); !got.SessionEnd.Equal(want) {
		t.Errorf("session's end = %v, want its sign-in + %v = %v", got.SessionEnd, engine.ConsoleSessionMaxAge, want)
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(f.creds.AccountSID+":"+f.creds.AuthToken))
	if got, err := f.eng.AuthenticateHeader(ctx, basic); err != nil || got.SID != f.creds.AccountSID {
		t.Errorf("AuthenticateHeader(Basic) = %+v, %v", got, err)
	}
	// Tampering, garbage and access tokens are refused.
	for _, bad := range []string{"Bearer " + tok[:len(tok)-2] + "AA", "Bearer chorus-session.x.y", "Bearer eyJ.a.b", "Token x", "Basic !!!", ""} {
		if _, err := f.eng.AuthenticateHeader(ctx, bad); chorus.ErrorCode(err) != 20003 {
			t.Errorf("AuthenticateHeader(%q) = %v, want 20003", bad, err)
		}
	}
	// Renewal gives a later expiry; expiry ends the session.
	f.clock.Advance(engine.ConsoleSessionTTL - time.Second)
	tok2, _, exp2, err := f.eng.RenewConsoleSession(ctx, tok)
	if err != nil || !exp2.After(exp) {
		t.Fatalf("RenewConsoleSession = %v %v", exp2, err)
	}
	f.clock.Advance(2 * time.Second)
	if _, err := f.eng.AuthenticateSession(ctx, tok); chorus.ErrorCode(err) != 20003 {
		t.Errorf("an expired session = %v, want 20003", err)
	}
	if _, err := f.eng.AuthenticateSession(ctx, tok2); err != nil {
		t.Errorf("the renewed session = %v", err)
	}
}

func TestRevokeOthers(t *testing.T) {
	f := newFixture(t) // generated development credentials
	ctx := context.Background()
	dev := f.creds
	acct := engine.Credential{AccountSID: dev.AccountSID, SID: dev.AccountSID, Main: true}
	devStd, err := f.eng.CreateAPIKey(ctx, acct, "dev backend")
	if err != nil {
		t.Fatal(err)
	}

	// The operator starts with its own credentials.
	op := engine.Credentials{
		AccountSID: chorus.NewSID(chorus.PrefixAccount), AuthToken: chorus.NewSecret(32),
		APIKeySID: chorus.NewSID(chorus.PrefixAPIKey), APISecret: chorus.NewSecret(32), ServiceSID: chorus.NewSID(chorus.PrefixService),
	}
	if _, _, err := f.eng.Bootstrap(ctx, op); err != nil {
		t.Fatal(err)
	}
	opAcct := engine.Credential{AccountSID: op.AccountSID, SID: op.AccountSID, Main: true}
	opStd, err := f.eng.CreateAPIKey(ctx, opAcct, "backend")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.CreateSecondaryAuthToken(ctx, opAcct); err != nil {
		t.Fatal(err)
	}
	r, err := f.eng.RevokeOthers(ctx, op)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Accounts) != 1 || r.Accounts[0] != dev.AccountSID || len(r.APIKeys) != 2 {
		t.Fatalf("RevokeOthers = %+v, want the dev account and its two keys", r)
	}
	for _, pair := range [][2]string{{dev.AccountSID, dev.AuthToken}, {dev.APIKeySID, dev.APISecret}, {devStd.SID, devStd.Secret}} {
		if _, err := f.eng.AuthenticateCredential(ctx, pair[0], pair[1]); chorus.ErrorCode(err) != 20003 {
			t.Errorf("revoked %s still authenticates: %v", pair[0], err)
		}
	}
	for _, pair := range [][2]string{{op.AccountSID, op.AuthToken}, {op.APIKeySID, op.APISecret}, {opStd.SID, opStd.Secret}} {
		if _, err := f.eng.AuthenticateCredential(ctx, pair[0], pair[1]); err != nil {
			t.Errorf("%s no longer authenticates: %v", pair[0], err)
		}
	}
	// A rotation in progress survives a restart with the same credentials.
	sec, err := f.eng.Account(ctx, op.AccountSID)
	if err != nil || sec.SecondaryAuthToken == "" {
		t.Fatalf("the operator's secondary auth token did not survive a restart with the same credentials: %+v, %v", sec, err)
	}
	if _, _, err := f.eng.Bootstrap(ctx, op); err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.AuthenticateCredential(ctx, op.AccountSID, sec.SecondaryAuthToken); err != nil {
		t.Errorf("the secondary auth token no longer authenticates after Bootstrap with the same credentials: %v", err)
	}
	// The stored credentials are the operator's now.
	if got, err := f.eng.StoredCredentials(ctx); err != nil || got.AccountSID != op.AccountSID || got.APIKeySID != op.APIKeySID {
		t.Errorf("StoredCredentials = %+v, %v, want the operator's", got, err)
	}
	// A second run revokes nothing more.
	if r, err := f.eng.RevokeOthers(ctx, op); err != nil || len(r.Accounts)+len(r.APIKeys) != 0 {
		t.Errorf("RevokeOthers again = %+v, %v", r, err)
	}
}

// New operator credentials (a rotation of TWILIO_AUTH_TOKEN or of the
// main key, as after a leak) end a secondary auth token that whoever held
// the old ones may have created; the same credentials keep it.
func TestBootstrapNewCredentialsDropSecondary(t *testing.T) {
	for _, change := range []string{"auth token", "key secret", "key", "auth token = the secondary"} {
		t.Run(change, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			op := engine.Credentials{
				AccountSID: chorus.NewSID(chorus.PrefixAccount), AuthToken: chorus.NewSecret(32),
				APIKeySID: chorus.NewSID(chorus.PrefixAPIKey), APISecret: chorus.NewSecret(32), ServiceSID: chorus.NewSID(chorus.PrefixService),
			}
			if _, _, err := f.eng.Bootstrap(ctx, op); err != nil {
				t.Fatal(err)
			}
			a, err := f.eng.CreateSecondaryAuthToken(ctx, engine.Credential{AccountSID: op.AccountSID, SID: op.AccountSID, Main: true})
			if err != nil {
				t.Fatal(err)
			}
			next := op
			switch change {
			case "auth token":
				next.AuthToken = chorus.NewSecret(32)
			case "key secret":
				next.APISecret = chorus.NewSecret(32)
			case "key":
				next.APIKeySID = chorus.NewSID(chorus.PrefixAPIKey)
			case "auth token = the secondary": // promoted through the environment
				next.AuthToken = a.SecondaryAuthToken
			}
			if _, _, err := f.eng.Bootstrap(ctx, next); err != nil {
				t.Fatal(err)
			}
			if next.AuthToken == a.SecondaryAuthToken {
				if _, err := f.eng.AuthenticateCredential(ctx, op.AccountSID, op.AuthToken); chorus.ErrorCode(err) != 20003 {
					t.Errorf("the old primary still authenticates after the promotion: %v", err)
				}
				if acct, err := f.eng.Account(ctx, op.AccountSID); err != nil || acct.SecondaryAuthToken != "" || acct.AuthToken != a.SecondaryAuthToken {
					t.Errorf("after the promotion the account is %+v, %v", acct, err)
				}
				return
			}
			if _, err := f.eng.AuthenticateCredential(ctx, op.AccountSID, a.SecondaryAuthToken); chorus.ErrorCode(err) != 20003 {
				t.Errorf("after a new %s the secondary auth token still authenticates: %v", change, err)
			}
			if _, err := f.eng.AuthenticateCredential(ctx, next.AccountSID, next.AuthToken); err != nil {
				t.Errorf("the operator's auth token: %v", err)
			}
		})
	}
}

// TestAuthTokenMark: an access token minted through the admin API with
// the auth token (by a console session opened with it: its TokenSuffix)
// carries its mark, valid while the account has that auth token, primary
// or secondary, and not after. Only the exact minted form counts: a jti of
// a backend's own choosing is never taken for one; a session opened with
// an API key marks nothing (its key signs the tokens).
func TestAuthTokenMark(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	acct := f.creds.AccountSID
	c := engine.Credential{AccountSID: acct, SID: acct, Main: true}
	secret := f.creds.APISecret // of the key that signs the tokens
	suffixOf := func(user, pass string) string {
		t.Helper()
		sess, _, _, err := f.eng.NewConsoleSession(ctx, user, pass)
		if err != nil {
			t.Fatal(err)
		}
		cred, err := f.eng.AuthenticateSession(ctx, sess)
		if err != nil {
			t.Fatal(err)
		}
		if cred.AuthToken() == "" {
			return ""
		}
		return engine.AuthTokenSuffix(cred.AuthToken(), secret)
	}
	if s := suffixOf(f.creds.APIKeySID, f.creds.APISecret); s != "" {
		t.Errorf("a session opened with an API key marks its tokens %q, want nothing", s)
	}
	iat := time.Unix(1700000000, 0)
	key := f.creds.APIKeySID
	minted := func(suffix string) string { return key + "-1700000000" + suffix }
	byPrimary := engine.AuthTokenMark(minted(suffixOf(acct, f.creds.AuthToken)), key, iat)
	if byPrimary == "" || suffixOf(acct, f.creds.AuthToken) != engine.AuthTokenSuffix(f.creds.AuthToken, secret) {
		t.Fatalf("no mark in a token of the primary's session")
	}
	if engine.AuthTokenSuffix(f.creds.AuthToken, "another key's secret") == engine.AuthTokenSuffix(f.creds.AuthToken, secret) {
		t.Error("the mark does not depend on the signing key's secret: a token's holder could test guesses of the auth token")
	}
	valid := func(mark string) bool {
		t.Helper()
		cached, err := f.eng.AuthTokenMarkValid(ctx, acct, mark, secret)
		marks, err2 := f.eng.AuthTokenMarks(ctx, acct, secret)
		if err != nil || err2 != nil || (mark != "" && cached != slices.Contains(marks, mark)) {
			t.Fatalf("AuthTokenMarkValid(%q) = %v, %v; AuthTokenMarks = %v, %v", mark, cached, err, marks, err2)
		}
		return cached
	}
	if !valid(byPrimary) || !valid("") {
		t.Fatal("a token of the primary's session, or an unmarked one, is not valid")
	}
	for _, jti := range []string{key + "-1700000000", key + "-1700000000-console-", key + "-1700000000-console-zz3456789abcdef0",
		key + "-1700000000-console-0123456789abcdef0", "myapp-console-0123456789abcdef", key + "-1700000001-console-0123456789abcdef",
		"SK00000000000000000000000000000000-1700000000-console-0123456789abcdef", key + "-1700000000-console-0123456789abcdef-quickstart"} {
		if m := engine.AuthTokenMark(jti, key, iat); m != "" {
			t.Errorf("jti %q signed by %s at %d has the mark %q: only the minted form counts", jti, key, iat.Unix(), m)
		}
	}
	if valid("0123456789abcdef") {
		t.Error("a mark of no auth token of the account is valid")
	}
	if ok, err := f.eng.AuthTokenMarkValid(ctx, "AC00000000000000000000000000000000", byPrimary, secret); ok || err != nil {
		t.Errorf("a mark of another (unknown) account = %v, %v; want refused", ok, err)
	}

	sec, err := f.eng.CreateSecondaryAuthToken(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	bySecondary := engine.AuthTokenMark(minted(suffixOf(acct, sec.SecondaryAuthToken)), key, iat)
	if !valid(bySecondary) || !valid(byPrimary) {
		t.Fatal("tokens of both auth tokens' sessions must be valid during a rotation")
	}
	if _, err := f.eng.PromoteSecondaryAuthToken(ctx, c); err != nil {
		t.Fatal(err)
	}
	if valid(byPrimary) {
		t.Error("a token of the old primary's session is valid after the promotion")
	}
	if !valid(bySecondary) {
		t.Error("a token of the promoted token's session is refused")
	}
}

// TestBootstrapNamesStandardKeysAfterRotation: new operator credentials
// (the answer to a leak) leave the standard keys created through the Keys
// API valid, as documented; the start now names them in a warning, which
// it did not, so that an operator does not keep a key whoever held the old
// credentials made. The same credentials at a restart warn of nothing, nor
// does a first start; secrets are never logged.
func TestBootstrapNamesStandardKeysAfterRotation(t *testing.T) {
	var logs logtest.Buffer
	eng := engine.New(engine.Config{Store: openSQLite(t), Bus: mem.New(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := context.Background()
	op := engine.Credentials{
		AccountSID: chorus.NewSID(chorus.PrefixAccount), AuthToken: chorus.NewSecret(32),
		APIKeySID: chorus.NewSID(chorus.PrefixAPIKey), APISecret: chorus.NewSecret(32), ServiceSID: chorus.NewSID(chorus.PrefixService),
	}
	if _, _, err := eng.Bootstrap(ctx, op); err != nil {
		t.Fatal(err)
	}
	k, err := eng.CreateAPIKey(ctx, engine.Credential{AccountSID: op.AccountSID, SID: op.AccountSID, Main: true}, "backdoor")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := eng.Bootstrap(ctx, op); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), k.SID) {
		t.Errorf("a restart with the same credentials named the standard key: %s", logs.String())
	}
	next := op
	next.AuthToken = chorus.NewSecret(32)
	if _, _, err := eng.Bootstrap(ctx, next); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, k.SID) || !strings.Contains(out, "backdoor") {
		t.Errorf("after new credentials, the log does not name standard key %s: %s", k.SID, out)
	}
	for _, secret := range []string{k.Secret, op.AuthToken, next.AuthToken, op.APISecret} {
		if strings.Contains(out, secret) {
			t.Error("a secret is in the log")
		}
	}
	if _, err := eng.AuthenticateCredential(ctx, k.SID, k.Secret); err != nil {
		t.Errorf("the standard key no longer authenticates (documented to stay): %v", err)
	}
}
