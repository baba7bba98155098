package transfer_test

import (
	"context"
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
// old node serves, then once more after it stops. A key revoked and an
// auth token rotated at the source in between must not keep working in
// the target: the second run reports them (as it reports objects the two
// sides changed both), and with --overwrite-credentials makes the
// target's credentials the source's, the revoked key gone. A key only the
// target has is reported the same way, not removed unasked; the target's
// own main key (its nodes' TWILIO_API_KEY) is never touched, and a key
// whose name and dates the target changed (its nodes' bootstrap) is the
// same key.
func TestMigrateCarriesRevocations(t *testing.T) {
	ctx := context.Background()
	src, _ := openSQLite(t)
	eng := engine.New(engine.Config{Store: src, Logger: quiet})
	creds, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
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
	if err != nil || len(rep.Conflicts) != 0 || rep.Credentials.KeysCreated != 3 || rep.Credentials.AccountsCreated != 1 {
		t.Fatalf("first copy: %v, credentials %+v, conflicts %v", err, rep.Credentials, conflictsOf(rep))
	}

	// At the source: "worker" revoked, the auth token rotated.
	if err := src.Update(ctx, func(tx chorus.Tx) error { return tx.DeleteAPIKey(ctx, made[1].SID) }); err != nil {
		t.Fatal(err)
	}
	rotated := chorus.NewSecret(32)
	if err := src.Update(ctx, func(tx chorus.Tx) error {
		a, err := tx.Account(ctx, creds.AccountSID)
		if err != nil {
			return err
		}
		a.AuthToken = rotated
		return tx.PutAccount(ctx, a)
	}); err != nil {
		t.Fatal(err)
	}
	// In the target: a key of its own, a main key of its own (an
	// operator's), and the copied "backend" renamed and re-dated.
	now := time.Now().UTC().Truncate(time.Millisecond)
	own := &chorus.APIKey{SID: chorus.NewSID(chorus.PrefixAPIKey), AccountSID: creds.AccountSID, Secret: chorus.NewSecret(32),
		DateCreated: now, DateUpdated: now}
	operator := &chorus.APIKey{SID: chorus.NewSID(chorus.PrefixAPIKey), AccountSID: creds.AccountSID, Secret: chorus.NewSecret(32),
		Main: true, DateCreated: now, DateUpdated: now}
	renamed := *made[0]
	renamed.FriendlyName, renamed.DateUpdated = "backend (cluster)", now.Add(time.Hour)
	if err := dst.Update(ctx, func(tx chorus.Tx) error {
		for _, k := range []*chorus.APIKey{own, operator, &renamed} {
			if err := tx.PutAPIKey(ctx, k); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	rep, err = transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet})
	want := []string{"account " + creds.AccountSID, "api key " + made[1].SID, "api key " + own.SID}
	slices.Sort(want)
	if err != nil || fmt.Sprint(conflictsOf(rep)) != fmt.Sprint(want) {
		t.Fatalf("second copy: %v, conflicts %v, want %v", err, conflictsOf(rep), want)
	}
	checkCreds := func(when, token string, keys ...string) {
		t.Helper()
		if err := dst.View(ctx, func(tx chorus.ReadTx) error {
			a, err := tx.Account(ctx, creds.AccountSID)
			if err != nil {
				return err
			}
			if a.AuthToken != token {
				t.Errorf("%s: the target's auth token is not the expected one", when)
			}
			ks, err := tx.APIKeys(ctx, creds.AccountSID)
			var sids []string
			for _, k := range ks {
				sids = append(sids, k.SID)
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
	checkCreds("refused", creds.AuthToken, creds.APIKeySID, made[0].SID, made[1].SID, own.SID, operator.SID)
	rep, err = transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet, Overwrite: true})
	if err != nil || len(rep.Conflicts) != 3 {
		t.Fatalf("--overwrite (objects only): %v, conflicts %v; want the same three", err, conflictsOf(rep))
	}

	rep, err = transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet, OverwriteCredentials: true})
	removed := []string{made[1].SID, own.SID}
	slices.Sort(removed)
	if err != nil || len(rep.Conflicts) != 0 || rep.Credentials.AccountsUpdated != 1 || fmt.Sprint(rep.Credentials.KeysRemoved) != fmt.Sprint(removed) {
		t.Fatalf("--overwrite-credentials: %v, credentials %+v, conflicts %v", err, rep.Credentials, conflictsOf(rep))
	}
	checkCreds("overwritten", rotated, creds.APIKeySID, made[0].SID, operator.SID)
	rep, err = transfer.Import(ctx, from, dst, transfer.Options{Logger: quiet})
	if err != nil || len(rep.Conflicts) != 0 || rep.Credentials.AccountsUpdated+rep.Credentials.KeysCreated+rep.Credentials.KeysUpdated+len(rep.Credentials.KeysRemoved) != 0 {
		t.Errorf("a run after: %v, credentials %+v, conflicts %v; want nothing to do", err, rep.Credentials, conflictsOf(rep))
	}
}

// TestImportTakesRotatedToken: over REST only the credentials the import
// authenticated with are known. When the source's auth token was rotated
// since the last run, the target's stale one is reported, and with
// --overwrite-credentials replaced by the one the source accepted, so that
// apps moved to the target keep working with the source's current token.
// A token the run did not authenticate with is not compared.
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
	tokenOf := func() string {
		var tok string
		if err := dst.View(ctx, func(tx chorus.ReadTx) error {
			a, err := tx.Account(ctx, creds.AccountSID)
			if err == nil {
				tok = a.AuthToken
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return tok
	}
	rep, err := transfer.Import(ctx, source, dst, transfer.Options{Account: withToken(rotated), Logger: quiet})
	if err != nil || fmt.Sprint(conflictsOf(rep)) != fmt.Sprint([]string{"account " + creds.AccountSID}) || tokenOf() != creds.AuthToken {
		t.Fatalf("run with the rotated token: %v, conflicts %v; want the account refused, its token unchanged", err, conflictsOf(rep))
	}
	// A run with an API key proves nothing about a token it carries.
	keyed := src.source()
	unchecked := transfer.Account{SID: creds.AccountSID, AuthToken: "not-the-token", APIKeySID: creds.APIKeySID, APISecret: creds.APISecret}
	if rep, err := transfer.Import(ctx, keyed, dst, transfer.Options{Account: unchecked, Logger: quiet, OverwriteCredentials: true}); err != nil ||
		len(rep.Conflicts) != 0 || tokenOf() != creds.AuthToken {
		t.Fatalf("run with a key and an unchecked token: %v, conflicts %v; want nothing about the token", err, conflictsOf(rep))
	}
	rep, err = transfer.Import(ctx, source, dst, transfer.Options{Account: withToken(rotated), Logger: quiet, OverwriteCredentials: true})
	if err != nil || len(rep.Conflicts) != 0 || rep.Credentials.AccountsUpdated != 1 || tokenOf() != rotated {
		t.Fatalf("--overwrite-credentials: %v, credentials %+v, conflicts %v; want the rotated token taken", err, rep.Credentials, conflictsOf(rep))
	}
}

// TestImportWebhookURLChorusRefuses: Twilio takes a webhook URL with
// user:password@, which Chorus refuses (54051) and would never call. The
// service is copied without it, and the report says so, instead of a
// copy whose every webhook is given up on unsent.
func TestImportWebhookURLChorusRefuses(t *testing.T) {
	ctx := context.Background()
	src, _ := openSQLite(t)
	eng := engine.New(engine.Config{Store: src, Logger: quiet})
	creds, _, err := eng.Bootstrap(ctx, engine.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Update(ctx, func(tx chorus.Tx) error {
		svc, err := tx.Service(ctx, creds.ServiceSID)
		if err != nil {
			return err
		}
		svc.WebhookURL, svc.WebhooksFromRestEnabled = "https://user:HookSecret77@hooks.example.com/sync", true
		return tx.PutService(ctx, svc)
	}); err != nil {
		t.Fatal(err)
	}
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
	if err := dst.View(ctx, func(tx chorus.ReadTx) error {
		svc, err := tx.Service(ctx, creds.ServiceSID)
		if err == nil && (svc.WebhookURL != "" || !svc.WebhooksFromRestEnabled) {
			t.Errorf("target service: webhook URL %q, from REST %v; want none, the rest copied", svc.WebhookURL, svc.WebhooksFromRestEnabled)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The operator sets one on the target, as told: later runs keep it,
	// with --overwrite too, and have nothing more to say.
	const fixed = "https://hooks.example.com/sync?token=abc"
	if err := dst.Update(ctx, func(tx chorus.Tx) error {
		svc, err := tx.Service(ctx, creds.ServiceSID)
		if err != nil {
			return err
		}
		svc.WebhookURL = fixed
		return tx.PutService(ctx, svc)
	}); err != nil {
		t.Fatal(err)
	}
	for _, overwrite := range []bool{false, true} {
		rep, err := transfer.Import(ctx, &transfer.StoreReader{Store: src}, dst, transfer.Options{Logger: quiet, Overwrite: overwrite})
		if err != nil || len(rep.Conflicts) != 0 {
			t.Fatalf("run after the fix (overwrite %v): %v, conflicts %v; want none", overwrite, err, conflictsOf(rep))
		}
	}
	if err := dst.View(ctx, func(tx chorus.ReadTx) error {
		svc, err := tx.Service(ctx, creds.ServiceSID)
		if err == nil && svc.WebhookURL != fixed {
			t.Errorf("target webhook URL %q after later runs, want the one set on the target", svc.WebhookURL)
		}
		return err
	}); err != nil {
		t.Fatal(err)
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
