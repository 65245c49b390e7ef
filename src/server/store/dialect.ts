/**
 * Everything that differs between SQLite and PostgreSQL SQL, in one place:
 * placeholders, column types in migrations (BLOB/BYTEA, auto ids), the
 * byte-order collation, the write lock and the schema migration lock. Queries
 * elsewhere are written once with `?` placeholders in the SQL both engines
 * accept. No upsert is needed: every write transaction holds the write lock
 * first, so read-then-insert is safe.
 */

export interface Dialect {
  readonly name: 'sqlite' | 'postgres';
  /** Rewrites `?` placeholders into the engine's form (`$1`, `$2`… for PostgreSQL). */
  placeholders(sql: string): string;
  /** Replaces the `{{TOKEN}}` type markers used by migration files. */
  migrationSql(sql: string): string;
  /**
   * Run first in every write transaction to serialise writers across
   * processes and replicas (undefined when BEGIN IMMEDIATE already does).
   */
  readonly writeLockSql: string | undefined;
  /** Statement run before migrating, inside the migration transaction, so replicas starting together migrate once. */
  readonly migrationLockSql: string | undefined;
  /**
   * The collation that orders text by bytes (`COLLATE <this>`): keyset paging
   * must order and compare alike on both engines, and PostgreSQL's default
   * follows the database locale (which ignores '-', '.' and '_' at first).
   */
  readonly byteOrder: string;
}

/** Tokens allowed in migration files and what each engine calls them. */
const TYPE_TOKENS = {
  sqlite: { BYTES: 'BLOB', AUTO_ID: 'INTEGER PRIMARY KEY AUTOINCREMENT', BYTE_ORDER: 'BINARY' },
  postgres: { BYTES: 'BYTEA', AUTO_ID: 'BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY', BYTE_ORDER: '"C"' },
} as const;

/** An arbitrary constant key for `pg_advisory_xact_lock` ("cfsd" in ASCII). */
export const PG_MIGRATION_LOCK_KEY = 0x63667364;

function replaceTokens(sql: string, tokens: Readonly<Record<string, string>>): string {
  return sql.replace(/\{\{([A-Z_]+)\}\}/g, (_match, token: string) => {
    const replacement = tokens[token];
    if (replacement === undefined) throw new Error(`Unknown migration token {{${token}}}`);
    return replacement;
  });
}

export const sqliteDialect: Dialect = {
  name: 'sqlite',
  placeholders: (sql) => sql,
  migrationSql: (sql) => replaceTokens(sql, TYPE_TOKENS.sqlite),
  // BEGIN IMMEDIATE already holds SQLite's single write lock.
  writeLockSql: undefined,
  migrationLockSql: undefined,
  byteOrder: TYPE_TOKENS.sqlite.BYTE_ORDER,
};

export const postgresDialect: Dialect = {
  name: 'postgres',
  placeholders(sql) {
    let n = 0;
    return sql.replace(/\?/g, () => `$${++n}`);
  },
  migrationSql: (sql) => replaceTokens(sql, TYPE_TOKENS.postgres),
  // The counter row's lock: writers on every replica queue here, so an item's
  // read-then-write cannot race and revisions commit in order.
  writeLockSql: 'SELECT revision FROM revision_counter WHERE id = 1 FOR UPDATE',
  migrationLockSql: `SELECT pg_advisory_xact_lock(${PG_MIGRATION_LOCK_KEY})`,
  byteOrder: TYPE_TOKENS.postgres.BYTE_ORDER,
};
