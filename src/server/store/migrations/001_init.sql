-- Initial schema. Written in the SQL that SQLite and PostgreSQL both accept;
-- the only dialect tokens are {{BYTES}} (BLOB / BYTEA) and {{AUTO_ID}} (an
-- auto-assigned integer primary key), replaced by store/dialect.ts.
-- Times are milliseconds since the epoch (BIGINT) so both engines agree.

-- One row per item. `last_version` keeps version numbers increasing even after
-- the item is deleted and written again, so (namespace, name, version) never
-- names two different ciphertexts (the AAD binds exactly that identity).
CREATE TABLE items (
  namespace    TEXT    NOT NULL,
  name         TEXT    NOT NULL,
  kind         TEXT    NOT NULL CHECK (kind IN ('config', 'secret')),
  last_version BIGINT  NOT NULL,
  deleted      INTEGER NOT NULL DEFAULT 0,
  created_at   BIGINT  NOT NULL,
  updated_at   BIGINT  NOT NULL,
  PRIMARY KEY (namespace, name)
);

-- Immutable versions, numbered per item across environments. A tombstone
-- (deleted = 1) ends an environment layer and carries no ciphertext. Key
-- rotation re-seals a current version in place (same value, new key version).
CREATE TABLE versions (
  namespace   TEXT      NOT NULL,
  name        TEXT      NOT NULL,
  version     BIGINT    NOT NULL,
  env         TEXT      NOT NULL,
  key_id      TEXT,
  key_version BIGINT,
  iv          {{BYTES}},
  ciphertext  {{BYTES}},
  tag         {{BYTES}},
  deleted     INTEGER   NOT NULL DEFAULT 0,
  revision    BIGINT    NOT NULL,
  created_at  BIGINT    NOT NULL,
  created_by  TEXT      NOT NULL,
  PRIMARY KEY (namespace, name, version)
);
CREATE INDEX versions_layer ON versions (namespace, name, env, version);

-- Data keys, only ever stored wrapped by the KEK named by kek_id.
CREATE TABLE deks (
  namespace  TEXT      NOT NULL,
  version    BIGINT    NOT NULL,
  wrapped    {{BYTES}} NOT NULL,
  kek_id     TEXT      NOT NULL,
  created_at BIGINT    NOT NULL,
  PRIMARY KEY (namespace, version)
);

-- The event log, the source of the watch stream.
CREATE TABLE events (
  revision    BIGINT NOT NULL PRIMARY KEY,
  type        TEXT   NOT NULL CHECK (type IN ('itemChanged', 'itemDeleted', 'keyRotated')),
  namespace   TEXT   NOT NULL,
  name        TEXT   NOT NULL DEFAULT '',
  env         TEXT   NOT NULL DEFAULT '',
  kind        TEXT   NOT NULL DEFAULT '',
  version     BIGINT NOT NULL DEFAULT 0,
  key_version BIGINT NOT NULL DEFAULT 0,
  created_at  BIGINT NOT NULL
);

-- The single counter row revisions are taken from, inside each writing
-- transaction (see store/sql-store.ts for why not a sequence), and the highest
-- revision compacted away by retention.
CREATE TABLE revision_counter (
  id                INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
  revision          BIGINT  NOT NULL,
  compacted_through BIGINT  NOT NULL
);
INSERT INTO revision_counter (id, revision, compacted_through) VALUES (1, 0, 0);

-- Who did what to which target. Never a value or a token.
CREATE TABLE audit_log (
  id      {{AUTO_ID}},
  at      BIGINT NOT NULL,
  subject TEXT   NOT NULL,
  action  TEXT   NOT NULL,
  target  TEXT   NOT NULL,
  outcome TEXT   NOT NULL,
  detail  TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);
