package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	natsbus "github.com/chorus-sync/chorus/internal/bus/nats"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/gateway"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/store/postgres"
	"github.com/chorus-sync/chorus/internal/webhook"
	"github.com/chorus-sync/chorus/token"
)

// version is set at link time: -ldflags "-X main.version=v1.2.3".
var version = ""

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed
	exitUsage = 2 // bad flags, arguments or configuration
)

// Environment variables.
const (
	envDataDir    = "CHORUS_DATA_DIR"
	envPort       = "PORT"
	envAccountSID = "TWILIO_ACCOUNT_SID"
	envAuthToken  = "TWILIO_AUTH_TOKEN"
	envAPIKey     = "TWILIO_API_KEY"
	envAPISecret  = "TWILIO_API_SECRET"
	envServiceSID = "TWILIO_SYNC_SERVICE_SID"
)

const usage = `usage:
  chorus serve [--listen ADDR] [--data-dir DIR] [--public-url URL] [--token-ttl 1h] [--log-level info]
               [--store postgres://...] [--bus nats://...] [--node NAME] [--dev-tokens[=false]]
               [--tls-cert FILE --tls-key FILE] [--max-conns N] [--max-conns-per-ip N] [--trusted-proxies CIDR,...]
               [--bus-creds FILE | --bus-nkey FILE] [--bus-tls-ca FILE] [--bus-tls-cert FILE --bus-tls-key FILE]
  chorus token --identity NAME [--ttl 1h] [--service IS...] [--data-dir DIR | --store postgres://...]
  chorus admin credentials [--data-dir DIR | --store postgres://...]
  chorus admin keys list|create [--name NAME]|revoke SK... [--url http://127.0.0.1:3000] [--data-dir DIR | --store postgres://...]
  chorus migrate --store postgres://... [--from-data-dir DIR [--overwrite] [--overwrite-credentials] [--json]]
  chorus import [--from https://sync.twilio.com] [--service IS...|NAME] [--data-dir DIR | --store postgres://...]
                [--dry-run] [--overwrite] [--overwrite-credentials] [--verify] [--json] [--concurrency 4]   (source credentials: TWILIO_*)
  chorus backup [--data-dir DIR] --out FILE
  chorus restore [--data-dir DIR] FILE
  chorus bench --url URL[,URL...] [--conns 1000] [--docs 1] [--writers 4] [--rate 200/s] [--duration 30s] [--via client|rest]
  chorus version
`

