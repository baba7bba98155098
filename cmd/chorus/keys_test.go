package main

import (
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func restStatus(t *testing.T, base, user, pass string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/v1/Services", nil)
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestAdminKeys(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	p := startServe(t, dataDir)
	creds := credentials(t, dataDir)
	run := func(args ...string) string {
		t.Helper()
		out, errOut, code := chorusCmd(t, cleanEnv(), append([]string{"admin", "keys"}, append(args, "--url", p.base, "--data-dir", dataDir)...)...)
		if code != 0 {
			t.Fatalf("chorus admin keys %v = %d %q", args, code, errOut)
		}
		return out
	}

	out := run("create", "--name", "ci runner")
	m := regexp.MustCompile(`^TWILIO_API_KEY=(SK[0-9a-f]{32})\nTWILIO_API_SECRET=(\w{32,})\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("admin keys create printed %q", out)
	}
	sid, secret := m[1], m[2]
	if code := restStatus(t, p.base, sid, secret); code != 200 {
		t.Fatalf("REST with the created key = %d", code)
	}
	list := run("list")
	if !strings.Contains(list, sid) || !strings.Contains(list, "ci runner") || !strings.Contains(list, creds[envAPIKey]) || strings.Contains(list, secret) {
		t.Errorf("admin keys list = %q", list)
	}
	if out := run("revoke", sid); out != "revoked "+sid+"\n" {
		t.Errorf("admin keys revoke = %q", out)
	}
	if code := restStatus(t, p.base, sid, secret); code != 401 {
		t.Errorf("REST with the revoked key = %d, want 401", code)
	}
	if list := run("list"); strings.Contains(list, sid) {
		t.Errorf("admin keys list after revoke = %q", list)
	}
	// Revoking it again is a one-line Twilio error.
	_, errOut, code := chorusCmd(t, cleanEnv(), "admin", "keys", "revoke", sid, "--url", p.base, "--data-dir", dataDir)
	if code != 1 || !strings.Contains(errOut, "20404") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("revoke twice = %d %q", code, errOut)
	}
	// With the operator's environment instead of the data directory.
	env := cleanEnv(envAccountSID+"="+creds[envAccountSID], envAuthToken+"="+creds[envAuthToken])
	if out, errOut, code := chorusCmd(t, env, "admin", "keys", "list", "--url", p.base); code != 0 || !strings.Contains(out, creds[envAPIKey]) {
		t.Errorf("admin keys list with TWILIO_* = %d %q %q", code, out, errOut)
	}
}

func TestDevTokensSwitch(t *testing.T) {
	// Generated credentials on loopback: on, with a warning; switched off
	// by the environment.
	p := startServeWith(t, filepath.Join(t.TempDir(), "a"), nil)
	if code, _ := get(t, p.base+"/token"); code != 200 || !strings.Contains(p.stderr.String(), "/token endpoint is on") {
		t.Errorf("GET /token with generated credentials = %d; log %s", code, p.stderr.String())
	}
	off := startServeWith(t, filepath.Join(t.TempDir(), "b"), []string{envDevTokens + "=0"})
	if code, body := get(t, off.base+"/token"); code != 404 || !strings.Contains(string(body), "--dev-tokens") {
		t.Errorf("GET /token with CHORUS_DEV_TOKENS=0 = %d %s", code, body)
	}
	if strings.Contains(off.stderr.String(), "/token endpoint is on") {
		t.Errorf("the warning was logged while off: %s", off.stderr.String())
	}

	// Operator credentials: off unless --dev-tokens.
	env := []string{
		envAccountSID + "=AC0123456789abcdef0123456789abcdef", envAuthToken + "=" + secret32,
		envAPIKey + "=SK0123456789abcdef0123456789abcdef", envAPISecret + "=" + secret32,
	}
	op := startServeWith(t, filepath.Join(t.TempDir(), "c"), env)
	if code, _ := get(t, op.base+"/token"); code != 404 {
		t.Errorf("GET /token with operator credentials = %d, want 404", code)
	}
	on := startServeWith(t, filepath.Join(t.TempDir(), "d"), env, "--dev-tokens")
	if code, _ := get(t, on.base+"/token"); code != 200 {
		t.Errorf("GET /token with operator credentials and --dev-tokens = %d, want 200", code)
	}
}

// After the README's leak procedure (revoke the main key while the server
// runs), the data directory's account and auth token still work: `admin
// credentials` prints them and says why the key is missing, `admin keys`
// goes on with them, and `token`, which needs a key, says to restart.
// All three said "no credentials" before.
func TestMainKeyRevoked(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	p := startServe(t, dataDir)
	creds := credentials(t, dataDir)
	key := creds[envAPIKey]
	if out, errOut, code := chorusCmd(t, cleanEnv(), "admin", "keys", "revoke", key, "--url", p.base, "--data-dir", dataDir); code != 0 {
		t.Fatalf("revoke the main key = %d %q %q", code, out, errOut)
	}
	out, errOut, code := chorusCmd(t, cleanEnv(), "admin", "credentials", "--data-dir", dataDir)
	if code != 0 || !strings.Contains(out, envAuthToken+"="+creds[envAuthToken]) || strings.Contains(out, key) ||
		!strings.Contains(errOut, "was revoked") || !strings.Contains(errOut, "restart") {
		t.Errorf("admin credentials = %d, stdout %q, stderr %q; want the account and auth token, and why the key is missing", code, out, errOut)
	}
	if out, errOut, code := chorusCmd(t, cleanEnv(), "admin", "keys", "list", "--url", p.base, "--data-dir", dataDir); code != 0 || strings.Contains(out, key) {
		t.Errorf("admin keys list = %d %q %q", code, out, errOut)
	}
	if _, errOut, code := chorusCmd(t, cleanEnv(), "token", "--identity", "alice", "--data-dir", dataDir); code != 1 || !strings.Contains(errOut, "was revoked") {
		t.Errorf("token = %d %q; want 1 and that the key was revoked", code, errOut)
	}
}
