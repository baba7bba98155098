package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/webhook"
)

// Account is the account the import writes into: the source's account
// SID, and the credentials to store with it when the target does not have
// the account (or key) yet. An unknown auth token is stored as a random
// one; `chorus serve` with the TWILIO_* variables replaces it.
type Account struct {
	SID       string
	AuthToken string
	APIKeySID string
	APISecret string
}

// Options configure Import.
type Options struct {
	// Services selects services by SID or unique name; empty means all.
	Services []string
	// DryRun reads the source and the target and reports what would be
	// written, writing nothing.
	DryRun bool
	// Overwrite replaces a target object (or service) that holds the SID
	// or unique name of a source one but is a different object; without
	// it such objects are refused and reported.
	Overwrite bool
	// OverwriteCredentials makes the target's API keys of the source's
	// accounts (not its main keys) the source's, and adds an auth token a
	// REST source accepted as the target's secondary (see copyCredentials
	// and ensureAccount); without it those differences are refused and
	// reported.
	OverwriteCredentials bool
	// Verify compares the items of every list and map, also those whose
	// revision and date_updated show no change since the last run.
	Verify bool
	// Concurrency is how many objects are copied at once; default 4.
	Concurrency int
	// EventBase is the event id above which imported objects and items get
	// theirs; default the start time in Unix milliseconds.
	EventBase int64
	// Account to create in the target if missing (SID required unless
	// DryRun).
	Account Account
	// TempDir is where the items a list or map needs written wait, beyond
	// a few MiB of them, until all its pages were read and checked (see
	// items.go); default os.TempDir().
	TempDir string
	// Progress, if set, is called after each object and when the listing
	// ends (not concurrently).
	Progress func(Progress)
	Logger   *slog.Logger
	Now      func() time.Time

	spoolMem int // bytes of items an object's spool keeps in memory; default defaultSpoolMem
}

// Progress is the state of a running import.
type Progress struct {
	// ObjectsTotal counts the objects listed so far; while Listing, more
	// are still to come.
	ObjectsDone, ObjectsTotal int
	Listing                   bool
	Items                     int // items seen (copied or already equal)
	Elapsed                   time.Duration
}

// Counts tallies what happened to one kind of record.
type Counts struct {
	Created   int `json:"created"`
	Updated   int `json:"updated"`
	Unchanged int `json:"unchanged"`
	Deleted   int `json:"deleted"`
	Refused   int `json:"refused"`
	// Gone counts objects the source listed and then answered 404 for
	// when their items or permissions were read: deleted or expired at
	// the source meanwhile. They are not copied.
	Gone int `json:"gone"`
}

// Conflict is a source record the import refused to write.
type Conflict struct {
	Kind       string `json:"kind"`
	SID        string `json:"sid"`
	ServiceSID string `json:"service_sid,omitempty"`
	UniqueName string `json:"unique_name,omitempty"`
	Reason     string `json:"reason"`
}

// Report is the outcome of an import (also of one that failed part way:
// it then says what was copied).
type Report struct {
	DryRun         bool   `json:"dry_run"`
	AccountSID     string `json:"account_sid"`
	AccountCreated bool   `json:"account_created"`
	// Credentials is what the run changed in the target's accounts and
	// API keys.
	Credentials CredentialCounts `json:"credentials"`
	Services    Counts           `json:"services"`
	Objects     Counts           `json:"objects"`
	Items       Counts           `json:"items"`
	Permissions Counts           `json:"permissions"`
	Conflicts   []Conflict       `json:"conflicts"`
	// Notes are differences the run left alone on purpose and says so
	// (they do not fail it): the target's own operator credentials.
	Notes          []Conflict    `json:"notes"`
	Requests       int64         `json:"requests"`
	Retries        int64         `json:"retries"`
	Elapsed        time.Duration `json:"-"`
	ElapsedSeconds float64       `json:"elapsed_seconds"`
	ObjectsPerSec  float64       `json:"objects_per_second"`
	ItemsPerSec    float64       `json:"items_per_second"`
}

// CredentialCounts are the changes a run made to the target's
// credentials: from a store, the source's accounts and API keys (never the
// target's auth tokens or main keys); over REST, the auth token the import
// authenticated with (Options.Account).
type CredentialCounts struct {
	AccountsCreated int `json:"accounts_created"`
	// AccountsUpdated counts accounts given, with OverwriteCredentials,
	// a secondary auth token: the one a REST source accepted, or a
	// store's secondary where the target had none.
	AccountsUpdated int `json:"accounts_updated"`
	KeysCreated     int `json:"keys_created"`
	KeysUpdated     int `json:"keys_updated"`
	// KeysRemoved are the SIDs of the target's keys of the source's
	// accounts that the source no longer has (revoked there), removed
	// with Overwrite.
	KeysRemoved []string `json:"keys_removed"`
}

// markerUpdated is the date_updated of a list or map whose items are not
// all copied yet: it matches no source, so the next run copies it again.
var markerUpdated = time.Unix(0, 0).UTC()

// errRefused ends the copy of one object that was refused (and reported).
var errRefused = errors.New("transfer: refused")

// itemBatch is how many items one Store.Update writes.
const itemBatch = 500

type importer struct {
	src  Reader
	st   chorus.Store
	opt  Options
	log  *slog.Logger
	base int64
	now  func() time.Time
	prec time.Duration // datePrecision of src

	start  time.Time
	mu     sync.Mutex // guards rep and progress counters
	rep    Report
	done   int
	total  int  // objects listed so far
	listed bool // the listing ended: total is final
	items  int
}

// Reader is where Import reads: a REST v1 server (Source) or another
// store (StoreReader). Expired objects and items are not returned.
type Reader interface {
	// Check fails (ErrCredentials, wrapped, for refused credentials) when
	// the source cannot be read.
	Check(ctx context.Context) error
	// Services returns the services to copy, oldest first.
	Services(ctx context.Context) ([]*chorus.Service, error)
	// Objects calls fn with each of the service's objects of kind k, one
	// page at a time: an account of any size is never held whole. It
	// stops at fn's first error and returns it.
	Objects(ctx context.Context, svc *chorus.Service, k chorus.Kind, fn func(*chorus.Object) error) error
	// Items calls fn with the items of a list (in index order) or map (in
	// the source's key order, which need not be the target's), one page at
	// a time: an object of any size is never held whole. fn may keep the
	// page. It stops at fn's first error and returns it.
	Items(ctx context.Context, obj *chorus.Object, fn func([]*chorus.Item) error) error
	Permissions(ctx context.Context, obj *chorus.Object) ([]*chorus.Permission, error)
	// Requests counts the requests sent and retried (0 for a store).
	Requests() (sent, retried int64)
}

