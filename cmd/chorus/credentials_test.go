package main

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/bus/mem"
	"github.com/chorus-sync/chorus/internal/engine"
	"github.com/chorus-sync/chorus/internal/server"
	"github.com/chorus-sync/chorus/internal/servertest"
	"github.com/chorus-sync/chorus/internal/store/postgres"
	"github.com/chorus-sync/chorus/internal/store/sqlite"
)

// TestReadingCredentialsNeverWrites: `chorus admin credentials` and
// `chorus token` read the data directory's credentials. In a database
// that has none of its own yet (an import wrote only a tenant's account,
// before the first `chorus serve`), they say so, and generate nothing:
// they used to add a new account, key and service at every run.
func TestReadingCredentialsNeverWrites(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	path := filepath.Join(dataDir, server.DBFile)
	st, err := sqlite.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	tenant := chorus.NewSID(chorus.PrefixAccount)
	old := time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := st.Update(ctx, func(tx chorus.Tx) error {
		return tx.PutAccount(ctx, &chorus.Account{SID: tenant, AuthToken: "tenant-token", DateCreated: old})
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	// A database of the previous schema (a server of the previous version
	// may run on it): reading must not upgrade it.
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	schema := func() (v int) {
		t.Helper()
		if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	current := schema()
	// Version 6 recorded the operator's credentials (7 is retired secrets,
	// 8 abandoned webhooks, 9 console sign-outs): back to 5.
	before := current - 4
	for _, q := range []string{`DROP TABLE console_signouts`, `DROP TABLE webhooks_abandoned`, `DROP TABLE retired_secrets`, `DROP TABLE operator_credentials`, fmt.Sprintf(`PRAGMA user_version = %d`, before)} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, args := range [][]string{
		{"admin", "credentials", "--data-dir", dataDir},
		{"admin", "credentials", "--data-dir", dataDir},
		{"token", "--identity", "alice", "--data-dir", dataDir},
	} {
		out, errOut, code := chorusCmd(t, cleanEnv(), args...)
		if code != exitError || !strings.Contains(errOut, "no credentials") || strings.Contains(out, tenant) {
			t.Errorf("chorus %v: exit %d, stdout %q, stderr %q; want exit %d, no credentials", args, code, out, errOut, exitError)
		}
	}
	if v := schema(); v != before {
		t.Errorf("the reads upgraded the schema to version %d (was %d)", v, before)
	}
	db.Close()
	st, err = sqlite.Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.View(ctx, func(tx chorus.ReadTx) error {
		accts, err := tx.Accounts(ctx)
		if err == nil && len(accts) != 1 {
			t.Errorf("%d accounts after the reads, want the tenant's alone", len(accts))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestCredentialsFromPostgres: a node on PostgreSQL without TWILIO_*
// generates its credentials there, and logged a hint (`chorus admin
// credentials`) that could only read a data directory, so the generated
// auth token and API secret were out of reach. --store (or
// CHORUS_STORE_URL) reads them, without creating or upgrading a schema.
func TestCredentialsFromPostgres(t *testing.T) {
	ctx := context.Background()
	dsn := servertest.NewDatabase(t)
	if _, errOut, code := chorusCmd(t, cleanEnv(), "admin", "credentials", "--store", dsn); code != exitError || !strings.Contains(errOut, "holds no Chorus store") {
		t.Errorf("admin credentials on an empty database: exit %d, stderr %q; want a refusal", code, errOut)
	}
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	var created bool
	if err := db.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&created); err != nil || created {
		t.Errorf("admin credentials created the schema (%v, %v)", created, err)
	}

	st, err := postgres.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	creds, _, err := engine.New(engine.Config{Store: st, Bus: mem.New()}).Bootstrap(ctx, engine.Credentials{})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("TWILIO_ACCOUNT_SID=%s\nTWILIO_AUTH_TOKEN=%s\nTWILIO_API_KEY=%s\nTWILIO_API_SECRET=%s\nTWILIO_SYNC_SERVICE_SID=%s\n",
		creds.AccountSID, creds.AuthToken, creds.APIKeySID, creds.APISecret, creds.ServiceSID)
	for name, run := range map[string]func() (string, string, int){
		"--store": func() (string, string, int) { return chorusCmd(t, cleanEnv(), "admin", "credentials", "--store", dsn) },
		"CHORUS_STORE_URL": func() (string, string, int) {
			return chorusCmd(t, cleanEnv("CHORUS_STORE_URL="+dsn), "admin", "credentials")
		},
	} {
		if out, errOut, code := run(); code != 0 || out != want {
			t.Errorf("admin credentials with %s: exit %d, stdout %q, stderr %q; want the generated credentials", name, code, out, errOut)
		}
	}
	if _, errOut, code := chorusCmd(t, cleanEnv(), "admin", "credentials", "--store", dsn, "--data-dir", t.TempDir()); code != exitUsage {
		t.Errorf("--store with --data-dir: exit %d, stderr %q; want a usage error", code, errOut)
	}

	// chorus token beside a node on PostgreSQL signs with that node's key,
	// not with a leftover embedded store's (which the node refuses).
	leftover := t.TempDir()
	old, _, err := func() (engine.Credentials, bool, error) {
		st, err := sqlite.Open(ctx, filepath.Join(leftover, server.DBFile), nil)
		if err != nil {
			return engine.Credentials{}, false, err
		}
		defer st.Close()
		return engine.New(engine.Config{Store: st, Bus: mem.New()}).Bootstrap(ctx, engine.Credentials{})
	}()
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := chorusCmd(t, cleanEnv("CHORUS_STORE_URL="+dsn, "CHORUS_DATA_DIR="+leftover), "token", "--identity", "alice")
	if claims := jwtClaims(t, strings.TrimSpace(out)); code != 0 || claims["iss"] != creds.APIKeySID || claims["sub"] != creds.AccountSID {
		t.Errorf("token with CHORUS_STORE_URL and a leftover data dir (key %s): exit %d, iss %v, sub %v, stderr %q; want the PostgreSQL node's key %s",
			old.APIKeySID, code, claims["iss"], claims["sub"], errOut, creds.APIKeySID)
	}
	out, errOut, code = chorusCmd(t, cleanEnv(), "token", "--identity", "alice", "--store", dsn)
	if claims := jwtClaims(t, strings.TrimSpace(out)); code != 0 || claims["iss"] != creds.APIKeySID {
		t.Errorf("token --store: exit %d, iss %v, stderr %q; want %s", code, claims["iss"], errOut, creds.APIKeySID)
	}
	if _, errOut, code := chorusCmd(t, cleanEnv(), "token", "--identity", "alice", "--store", dsn, "--data-dir", leftover); code != exitUsage {
		t.Errorf("token --store with --data-dir: exit %d, stderr %q; want a usage error", code, errOut)
	}

	// admin keys signs in to a node on PostgreSQL with its credentials.
	p := startServeWith(t, t.TempDir(), nil, "--store", dsn)
	out, errOut, code = chorusCmd(t, cleanEnv("CHORUS_STORE_URL="+dsn, "CHORUS_DATA_DIR="+leftover), "admin", "keys", "list", "--url", p.base)
	if code != 0 || !strings.Contains(out, creds.APIKeySID) {
		t.Errorf("admin keys list with CHORUS_STORE_URL and a leftover data dir: exit %d, stdout %q, stderr %q; want the node's keys", code, out, errOut)
	}
}

// jwtClaims decodes a JWT's claims without verifying it (nil if it is not
// one).
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil
	}
	return m
}
