-- Key rings (issue 20). Numbered 020 after the issue so that migrations added
-- in parallel branches do not collide; versions may have gaps.
-- ring_grace: how long (ms) a version that stops being current stays readable
-- in the item's ring; 0 = no ring (the default). A per-item setting kept with
-- the item, written by a PUT or change-set entry that names `ringGrace`.
-- ring_floor: versions below it are out of the ring whatever their age
-- (`revokePrevious` ends every previous version's grace at once).
ALTER TABLE items ADD COLUMN ring_grace BIGINT NOT NULL DEFAULT 0;
ALTER TABLE items ADD COLUMN ring_floor BIGINT NOT NULL DEFAULT 0;