// credentialReader is a Reader that also has the accounts and API keys
// (a store): Import copies those the target lacks.
type credentialReader interface {
	Credentials(ctx context.Context) ([]*chorus.Account, []*chorus.APIKey, error)
}

var (
	_ Reader           = (*Source)(nil)
	_ credentialReader = (*StoreReader)(nil)
)

// Import copies the source's services (all, or opt.Services) with their
// objects, items and permissions into st. st may be nil with DryRun when
// the target does not exist yet. It returns the report also on error.
func Import(ctx context.Context, src Reader, st chorus.Store, opt Options) (*Report, error) {
	im := &importer{src: src, st: st, opt: opt, log: opt.Logger, now: opt.Now, prec: datePrecision(src)}
	if im.log == nil {
		im.log = slog.Default()
	}
	if im.now == nil {
		im.now = time.Now
	}
	if im.opt.Concurrency <= 0 {
		im.opt.Concurrency = 4
	}
	im.start = im.now()
	im.base = opt.EventBase
	if im.base <= 0 {
		im.base = im.start.UnixMilli()
	}
	im.rep.DryRun = opt.DryRun
	err := im.run(ctx)
	im.mu.Lock()
	defer im.mu.Unlock()
	rep := im.rep
	rep.Requests, rep.Retries = src.Requests()
	rep.Elapsed = im.now().Sub(im.start)
	rep.ElapsedSeconds = rep.Elapsed.Seconds()
	if s := rep.Elapsed.Seconds(); s > 0 {
		rep.ObjectsPerSec = float64(rep.Objects.Created+rep.Objects.Updated+rep.Objects.Unchanged) / s
		rep.ItemsPerSec = float64(rep.Items.Created+rep.Items.Updated+rep.Items.Unchanged) / s
	}
	return &rep, err
}

func (im *importer) run(ctx context.Context) error {
	if err := im.src.Check(ctx); err != nil {
		return err
	}
	if im.st == nil && !im.opt.DryRun {
		return errors.New("transfer: no target store")
	}
	if !im.opt.DryRun {
		if err := checkTempDir(im.opt.TempDir); err != nil {
			return err
		}
	}
	svcs, err := im.src.Services(ctx)
	if err != nil {
		return fmt.Errorf("transfer: list services: %w", err)
	}
	svcs, err = selectServices(svcs, im.opt.Services)
	if err != nil {
		return err
	}
	var accounts []string
	for _, s := range svcs {
		if im.opt.Account.SID != "" && s.AccountSID != im.opt.Account.SID {
			return fmt.Errorf("transfer: service %s belongs to account %s, not %s", s.SID, s.AccountSID, im.opt.Account.SID)
		}
		if !slices.Contains(accounts, s.AccountSID) {
			accounts = append(accounts, s.AccountSID)
		}
	}
	im.rep.AccountSID = im.opt.Account.SID
	if len(accounts) > 0 {
		im.rep.AccountSID = accounts[0]
	}
	if len(svcs) == 0 {
		return nil
	}
	if !im.opt.DryRun {
		if cr, ok := im.src.(credentialReader); ok {
			if err := im.copyCredentials(ctx, cr); err != nil {
				return err
			}
		}
		for _, acct := range accounts {
			if err := im.ensureAccount(ctx, acct); err != nil {
				return err
			}
		}
	}
	// Objects are copied as their pages arrive: the source is listed once,
	// and at most a page and the objects in flight are held, whatever the
	// account's size. The total (and so the ETA) is known when the
	// listing ends.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(im.opt.Concurrency)
	listErr := im.listObjects(gctx, svcs, func(obj *chorus.Object) error {
		if err := gctx.Err(); err != nil {
			return err
		}
		im.mu.Lock()
		im.total++
		im.mu.Unlock()
		g.Go(func() error {
			n, err := im.importObject(gctx, obj)
			if err != nil {
				return fmt.Errorf("transfer: %s %s: %w", obj.Kind, obj.SID, err)
			}
			im.advance(n)
			return nil
		})
		return nil
	})
	im.mu.Lock()
	im.listed = true
	im.progress() // the total is final: the ETA can be told
	im.mu.Unlock()
	if err := g.Wait(); err != nil {
		return err // the copy's error; the listing then only saw the cancellation
	}
	return listErr
}

// listObjects imports each service's settings, then lists its objects of
// every kind into fn.
func (im *importer) listObjects(ctx context.Context, svcs []*chorus.Service, fn func(*chorus.Object) error) error {
	for _, svc := range svcs {
		ok, err := im.importService(ctx, svc)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		for _, k := range chorus.Kinds {
			if err := im.src.Objects(ctx, svc, k, fn); err != nil {
				return fmt.Errorf("transfer: list %ss of %s: %w", k, svc.SID, err)
			}
		}
	}
	return nil
}

// selectServices keeps the services named (by SID or unique name) in sel.
func selectServices(all []*chorus.Service, sel []string) ([]*chorus.Service, error) {
	if len(sel) == 0 {
		return all, nil
	}
	var out []*chorus.Service
	for _, name := range sel {
		var found *chorus.Service
		for _, s := range all {
			if s.SID == name || (s.UniqueName != "" && s.UniqueName == name) {
				found = s
				break
			}
		}
		if found == nil {
			return nil, fmt.Errorf("transfer: the source has no service %q", name)
		}
		if !slices.Contains(out, found) { // named twice (by SID and by unique name): copied once
			out = append(out, found)
		}
	}
	return out, nil
}

// advance counts an object done and reports the progress.
func (im *importer) advance(items int) {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.done++
	im.items += items
	im.progress()
}

