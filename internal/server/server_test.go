package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/logtest"
	"github.com/chorus-sync/chorus/token"
)

func newServer(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = tb.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("New = %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func TestTokenEndpoint(t *testing.T) {
	s := newServer(t, Config{
		TokenTTL:   2 * time.Hour,
		Identities: IdentityFunc(func(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil }),
	})
	if !s.DevTokensOn() {
		t.Fatal("DevTokensOn() = false with an IdentitySource, want true")
	}
	req := tokenRequest("GET", "/token", nil)
	req.Header.Set("X-User", "carol")
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("GET /token = %d %s %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	var tr tokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil {
		t.Fatal(err)
	}
	c, err := s.Verifier().Verify(context.Background(), tr.Token)
	if err != nil {
		t.Fatalf("Verify(/token) = %v", err)
	}
	if tr.Identity != "carol" || c.Identity != "carol" {
		t.Errorf("GET /token identity %q, claims %q, want carol", tr.Identity, c.Identity)
	}
	if c.Sync == nil || c.Sync.ServiceSID != s.Credentials().ServiceSID || c.Subject != s.Credentials().AccountSID {
		t.Errorf("claims %+v, want service %s account %s", c, s.Credentials().ServiceSID, s.Credentials().AccountSID)
	}
	if got := c.Expires.Sub(c.IssuedAt); got != 2*time.Hour {
		t.Errorf("token lifetime = %v, want 2h", got)
	}

	// A key the store does not know is a token error, not a lookup failure.
	forged, err := token.Mint(token.Params{
		AccountSID: s.Credentials().AccountSID, APIKeySID: chorus.NewSID(chorus.PrefixAPIKey),
		APISecret: "forgedforgedforgedforgedforged00", Identity: "eve", ServiceSID: "default",
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verifier().Verify(context.Background(), forged); chorus.ErrorCode(err) != chorus.ErrTokenIssuer.Code {
		t.Errorf("Verify(token of unknown key) = %v, want %d", err, chorus.ErrTokenIssuer.Code)
	}

	// An identity source error is the caller's answer.
	s2 := newServer(t, Config{Identities: IdentityFunc(func(*http.Request) (string, error) {
		return "", chorus.ErrAuthenticate
	})})
	rec = httptest.NewRecorder()
	s2.Handler().ServeHTTP(rec, tokenRequest("GET", "/token", nil))
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("GET /token with failing identity = %d, want 401", rec.Code)
	}
}

func TestRoutes(t *testing.T) {
	s := newServer(t, Config{})
	tests := []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/healthz", 200, "ok"},
		{"GET", "/", 200, "<html"},
		{"HEAD", "/", 200, ""},
		{"POST", "/", 405, `"code":20004`},
		{"GET", "/style.css", 200, ""},
		{"GET", "/console/", 200, "<html"},
		// Unknown paths are answered like unknown API routes.
		{"GET", "/nope.js", 404, `"code":20404`},
		{"GET", "/V1/Services", 404, `"code":20404`},
		{"POST", "/v2/Services", 404, `"code":20404`},
		{"DELETE", "/console/nope", 404, `"code":20404`},
		{"POST", "/healthz", 405, `"code":20004`},
		{"PUT", "/token", 405, `"code":20004`},
		{"GET", "/v1/Services", 401, ""},  // REST v1 is mounted and wants Basic auth
		{"GET", "/v3/wsconnect", 426, ""}, // the gateway is mounted and wants a WebSocket
		// Paths ServeMux would redirect (307 or 301, an HTML body) are
		// Twilio's JSON 404s, before authentication; a map key's "//" and
		// ".." are the key's, not redirected.
		{"GET", "/v1", 404, `"code":20404`},
		{"GET", "/2010-04-01", 404, `"code":20404`},
		{"GET", "/admin", 404, `"code":20404`},
		{"POST", "/v1/Services//Documents", 404, `"code":20404`},
		{"GET", "/v1/Services/default/Documents/d/../../Lists/l", 404, `"code":20404`},
		{"GET", "/v1/./Services", 404, `"code":20404`},
		{"GET", "/2010-04-01/Accounts//Keys.json", 404, `"code":20404`},
		{"GET", "/v1/Services/default/Maps/m/Items/a//b", 401, `"code":20003`},
		{"GET", "/v1/Services/default/Maps/m/Items/..", 401, `"code":20003`},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.body) || rec.Header().Get("Location") != "" {
				t.Errorf("%s %s = %d %q (Location %q), want %d containing %q", tt.method, tt.path, rec.Code, rec.Body, rec.Header().Get("Location"), tt.code, tt.body)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(context.Background(), Config{DataDir: t.TempDir(), TokenTTL: 25 * time.Hour}); err == nil {
		t.Errorf("New(TokenTTL 25h) = nil error, want error")
	}
	if _, err := New(context.Background(), Config{}); err == nil {
		t.Errorf("New(no data dir) = nil error, want error")
	}
}

func TestRunShutdown(t *testing.T) {
	s := newServer(t, Config{Creds: engine.Credentials{}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /healthz = %d, want 200", resp.StatusCode)
	}

	cancel()
	if err := runResult(t, done, 15*time.Second); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		t.Errorf("server still answers after Run returned")
	}
	if err := s.Run(context.Background(), ln); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("second Run = %v, want an error", err)
	}
}

// TestWarnsOfOpenDataDir: a data directory made earlier writable by other
// users (0777, 0770) is used, with a warning: whoever may write it may
// replace the database. One Chorus made (0700), or only readable by others
// (0755, as systemd makes state directories), gets none.
func TestWarnsOfOpenDataDir(t *testing.T) {
	for _, mode := range []os.FileMode{0o777, 0o770, 0o755, 0o700} {
		dir := filepath.Join(t.TempDir(), "data")
		if err := os.Mkdir(dir, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		var logs logtest.Buffer
		newServer(t, Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if warned := strings.Contains(logs.String(), "writable by other users"); warned != (mode&0o022 != 0) {
			t.Errorf("data directory %#o: warned %v; log:\n%s", mode, warned, logs.String())
		}
	}
}
