package servertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chorus-sync/chorus"
	natsbus "github.com/chorus-sync/chorus/internal/bus/nats"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/logtest"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/store/postgres"
	"github.com/chorus-sync/chorus/internal/webhook"
	"github.com/chorus-sync/chorus/token"
)

// Defaults of the test services.
const (
	DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	DefaultNATSURL     = "nats://127.0.0.1:4222"
)

// Environment variables that override the defaults; CHORUS_TEST_LOG=1
// streams the nodes' logs to stderr.
const (
	EnvPostgres = "CHORUS_TEST_POSTGRES"
	EnvNATS     = "CHORUS_TEST_NATS"
	EnvLog      = "CHORUS_TEST_LOG"
)

const (
	serviceTimeout = 10 * time.Second
	stopTimeout    = 15 * time.Second
)

// PostgresURL is the test PostgreSQL server's URL.
func PostgresURL() string {
	if u := os.Getenv(EnvPostgres); u != "" {
		return u
	}
	return DefaultPostgresURL
}

// NATSURL is the test NATS server's URL.
func NATSURL() string {
	if u := os.Getenv(EnvNATS); u != "" {
		return u
	}
	return DefaultNATSURL
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewDatabase creates an empty database chorus_st_<random> on the test
// PostgreSQL server, drops it (disconnecting whoever is left) when the test
// ends, and returns its URL. It fails t if the server is unreachable.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return newDatabase(t, "")
}

// NewDatabaseEncoded is NewDatabase for a database in the given server
// encoding (such as LATIN1 or SQL_ASCII), created from template0 with the
// C locale, which suits every encoding.
func NewDatabaseEncoded(t testing.TB, encoding string) string {
	t.Helper()
	if !encodingName.MatchString(encoding) {
		t.Fatalf("servertest: %q is not an encoding name", encoding)
	}
	return newDatabase(t, fmt.Sprintf(" ENCODING '%s' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0", encoding))
}

var encodingName = regexp.MustCompile(`^[A-Z0-9_]+$`)

