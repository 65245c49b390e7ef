/**
 * The storage engines the conformance suite runs against, one entry each in
 * STORE_ENGINES. PostgreSQL runs in a throwaway cluster and is skipped, with a
 * visible reason, only when no PostgreSQL binary exists.
 */
import type { TestContext } from 'node:test';
import { openPostgresStore } from '../../src/server/store/postgres-store.ts';
import { openSqliteStore } from '../../src/server/store/sqlite-store.ts';
import type { Store } from '../../src/server/store/store.ts';
import { sqlitePlane, tempDir, type PlaneEngine } from './store-fixtures.ts';
import { findPostgresBin, startThrowawayPostgres, type ThrowawayPostgres } from './store-postgres.ts';

export interface StoreUnderTest {
  readonly store: Store;
  /** Another handle on the same database (as after a restart); closed after the test. */
  reopen(): Promise<Store>;
}

export interface StoreEngineUnderTest {
  readonly name: string;
  /** A reason to skip (e.g. "no PostgreSQL binary"), shown in the test output; undefined runs. */
  readonly skip: () => string | undefined;
  /** Several processes (replicas) may write one database at once; SQLite has one writer process. */
  readonly multiWriter: boolean;
  /** A fresh, empty, migrated store; closed after the test. */
  fresh(t: TestContext): Promise<StoreUnderTest>;
  /** Releases what the engine shared between tests (e.g. a database cluster). */
  teardown(): Promise<void>;
}

const FIXED_NOW = () => Date.UTC(2026, 0, 1);

export const sqliteEngine: StoreEngineUnderTest = {
  name: 'sqlite',
  skip: () => undefined,
  multiWriter: false,
  async fresh(t) {
    const dataDir = await tempDir(t, 'cs-conformance-');
    const open = async (): Promise<Store> => {
      const store = await openSqliteStore({ dataDir, now: FIXED_NOW });
      t.after(() => store.close());
      return store;
    };
    return { store: await open(), reopen: open };
  },
  teardown: async () => undefined,
};

let cluster: Promise<ThrowawayPostgres> | undefined;

/** A database per test in one throwaway cluster per test file. */
export const postgresEngine: StoreEngineUnderTest = {
  name: 'postgres',
  skip: () => (findPostgresBin() ? undefined : 'PostgreSQL is not installed (no initdb/pg_ctl found); install postgresql to run these'),
  multiWriter: true,
  async fresh(t) {
    cluster ??= startThrowawayPostgres();
    const url = await (await cluster).createDatabase();
    const open = async (): Promise<Store> => {
      const store = await openPostgresStore({ url, now: FIXED_NOW, poolSize: 4 });
      t.after(() => store.close());
      return store;
    };
    return { store: await open(), reopen: open };
  },
  async teardown() {
    const running = cluster;
    cluster = undefined;
    if (running) await (await running).stop();
  },
};

export const STORE_ENGINES: readonly StoreEngineUnderTest[] = [sqliteEngine, postgresEngine];

/** The control plane on a fresh PostgreSQL database per test (one cluster per test file). */
export const postgresPlane: PlaneEngine = {
  name: 'postgres',
  skip: postgresEngine.skip,
  async location() {
    cluster ??= startThrowawayPostgres();
    return (await cluster).createDatabase();
  },
  openStore: (url) => openPostgresStore({ url, now: FIXED_NOW, poolSize: 4 }),
  teardown: () => postgresEngine.teardown(),
};

/** The same on a database whose default collation is ICU's en-US (not byte order), for the tests where order matters. */
export const postgresLocalePlane: PlaneEngine = {
  ...postgresPlane,
  name: 'postgres (ICU en-US collation)',
  async location() {
    cluster ??= startThrowawayPostgres();
    return (await cluster).createDatabase({ icuLocale: 'en-US' });
  },
};

/** Engines the control plane's domain tests run on. */
export const PLANE_ENGINES: readonly PlaneEngine[] = [sqlitePlane, postgresPlane];
