package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/servertest"
	"github.com/chorus-sync/chorus/internal/store/postgres"
)

// TestDatabaseEncoding: a database whose encoding cannot hold every Unicode
// character is refused by Open and Migrate, before any DDL and with the fix
// in the message, instead of failing the first write of a name outside it;
// SQL_ASCII (bytes unchecked) and UTF8 open and keep any name, as other
// UTF-8 clients read it, whatever the database's default client_encoding.
func TestDatabaseEncoding(t *testing.T) {
	ctx := context.Background()
	const name = "日本語 ✓ \uFFFD"

	t.Run("LATIN1 is refused", func(t *testing.T) {
		dsn := servertest.NewDatabaseEncoded(t, "LATIN1")
		// Why: a client that speaks UTF-8 (psql, or a DSN with
		// client_encoding=UTF8) is refused most of what Chorus writes; one
		// that takes the database's encoding, as pgx does by default, stores
		// UTF-8 bytes that every other client reads as other characters.
		c := servertest.Connect(t, dsn, utf8Session)
		var pgErr *pgconn.PgError
		if _, err := c.Exec(ctx, "SELECT $1::text", name); !errors.As(err, &pgErr) || pgErr.Code != "22P05" {
			t.Fatalf("SELECT %q::text in LATIN1 = %v, want SQLSTATE 22P05 (no equivalent in LATIN1)", name, err)
		}
		// `chorus migrate` fails as the nodes would, before any DDL.
		err := postgres.Migrate(ctx, dsn)
		checkRefusal(t, "Migrate", err)
		var table *string
		if err := c.QueryRow(ctx, "SELECT to_regclass('schema_migrations')::text").Scan(&table); err != nil || table != nil {
			t.Errorf("after a refused Migrate, schema_migrations = %v (err %v), want none", table, err)
		}
		s, err := postgres.Open(ctx, dsn, nil)
		if err == nil {
			s.Close()
		}
		checkRefusal(t, "Open", err)
	})

	for _, tt := range []struct{ name, encoding, clientDefault string }{
		{"SQL_ASCII", "SQL_ASCII", ""},
		{"UTF8", "UTF8", ""},
		// The database's default client_encoding is not the store's.
		{"UTF8 with client_encoding LATIN1", "UTF8", "LATIN1"},
	} {
		t.Run(tt.name+" opens and keeps any name", func(t *testing.T) {
			dsn := servertest.NewDatabaseEncoded(t, tt.encoding)
			if tt.clientDefault != "" {
				_, err := servertest.Connect(t, dsn, nil).Exec(ctx,
					"DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET client_encoding = "+tt.clientDefault+"', current_database()); END$$")
				if err != nil {
					t.Fatal(err)
				}
			}
			s, err := postgres.Open(ctx, dsn, nil)
			if err != nil {
				t.Fatalf("Open on a %s database: %v", tt.encoding, err)
			}
			defer s.Close()
			now := time.Now()
			acc := &chorus.Account{SID: chorus.NewSID(chorus.PrefixAccount), DateCreated: now}
			svc := &chorus.Service{SID: chorus.NewSID(chorus.PrefixService), AccountSID: acc.SID, DateCreated: now, DateUpdated: now}
			doc := &chorus.Object{Kind: chorus.KindDocument, SID: chorus.NewSID(chorus.PrefixDocument), UniqueName: name,
				AccountSID: acc.SID, ServiceSID: svc.SID, Data: json.RawMessage(`{}`), DateCreated: now, DateUpdated: now}
			if err := s.Update(ctx, func(tx chorus.Tx) error {
				return errors.Join(tx.PutAccount(ctx, acc), tx.PutService(ctx, svc), tx.InsertObject(ctx, doc))
			}); err != nil {
				t.Fatalf("create a document named %q: %v", name, err)
			}
			if err := s.View(ctx, func(tx chorus.ReadTx) error {
				got, err := tx.ObjectByName(ctx, chorus.KindDocument, svc.SID, name)
				if err != nil {
					return err
				}
				if got.SID != doc.SID || got.UniqueName != name {
					t.Errorf("ObjectByName = %s %q, want %s %q", got.SID, got.UniqueName, doc.SID, name)
				}
				return nil
			}); err != nil {
				t.Fatalf("read it back: %v", err)
			}
			// What another client sees: the same characters, over UTF-8.
			var stored string
			if err := servertest.Connect(t, dsn, utf8Session).QueryRow(ctx, "SELECT unique_name FROM objects WHERE sid = $1", doc.SID).Scan(&stored); err != nil {
				t.Fatal(err)
			}
			if stored != name {
				t.Errorf("a UTF-8 client reads the name as %q, want %q", stored, name)
			}
		})
	}
}

// utf8Session makes a session speak UTF-8, as psql and most clients do.
var utf8Session = map[string]string{"client_encoding": "UTF8"}

// checkRefusal fails t unless err refuses the LATIN1 database and says how
// to fix it.
func checkRefusal(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s on a LATIN1 database succeeded, want an error", what)
		return
	}
	for _, want := range []string{"LATIN1", "UTF8", "TEMPLATE template0", "README"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s error %q does not mention %q", what, err, want)
		}
	}
}
