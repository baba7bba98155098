package transfer_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/servertest"
	"github.com/chorus-sync/chorus/internal/transfer"
)

// changeAccount applies fn to account sid in st.
func changeAccount(t *testing.T, st chorus.Store, sid string, fn func(*chorus.Account)) {
	t.Helper()
	ctx := context.Background()
	if err := st.Update(ctx, func(tx chorus.Tx) error {
		a, err := tx.Account(ctx, sid)
		if err != nil {
			return err
		}
		fn(a)
		return tx.PutAccount(ctx, a)
	}); err != nil {
		t.Fatal(err)
	}
}

// changeService applies fn to service sid in st.
func changeService(t *testing.T, st chorus.Store, sid string, fn func(*chorus.Service)) {
	t.Helper()
	ctx := context.Background()
	if err := st.Update(ctx, func(tx chorus.Tx) error {
		svc, err := tx.Service(ctx, sid)
		if err != nil {
			return err
		}
		fn(svc)
		return tx.PutService(ctx, svc)
	}); err != nil {
		t.Fatal(err)
	}
}

// bootstrapped opens a SQLite store with the credentials and default
// service of a first start, and the engine that made them.
func bootstrapped(t *testing.T) (chorus.Store, *engine.Engine, engine.Credentials) {
	t.Helper()
	st, _ := openSQLite(t)
	eng := engine.New(engine.Config{Store: st, Logger: quiet})
	creds, _, err := eng.Bootstrap(context.Background(), engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	return st, eng, creds
}

// serviceIn reads service sid from st.
func serviceIn(t *testing.T, st chorus.Store, sid string) *chorus.Service {
	t.Helper()
	var svc *chorus.Service
	if err := st.View(context.Background(), func(tx chorus.ReadTx) (err error) {
		svc, err = tx.Service(context.Background(), sid)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return svc
}

// conflictsOf lists a report's conflicts as "kind SID".
func conflictsOf(rep *transfer.Report) []string {
	var out []string
	for _, c := range rep.Conflicts {
		out = append(out, c.Kind+" "+c.SID)
	}
	slices.Sort(out)
	return out
}

// TestMigrateCarriesRevocations: the cut-over copies a store while the
// old node serves, then once more after it stops. A key revoked at the
// source in between must not keep working in the target unreported: the
// second run refuses it (as it refuses objects the two sides changed
// both), and with --overwrite-credentials removes it; a key only the
// target has is reported the same way. The target's operator credentials
// are its own: its auth tokens and main keys (its nodes' TWILIO_*, rotated
// after a leak, say) are never replaced or removed, differences are only
// noted, and the source's main keys are not added beside them. A key whose
// name and dates the target changed (its nodes' bootstrap) is the same key.
func TestMigrateCarriesRevocations(t *testing.T) {
	ctx := context.Background()
	src, eng, creds := bootstrapped(t)
	main := engine.Credential{AccountSID: creds.AccountSID, SID: creds.APIKeySID, Main: true}
	var made []*chorus.APIKey
	for _, name := range []string{"backend", "worker"} {
		k, err := eng.CreateAPIKey(ctx, main, name)
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, k)
	}
	dst, _ := openSQLite(t)
	from := &transfer.StoreReader{Store: src}
	rep, err := transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet})
	if err != nil || len(rep.Conflicts)+len(rep.Notes) != 0 || rep.Credentials.KeysCreated != 3 || rep.Credentials.AccountsCreated != 1 {
		t.Fatalf("first copy: %v, credentials %+v, conflicts %v, notes %d", err, rep.Credentials, conflictsOf(rep), len(rep.Notes))
	}

	now := time.Now().UTC().Truncate(time.Millisecond)
	newKey := func(main bool) *chorus.APIKey {
		return &chorus.APIKey{SID: chorus.NewSID(chorus.PrefixAPIKey), AccountSID: creds.AccountSID, Secret: chorus.NewSecret(32),
			Main: main, DateCreated: now, DateUpdated: now}
	}
	put := func(st chorus.Store, keys ...*chorus.APIKey) {
		t.Helper()
		if err := st.Update(ctx, func(tx chorus.Tx) error {
			for _, k := range keys {
				if err := tx.PutAPIKey(ctx, k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	setToken := func(st chorus.Store, tok string) {
		t.Helper()
		changeAccount(t, st, creds.AccountSID, func(a *chorus.Account) { a.AuthToken = tok })
	}
	// At the source: "worker" revoked, the token rotated, a new main key.
	if err := src.Update(ctx, func(tx chorus.Tx) error { return tx.DeleteAPIKey(ctx, made[1].SID) }); err != nil {
		t.Fatal(err)
	}
	setToken(src, chorus.NewSecret(32))
	srcMain := newKey(true)
	put(src, srcMain)
	// In the target: its nodes' credentials after a leak (the main key's
	// secret and the token rotated), a key of its own, and the copied
	// "backend" renamed and re-dated.
	clusterToken := chorus.NewSecret(32)
	setToken(dst, clusterToken)
	rotatedMain := &chorus.APIKey{SID: creds.APIKeySID, AccountSID: creds.AccountSID, Secret: chorus.NewSecret(32), Main: true, DateCreated: now, DateUpdated: now}
	own := newKey(false)
	renamed := *made[0]
	renamed.FriendlyName, renamed.DateUpdated = "backend (cluster)", now.Add(time.Hour)
	put(dst, rotatedMain, own, &renamed)

	notesOf := func(rep *transfer.Report) []string {
		var out []string
		for _, n := range rep.Notes {
			out = append(out, n.Kind+" "+n.SID)
		}
		slices.Sort(out)
		return out
	}
	wantNotes := []string{"account " + creds.AccountSID, "api key " + creds.APIKeySID, "api key " + srcMain.SID}
	slices.Sort(wantNotes)
	rep, err = transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet})
	want := []string{"api key " + made[1].SID, "api key " + own.SID}
	slices.Sort(want)
	if err != nil || fmt.Sprint(conflictsOf(rep)) != fmt.Sprint(want) || fmt.Sprint(notesOf(rep)) != fmt.Sprint(wantNotes) {
		t.Fatalf("second copy: %v, conflicts %v, want %v; notes %v, want %v", err, conflictsOf(rep), want, notesOf(rep), wantNotes)
	}
	checkCreds := func(when string, keys ...string) {
		t.Helper()
		if err := dst.View(ctx, func(tx chorus.ReadTx) error {
			a, err := tx.Account(ctx, creds.AccountSID)
			if err != nil {
				return err
			}
			if a.AuthToken != clusterToken {
				t.Errorf("%s: the target's auth token is not its own any more", when)
			}
			ks, err := tx.APIKeys(ctx, creds.AccountSID)
			var sids []string
			for _, k := range ks {
				sids = append(sids, k.SID)
				if k.SID == creds.APIKeySID && k.Secret != rotatedMain.Secret {
					t.Errorf("%s: the target's main key has the source's secret back", when)
				}
			}
			slices.Sort(sids)
			slices.Sort(keys)
			if fmt.Sprint(sids) != fmt.Sprint(keys) {
				t.Errorf("%s: the target's keys are %v, want %v", when, sids, keys)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	checkCreds("refused", creds.APIKeySID, made[0].SID, made[1].SID, own.SID)
	rep, err = transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet, Overwrite: true})
	if err != nil || len(rep.Conflicts) != 2 {
		t.Fatalf("--overwrite (objects only): %v, conflicts %v; want the same two", err, conflictsOf(rep))
	}

	rep, err = transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet, OverwriteCredentials: true})
	removed := []string{made[1].SID, own.SID}
	slices.Sort(removed)
	if err != nil || len(rep.Conflicts) != 0 || fmt.Sprint(rep.Credentials.KeysRemoved) != fmt.Sprint(removed) || rep.Credentials.KeysCreated != 0 {
		t.Fatalf("--overwrite-credentials: %v, credentials %+v, conflicts %v", err, rep.Credentials, conflictsOf(rep))
	}
	checkCreds("overwritten", creds.APIKeySID, made[0].SID)

	// A rotation in progress at the source (a secondary token): with
	// --overwrite-credentials it is added beside the target's primary, which
	// stays; never without.
	secondary := chorus.NewSecret(32)
	changeAccount(t, src, creds.AccountSID, func(a *chorus.Account) { a.SecondaryAuthToken, a.SecondaryDateCreated = secondary, now })
	secondaryOf := func() string {
		var s string
		if err := dst.View(ctx, func(tx chorus.ReadTx) error {
			a, err := tx.Account(ctx, creds.AccountSID)
			s = a.SecondaryAuthToken
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if _, err := transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet}); err != nil || secondaryOf() != "" {
		t.Fatalf("plain run: %v, target secondary %q; want none added", err, secondaryOf())
	}
	if rep, err := transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet, OverwriteCredentials: true}); err != nil ||
		secondaryOf() != secondary || rep.Credentials.AccountsUpdated != 1 {
		t.Fatalf("--overwrite-credentials: %v, target secondary added %v; want the source's", err, secondaryOf() == secondary)
	}
	checkCreds("secondary added", creds.APIKeySID, made[0].SID)
	rep, err = transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet})
	if err != nil || len(rep.Conflicts) != 0 || rep.Credentials.KeysCreated+rep.Credentials.KeysUpdated+len(rep.Credentials.KeysRemoved) != 0 {
		t.Errorf("a run after: %v, credentials %+v, conflicts %v; want nothing to do", err, rep.Credentials, conflictsOf(rep))
	}
}

