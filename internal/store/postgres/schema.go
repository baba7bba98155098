package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
)

// migrations are the schema steps, applied in order, each in its own
// transaction; schema_migrations records the applied versions. Append
// only: never edit a step that has shipped.
//
// The schema mirrors the sqlite backend's: times are BIGINT unix nanos
// (math.MinInt64 for the zero time), JSON is BYTEA stored verbatim (never
// jsonb, which reorders keys). Text columns that order pages use COLLATE
// "C" so that they sort by bytes, as SQLite does.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE accounts (
	sid           TEXT COLLATE "C" PRIMARY KEY,
	auth_token    TEXT NOT NULL,
	friendly_name TEXT NOT NULL,
	date_created  BIGINT NOT NULL
);

CREATE TABLE api_keys (
	sid           TEXT COLLATE "C" PRIMARY KEY,
	account_sid   TEXT COLLATE "C" NOT NULL,
	secret        TEXT NOT NULL,
	friendly_name TEXT NOT NULL,
	date_created  BIGINT NOT NULL
);
CREATE INDEX api_keys_account ON api_keys (account_sid, date_created, sid);

CREATE TABLE services (
	sid                             TEXT COLLATE "C" PRIMARY KEY,
	account_sid                     TEXT COLLATE "C" NOT NULL,
	unique_name                     TEXT NOT NULL,
	friendly_name                   TEXT NOT NULL,
	webhook_url                     TEXT NOT NULL,
	webhooks_from_rest_enabled      BOOLEAN NOT NULL,
	reachability_webhooks_enabled   BOOLEAN NOT NULL,
	acl_enabled                     BOOLEAN NOT NULL,
	reachability_debouncing_enabled BOOLEAN NOT NULL,
	reachability_debouncing_window  BIGINT NOT NULL,
	date_created                    BIGINT NOT NULL,
	date_updated                    BIGINT NOT NULL
);
CREATE INDEX services_account ON services (account_sid, date_created, sid);

CREATE TABLE objects (
	sid           TEXT COLLATE "C" PRIMARY KEY,
	kind          TEXT COLLATE "C" NOT NULL,
	service_sid   TEXT COLLATE "C" NOT NULL REFERENCES services (sid) ON DELETE CASCADE,
	account_sid   TEXT COLLATE "C" NOT NULL,
	unique_name   TEXT COLLATE "C",
	revision      BIGINT NOT NULL,
	data          BYTEA,
	last_event_id BIGINT NOT NULL,
	next_index    BIGINT NOT NULL,
	created_by    TEXT NOT NULL,
	date_created  BIGINT NOT NULL,
	date_updated  BIGINT NOT NULL,
	date_expires  BIGINT
);
CREATE UNIQUE INDEX objects_unique_name ON objects (service_sid, kind, unique_name);
CREATE INDEX objects_page ON objects (service_sid, kind, date_created, sid);
CREATE INDEX objects_expires ON objects (date_expires) WHERE date_expires IS NOT NULL;

CREATE TABLE items (
	object_sid    TEXT COLLATE "C" NOT NULL REFERENCES objects (sid) ON DELETE CASCADE,
	idx           BIGINT NOT NULL,
	key           TEXT COLLATE "C" NOT NULL,
	kind          TEXT COLLATE "C" NOT NULL,
	data          BYTEA,
	revision      BIGINT NOT NULL,
	last_event_id BIGINT NOT NULL,
	created_by    TEXT NOT NULL,
	date_created  BIGINT NOT NULL,
	date_updated  BIGINT NOT NULL,
	date_expires  BIGINT,
	PRIMARY KEY (object_sid, idx, key)
);
CREATE INDEX items_key ON items (object_sid, key);
CREATE INDEX items_event ON items (object_sid, last_event_id);
CREATE INDEX items_expires ON items (date_expires) WHERE date_expires IS NOT NULL;

