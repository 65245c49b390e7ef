-- Store identity and event digests (the watch protocol's log positions).
-- Numbered 011 after the issue, so migrations added in parallel branches do not collide.
-- A position is (store id, revision, digest of the event at that revision):
-- the id changes when a store is created, restored or reset, and the digest
-- tells apart two events that reuse one revision number (a restored backup, a
-- promoted standby that lost commits). The id is filled in by the migration
-- runner (a random id; SQL has no portable random). `compacted_digest` keeps
-- the digest of the event at `compacted_through`, so a resume exactly at the
-- compaction boundary can still be verified. Events written before this
-- migration have an empty digest, which no resume is checked against.
ALTER TABLE revision_counter ADD COLUMN store_id TEXT NOT NULL DEFAULT '';
ALTER TABLE revision_counter ADD COLUMN compacted_digest TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN digest TEXT NOT NULL DEFAULT '';
