/**
 * Picks the storage engine: PostgreSQL when a connection URL is given (issue 7),
 * otherwise the embedded SQLite file in the data directory.
 */
import { SettingError } from '../../shared/settings.ts';
import type { Milliseconds } from '../../shared/units.ts';
import { openSqliteStore } from './sqlite-store.ts';
import type { Store } from './store.ts';

export interface OpenStoreOptions {
  readonly dataDir: string;
  readonly databaseUrl?: string | undefined;
  readonly now: () => Milliseconds;
}

export async function openStore(options: OpenStoreOptions): Promise<Store> {
  if (options.databaseUrl) {
    throw new SettingError('--database-url (CONFIG_SIDECAR_DATABASE_URL)', 'the PostgreSQL engine is not available in this build yet; omit it to use the embedded store');
  }
  return openSqliteStore({ dataDir: options.dataDir, now: options.now });
}