CREATE TABLE permissions (
	object_sid TEXT COLLATE "C" NOT NULL REFERENCES objects (sid) ON DELETE CASCADE,
	identity   TEXT COLLATE "C" NOT NULL,
	read       BOOLEAN NOT NULL,
	write      BOOLEAN NOT NULL,
	manage     BOOLEAN NOT NULL,
	PRIMARY KEY (object_sid, identity)
);

-- events has no foreign key: an object's events outlive it (DeleteObject)
-- until trimmed; DeleteService deletes them by service_sid.
CREATE TABLE events (
	object_sid  TEXT COLLATE "C" NOT NULL,
	id          BIGINT NOT NULL,
	service_sid TEXT COLLATE "C" NOT NULL,
	created_at  BIGINT NOT NULL,
	body        TEXT NOT NULL, -- JSON of chorus.Event without Data/ItemData
	data        BYTEA,
	item_data   BYTEA,
	PRIMARY KEY (object_sid, id)
);
CREATE INDEX events_service ON events (service_sid);
CREATE INDEX events_created ON events (created_at);
`,
	// 2: the webhook outbox (written in the transaction of its event) and
	// the cluster-wide reachability state (issue 11).
	`
CREATE TABLE outbox (
	seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	service_sid  TEXT COLLATE "C" NOT NULL,
	order_key    TEXT COLLATE "C" NOT NULL,
	created_at   BIGINT NOT NULL,
	next_attempt BIGINT NOT NULL,
	attempts     BIGINT NOT NULL,
	last_status  BIGINT NOT NULL,
	last_error   TEXT NOT NULL,
	body         TEXT NOT NULL, -- JSON of chorus.Event without Data/ItemData
	data         BYTEA,
	item_data    BYTEA
);
CREATE INDEX outbox_service ON outbox (service_sid, seq);

CREATE TABLE presence_nodes (
	node      TEXT COLLATE "C" PRIMARY KEY,
	heartbeat BIGINT NOT NULL
);

CREATE TABLE presence_endpoints (
	service_sid TEXT COLLATE "C" NOT NULL,
	identity    TEXT COLLATE "C" NOT NULL,
	node        TEXT COLLATE "C" NOT NULL,
	endpoint_id TEXT COLLATE "C" NOT NULL,
	sessions    BIGINT NOT NULL,
	PRIMARY KEY (service_sid, identity, node, endpoint_id)
);
CREATE INDEX presence_endpoints_node ON presence_endpoints (node);

-- An identity is online while it has a row here with offline_since NULL;
-- offline_since is when its last endpoint left (debouncing).
CREATE TABLE presence_identities (
	service_sid   TEXT COLLATE "C" NOT NULL,
	identity      TEXT COLLATE "C" NOT NULL,
	account_sid   TEXT COLLATE "C" NOT NULL,
	last_endpoint TEXT NOT NULL,
	offline_since BIGINT,
	PRIMARY KEY (service_sid, identity)
);
CREATE INDEX presence_identities_offline ON presence_identities (offline_since) WHERE offline_since IS NOT NULL;
`,
	// 3: credential rotation. Accounts get a secondary auth token; API
	// keys a main flag (may manage keys: the keys that existed so far are
	// the operator's bootstrap keys) and date_updated.
	`
ALTER TABLE accounts ADD COLUMN secondary_auth_token TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN secondary_date_created BIGINT NOT NULL DEFAULT -9223372036854775808;
ALTER TABLE api_keys ADD COLUMN main BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE api_keys ADD COLUMN date_updated BIGINT NOT NULL DEFAULT -9223372036854775808;
UPDATE api_keys SET main = true, date_updated = date_created;
`,
	// 4: revoked API keys, remembered so that a copy from another store
	// never brings one back (Tx.DeleteAPIKey, ReadTx.APIKeyRevoked).
	`
