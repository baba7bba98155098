package storetest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

func testPing(t *testing.T, s chorus.Store) {
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping() = %v, want nil", err)
	}
}

func testAccounts(t *testing.T, s chorus.Store) {
	a1, a2, a3 := newAccount(3), newAccount(1), newAccount(2)
	update(t, s, func(tx chorus.Tx) error {
		for _, a := range []*chorus.Account{a1, a2, a3} {
			if err := tx.PutAccount(context.Background(), a); err != nil {
				return err
			}
		}
		return nil
	})
	got := mustGet(t, s, "Account", func(ctx context.Context, tx chorus.ReadTx) (*chorus.Account, error) {
		return tx.Account(ctx, a1.SID)
	})
	checkEqual(t, "Account(a1)", got, a1)

	all := mustGet(t, s, "Accounts", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Account, error) {
		return tx.Accounts(ctx)
	})
	checkList(t, "Accounts()", all, []*chorus.Account{a2, a3, a1})

	_, err := get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Account, error) {
		return tx.Account(ctx, chorus.NewSID(chorus.PrefixAccount))
	})
	wantNotFound(t, "Account(missing)", err)

	// Put replaces.
	a1b := *a1
	a1b.AuthToken, a1b.FriendlyName = "new-token", "renamed"
	a1b.SecondaryAuthToken, a1b.SecondaryDateCreated = "second-token", at(time.Minute)
	update(t, s, func(tx chorus.Tx) error { return tx.PutAccount(context.Background(), &a1b) })
	got = mustGet(t, s, "Account", func(ctx context.Context, tx chorus.ReadTx) (*chorus.Account, error) {
		return tx.Account(ctx, a1.SID)
	})
	checkEqual(t, "Account(a1) after replace", got, &a1b)

	// The secondary token is dropped again (promotion or deletion).
	a1c := a1b
	a1c.SecondaryAuthToken, a1c.SecondaryDateCreated = "", time.Time{}
	update(t, s, func(tx chorus.Tx) error { return tx.PutAccount(context.Background(), &a1c) })
	got = mustGet(t, s, "Account", func(ctx context.Context, tx chorus.ReadTx) (*chorus.Account, error) {
		return tx.Account(ctx, a1.SID)
	})
	checkEqual(t, "Account(a1) without secondary", got, &a1c)
}

func testAPIKeys(t *testing.T, s chorus.Store) {
	acc, other := newAccount(0), newAccount(1)
	mk := func(a *chorus.Account, i int, created time.Time) *chorus.APIKey {
		return &chorus.APIKey{
			SID:          chorus.NewSID(chorus.PrefixAPIKey),
			AccountSID:   a.SID,
			Secret:       chorus.NewSecret(32),
			FriendlyName: fmt.Sprintf("key %d", i),
			Main:         i%2 == 1,
			DateCreated:  created,
			DateUpdated:  created.Add(time.Duration(i) * time.Second),
		}
	}
	k1, k2, k3 := mk(acc, 1, at(time.Hour)), mk(acc, 2, at(0)), mk(acc, 3, at(0))
	ko := mk(other, 4, at(0))
	update(t, s, func(tx chorus.Tx) error {
		ctx := context.Background()
		for _, a := range []*chorus.Account{acc, other} {
			if err := tx.PutAccount(ctx, a); err != nil {
				return err
			}
		}
		for _, k := range []*chorus.APIKey{k1, k2, k3, ko} {
			if err := tx.PutAPIKey(ctx, k); err != nil {
				return err
			}
		}
		return nil
	})
	got := mustGet(t, s, "APIKey", func(ctx context.Context, tx chorus.ReadTx) (*chorus.APIKey, error) {
		return tx.APIKey(ctx, k1.SID)
	})
	checkEqual(t, "APIKey(k1)", got, k1)

	// Put replaces the name, flag and update time.
	k3b := *k3
	k3b.FriendlyName, k3b.Main, k3b.DateUpdated = "renamed", true, at(2*time.Hour)
	update(t, s, func(tx chorus.Tx) error { return tx.PutAPIKey(context.Background(), &k3b) })
	got = mustGet(t, s, "APIKey", func(ctx context.Context, tx chorus.ReadTx) (*chorus.APIKey, error) {
		return tx.APIKey(ctx, k3.SID)
	})
	checkEqual(t, "APIKey(k3) after replace", got, &k3b)
	k3 = &k3b

	// Ordered by (DateCreated, SID): k2 and k3 share a time.
	want := []*chorus.APIKey{k2, k3}
	sort.Slice(want, func(i, j int) bool { return want[i].SID < want[j].SID })
	want = append(want, k1)
	keys := mustGet(t, s, "APIKeys", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.APIKey, error) {
		return tx.APIKeys(ctx, acc.SID)
	})
	checkList(t, "APIKeys(acc)", keys, want)

	revoked := func(sid string) bool {
		t.Helper()
		return mustGet(t, s, "APIKeyRevoked", func(ctx context.Context, tx chorus.ReadTx) (bool, error) {
			return tx.APIKeyRevoked(ctx, sid)
		})
	}
	if revoked(k2.SID) || revoked(k3.SID) {
		t.Errorf("APIKeyRevoked = true for a key never deleted")
	}
	update(t, s, func(tx chorus.Tx) error { return tx.DeleteAPIKey(context.Background(), k2.SID) })
	_, err := get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.APIKey, error) {
		return tx.APIKey(ctx, k2.SID)
	})
	wantNotFound(t, "APIKey(deleted)", err)
	if !revoked(k2.SID) || revoked(k3.SID) {
		t.Errorf("APIKeyRevoked(deleted, kept) = %v, %v; want true, false", revoked(k2.SID), revoked(k3.SID))
	}
	keys = mustGet(t, s, "APIKeys", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.APIKey, error) {
		return tx.APIKeys(ctx, acc.SID)
	})
	checkList(t, "APIKeys(acc) after delete", keys, []*chorus.APIKey{k3, k1})

	err = s.Update(context.Background(), func(tx chorus.Tx) error {
		return tx.DeleteAPIKey(context.Background(), k2.SID)
	})
	wantNotFound(t, "DeleteAPIKey(deleted)", err)
}

