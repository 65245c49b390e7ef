/**
 * The storage engines the conformance suite runs against. Adding PostgreSQL
 * is one entry in STORE_ENGINES (with a `skip` when no PostgreSQL binary exists).
 */
import type { TestContext } from 'node:test';
import { openSqliteStore } from '../../src/server/store/sqlite-store.ts';
import type { Store } from '../../src/server/store/store.ts';
import { tempDir } from './store-fixtures.ts';

export interface StoreUnderTest {
  readonly store: Store;
  /** Another handle on the same database (as after a restart); closed after the test. */
  reopen(): Promise<Store>;
}

export interface StoreEngineUnderTest {
  readonly name: string;
  /** A reason to skip (e.g. "no PostgreSQL binary"), shown in the test output; undefined runs. */
  readonly skip: () => string | undefined;
  /** A fresh, empty, migrated store; closed after the test. */
  fresh(t: TestContext): Promise<StoreUnderTest>;
}

const FIXED_NOW = () => Date.UTC(2026, 0, 1);

export const sqliteEngine: StoreEngineUnderTest = {
  name: 'sqlite',
  skip: () => undefined,
  async fresh(t) {
    const dataDir = await tempDir(t, 'cs-conformance-');
    const open = async (): Promise<Store> => {
      const store = await openSqliteStore({ dataDir, now: FIXED_NOW });
      t.after(() => store.close());
      return store;
    };
    return { store: await open(), reopen: open };
  },
};

export const STORE_ENGINES: readonly StoreEngineUnderTest[] = [sqliteEngine];
