/**
 * Picks the storage engine: PostgreSQL when a connection URL is given,
 * otherwise the embedded SQLite file in the data directory.
 */
import type { Clock } from '../../shared/clock.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Milliseconds } from '../../shared/units.ts';
import { checkPostgresUrl, postgresStartError } from './postgres-url.ts';
import { openSqliteStore } from './sqlite-store.ts';
import type { Store } from './store.ts';

export interface OpenStoreOptions {
  readonly dataDir: string;
  readonly databaseUrl?: string | undefined;
  readonly now: () => Milliseconds;
  readonly logger?: Logger | undefined;
  /** PostgreSQL connections per process. @default PG_POOL_SIZE_DEFAULT */
  readonly poolSize?: number | undefined;
  /** Drives the PostgreSQL event feed's catch-up timers. @default systemClock */
  readonly clock?: Clock | undefined;
  /** Take the store lock (PostgreSQL: refuse while a replica is connected, postgres-exclusive.ts); create a missing store (embedded only). @default both */
  readonly access?: { readonly exclusive: boolean; readonly create: boolean } | undefined;
}

export async function openStore(options: OpenStoreOptions): Promise<Store> {
  if (options.databaseUrl) {
    const url = checkPostgresUrl(options.databaseUrl);
    // Loaded only when asked for, so the embedded default never loads `pg`.
    const { openPostgresStore } = await import('./postgres-store.ts');
    try {
      // Only an offline command asks (a server passes no access): replicas share the database.
      return await openPostgresStore({ url, now: options.now, logger: options.logger, poolSize: options.poolSize, clock: options.clock, exclusive: options.access?.exclusive === true });
    } catch (err) {
      throw postgresStartError(err, url) ?? err;
    }
  }
  return openSqliteStore({ dataDir: options.dataDir, now: options.now, exclusive: options.access?.exclusive, create: options.access?.create });
}
