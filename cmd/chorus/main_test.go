package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/logtest"
	"github.com/chorus-sync/chorus/token"
)

// binary is the chorus binary built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chorus-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "chorus")
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	build := exec.Command(gobin, "build", "-o", binary, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cleanEnv is the test process's environment without variables that
// change chorus's behaviour, plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TWILIO_") || strings.HasPrefix(kv, "CHORUS_") || strings.HasPrefix(kv, "PORT=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// chorusCmd runs the binary to completion.
func chorusCmd(tb testing.TB, env []string, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = env
	cmd.Dir = tb.TempDir()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code == -1 {
		tb.Fatalf("chorus %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

type serveProc struct {
	cmd    *exec.Cmd
	stderr *logtest.Buffer
	base   string // http://127.0.0.1:port
	done   chan struct{}
}

var listeningRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startServe runs `chorus serve` on a free port, with extra arguments, and
// waits until it listens.
func startServe(tb testing.TB, dataDir string, extra ...string) *serveProc {
	tb.Helper()
	return startServeWith(tb, dataDir, nil, extra...)
}

// startServeWith is startServe with extra environment variables and
// arguments.
func startServeWith(tb testing.TB, dataDir string, env []string, args ...string) *serveProc {
	tb.Helper()
	cmd := exec.Command(binary, append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-level", "info"}, args...)...)
	cmd.Env = cleanEnv(env...)
	p := &serveProc{cmd: cmd, stderr: &logtest.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	deadline := time.After(30 * time.Second)
	for {
		if m := listeningRE.FindStringSubmatch(p.stderr.String()); m != nil {
			p.base = "http://" + m[1]
			return p
		}
		select {
		case <-p.done:
			tb.Fatalf("chorus serve exited before listening: %s", p.stderr.String())
		case <-deadline:
			tb.Fatalf("chorus serve did not listen within 30s: %s", p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *serveProc) stop(tb testing.TB) {
	tb.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		tb.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		tb.Fatalf("chorus serve did not stop within 20s after SIGTERM: %s", p.stderr.String())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		tb.Errorf("chorus serve exit code after SIGTERM = %d, want 0; stderr: %s", code, p.stderr.String())
	}
}

func get(tb testing.TB, url string) (int, []byte) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, b
}

// credentials runs `chorus admin credentials` and parses its lines.
func credentials(tb testing.TB, dataDir string) map[string]string {
	tb.Helper()
	out, errOut, code := chorusCmd(tb, cleanEnv(), "admin", "credentials", "--data-dir", dataDir)
	if code != 0 {
		tb.Fatalf("chorus admin credentials exit %d: %s", code, errOut)
	}
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			tb.Fatalf("chorus admin credentials line %q is not KEY=VALUE", sc.Text())
		}
		m[k] = v
	}
	for _, k := range []string{envAccountSID, envAuthToken, envAPIKey, envAPISecret, envServiceSID} {
		if m[k] == "" {
			tb.Fatalf("chorus admin credentials: %s missing in %q", k, out)
		}
	}
	return m
}

// verifierFor verifies tokens against the API key in creds only.
func verifierFor(creds map[string]string) *token.Verifier {
	return &token.Verifier{
		RequireSync: true,
		Keys: func(_ context.Context, sid string) (*chorus.APIKey, error) {
			if sid != creds[envAPIKey] {
				return nil, chorus.ErrNotFound
			}
			return &chorus.APIKey{SID: sid, AccountSID: creds[envAccountSID], Secret: creds[envAPISecret]}, nil
		},
	}
}

func verifyAs(tb testing.TB, v *token.Verifier, tok, identity, service string) {
	tb.Helper()
	c, err := v.Verify(context.Background(), strings.TrimSpace(tok))
	if err != nil {
		tb.Fatalf("Verify(token for %s) = %v", identity, err)
	}
	if c.Identity != identity || c.Sync == nil || c.Sync.ServiceSID != service {
		tb.Errorf("Verify(token) identity %q sync %+v, want %q on %s", c.Identity, c.Sync, identity, service)
	}
}

func TestServe(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	p := startServe(t, dataDir)

	if code, body := get(t, p.base+"/healthz"); code != 200 || string(body) != "ok" {
		t.Errorf("GET /healthz = %d %q, want 200 ok", code, body)
	}
	if code, body := get(t, p.base+"/"); code != 200 || !bytes.Contains(body, []byte("<html")) {
		t.Errorf("GET / = %d %q, want 200 and the quickstart page", code, body)
	}

	creds := credentials(t, dataDir)
	// The first start names the generated SIDs and how to print the
	// secrets, and never logs a secret.
	if log := p.stderr.String(); !strings.Contains(log, creds[envAPIKey]) || !strings.Contains(log, "chorus admin credentials") ||
		strings.Contains(log, creds[envAuthToken]) || strings.Contains(log, creds[envAPISecret]) {
		t.Errorf("first start's log: want the SIDs and `chorus admin credentials`, no secret: %s", log)
	}
	v := verifierFor(creds)

	// The printed credentials authenticate REST v1, both pairs.
	for _, pair := range [][2]string{{creds[envAccountSID], creds[envAuthToken]}, {creds[envAPIKey], creds[envAPISecret]}} {
		req, _ := http.NewRequest("GET", p.base+"/v1/Services/"+creds[envServiceSID], nil)
		req.SetBasicAuth(pair[0], pair[1])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET /v1/Services/%s as %s = %d, want 200", creds[envServiceSID], pair[0], resp.StatusCode)
		}
	}

	var ids []string
	for range 2 {
		code, body := get(t, p.base+"/token")
		if code != 200 {
			t.Fatalf("GET /token = %d %s", code, body)
		}
		var tr struct{ Identity, Token string }
		if err := json.Unmarshal(body, &tr); err != nil {
			t.Fatalf("GET /token body %s: %v", body, err)
		}
		if tr.Identity == "" {
			t.Fatalf("GET /token identity is empty: %s", body)
		}
		verifyAs(t, v, tr.Token, tr.Identity, creds[envServiceSID])
		ids = append(ids, tr.Identity)
	}
	if ids[0] == ids[1] {
		t.Errorf("two GET /token gave the same identity %q", ids[0])
	}

	out, errOut, code := chorusCmd(t, cleanEnv(), "token", "--identity", "x", "--data-dir", dataDir)
	if code != 0 || strings.Count(out, "\n") != 1 {
		t.Fatalf("chorus token = %d %q %q, want exit 0 and one line", code, out, errOut)
	}
	verifyAs(t, v, out, "x", creds[envServiceSID])

	p.stop(t)

	// A restart on the same data directory keeps the credentials and does
	// not print them again.
	p2 := startServe(t, dataDir)
	if code, _ := get(t, p2.base+"/healthz"); code != 200 {
		t.Errorf("GET /healthz after restart = %d, want 200", code)
	}
	if got := credentials(t, dataDir); fmt.Sprint(got) != fmt.Sprint(creds) {
		t.Errorf("credentials after restart = %v, want %v", got, creds)
	}
	if strings.Contains(p2.stderr.String(), creds[envAuthToken]) {
		t.Errorf("restart logged the stored auth token again: %s", p2.stderr.String())
	}
	_, body := get(t, p2.base+"/token")
	var tr struct{ Identity, Token string }
	if err := json.Unmarshal(body, &tr); err != nil {
		t.Fatalf("GET /token after restart body %s: %v", body, err)
	}
	verifyAs(t, v, tr.Token, tr.Identity, creds[envServiceSID])
	p2.stop(t)
}

func TestTokenFromEnv(t *testing.T) {
	creds := map[string]string{
		envAccountSID: "AC0123456789abcdef0123456789abcdef",
		envAPIKey:     "SK0123456789abcdef0123456789abcdef",
		envAPISecret:  "envsecretenvsecretenvsecret00000",
		envServiceSID: "IS0123456789abcdef0123456789abcdef",
	}
	var env []string
	for k, v := range creds {
		env = append(env, k+"="+v)
	}
	// No data directory exists: the environment alone is enough.
	out, errOut, code := chorusCmd(t, cleanEnv(env...), "token", "--identity", "envuser", "--ttl", "2h", "--data-dir", filepath.Join(t.TempDir(), "none"))
	if code != 0 {
		t.Fatalf("chorus token with env = %d %q", code, errOut)
	}
	v := verifierFor(creds)
	verifyAs(t, v, out, "envuser", creds[envServiceSID])
	c, _ := v.Verify(context.Background(), strings.TrimSpace(out))
	if got := c.Expires.Sub(c.IssuedAt); got != 2*time.Hour {
		t.Errorf("chorus token --ttl 2h lifetime = %v, want 2h", got)
	}

	out, _, code = chorusCmd(t, cleanEnv(env...), "token", "--identity", "envuser", "--service", "default")
	if code != 0 {
		t.Fatalf("chorus token --service default = %d", code)
	}
	verifyAs(t, v, out, "envuser", "default")
}

// TestTokenServiceFromEnvAlone: TWILIO_SYNC_SERVICE_SID set without the
// other credentials picks the service of a token signed with the stored
// credentials, as -h says. It was dropped when they were read.
func TestTokenServiceFromEnvAlone(t *testing.T) {
	dataDir := t.TempDir()
	startServe(t, dataDir).stop(t)
	creds := credentials(t, dataDir)
	const other = "IS00000000000000000000000000000001"
	out, errOut, code := chorusCmd(t, cleanEnv(envServiceSID+"="+other), "token", "--identity", "alice", "--data-dir", dataDir)
	if code != 0 {
		t.Fatalf("chorus token = %d %q", code, errOut)
	}
	verifyAs(t, verifierFor(creds), out, "alice", other)
	out, errOut, code = chorusCmd(t, cleanEnv(envServiceSID+"="+other), "token", "--identity", "alice", "--data-dir", dataDir, "--service", "default")
	if code != 0 {
		t.Fatalf("chorus token --service default = %d %q", code, errOut)
	}
	verifyAs(t, verifierFor(creds), out, "alice", "default")
}

// secret32 is a well-formed operator secret.
const secret32 = "0123456789abcdef0123456789abcdef"

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  []string
		args []string
		code int
		want string // substring of the one-line error
	}{
		{"no command", nil, nil, 2, "usage"},
		{"unknown command", nil, []string{"frobnicate"}, 2, "unknown command"},
		{"bad flag", nil, []string{"serve", "--bogus"}, 2, "bogus"},
		{"bad duration", nil, []string{"serve", "--token-ttl", "soon"}, 2, "token-ttl"},
		{"ttl too long", nil, []string{"serve", "--token-ttl", "48h"}, 2, "token-ttl"},
		{"bad log level", nil, []string{"serve", "--log-level", "loud"}, 2, "log-level"},
		{"negative ws-coalesce", nil, []string{"serve", "--ws-coalesce", "-1ms"}, 2, "ws-coalesce"},
		{"ws-coalesce too long", nil, []string{"serve", "--ws-coalesce", "2s"}, 2, "ws-coalesce"},
		{"ws-replay-limit 0", nil, []string{"serve", "--ws-replay-limit", "0"}, 2, "ws-replay-limit"},
		{"bad public url", nil, []string{"serve", "--public-url", "example.com"}, 2, "public-url"},
		// Every resource URL starts with it: what it repeats broken was
		// accepted (a tester's http:// gave "http:/v1/Services/…").
		{"public url without host", nil, []string{"serve", "--public-url", "http://"}, 2, "public-url"},
		{"public url with a path and query", nil, []string{"serve", "--public-url", "http://h/path?q=1#frag"}, 2, "public-url"},
		{"public url with credentials", nil, []string{"serve", "--public-url", "http://user:pw@h"}, 2, "credentials"},
		{"public url with a space", nil, []string{"serve", "--public-url", "https://exa mple.com"}, 2, "public-url"},
		{"public url port", nil, []string{"serve", "--public-url", "http://host:99999"}, 2, "public-url"},
		{"extra argument", nil, []string{"serve", "now"}, 2, "now"},
		{"partial env", []string{"TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef"}, []string{"serve", "--data-dir", filepath.Join(dir, "d1")}, 2, "TWILIO_API_KEY"},
		{"malformed env SID", []string{"TWILIO_ACCOUNT_SID=ACnope", "TWILIO_AUTH_TOKEN=t", "TWILIO_API_KEY=SK0123456789abcdef0123456789abcdef", "TWILIO_API_SECRET=s"}, []string{"serve", "--data-dir", filepath.Join(dir, "d2")}, 2, "TWILIO_ACCOUNT_SID"},
		{"unwritable data dir", nil, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(file, "sub")}, 1, "data directory"},
		{"token without identity", nil, []string{"token"}, 2, "--identity"},
		{"token without credentials", nil, []string{"token", "--identity", "x", "--data-dir", filepath.Join(dir, "empty")}, 1, "no credentials"},
		{"token bad service", []string{"TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef", "TWILIO_API_KEY=SK0123456789abcdef0123456789abcdef", "TWILIO_API_SECRET=" + secret32}, []string{"token", "--identity", "x", "--service", "nope"}, 2, "service"},
		{"short auth token", []string{"TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef", "TWILIO_AUTH_TOKEN=" + secret32[:31], "TWILIO_API_KEY=SK0123456789abcdef0123456789abcdef", "TWILIO_API_SECRET=" + secret32}, []string{"serve", "--data-dir", filepath.Join(dir, "d3")}, 2, "TWILIO_AUTH_TOKEN is 31 characters long: want at least 32"},
		{"short API secret", []string{"TWILIO_ACCOUNT_SID=AC0123456789abcdef0123456789abcdef", "TWILIO_AUTH_TOKEN=" + secret32, "TWILIO_API_KEY=SK0123456789abcdef0123456789abcdef", "TWILIO_API_SECRET=x"}, []string{"serve", "--data-dir", filepath.Join(dir, "d4")}, 2, "TWILIO_API_SECRET is 1 characters long"},
		{"bad dev-tokens", nil, []string{"serve", "--dev-tokens=maybe"}, 2, "dev-tokens"},
		{"negative start wait", nil, []string{"serve", "--start-wait=-1s"}, 2, "--start-wait"},
		{"after-restore with a copy", nil, []string{"migrate", "--store", "postgres://127.0.0.1:1/x", "--after-restore", "--from-data-dir", dir}, 2, "--after-restore"},
		{"migrate --json without a copy", nil, []string{"migrate", "--store", "postgres://127.0.0.1:1/x", "--json"}, 2, "--json applies to a copy"},
		{"migrate --overwrite without a copy", nil, []string{"migrate", "--store", "postgres://127.0.0.1:1/x", "--overwrite"}, 2, "--overwrite applies to a copy"},
		{"bus-prefix without a bus", nil, []string{"serve", "--bus-prefix", "x"}, 2, "--bus-prefix without --bus"},
		{"CHORUS_BUS_PREFIX without a bus", []string{"CHORUS_BUS_PREFIX=x"}, []string{"serve"}, 2, "CHORUS_BUS_PREFIX without --bus"},
		{"bad bus-prefix", nil, []string{"serve", "--bus", "nats://127.0.0.1:1", "--bus-prefix", "a b"}, 2, "invalid --bus-prefix"},
		{"dev-tokens-public alone", nil, []string{"serve", "--dev-tokens-public"}, 2, "--dev-tokens-public needs --dev-tokens"},
		{"bad CHORUS_DEV_TOKENS", []string{"CHORUS_DEV_TOKENS=maybe"}, []string{"serve"}, 2, "CHORUS_DEV_TOKENS"},
		// Every on/off variable takes what CHORUS_DEV_TOKENS takes: yes
		// used to be refused by some and taken by others.
		{"CHORUS_DEV_TOKENS_PUBLIC=yes alone", []string{"CHORUS_DEV_TOKENS_PUBLIC=yes"}, []string{"serve"}, 2, "--dev-tokens-public needs --dev-tokens"},
		{"bad CHORUS_DEV_TOKENS_PUBLIC", []string{"CHORUS_DEV_TOKENS_PUBLIC=maybe"}, []string{"serve"}, 2, `invalid CHORUS_DEV_TOKENS_PUBLIC "maybe"`},
		{"bad CHORUS_WEBHOOKS_ALLOW_PRIVATE", []string{"CHORUS_WEBHOOKS_ALLOW_PRIVATE=maybe"}, []string{"serve"}, 2, `invalid CHORUS_WEBHOOKS_ALLOW_PRIVATE "maybe"`},
		{"bad CHORUS_METRICS_PUBLIC", []string{"CHORUS_METRICS_PUBLIC=maybe"}, []string{"serve"}, 2, `invalid CHORUS_METRICS_PUBLIC "maybe"`},
		// A value from the environment is named as it was given.
		{"bad CHORUS_MAX_CONNS", []string{"CHORUS_MAX_CONNS=-1"}, []string{"serve"}, 2, `invalid CHORUS_MAX_CONNS "-1"`},
		{"bad --max-conns over the environment", []string{"CHORUS_MAX_CONNS=5"}, []string{"serve", "--max-conns", "-1"}, 2, `invalid --max-conns "-1"`},
		{"bad CHORUS_PUBLIC_URL", []string{"CHORUS_PUBLIC_URL=notaurl"}, []string{"serve"}, 2, "invalid CHORUS_PUBLIC_URL"},
		{"bad CHORUS_TRUSTED_PROXIES", []string{"CHORUS_TRUSTED_PROXIES=nope"}, []string{"serve"}, 2, "invalid CHORUS_TRUSTED_PROXIES entry"},
		{"admin keys without subcommand", nil, []string{"admin", "keys"}, 2, "list, create or revoke"},
		{"admin keys revoke without SID", nil, []string{"admin", "keys", "revoke"}, 2, "API key SID"},
		{"admin keys revoke bad SID", nil, []string{"admin", "keys", "revoke", "SKnope"}, 2, "not an API key SID"},
		{"admin keys bad url", nil, []string{"admin", "keys", "list", "--url", "ftp://x"}, 2, "--url"},
		// Refused before the credentials are read (here there are none,
		// so without the check it would stop at those, connecting nowhere).
		{"admin keys cleartext url", nil, []string{"admin", "keys", "list", "--url", "http://192.0.2.1:3000", "--data-dir", filepath.Join(dir, "empty")}, 2, "http:// only to a loopback address"},
		{"admin keys CHORUS_URL cleartext", []string{"CHORUS_URL=http://sync.example.com"}, []string{"admin", "keys", "list", "--data-dir", filepath.Join(dir, "empty")}, 2, "http:// only to a loopback address"},
		{"admin without subcommand", nil, []string{"admin"}, 2, "credentials"},
		{"admin keys unknown subcommand, no data", nil, []string{"admin", "keys", "bogus", "--data-dir", filepath.Join(dir, "empty")}, 2, "unknown subcommand"},
		{"admin keys revoke SID after flags, bad", nil, []string{"admin", "keys", "revoke", "--url", "http://127.0.0.1:1", "SKnope"}, 2, "not an API key SID"},
		{"admin keys revoke SID after flags", nil, []string{"admin", "keys", "revoke", "--url", "http://127.0.0.1:1", "SK0123456789abcdef0123456789abcdef", "--data-dir", filepath.Join(dir, "empty")}, 1, "no credentials"},
		{"admin keys revoke two SIDs", nil, []string{"admin", "keys", "revoke", "--url", "http://127.0.0.1:1", "SK0123456789abcdef0123456789abcdef", "SK0123456789abcdef0123456789abcdef"}, 2, "unexpected argument"},
		{"token for the reserved identity", nil, []string{"token", "--identity", "System", "--data-dir", filepath.Join(dir, "empty")}, 2, "reserved"},
		{"admin credentials without data", nil, []string{"admin", "credentials", "--data-dir", filepath.Join(dir, "empty")}, 1, "no credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := chorusCmd(t, cleanEnv(tt.env...), tt.args...)
			if code != tt.code {
				t.Errorf("chorus %v exit = %d, want %d; stderr %q", tt.args, code, tt.code, errOut)
			}
			if !strings.Contains(errOut, tt.want) {
				t.Errorf("chorus %v stderr = %q, want it to mention %q", tt.args, errOut, tt.want)
			}
			if tt.args != nil && strings.Count(errOut, "\n") != 1 {
				t.Errorf("chorus %v stderr = %q, want exactly one line", tt.args, errOut)
			}
			if strings.Contains(errOut, "panic") || strings.Contains(errOut, "goroutine") {
				t.Errorf("chorus %v panicked: %s", tt.args, errOut)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "empty")); err == nil {
		t.Errorf("chorus token created the data directory it only reads")
	}
}

// A port in use stops serve before it creates the data directory and its
// credentials: an operator who fixes the port must not find a second set
// of credentials made by the failed start.
func TestServePortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dataDir := filepath.Join(t.TempDir(), "data")
	_, errOut, code := chorusCmd(t, cleanEnv(), "serve", "--listen", ln.Addr().String(), "--data-dir", dataDir)
	if code != 1 || !strings.Contains(errOut, "address already in use") {
		t.Errorf("serve on a port in use = %d %q, want 1 and the listen error", code, errOut)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("serve on a port in use created its data directory (%v)", err)
	}
}

// While the store is not ready (here PostgreSQL does not answer, and
// --start-wait waits for it), the port refuses connections: a proxy
// marks the node down and sends the request elsewhere, where a listener
// would have held it unanswered in its backlog.
func TestServeRefusesWhileStarting(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there now: a store that does not answer
	port, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := port.Addr().String()
	port.Close()
	cmd := exec.Command(binary, "serve", "--listen", addr, "--store", "postgres://chorus@"+deadAddr+"/x", "--start-wait", "20s")
	cmd.Env = cleanEnv()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	time.Sleep(2 * time.Second) // serve has checked the port and waits for the store
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("%s accepted a connection while serve waited for its store", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial while starting = %v, want connection refused", err)
	}
}

func TestVersion(t *testing.T) {
	out, errOut, code := chorusCmd(t, cleanEnv(), "version")
	if code != 0 || !strings.HasPrefix(out, "chorus ") || errOut != "" {
		t.Errorf("chorus version = %d %q %q, want exit 0 and \"chorus ...\"", code, out, errOut)
	}
}

func TestPprofListenLoopbackOnly(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:6060": true, "[::1]:6060": true, "localhost:6060": true, "127.8.0.1:0": true,
		":6060": false, "0.0.0.0:6060": false, "10.0.0.1:6060": false, "[::]:6060": false, "example.com:6060": false, "6060": false,
	} {
		if err := loopbackAddr(addr); (err == nil) != ok {
			t.Errorf("loopbackAddr(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
	// serve refuses it before opening anything.
	var stderr strings.Builder
	code := run(context.Background(), []string{"serve", "--pprof-listen", "0.0.0.0:6060", "--data-dir", t.TempDir()}, io.Discard, &stderr)
	if code != exitUsage || !strings.Contains(stderr.String(), "loopback") {
		t.Errorf("serve --pprof-listen 0.0.0.0:6060: exit %d, %q; want a usage error naming loopback", code, stderr.String())
	}
}

// TestCoalesceSetting: --ws-coalesce 0 turns holding off (the gateway's 0
// would mean its default).
func TestCoalesceSetting(t *testing.T) {
	if got := coalesceSetting(0); got >= 0 {
		t.Errorf("coalesceSetting(0) = %v, want negative (off)", got)
	}
	if got := coalesceSetting(50 * time.Millisecond); got != 50*time.Millisecond {
		t.Errorf("coalesceSetting(50ms) = %v", got)
	}
}

// TestCommandHelp: `chorus CMD -h` prints the usage and every flag of CMD
// with its default, exit 0: the flags the usage lines leave out (most of
// serve's) are found there.
func TestCommandHelp(t *testing.T) {
	for _, args := range [][]string{{"admin", "-h"}, {"admin", "keys", "-h"}, {"admin", "keys", "revoke", "-h"}} {
		out, errOut, code := chorusCmd(t, cleanEnv(), args...)
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "usage:") || (len(args) > 2 && !strings.Contains(out, "-url")) {
			t.Errorf("chorus %v: exit %d, stderr %q, stdout %.80q…; want the usage (and the flags)", args, code, errOut, out)
		}
	}
	for cmd, want := range map[string][]string{
		"serve":   {"-webhooks-allow-private", "-webhooks-keep-abandoned", "-start-wait", "-metrics-public", "-pprof-listen", `(default "127.0.0.1:3000")`},
		"migrate": {"-after-restore", "-from-data-dir"},
		"restore": {"-data-dir"},
	} {
		out, errOut, code := chorusCmd(t, cleanEnv(), cmd, "-h")
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "usage:") || !strings.Contains(out, "chorus "+cmd+" flags:") {
			t.Errorf("chorus %s -h: exit %d, stderr %q, stdout %.80q…; want the usage and its flags", cmd, code, errOut, out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("chorus %s -h does not show %s", cmd, w)
			}
		}
	}
}

// -h never prints CHORUS_STORE_URL, the default of --store: a DSN that may
// hold a password (a plain string flag shows its default).
func TestHelpHidesStoreURL(t *testing.T) {
	// Secrets in the environment that flags default to: -h printed the
	// bus URL's and import's (the auth token, the API secret) as defaults.
	env := cleanEnv("CHORUS_STORE_URL=postgres://chorus:s3cr3t-pw@127.0.0.1:1/db?password=s3cr3t-q",
		"CHORUS_BUS_URL=nats://chorus:s3cr3t-bus@127.0.0.1:1", envAuthToken+"=s3cr3t-token", envAPISecret+"=s3cr3t-api")
	for _, args := range [][]string{{"serve", "-h"}, {"migrate", "-h"}, {"import", "-h"}, {"admin", "credentials", "-h"},
		{"token", "-h"}, {"bench", "-h"}} {
		out, errOut, _ := chorusCmd(t, env, args...)
		if strings.Contains(out+errOut, "s3cr3t") {
			t.Errorf("chorus %v prints a secret of the environment", args)
		}
		if !strings.Contains(out+errOut, "-store") {
			t.Errorf("chorus %v does not list --store", args)
		}
	}
}

// The profiling endpoints answer only requests whose Host is a loopback
// name: a DNS-rebinding page reaches the loopback listener with its own
// name as Host, and could read the command line (a --store URL with its
// password) and goroutine dumps.
func TestPprofRefusesForeignHost(t *testing.T) {
	h := loopbackHostOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	for host, want := range map[string]int{
		"127.0.0.1:6060": 200, "localhost:6060": 200, "[::1]:6060": 200, "LOCALHOST": 200, "127.8.0.1": 200,
		"evil.example:6060": 403, "evil.example": 403, "10.0.0.1:6060": 403, "": 403, "localhost.evil.example:6060": 403,
	} {
		req := httptest.NewRequest("GET", "/debug/pprof/cmdline", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %q: %d, want %d", host, rec.Code, want)
		}
	}
}

// SIGHUP without TLS: nothing to reload, and the server goes on serving.
// Its default action used to kill the server at once (exit 129), without a
// graceful shutdown, when logrotate or a closed terminal sent it.
func TestSIGHUPWithoutTLSKeepsServing(t *testing.T) {
	p := startServe(t, t.TempDir())
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr.String(), "SIGHUP: nothing to reload") {
		select {
		case <-p.done:
			t.Fatalf("chorus serve exited on SIGHUP: %s", p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log of the SIGHUP: %s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Get(p.base + "/healthz")
	if err != nil {
		t.Fatalf("after SIGHUP: %v", err)
	}
	resp.Body.Close()
	p.stop(t)
}

// checkPublicURL keeps what resource URLs can start with, as they render
// it, and refuses what would repeat broken in each of them.
func TestCheckPublicURL(t *testing.T) {
	for raw, want := range map[string]string{
		"https://sync.example.com/":       "https://sync.example.com",
		"HTTPS://Sync.Example.com":        "https://Sync.Example.com",
		"http://[::1]:3000":               "http://[::1]:3000",
		"https://example.test:8443/sync/": "https://example.test:8443/sync",
		"http://localhost:3000":           "http://localhost:3000",
	} {
		if got, err := checkPublicURL(raw); err != nil || got != want {
			t.Errorf("checkPublicURL(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
	for _, raw := range []string{"http://", "http://h/p?q=1", "http://h/#f", "http://u:p@h", "https://exa mple.com",
		"http://host:99999", "http://example.com:", "ftp://x", "example.com"} {
		if got, err := checkPublicURL(raw); err == nil {
			t.Errorf("checkPublicURL(%q) = %q, want an error", raw, got)
		}
	}
}

func TestWarnSecretAlphabet(t *testing.T) {
	var b strings.Builder
	logger := slog.New(slog.NewTextHandler(&b, nil))
	warnSecretAlphabet(logger, engine.Credentials{AuthToken: "feedfacefeedfacefeedfacefeedface", APISecret: "abcDEF0123456789abcdef0123456789"})
	if b.Len() != 0 {
		t.Errorf("warned about letters and digits: %s", b.String())
	}
	warnSecretAlphabet(logger, engine.Credentials{AuthToken: "feedfacefeedfacefeedfacefeedface", APISecret: "s3cr3t-s3cr3t-s3cr3t-s3cr3t-0001"})
	if out := b.String(); !strings.Contains(out, "TWILIO_API_SECRET") || strings.Contains(out, "TWILIO_AUTH_TOKEN") || strings.Contains(out, "s3cr3t") {
		t.Errorf("warning %q: want TWILIO_API_SECRET named, and never the secret", out)
	}
}

// TestSecondSignalStopsAtOnce: the first SIGTERM starts a graceful stop,
// which waits up to its timeout for requests in flight (here a client
// trickling its body); a second one ends the process at once. The second
// signal used to be ignored until the timeout ran out.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	const account, token = "AC0123456789abcdef0123456789abcdef", "feedfacefeedfacefeedfacefeedface"
	p := startServeWith(t, t.TempDir(), []string{envAccountSID + "=" + account, envAuthToken + "=" + token,
		envAPIKey + "=SK0123456789abcdef0123456789abcdef", envAPISecret + "=envsecretenvsecretenvsecret00000"})
	c, err := net.Dial("tcp", strings.TrimPrefix(p.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/Services HTTP/1.1\r\nHost: chorus\r\nAuthorization: Basic %s\r\n"+
		"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nFriendlyName=",
		base64.StdEncoding.EncodeToString([]byte(account+":"+token)))
	time.Sleep(200 * time.Millisecond)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.stderr.String(), "shutting down") {
		if time.Now().After(deadline) {
			t.Fatalf("no log of the shutdown 5 s after SIGTERM: %s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("the process ended %v after the second SIGTERM, want at once", took)
		}
	case <-time.After(8 * time.Second):
		t.Fatalf("the process still runs 8 s after a second SIGTERM (the graceful stop waits up to 10 s): %s", p.stderr.String())
	}
}

// TestParseSwitch: the on/off words of environment files, in any case;
// anything else is refused, never taken as off.
func TestParseSwitch(t *testing.T) {
	for in, want := range map[string]bool{"true": true, "TRUE": true, "1": true, "yes": true, "Yes": true, "on": true, " ON ": true, "t": true,
		"false": false, "0": false, "no": false, "NO": false, "off": false, "Off": false, "f": false} {
		if got, err := parseSwitch(in); err != nil || got != want {
			t.Errorf("parseSwitch(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "maybe", "y", "n", "2", "enabled", "yes please"} {
		if got, err := parseSwitch(in); err == nil {
			t.Errorf("parseSwitch(%q) = %v, want an error", in, got)
		}
	}
}