// testOperatorCredentials: none in a new store, the last put wins, a
// rollback keeps the previous ones.
func testOperatorCredentials(t *testing.T, s chorus.Store) {
	read := func() (*chorus.OperatorCredentials, error) {
		t.Helper()
		return get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.OperatorCredentials, error) {
			return tx.OperatorCredentials(ctx)
		})
	}
	_, err := read()
	wantNotFound(t, "OperatorCredentials(new store)", err)
	first := &chorus.OperatorCredentials{AccountSID: chorus.NewSID(chorus.PrefixAccount), APIKeySID: chorus.NewSID(chorus.PrefixAPIKey)}
	second := &chorus.OperatorCredentials{AccountSID: chorus.NewSID(chorus.PrefixAccount), APIKeySID: chorus.NewSID(chorus.PrefixAPIKey),
		ServiceSID: chorus.NewSID(chorus.PrefixService)}
	for _, want := range []*chorus.OperatorCredentials{first, second} {
		update(t, s, func(tx chorus.Tx) error { return tx.PutOperatorCredentials(context.Background(), want) })
		if got, err := read(); err != nil || *got != *want {
			t.Errorf("OperatorCredentials = %+v, %v; want %+v", got, err, want)
		}
	}
	errRollback := errors.New("rollback")
	err = s.Update(context.Background(), func(tx chorus.Tx) error {
		if err := tx.PutOperatorCredentials(context.Background(), first); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Update = %v, want the rollback", err)
	}
	if got, err := read(); err != nil || *got != *second {
		t.Errorf("after a rollback: %+v, %v; want %+v", got, err, second)
	}
}

func testServices(t *testing.T, s chorus.Store) {
	f := setup(t, s)
	svc := &chorus.Service{
		SID:                           chorus.NewSID(chorus.PrefixService),
		AccountSID:                    f.acc.SID,
		UniqueName:                    "my-service",
		FriendlyName:                  "My Service",
		WebhookURL:                    "https://example.com/hook?a=1&b=2",
		WebhooksFromRestEnabled:       true,
		ReachabilityWebhooksEnabled:   true,
		ACLEnabled:                    true,
		ReachabilityDebouncingEnabled: true,
		ReachabilityDebouncingWindow:  5000,
		DateCreated:                   at(time.Second),
		DateUpdated:                   at(2 * time.Second),
	}
	update(t, s, func(tx chorus.Tx) error { return tx.PutService(context.Background(), svc) })
	got := mustGet(t, s, "Service", func(ctx context.Context, tx chorus.ReadTx) (*chorus.Service, error) {
		return tx.Service(ctx, svc.SID)
	})
	checkEqual(t, "Service(all fields set)", got, svc)

	got = mustGet(t, s, "Service", func(ctx context.Context, tx chorus.ReadTx) (*chorus.Service, error) {
		return tx.Service(ctx, f.svc.SID)
	})
	checkEqual(t, "Service(zero fields)", got, f.svc)

	_, err := get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Service, error) {
		return tx.Service(ctx, chorus.NewSID(chorus.PrefixService))
	})
	wantNotFound(t, "Service(missing)", err)

	// Replacing a service keeps its objects.
	doc := f.newObject(chorus.KindDocument, at(0))
	insert(t, s, doc)
	svc2 := *f.svc
	svc2.FriendlyName, svc2.ACLEnabled, svc2.DateUpdated = "renamed", true, at(time.Hour)
	update(t, s, func(tx chorus.Tx) error { return tx.PutService(context.Background(), &svc2) })
	got = mustGet(t, s, "Service", func(ctx context.Context, tx chorus.ReadTx) (*chorus.Service, error) {
		return tx.Service(ctx, f.svc.SID)
	})
	checkEqual(t, "Service after replace", got, &svc2)
	if _, err := get(t, s, func(ctx context.Context, tx chorus.ReadTx) (*chorus.Object, error) {
		return tx.Object(ctx, chorus.KindDocument, f.svc.SID, doc.SID)
	}); err != nil {
		t.Errorf("Object after PutService replaced its service: %v, want the object kept", err)
	}

	err = s.Update(context.Background(), func(tx chorus.Tx) error {
		return tx.DeleteService(context.Background(), chorus.NewSID(chorus.PrefixService))
	})
	wantNotFound(t, "DeleteService(missing)", err)
}

