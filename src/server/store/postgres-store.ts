/**
 * The PostgreSQL engine (`pg` pool), sharing every query with SQLite through
 * sql-store.ts and the dialect; it passes the same conformance suite. Several
 * server replicas may share one database: writers serialise on the revision
 * counter row, each write that takes a revision NOTIFYs at COMMIT, and every
 * replica's `committedEvents` feed (postgres-event-feed.ts) delivers every
 * replica's events from the log, once each and in revision order.
 */
import { execFile } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { promisify } from 'node:util';
import pg from 'pg';
import type { Clock } from '../../shared/clock.ts';
import { AppError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Milliseconds } from '../../shared/units.ts';
import { sqlAgentReports, type AgentReportTable, type ReportingStore } from './agent-reports.ts';
import type { FeedingStore } from './committed-feed.ts';
import { postgresDialect } from './dialect.ts';
import { migrate } from './migrate.ts';
import { Mutex } from './mutex.ts';
import { EVENTS_CHANNEL, LISTEN_APPLICATION_NAME, PgEventFeed } from './postgres-event-feed.ts';
import { holdExclusive, OFFLINE_APPLICATION_NAME, SERVER_APPLICATION_NAME, type ExclusiveHold } from './postgres-exclusive.ts';
import { isPgUnavailable, redactUrl } from './postgres-url.ts';
import { SqlStoreTx, type SqlConnection, type SqlParam, type SqlRow } from './sql-store.ts';
import type { StoreReader, StoreWriter } from './store.ts';

export const PG_POOL_SIZE_DEFAULT = 10;
/** A dump holds only ciphertext and wrapped keys, yet stays readable by its owner only. */
const BACKUP_FILE_MODE = 0o600;
/** A request waiting this long for a pooled connection (database down or pool exhausted) fails with 503. */
export const PG_CONNECT_TIMEOUT_MS: Milliseconds = 5_000;

/** Connection trouble becomes 503 store_unavailable; the detail (hosts, socket paths) stays in the cause, which is logged, not answered. */
function mapPgError(err: unknown): unknown {
  if (err instanceof AppError) return err;
  if (isPgUnavailable(err)) {
    return new AppError('store_unavailable', 'The PostgreSQL store is unavailable; retry shortly.', { cause: err });
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
  readonly poolSize?: number | undefined;
  readonly logger?: Logger | undefined;
  /** Drives the event feed's catch-up and reconnect timers. @default systemClock */
  readonly clock?: Clock | undefined;
  /** How often the event feed reads the log without a notification. @default CATCH_UP_INTERVAL_MS */
  readonly catchUpIntervalMs?: Milliseconds | undefined;
  /** An offline command's store: refused while a replica is connected, and no replica starts while it is open (postgres-exclusive.ts). */
  readonly exclusive?: boolean | undefined;
}

/** Remembers whether the transaction took a revision, so only writes that append events NOTIFY. */
class PgTx extends SqlStoreTx {
  tookRevision = false;

  override async nextRevision(): Promise<number> {
    const revision = await super.nextRevision();
    this.tookRevision = true;
    return revision;
  }
}

/** Writer methods that need no order among replicas: audit rows are only appended, never read-then-written. */
const UNORDERED_WRITES = new Set<PropertyKey>(['insertAudit']);

/**
 * The writer a transaction's callback sees. The dialect's write lock (the
 * revision counter row) is taken just before the first ordered statement, so
 * a transaction that only appends audit rows (every secret read writes one)
 * does not queue behind the writers of every replica.
 */
function lockingWriter(tx: PgTx, lock: () => Promise<void>): StoreWriter {
  return new Proxy(tx, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      if (UNORDERED_WRITES.has(prop)) return value.bind(target);
      return async (...args: unknown[]) => {
        await lock();
        return value.apply(target, args);
      };
    },
  });
}

class PostgresStore implements FeedingStore, ReportingStore {
  readonly engine = 'postgres';
  readonly #pool: pg.Pool;
  readonly #url: string;
  // Cross-replica order comes from the counter row's lock; this keeps the
  // after-commit hooks of one process in revision order as well.
  readonly #writeLock = new Mutex();
  #feed: PgEventFeed | undefined;
  #closed = false;
  /** Set for an offline command's store; released at close. */
  hold: ExclusiveHold | undefined;

  constructor(pool: pg.Pool, url: string) {
    this.#pool = pool;
    this.#url = url;
  }

  /** Agents' reports in the shared table, one autocommit statement each: no transaction, no revision lock. */
  readonly agentReports: AgentReportTable = sqlAgentReports(
    (fn) => this.#withClient((client) => fn(new PgConnection(client))),
    (sql) => postgresDialect.placeholders(sql),
  );

  get committedEvents(): PgEventFeed {
    if (!this.#feed) throw new AppError('internal', 'The PostgreSQL event feed is not started.');
    return this.#feed;
  }

  startFeed(options: PostgresStoreOptions, startAfter: number): void {
    this.#feed = new PgEventFeed({
      connection: { connectionString: this.#url },
      readPage: (after, limit) => this.read((r) => r.logPage(after, limit)),
      startAfter,
      logger: options.logger,
      clock: options.clock,
      catchUpIntervalMs: options.catchUpIntervalMs,
    });
    this.#feed.start();
  }

