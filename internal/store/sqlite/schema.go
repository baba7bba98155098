package sqlite

import (
	"context"
	"fmt"
)

// migrations are the schema steps, applied in order, each in its own
// transaction; PRAGMA user_version records how many have been applied.
// Append only: never edit a step that has shipped.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE accounts (
	sid           TEXT PRIMARY KEY,
	auth_token    TEXT NOT NULL,
	friendly_name TEXT NOT NULL,
	date_created  INTEGER NOT NULL
);

CREATE TABLE api_keys (
	sid           TEXT PRIMARY KEY,
	account_sid   TEXT NOT NULL,
	secret        TEXT NOT NULL,
	friendly_name TEXT NOT NULL,
	date_created  INTEGER NOT NULL
);
CREATE INDEX api_keys_account ON api_keys (account_sid, date_created, sid);

CREATE TABLE services (
	sid                             TEXT PRIMARY KEY,
	account_sid                     TEXT NOT NULL,
	unique_name                     TEXT NOT NULL,
	friendly_name                   TEXT NOT NULL,
	webhook_url                     TEXT NOT NULL,
	webhooks_from_rest_enabled      INTEGER NOT NULL,
	reachability_webhooks_enabled   INTEGER NOT NULL,
	acl_enabled                     INTEGER NOT NULL,
	reachability_debouncing_enabled INTEGER NOT NULL,
	reachability_debouncing_window  INTEGER NOT NULL,
	date_created                    INTEGER NOT NULL,
	date_updated                    INTEGER NOT NULL
);
CREATE INDEX services_account ON services (account_sid, date_created, sid);

CREATE TABLE objects (
	sid           TEXT PRIMARY KEY,
	kind          TEXT NOT NULL,
	service_sid   TEXT NOT NULL REFERENCES services (sid) ON DELETE CASCADE,
	account_sid   TEXT NOT NULL,
	unique_name   TEXT,
	revision      INTEGER NOT NULL,
	data          BLOB,
	last_event_id INTEGER NOT NULL,
	next_index    INTEGER NOT NULL,
	created_by    TEXT NOT NULL,
	date_created  INTEGER NOT NULL,
	date_updated  INTEGER NOT NULL,
	date_expires  INTEGER
);
CREATE UNIQUE INDEX objects_unique_name ON objects (service_sid, kind, unique_name);
CREATE INDEX objects_page ON objects (service_sid, kind, date_created, sid);
CREATE INDEX objects_expires ON objects (date_expires) WHERE date_expires IS NOT NULL;

CREATE TABLE items (
	object_sid    TEXT NOT NULL REFERENCES objects (sid) ON DELETE CASCADE,
	idx           INTEGER NOT NULL,
	key           TEXT NOT NULL,
	kind          TEXT NOT NULL,
	data          BLOB,
	revision      INTEGER NOT NULL,
	last_event_id INTEGER NOT NULL,
	created_by    TEXT NOT NULL,
	date_created  INTEGER NOT NULL,
	date_updated  INTEGER NOT NULL,
	date_expires  INTEGER,
	PRIMARY KEY (object_sid, idx, key)
);
CREATE INDEX items_key ON items (object_sid, key);
CREATE INDEX items_event ON items (object_sid, last_event_id);
CREATE INDEX items_expires ON items (date_expires) WHERE date_expires IS NOT NULL;

CREATE TABLE permissions (
	object_sid TEXT NOT NULL REFERENCES objects (sid) ON DELETE CASCADE,
	identity   TEXT NOT NULL,
	read       INTEGER NOT NULL,
	write      INTEGER NOT NULL,
	manage     INTEGER NOT NULL,
	PRIMARY KEY (object_sid, identity)
) WITHOUT ROWID;

-- events has no foreign key: an object's events outlive it (DeleteObject)
-- until trimmed; DeleteService deletes them by service_sid.
CREATE TABLE events (
	object_sid  TEXT NOT NULL,
	id          INTEGER NOT NULL,
	service_sid TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	body        TEXT NOT NULL, -- JSON of chorus.Event without Data/ItemData
	data        BLOB,
	item_data   BLOB,
	PRIMARY KEY (object_sid, id)
) WITHOUT ROWID;
CREATE INDEX events_service ON events (service_sid);
CREATE INDEX events_created ON events (created_at);
`,
	// 2: events in insertion (rowid) order. Keyed by (object_sid, id), each
	// appended event landed on its own object's page of the table and of
	// events_service, so a batch of writes to n objects dirtied ~2n pages of
	// wide rows, each one a WAL frame to write and checksum. In rowid
	// order a batch's rows share the last page or two, events_service
	// (service_sid, rowid) appends too, and only the narrow events_object
	// index is touched once per object.
	`
CREATE TABLE events_v2 (
	seq         INTEGER PRIMARY KEY, -- rowid: insertion order
	object_sid  TEXT NOT NULL,
	id          INTEGER NOT NULL,
	service_sid TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	body        TEXT NOT NULL, -- JSON of chorus.Event without Data/ItemData
	data        BLOB,
	item_data   BLOB
);
INSERT INTO events_v2 (object_sid, id, service_sid, created_at, body, data, item_data)
	SELECT object_sid, id, service_sid, created_at, body, data, item_data FROM events
	ORDER BY created_at, object_sid, id;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
CREATE UNIQUE INDEX events_object ON events (object_sid, id);
CREATE INDEX events_service ON events (service_sid);
CREATE INDEX events_created ON events (created_at);
`,
	// 3: the webhook outbox (written in the transaction of its event) and
	// the cluster-wide reachability state (issue 11).
	`
