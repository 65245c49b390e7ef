-- GET /v1/list pages by key: (namespace, name) > the cursor, in byte order,
-- LIMIT n. This index answers that range on both engines (PostgreSQL's primary
-- key follows the database locale's collation, which is not byte order).
-- Numbered 022 after the branch that adds it (g22).
CREATE INDEX items_listing ON items (namespace COLLATE {{BYTE_ORDER}}, name COLLATE {{BYTE_ORDER}}) WHERE deleted = 0;
