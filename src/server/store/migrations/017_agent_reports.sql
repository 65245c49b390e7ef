-- Fleet convergence (issue 16): the last report of each agent, so every
-- server replica on one PostgreSQL database answers GET /v1/agents the same.
-- Written outside the revision-counter lock (one upsert per report), never
-- part of the event log. Rows older than --agent-expiry are deleted.
CREATE TABLE agent_reports (
  id               TEXT    NOT NULL PRIMARY KEY,
  subject          TEXT    NOT NULL,
  prefixes         TEXT    NOT NULL,
  applied_revision BIGINT  NOT NULL,
  store_id         TEXT    NOT NULL DEFAULT '',
  connected        INTEGER NOT NULL,
  health           TEXT    NOT NULL,
  rollouts         TEXT    NOT NULL DEFAULT '[]',
  last_seen        BIGINT  NOT NULL
);
CREATE INDEX agent_reports_last_seen ON agent_reports (last_seen);