// TestMigrateKeepsRevokedKeysOut: a key revoked in the target (a leak found
// after the first copy) is not created again by the next run, with or
// without --overwrite-credentials, while the source still has it: the run
// notes it instead.
func TestMigrateKeepsRevokedKeysOut(t *testing.T) {
	ctx := context.Background()
	src, eng, creds := bootstrapped(t)
	main := engine.Credential{AccountSID: creds.AccountSID, SID: creds.APIKeySID, Main: true}
	leaked, err := eng.CreateAPIKey(ctx, main, "leaked")
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := openSQLite(t)
	from := &transfer.StoreReader{Store: src}
	if rep, err := transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet}); err != nil || rep.Credentials.KeysCreated != 2 {
		t.Fatalf("first copy: %v, credentials %+v", err, rep.Credentials)
	}
	if err := engine.New(engine.Config{Store: dst, Logger: quiet}).DeleteAPIKey(ctx, main, leaked.SID); err != nil {
		t.Fatal(err)
	}
	for _, overwrite := range []bool{false, true} {
		rep, err := transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet, OverwriteCredentials: overwrite})
		if err != nil || len(rep.Conflicts) != 0 || rep.Credentials.KeysCreated != 0 {
			t.Fatalf("overwrite-credentials %v: %v, credentials %+v, conflicts %v", overwrite, err, rep.Credentials, conflictsOf(rep))
		}
		if len(rep.Notes) != 1 || rep.Notes[0].SID != leaked.SID || !strings.Contains(rep.Notes[0].Reason, "revoked in the target") {
			t.Errorf("overwrite-credentials %v: notes %+v, want one saying %s was revoked in the target", overwrite, rep.Notes, leaked.SID)
		}
		if err := dst.View(ctx, func(tx chorus.ReadTx) error {
			_, err := tx.APIKey(ctx, leaked.SID)
			if !errors.Is(err, chorus.ErrNotFound) {
				t.Errorf("overwrite-credentials %v: the revoked key is back in the target (%v)", overwrite, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestImportTakesRotatedToken: over REST only the credentials the import
// authenticated with are known. When the source's auth token was rotated
// since the last run, the target lacking it is reported, and with
// --overwrite-credentials the token the source accepted becomes the
// target's secondary: apps moved to the target keep working with the
// source's current token, and the target's primary keeps working too. A
// token the target has as its secondary is not reported; a token the run
// did not authenticate with is not compared.
func TestImportTakesRotatedToken(t *testing.T) {
	ctx := context.Background()
	creds := servertest.NewCredentials()
	src := startNode(t, server.Config{DataDir: t.TempDir(), Creds: creds})
	dst, _ := openSQLite(t)
	withToken := func(tok string) transfer.Account {
		return transfer.Account{SID: creds.AccountSID, AuthToken: tok}
	}
	sourceWith := func(tok string) *transfer.Source {
		s := src.source()
		s.Username, s.Password = creds.AccountSID, tok
		return s
	}
	if _, err := transfer.Import(ctx, sourceWith(creds.AuthToken), dst, transfer.Options{Account: withToken(creds.AuthToken), Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	// The source's token rotated (a secondary made primary): a later run
	// authenticates with the new one.
	owner := engine.Credential{AccountSID: creds.AccountSID, SID: creds.AccountSID, Main: true}
	eng := src.srv.Engine()
	a, err := eng.CreateSecondaryAuthToken(ctx, owner)
	if err != nil {
		t.Fatal(err)
	}
	rotated := a.SecondaryAuthToken
	if _, err := eng.PromoteSecondaryAuthToken(ctx, owner); err != nil {
		t.Fatal(err)
	}
	source := sourceWith(rotated)
	tokensOf := func() (primary, secondary string) {
		if err := dst.View(ctx, func(tx chorus.ReadTx) error {
			a, err := tx.Account(ctx, creds.AccountSID)
			if err == nil {
				primary, secondary = a.AuthToken, a.SecondaryAuthToken
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return primary, secondary
	}
	rep, err := transfer.Import(ctx, source, dst, transfer.Options{Account: withToken(rotated), Logger: quiet})
	if p, s := tokensOf(); err != nil || fmt.Sprint(conflictsOf(rep)) != fmt.Sprint([]string{"account " + creds.AccountSID}) || p != creds.AuthToken || s != "" {
		t.Fatalf("run with the rotated token: %v, conflicts %v; want the account refused, its tokens unchanged", err, conflictsOf(rep))
	}
	// A run with an API key proves nothing about a token it carries.
	unchecked := transfer.Account{SID: creds.AccountSID, AuthToken: "not-the-token", APIKeySID: creds.APIKeySID, APISecret: creds.APISecret}
	if rep, err := transfer.Import(ctx, src.source(), dst, transfer.Options{Account: unchecked, Logger: quiet, OverwriteCredentials: true}); err != nil ||
		len(rep.Conflicts) != 0 {
		t.Fatalf("run with a key and an unchecked token: %v, conflicts %v; want nothing about the token", err, conflictsOf(rep))
	}
	rep, err = transfer.Import(ctx, source, dst, transfer.Options{Account: withToken(rotated), Logger: quiet, OverwriteCredentials: true})
	if p, s := tokensOf(); err != nil || len(rep.Conflicts) != 0 || rep.Credentials.AccountsUpdated != 1 || p != creds.AuthToken || s != rotated {
		t.Fatalf("--overwrite-credentials: %v, credentials %+v, conflicts %v; want the rotated token as the secondary, the primary kept",
			err, rep.Credentials, conflictsOf(rep))
	}
	rep, err = transfer.Import(ctx, source, dst, transfer.Options{Account: withToken(rotated), Logger: quiet})
	if err != nil || len(rep.Conflicts) != 0 || len(rep.Notes) != 1 {
		t.Errorf("a run after: %v, conflicts %v, %d notes; want none, and a note that the primary may be revoked", err, conflictsOf(rep), len(rep.Notes))
	}

	// Rotated again at the source: the target's secondary is taken, and
	// is not replaced silently, even with --overwrite-credentials.
	if _, err := eng.CreateSecondaryAuthToken(ctx, owner); err != nil {
		t.Fatal(err)
	}
	a, err = eng.PromoteSecondaryAuthToken(ctx, owner)
	if err != nil {
		t.Fatal(err)
	}
	third := a.AuthToken
	rep, err = transfer.Import(ctx, sourceWith(third), dst, transfer.Options{Account: withToken(third), Logger: quiet, OverwriteCredentials: true})
	if p, s := tokensOf(); err != nil || len(rep.Conflicts) != 1 || p != creds.AuthToken || s != rotated {
		t.Errorf("a second rotation with --overwrite-credentials: %v, conflicts %v; want the account refused, its tokens kept", err, conflictsOf(rep))
	}
}

// TestImportWebhookURLChorusRefuses: Twilio takes a webhook URL with a
// raw space in its query, which Chorus refuses (54051: receivers answer
// the request line with 400) and would never call. The service is copied
// without it, and the report says so, instead of a copy whose every
// webhook is given up on unsent. A URL with user:password@ is copied as
// it is (Chorus calls it with Basic authentication, as Twilio does).
func TestImportWebhookURLChorusRefuses(t *testing.T) {
	ctx := context.Background()
	src, _, creds := bootstrapped(t)
	changeService(t, src, creds.ServiceSID, func(svc *chorus.Service) {
		svc.WebhookURL, svc.WebhooksFromRestEnabled = "https://hooks.example.com/sync?secret=HookSecret77 x", true
	})
	dst, _ := openSQLite(t)
	for run := range 2 {
		rep, err := transfer.Import(ctx, &transfer.StoreReader{Store: src}, dst, transfer.Options{Logger: quiet})
		if err != nil || fmt.Sprint(conflictsOf(rep)) != fmt.Sprint([]string{"service " + creds.ServiceSID}) {
			t.Fatalf("run %d: %v, conflicts %v; want the service's webhook URL reported", run, err, conflictsOf(rep))
		}
		if strings.Contains(rep.Conflicts[0].Reason, "HookSecret77") {
			t.Errorf("the report shows the URL's password: %s", rep.Conflicts[0].Reason)
		}
	}
	if svc := serviceIn(t, dst, creds.ServiceSID); svc.WebhookURL != "" || !svc.WebhooksFromRestEnabled {
		t.Errorf("target service: webhook URL %q, from REST %v; want none, the rest copied", svc.WebhookURL, svc.WebhooksFromRestEnabled)
	}
	// The operator sets one on the target, as told: later runs keep it,
	// with --overwrite too, and have nothing more to say.
	const fixed = "https://hooks.example.com/sync?token=abc"
	changeService(t, dst, creds.ServiceSID, func(svc *chorus.Service) { svc.WebhookURL = fixed })
	for _, overwrite := range []bool{false, true} {
		rep, err := transfer.Import(ctx, &transfer.StoreReader{Store: src}, dst, transfer.Options{Logger: quiet, Overwrite: overwrite})
		if err != nil || len(rep.Conflicts) != 0 {
			t.Fatalf("run after the fix (overwrite %v): %v, conflicts %v; want none", overwrite, err, conflictsOf(rep))
		}
	}
	if got := serviceIn(t, dst, creds.ServiceSID).WebhookURL; got != fixed {
		t.Errorf("target webhook URL %q after later runs, want the one set on the target", got)
	}
}

// TestImportBasicAuthWebhookURL: a webhook URL with user:password@ is
// copied as it is, without a conflict: Chorus calls it as Twilio does.
func TestImportBasicAuthWebhookURL(t *testing.T) {
	ctx := context.Background()
	src, _, creds := bootstrapped(t)
	const hook = "https://hook-user:HookSecret77@hooks.example.com/sync"
	changeService(t, src, creds.ServiceSID, func(svc *chorus.Service) { svc.WebhookURL = hook })
	dst, _ := openSQLite(t)
	rep, err := transfer.Import(ctx, &transfer.StoreReader{Store: src}, dst, transfer.Options{Logger: quiet})
	if err != nil || len(rep.Conflicts) != 0 {
		t.Fatalf("import: %v, conflicts %v; want none", err, conflictsOf(rep))
	}
	if got := serviceIn(t, dst, creds.ServiceSID).WebhookURL; got != hook {
		t.Errorf("target webhook URL %q, want %q", got, hook)
	}
}

// TestStoreCopyRestoresMilliseconds: a REST import shows dates to the
// second; a later copy from the source's store (migrate --from-data-dir,
// the cut-over's last run) brings their milliseconds back instead of
// finding the objects and items unchanged to the second.
func TestStoreCopyRestoresMilliseconds(t *testing.T) {
	ctx := context.Background()
	creds := servertest.NewCredentials()
	src := startNode(t, server.Config{DataDir: t.TempDir(), Creds: creds})
	eng := src.srv.Engine()
	svc, err := eng.Service(ctx, creds.AccountSID, creds.ServiceSID)
	if err != nil {
		t.Fatal(err)
	}
	var doc, m *chorus.Object
	for {
		// Dates with milliseconds, or the test proves nothing.
		doc, err = eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindDocument, engine.CreateObject{})
		if err != nil {
			t.Fatal(err)
		}
		if doc.DateUpdated.Nanosecond() != 0 {
			break
		}
	}
	if m, err = eng.CreateObject(ctx, engine.SystemActor(), svc, chorus.KindMap, engine.CreateObject{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := eng.WriteItem(ctx, engine.SystemActor(), svc, chorus.KindMap, m.SID, chorus.ItemRef{Key: "k"},
		engine.ItemWrite{Mode: engine.CreateOnly, Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	dst, _ := openSQLite(t)
	if _, err := transfer.Import(ctx, src.source(), dst, transfer.Options{Account: account(src), Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	dateOf := func(st chorus.Store) (docDate, itemDate time.Time) {
		t.Helper()
		if err := st.View(ctx, func(tx chorus.ReadTx) error {
			o, err := tx.Object(ctx, chorus.KindDocument, svc.SID, doc.SID)
			if err != nil {
				return err
			}
			it, err := tx.Item(ctx, m.SID, chorus.ItemRef{Key: "k"})
			if err != nil {
				return err
			}
			docDate, itemDate = o.DateUpdated, it.DateUpdated
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return docDate, itemDate
	}
	srcDoc, srcItem := dateOf(eng.Store())
	if d, _ := dateOf(dst); d.Equal(srcDoc) || !d.Equal(srcDoc.Truncate(time.Second)) {
		t.Fatalf("after the REST import the document's date is %v, want %v to the second", d, srcDoc)
	}
	rep, err := transfer.Import(ctx, &transfer.StoreReader{Store: eng.Store()}, dst, transfer.Options{Logger: quiet})
	if err != nil || rep.Objects.Updated == 0 {
		t.Fatalf("store copy: %v, objects %+v; want the objects updated", err, rep.Objects)
	}
	if d, it := dateOf(dst); !d.Equal(srcDoc) || !it.Equal(srcItem) {
		t.Errorf("after the store copy: document %v, item %v; want %v, %v", d, it, srcDoc, srcItem)
	}
	rep, err = transfer.Import(ctx, &transfer.StoreReader{Store: eng.Store()}, dst, transfer.Options{Logger: quiet})
	if err != nil || rep.Objects.Updated+rep.Objects.Created+rep.Items.Updated+rep.Items.Created != 0 {
		t.Errorf("a second store copy: %v, objects %+v, items %+v; want all unchanged", err, rep.Objects, rep.Items)
	}
}

// TestMigrateKeepsRetiredSecretsOut: a key secret the target replaced
// (retired) is not brought back by the next run with
// --overwrite-credentials while the source still has it: the run notes it
// and the target keeps its own.
func TestMigrateKeepsRetiredSecretsOut(t *testing.T) {
	ctx := context.Background()
	src, eng, creds := bootstrapped(t)
	main := engine.Credential{AccountSID: creds.AccountSID, SID: creds.APIKeySID, Main: true}
	key, err := eng.CreateAPIKey(ctx, main, "backend")
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := openSQLite(t)
	from := &transfer.StoreReader{Store: src}
	if _, err := transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	rotated := chorus.NewSecret(32)
	if err := dst.Update(ctx, func(tx chorus.Tx) error {
		k, err := tx.APIKey(ctx, key.SID)
		if err != nil {
			return err
		}
		k.Secret = rotated // its old secret is retired
		return tx.PutAPIKey(ctx, k)
	}); err != nil {
		t.Fatal(err)
	}
	rep, err := transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet, OverwriteCredentials: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Notes) != 1 || rep.Notes[0].SID != key.SID || !strings.Contains(rep.Notes[0].Reason, "retired in the target") {
		t.Errorf("notes %+v, want one saying %s's secret was retired in the target", rep.Notes, key.SID)
	}
	if err := dst.View(ctx, func(tx chorus.ReadTx) error {
		k, err := tx.APIKey(ctx, key.SID)
		if err != nil {
			return err
		}
		if k.Secret != rotated {
			t.Errorf("the target's key %s has the retired secret back", key.SID)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestImportNeverRevivesCredentials: over REST the import stores only
// credentials the source accepted, and never one the target revoked or
// retired: an auth token given beside the API key the run authenticated
// with is not stored; a key revoked in the target is not created again
// by the next run; and --overwrite-credentials does not add back an auth
// token the target retired. Each is noted.
func TestImportNeverRevivesCredentials(t *testing.T) {
	ctx := context.Background()
	creds := servertest.NewCredentials()
	src := startNode(t, server.Config{DataDir: t.TempDir(), Creds: creds})
	dst, _ := openSQLite(t)
	account := func() *chorus.Account {
		var a *chorus.Account
		if err := dst.View(ctx, func(tx chorus.ReadTx) (err error) {
			a, err = tx.Account(ctx, creds.AccountSID)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return a
	}
	keyIn := func() bool {
		var err error
		_ = dst.View(ctx, func(tx chorus.ReadTx) error { _, err = tx.APIKey(ctx, creds.APIKeySID); return nil })
		return err == nil
	}

	// Authenticated with the key; the token beside it is stale.
	stale := transfer.Account{SID: creds.AccountSID, AuthToken: "stale-stale-stale-stale-stale-stale", APIKeySID: creds.APIKeySID, APISecret: creds.APISecret}
	rep, err := transfer.Import(ctx, src.source(), dst, transfer.Options{Account: stale, Logger: quiet})
	if err != nil || !rep.AccountCreated || rep.Credentials.KeysCreated != 1 || len(rep.Notes) != 1 {
		t.Fatalf("first run: %v, account created %v, credentials %+v, notes %v; want the account and key created, one note",
			err, rep.AccountCreated, rep.Credentials, rep.Notes)
	}
	if tok := account().AuthToken; tok == stale.AuthToken || tok == "" {
		t.Errorf("the account was created with the unchecked token %q, want a new random one", tok)
	}

	// Revoked in the target: the next run leaves it out, and says so.
	if err := dst.Update(ctx, func(tx chorus.Tx) error { return tx.DeleteAPIKey(ctx, creds.APIKeySID) }); err != nil {
		t.Fatal(err)
	}
	rep, err = transfer.Import(ctx, src.source(), dst, transfer.Options{Account: stale, Logger: quiet, OverwriteCredentials: true})
	if err != nil || keyIn() || rep.Credentials.KeysCreated != 0 || len(rep.Notes) != 1 || rep.Notes[0].Kind != "api key" {
		t.Fatalf("a run after the key's revocation: %v, key back %v, credentials %+v, notes %v; want it left out and noted",
			err, keyIn(), rep.Credentials, rep.Notes)
	}

	// The source's auth token, retired in the target by a rotation there,
	// is not added back as the secondary, even with --overwrite-credentials.
	changeAccount(t, dst, creds.AccountSID, func(a *chorus.Account) { a.AuthToken = creds.AuthToken })
	eng := engine.New(engine.Config{Store: dst, Logger: quiet})
	owner := engine.Credential{AccountSID: creds.AccountSID, SID: creds.AccountSID, Main: true}
	if _, err := eng.CreateSecondaryAuthToken(ctx, owner); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.PromoteSecondaryAuthToken(ctx, owner); err != nil {
		t.Fatal(err)
	}
	byToken := src.source()
	byToken.Username, byToken.Password = creds.AccountSID, creds.AuthToken
	rep, err = transfer.Import(ctx, byToken, dst, transfer.Options{Account: transfer.Account{SID: creds.AccountSID, AuthToken: creds.AuthToken}, Logger: quiet, OverwriteCredentials: true})
	a := account()
	if err != nil || a.AuthToken == creds.AuthToken || a.SecondaryAuthToken == creds.AuthToken || rep.Credentials.AccountsUpdated != 0 || len(rep.Notes) != 1 {
		t.Errorf("--overwrite-credentials with a token the target retired: %v, secondary is it %v, credentials %+v, notes %v; want it left out and noted",
			err, a.SecondaryAuthToken == creds.AuthToken, rep.Credentials, rep.Notes)
	}
}

// TestImportNotesPrivateWebhookURL: a webhook URL on a loopback or private
// address is copied as it is (nodes run with --webhooks-allow-private
// take it), and the run notes that other nodes refuse it.
func TestImportNotesPrivateWebhookURL(t *testing.T) {
	ctx := context.Background()
	src, _, creds := bootstrapped(t)
	const private = "http://hook:PassW0rd9@127.0.0.1:9/sync"
	changeService(t, src, creds.ServiceSID, func(svc *chorus.Service) { svc.WebhookURL = private })
	dst, _ := openSQLite(t)
	rep, err := transfer.Import(ctx, &transfer.StoreReader{Store: src}, dst, transfer.Options{Logger: quiet})
	if err != nil || len(rep.Conflicts) != 0 || len(rep.Notes) != 1 || rep.Notes[0].SID != creds.ServiceSID {
		t.Fatalf("import: %v, conflicts %v, notes %v; want one note about the service", err, conflictsOf(rep), rep.Notes)
	}
	if r := rep.Notes[0].Reason; !strings.Contains(r, "--webhooks-allow-private") || strings.Contains(r, "PassW0rd9") {
		t.Errorf("note %q: want it to name --webhooks-allow-private, and no password", r)
	}
	if got := serviceIn(t, dst, creds.ServiceSID).WebhookURL; got != private {
		t.Errorf("target webhook URL %q, want %q copied", got, private)
	}
}