// newDatabase creates the database with the CREATE DATABASE options opts.
func newDatabase(t testing.TB, opts string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), serviceTimeout)
	defer cancel()
	admin := PostgresURL()
	c, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("servertest: PostgreSQL is unreachable at %s: %v\n"+
			"The cluster tests need a server: set %s, or start the local one:\n"+
			"  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start", redact(admin), err, EnvPostgres)
	}
	defer c.Close(context.Background())
	name := "chorus_st_" + randomHex(6)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name+opts); err != nil {
		t.Fatalf("servertest: CREATE DATABASE %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("servertest: drop database %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("servertest: DROP DATABASE %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(admin, name)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	return dsn
}

// Connect opens a session on the PostgreSQL database dsn, closed when the
// test ends. params are runtime parameters set over the DSN's (such as
// client_encoding); nil keeps the DSN's.
func Connect(t testing.TB, dsn string, params map[string]string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), serviceTimeout)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("servertest: connect to %s: %v", redact(dsn), err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// WaitForLockWait returns once a session of c's database waits for a
// lock. It fails t if done delivers first (what ended without waiting) or
// after 10 s; what names the waiter in those messages.
func WaitForLockWait(t testing.TB, c *pgx.Conn, done <-chan error, what string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("%s did not wait for the lock: %v", what, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never waited for the lock", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// withDatabase returns the postgres:// URL u with its database replaced.
func withDatabase(u, db string) (string, error) {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "postgres" && p.Scheme != "postgresql") {
		return "", fmt.Errorf("%s must be a postgres:// URL, got %q", EnvPostgres, redact(u))
	}
	p.Path = "/" + db
	return p.String(), nil
}

// CheckNATS fails t unless the test NATS server accepts connections.
func CheckNATS(t testing.TB) string {
	t.Helper()
	u := NATSURL()
	host := u
	if p, err := url.Parse(u); err == nil && p.Host != "" {
		host = p.Host
	}
	c, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		t.Fatalf("servertest: the cluster tests need a nats-server at %s (set %s): %v\n"+
			"Start one with: start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "+
			"-a 127.0.0.1 -p 4222 -l /var/log/nats-server.log", host, EnvNATS, err)
	}
	c.Close()
	return u
}

// NewCredentials returns fresh valid credentials with a service.
func NewCredentials() engine.Credentials {
	return engine.Credentials{
		AccountSID: chorus.NewSID(chorus.PrefixAccount),
		AuthToken:  chorus.NewSecret(32),
		APIKeySID:  chorus.NewSID(chorus.PrefixAPIKey),
		APISecret:  chorus.NewSecret(32),
		ServiceSID: chorus.NewSID(chorus.PrefixService),
	}
}

// Config configures NewCluster.
type Config struct {
	// Nodes is the number of nodes started at once (default 3).
	Nodes int
	// Creds are every node's credentials; zero means NewCredentials.
	Creds engine.Credentials
	// BusOptions returns extra NATS options for node i (0-based), e.g.
	// natsbus.WithFaults; nil means none.
	BusOptions func(i int) []natsbus.Option
	// NATSURL, when set, returns the URL node i (0-based) connects to NATS
	// at, given the cluster's, e.g. a relay that a test cuts; nil means
	// the cluster's.
	NATSURL func(i int, clusterURL string) string
	// StoreURL, likewise, returns the PostgreSQL URL of node i given the
	// cluster's database; nil means the database itself.
	StoreURL func(i int, dsn string) string
	// Webhooks overrides the webhook dispatcher's timings and limits.
	// Webhooks may reach loopback receivers (WebhooksAllowPrivate).
	Webhooks webhook.Config
	// Clock, when set, returns node i's wall clock (webhook.Config.Clock);
	// nil means time.Now for every node.
	Clock func(i int) func() time.Time
}

// Cluster is a set of in-process nodes sharing one database and one NATS
// subject prefix.
type Cluster struct {
	DSN    string // the cluster's database
	NATS   string // the NATS server URL
	Prefix string // the cluster's NATS subject prefix
	Creds  engine.Credentials
	Nodes  []*Node // in start order

	t      testing.TB
	cfg    Config
	logger *slog.Logger
	logs   *logtest.Buffer
}

// Node is one running node.
type Node struct {
	Name   string
	URL    string // http://127.0.0.1:port
	WSURL  string // ws://127.0.0.1:port/v3/wsconnect
	Server *server.Server
	Bus    *natsbus.Bus

	cluster  *Cluster
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
	runErr   error
}

// NewCluster starts cfg.Nodes nodes on a fresh database and subject prefix.
// They stop, and the database is dropped, when the test ends; on failure
// the nodes' logs are attached to the test output.
func NewCluster(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Creds == (engine.Credentials{}) {
		cfg.Creds = NewCredentials()
	}
	c := &Cluster{
		NATS:   CheckNATS(t),
		Prefix: "chorus_st_" + randomHex(6),
		Creds:  cfg.Creds,
		t:      t,
		cfg:    cfg,
		logs:   &logtest.Buffer{},
	}
	var w io.Writer = c.logs
	if os.Getenv(EnvLog) != "" {
		w = io.MultiWriter(c.logs, os.Stderr)
	}
	c.logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c.DSN = NewDatabase(t)
	// Registered after NewDatabase: runs before the drop.
	t.Cleanup(func() {
		for _, n := range c.Nodes {
			if err := n.Stop(); err != nil {
				t.Errorf("servertest: stop %s: %v", n.Name, err)
			}
		}
		if t.Failed() {
			t.Logf("servertest: node logs:\n%s", c.logs.String())
		}
	})
	// Like `chorus migrate` before a rollout; nodes migrate on start too.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := postgres.Migrate(ctx, c.DSN); err != nil {
		t.Fatalf("servertest: migrate: %v", err)
	}
	for i := range cfg.Nodes {
		n := c.StartNode(t)
		if i == 0 {
			// The first node leads, as tests expect: it takes the lock
			// before the others start (its own first check may come
			// after theirs).
			deadline := time.Now().Add(15 * time.Second)
			for !n.Leader(ctx) {
				if time.Now().After(deadline) {
					t.Fatalf("servertest: %s did not become the leader", n.Name)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	return c
}

// StartNode starts one more node and appends it to Nodes.
func (c *Cluster) StartNode(t testing.TB) *Node {
	t.Helper()
	i := len(c.Nodes)
	name := fmt.Sprintf("n%d", i)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// As the server does for a bus it opens itself.
	var started atomic.Pointer[server.Server]
	resync := func(publishesLost bool) {
		if s := started.Load(); s != nil {
			s.BusLost(publishesLost)
		}
	}
	opts := []natsbus.Option{natsbus.WithPrefix(c.Prefix), natsbus.WithName(name), natsbus.WithReconnectHandler(resync)}
	if c.cfg.BusOptions != nil {
		opts = append(opts, c.cfg.BusOptions(i)...)
	}
	natsURL := c.NATS
	if c.cfg.NATSURL != nil {
		natsURL = c.cfg.NATSURL(i, c.NATS)
	}
	bus, err := natsbus.Open(ctx, natsURL, c.logger, opts...)
	if err != nil {
		t.Fatalf("servertest: node %s: %v", name, err)
	}
	storeURL := c.DSN
	if c.cfg.StoreURL != nil {
		storeURL = c.cfg.StoreURL(i, c.DSN)
	}
	hooks := c.cfg.Webhooks
	if c.cfg.Clock != nil {
		hooks.Clock = c.cfg.Clock(i)
	}
	srv, err := server.New(ctx, server.Config{
		Creds:           c.Creds,
		Logger:          c.logger,
		StoreURL:        storeURL,
		Bus:             bus,
		NodeName:        name,
		ShutdownTimeout: 5 * time.Second,

		WebhooksAllowPrivate: true,
		Webhooks:             hooks,
	})
	if err != nil {
		bus.Close()
		t.Fatalf("servertest: node %s: %v", name, err)
	}
	started.Store(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		t.Fatalf("servertest: node %s: listen: %v", name, err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	n := &Node{
		Name:    name,
		URL:     "http://" + ln.Addr().String(),
		WSURL:   "ws://" + ln.Addr().String() + "/v3/wsconnect",
		Server:  srv,
		Bus:     bus,
		cluster: c,
		cancel:  stop,
		done:    make(chan struct{}),
	}
	go func() {
		defer close(n.done)
		n.runErr = srv.Run(runCtx, ln)
	}()
	c.Nodes = append(c.Nodes, n)
	return n
}

// Stop shuts the node down gracefully (as on SIGTERM) and waits for it.
// Its store connections, and with them its leadership, go away. Calling
// Stop again returns the first result.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() {
		n.cancel()
		select {
		case <-n.done:
		case <-time.After(stopTimeout):
			n.runErr = fmt.Errorf("servertest: node %s did not stop within %v", n.Name, stopTimeout)
		}
	})
	return n.runErr
}

// Running reports whether the node has not been stopped.
func (n *Node) Running() bool {
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Leader reports whether this node currently does the cluster's
// background work (holds the PostgreSQL leader lock). Like the engine's
// own check, asking may take the lock when nobody holds it.
func (n *Node) Leader(ctx context.Context) bool {
	st, ok := n.Server.Engine().Store().(*postgres.Store)
	return ok && n.Running() && st.Leader(ctx)
}

// Token mints an access token for identity with the cluster's
// credentials, valid for an hour.
func (c *Cluster) Token(t testing.TB, identity string) string {
	t.Helper()
	tok, err := token.Mint(token.Params{
		AccountSID: c.Creds.AccountSID, APIKeySID: c.Creds.APIKeySID, APISecret: c.Creds.APISecret,
		Identity: identity, ServiceSID: c.Creds.ServiceSID, TTL: time.Hour,
	})
	if err != nil {
		t.Fatalf("servertest: mint token: %v", err)
	}
	return tok
}

// Response is a REST API answer.
type Response struct {
	Status int
	Body   []byte
}

// REST calls the node's REST API v1 with the API key. path is relative to
// /v1/Services/<ServiceSid> ("/Documents/ET…"); form, if not nil, is sent
// form-encoded.
func (n *Node) REST(ctx context.Context, method, path string, form url.Values) (Response, error) {
	c := n.cluster
	u := n.URL + "/v1/Services/" + c.Creds.ServiceSID + path
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return Response{}, fmt.Errorf("servertest: %s %s: %w", method, path, err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.SetBasicAuth(c.Creds.APIKeySID, c.Creds.APISecret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return Response{}, fmt.Errorf("servertest: %s %s on %s: %w", method, path, n.Name, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return Response{}, fmt.Errorf("servertest: %s %s on %s: read body: %w", method, path, n.Name, err)
	}
	return Response{Status: res.StatusCode, Body: b}, nil
}

// Logs returns the nodes' combined log output so far.
func (c *Cluster) Logs() string { return c.logs.String() }

// redact drops the password from a URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