  /** A pooled client for `fn`, released as broken when its connection was lost meanwhile or `markBroken` was called. */
  async #withClient<T>(fn: (client: pg.PoolClient, markBroken: () => void) => Promise<T>): Promise<T> {
    if (this.#closed) throw new AppError('store_unavailable', 'The store is closed.');
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      throw mapPgError(err);
    }
    let broken = false;
    // A connection lost between two queries (the domain awaits in between) is
    // emitted as 'error' on the client; unhandled, it would crash the process.
    // The next query fails and maps to 503 instead.
    const markBroken = (): void => {
      broken = true;
    };
    client.on('error', markBroken);
    try {
      return await fn(client, markBroken);
    } catch (err) {
      throw mapPgError(err);
    } finally {
      client.off('error', markBroken);
      client.release(broken);
    }
  }

  #transaction<T>(begin: string, fn: (conn: PgConnection) => Promise<T>): Promise<T> {
    return this.#withClient(async (client, markBroken) => {
      try {
        await client.query(begin);
        const result = await fn(new PgConnection(client));
        await client.query('COMMIT');
        return result;
      } catch (err) {
        try {
          await client.query('ROLLBACK');
        } catch {
          markBroken();
        }
        throw err;
      }
    });
  }

  read<T>(fn: (reader: StoreReader) => Promise<T>): Promise<T> {
    return this.#transaction('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', (conn) => fn(new SqlStoreTx(conn, postgresDialect)));
  }

  async write<T>(fn: (writer: StoreWriter) => Promise<T>, afterCommit?: (result: T) => void): Promise<T> {
    let tookRevision = false;
    const result = await this.#writeLock.run(async () => {
      const out = await this.#transaction('BEGIN', async (conn) => {
        const tx = new PgTx(conn, postgresDialect);
        const lockSql = postgresDialect.writeLockSql;
        let locked: Promise<void> | undefined;
        const lock = (): Promise<void> => (locked ??= lockSql ? conn.all(lockSql).then(() => undefined) : Promise.resolve());
        const value = await fn(lockingWriter(tx, lock));
        // Queued by PostgreSQL and delivered to every listener only if this transaction commits.
        if (tx.tookRevision) await conn.all('SELECT pg_notify($1, $2)', [EVENTS_CHANNEL, '']);
        tookRevision = tx.tookRevision;
        return value;
      });
      afterCommit?.(out);
      return out;
    });
    // The write is committed whatever happens here; delivering its events to
    // this replica's listeners before answering makes "write, then watch on
    // the same replica" immediate. A failed read is retried by the feed.
    if (tookRevision) await this.#feed?.sync().catch(() => undefined);
    return result;
  }

  /** Applies pending migrations in one transaction (the dialect's advisory lock makes replicas take turns). */
  migrate(now: Milliseconds): Promise<number[]> {
    return this.#writeLock.run(() => this.#transaction('BEGIN', (conn) => migrate(conn, postgresDialect, now)));
  }

  /**
   * `pg_dump --format=custom` (restore with `pg_restore`); needs `pg_dump` on
   * PATH. The password goes to pg_dump through PGPASSWORD, not its command
   * line, which `ps` would show.
   */
  async backup(toFile: string): Promise<void> {
    const url = new URL(this.#url);
    const password = decodeURIComponent(url.password);
    url.password = '';
    try {
      await promisify(execFile)('pg_dump', ['--format=custom', `--file=${toFile}`, `--dbname=${url.toString()}`], {
        env: { ...process.env, ...(password ? { PGPASSWORD: password } : {}) },
      });
      chmodSync(toFile, BACKUP_FILE_MODE);
    } catch (err) {
      if ((err as { code?: unknown }).code === 'ENOENT') {
        throw new AppError('store_unavailable', 'pg_dump was not found on PATH; install the PostgreSQL client tools (the server\'s major version or newer).', { cause: err });
      }
      const stderr = String((err as { stderr?: unknown }).stderr ?? (err as Error).message).trim().split('\n')[0] ?? '';
      throw new AppError('store_unavailable', `pg_dump failed: ${redactUrl(stderr, this.#url)}`, { cause: err });
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
      await this.#feed?.close();
      await this.hold?.release();
      await this.#pool.end();
    });
  }
}

/**
 * Connects, migrates (once across replicas, under an advisory lock), starts
 * the cross-replica event feed and returns the store.
 */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<FeedingStore> {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.poolSize ?? PG_POOL_SIZE_DEFAULT,
    connectionTimeoutMillis: PG_CONNECT_TIMEOUT_MS,
    keepAlive: true,
    application_name: options.exclusive ? OFFLINE_APPLICATION_NAME : SERVER_APPLICATION_NAME,
  });
  // An idle client losing its connection must not crash the process; the next query reconnects.
  pool.on('error', () => undefined);
  const store = new PostgresStore(pool, options.url);
  try {
    await store.migrate(options.now());
    if (options.exclusive) store.hold = await holdExclusive(pool, [SERVER_APPLICATION_NAME, LISTEN_APPLICATION_NAME]);
    const { revision } = await store.read((r) => r.logState());
    store.startFeed(options, revision);
  } catch (err) {
    await store.hold?.release();
    await pool.end().catch(() => undefined);
    throw err;
  }
  return store;
}