// progress calls opt.Progress; im.mu must be held.
func (im *importer) progress() {
	if im.opt.Progress != nil {
		im.opt.Progress(Progress{ObjectsDone: im.done, ObjectsTotal: im.total, Listing: !im.listed, Items: im.items, Elapsed: im.now().Sub(im.start)})
	}
}

func (im *importer) count(f func(r *Report)) {
	im.mu.Lock()
	f(&im.rep)
	im.mu.Unlock()
}

func (im *importer) conflict(c Conflict) {
	im.log.Warn("import refused", "kind", c.Kind, "sid", c.SID, "reason", c.Reason)
	im.count(func(r *Report) { r.Conflicts = append(r.Conflicts, c) })
}

// ensureAccount creates the account (and API key) in the target when
// missing. Over REST, an existing account that has neither as its primary
// nor as its secondary the auth token the source just accepted (rotated at
// the source since the last run, or in the target) is refused and
// reported, and OverwriteCredentials makes that token the target's
// secondary: apps moved to the target keep the source's credentials, and
// the target's primary keeps working.
func (im *importer) ensureAccount(ctx context.Context, sid string) error {
	a := im.opt.Account
	// verified: the source accepted a.AuthToken (the run authenticated
	// with it); keyVerified: the same of the API key. Only what the source
	// accepted is stored: a token given beside a key, or a key beside a
	// token, may be stale.
	verified, keyVerified := false, true
	if src, ok := im.src.(*Source); ok {
		verified = a.AuthToken != "" && src.Username == sid && src.Password == a.AuthToken
		keyVerified = a.APIKeySID != "" && src.Username == a.APIKeySID && src.Password == a.APISecret
	}
	created, updated, keyCreated := false, false, false
	var refused *Conflict
	var notes []Conflict
	noteAcct := func(why string) { notes = append(notes, Conflict{Kind: "account", SID: sid, Reason: why}) }
	err := im.st.Update(ctx, func(tx chorus.Tx) error {
		created, updated, keyCreated, refused, notes = false, false, false, nil, nil
		now := im.now().UTC().Truncate(time.Millisecond)
		old, err := tx.Account(ctx, sid)
		retired := false // the source's auth token was retired in the target
		if err == nil && verified && old.AuthToken != a.AuthToken && old.SecondaryAuthToken != a.AuthToken {
			if retired, err = tx.SecretRetired(ctx, a.AuthToken); err != nil {
				return err
			}
		}
		switch {
		case retired:
			noteAcct("the auth token the source accepted for this import was retired in the target (a rotation there), " +
				"which never takes a retired secret back: not added; apps using it get 401 from the target")
		case err == nil && verified && old.AuthToken != a.AuthToken && old.SecondaryAuthToken == a.AuthToken:
			noteAcct("the target has the auth token the source accepted for this import " +
				"only as its secondary: its primary may be one the source revoked; promote the secondary (POST /v1/AuthTokens/Promote) " +
				"or start the nodes with the source's token")
		case err == nil && verified && old.AuthToken != a.AuthToken && old.SecondaryAuthToken != "":
			refused = &Conflict{Kind: "account", SID: sid, Reason: "the target does not have the auth token the source accepted for " +
				"this import, and has a secondary auth token already: delete or promote it (/v1/AuthTokens), then run with " +
				"--overwrite-credentials to add the source's as the secondary"}
		case err == nil && verified && old.AuthToken != a.AuthToken:
			if !im.opt.OverwriteCredentials {
				refused = &Conflict{Kind: "account", SID: sid, Reason: "the target does not have the auth token the source accepted for " +
					"this import (rotated at the source since the last run, or in the target): apps using the source's get 401 from the " +
					"target; run with --overwrite-credentials to add it as the target's secondary auth token"}
				break
			}
			// As the secondary: the target's primary, which its nodes or
			// its apps may use, keeps working; the AuthTokens API promotes
			// or deletes it.
			old.SecondaryAuthToken, old.SecondaryDateCreated = a.AuthToken, now
			if err := tx.PutAccount(ctx, old); err != nil {
				return err
			}
			updated = true
		case errors.Is(err, chorus.ErrNotFound):
			tok := a.AuthToken
			if _, isSource := im.src.(*Source); isSource && !verified && tok != "" {
				noteAcct("the auth token given was not checked by the source (the run authenticated with an API key): " +
					"the account was created with a new random auth token; start the target's nodes with the source's " +
					"TWILIO_AUTH_TOKEN, which makes it the account's")
				tok = ""
			}
			if tok == "" || a.SID != sid {
				tok = chorus.NewSecret(32)
			}
			if err := tx.PutAccount(ctx, &chorus.Account{SID: sid, AuthToken: tok, FriendlyName: "Imported account", DateCreated: now}); err != nil {
				return err
			}
			created = true
		case err != nil:
			return err
		}
		if a.APIKeySID == "" || a.APISecret == "" || a.SID != sid || !keyVerified {
			return nil
		}
		noteKey := func(why string) { notes = append(notes, Conflict{Kind: "api key", SID: a.APIKeySID, Reason: why}) }
		k, err := tx.APIKey(ctx, a.APIKeySID)
		switch {
		case err == nil:
			if k.Secret != a.APISecret {
				noteKey("the target has this key with another secret (rotated there, or its nodes' TWILIO_API_SECRET differs): " +
					"apps signing with the source's secret get 401 from the target")
			}
			return nil
		case !errors.Is(err, chorus.ErrNotFound):
			return err
		}
		if revoked, err := tx.APIKeyRevoked(ctx, a.APIKeySID); err != nil {
			return err
		} else if revoked {
			noteKey("revoked in the target, which never takes a revoked key back: not added; revoke it at the source too")
			return nil
		}
		if retired, err := tx.SecretRetired(ctx, a.APISecret); err != nil {
			return err
		} else if retired {
			noteKey("its secret was retired in the target (a rotation there), which never takes a retired secret back: not added")
			return nil
		}
		keyCreated = true
		return tx.PutAPIKey(ctx, &chorus.APIKey{SID: a.APIKeySID, AccountSID: sid, Secret: a.APISecret, FriendlyName: "Imported key", DateCreated: now})
	})
	if err != nil {
		return fmt.Errorf("transfer: create account %s: %w", sid, err)
	}
	im.rep.AccountCreated = im.rep.AccountCreated || created
	if created {
		im.rep.Credentials.AccountsCreated++
	}
	if updated {
		im.rep.Credentials.AccountsUpdated++
	}
	if keyCreated {
		im.rep.Credentials.KeysCreated++
	}
	if refused != nil {
		im.conflict(*refused)
	}
	if len(notes) > 0 {
		im.count(func(r *Report) { r.Notes = append(r.Notes, notes...) })
	}
	return nil
}

