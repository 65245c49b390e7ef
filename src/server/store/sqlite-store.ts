/**
 * The embedded engine: one SQLite database file in the data directory through
 * Node's built-in `node:sqlite`, in WAL mode. A writer connection runs one
 * `BEGIN IMMEDIATE` transaction at a time (an async mutex queues the rest,
 * since the domain awaits inside a transaction); a separate read-only
 * connection serves snapshots, so a read never sees a write in progress.
 */
import { accessSync, chmodSync, constants, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { backup as sqliteBackup, DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import { AppError } from '../../shared/errors.ts';
import type { Milliseconds } from '../../shared/units.ts';
import { sqliteDialect } from './dialect.ts';
import { migrate } from './migrate.ts';
import { Mutex } from './mutex.ts';
import { checkStoreFileHeader, quickCheckStore } from './sqlite-file-check.ts';
import { acquireStoreLock, type StoreLock } from './store-lock.ts';
import { SqlStoreTx, type SqlConnection, type SqlParam, type SqlRow } from './sql-store.ts';
import type { Store, StoreReader, StoreWriter } from './store.ts';

export const SQLITE_FILE_NAME = 'config-sidecar.db';
/** How long a statement waits for another process's write lock before failing with 503. */
export const SQLITE_BUSY_TIMEOUT_MS: Milliseconds = 5_000;
const DATA_DIR_MODE = 0o700;
const DATA_FILE_MODE = 0o600;

/** SQLite result codes that mean "try again later" rather than a bug. */
const UNAVAILABLE_ERRCODES = new Set([5 /* BUSY */, 6 /* LOCKED */, 10 /* IOERR */, 13 /* FULL */, 14 /* CANTOPEN */]);

function mapSqliteError(err: unknown): unknown {
  const errcode = (err as { errcode?: number }).errcode;
  if (typeof errcode === 'number' && UNAVAILABLE_ERRCODES.has(errcode & 0xff)) {
    return new AppError('store_unavailable', `The SQLite store is unavailable (${(err as Error).message}).`, { cause: err });
  }
  return err;
}

class SqliteConnection implements SqlConnection {
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, StatementSync>();

  constructor(db: DatabaseSync) {
    this.#db = db;
  }

  #prepare(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  async all(sql: string, params: readonly SqlParam[] = []): Promise<SqlRow[]> {
    try {
      return this.#prepare(sql).all(...(params as SQLInputValue[])) as SqlRow[];
    } catch (err) {
      throw mapSqliteError(err);
    }
  }

  async run(sql: string, params: readonly SqlParam[] = []): Promise<number> {
    try {
      return Number(this.#prepare(sql).run(...(params as SQLInputValue[])).changes);
    } catch (err) {
      throw mapSqliteError(err);
    }
  }

  async exec(script: string): Promise<void> {
    try {
      this.#db.exec(script);
    } catch (err) {
      throw mapSqliteError(err);
    }
  }
}

export interface SqliteStoreOptions {
  readonly dataDir: string;
  /** For `schema_migrations.applied_at`. */
  readonly now: () => Milliseconds;
  readonly busyTimeoutMs?: Milliseconds;
  /**
   * Take the store lock (src/server/store/store-lock.ts) for as long as the
   * store is open: a server, `dev` and `rotate --kek` do; `backup` does not.
   * @default true
   */
  readonly exclusive?: boolean;
  /** Create the store when the file is missing (a server); false refuses instead (`backup`, `rotate --kek`). @default true */
  readonly create?: boolean;
}

function openDatabase(file: string, readOnly: boolean, timeout: Milliseconds): DatabaseSync {
  try {
    return new DatabaseSync(file, { readOnly, timeout });
  } catch (err) {
    throw new AppError('store_unavailable', `Cannot open the SQLite store at ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** Runs `fn` inside BEGIN/COMMIT on `db`, rolling back when it throws. */
async function inTransaction<T>(db: DatabaseSync, begin: string, fn: () => Promise<T>): Promise<T> {
  try {
    db.exec(begin);
  } catch (err) {
    throw mapSqliteError(err);
  }
  try {
    const result = await fn();
    db.exec('COMMIT');
    return result;
  } catch (err) {
    if (db.isTransaction) db.exec('ROLLBACK');
    throw mapSqliteError(err);
  }
}

class SqliteStore implements Store {
  readonly engine = 'sqlite';
  readonly file: string;
  readonly #writer: DatabaseSync;
  readonly #reader: DatabaseSync;
  readonly #writerTx: SqlStoreTx;
  readonly #readerTx: SqlStoreTx;
  readonly #writeLock = new Mutex();
  readonly #readLock = new Mutex();
  #closed = false;

  readonly #lock: StoreLock | undefined;

  constructor(file: string, writer: DatabaseSync, reader: DatabaseSync, lock: StoreLock | undefined) {
    this.file = file;
    this.#lock = lock;
    this.#writer = writer;
    this.#reader = reader;
    this.#writerTx = new SqlStoreTx(new SqliteConnection(writer), sqliteDialect);
    this.#readerTx = new SqlStoreTx(new SqliteConnection(reader), sqliteDialect);
  }

  #assertOpen(): void {
    if (this.#closed) throw new AppError('store_unavailable', 'The store is closed.');
  }

  read<T>(fn: (reader: StoreReader) => Promise<T>): Promise<T> {
    return this.#readLock.run(() => {
      this.#assertOpen();
      return inTransaction(this.#reader, 'BEGIN', () => fn(this.#readerTx));
    });
  }

  write<T>(fn: (writer: StoreWriter) => Promise<T>, afterCommit?: (result: T) => void): Promise<T> {
    return this.#writeLock.run(async () => {
      this.#assertOpen();
      // IMMEDIATE takes the write lock now, so a second process waits here (busy
      // timeout) instead of failing at its first write with SQLITE_BUSY mid-way.
      const result = await inTransaction(this.#writer, 'BEGIN IMMEDIATE', () => fn(this.#writerTx));
      afterCommit?.(result);
      return result;
    });
  }

  async backup(toFile: string): Promise<void> {
    this.#assertOpen();
    // A connection of its own: the backup steps asynchronously and must not
    // share a connection with transactions in flight.
    const source = openDatabase(this.file, true, SQLITE_BUSY_TIMEOUT_MS);
    try {
      await sqliteBackup(source, toFile);
      chmodSync(toFile, DATA_FILE_MODE);
    } catch (err) {
      throw mapSqliteError(err);
    } finally {
      source.close();
    }
  }

  scrub(): Promise<boolean> {
    return this.#writeLock.run(async () => {
      this.#assertOpen();
      try {
        const result = this.#writer.prepare('PRAGMA wal_checkpoint(TRUNCATE)').get() as { busy?: number } | undefined;
        return result?.busy === 0;
      } catch (err) {
        throw mapSqliteError(err);
      }
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    // Queue behind the write in flight so it commits before the file closes.
    await this.#writeLock.run(async () => {
      await this.#readLock.run(async () => {
        if (this.#closed) return;
        this.#closed = true;
        this.#reader.close();
        this.#writer.close();
        this.#lock?.release();
      });
    });
  }
}

/**
 * Opens the SQLite store in `dataDir` and applies pending migrations. Only a
 * missing file creates a new store (and only with `create`); an empty,
 * headerless or damaged file is refused (src/server/store/sqlite-file-check.ts).
 */
export async function openSqliteStore(options: SqliteStoreOptions): Promise<Store> {
  const timeout = options.busyTimeoutMs ?? SQLITE_BUSY_TIMEOUT_MS;
  const file = join(options.dataDir, SQLITE_FILE_NAME);
  if (options.create === false && !existsSync(file)) {
    throw new AppError('store_unavailable', `There is no store in ${options.dataDir} (${file} is missing). Check --data-dir: \`dev\` keeps its store in .config-sidecar/server.`);
  }
  try {
    mkdirSync(options.dataDir, { recursive: true, mode: DATA_DIR_MODE });
  } catch (err) {
    throw new AppError('store_unavailable', `Cannot create the data directory ${options.dataDir} (--data-dir): ${(err as Error).message}`, { cause: err });
  }
  try {
    accessSync(options.dataDir, constants.W_OK);
  } catch {
    throw new AppError(
      'store_unavailable',
      `The data directory ${options.dataDir} (--data-dir, CONFIG_SIDECAR_DATA_DIR) is not writable by uid ${process.getuid?.() ?? '?'}: ` +
        'the store and its lock live there. Fix its owner or mode, or point --data-dir at a writable directory.',
    );
  }
  const lock = options.exclusive === false ? undefined : acquireStoreLock(options.dataDir);
  let writer: DatabaseSync | undefined;
  try {
    const state = checkStoreFileHeader(file);
    writer = openDatabase(file, false, timeout);
    if (state === 'present') quickCheckStore(writer, file);
    chmodSync(file, DATA_FILE_MODE);
    writer.exec('PRAGMA journal_mode = WAL');
    // FULL: a write acknowledged to a client survives power loss, not only a crash.
    writer.exec('PRAGMA synchronous = FULL');
    writer.exec(`PRAGMA busy_timeout = ${Math.round(timeout)}`);
    // Freed and overwritten content is zero-filled in the database file rather
    // than left in free pages (old wrapped DEKs after a KEK rotation, pruned rows).
    writer.exec('PRAGMA secure_delete = ON');
    const conn = new SqliteConnection(writer);
    await inTransaction(writer, 'BEGIN IMMEDIATE', () => migrate(conn, sqliteDialect, options.now()));
    const reader = openDatabase(file, true, timeout);
    return new SqliteStore(file, writer, reader, lock);
  } catch (err) {
    writer?.close();
    lock?.release();
    throw err;
  }
}
