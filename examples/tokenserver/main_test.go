package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus/internal/server"
)

// TestTokenServer mints tokens with the example against a real Chorus
// server's credentials, and the server's verifier accepts them.
func TestTokenServer(t *testing.T) {
	chorusSrv, err := server.New(context.Background(), server.Config{
		DataDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = chorusSrv.Close() })
	creds := chorusSrv.Credentials()

	auth, err := basicUsers("alice:s3cret, bob:hunter22")
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(newHandler(config{
		AccountSID: creds.AccountSID, APIKeySID: creds.APIKeySID, APISecret: creds.APISecret,
		ServiceSID: creds.ServiceSID, TTL: 10 * time.Minute, Authenticate: auth,
	}))
	t.Cleanup(ts.Close)

	post := func(user, pass string) (*http.Response, map[string]string) {
		req, _ := http.NewRequest("POST", ts.URL+"/token", nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp, body
	}
	resp, body := post("alice", "s3cret")
	if resp.StatusCode != 200 || body["identity"] != "alice" {
		t.Fatalf("POST /token as alice = %d %v", resp.StatusCode, body)
	}
	c, err := chorusSrv.Verifier().Verify(context.Background(), body["token"])
	if err != nil || c.Identity != "alice" || c.Sync == nil || c.Sync.ServiceSID != creds.ServiceSID {
		t.Fatalf("Chorus verifies the token as %+v, %v", c, err)
	}
	if got := c.Expires.Sub(c.IssuedAt); got != 10*time.Minute {
		t.Errorf("token lifetime %v, want 10m", got)
	}
	for _, tc := range [][2]string{{"alice", "wrong"}, {"mallory", "x"}, {"", ""}} {
		if resp, _ := post(tc[0], tc[1]); resp.StatusCode != 401 {
			t.Errorf("POST /token as %q/%q = %d, want 401", tc[0], tc[1], resp.StatusCode)
		}
	}
	if _, err := basicUsers("nobody"); err == nil {
		t.Error("basicUsers(\"nobody\") accepted a malformed spec")
	}
	// Chorus refuses tokens for "system" (20106): no user may be it.
	if _, err := basicUsers("alice:a,System:b"); err == nil {
		t.Error("basicUsers accepted a user named System")
	}
}

// A configuration that cannot mint stops the server at start; it used to
// listen and fail every request with a 500 and no log line.
func TestConfigCheck(t *testing.T) {
	good := config{AccountSID: "AC" + strings.Repeat("a", 32), APIKeySID: "SK" + strings.Repeat("b", 32),
		APISecret: "secret", ServiceSID: "IS" + strings.Repeat("c", 32), TTL: time.Hour}
	if err := good.check(); err != nil {
		t.Fatalf("check() of a good config = %v", err)
	}
	for name, mod := range map[string]func(*config){
		"ttl 48h":         func(c *config) { c.TTL = 48 * time.Hour },
		"negative ttl":    func(c *config) { c.TTL = -5 * time.Second },
		"bad account SID": func(c *config) { c.AccountSID = "garbage" },
	} {
		c := good
		mod(&c)
		if err := c.check(); err == nil {
			t.Errorf("%s: check() = nil, want an error", name)
		}
	}
}