CREATE TABLE revoked_api_keys (
	sid          TEXT PRIMARY KEY,
	date_revoked BIGINT NOT NULL
);
`,
	// 5: the cluster's identity (ClusterIdentity): a random id that the
	// nodes put on their bus messages, so that two clusters on one NATS
	// (production, and staging restored from its dump) never take each
	// other's events; and the database it was made in, to notice a copy.
	`
CREATE TABLE cluster_identity (
	one    BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
	id     TEXT NOT NULL,
	db_oid BIGINT NOT NULL
);
INSERT INTO cluster_identity (id, db_oid)
	SELECT md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text), oid::bigint
	FROM pg_database WHERE datname = current_database();
`,
	// 6: the operator's credentials (Tx.PutOperatorCredentials), named
	// instead of guessed as "the oldest account", which an import made
	// another tenant's.
	`
CREATE TABLE operator_credentials (
	one         BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
	account_sid TEXT NOT NULL,
	api_key_sid TEXT NOT NULL,
	service_sid TEXT NOT NULL
);
`,
	// 7: retired secrets (Tx.PutAccount, Tx.PutAPIKey, ReadTx.SecretRetired),
	// by digest: a node restarted with the environment of before a
	// rotation must not bring an old auth token or key secret back.
	`
CREATE TABLE retired_secrets (
	digest       TEXT PRIMARY KEY,
	date_retired BIGINT NOT NULL
);
`,
	// 8: the identity also remembers its own table's OID, so that a dump
	// restored with --clean into the database it was taken from (same
	// database OID, tables made anew) is noticed as restored too.
	`
ALTER TABLE cluster_identity ADD COLUMN table_oid BIGINT;
UPDATE cluster_identity SET table_oid = 'cluster_identity'::regclass::oid::bigint;
`,
	// 9: webhooks given up on, kept for a while to be looked at and sent
	// again (Tx.AbandonOutbox, Tx.ReplayAbandoned): the outbox's columns,
	// its seq, and when.
	`
CREATE TABLE webhooks_abandoned (
	seq          BIGINT PRIMARY KEY,
	service_sid  TEXT COLLATE "C" NOT NULL,
	order_key    TEXT COLLATE "C" NOT NULL,
	created_at   BIGINT NOT NULL,
	next_attempt BIGINT NOT NULL,
	attempts     BIGINT NOT NULL,
	last_status  BIGINT NOT NULL,
	last_error   TEXT NOT NULL,
	body         TEXT NOT NULL,
	data         BYTEA,
	item_data    BYTEA,
	abandoned_at BIGINT NOT NULL
);
CREATE INDEX webhooks_abandoned_service ON webhooks_abandoned (service_sid, seq);
CREATE INDEX webhooks_abandoned_at ON webhooks_abandoned (abandoned_at);
`,
	// 10: console sign-outs (Tx.SignOutConsole): every token of one
	// sign-in (credential, sign-in id) is refused until it would have
	// expired.
	`
