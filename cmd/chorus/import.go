package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/store/postgres"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
	"github.com/chorus-sync/chorus/internal/transfer"
)

// Exit codes of import besides exitOK, exitError and exitUsage.
const (
	exitCredentials = 3 // the source refused the credentials; nothing was written
	exitRefused     = 4 // the import finished, but refused conflicting objects
)

// codeError is an error with its own exit code.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }
func (e *codeError) ExitCode() int { return e.code }

func cmdImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("import")
	from := fs.String("from", transfer.DefaultSource, "the source's base URL (Twilio, or another Chorus)")
	accountSID := fs.String("account-sid", getenv(envAccountSID), "the source account SID (default: TWILIO_ACCOUNT_SID)")
	authToken := secretFlag(fs, "auth-token", getenv(envAuthToken), "the source auth token (default: TWILIO_AUTH_TOKEN, which unlike the flag does not show in ps)")
	apiKey := fs.String("api-key", getenv(envAPIKey), "a source API key SID, used instead of the auth token (default: TWILIO_API_KEY)")
	apiSecret := secretFlag(fs, "api-secret", getenv(envAPISecret), "the API key's secret (default: TWILIO_API_SECRET, which unlike the flag does not show in ps)")
	var services []string
	fs.Func("service", "copy only this service (SID or unique name; repeat or comma-separate); default all", func(v string) error {
		n := len(services)
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				services = append(services, s)
			}
		}
		if len(services) == n {
			// An unset variable (--service "$SVC") must not widen the
			// copy to every service.
			return errors.New("names no service")
		}
		return nil
	})
	dataDir := fs.String("data-dir", defaultDataDir(), "target data directory (embedded store)")
	storeURL := storeFlag(fs, "target postgres://… (default: CHORUS_STORE_URL, else SQLite in --data-dir)")
	dryRun := fs.Bool("dry-run", false, "report what would be copied; write nothing")
	overwrite := fs.Bool("overwrite", false, "replace target objects that hold a source object's SID or unique name")
	overwriteCreds := fs.Bool("overwrite-credentials", false, "add the auth token the source accepted as the target's secondary when the target lacks it")
	verify := fs.Bool("verify", false, "compare the items of every list and map, also of those unchanged since the last run")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	concurrency := fs.Int("concurrency", 4, "objects copied at once")
	attempts := fs.Int("attempts", 8, "tries per source request (429, 5xx, dropped connections) before giving up")
	if err := parse(fs, args); err != nil {
		return err
	}
	// A target named on the command line wins over CHORUS_STORE_URL:
	// --data-dir alone means the embedded store there.
	switch dataNamed, storeNamed := flagSet(fs, "data-dir"), flagSet(fs, "store"); {
	case dataNamed && storeNamed && *storeURL != "":
		return usagef("--data-dir and --store name two targets: give one")
	case dataNamed && !storeNamed:
		*storeURL = ""
	}
	base, err := url.Parse(strings.TrimRight(*from, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" || base.Path != "" || base.RawQuery != "" || base.User != nil {
		return usagef("invalid --from %q: want http(s)://host[:port], credentials in --account-sid and --auth-token or --api-key and --api-secret", redactURL(*from))
	}
	if *concurrency < 1 || *concurrency > 64 {
		return usagef("invalid --concurrency %d: want 1 to 64", *concurrency)
	}
	if *attempts < 1 {
		return usagef("invalid --attempts %d: want at least 1", *attempts)
	}
	if *accountSID != "" && !chorus.IsSID(chorus.PrefixAccount, *accountSID) {
		return usagef("invalid account SID %q: want AC followed by 32 hex digits", *accountSID)
	}
	src := &transfer.Source{BaseURL: base.String(), Attempts: *attempts}
	acct := transfer.Account{SID: *accountSID}
	switch {
	case *apiKey != "":
		if !chorus.IsSID(chorus.PrefixAPIKey, *apiKey) || *apiSecret == "" {
			return usagef("--api-key needs an SK… SID and --api-secret (or TWILIO_API_KEY and TWILIO_API_SECRET)")
		}
		if *accountSID == "" {
			return usagef("--api-key needs --account-sid (or TWILIO_ACCOUNT_SID), as the helper libraries do")
		}
		src.Username, src.Password = *apiKey, *apiSecret
		acct.APIKeySID, acct.APISecret = *apiKey, *apiSecret
		acct.AuthToken = *authToken
	case *accountSID != "" && *authToken != "":
		src.Username, src.Password = *accountSID, *authToken
		acct.AuthToken = *authToken
	default:
		return usagef("no source credentials: set --account-sid and --auth-token, or --account-sid, --api-key and --api-secret (or the TWILIO_* variables)")
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	src.Logger = logger
	for _, name := range []string{"auth-token", "api-secret"} {
		if flagSet(fs, name) {
			logger.Warn("--" + name + " on the command line shows in the process list (ps) while the import runs: prefer the TWILIO_* variables")
		}
	}

	// The credentials first: a refusal must leave the target untouched.
	if err := src.Check(ctx); err != nil {
		if errors.Is(err, transfer.ErrCredentials) {
			why := "HTTP 401"
			var se *transfer.SourceError
			if errors.As(err, &se) {
				why = fmt.Sprintf("HTTP %d %s (code %d)", se.Status, se.Message, se.Code)
			}
			return &codeError{exitCredentials, fmt.Errorf("%s refused the credentials of %s (%s); nothing was written", base.Host, src.Username, why)}
		}
		return fmt.Errorf("cannot read %s: %w; nothing was written", base.Host, err)
	}

	st, err := openTarget(ctx, *storeURL, *dataDir, *dryRun, logger)
	if err != nil {
		return err
	}
	if st != nil {
		defer st.Close()
	}
	if !*dryRun {
		unlock, err := lockImport(ctx, st, *dataDir)
		if err != nil {
			return err
		}
		defer unlock()
	}

	var prog *progress
	if isTerminal(stderr) {
		prog = &progress{w: stderr}
	}
	opt := transfer.Options{
		Services: services, DryRun: *dryRun, Overwrite: *overwrite, OverwriteCredentials: *overwriteCreds, Verify: *verify,
		Concurrency: *concurrency, Account: acct, Logger: logger,
	}
	if prog != nil {
		opt.Progress = prog.update
	}
	rep, err := transfer.Import(ctx, src, st, opt)
	if prog != nil {
		prog.finish()
	}
	if *asJSON {
		out := struct {
			*transfer.Report
			Error string `json:"error,omitempty"`
		}{Report: rep}
		if err != nil {
			out.Error = err.Error()
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if werr := enc.Encode(out); werr != nil && err == nil {
			err = werr
		}
	} else if err == nil || rep.AccountSID != "" { // a run that failed before it began has nothing to sum up
		writeSummary(stdout, rep, targetName(*storeURL, *dataDir))
	}
	if err != nil {
		if rep.Services.Created+rep.Services.Updated+rep.Services.Unchanged+rep.Objects.Created+rep.Objects.Updated+rep.Objects.Unchanged == 0 {
			return err // nothing was copied: nothing to continue
		}
		again := "run the same command again to continue"
		if chorus.ErrorCode(err) == chorus.ErrUnavailable.Code {
			again = "once the target can write again (a full disk: free space), " + again
		}
		return fmt.Errorf("%w (copied before the failure: %s; %s)", err, copied(rep), again)
	}
	if n := len(rep.Conflicts); n > 0 {
		return &codeError{exitRefused, fmt.Errorf("refused %d conflicting records (listed above); --overwrite replaces objects, --overwrite-credentials credentials", n)}
	}
	return nil
}

// openTarget opens the store the import writes into. A dry run against a
// data directory without a database has no target (nothing exists yet).
func openTarget(ctx context.Context, storeURL, dataDir string, dryRun bool, logger *slog.Logger) (chorus.Store, error) {
	switch {
	case strings.HasPrefix(storeURL, "postgres://") || strings.HasPrefix(storeURL, "postgresql://"):
		st, err := postgres.Open(ctx, storeURL, logger)
		if err != nil {
			return nil, fmt.Errorf("open target: %w", err)
		}
		return st, nil
	case storeURL != "":
		return nil, usagef("invalid --store: want postgres://… (or none for SQLite in --data-dir)")
	}
	path := filepath.Join(dataDir, server.DBFile)
	if dryRun {
		// A dry run writes nothing, its schema upgrade included
		// (openForReading reads an upgraded snapshot), and has no
		// target without a database.
		st, err := openForReading(ctx, dataDir, path, logger)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("open target: %w", err)
		}
		return st, nil
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	st, err := sqlite.Open(ctx, path, logger)
	if err != nil {
		return nil, fmt.Errorf("open target: %w", err)
	}
	return st, nil
}

// snapshotStore is a store opened on a snapshot in its own directory,
// removed on Close.
type snapshotStore struct {
	chorus.Store
	dir       string
	stopFresh func()
	forget    func() // scratch.add(dir)'s
}

func (s snapshotStore) Close() error {
	s.stopFresh()
	err := s.Store.Close()
	if rerr := os.RemoveAll(s.dir); err == nil {
		err = rerr
	}
	s.forget()
	return err
}

// snapshotPrefix names a snapshot's directory in the data directory.
const snapshotPrefix = ".chorus-snapshot-"

// openSnapshot opens a snapshot of the database at path, made in a new
// directory inside dataDir (the filesystem that holds the database has
// room for it; /tmp may not).
func openSnapshot(ctx context.Context, dataDir, path string, logger *slog.Logger) (chorus.Store, error) {
	// A run killed while reading one left a whole copy of the database in
	// the node's data directory: gone once untouched for an hour (a
	// running one touches its own every minute).
	removeAbandoned(dataDir, func(name string) bool { return strings.HasPrefix(name, snapshotPrefix) })
	dir, err := os.MkdirTemp(dataDir, snapshotPrefix)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	forget := scratch.add(dir)
	snap := filepath.Join(dir, server.DBFile)
	if err := sqlite.Snapshot(ctx, path, snap); err != nil {
		os.RemoveAll(dir)
		forget()
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	st, err := sqlite.Open(ctx, snap, logger)
	if err != nil {
		os.RemoveAll(dir)
		forget()
		return nil, fmt.Errorf("open snapshot: %w", err)
	}
	return snapshotStore{Store: st, dir: dir, stopFresh: sqlite.KeepFresh(dir), forget: forget}, nil
}

// openForReading opens the embedded store at path, in dataDir, to read it
// without changing it: when its schema is older than this binary's,
// opening it would upgrade it, after which the server of the previous
// version that may still run on it could not start again, so an upgraded
// snapshot is read instead (the original is not changed).
func openForReading(ctx context.Context, dataDir, path string, logger *slog.Logger) (chorus.Store, error) {
	behind, err := sqlite.SchemaBehind(ctx, path)
	if err != nil {
		return nil, err
	}
	if behind > 0 {
		logger.Info("the store's schema is older than this binary's; reading an upgraded snapshot of it (the original is not changed)",
			"path", path, "migrations", behind)
		return openSnapshot(ctx, dataDir, path, logger)
	}
	return sqlite.Open(ctx, path, logger)
}

func copied(r *transfer.Report) string {
	return fmt.Sprintf("%d services, %d objects, %d items, %d permissions",
		r.Services.Created+r.Services.Updated+r.Services.Unchanged,
		r.Objects.Created+r.Objects.Updated+r.Objects.Unchanged,
		r.Items.Created+r.Items.Updated+r.Items.Unchanged,
		r.Permissions.Created+r.Permissions.Updated+r.Permissions.Unchanged)
}

// targetName names the store an import or copy writes into, for its
// summary: PostgreSQL by host and database, or the embedded store's file.
func targetName(storeURL, dataDir string) string {
	if storeURL != "" {
		if u, err := url.Parse(storeURL); err == nil && u.Host != "" {
			return "PostgreSQL " + u.Host + u.Path
		}
		return "PostgreSQL"
	}
	return "SQLite " + filepath.Join(dataDir, server.DBFile)
}

func writeSummary(w io.Writer, r *transfer.Report, target string) {
	verb := "import"
	if r.DryRun {
		verb = "dry run (nothing written)"
	}
	fmt.Fprintf(w, "%s of account %s into %s in %.1fs:\n", verb, r.AccountSID, target, r.Elapsed.Seconds())
	line := func(name string, c transfer.Counts) {
		fmt.Fprintf(w, "  %-12s %7d new  %7d updated  %7d unchanged  %7d deleted  %5d refused\n",
			name, c.Created, c.Updated, c.Unchanged, c.Deleted, c.Refused)
	}
	line("services", r.Services)
	line("objects", r.Objects)
	line("items", r.Items)
	line("permissions", r.Permissions)
	if r.Objects.Gone > 0 {
		fmt.Fprintf(w, "  %d objects were deleted or expired at the source during the import: not copied\n", r.Objects.Gone)
	}
	fmt.Fprintf(w, "  %.0f objects/s, %.0f items/s; %d requests to the source (%d retried)\n",
		r.ObjectsPerSec, r.ItemsPerSec, r.Requests, r.Retries)
	if r.AccountCreated {
		fmt.Fprintf(w, "  created account %s in the target\n", r.AccountSID)
	}
	if c := r.Credentials; c.AccountsCreated+c.AccountsUpdated+c.KeysCreated+c.KeysUpdated+len(c.KeysRemoved) > 0 {
		fmt.Fprintf(w, "  credentials: %d accounts new, %d given the source's token as secondary; %d API keys new, %d updated, %d removed\n",
			c.AccountsCreated, c.AccountsUpdated, c.KeysCreated, c.KeysUpdated, len(c.KeysRemoved))
		for _, sid := range c.KeysRemoved {
			fmt.Fprintf(w, "  removed API key %s: the source no longer has it\n", sid)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s %s: %s\n", n.Kind, n.SID, n.Reason)
	}
	for _, c := range r.Conflicts {
		name := ""
		if c.UniqueName != "" {
			name = fmt.Sprintf(" %q", c.UniqueName)
		}
		fmt.Fprintf(w, "  refused %s %s%s: %s\n", c.Kind, c.SID, name, c.Reason)
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress draws one status line on a terminal, at most 5 times a second.
type progress struct {
	w    io.Writer
	last time.Time
	p    transfer.Progress
}

func (p *progress) update(tp transfer.Progress) {
	p.p = tp
	if time.Since(p.last) < 200*time.Millisecond && (tp.Listing || tp.ObjectsDone < tp.ObjectsTotal) {
		return
	}
	p.last = time.Now()
	p.draw()
}

func (p *progress) draw() {
	tp := p.p
	secs := tp.Elapsed.Seconds()
	var orate, irate float64
	if secs > 0 {
		orate, irate = float64(tp.ObjectsDone)/secs, float64(tp.Items)/secs
	}
	eta, more := "?", "+" // no ETA before the listing's end gives the total
	if !tp.Listing {
		more = ""
	}
	if orate > 0 && !tp.Listing && tp.ObjectsTotal >= tp.ObjectsDone {
		eta = time.Duration(float64(tp.ObjectsTotal-tp.ObjectsDone) / orate * float64(time.Second)).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "\r\033[Kobjects %d/%d%s  items %d  %.0f objects/s  %.0f items/s  ETA %s",
		tp.ObjectsDone, tp.ObjectsTotal, more, tp.Items, orate, irate, eta)
}

func (p *progress) finish() {
	if !p.last.IsZero() {
		p.draw()
		fmt.Fprintln(p.w)
	}
}

// redactURL hides whatever precedes the last "@" of a URL given on the
// command line (userinfo: a token, or user:password, which an error
// message must not print back, however the URL parses).
func redactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		scheme, rest = "", raw
	} else {
		scheme += "://"
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		return scheme + "…@" + rest[i+1:]
	}
	return raw
}