// copyCredentials copies the source's accounts and API keys (a store's:
// migrate). What the target lacks is created, except the source's main
// keys in an account that has main keys of its own.
//
// The target's operator credentials are its own: its auth tokens and main
// keys are what its nodes' TWILIO_* variables made them (after a leak, new
// ones), so they are never replaced or removed, and where they differ from
// the source's the run only notes it. The other keys may be stale (a key
// revoked at the source between two runs: the cut-over runs the copy once
// more after the old node stops) or newer (made in the target after it
// took over): keys the source no longer has, and keys whose secret
// differs, are refused and reported, as objects are, and
// OverwriteCredentials makes them the source's, removing those keys. A
// key the target revoked is never created again, whatever the options.
func (im *importer) copyCredentials(ctx context.Context, cr credentialReader) error {
	accts, keys, err := cr.Credentials(ctx)
	if err != nil {
		return fmt.Errorf("transfer: read credentials: %w", err)
	}
	keysOf := map[string]map[string]*chorus.APIKey{} // by account, by SID
	for _, k := range keys {
		if keysOf[k.AccountSID] == nil {
			keysOf[k.AccountSID] = map[string]*chorus.APIKey{}
		}
		keysOf[k.AccountSID][k.SID] = k
	}
	var cc credentialCopy
	err = im.st.Update(ctx, func(tx chorus.Tx) error {
		cc = credentialCopy{overwrite: im.opt.OverwriteCredentials} // Update may run fn again
		for _, a := range accts {
			if err := cc.account(ctx, tx, a); err != nil {
				return err
			}
			if err := cc.keys(ctx, tx, a.SID, keysOf[a.SID]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("transfer: copy credentials: %w", err)
	}
	slices.Sort(cc.counts.KeysRemoved)
	im.rep.Credentials = cc.counts
	for _, r := range cc.refused {
		im.conflict(r)
	}
	im.count(func(r *Report) { r.Notes = append(r.Notes, cc.notes...) })
	return nil
}

// credentialCopy is what copyCredentials' transaction did and found:
// its counts, the records it refused and the differences it only notes.
type credentialCopy struct {
	overwrite      bool // Options.OverwriteCredentials
	counts         CredentialCounts
	refused, notes []Conflict
}

// account creates the source's account a where the target lacks it; else
// the target's auth tokens stay, and a source's secondary is added where
// the target has none (with overwrite), or the difference is noted.
func (cc *credentialCopy) account(ctx context.Context, tx chorus.Tx, a *chorus.Account) error {
	old, err := tx.Account(ctx, a.SID)
	switch {
	case errors.Is(err, chorus.ErrNotFound):
		if err := tx.PutAccount(ctx, a); err != nil {
			return err
		}
		cc.counts.AccountsCreated++
	case err != nil:
		return err
	case cc.overwrite && old.SecondaryAuthToken == "" && a.SecondaryAuthToken != "" && a.SecondaryAuthToken != old.AuthToken:
		// Additive: the source's secondary (a rotation in progress there)
		// beside the target's primary, which stays.
		if retired, err := tx.SecretRetired(ctx, a.SecondaryAuthToken); err != nil {
			return err
		} else if retired {
			cc.notes = append(cc.notes, Conflict{Kind: "account", SID: a.SID, Reason: "the source's secondary auth token " +
				"was retired in the target (a rotation there), which never takes a retired secret back: not added"})
			return nil
		}
		old.SecondaryAuthToken, old.SecondaryDateCreated = a.SecondaryAuthToken, a.SecondaryDateCreated
		if err := tx.PutAccount(ctx, old); err != nil {
			return err
		}
		cc.counts.AccountsUpdated++
		if old.AuthToken != a.AuthToken {
			cc.notes = append(cc.notes, Conflict{Kind: "account", SID: a.SID, Reason: "its primary auth token differs from the " +
				"source's: the target keeps its own; the source's secondary was added"})
		}
	case old.AuthToken != a.AuthToken || old.SecondaryAuthToken != a.SecondaryAuthToken:
		cc.notes = append(cc.notes, Conflict{Kind: "account", SID: a.SID, Reason: "its auth tokens differ from the source's: the " +
			"target keeps its own (what its nodes' TWILIO_AUTH_TOKEN made them); start the nodes with the source's if it is " +
			"the current one, or run with --overwrite-credentials to add the source's secondary where the target has none"})
	}
	return nil
}

// keys reconciles account's keys in the target with the source's, src (by
// SID): see copyCredentials.
func (cc *credentialCopy) keys(ctx context.Context, tx chorus.Tx, account string, src map[string]*chorus.APIKey) error {
	have, err := tx.APIKeys(ctx, account)
	if err != nil {
		return err
	}
	had, ownMain := map[string]bool{}, false
	for _, k := range have {
		had[k.SID], ownMain = true, ownMain || k.Main
		if err := cc.targetKey(ctx, tx, k, src[k.SID]); err != nil {
			return err
		}
	}
	for _, k := range src {
		if had[k.SID] {
			continue
		}
		switch revoked, err := tx.APIKeyRevoked(ctx, k.SID); {
		case err != nil:
			return err
		case revoked:
			cc.notes = append(cc.notes, Conflict{Kind: "api key", SID: k.SID, Reason: "revoked in the target, which never " +
				"takes a revoked key back: revoke it at the source too"})
			continue
		}
		if retired, err := tx.SecretRetired(ctx, k.Secret); err != nil {
			return err
		} else if retired {
			cc.notes = append(cc.notes, Conflict{Kind: "api key", SID: k.SID, Reason: "its secret was retired in the target " +
				"(a rotation there), which never takes a retired secret back: not added"})
			continue
		}
		if k.Main && ownMain {
			cc.notes = append(cc.notes, Conflict{Kind: "api key", SID: k.SID, Reason: "a main key of the source, not added: the " +
				"target's account has main keys of its own (its nodes' TWILIO_API_KEY); tokens minted with it fail there"})
			continue
		}
		if err := tx.PutAPIKey(ctx, k); err != nil {
			return err
		}
		cc.counts.KeysCreated++
	}
	return nil
}

// targetKey settles the target's key k against the source's key of its
// SID, src (nil: the source has none): the same key stays, a main key is
// the target's and only noted, and another difference is refused or, with
// overwrite, made the source's (the key replaced, or removed).
func (cc *credentialCopy) targetKey(ctx context.Context, tx chorus.Tx, k, src *chorus.APIKey) error {
	var why string
	switch {
	case src != nil && src.Secret == k.Secret:
		return nil // the same key; its name and dates are the target's business
	case k.Main:
		cc.notes = append(cc.notes, Conflict{Kind: "api key", SID: k.SID, Reason: "a main key of the target that the source " +
			"does not have as it is: the target keeps it; it goes when the nodes start without it in TWILIO_API_KEY"})
		return nil
	case src != nil:
		why = "its secret differs from the source's key of that SID: run with --overwrite-credentials to take the source's"
	default:
		why = "the source no longer has this key (revoked at the source, or created in the target): " +
			"run with --overwrite-credentials to remove it"
	}
	switch {
	case !cc.overwrite:
		cc.refused = append(cc.refused, Conflict{Kind: "api key", SID: k.SID, Reason: why})
	case src != nil:
		if retired, err := tx.SecretRetired(ctx, src.Secret); err != nil {
			return err
		} else if retired && src.Secret != k.Secret {
			cc.notes = append(cc.notes, Conflict{Kind: "api key", SID: k.SID, Reason: "the source's secret of this key was " +
				"retired in the target (a rotation there), which never takes a retired secret back: kept the target's"})
			return nil
		}
		if err := tx.PutAPIKey(ctx, src); err != nil {
			return err
		}
		cc.counts.KeysUpdated++
	default:
		if err := tx.DeleteAPIKey(ctx, k.SID); err != nil {
			return err
		}
		cc.counts.KeysRemoved = append(cc.counts.KeysRemoved, k.SID)
	}
	return nil
}

// sameTime reports whether a and b are the same second: whether two rows
// are the same record (date created), or which side changed later, as far
// as REST shows dates.
func sameTime(a, b time.Time) bool { return sameTimeTo(a, b, time.Second) }

// sameTimeTo reports whether a and b agree to prec, the precision of the
// source's dates (datePrecision): a copy is unchanged only if its dates
// are the source's as precisely as the source shows them, so that a store
// copied after a REST import gets its dates' milliseconds back.
func sameTimeTo(a, b time.Time, prec time.Duration) bool {
	return a.Truncate(prec).Equal(b.Truncate(prec))
}

func sameTimePtr(a, b *time.Time, prec time.Duration) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return sameTimeTo(*a, *b, prec)
}

// datePrecision is how precisely the source shows dates: to the second
// over REST, to the millisecond from a store (StoreReader).
func datePrecision(src Reader) time.Duration {
	if p, ok := src.(interface{ DatePrecision() time.Duration }); ok {
		return p.DatePrecision()
	}
	return time.Second
}

func sameService(a, b *chorus.Service, prec time.Duration) bool {
	x, y := *a, *b
	x.DateCreated, y.DateCreated, x.DateUpdated, y.DateUpdated = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return x == y && sameTimeTo(a.DateCreated, b.DateCreated, prec) && sameTimeTo(a.DateUpdated, b.DateUpdated, prec)
}

// importService writes the service row; false means it was refused.
func (im *importer) importService(ctx context.Context, svc *chorus.Service) (bool, error) {
	var (
		old   *chorus.Service
		clash *chorus.Service
	)
	if im.st != nil {
		err := im.st.View(ctx, func(tx chorus.ReadTx) error {
			var err error
			old, err = tx.Service(ctx, svc.SID)
			if errors.Is(err, chorus.ErrNotFound) {
				old, err = nil, nil
			}
			if err != nil || svc.UniqueName == "" {
				return err
			}
			all, err := tx.Services(ctx, svc.AccountSID, chorus.ObjectQuery{})
			for _, s := range all {
				if s.UniqueName == svc.UniqueName && s.SID != svc.SID {
					clash = s
				}
			}
			return err
		})
		if err != nil {
			return false, fmt.Errorf("transfer: read service %s: %w", svc.SID, err)
		}
	}
	if err := checkService(svc); err != nil {
		im.conflict(Conflict{Kind: "service", SID: svc.SID, Reason: "invalid at the source: " + err.Error()})
		im.count(func(r *Report) { r.Services.Refused++ })
		return false, nil
	}
	if err := checkWebhookURL(svc.WebhookURL); err != nil {
		// Twilio takes URLs Chorus refuses (a raw space in the query):
		// copied, its every webhook would be given up on unsent. The service is
		// copied with the URL the target set instead, or without one,
		// and said so.
		c := *svc
		c.WebhookURL = ""
		if old != nil && old.AccountSID == svc.AccountSID {
			c.WebhookURL = old.WebhookURL
		}
		svc = &c
		if c.WebhookURL == "" {
			im.conflict(Conflict{Kind: "service", SID: svc.SID, UniqueName: svc.UniqueName, Reason: "its webhook URL is one Chorus refuses (" +
				chorus.AsError(err).Message + "): the service is copied without it; set one on the target"})
		}
	} else if err := (webhook.Policy{}).CheckURL(svc.WebhookURL); err != nil && svc.WebhookURL != "" {
		// A loopback or private address: what the target's nodes do with
		// it depends on --webhooks-allow-private, which the import
		// cannot see. Copied as it is, and said so.
		note := Conflict{Kind: "service", SID: svc.SID, UniqueName: svc.UniqueName, Reason: "its webhook URL (" +
			chorus.AsError(err).Message + ") is refused by nodes that run without --webhooks-allow-private: " +
			"they give up on every webhook of the service unsent; set a public URL on the target, or run the nodes with that flag"}
		im.count(func(r *Report) { r.Notes = append(r.Notes, note) })
	}
	var reason string
	switch {
	case old != nil && old.AccountSID != svc.AccountSID:
		reason = fmt.Sprintf("the target has service %s in another account (%s)", svc.SID, old.AccountSID)
	case clash != nil:
		reason = fmt.Sprintf("the target's service %s already has the unique name %q", clash.SID, svc.UniqueName)
	}
	if reason != "" && (!im.opt.Overwrite || old != nil && old.AccountSID != svc.AccountSID) {
		// --overwrite never crosses accounts: another tenant's service
		// is not the import's to delete.
		im.conflict(Conflict{Kind: "service", SID: svc.SID, UniqueName: svc.UniqueName, Reason: reason})
		im.count(func(r *Report) { r.Services.Refused++ })
		return false, nil
	}
	if old != nil && reason == "" && sameService(old, svc, im.prec) {
		im.count(func(r *Report) { r.Services.Unchanged++ })
		return true, nil
	}
	if old != nil && reason == "" && !im.opt.Overwrite && sameTime(old.DateCreated, svc.DateCreated) &&
		old.DateUpdated.Truncate(time.Second).After(svc.DateUpdated.Truncate(time.Second)) {
		// The import's copy (it keeps date_created), whose settings (ACLs,
		// webhooks) were changed on the target after the source's last
		// change: keep them, and compare its objects. A service the target
		// made itself (`chorus serve` with TWILIO_SYNC_SERVICE_SID before
		// the first import) takes the source's settings.
		im.conflict(Conflict{Kind: "service", SID: svc.SID, UniqueName: svc.UniqueName, Reason: fmt.Sprintf(
			"the target's service was changed at %s, after the source's last update (%s): its settings are kept",
			old.DateUpdated.UTC().Format(time.RFC3339), svc.DateUpdated.UTC().Format(time.RFC3339))})
		im.count(func(r *Report) { r.Services.Refused++ })
		return true, nil
	}
	if !im.opt.DryRun {
		err := im.st.Update(ctx, func(tx chorus.Tx) error {
			if clash != nil {
				if err := tx.DeleteService(ctx, clash.SID); err != nil {
					return err
				}
			}
			if old != nil && old.AccountSID != svc.AccountSID {
				if err := tx.DeleteService(ctx, old.SID); err != nil {
					return err
				}
			}
			return tx.PutService(ctx, svc)
		})
		if err != nil {
			return false, fmt.Errorf("transfer: write service %s: %w", svc.SID, err)
		}
	}
	im.count(func(r *Report) {
		if old == nil {
			r.Services.Created++
		} else {
			r.Services.Updated++
		}
	})
	return true, nil
}

// sameObject reports whether the target row t shows what the source shows
// of s (dates to prec: datePrecision).
func sameObject(t, s *chorus.Object, prec time.Duration) bool {
	return t.Kind == s.Kind && t.ServiceSID == s.ServiceSID && t.AccountSID == s.AccountSID &&
		t.UniqueName == s.UniqueName && t.Revision == s.Revision && t.CreatedBy == s.CreatedBy &&
		(s.Kind != chorus.KindDocument && s.Data == nil || bytes.Equal(t.Data, s.Data)) &&
		t.NextIndex >= s.NextIndex &&
		!t.DateUpdated.Equal(markerUpdated) &&
		sameTimeTo(t.DateCreated, s.DateCreated, prec) && sameTimeTo(t.DateUpdated, s.DateUpdated, prec) &&
		sameTimePtr(t.DateExpires, s.DateExpires, prec)
}

func sameItem(t, s *chorus.Item, prec time.Duration) bool {
	return t.Revision == s.Revision && t.CreatedBy == s.CreatedBy && bytes.Equal(t.Data, s.Data) &&
		sameTimeTo(t.DateCreated, s.DateCreated, prec) && sameTimeTo(t.DateUpdated, s.DateUpdated, prec) &&
		sameTimePtr(t.DateExpires, s.DateExpires, prec)
}

func itemRef(it *chorus.Item) chorus.ItemRef { return chorus.ItemRef{Index: it.Index, Key: it.Key} }

// target is what the store holds of one source object: its row, the
// object holding its unique name and its permissions. Its items are read
// a page at a time (items.go).
type target struct {
	bySID  *chorus.Object
	byName *chorus.Object
	perms  []*chorus.Permission
}

func (im *importer) readTarget(ctx context.Context, obj *chorus.Object) (*target, error) {
	t := &target{}
	if im.st == nil {
		return t, nil
	}
	err := im.st.View(ctx, func(tx chorus.ReadTx) error {
		var err error
		t.bySID, err = tx.Object(ctx, obj.Kind, "", obj.SID)
		if errors.Is(err, chorus.ErrNotFound) {
			t.bySID, err = nil, nil
		}
		if err != nil {
			return err
		}
		if obj.UniqueName != "" {
			t.byName, err = tx.ObjectByName(ctx, obj.Kind, obj.ServiceSID, obj.UniqueName)
			if errors.Is(err, chorus.ErrNotFound) {
				t.byName, err = nil, nil
			}
			if err != nil {
				return err
			}
		}
		if t.bySID == nil {
			return nil
		}
		if obj.Kind != chorus.KindStream {
			t.perms, err = tx.Permissions(ctx, obj.SID, chorus.PermissionQuery{})
		}
		return err
	})
	return t, err
}

// importObject copies one object and returns how many items it saw.
func (im *importer) importObject(ctx context.Context, obj *chorus.Object) (int, error) {
	collection := obj.Kind == chorus.KindList || obj.Kind == chorus.KindMap
	if err := checkObject(obj); err != nil {
		return 0, im.refuse(obj, "invalid at the source: "+err.Error())
	}
	t, err := im.readTarget(ctx, obj)
	if err != nil {
		return 0, fmt.Errorf("read target: %w", err)
	}
	now := im.now()
	var drop []string       // target objects to delete first (Overwrite)
	var replaced []Conflict // the live ones among them, for the report's notes
	if old := t.bySID; old != nil && (old.ServiceSID != obj.ServiceSID || old.AccountSID != obj.AccountSID || !sameTime(old.DateCreated, obj.DateCreated)) {
		reason := fmt.Sprintf("the target holds a different %s with this SID (service %s, created %s)", obj.Kind, old.ServiceSID, old.DateCreated.UTC().Format(time.RFC3339))
		if !im.opt.Overwrite || old.AccountSID != obj.AccountSID {
			// Never across accounts: a source names whatever SIDs it
			// likes, and another tenant's data is not the import's to
			// delete.
			return 0, im.refuse(obj, reason)
		}
		drop = append(drop, old.SID)
		replaced = append(replaced, Conflict{Kind: string(old.Kind), SID: old.SID, ServiceSID: old.ServiceSID, UniqueName: old.UniqueName,
			Reason: "deleted by --overwrite: " + reason + "; replaced by the source's"})
		t.bySID, t.perms = nil, nil // its items are not compared either: old is nil
	}
	if o := t.byName; o != nil && o.SID != obj.SID {
		if !o.Expired(now) && !im.opt.Overwrite {
			return 0, im.refuse(obj, fmt.Sprintf("the target's %s %s already has the unique name", obj.Kind, o.SID))
		}
		drop = append(drop, o.SID)
		if !o.Expired(now) {
			replaced = append(replaced, Conflict{Kind: string(o.Kind), SID: o.SID, ServiceSID: o.ServiceSID, UniqueName: o.UniqueName,
				Reason: fmt.Sprintf("deleted by --overwrite: it had the unique name of the source's %s %s", obj.Kind, obj.SID)})
		}
	}

	old := t.bySID
	if old != nil && !im.opt.Overwrite && writtenSince(old, obj) {
		return 0, im.refuse(obj, fmt.Sprintf("the target's copy was written at %s, after the source's last update (%s): it holds changes the source does not have",
			old.DateUpdated.UTC().Format(time.RFC3339), obj.DateUpdated.UTC().Format(time.RFC3339)))
	}
	unchanged := old != nil && sameObject(old, obj, im.prec)
	readItems := collection && (!unchanged || im.opt.Verify)

	spoolMem := im.opt.spoolMem
	if spoolMem <= 0 {
		spoolMem = defaultSpoolMem
	}
	d := &itemDiff{
		puts:      &spool{dir: im.opt.TempDir, max: spoolMem, discard: im.opt.DryRun},
		nextIndex: obj.NextIndex, // a store source knows it; REST does not show it
	}
	defer d.puts.close()
	if old != nil {
		d.nextIndex = max(d.nextIndex, old.NextIndex)
	}
	var seen map[chorus.ItemRef]struct{} // the source's items
	var invalid error
	if readItems {
		if old != nil {
			seen = make(map[chorus.ItemRef]struct{}) // for the deletions: a new object has none
		}
		if invalid, err = im.readSourceItems(ctx, obj, old, d, seen); err != nil {
			return 0, im.goneOr(obj, err)
		}
	}
	var perms []*chorus.Permission
	if obj.Kind != chorus.KindStream {
		if perms, err = im.src.Permissions(ctx, obj); err != nil {
			return 0, im.goneOr(obj, fmt.Errorf("read permissions: %w", err))
		}
	}
	if err := errors.Join(invalid, checkPermissions(perms)); err != nil {
		return 0, im.refuse(obj, "invalid at the source: "+err.Error())
	}
	if collection && old != nil {
		// The target's items the source does not have, and the highest
		// event id of them all.
		err := im.pageTarget(ctx, obj, func(page []*chorus.Item) {
			for _, it := range page {
				d.maxEvent = max(d.maxEvent, it.LastEventID)
				if !readItems {
					d.counts.Unchanged++
				} else if _, ok := seen[itemRef(it)]; !ok {
					d.dels = append(d.dels, itemRef(it))
					d.counts.Deleted++
				}
			}
		})
		if err != nil {
			return 0, err
		}
	}
	seen = nil

	// Event ids continue above everything the target has and above base.
	next := max(im.base, d.maxEvent)
	if old != nil {
		next = max(next, old.LastEventID)
	}
	itemCounts := d.counts
	nputs := d.puts.len()

	permPuts, permDels, permCounts := diffPermissions(t.perms, perms)

	objChanged := !unchanged || nputs > 0 || len(d.dels) > 0
	if !objChanged && len(permPuts) == 0 && len(permDels) == 0 {
		im.count(func(r *Report) {
			r.Objects.Unchanged++
			r.Items.Unchanged += itemCounts.Unchanged
			r.Permissions.Unchanged += permCounts.Unchanged
		})
		return itemCounts.Unchanged, nil
	}
	final := *obj
	final.NextIndex = d.nextIndex
	switch {
	case !objChanged:
		final.LastEventID = old.LastEventID // permissions only
	case nputs > 0:
		final.LastEventID = next + int64(nputs) // the id of the last item written
	default:
		final.LastEventID = next + 1 // a new event id for the new state
	}
	if old != nil && final.Kind == chorus.KindList && final.Data == nil {
		final.Data = old.Data // list context: REST does not show it (a store does)
	}

	if !im.opt.DryRun {
		err := im.write(ctx, obj, old, &final, drop, d.puts, next, d.dels, permPuts, permDels)
		if errors.Is(err, errRefused) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
	}
	im.count(func(r *Report) {
		r.Objects.Deleted += len(replaced)
		r.Notes = append(r.Notes, replaced...)
		if old == nil {
			r.Objects.Created++
		} else if objChanged {
			r.Objects.Updated++
		} else {
			r.Objects.Unchanged++
		}
		addCounts(&r.Items, itemCounts)
		addCounts(&r.Permissions, permCounts)
	})
	return itemCounts.Created + itemCounts.Updated + itemCounts.Unchanged, nil
}

func addCounts(dst *Counts, c Counts) {
	dst.Created += c.Created
	dst.Updated += c.Updated
	dst.Unchanged += c.Unchanged
	dst.Deleted += c.Deleted
	dst.Refused += c.Refused
}

// writtenSince reports whether the target's copy of an object was
// written after the source's last update of it: by the target's own
// clients after a cut-over, since an import keeps the source's
// date_updated. Such a copy holds changes the source does not have, and
// copying the source over it would silently undo them (and, for lists and
// maps, delete the items added since: an item write updates its
// container's date_updated too). REST shows whole seconds, so the target's
// date is compared at that precision; the marker of an interrupted copy
// is older than any source date.
func writtenSince(target, source *chorus.Object) bool {
	return target.DateUpdated.Truncate(time.Second).After(source.DateUpdated.Truncate(time.Second))
}

// goneOr counts obj as gone at the source when err is the source's 404
// with Twilio's code 20404 (the object was deleted or expired after it was
// listed) and returns nil; any other error is returned as it is.
func (im *importer) goneOr(obj *chorus.Object, err error) error {
	var se *SourceError
	if !errors.As(err, &se) || se.Status != http.StatusNotFound || se.Code != 20404 {
		return err // a 404 without Twilio's code is not the resource's answer (a proxy's page, say)
	}
	im.log.Info("object gone at the source; not copied", "kind", obj.Kind, "sid", obj.SID, "service", obj.ServiceSID)
	im.count(func(r *Report) { r.Objects.Gone++ })
	return nil
}

func (im *importer) refuse(obj *chorus.Object, reason string) error {
	im.conflict(Conflict{Kind: string(obj.Kind), SID: obj.SID, ServiceSID: obj.ServiceSID, UniqueName: obj.UniqueName, Reason: reason})
	im.count(func(r *Report) { r.Objects.Refused++ })
	return nil
}

func diffPermissions(have, want []*chorus.Permission) (puts []*chorus.Permission, dels []string, c Counts) {
	cur := make(map[string]*chorus.Permission, len(have))
	for _, p := range have {
		cur[p.Identity] = p
	}
	seen := make(map[string]bool, len(want))
	for _, p := range want {
		seen[p.Identity] = true
		switch old := cur[p.Identity]; {
		case old != nil && *old == *p:
			c.Unchanged++
		case old != nil:
			c.Updated++
			puts = append(puts, p)
		default:
			c.Created++
			puts = append(puts, p)
		}
	}
	for _, p := range have {
		if !seen[p.Identity] {
			dels = append(dels, p.Identity)
			c.Deleted++
		}
	}
	return puts, dels, c
}

// write applies one object's changes: the object row first (a new
// collection with the marker date), then the items in batches, then the
// permissions and the final object row. An interruption anywhere leaves a
// row that the next run sees as changed.
//
// The items of puts get the event ids after next, in order.
func (im *importer) write(ctx context.Context, src, old, final *chorus.Object, drop []string, puts *spool, next int64, dels []chorus.ItemRef, permPuts []*chorus.Permission, permDels []string) error {
	collection := final.Kind == chorus.KindList || final.Kind == chorus.KindMap
	insert := old == nil
	pending := puts.len()
	if insert && collection && (pending > 0 || len(dels) > 0) {
		// The row must exist before its items; marked until they all are.
		first := *final
		first.DateUpdated = markerUpdated
		err := im.st.Update(ctx, func(tx chorus.Tx) error {
			for _, sid := range drop {
				if err := tx.DeleteObject(ctx, sid); err != nil {
					return err
				}
			}
			return tx.InsertObject(ctx, &first)
		})
		if errors.Is(err, chorus.ErrUniqueNameExists) {
			_ = im.refuse(src, "the target got another object with this unique name during the import")
			return errRefused
		}
		if err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		insert, drop = false, nil
	}
	readPut, err := puts.reader()
	if err != nil {
		return err
	}
	batch := make([]*chorus.Item, 0, min(pending, itemBatch))
	for pending > 0 || len(dels) > 0 {
		batch = batch[:0]
		for range min(pending, itemBatch) {
			it, err := readPut()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("write items: spool: %d of its items missing: %w", pending-len(batch), err)
			}
			next++
			it.LastEventID = next
			batch = append(batch, it)
		}
		pending -= len(batch)
		var dbatch []chorus.ItemRef
		if pending == 0 {
			m := min(len(dels), itemBatch)
			dbatch, dels = dels[:m], dels[m:]
		}
		err := im.st.Update(ctx, func(tx chorus.Tx) error {
			// Lock the object first, as the engine's item writes do, so
			// that a sweep of a live target (which re-reads an expired
			// item under that lock before deleting it) cannot delete an
			// item this batch has just written.
			if _, err := tx.Object(ctx, final.Kind, final.ServiceSID, final.SID); err != nil {
				return err
			}
			for _, it := range batch {
				if err := tx.PutItem(ctx, it); err != nil {
					return err
				}
			}
			for _, ref := range dbatch {
				if err := tx.DeleteItem(ctx, final.SID, ref); err != nil && !errors.Is(err, chorus.ErrNotFound) {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("write items: %w", err)
		}
	}
	err = im.st.Update(ctx, func(tx chorus.Tx) error {
		for _, sid := range drop {
			if err := tx.DeleteObject(ctx, sid); err != nil {
				return err
			}
		}
		if insert {
			if err := tx.InsertObject(ctx, final); err != nil {
				return err
			}
		} else if err := tx.UpdateObject(ctx, final); err != nil {
			return err
		}
		for _, p := range permPuts {
			if err := tx.PutPermission(ctx, p); err != nil {
				return err
			}
		}
		for _, id := range permDels {
			if err := tx.DeletePermission(ctx, final.SID, id); err != nil && !errors.Is(err, chorus.ErrNotFound) {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, chorus.ErrUniqueNameExists) {
		_ = im.refuse(src, "the target got another object with this unique name during the import")
		return errRefused
	}
	if err != nil {
		return fmt.Errorf("write object: %w", err)
	}
	return nil
}

// checkTempDir makes sure the spools can be written to dir (os.TempDir()
// when empty) before anything is copied: a missing or read-only directory
// is otherwise found only when a list or map first has more than a few
// MiB of changes, hours into an import.
func checkTempDir(dir string) error {
	f, err := os.CreateTemp(dir, "chorus-import-check-*")
	if err != nil {
		if dir == "" {
			dir = os.TempDir()
		}
		return fmt.Errorf("transfer: temporary directory %s (TMPDIR) for the items of large lists and maps: %w", dir, err)
	}
	name := f.Name()
	return errors.Join(f.Close(), os.Remove(name))
}