CREATE TABLE console_signouts (
	credential TEXT COLLATE "C" NOT NULL,
	sign_in    TEXT COLLATE "C" NOT NULL,
	ends_at    BIGINT NOT NULL,
	PRIMARY KEY (credential, sign_in)
);
`,
}

// lockKey derives an advisory lock key from a purpose and the schema the
// connection works in, so that stores in different schemas of one
// database (tests, several tenants) do not share locks.
func lockKey(purpose, schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("chorus/" + purpose + "/" + schema))
	return int64(h.Sum64())
}

// currentSchema returns the schema that unqualified names resolve to: the
// first existing schema of the connection's search_path.
func currentSchema(ctx context.Context, c *pgx.Conn) (string, error) {
	var schema *string
	if err := c.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return "", fmt.Errorf("read current_schema: %w", err)
	}
	if schema == nil {
		var path string
		if err := c.QueryRow(ctx, "SHOW search_path").Scan(&path); err != nil {
			return "", fmt.Errorf("read search_path: %w", err)
		}
		return "", fmt.Errorf("no schema of search_path %q exists", path)
	}
	return *schema, nil
}

// Migrate connects to dsn and brings the schema of its search_path up to
// date. Several processes may migrate at once: they take turns under a
// session advisory lock, and each applies only the steps not yet recorded
// in schema_migrations. Open migrates too.
func Migrate(ctx context.Context, dsn string) error {
	cfg, err := parseConfig(dsn, Config{})
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	c, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %s: %w", addr(cfg.ConnConfig), unavailable(err))
	}
	defer c.Close(context.WithoutCancel(ctx))
	if err := migrate(ctx, c); err != nil {
		return fmt.Errorf("postgres: migrate: %s: %w", addr(cfg.ConnConfig), err)
	}
	return nil
}

// migrate applies the missing migrations on c, holding the schema's
// migration lock. It is idempotent.
func migrate(ctx context.Context, c *pgx.Conn) (err error) {
	if err := checkEncoding(ctx, c); err != nil {
		return err
	}
	schema, err := currentSchema(ctx, c)
	if err != nil {
		return err
	}
	// Migrations wait for each other (the advisory lock) and their DDL for
	// the nodes' transactions: the sessions' lock_timeout (parseConfig),
	// meant for row locks, is lifted meanwhile; ctx bounds the wait.
	if _, err := c.Exec(ctx, "SET lock_timeout = 0"); err != nil {
		return fmt.Errorf("lift lock_timeout: %w", err)
	}
	defer func() {
		// Back to the session's value (a pooled connection goes back clean).
		if _, rerr := c.Exec(context.WithoutCancel(ctx), "RESET lock_timeout"); rerr != nil && err == nil {
			err = fmt.Errorf("reset lock_timeout: %w", rerr)
		}
	}()
	key := lockKey("migrate", schema)
	if _, err := c.Exec(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	defer func() {
		// Closing the connection would release the lock too; unlock
		// explicitly so a pooled connection goes back clean.
		if _, uerr := c.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", key); uerr != nil && err == nil {
			err = fmt.Errorf("unlock: %w", uerr)
		}
	}()
	// Created only when missing: a schema that is up to date is only read,
	// so that a node can open it on a server that takes no writes now (a
	// failover under way), and waits for writes rather than failing.
	var exists bool
	if err := c.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return fmt.Errorf("find schema_migrations: %w", err)
	}
	if !exists {
		if _, err := c.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			applied_at BIGINT NOT NULL
		)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
	}
	var version int
	if err := c.QueryRow(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("database schema %s is at version %d, newer than this binary's %d", schema, version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		if err := migrateStep(ctx, c, i); err != nil {
			return fmt.Errorf("to version %d: %w", i+1, err)
		}
	}
	return nil
}

// checkSchema refuses a database whose schema is not this binary's
// version, without changing it (Config.ReadOnly).
func checkSchema(ctx context.Context, c *pgx.Conn, schema string) error {
	var exists bool
	if err := c.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return fmt.Errorf("find schema_migrations: %w", err)
	}
	version := 0
	if exists {
		if err := c.QueryRow(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&version); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
	}
	switch {
	case version == 0:
		return fmt.Errorf("database schema %s holds no Chorus store (start a node on it first)", schema)
	case version < len(migrations):
		return fmt.Errorf("database schema %s is at version %d, older than this binary's %d (a node of this version upgrades it when it starts)", schema, version, len(migrations))
	case version > len(migrations):
		return fmt.Errorf("database schema %s is at version %d, newer than this binary's %d", schema, version, len(migrations))
	}
	return nil
}

func migrateStep(ctx context.Context, c *pgx.Conn, i int) error {
	tx, err := c.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after Commit
	if _, err := tx.Exec(ctx, migrations[i]); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
		i+1, time.Now().UnixNano()); err != nil {
		return err
	}
	return errors.Join(tx.Commit(ctx))
}
