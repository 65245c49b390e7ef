-- Atomic change sets (issue 16). Each member of a set is its own event with its
-- own revision; set_revision is the set's last revision (0: not in a set), so a
-- watcher applies the members together. Numbered 016 after the issue so that
-- migrations added in parallel branches do not collide; versions may have gaps.
ALTER TABLE events ADD COLUMN set_revision BIGINT NOT NULL DEFAULT 0;