// getenv is os.Getenv; a variable so that in-process tests can replace it.
var getenv = os.Getenv

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first signal starts a graceful stop; the next ends the
		// process at once, once the scratch copies are removed.
		<-ctx.Done()
		again := make(chan os.Signal, 1)
		signal.Notify(again, os.Interrupt, syscall.SIGTERM)
		stop()
		forcedExit(again)
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usageError is a mistake in the command line or configuration (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// run runs the command line args (without the program name) and returns
// the exit code. Errors are one line on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	cmd := args[0]
	switch cmd {
	case "serve":
		err = cmdServe(ctx, args[1:], stderr)
	case "token":
		err = cmdToken(ctx, args[1:], stdout)
	case "admin":
		switch {
		case len(args) >= 2 && args[1] == "credentials":
			cmd = "admin credentials"
			err = cmdCredentials(ctx, args[2:], stdout, stderr)
		case len(args) >= 2 && args[1] == "keys":
			cmd = "admin keys"
			err = cmdKeys(ctx, args[2:], stdout)
		case len(args) >= 2 && (args[1] == "-h" || args[1] == "-help" || args[1] == "--help" || args[1] == "help"):
			err = flag.ErrHelp
		default:
			err = usagef("admin: expected subcommand \"credentials\" or \"keys\"")
		}
	case "migrate":
		err = cmdMigrate(ctx, args[1:], stdout, stderr)
	case "bench":
		err = cmdBench(ctx, args[1:], stdout)
	case "import":
		err = cmdImport(ctx, args[1:], stdout, stderr)
	case "backup":
		err = cmdBackup(ctx, args[1:], stdout)
	case "restore":
		err = cmdRestore(ctx, args[1:], stdout)
	case "version":
		err = cmdVersion(args[1:], stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		err = usagef("unknown command %q (want serve, token, admin, migrate, import, backup, restore, bench or version)", cmd)
		cmd = ""
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		if he := (helpError{}); errors.As(err, &he) {
			fmt.Fprintf(stdout, "\nchorus %s flags:\n", cmd)
			he.fs.SetOutput(stdout)
			he.fs.PrintDefaults()
		}
		return exitOK
	}
	prefix := "chorus: "
	if cmd != "" {
		prefix = "chorus " + cmd + ": "
	}
	fmt.Fprintln(stderr, prefix+oneLine(err.Error()))
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	var ce interface{ ExitCode() int }
	if errors.As(err, &ce) {
		return ce.ExitCode()
	}
	return exitError
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// newFlags returns a flag set that reports errors instead of printing.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// helpError is -h or --help given to a command: run prints the usage and
// the command's flags.
type helpError struct{ fs *flag.FlagSet }

func (helpError) Error() string { return flag.ErrHelp.Error() }
func (helpError) Unwrap() error { return flag.ErrHelp }

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return helpError{fs}
		}
		return usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func defaultDataDir() string {
	if d := getenv(envDataDir); d != "" {
		return d
	}
	return "./chorus-data"
}

func defaultListen() string {
	if p := getenv(envPort); p != "" {
		return ":" + p
	}
	return "127.0.0.1:3000"
}

// keepAbandonedSetting is webhook.Config.KeepAbandoned for the flag's
// value: 0 (keep none) is negative there, where 0 means the default.
func keepAbandonedSetting(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("serve")
	listen := fs.String("listen", defaultListen(), "address to listen on")
	dataDir := fs.String("data-dir", defaultDataDir(), "data directory")
	publicURL := fs.String("public-url", getenv("CHORUS_PUBLIC_URL"), "externally visible base URL (default: CHORUS_PUBLIC_URL, else from each request)")
	ttl := fs.Duration("token-ttl", time.Hour, "lifetime of tokens from GET /token (max 24h)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	storeURL := storeFlag(fs, "postgres://… to use PostgreSQL (default: CHORUS_STORE_URL, else SQLite in --data-dir)")
	busURL := secretFlag(fs, "bus", getenv("CHORUS_BUS_URL"), "nats://… to fan out through NATS (default: CHORUS_BUS_URL, else in-process)")
	busPrefix := fs.String("bus-prefix", getenv("CHORUS_BUS_PREFIX"), "the NATS subject prefix, the same on every node of a cluster; clusters sharing a NATS server each need their own (default: CHORUS_BUS_PREFIX, else chorus)")
	node := fs.String("node", getenv("CHORUS_NODE_NAME"), "this node's name in logs and to NATS (default: CHORUS_NODE_NAME, else the host name)")
	allowPrivate := fs.Bool("webhooks-allow-private", false, "let webhooks reach loopback and private addresses, for development and tests (default: CHORUS_WEBHOOKS_ALLOW_PRIVATE)")
	keepAbandoned := fs.Duration("webhooks-keep-abandoned", webhook.DefaultKeepAbandoned, "how long webhooks given up on are kept, to be listed and replayed in the console (0 = not kept)")
	wsMaxConns := fs.Int("ws-max-conns", 0, "cap on this node's websocket connections, refused with 503 beyond (0 = no cap)")
	wsMaxUnauth := fs.Int("ws-max-unauth-per-ip", defaultWSMaxUnauthPerIP, "cap on websocket connections per client IP that have not completed init, refused with 429 beyond (0 = no cap; behind a proxy it counts the proxy: raise it or set 0)")
	wsMaxPerIdentity := fs.Int("ws-max-per-identity", defaultWSMaxPerIdentity, "cap on one identity's websocket sessions on this node, so that one token cannot take every connection; an init beyond is refused with 429, which the SDK retries (0 = no cap)")
	wsMaxQueries := fs.Int("ws-max-queries-per-identity", defaultWSMaxQueriesPerIdentity, "cap on the live queries of one identity's websocket sessions on this node (each session holds at most 20), so that one user cannot make every write to a Map cost seconds of matching; a query beyond is refused with 400 54419, a re-subscription waits for room (0 = no cap; apps that share one identity among many sessions need it off or high)")
	wsQueueBudget := fs.Int("ws-queue-budget", gateway.DefaultSendQueueBudget>>20, "MiB that all websocket sessions' send queues may hold together; past it, the stuck sessions (nothing written for 2 s) of the identity that holds the most, over an eighth of it beyond 64 KiB each, are closed as slow consumers until it is under the budget again; such an identity may not push more past an eighth more, nor anyone past a quarter more (0 = only each session's 8 MiB)")
	wsCoalesce := fs.Duration("ws-coalesce", gateway.DefaultCoalesceInterval, "while the websocket writer pool is behind, write live events to a session at most this often, merged (0 = write each as soon as possible)")
	wsReplayLimit := fs.Int("ws-replay-limit", gateway.DefaultReplayLimit, "events one subscription request replays at most; past it the client is told the replay was interrupted and subscribes again from where it got to")
	startWait := fs.Duration("start-wait", time.Minute, "how long to keep trying to reach a PostgreSQL store or NATS bus that does not answer at start (0 = give up at once)")
	pprofListen := fs.String("pprof-listen", "", "serve Go's /debug/pprof/ profiling endpoints on this loopback address (off by default)")
	sec := addSecurityFlags(fs)
	var devTokens devTokensFlag
	if v := getenv(envDevTokens); v != "" {
		if err := devTokens.Set(v); err != nil {
			return usagef("invalid %s: %v", envDevTokens, err)
		}
	}
	fs.Var(&devTokens, "dev-tokens", "serve the quickstart's /token endpoint: true, false or auto (default: CHORUS_DEV_TOKENS, else auto: on with generated credentials on a loopback address and no --public-url or --trusted-proxies)")
	devTokensPublic := fs.Bool("dev-tokens-public", false, "let /token answer requests for the --public-url host and requests forwarded by a proxy, not only localhost (needs --dev-tokens; default: "+envDevTokensPublic+")")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := envSwitch(fs, "webhooks-allow-private", "CHORUS_WEBHOOKS_ALLOW_PRIVATE", allowPrivate); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usagef("invalid --log-level %q", *logLevel)
	}
	if *ttl < time.Second || *ttl > token.MaxTTL {
		return usagef("invalid --token-ttl %v: want 1s to 24h", *ttl)
	}
	if *wsMaxConns < 0 || *wsMaxUnauth < 0 || *wsMaxPerIdentity < 0 || *wsMaxQueries < 0 || *wsQueueBudget < 0 {
		return usagef("invalid --ws-max-conns, --ws-max-unauth-per-ip, --ws-max-per-identity, --ws-max-queries-per-identity or --ws-queue-budget: want 0 or more")
	}
	if *startWait < 0 {
		return usagef("invalid --start-wait %v: want 0 or more", *startWait)
	}
	if *keepAbandoned < 0 || *keepAbandoned > 90*24*time.Hour {
		return usagef("invalid --webhooks-keep-abandoned %v: want 0 to 2160h (90 days)", *keepAbandoned)
	}
	if *wsReplayLimit < 1 {
		return usagef("invalid --ws-replay-limit %d: want 1 or more", *wsReplayLimit)
	}
	if *wsCoalesce < 0 || *wsCoalesce > time.Second {
		return usagef("invalid --ws-coalesce %v: want 0 to 1s", *wsCoalesce)
	}
	if *publicURL != "" {
		u, err := checkPublicURL(*publicURL)
		if err != nil {
			return usagef("invalid %s %q: %v", source(fs, "public-url", "CHORUS_PUBLIC_URL"), *publicURL, err)
		}
		*publicURL = u
	}
	if *busPrefix != "" {
		// Checked before the store opens, as every setting is.
		if *busURL == "" {
			return usagef("%s without --bus: only nodes on NATS use it", source(fs, "bus-prefix", "CHORUS_BUS_PREFIX"))
		}
		if err := natsbus.CheckPrefix(*busPrefix); err != nil {
			return usagef("invalid %s: %v", source(fs, "bus-prefix", "CHORUS_BUS_PREFIX"), err)
		}
	}
	creds, err := envCredentials(true)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	warnSecretAlphabet(logger, creds)
	raiseProcs(logger)
	if gc := tuneGC(logger); gc != nil {
		defer gc.stop()
	}

	cfg := server.Config{
		Listen:                  *listen,
		DataDir:                 *dataDir,
		PublicURL:               *publicURL,
		TokenTTL:                *ttl,
		Creds:                   creds,
		Logger:                  logger,
		StoreURL:                *storeURL,
		BusURL:                  *busURL,
		BusPrefix:               *busPrefix,
		NodeName:                *node,
		WebhooksAllowPrivate:    *allowPrivate,
		Webhooks:                webhook.Config{KeepAbandoned: keepAbandonedSetting(*keepAbandoned)},
		WSMaxConns:              *wsMaxConns,
		WSMaxUnauthPerAddr:      *wsMaxUnauth,
		WSMaxPerIdentity:        *wsMaxPerIdentity,
		WSMaxQueriesPerIdentity: *wsMaxQueries,
		WSQueueBudget:           queueBudgetSetting(*wsQueueBudget),
		WSCoalesce:              coalesceSetting(*wsCoalesce),
		WSReplayLimit:           *wsReplayLimit,
		DevTokens:               devTokens.mode,
		StartWait:               *startWait,
	}
	if err := applyDevTokensPublic(fs, &cfg, *devTokensPublic); err != nil {
		return err
	}
	if err := sec.apply(&cfg); err != nil {
		return err
	}
	if *pprofListen != "" {
		if err := loopbackAddr(*pprofListen); err != nil {
			return err
		}
	}
	// A port in use fails here, before New creates the data directory and
	// its credentials. The port is listened on for good only once New
	// returns: until then a connection is refused, which a proxy's health
	// check and retry understand, rather than left in the listen backlog
	// for as long as the store takes to answer (--start-wait).
	if err := checkPortFree(ctx, *listen); err != nil {
		return err
	}
	if *pprofListen != "" {
		stop, err := servePprof(ctx, *pprofListen, logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	ln, err := server.Listen(ctx, *listen)
	if err != nil {
		_ = srv.Close()
		return err
	}
	where := []any{"addr", ln.Addr().String(), "account_sid", srv.Credentials().AccountSID}
	if *storeURL == "" {
		where = append(where, "data_dir", *dataDir)
	} else {
		where = append(where, "store", "postgres")
	}
	if *busURL != "" {
		where = append(where, "bus", "nats")
	}
	if *allowPrivate {
		where = append(where, "webhooks_allow_private", true)
	}
	if cfg.Transport.TLSCert != "" {
		where = append(where, "tls", true)
	}
	reloadOnHUP(ctx, srv, logger)
	logger.Info("listening", where...)
	ran := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			logger.Info("shutting down: answering the requests in flight; a second signal stops at once",
				"drain_timeout", server.DefaultShutdownTimeout)
		case <-ran:
		}
	}()
	err = srv.Run(ctx, ln)
	close(ran)
	logger.Info("stopped")
	return err
}

func cmdToken(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("token")
	identity := fs.String("identity", "", "the token's identity (required)")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime (max 24h)")
	service := fs.String("service", "", "Sync service SID (default: TWILIO_SYNC_SERVICE_SID or the default service)")
	endpoint := fs.String("endpoint-id", "", "data_sync endpoint_id (optional)")
	dataDir := fs.String("data-dir", defaultDataDir(), "data directory holding the stored credentials")
	storeURL := storeFlag(fs, "postgres://… holding the stored credentials (default: CHORUS_STORE_URL, unless --data-dir is named)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *identity == "" {
		return usagef("--identity is required")
	}
	if !chorus.ValidIdentity(*identity) {
		return usagef("invalid --identity: want 1 to %d characters of valid UTF-8 without NUL", chorus.MaxIdentityLen)
	}
	if chorus.ReservedIdentity(*identity) {
		// Chorus refuses such a token everywhere (20106): its changes
		// would pass for the REST API's.
		return usagef("invalid --identity %q: reserved for changes made through the REST API", *identity)
	}
	if *ttl < time.Second || *ttl > token.MaxTTL {
		return usagef("invalid --ttl %v: want 1s to 24h", *ttl)
	}
	creds, err := envCredentials(false)
	if err != nil {
		return err
	}
	if creds.APIKeySID == "" {
		envService := creds.ServiceSID // TWILIO_SYNC_SERVICE_SID alone
		if creds, err = deploymentCredentials(ctx, fs, *storeURL, *dataDir); err != nil {
			return err
		}
		if envService != "" {
			creds.ServiceSID = envService
		}
	}
	if *service != "" {
		creds.ServiceSID = *service
	}
	tok, err := token.Mint(token.Params{
		AccountSID: creds.AccountSID,
		APIKeySID:  creds.APIKeySID,
		APISecret:  creds.APISecret,
		Identity:   *identity,
		ServiceSID: creds.ServiceSID,
		EndpointID: *endpoint,
		TTL:        *ttl,
	})
	if err != nil {
		return usagef("%v", err)
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

func cmdCredentials(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("admin credentials")
	dataDir := fs.String("data-dir", defaultDataDir(), "data directory")
	storeURL := storeFlag(fs, "postgres://… to read the credentials a node generated there (default: CHORUS_STORE_URL, unless --data-dir is named)")
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := deploymentCredentials(ctx, fs, *storeURL, *dataDir)
	if errors.Is(err, errKeyRevoked) {
		// The rest is good: print it, and say why the key is missing.
		fmt.Fprintf(stderr, "chorus admin credentials: %v\n", oneLine(err.Error()))
		_, err = fmt.Fprintf(stdout, "%s=%s\n%s=%s\n%s=%s\n",
			envAccountSID, c.AccountSID, envAuthToken, c.AuthToken, envServiceSID, c.ServiceSID)
		return err
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s=%s\n%s=%s\n%s=%s\n%s=%s\n%s=%s\n",
		envAccountSID, c.AccountSID, envAuthToken, c.AuthToken,
		envAPIKey, c.APIKeySID, envAPISecret, c.APISecret, envServiceSID, c.ServiceSID)
	return err
}

func cmdVersion(args []string, stdout io.Writer) error {
	if err := parse(newFlags("version"), args); err != nil {
		return err
	}
	v := version
	if v == "" {
		v = "devel"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	_, err := fmt.Fprintf(stdout, "chorus %s %s %s/%s\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}

// envCredentials reads the TWILIO_* variables. None set is the zero value.
// serve needs the account, auth token, API key and secret; token needs the
// account, API key and secret. The service is optional.
func envCredentials(serve bool) (engine.Credentials, error) {
	c := engine.Credentials{
		AccountSID: getenv(envAccountSID),
		AuthToken:  getenv(envAuthToken),
		APIKeySID:  getenv(envAPIKey),
		APISecret:  getenv(envAPISecret),
		ServiceSID: getenv(envServiceSID),
	}
	required := map[string]string{envAccountSID: c.AccountSID, envAPIKey: c.APIKeySID, envAPISecret: c.APISecret}
	order := []string{envAccountSID, envAuthToken, envAPIKey, envAPISecret}
	if serve {
		required[envAuthToken] = c.AuthToken
	}
	set := c.AccountSID != "" || c.APIKeySID != "" || c.APISecret != "" || (serve && (c.AuthToken != "" || c.ServiceSID != ""))
	if !set {
		// token: TWILIO_SYNC_SERVICE_SID alone still picks the service.
		return engine.Credentials{ServiceSID: c.ServiceSID}, nil
	}
	var missing []string
	for _, name := range order {
		if v, ok := required[name]; ok && v == "" {
			missing = append(missing, name)
		}
	}
	switch {
	case len(missing) > 0:
		return engine.Credentials{}, usagef("incomplete credentials in the environment: %s not set (set all of %s, or none)",
			strings.Join(missing, ", "), strings.Join(keys(required, order), ", "))
	case !chorus.IsSID(chorus.PrefixAccount, c.AccountSID):
		return engine.Credentials{}, usagef("%s is not an account SID (AC followed by 32 hex digits)", envAccountSID)
	case !chorus.IsSID(chorus.PrefixAPIKey, c.APIKeySID):
		return engine.Credentials{}, usagef("%s is not an API key SID (SK followed by 32 hex digits)", envAPIKey)
	case c.ServiceSID != "" && !chorus.IsSID(chorus.PrefixService, c.ServiceSID):
		return engine.Credentials{}, usagef("%s is not a Sync service SID (IS followed by 32 hex digits)", envServiceSID)
	case serve && len(c.AuthToken) < engine.MinSecretLen:
		return engine.Credentials{}, usagef("%s is %d characters long: want at least %d (for example `openssl rand -hex 16`)",
			envAuthToken, len(c.AuthToken), engine.MinSecretLen)
	case len(c.APISecret) < engine.MinSecretLen:
		return engine.Credentials{}, usagef("%s is %d characters long: want at least %d (for example `openssl rand -hex 16`)",
			envAPISecret, len(c.APISecret), engine.MinSecretLen)
	}
	return c, nil
}

// warnSecretAlphabet warns about an auth token or API secret with
// characters other than ASCII letters and digits: twilio-go (every version
// to 1.31 at least) refuses such credentials before sending a request
// (errors 21222 and 21224). Twilio's, and those Chorus makes, are letters
// and digits.
func warnSecretAlphabet(logger *slog.Logger, c engine.Credentials) {
	for _, v := range []struct{ name, value string }{{envAuthToken, c.AuthToken}, {envAPISecret, c.APISecret}} {
		if strings.IndexFunc(v.value, func(r rune) bool {
			return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9')
		}) >= 0 {
			logger.Warn(v.name + " has characters other than letters and digits: the twilio-go helper library refuses " +
				"such credentials before sending anything (error 21224); use letters and digits only (`openssl rand -hex 16`)")
		}
	}
}

func keys(m map[string]string, order []string) []string {
	var out []string
	for _, k := range order {
		if _, ok := m[k]; ok {
			out = append(out, k)
		}
	}
	return out
}

// deploymentCredentials reads the credentials a node stored where the
// command's flags point: the PostgreSQL store of --store (which defaults
// to CHORUS_STORE_URL) unless --data-dir is named, else the embedded store
// in dataDir. A command run beside a node on PostgreSQL used to sign with
// the credentials of a leftover ./chorus-data, which that node refuses.
func deploymentCredentials(ctx context.Context, fs *flag.FlagSet, storeURL, dataDir string) (engine.Credentials, error) {
	switch {
	case flagSet(fs, "store") && flagSet(fs, "data-dir"):
		return engine.Credentials{}, usagef("--store and --data-dir do not go together")
	case storeURL != "" && !flagSet(fs, "data-dir"):
		return postgresCredentials(ctx, source(fs, "store", "CHORUS_STORE_URL"), storeURL)
	}
	return storedCredentials(ctx, dataDir)
}

// postgresCredentials reads the operator's credentials from the
// PostgreSQL store at storeURL, without creating or upgrading its schema
// (nodes of an earlier version may be running on it).
func postgresCredentials(ctx context.Context, from, storeURL string) (engine.Credentials, error) {
	if !strings.HasPrefix(storeURL, "postgres://") && !strings.HasPrefix(storeURL, "postgresql://") {
		return engine.Credentials{}, usagef("%s wants postgres://…", from)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := postgres.OpenConfig(ctx, storeURL, postgres.Config{ReadOnly: true, NoBatch: true}, logger)
	if err != nil {
		return engine.Credentials{}, fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	bus := mem.New()
	defer bus.Close()
	c, err := engine.New(engine.Config{Store: st, Bus: bus, Logger: logger}).StoredCredentials(ctx)
	switch {
	case errors.Is(err, engine.ErrOperatorKeyGone):
		return c, keyRevoked("the PostgreSQL store")
	case errors.Is(err, chorus.ErrNotFound):
		return engine.Credentials{}, fmt.Errorf("no credentials in the PostgreSQL store (start a node on it once, or set %s, %s and %s)",
			envAccountSID, envAPIKey, envAPISecret)
	case err != nil:
		return engine.Credentials{}, fmt.Errorf("read credentials: %w", err)
	}
	return c, nil
}

// errKeyRevoked: the stored credentials' API key was revoked (after a
// leak, say) and no node has made a new one yet. The account SID and auth
// token (and service) are still returned with it: what needs only those
// goes on.
var errKeyRevoked = errors.New("the stored API key was revoked")

func keyRevoked(where string) error {
	return fmt.Errorf("%w: the API key stored in %s was revoked; restart `chorus serve` to generate a new one (it logs its SID, and `chorus admin credentials` prints it), or set %s, %s and %s",
		errKeyRevoked, where, envAccountSID, envAPIKey, envAPISecret)
}

// storedCredentials reads the credentials that `chorus serve` stored in
// dataDir. It never writes: it refuses a directory without a database
// rather than create one, and a database without credentials rather than
// generate them (which is `chorus serve`'s job).
func storedCredentials(ctx context.Context, dataDir string) (engine.Credentials, error) {
	path := filepath.Join(dataDir, server.DBFile)
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return engine.Credentials{}, fmt.Errorf("no credentials: %s does not exist (run `chorus serve --data-dir %s` once, or set %s, %s and %s)",
				path, dataDir, envAccountSID, envAPIKey, envAPISecret)
		}
		return engine.Credentials{}, err
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := openForReading(ctx, dataDir, path, logger)
	if err != nil {
		return engine.Credentials{}, fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	bus := mem.New()
	defer bus.Close()
	eng := engine.New(engine.Config{Store: st, Bus: bus, Logger: logger})
	c, err := eng.StoredCredentials(ctx)
	switch {
	case errors.Is(err, engine.ErrOperatorKeyGone):
		return c, keyRevoked(path)
	case errors.Is(err, chorus.ErrNotFound):
		return engine.Credentials{}, fmt.Errorf("no credentials in %s (run `chorus serve --data-dir %s` once, or set %s, %s and %s)",
			path, dataDir, envAccountSID, envAPIKey, envAPISecret)
	case err != nil:
		return engine.Credentials{}, fmt.Errorf("read credentials: %w", err)
	}
	return c, nil
}

// checkPortFree listens on addr and closes it at once: it fails as serve
// would on a port in use, without holding the port.
func checkPortFree(ctx context.Context, addr string) error {
	ln, err := server.Listen(ctx, addr)
	if err != nil {
		return err
	}
	return ln.Close()
}

// cmdMigrate brings a PostgreSQL schema up to date (nodes also migrate on
// start; both are safe to run concurrently). With --from-data-dir it then
// copies an embedded store into it (migrate_copy.go).
func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("migrate")
	storeURL := storeFlag(fs, "postgres://… (default: CHORUS_STORE_URL)")
	from := addCopyFlags(fs)
	afterRestore := fs.Bool("after-restore", false, "the database was just restored from a dump: move its event ids up so that clients that saw later events catch up (run before starting the nodes)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if !strings.HasPrefix(*storeURL, "postgres://") && !strings.HasPrefix(*storeURL, "postgresql://") {
		return usagef("migrate: --store postgres://… is required (SQLite migrates itself on start)")
	}
	if *afterRestore && from.dataDir != "" {
		return usagef("migrate: --after-restore and --from-data-dir do not go together")
	}
	for _, name := range []string{"overwrite", "overwrite-credentials", "json"} {
		if flagSet(fs, name) && from.dataDir == "" {
			return usagef("migrate: --%s applies to a copy: it needs --from-data-dir", name)
		}
	}
	if err := postgres.Migrate(ctx, *storeURL); err != nil {
		return err
	}
	progress := stdout
	if from.asJSON {
		progress = stderr // stdout holds the JSON summary alone
	}
	fmt.Fprintln(progress, "schema up to date")
	if *afterRestore {
		base, err := postgres.RenumberEvents(ctx, *storeURL, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "event ids moved up to %d and above, so that clients that saw later events catch up\n", base)
	}
	if from.dataDir != "" {
		return copyStore(ctx, from, *storeURL, stdout, stderr)
	}
	return nil
}

// storeFlag defines --store, whose default is CHORUS_STORE_URL: a DSN
// that may hold a password, which -h must never print (a plain string
// flag shows its default).
func storeFlag(fs *flag.FlagSet, usage string) *string {
	return secretFlag(fs, "store", getenv("CHORUS_STORE_URL"), usage)
}

// secretFlag defines a string flag whose default (from the environment)
// may be or hold a secret, which -h must never print.
func secretFlag(fs *flag.FlagSet, name, value, usage string) *string {
	s := &secretString{v: value}
	fs.Var(s, name, usage)
	return &s.v
}

// secretString is a string flag that help shows no value of.
type secretString struct{ v string }

func (s *secretString) String() string     { return "" }
func (s *secretString) Set(v string) error { s.v = v; return nil }

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// queueBudgetSetting turns --ws-queue-budget (MiB, 0 = none) into
// server.Config.WSQueueBudget (bytes, negative = none).
func queueBudgetSetting(mib int) int64 {
	if mib == 0 {
		return -1
	}
	return int64(mib) << 20
}

// coalesceSetting maps --ws-coalesce to gateway.Config.CoalesceInterval,
// where 0 means the default and a negative value means off.
func coalesceSetting(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// checkPublicURL checks an http(s) base URL (a scheme, a host, an
// optional port and path prefix) and returns it as the server renders it:
// the scheme in lower case, no trailing "/". Every resource URL Chorus
// renders starts with it, so anything else (a query, a fragment,
// credentials, a space in the host, an empty port) would be repeated,
// broken, in each.
func checkPublicURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "", errors.New("not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", errors.New("want http:// or https://")
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return "", errors.New("want http(s)://host[:port][/path]")
	case u.User != nil:
		return "", errors.New("credentials do not belong in it")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#"):
		return "", errors.New("no query or fragment")
	case strings.ContainsAny(u.Hostname(), " \t%") || strings.HasSuffix(u.Host, ":"):
		return "", errors.New("invalid host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", errors.New("invalid port")
		}
	}
	return u.Scheme + "://" + u.Host + strings.TrimSuffix(u.EscapedPath(), "/"), nil
}
