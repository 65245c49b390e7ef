/**
 * Storage conformance: the behaviour every `Store` engine must show, run once
 * per engine in STORE_ENGINES (test/helpers/store-engines.ts). PostgreSQL joins
 * by adding its engine there; nothing here is engine-specific.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync, type SQLInputValue } from 'node:sqlite';
import { SqlStoreTx, type SqlConnection, type SqlParam, type SqlRow } from '../src/server/store/sql-store.ts';
import { sqliteDialect } from '../src/server/store/dialect.ts';
import { openSqliteStore, SQLITE_FILE_NAME } from '../src/server/store/sqlite-store.ts';
import { loadMigrations } from '../src/server/store/migrate.ts';
import { tempDir } from './helpers/store-fixtures.ts';
import { AppError } from '../src/shared/errors.ts';
import type { LogEvent } from '../src/server/control-plane.ts';
import type { SealedColumns, Store, VersionRow } from '../src/server/store/store.ts';
import { STORE_ENGINES, type StoreEngineUnderTest } from './helpers/store-engines.ts';

const REF = { namespace: 'prod/ml', name: 'cfg' };
const T0 = Date.UTC(2026, 0, 1);

function sealedOf(seed: number, keyVersion = 1): SealedColumns {
  return {
    keyId: REF.namespace,
    keyVersion,
    aadVersion: 2,
    iv: Buffer.alloc(12, seed),
    // Every byte value, so an engine that mangles binary (text conversion, NUL truncation) fails.
    ciphertext: Buffer.from([0, 255, seed, 0, ...Array.from({ length: 256 }, (_, i) => i)]),
    tag: Buffer.alloc(16, 255 - seed),
  };
}

/** A stand-in event digest, distinct per revision. */
const digestOf = (revision: number): string => revision.toString(16).padStart(32, '0');

