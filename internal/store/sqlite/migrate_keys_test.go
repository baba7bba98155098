package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
)

// TestMigrateCredentialRotation checks the credential migration on a
// database written before it: the keys that existed are the operator's
// main keys, updated when created, and accounts have no secondary token.
func TestMigrateCredentialRotation(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chorus.db")
	db, err := sql.Open("sqlite", dsn(path, false, "FULL"))
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, q := range []string{
		migrations[0],
		migrations[1],
		"PRAGMA user_version = 2",
		`INSERT INTO accounts (sid, auth_token, friendly_name, date_created) VALUES ('AC1', 'tok', 'a', ` + itoa(created.UnixNano()) + `)`,
		`INSERT INTO api_keys (sid, account_sid, secret, friendly_name, date_created) VALUES ('SK1', 'AC1', 'sec', 'k', ` + itoa(created.UnixNano()) + `)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("version 2 setup: %v", err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatalf("Open(version 2 database): %v", err)
	}
	defer s.Close()
	var k *chorus.APIKey
	var a *chorus.Account
	if err := s.View(ctx, func(tx chorus.ReadTx) (err error) {
		if k, err = tx.APIKey(ctx, "SK1"); err != nil {
			return err
		}
		a, err = tx.Account(ctx, "AC1")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !k.Main || !k.DateUpdated.Equal(created) || k.Secret != "sec" {
		t.Errorf("key after migration = %+v, want a main key updated at %v", k, created)
	}
	if a.SecondaryAuthToken != "" || !a.SecondaryDateCreated.IsZero() || a.AuthToken != "tok" {
		t.Errorf("account after migration = %+v, want no secondary token", a)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
