/**
 * The PostgreSQL engine (`pg` pool), sharing every query with SQLite through
 * sql-store.ts and the dialect. It passes the same conformance suite. Not yet
 * wired to `--database-url`: several replicas also need the LISTEN/NOTIFY
 * fan-out of issue 7, without which a replica would not stream the others'
 * events.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import pg from 'pg';
import { AppError } from '../../shared/errors.ts';
import type { Milliseconds } from '../../shared/units.ts';
import { postgresDialect } from './dialect.ts';
import { migrate } from './migrate.ts';
import { Mutex } from './mutex.ts';
import { SqlStoreTx, type SqlConnection, type SqlParam, type SqlRow } from './sql-store.ts';
import type { Store, StoreReader, StoreWriter } from './store.ts';

export const PG_POOL_SIZE_DEFAULT = 10;
/** SQLSTATE classes that mean the database is unreachable or going away: 08 connection, 53 resources, 57 operator intervention. */
const UNAVAILABLE_SQLSTATE_RE = /^(08|53|57)/;
const UNAVAILABLE_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'ETIMEDOUT', 'EPIPE', 'ENOENT']);

function mapPgError(err: unknown): unknown {
  if (err instanceof AppError) return err;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (UNAVAILABLE_SQLSTATE_RE.test(code) || UNAVAILABLE_NODE_CODES.has(code))) {
    return new AppError('store_unavailable', `The PostgreSQL store is unavailable (${(err as Error).message}).`, { cause: err });
  }
  return err;
}

class PgConnection implements SqlConnection {
  readonly #client: pg.PoolClient;

  constructor(client: pg.PoolClient) {
    this.#client = client;
  }

  async all(sql: string, params: readonly SqlParam[] = []): Promise<SqlRow[]> {
    return (await this.#client.query(sql, [...params])).rows as SqlRow[];
  }

  async run(sql: string, params: readonly SqlParam[] = []): Promise<number> {
    return (await this.#client.query(sql, [...params])).rowCount ?? 0;
  }

  async exec(script: string): Promise<void> {
    await this.#client.query(script);
  }
}

export interface PostgresStoreOptions {
  readonly url: string;
  readonly now: () => Milliseconds;
  readonly poolSize?: number;
}

class PostgresStore implements Store {
  readonly engine = 'postgres';
  readonly #pool: pg.Pool;
  readonly #url: string;
  // Cross-replica order comes from the counter row's lock; this keeps the
  // after-commit hooks of one process in revision order as well.
  readonly #writeLock = new Mutex();
  #closed = false;

  constructor(pool: pg.Pool, url: string) {
    this.#pool = pool;
    this.#url = url;
  }

  async #transaction<T>(begin: string, fn: (conn: PgConnection) => Promise<T>): Promise<T> {
    if (this.#closed) throw new AppError('store_unavailable', 'The store is closed.');
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      throw mapPgError(err);
    }
    let broken = false;
    try {
      await client.query(begin);
      const result = await fn(new PgConnection(client));
      await client.query('COMMIT');
      return result;
    } catch (err) {
      try {
        await client.query('ROLLBACK');
      } catch {
        broken = true;
      }
      throw mapPgError(err);
    } finally {
      client.release(broken);
    }
  }

  read<T>(fn: (reader: StoreReader) => Promise<T>): Promise<T> {
    return this.#transaction('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', (conn) => fn(new SqlStoreTx(conn, postgresDialect)));
  }

  write<T>(fn: (writer: StoreWriter) => Promise<T>, afterCommit?: (result: T) => void): Promise<T> {
    return this.#writeLock.run(async () => {
      const result = await this.#transaction('BEGIN', async (conn) => {
        if (postgresDialect.writeLockSql) await conn.all(postgresDialect.writeLockSql);
        return fn(new SqlStoreTx(conn, postgresDialect));
      });
      afterCommit?.(result);
      return result;
    });
  }

  /** Applies pending migrations in one transaction (the dialect's advisory lock makes replicas take turns). */
  migrate(now: Milliseconds): Promise<number[]> {
    return this.#writeLock.run(() => this.#transaction('BEGIN', (conn) => migrate(conn, postgresDialect, now)));
  }

  /** `pg_dump --format=custom`; restore with `pg_restore`. Needs `pg_dump` on PATH. */
  async backup(toFile: string): Promise<void> {
    try {
      await promisify(execFile)('pg_dump', ['--format=custom', `--file=${toFile}`, `--dbname=${this.#url}`]);
    } catch (err) {
      throw new AppError('store_unavailable', `pg_dump failed: ${(err as Error).message.split('\n')[0]}`, { cause: err });
    }
  }

  /**
   * VACUUM lets PostgreSQL reuse the space of dead row versions (old wrapped
   * DEKs); it does not zero it, so after a KEK compromise rotate the DEKs too.
   */
  async scrub(): Promise<boolean> {
    if (this.#closed) throw new AppError('store_unavailable', 'The store is closed.');
    try {
      await this.#pool.query('VACUUM deks');
      return true;
    } catch (err) {
      throw mapPgError(err);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#writeLock.run(async () => {
      if (this.#closed) return;
      this.#closed = true;
      await this.#pool.end();
    });
  }
}

/** Connects, migrates (once across replicas, under an advisory lock) and returns the store. */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<Store> {
  const pool = new pg.Pool({ connectionString: options.url, max: options.poolSize ?? PG_POOL_SIZE_DEFAULT });
  // An idle client losing its connection must not crash the process; the next query reconnects.
  pool.on('error', () => undefined);
  const store = new PostgresStore(pool, options.url);
  try {
    await store.migrate(options.now());
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw err;
  }
  return store;
}
