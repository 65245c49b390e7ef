-- Indexes for the per-namespace questions an agent's key fetch asks
-- (POST /v1/deks), so that they seek instead of passing over every version
-- or item of the namespace: at 100k items that pass held the server's event
-- loop for seconds (issue 12). Numbered 021 to avoid parallel branches' numbers.
-- versions_key: the distinct key versions of a namespace, and whether a
-- current version is sealed under one (index-only with versions_layer).
CREATE INDEX versions_key ON versions (namespace, key_version, name, env, version);
-- items_ring: the few items of a namespace that keep a key ring.
CREATE INDEX items_ring ON items (namespace, name) WHERE deleted = 0 AND ring_grace > 0;
