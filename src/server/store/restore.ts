/**
 * Restoring a store from a backup, and marking a store restored by other means
 * (point-in-time recovery, a promoted standby), the way etcd's snapshot
 * restore does with `--bump-revision --mark-compacted`: the store gets a new
 * identity, the revision counter jumps ahead and the whole log is marked
 * compacted. Every position an agent took from the store before (or from the
 * store the backup was taken from) then fails the store-id check, and a v1.0
 * client's since_revision is compacted or in the future: all of them resync
 * instead of resuming past events they never saw.
 */
import { execFile } from 'node:child_process';
import { access, chmod, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { backup as sqliteBackup, DatabaseSync } from 'node:sqlite';
import { promisify } from 'node:util';
import { AppError } from '../../shared/errors.ts';
import type { Milliseconds } from '../../shared/units.ts';
import { randomDigest } from '../event-digest.ts';
import { newStoreId } from './migrate.ts';
import { openSqliteStore, SQLITE_FILE_NAME } from './sqlite-store.ts';
import { acquireStoreLock, type StoreLock } from './store-lock.ts';
import type { LogState, Store } from './store.ts';

/**
 * How far a restore moves the revision counter ahead. Larger than any number
 * of writes a store could have taken between the backup and the restore in
 * practice, so a revision an agent applied from the old store is never a
 * valid position in the restored one even before the store-id check.
 */
export const RESTORE_REVISION_BUMP = 1_000_000;
const DATA_DIR_MODE = 0o700;
const DATA_FILE_MODE = 0o600;

export interface RestoreOutcome {
  /** The identity the store had before (the backup's). */
  readonly previousStoreId: string;
  readonly state: LogState;
}

/** Gives the open `store` a new identity, bumps its revision and compacts its whole log. */
export async function markRestored(store: Store): Promise<RestoreOutcome> {
  const previousStoreId = (await store.read((r) => r.logState())).storeId;
  const state = await store.write((w) => w.markRestored(newStoreId(), RESTORE_REVISION_BUMP, randomDigest()));
  return { previousStoreId, state };
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Copies the SQLite backup `from` into the (new or empty) data directory
 * `dataDir`, migrates it and marks it restored. Refuses a data directory that
 * already holds a store, and a file that is not a config-sidecar store, so
 * nothing is overwritten.
 */
export async function restoreSqlite(from: string, dataDir: string, now: () => Milliseconds): Promise<RestoreOutcome> {
  const target = join(dataDir, SQLITE_FILE_NAME);
  let source: DatabaseSync;
  try {
    source = new DatabaseSync(from, { readOnly: true });
  } catch (err) {
    throw new AppError('invalid_argument', `Cannot open ${from} as a SQLite backup: ${(err as Error).message}`, { cause: err });
  }
  let lock: StoreLock | undefined;
  try {
    try {
      source.prepare('SELECT version FROM schema_migrations').all();
      source.prepare('SELECT revision FROM revision_counter WHERE id = 1').all();
    } catch (err) {
      throw new AppError('invalid_argument', `${from} is not a config-sidecar store backup (made by \`config-sidecar backup\`).`, { cause: err });
    }
    await mkdir(dataDir, { recursive: true, mode: DATA_DIR_MODE });
    // Held from before the check until the store is marked: no server can start on a half-restored directory.
    lock = acquireStoreLock(dataDir);
    if (await exists(target)) {
      throw new AppError('conflict', `${dataDir} already holds a store (${SQLITE_FILE_NAME}); restore into a new directory, or move the old store away first.`);
    }
    await sqliteBackup(source, target);
    await chmod(target, DATA_FILE_MODE);
  } catch (err) {
    lock?.release();
    throw err;
  } finally {
    source.close();
  }
  try {
    const store = await openSqliteStore({ dataDir, now, exclusive: false, create: false });
    try {
      return await markRestored(store);
    } finally {
      await store.close();
    }
  } finally {
    lock.release();
  }
}

/**
 * Runs `pg_restore` of a `pg_dump --format=custom` archive into the empty
 * database at `url` in one transaction (nothing is left half-restored), then
 * opens it with `open` and marks it restored. The password reaches
 * pg_restore through PGPASSWORD, not its command line.
 */
export async function restorePostgres(from: string, url: string, open: () => Promise<Store>, redact: (text: string) => string): Promise<RestoreOutcome> {
  if (await postgresHoldsStore(url)) {
    throw new AppError('conflict', 'The database already holds a store; restore into a new, empty database (or use --in-place for one restored by other means).');
  }
  const target = new URL(url);
  const password = decodeURIComponent(target.password);
  target.password = '';
  try {
    await promisify(execFile)('pg_restore', ['--no-owner', '--exit-on-error', '--single-transaction', `--dbname=${target.toString()}`, from], {
      env: { ...process.env, ...(password ? { PGPASSWORD: password } : {}) },
    });
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') {
      throw new AppError('store_unavailable', 'pg_restore was not found on PATH; install the PostgreSQL client tools (the server\'s major version or newer).', { cause: err });
    }
    const stderr = String((err as { stderr?: unknown }).stderr ?? (err as Error).message).trim().split('\n')[0] ?? '';
    throw new AppError('store_unavailable', `pg_restore failed (restore into an empty database): ${redact(stderr)}`, { cause: err });
  }
  const store = await open();
  try {
    return await markRestored(store);
  } finally {
    await store.close();
  }
}

async function postgresHoldsStore(url: string): Promise<boolean> {
  // Loaded only here, so the embedded default never loads `pg`.
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    const { rows } = await client.query<{ present: boolean }>("SELECT to_regclass('public.schema_migrations') IS NOT NULL AS present");
    return rows[0]?.present === true;
  } catch (err) {
    throw new AppError('store_unavailable', 'Cannot connect to the PostgreSQL database to restore into.', { cause: err });
  } finally {
    await client.end().catch(() => undefined);
  }
}