func testServicesPaging(t *testing.T, s chorus.Store) {
	acc, other := newAccount(0), newAccount(1)
	var want []*chorus.Service
	update(t, s, func(tx chorus.Tx) error {
		ctx := context.Background()
		for _, a := range []*chorus.Account{acc, other} {
			if err := tx.PutAccount(ctx, a); err != nil {
				return err
			}
		}
		for i := range 23 {
			// Groups of three share a creation time, so the SID breaks ties;
			// insertion order differs from the expected order.
			svc := newService(acc.SID, at(time.Duration(7-i/3)*time.Second))
			want = append(want, svc)
			if err := tx.PutService(ctx, svc); err != nil {
				return err
			}
			if err := tx.PutService(ctx, newService(other.SID, at(time.Duration(i)*time.Second))); err != nil {
				return err
			}
		}
		return nil
	})
	sort.Slice(want, func(i, j int) bool {
		a, b := want[i], want[j]
		if !a.DateCreated.Equal(b.DateCreated) {
			return a.DateCreated.Before(b.DateCreated)
		}
		return a.SID < b.SID
	})
	for _, limit := range []int{1, 5, 23, 100} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			var all []*chorus.Service
			var cur chorus.Cursor
			for pages := 0; ; pages++ {
				if pages > len(want)+1 {
					t.Fatalf("Services: no end after %d pages", pages)
				}
				page := mustGet(t, s, "Services", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Service, error) {
					return tx.Services(ctx, acc.SID, chorus.ObjectQuery{After: cur, Limit: limit})
				})
				if len(page) > limit {
					t.Fatalf("Services(limit %d) returned %d", limit, len(page))
				}
				all = append(all, page...)
				if len(page) < limit {
					break
				}
				last := page[len(page)-1]
				cur = chorus.Cursor{DateCreated: last.DateCreated, SID: last.SID}
			}
			checkList(t, "Services pages", all, want)
		})
		t.Run(fmt.Sprintf("backward/limit=%d", limit), func(t *testing.T) {
			fetch := func(after chorus.Cursor) []*chorus.Service {
				return mustGet(t, s, "Services", func(ctx context.Context, tx chorus.ReadTx) ([]*chorus.Service, error) {
					return tx.Services(ctx, acc.SID, chorus.ObjectQuery{After: after, Backward: true, Limit: limit})
				})
			}
			checkList(t, "Services backward pages", walkBackward(t, "Services", limit, len(want)+1, fetch, serviceCursor), want)
			// Before every service, between groups, before the first
			// and after the last.
			probes := []chorus.Cursor{{DateCreated: at(-time.Hour), SID: "A"}, {DateCreated: at(time.Hour), SID: "A"}}
			for _, svc := range want {
				probes = append(probes, serviceCursor(svc),
					chorus.Cursor{DateCreated: svc.DateCreated.Add(time.Millisecond), SID: ""})
			}
			checkBefore(t, "Services backward", want, limit, probes,
				func(svc *chorus.Service, c chorus.Cursor) bool { return cursorBefore(serviceCursor(svc), c) }, fetch)
		})
	}
}

