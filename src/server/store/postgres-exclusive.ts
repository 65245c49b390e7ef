/**
 * Exclusive use of a PostgreSQL store for the offline commands (`rotate
 * --kek`, `rotate --reseal-history`), the PostgreSQL twin of the embedded
 * store lock (store-lock.ts). A replica left running would keep the old KEK
 * (or the old data keys) in memory and go on writing with it, so the command
 * is refused while any replica is connected. There is no presence table: a
 * replica is its sessions, which PostgreSQL lists by `application_name` in
 * `pg_stat_activity` (its pool and its LISTEN connection, held for its whole
 * life) and drops when the process ends, however it ends. While the command
 * runs it holds the migration advisory lock on a session of its own, so a
 * replica starting meanwhile waits in its start-up migration and then meets
 * the finished store (and its KEK check).
 */
import type pg from 'pg';
import { AppError } from '../../shared/errors.ts';
import { PG_MIGRATION_LOCK_KEY } from './dialect.ts';

/** `application_name` of a server's pool connections (its LISTEN connection: LISTEN_APPLICATION_NAME). */
export const SERVER_APPLICATION_NAME = 'config-sidecar';
/** `application_name` of an offline command's connections, which do not count as a replica. */
export const OFFLINE_APPLICATION_NAME = 'config-sidecar-offline';

export interface ExclusiveHold {
  /** Ends the hold (unlock, connection back to the pool); twice is harmless. */
  release(): Promise<void>;
}

/**
 * Takes the lock on a pooled session, then counts the replicas' sessions;
 * with any, releases it and throws `store_unavailable` saying what to do.
 */
export async function holdExclusive(pool: pg.Pool, replicaApplicationNames: readonly string[]): Promise<ExclusiveHold> {
  const client = await pool.connect();
  let released = false;
  const release = async (): Promise<void> => {
    if (released) return;
    released = true;
    try {
      await client.query('SELECT pg_advisory_unlock($1)', [PG_MIGRATION_LOCK_KEY]);
      client.release();
    } catch (err) {
      // A lost session dropped its lock with it.
      client.release(err as Error);
    }
  };
  try {
    await client.query('SELECT pg_advisory_lock($1)', [PG_MIGRATION_LOCK_KEY]);
    const { rows } = await client.query<{ sessions: string; names: string | null }>(
      `SELECT count(*) AS sessions, string_agg(DISTINCT application_name, ', ') AS names
         FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = ANY($1)`,
      [replicaApplicationNames],
    );
    const sessions = Number(rows[0]?.sessions ?? 0);
    if (sessions > 0) {
      throw new AppError(
        'store_unavailable',
        `Server replicas are running on this PostgreSQL database (--database-url; ${sessions} session(s) named ${rows[0]?.names ?? ''} in pg_stat_activity). ` +
          'An offline command (rotate --kek, rotate --reseal-history) would leave them running with the old keys: ' +
          'stop every replica first (kubectl scale deployment/config-sidecar-server --replicas=0), run it again, then start them (with the new KEK after rotate --kek).',
      );
    }
  } catch (err) {
    await release();
    throw err;
  }
  return { release };
}
