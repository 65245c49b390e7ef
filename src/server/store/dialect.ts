/**
 * Everything that differs between SQLite and PostgreSQL SQL, in one place:
 * placeholders, column types in migrations, the upsert clause and the schema
 * migration lock. Queries elsewhere are written once with `?` placeholders in
 * the SQL both engines accept.
 */

export interface Dialect {
  readonly name: 'sqlite' | 'postgres';
  /** Rewrites `?` placeholders into the engine's form (`$1`, `$2`… for PostgreSQL). */
  placeholders(sql: string): string;
  /** Replaces the `{{TOKEN}}` type markers used by migration files. */
  migrationSql(sql: string): string;
  /** `INSERT … ON CONFLICT … DO UPDATE` (both engines take the same form today; kept here so a difference has one home). */
  upsert(table: string, columns: readonly string[], conflict: readonly string[], update: readonly string[]): string;
  /** Statement run before migrating, inside the migration transaction, so replicas starting together migrate once. */
  readonly migrationLockSql: string | undefined;
}

/** Tokens allowed in migration files and what each engine calls them. */
const TYPE_TOKENS = {
  sqlite: { BYTES: 'BLOB', AUTO_ID: 'INTEGER PRIMARY KEY AUTOINCREMENT' },
  postgres: { BYTES: 'BYTEA', AUTO_ID: 'BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY' },
} as const;

/** An arbitrary constant key for `pg_advisory_xact_lock` ("cfsd" in ASCII). */
const PG_MIGRATION_LOCK_KEY = 0x63667364;

function replaceTokens(sql: string, tokens: Readonly<Record<string, string>>): string {
  return sql.replace(/\{\{([A-Z_]+)\}\}/g, (_match, token: string) => {
    const replacement = tokens[token];
    if (replacement === undefined) throw new Error(`Unknown migration token {{${token}}}`);
    return replacement;
  });
}

function upsertSql(table: string, columns: readonly string[], conflict: readonly string[], update: readonly string[]): string {
  const values = columns.map(() => '?').join(', ');
  const set = update.map((column) => `${column} = excluded.${column}`).join(', ');
  return `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${values}) ON CONFLICT (${conflict.join(', ')}) DO UPDATE SET ${set}`;
}

export const sqliteDialect: Dialect = {
  name: 'sqlite',
  placeholders: (sql) => sql,
  migrationSql: (sql) => replaceTokens(sql, TYPE_TOKENS.sqlite),
  upsert: upsertSql,
  // BEGIN IMMEDIATE already holds SQLite's single write lock.
  migrationLockSql: undefined,
};

export const postgresDialect: Dialect = {
  name: 'postgres',
  placeholders(sql) {
    let n = 0;
    return sql.replace(/\?/g, () => `$${++n}`);
  },
  migrationSql: (sql) => replaceTokens(sql, TYPE_TOKENS.postgres),
  upsert: upsertSql,
  migrationLockSql: `SELECT pg_advisory_xact_lock(${PG_MIGRATION_LOCK_KEY})`,
};