// testRetiredSecrets: the auth tokens and key secrets that an update
// replaces or drops are remembered as retired; current ones, and secrets
// never stored, are not.
func testRetiredSecrets(t *testing.T, s chorus.Store) {
	retired := func(secret string) bool {
		t.Helper()
		return mustGet(t, s, "SecretRetired", func(ctx context.Context, tx chorus.ReadTx) (bool, error) {
			return tx.SecretRetired(ctx, secret)
		})
	}
	put := func(a *chorus.Account) {
		t.Helper()
		update(t, s, func(tx chorus.Tx) error { return tx.PutAccount(context.Background(), a) })
	}
	a := newAccount(1)
	first := a.AuthToken
	put(a)
	if retired(first) || retired(chorus.NewSecret(32)) {
		t.Errorf("SecretRetired = true for a current token or one never stored")
	}
	// A secondary, then promoted: the first primary is retired, the
	// promoted one is not.
	second := chorus.NewSecret(32)
	a.SecondaryAuthToken, a.SecondaryDateCreated = second, at(time.Minute)
	put(a)
	if retired(first) || retired(second) {
		t.Errorf("SecretRetired(primary, secondary) = %v, %v after adding a secondary; want false, false", retired(first), retired(second))
	}
	a.AuthToken, a.SecondaryAuthToken, a.SecondaryDateCreated = second, "", time.Time{}
	put(a)
	if !retired(first) || retired(second) {
		t.Errorf("SecretRetired(old primary, promoted) = %v, %v; want true, false", retired(first), retired(second))
	}
	// A secondary deleted, and a token cleared, are retired too.
	third := chorus.NewSecret(32)
	a.SecondaryAuthToken, a.SecondaryDateCreated = third, at(2*time.Minute)
	put(a)
	a.AuthToken, a.SecondaryAuthToken, a.SecondaryDateCreated = "", "", time.Time{}
	put(a)
	if !retired(second) || !retired(third) || retired("") {
		t.Errorf("SecretRetired(cleared, deleted secondary, empty) = %v, %v, %v; want true, true, false", retired(second), retired(third), retired(""))
	}

	k := &chorus.APIKey{SID: chorus.NewSID(chorus.PrefixAPIKey), AccountSID: a.SID, Secret: chorus.NewSecret(32),
		FriendlyName: "k", Main: true, DateCreated: at(0), DateUpdated: at(0)}
	old := k.Secret
	update(t, s, func(tx chorus.Tx) error { return tx.PutAPIKey(context.Background(), k) })
	k.FriendlyName = "renamed" // the same secret: nothing retired
	update(t, s, func(tx chorus.Tx) error { return tx.PutAPIKey(context.Background(), k) })
	if retired(old) {
		t.Errorf("SecretRetired = true for a key's current secret")
	}
	k.Secret = chorus.NewSecret(32)
	update(t, s, func(tx chorus.Tx) error { return tx.PutAPIKey(context.Background(), k) })
	if !retired(old) || retired(k.Secret) {
		t.Errorf("SecretRetired(old key secret, new) = %v, %v; want true, false", retired(old), retired(k.Secret))
	}
}

// testConsoleSignOuts: a sign-out ends one sign-in of one credential
// (every token renewed from it), not another sign-in of the same
// credential nor the same sign-in id of another; signing out twice is no
// conflict; sign-outs whose end is past are forgotten by the next.
func testConsoleSignOuts(t *testing.T, s chorus.Store) {
	out := func(credential, signIn string) bool {
		t.Helper()
		return mustGet(t, s, "ConsoleSignedOut", func(ctx context.Context, tx chorus.ReadTx) (bool, error) {
			return tx.ConsoleSignedOut(ctx, credential, signIn)
		})
	}
	signOut := func(credential, signIn string, until time.Time) {
		t.Helper()
		update(t, s, func(tx chorus.Tx) error { return tx.SignOutConsole(context.Background(), credential, signIn, until) })
	}
	key, account := chorus.NewSID(chorus.PrefixAPIKey), chorus.NewSID(chorus.PrefixAccount)
	later := time.Now().Add(12 * time.Hour)
	if out(key, "a") {
		t.Fatalf("ConsoleSignedOut = true before any sign-out")
	}
	signOut(key, "a", later)
	if !out(key, "a") {
		t.Errorf("ConsoleSignedOut(key, its sign-in) = false after SignOutConsole")
	}
	if out(key, "b") || out(account, "a") || out(key, "A") {
		t.Errorf("ConsoleSignedOut(another sign-in of the key, the same sign-in of another credential, another case) = %v, %v, %v; want false",
			out(key, "b"), out(account, "a"), out(key, "A"))
	}
	signOut(key, "a", later) // twice: no conflict
	// A sign-out whose end is past is forgotten by the next one.
	signOut(account, "old", time.Now().Add(-time.Hour))
	if !out(account, "old") {
		t.Fatalf("ConsoleSignedOut(account, its sign-in) = false after SignOutConsole")
	}
	signOut(account, "new", later)
	if out(account, "old") || !out(account, "new") || !out(key, "a") {
		t.Errorf("after a later sign-out: ConsoleSignedOut(ended an hour ago, account now, key now) = %v, %v, %v; want false, true, true",
			out(account, "old"), out(account, "new"), out(key, "a"))
	}
}