/** Writes one version of REF in `env` the way the domain layer does. */
async function putVersion(store: Store, env: string, seed: number): Promise<{ version: number; revision: number }> {
  return store.write(async (w) => {
    const version = await w.takeNextVersion(REF, 'config', T0);
    const revision = await w.nextRevision();
    await w.insertVersion({ ...REF, version, env, revision, createdAt: T0 + seed, createdBy: 'tester', deleted: false, sealed: sealedOf(seed) });
    await w.appendEvent({ revision, digest: digestOf(revision), type: 'itemChanged', namespace: REF.namespace, name: REF.name, kind: 'config', version, env }, T0);
    return { version, revision };
  });
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

export function storeConformanceSuite(engine: StoreEngineUnderTest): void {
  const skip = engine.skip();
  describe(`store conformance: ${engine.name}`, { skip: skip ?? false }, () => {
    after(() => engine.teardown());

    test('a fresh store is migrated, empty, and reopens with its data', async (t) => {
      const { store, reopen } = await engine.fresh(t);
      const { storeId } = await store.read((r) => r.logState());
      assert.match(storeId, /^[0-9a-f-]{36}$/, 'a new store gets a random identity');
      assert.deepEqual(await store.read((r) => r.logState()), { storeId, revision: 0, compactedThrough: 0, compactedDigest: '' });
      await putVersion(store, 'base', 1);
      await store.close();
      const again = await reopen();
      assert.deepEqual(await again.read((r) => r.logState()), { storeId, revision: 1, compactedThrough: 0, compactedDigest: '' }, 'the identity is kept');
      const [row] = await again.read((r) => r.currentVersions(REF));
      assert.deepEqual(row?.sealed, sealedOf(1), 'binary columns round-trip byte for byte');
      await again.close();
      const third = await reopen();
      assert.equal((await third.read((r) => r.getItem(REF)))?.lastVersion, 1, 'opening again migrates nothing twice');
    });

    test('versions are numbered per item across envs and survive deletion of the item', async (t) => {
      const { store } = await engine.fresh(t);
      assert.deepEqual(await putVersion(store, 'base', 1), { version: 1, revision: 1 });
      assert.deepEqual(await putVersion(store, 'prod', 2), { version: 2, revision: 2 });
      await assert.rejects(
        store.write((w) => w.takeNextVersion(REF, 'secret', T0)),
        (err: unknown) => err instanceof AppError && err.code === 'conflict',
      );
      await store.write(async (w) => {
        await w.deleteAllVersions(REF);
        await w.markItemDeleted(REF, T0 + 5);
      });
      assert.equal((await store.read((r) => r.getItem(REF)))?.deleted, true);
      assert.deepEqual(await store.read((r) => r.listItems('', { after: undefined, limit: 10 })), []);
      const revived = await store.write((w) => w.takeNextVersion(REF, 'secret', T0 + 6));
      assert.equal(revived, 3, 'a deleted item may change kind and keeps counting');
      const item = await store.read((r) => r.getItem(REF));
      assert.deepEqual(item, { ...REF, kind: 'secret', lastVersion: 3, deleted: false, createdAt: T0, updatedAt: T0 + 6, ringGrace: 0, ringFloor: 0 });
    });

    test('key rings and retired data keys: the ring setting is kept with the item, live history lists per namespace, older wrapped keys are destroyed', async (t) => {
      const { store, reopen } = await engine.fresh(t);
      await putVersion(store, 'prod', 1);
      await putVersion(store, 'prod', 2);
      await store.write(async (w) => {
        await w.setRing(REF, 3_600_000, 2);
        for (const version of [1, 2, 3]) await w.insertDek({ namespace: REF.namespace, version, wrapped: Buffer.alloc(40, version), kekId: 'k', createdAt: T0 });
        await w.insertDek({ namespace: 'production/other', version: 1, wrapped: Buffer.alloc(40, 9), kekId: 'k', createdAt: T0 });
      });
      await store.close();
      const again = await reopen();
      const item = await again.read((r) => r.getItem(REF));
      assert.deepEqual([item?.ringGrace, item?.ringFloor], [3_600_000, 2]);
      assert.deepEqual((await again.read((r) => r.ringItemsIn(REF.namespace))).map((i) => i.name), [REF.name]);
      assert.deepEqual(await again.read((r) => r.ringItemsIn('production/other')), []);
      assert.deepEqual((await again.read((r) => r.liveVersionsIn(REF.namespace))).map((v) => v.version), [1, 2]);
      assert.deepEqual(await again.write((w) => w.deleteDeksBelow(REF.namespace, 3)), [1, 2]);
      assert.deepEqual(await again.read((r) => r.dekVersionsOf(REF.namespace)), [3]);
      assert.deepEqual(await again.read((r) => r.dekVersionsOf('production/other')), [1], 'other namespaces keep theirs');
    });

    test('current versions are the newest per env, tombstones included; history is ordered', async (t) => {
      const { store } = await engine.fresh(t);
      await putVersion(store, 'base', 1);
      await putVersion(store, 'prod', 2);
      await putVersion(store, 'prod', 3);
      await store.write(async (w) => {
        const version = await w.takeNextVersion(REF, 'config', T0);
        const revision = await w.nextRevision();
        await w.insertVersion({ ...REF, version, env: 'dev', revision, createdAt: T0, createdBy: 'x', deleted: true, sealed: null });
      });
      const current = await store.read((r) => r.currentVersions(REF));
      assert.deepEqual(
        current.map((v: VersionRow) => [v.env, v.version, v.deleted]),
        [
          ['base', 1, false],
          ['prod', 3, false],
          ['dev', 4, true],
        ],
      );
      assert.deepEqual(
        (await store.read((r) => r.versionHistory(REF))).map((v) => [v.version, v.env, v.deleted, v.keyVersion]),
        [
          [1, 'base', false, 1],
          [2, 'prod', false, 1],
          [3, 'prod', false, 1],
          [4, 'dev', true, null],
        ],
      );
      assert.equal((await store.read((r) => r.getVersion(REF, 2)))?.createdAt, T0 + 2);
      assert.equal(await store.read((r) => r.getVersion(REF, 9)), undefined);

      await store.write(async (w) => {
        await w.resealVersion(REF, 3, sealedOf(9, 2));
        await w.deleteVersions(REF, [2]);
      });
      const prod = (await store.read((r) => r.currentVersions(REF))).find((v) => v.env === 'prod');
      assert.deepEqual(prod?.sealed, sealedOf(9, 2));
      assert.deepEqual(
        (await store.read((r) => r.versionHistory(REF))).map((v) => v.version),
        [1, 3, 4],
      );
      assert.deepEqual(await store.read((r) => r.dekVersionsInUse(REF.namespace)), [1, 2]);
    });

    test('the key versions in use are those sealing a current live version, not history or a layer ended by a tombstone', async (t) => {
      const { store } = await engine.fresh(t);
      const put = (env: string, keyVersion: number | null): Promise<void> =>
        store.write(async (w) => {
          const version = await w.takeNextVersion(REF, 'config', T0);
          const revision = await w.nextRevision();
          const base = { ...REF, version, env, revision, createdAt: T0, createdBy: 'x' };
          await w.insertVersion(keyVersion === null ? { ...base, deleted: true, sealed: null } : { ...base, deleted: false, sealed: sealedOf(version, keyVersion) });
        });
      const inUse = (): Promise<number[]> => store.read((r) => r.keyVersionsInUse(REF.namespace));
      assert.deepEqual(await inUse(), []);
      await put('base', 1);
      await put('base', 2);
      assert.deepEqual(await inUse(), [2], 'key 1 seals only history');
      await put('dev', 3);
      await put('dev', null);
      assert.deepEqual(await inUse(), [2], 'key 3 sealed a layer a tombstone ended');
      await put('prod', 1);
      assert.deepEqual(await inUse(), [1, 2]);
      assert.deepEqual(await store.read((r) => r.keyVersionsInUse('other/ns')), []);
    });

    test('prefixes match whole segments and "_" is no wildcard', async (t) => {
      const { store } = await engine.fresh(t);
      const names = ['a/b', 'a/b/c', 'a/b_', 'a/bc', 'a/bx', 'z']; // byte order: '/' < '_' < 'c'
      await store.write(async (w) => {
        for (const namespace of names) {
          const ref = { namespace, name: 'n' };
          const version = await w.takeNextVersion(ref, 'config', T0);
          await w.insertVersion({ ...ref, version, env: 'base', revision: await w.nextRevision(), createdAt: T0, createdBy: 'x', deleted: false, sealed: sealedOf(1) });
        }
      });
      const listed = async (prefix: string) => (await store.read((r) => r.listItems(prefix, { after: undefined, limit: 10 }))).map((i) => i.namespace);
      assert.deepEqual(await listed('a/b'), ['a/b', 'a/b/c']);
      assert.deepEqual(await listed('a/b_'), ['a/b_']);
      assert.deepEqual(await listed(''), names);
      const page = (after: { namespace: string; name: string } | undefined) => store.read((r) => r.listItems('', { after, limit: 2 }));
      assert.deepEqual((await page({ namespace: 'a/b_', name: 'n' })).map((i) => i.namespace), ['a/bc', 'a/bx'], 'a page starts after its key, in byte order');
      assert.deepEqual((await page({ namespace: 'a/bx', name: 'm' })).map((i) => i.namespace), ['a/bx', 'z'], 'the same namespace, a later name');
      assert.deepEqual(
        (await store.read((r) => r.currentLayersOf([{ namespace: 'a/b/c', name: 'n' }, { namespace: 'a/b', name: 'n' }, { namespace: 'a/b', name: 'absent' }]))).map((v) => v.namespace),
        ['a/b', 'a/b/c'],
      );
      assert.deepEqual(
        (await store.read((r) => r.currentVersionsIn('a/b'))).map((v) => v.namespace),
        ['a/b'],
      );
    });

    test('a failed write rolls back everything, its revision included', async (t) => {
      const { store } = await engine.fresh(t);
      await putVersion(store, 'base', 1);
      await assert.rejects(
        store.write(async (w) => {
          await w.takeNextVersion(REF, 'config', T0);
          await w.nextRevision();
          throw new Error('boom');
        }),
        /boom/,
      );
      assert.equal((await store.read((r) => r.getItem(REF)))?.lastVersion, 1);
      assert.deepEqual(await putVersion(store, 'base', 2), { version: 2, revision: 2 }, 'no gap after a rollback');
    });

    test('concurrent writes are serialised: gap-free revisions, after-commit hooks in order', async (t) => {
      const { store } = await engine.fresh(t);
      const committed: number[] = [];
      const writes = Array.from({ length: 25 }, (_, i) =>
        store.write(
          async (w) => {
            const revision = await w.nextRevision();
            // Yield inside the transaction, as the domain does around KEK calls.
            await new Promise((resolve) => setImmediate(resolve));
            await w.appendEvent({ revision, digest: digestOf(revision), type: 'keyRotated', namespace: `ns${i}`, keyVersion: i }, T0);
            return revision;
          },
          (revision) => committed.push(revision),
        ),
      );
      const revisions = await Promise.all(writes);
      const expected = Array.from({ length: 25 }, (_, i) => i + 1);
      assert.deepEqual([...revisions].sort((a, b) => a - b), expected);
      assert.deepEqual(committed, expected);
      assert.deepEqual(
        (await store.read((r) => r.eventsAfter(0, 100))).map((e) => e.revision),
        expected,
      );
    });

    test(
      'two handles (replicas) writing one new item at once: no lost update, gap-free revisions',
      { skip: engine.multiWriter ? false : `${engine.name} has a single writer process` },
      async (t) => {
        const { store, reopen } = await engine.fresh(t);
        const other = await reopen();
        const writes = Array.from({ length: 20 }, (_, i) =>
          (i % 2 === 0 ? store : other).write(async (w) => {
            const version = await w.takeNextVersion(REF, 'config', T0);
            await new Promise((resolve) => setImmediate(resolve));
            const revision = await w.nextRevision();
            await w.insertVersion({ ...REF, version, env: 'base', revision, createdAt: T0, createdBy: `w${i}`, deleted: false, sealed: sealedOf(i) });
            await w.appendEvent({ revision, digest: digestOf(revision), type: 'itemChanged', namespace: REF.namespace, name: REF.name, kind: 'config', version, env: 'base' }, T0);
            return { version, revision };
          }),
        );
        const results = await Promise.all(writes);
        const expected = Array.from({ length: 20 }, (_, i) => i + 1);
        assert.deepEqual(results.map((r) => r.version).sort((a, b) => a - b), expected);
        assert.deepEqual(results.map((r) => r.revision).sort((a, b) => a - b), expected);
        assert.ok(results.every((r) => r.version === r.revision), 'each write saw the one before it');
        assert.deepEqual(
          (await other.read((r) => r.eventsAfter(0, 100))).map((e) => e.revision),
          expected,
        );
      },
    );

    test('a read never sees a write that has not committed', async (t) => {
      const { store } = await engine.fresh(t);
      const holding = deferred();
      const written = deferred();
      const write = store.write(async (w) => {
        await w.takeNextVersion(REF, 'config', T0);
        written.resolve();
        await holding.promise;
      });
      await written.promise;
      assert.equal(await store.read((r) => r.getItem(REF)), undefined);
      holding.resolve();
      await write;
      assert.equal((await store.read((r) => r.getItem(REF)))?.lastVersion, 1);
    });

    test('one log page is one snapshot: state, the digest at the position, events; a restore marks a new identity and compacts everything', async (t) => {
      const { store } = await engine.fresh(t);
      const { storeId } = await store.read((r) => r.logState());
      for (let i = 0; i < 5; i += 1) await putVersion(store, 'base', i);
      const page = await store.read((r) => r.logPage(2, 2));
      assert.deepEqual(
        { ...page, events: page.events.map((e) => e.revision) },
        { storeId, revision: 5, compactedThrough: 0, compactedDigest: '', afterDigest: digestOf(2), events: [3, 4] },
      );
      assert.equal((await store.read((r) => r.logPage(0, 10))).afterDigest, '', 'revision 0 has the empty digest');
      assert.equal((await store.read((r) => r.logPage(9, 10))).afterDigest, undefined, 'no event stands in the future');
      assert.deepEqual(await store.read(async (r) => (await r.logHead()).afterDigest), digestOf(5));
      await store.write((w) => w.compactEvents(2));
      const boundary = await store.read((r) => r.logPage(3, 10));
      assert.deepEqual([boundary.compactedThrough, boundary.afterDigest, boundary.events.map((e) => e.revision)], [3, digestOf(3), [4, 5]], 'the boundary keeps its digest');
      assert.equal((await store.read((r) => r.logPage(2, 10))).afterDigest, undefined, 'compacted');

      const marked = await store.write((w) => w.markRestored('restored-id', 1_000, digestOf(0xabc)));
      assert.deepEqual(marked, { storeId: 'restored-id', revision: 1_005, compactedThrough: 1_005, compactedDigest: digestOf(0xabc) });
      assert.deepEqual(await store.read((r) => r.logState()), marked);
      const head = await store.read((r) => r.logHead());
      assert.deepEqual([head.afterDigest, head.events], [digestOf(0xabc), []], 'the head of a restored store is the marked boundary');
      assert.equal((await putVersion(store, 'base', 9)).revision, 1_006, 'revisions continue after the bump');
    });

    test('a change-set member keeps its set revision in the log; other events have none', async (t) => {
      const { store } = await engine.fresh(t);
      const events: LogEvent[] = [];
      await store.write(async (w) => {
        const first = await w.nextRevision();
        const second = await w.nextRevision();
        events.push({ revision: first, digest: digestOf(first), type: 'itemChanged', namespace: 'a', name: 'user', kind: 'secret', version: 1, env: 'base', setRevision: second });
        events.push({ revision: second, digest: digestOf(second), type: 'itemDeleted', namespace: 'a', name: 'old', env: '', version: 3, setRevision: second });
        for (const event of events) await w.appendEvent(event, T0);
      });
      await putVersion(store, 'base', 1);
      const read = await store.read((r) => r.eventsAfter(0, 10));
      assert.deepEqual(read.slice(0, 2), events);
      assert.equal((read[2] as { setRevision?: number }).setRevision, undefined);
    });

    test('the event log replays after a revision, pages, and compacts to the newest N', async (t) => {
      const { store } = await engine.fresh(t);
      const { storeId } = await store.read((r) => r.logState());
      const events: LogEvent[] = [];
      await store.write(async (w) => {
        for (let i = 0; i < 3; i += 1) {
          const revision = await w.nextRevision();
          const event: LogEvent =
            i === 0
              ? { revision, digest: digestOf(revision), type: 'itemChanged', namespace: 'a', name: 'b', kind: 'secret', version: 1, env: 'prod' }
              : i === 1
                ? { revision, digest: digestOf(revision), type: 'itemDeleted', namespace: 'a', name: 'b', env: '', version: 1 }
                : { revision, digest: digestOf(revision), type: 'keyRotated', namespace: 'a', keyVersion: 2 };
          await w.appendEvent(event, T0);
          events.push(event);
        }
      });
      assert.deepEqual(await store.read((r) => r.eventsAfter(0, 10)), events, 'each event type round-trips');
      assert.deepEqual(await store.read((r) => r.eventsAfter(1, 1)), [events[1]]);
      for (let i = 0; i < 7; i += 1) await putVersion(store, 'base', i);
      await store.write((w) => w.compactEvents(4));
      assert.deepEqual(await store.read((r) => r.logState()), { storeId, revision: 10, compactedThrough: 6, compactedDigest: digestOf(6) });
      assert.deepEqual(
        (await store.read((r) => r.eventsAfter(0, 100))).map((e) => e.revision),
        [7, 8, 9, 10],
      );
      await store.write((w) => w.compactEvents(100));
      assert.equal((await store.read((r) => r.logState())).compactedThrough, 6, 'compaction never moves backwards');
      await store.write(async (w) => {
        const revision = await w.nextRevision();
        await w.appendEvent({ revision, digest: digestOf(revision), type: 'keyRotated', namespace: 'a', keyVersion: 3 }, T0 + 1_000);
      });
      await store.write((w) => w.compactEventsCreatedBefore(T0 - 1));
      assert.equal((await store.read((r) => r.logState())).compactedThrough, 6, 'nothing is older than the cutoff');
      await store.write((w) => w.compactEventsCreatedBefore(T0));
      assert.deepEqual(
        await store.read((r) => r.logState()),
        { storeId, revision: 11, compactedThrough: 10, compactedDigest: digestOf(10) },
        'age compaction keeps the newer event and the boundary digest',
      );
      assert.deepEqual(
        (await store.read((r) => r.eventsAfter(0, 100))).map((e) => e.revision),
        [11],
      );
    });

    test('DEK rows: current per namespace, re-wrap, and every version kept', async (t) => {
      const { store } = await engine.fresh(t);
      const wrapped = (n: number) => Buffer.from([n, 0, 255, n]);
      await store.write(async (w) => {
        await w.insertDek({ namespace: 'a', version: 1, wrapped: wrapped(1), kekId: 'k1', createdAt: T0 });
        await w.insertDek({ namespace: 'a', version: 2, wrapped: wrapped(2), kekId: 'k1', createdAt: T0 + 1 });
        await w.insertDek({ namespace: 'b', version: 1, wrapped: wrapped(3), kekId: 'k1', createdAt: T0 + 2 });
      });
      await assert.rejects(store.write((w) => w.insertDek({ namespace: 'a', version: 2, wrapped: wrapped(9), kekId: 'k1', createdAt: T0 })));
      assert.equal((await store.read((r) => r.currentDek('a')))?.version, 2);
      assert.equal(await store.read((r) => r.currentDek('c')), undefined);
      assert.deepEqual(
        (await store.read((r) => r.currentDeks())).map((d) => [d.namespace, d.version, d.createdAt]),
        [
          ['a', 2, T0 + 1],
          ['b', 1, T0 + 2],
        ],
      );
      await store.write((w) => w.rewrapDek('a', 1, wrapped(7), 'k2'));
      const row = await store.read((r) => r.getDek('a', 1));
      assert.deepEqual([row?.wrapped, row?.kekId], [wrapped(7), 'k2']);
      assert.equal((await store.read((r) => r.allDeks())).length, 3);
    });

    test('audit entries are appended and read newest first', async (t) => {
      const { store } = await engine.fresh(t);
      await store.write(async (w) => {
        await w.insertAudit({ at: T0, subject: 'alice', action: 'read', target: 'a/b', outcome: 'ok', detail: '' });
        await w.insertAudit({ at: T0 + 1, subject: 'bob', action: 'denied', target: 'a', outcome: 'denied', detail: 'no role' });
      });
      assert.deepEqual(
        (await store.read((r) => r.recentAudit(10))).map((a) => [a.subject, a.outcome, a.detail, a.at]),
        [
          ['bob', 'denied', 'no role', T0 + 1],
          ['alice', 'ok', '', T0],
        ],
      );
    });

    test('close waits for the write in flight, then refuses work', async (t) => {
      const { store, reopen } = await engine.fresh(t);
      const holding = deferred();
      const started = deferred();
      const write = store.write(async (w) => {
        started.resolve();
        await holding.promise;
        return w.takeNextVersion(REF, 'config', T0);
      });
      await started.promise;
      const closing = store.close();
      holding.resolve();
      assert.equal(await write, 1);
      await closing;
      await assert.rejects(
        store.read((r) => r.logState()),
        (err: unknown) => err instanceof AppError && err.code === 'store_unavailable',
      );
      await store.close();
      const again = await reopen();
      assert.equal((await again.read((r) => r.getItem(REF)))?.lastVersion, 1, 'the write in flight was committed');
    });
  });
}

for (const engine of STORE_ENGINES) storeConformanceSuite(engine);

// Behaviour of the embedded engine itself (files, locking, migration guard),
// beyond the shared contract above.
describe('sqlite engine specifics', () => {
  const now = () => T0;

  test('one WAL-mode database file, readable only by the server user', async (t) => {
    const dataDir = join(await tempDir(t), 'data');
    const store = await openSqliteStore({ dataDir, now });
    t.after(() => store.close());
    await putVersion(store, 'base', 1);
    assert.equal((await stat(dataDir)).mode & 0o777, 0o700);
    assert.equal((await stat(join(dataDir, SQLITE_FILE_NAME))).mode & 0o777, 0o600);
    assert.equal((await stat(join(dataDir, `${SQLITE_FILE_NAME}-wal`))).mode & 0o777, 0o600);
    const raw = new DatabaseSync(join(dataDir, SQLITE_FILE_NAME), { readOnly: true });
    t.after(() => raw.close());
    assert.deepEqual({ ...raw.prepare('PRAGMA journal_mode').get() }, { journal_mode: 'wal' });
    assert.deepEqual(
      raw.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all().map((r) => ({ ...r })),
      loadMigrations().map((m) => ({ version: m.version, name: m.name })),
    );
  });

  test('a write blocked by another process past the busy timeout is store_unavailable, then succeeds', async (t) => {
    const dataDir = await tempDir(t);
    const store = await openSqliteStore({ dataDir, now, busyTimeoutMs: 50 });
    t.after(() => store.close());
    const other = new DatabaseSync(join(dataDir, SQLITE_FILE_NAME));
    t.after(() => other.close());
    other.exec('BEGIN IMMEDIATE');
    await assert.rejects(putVersion(store, 'base', 1), (err: unknown) => err instanceof AppError && err.code === 'store_unavailable');
    assert.equal((await store.read((r) => r.logState())).revision, 0, 'reads still work while another process writes');
    other.exec('COMMIT');
    assert.deepEqual(await putVersion(store, 'base', 1), { version: 1, revision: 1 });
  });

  test("an agent's key fetch seeks by index: its queries never pass over a whole namespace, however many items it holds", async (t) => {
    const dataDir = await tempDir(t);
    await (await openSqliteStore({ dataDir, now })).close();
    const db = new DatabaseSync(join(dataDir, SQLITE_FILE_NAME));
    t.after(() => db.close());
    const insert = db.prepare('INSERT INTO versions (namespace, name, version, env, key_id, key_version, aad_version, iv, ciphertext, tag, deleted, revision, created_at, created_by) VALUES (?, ?, 1, ?, ?, ?, 2, ?, ?, ?, 0, ?, ?, ?)');
    const item = db.prepare("INSERT INTO items (namespace, name, kind, last_version, deleted, created_at, updated_at, ring_grace) VALUES (?, ?, 'secret', 1, 0, ?, ?, ?)");
    db.exec('BEGIN');
    for (let i = 0; i < 2_000; i++) {
      const s = sealedOf(i % 200, 1 + (i % 3));
      item.run('big/ns', `k${i}`, T0, T0, i % 500 === 0 ? 60_000 : 0);
      insert.run('big/ns', `k${i}`, 'base', s.keyId, s.keyVersion, s.iv, s.ciphertext, s.tag, i + 1, T0, 'x');
    }
    db.exec('COMMIT; ANALYZE');
    const issued: Array<{ sql: string; params: readonly SqlParam[] }> = [];
    const recording: SqlConnection = {
      all: async (sql, params = []) => {
        issued.push({ sql, params });
        return db.prepare(sql).all(...(params as SQLInputValue[])) as SqlRow[];
      },
      run: async (sql, params = []) => Number(db.prepare(sql).run(...(params as SQLInputValue[])).changes),
      exec: async (sql) => db.exec(sql),
    };
    const reader = new SqlStoreTx(recording, sqliteDialect);
    assert.deepEqual(await reader.keyVersionsInUse('big/ns'), [1, 2, 3]);
    assert.equal((await reader.ringItemsIn('big/ns')).length, 4);
    assert.ok(issued.length > 0);
    for (const { sql, params } of issued) {
      const plan = db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...(params as SQLInputValue[])).map((row) => String(row.detail));
      // A SCAN reads every row; a SEARCH on the namespace alone reads every row of the namespace, unless the index is items_ring, which holds only ring items.
      const passes = plan.filter((step) => step.startsWith('SCAN') || (/\(namespace=\?\)/.test(step) && !step.includes('INDEX items_ring ')));
      assert.deepEqual(passes, [], `${sql.replace(/\s+/g, ' ')} → ${plan.join('; ')}`);
    }
  });

  test('a migration edited after it ran, or a newer schema, stops the open', async (t) => {
    const dataDir = await tempDir(t);
    await (await openSqliteStore({ dataDir, now })).close();
    const raw = new DatabaseSync(join(dataDir, SQLITE_FILE_NAME));
    t.after(() => raw.close());
    raw.exec("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1");
    await assert.rejects(openSqliteStore({ dataDir, now }), /changed after it was applied/);
    raw.exec("DELETE FROM schema_migrations; INSERT INTO schema_migrations VALUES (999, 'future', 'x', 0)");
    await assert.rejects(openSqliteStore({ dataDir, now }), /newer than this build/);
  });
});
