/**
 * Applies the versioned plain-SQL migrations in `migrations/` (`NNN_name.sql`)
 * in order and records each in `schema_migrations` with a checksum, so a
 * migration edited after it ran is refused instead of silently skipped. The
 * engine runs this inside one write transaction.
 */
import { createHash, randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Dialect } from './dialect.ts';
import type { SqlConnection } from './sql-store.ts';

export const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations/', import.meta.url));
const MIGRATION_FILE_RE = /^(\d{3})_([a-z0-9_]+)\.sql$/;

/** The migration that adds `revision_counter.store_id`. */
const STORE_IDENTITY_MIGRATION = 11;

/** A store's identity: random, so two stores (or a store and its restored backup) never share one. */
export function newStoreId(): string {
  return randomUUID();
}

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
  readonly checksum: string;
}

export function loadMigrations(dir: string = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .map((file) => ({ file, match: MIGRATION_FILE_RE.exec(file) }))
    .filter((entry): entry is { file: string; match: RegExpExecArray } => entry.match !== null)
    .map(({ file, match }) => {
      const sql = readFileSync(`${dir}/${file}`, 'utf8');
      return { version: Number(match[1]), name: match[2] as string, sql, checksum: createHash('sha256').update(sql).digest('hex') };
    })
    .sort((a, b) => a.version - b.version);
}

/** Applies pending migrations; returns the versions applied. */
export async function migrate(conn: SqlConnection, dialect: Dialect, now: number, migrations: readonly Migration[] = loadMigrations()): Promise<number[]> {
  if (dialect.migrationLockSql) await conn.all(dialect.migrationLockSql);
  await conn.exec(
    'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)',
  );
  const applied = new Map((await conn.all('SELECT version, checksum FROM schema_migrations')).map((row) => [Number(row.version), String(row.checksum)]));
  const newest = Math.max(0, ...migrations.map((m) => m.version));
  for (const version of applied.keys()) {
    if (version > newest) {
      throw new Error(`The database has schema version ${version}, newer than this build knows (${newest}); run a newer config-sidecar.`);
    }
  }
  const done: number[] = [];
  for (const migration of migrations) {
    const checksum = applied.get(migration.version);
    if (checksum !== undefined) {
      if (checksum !== migration.checksum) {
        throw new Error(`Migration ${migration.version}_${migration.name} changed after it was applied; migrations are append-only.`);
      }
      continue;
    }
    await conn.exec(dialect.migrationSql(migration.sql));
    await conn.run(dialect.placeholders('INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)'), [
      migration.version,
      migration.name,
      migration.checksum,
      now,
    ]);
    done.push(migration.version);
  }
  // A store gets its identity when it is created (or first migrated to 011); restore and reset give a new one.
  if (migrations.some((m) => m.version === STORE_IDENTITY_MIGRATION)) {
    await conn.run(dialect.placeholders("UPDATE revision_counter SET store_id = ? WHERE id = 1 AND store_id = ''"), [newStoreId()]);
  }
  return done;
}
