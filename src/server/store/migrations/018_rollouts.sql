-- Staged rollouts (issue 17). One row per rollout: its state for queries, the
-- rest of its record as JSON (`doc`), and the candidate values sealed under
-- the namespace's data key with an AAD naming the rollout (`candidate`, JSON
-- of base64 ciphertext; never plaintext). The lease says which server replica
-- drives the rollout (steps, rollback) until when; another takes over after it
-- lapses. rollout_items holds the items of active rollouts only (rolling,
-- paused): its primary key is the one-active-rollout-per-item rule, and the
-- write path refuses a direct write to an item listed here.
CREATE TABLE rollouts (
  id          TEXT    NOT NULL PRIMARY KEY,
  state       TEXT    NOT NULL,
  doc         TEXT    NOT NULL,
  candidate   TEXT    NOT NULL,
  lease_owner TEXT    NOT NULL DEFAULT '',
  lease_until BIGINT  NOT NULL DEFAULT 0,
  created_at  BIGINT  NOT NULL,
  updated_at  BIGINT  NOT NULL
);
CREATE INDEX rollouts_state ON rollouts (state);
CREATE TABLE rollout_items (
  item       TEXT NOT NULL PRIMARY KEY,
  rollout_id TEXT NOT NULL
);
-- The application's health signal in agents' reports (watch.proto v1.3).
ALTER TABLE agent_reports ADD COLUMN app_health TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE agent_reports ADD COLUMN health_reason TEXT NOT NULL DEFAULT '';