CREATE TABLE outbox (
	seq          INTEGER PRIMARY KEY AUTOINCREMENT,
	service_sid  TEXT NOT NULL,
	order_key    TEXT NOT NULL,
	created_at   INTEGER NOT NULL,
	next_attempt INTEGER NOT NULL,
	attempts     INTEGER NOT NULL,
	last_status  INTEGER NOT NULL,
	last_error   TEXT NOT NULL,
	body         TEXT NOT NULL, -- JSON of chorus.Event without Data/ItemData
	data         BLOB,
	item_data    BLOB
);
CREATE INDEX outbox_service ON outbox (service_sid, seq);

CREATE TABLE presence_nodes (
	node      TEXT PRIMARY KEY,
	heartbeat INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE presence_endpoints (
	service_sid TEXT NOT NULL,
	identity    TEXT NOT NULL,
	node        TEXT NOT NULL,
	endpoint_id TEXT NOT NULL,
	sessions    INTEGER NOT NULL,
	PRIMARY KEY (service_sid, identity, node, endpoint_id)
) WITHOUT ROWID;
CREATE INDEX presence_endpoints_node ON presence_endpoints (node);

-- An identity is online while it has a row here with offline_since NULL;
-- offline_since is when its last endpoint left (debouncing).
CREATE TABLE presence_identities (
	service_sid   TEXT NOT NULL,
	identity      TEXT NOT NULL,
	account_sid   TEXT NOT NULL,
	last_endpoint TEXT NOT NULL,
	offline_since INTEGER,
	PRIMARY KEY (service_sid, identity)
) WITHOUT ROWID;
CREATE INDEX presence_identities_offline ON presence_identities (offline_since) WHERE offline_since IS NOT NULL;
`,
	// 4: credential rotation. Accounts get a secondary auth token; API
	// keys a main flag (may manage keys: the keys that existed so far are
	// the operator's bootstrap keys) and date_updated.
	`
ALTER TABLE accounts ADD COLUMN secondary_auth_token TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN secondary_date_created INTEGER NOT NULL DEFAULT -9223372036854775808;
ALTER TABLE api_keys ADD COLUMN main INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN date_updated INTEGER NOT NULL DEFAULT -9223372036854775808;
UPDATE api_keys SET main = 1, date_updated = date_created;
`,
	// 5: revoked API keys, remembered so that a copy from another store
	// never brings one back (Tx.DeleteAPIKey, ReadTx.APIKeyRevoked).
	`
CREATE TABLE revoked_api_keys (
	sid          TEXT PRIMARY KEY,
	date_revoked INTEGER NOT NULL
) WITHOUT ROWID;
`,
	// 6: the operator's credentials (Tx.PutOperatorCredentials), named
	// instead of guessed as "the oldest account", which an import made
	// another tenant's.
	`
CREATE TABLE operator_credentials (
	one         INTEGER PRIMARY KEY CHECK (one = 1),
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
	date_retired INTEGER NOT NULL
) WITHOUT ROWID;
`,
	// 8: webhooks given up on, kept for a while to be looked at and sent
	// again (Tx.AbandonOutbox, Tx.ReplayAbandoned): the outbox's columns,
	// its seq, and when.
	`
CREATE TABLE webhooks_abandoned (
	seq          INTEGER PRIMARY KEY,
	service_sid  TEXT NOT NULL,
	order_key    TEXT NOT NULL,
	created_at   INTEGER NOT NULL,
	next_attempt INTEGER NOT NULL,
	attempts     INTEGER NOT NULL,
	last_status  INTEGER NOT NULL,
	last_error   TEXT NOT NULL,
	body         TEXT NOT NULL,
	data         BLOB,
	item_data    BLOB,
	abandoned_at INTEGER NOT NULL
);
CREATE INDEX webhooks_abandoned_service ON webhooks_abandoned (service_sid, seq);
CREATE INDEX webhooks_abandoned_at ON webhooks_abandoned (abandoned_at);
`,
	// 9: console sign-outs (Tx.SignOutConsole): every token of one sign-in
	// (credential, sign-in id) is refused until it would have expired.
	`
CREATE TABLE console_signouts (
	credential TEXT NOT NULL,
	sign_in    TEXT NOT NULL,
	ends_at    INTEGER NOT NULL,
	PRIMARY KEY (credential, sign_in)
) WITHOUT ROWID;
`,
}

// migrate applies the migrations not yet recorded in user_version. It is
// idempotent: a database that is up to date is left alone.
func migrate(ctx context.Context, c *conn) error {
	var version int
	if err := c.c.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("sqlite: migrate: read user_version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("sqlite: migrate: database schema version %d is newer than this binary's %d", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		if err := migrateStep(ctx, c, i); err != nil {
			return fmt.Errorf("sqlite: migrate to version %d: %w", i+1, err)
		}
	}
	return nil
}

func migrateStep(ctx context.Context, c *conn, i int) (err error) {
	if _, err := c.c.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_, _ = c.c.ExecContext(context.Background(), "ROLLBACK")
		}
	}()
	// Another process may have migrated while we waited for the lock.
	var version int
	if err := c.c.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	if version > i {
		_, err = c.c.ExecContext(ctx, "COMMIT")
		return err
	}
	if _, err := c.c.ExecContext(ctx, migrations[i]); err != nil {
		return err
	}
	if _, err := c.c.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", i+1)); err != nil {
		return err
	}
	_, err = c.c.ExecContext(ctx, "COMMIT")
	return err
}
