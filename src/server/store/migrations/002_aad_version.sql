-- The AAD layout each sealed version was sealed with (shared/crypto.ts
-- valueAad): 1 bound item, version and key; 2 also binds the env layer, the
-- kind and that the row is live. Rows from before this column are v1 and are
-- re-sealed as v2 when the server starts.
ALTER TABLE versions ADD COLUMN aad_version INTEGER NOT NULL DEFAULT 1;
