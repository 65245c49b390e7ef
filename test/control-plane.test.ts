/**
 * The control plane's domain layer on real SQLite in a temp dir: overlays and
 * merges, secrets, history, rollback, pruning, deletes, envelope encryption on
 * disk, tamper detection, DEK and KEK rotation, the event log and its
 * retention, the key-age policy (ManualClock), audit and backup.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { aadVersionOf, open, valueAad, zeroize } from '../src/shared/crypto.ts';
import { AppError } from '../src/shared/errors.ts';
import { SettingError } from '../src/shared/settings.ts';
import type { KekProvider, LogEvent } from '../src/server/control-plane.ts';
import { kekFromBase64, loadLocalKek } from '../src/server/kek.ts';
import { SQLITE_FILE_NAME } from '../src/server/store/sqlite-store.ts';
import { DAY_MS, TEST_ENVIRONMENTS, kekOf, openTestPlane, randomKekBase64, scanForNeedles, tempDir, type PlaneEngine } from './helpers/store-fixtures.ts';
import { PLANE_ENGINES, postgresLocalePlane, postgresPlane } from './helpers/store-engines.ts';

const ML = { namespace: 'production/ml-service', name: 'inference' };
const DB_PASSWORD = { namespace: 'production/ml-service', name: 'db-password' };

const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
const parse = (buffer: Buffer): unknown => JSON.parse(buffer.toString('utf8'));
/** A listing's first page, large enough for every test's items. */
const ALL = { limit: 10_000, after: undefined };

function hasCode(code: string) {
  return (err: unknown): boolean => err instanceof AppError && err.code === code;
}

/** Keyset paging of the listing (GET /v1/list): byte order whatever the database's collation. */
function listPagingTest(engine: PlaneEngine): void {
  test(`list pages by key in byte order on ${engine.name}: each page at most limit, next until the end; writes between pages neither repeat nor skip an item`, async (t) => {
    const { plane } = await openTestPlane(t, await engine.location(t), {}, engine);
    // '-', '.', '/' and '_' sort before letters and digits by bytes; a locale collation would ignore them and interleave these.
    const refs = [
      ['team/ab', 'y'],
      ['team/a', 'x1'],
      ['team/a_b', 'y'],
      ['team/a', 'x_1'],
      ['team/a/c', 'z'],
      ['team/a', 'x'],
      ['team/a.b', 'y'],
      ['team/a', 'x.1'],
      ['team/a-b', 'y'],
      ['team/a', 'x-1'],
      ['other', 'n'],
    ].map(([namespace, name]) => ({ namespace: namespace as string, name: name as string }));
    for (const ref of refs) await plane.putItem(ref, 'base', 'config', json(1), 'x');
    const key = (r: { namespace: string; name: string }) => `${r.namespace} ${r.name}`;
    const byteOrder = (list: readonly { namespace: string; name: string }[]) =>
      list.map(key).sort((a, b) => {
        const [an = '', ak = ''] = a.split(' ');
        const [bn = '', bk = ''] = b.split(' ');
        return an !== bn ? (an < bn ? -1 : 1) : ak < bk ? -1 : ak > bk ? 1 : 0;
      });
    const pages = async (prefix: string, limit: number, between?: (page: number) => Promise<void>) => {
      const seen: string[][] = [];
      let after: { namespace: string; name: string } | undefined;
      for (;;) {
        const page = await plane.list(prefix, { limit, after });
        assert.ok(page.items.length <= limit);
        seen.push(page.items.map(key));
        if (!page.next) return seen;
        assert.ok(seen.length < 20, 'the paging ends');
        after = page.next;
        await between?.(seen.length);
      }
    };
    const team = refs.filter((r) => r.namespace.startsWith('team/'));
    const byFour = await pages('team', 4);
    assert.deepEqual(byFour.flat(), byteOrder(team));
    assert.deepEqual(byFour.map((p) => p.length), [4, 4, 2], 'ten items: two full pages and the rest; the last says it is the last');
    assert.deepEqual((await pages('team/a', 1)).flat(), ['team/a x', 'team/a x-1', 'team/a x.1', 'team/a x1', 'team/a x_1', 'team/a/c z'], 'whole segments: team/a-b, team/a.b and team/a_b are not under team/a');
    assert.deepEqual(await pages('', 100), [byteOrder(refs)]);

    // Between the first and second page: one item written before the cursor (the caller has passed it), one after,
    // and one not yet listed deleted. The rest come once each, in order.
    const moved = await pages('team', 4, async (page) => {
      if (page !== 1) return;
      await plane.putItem({ namespace: 'team/a', name: 'a-early' }, 'base', 'config', json(1), 'x');
      await plane.putItem({ namespace: 'team/b', name: 'late' }, 'base', 'config', json(1), 'x');
      await plane.deleteItem({ namespace: 'team/a/c', name: 'z' }, undefined, 'x');
    });
    const expected = byteOrder([...team.filter((r) => r.name !== 'z'), { namespace: 'team/b', name: 'late' }]);
    assert.deepEqual(moved.flat(), expected);
  });
}

/** Domain behaviour every engine must show; SQLite-file checks follow below. */
function domainSuite(engine: PlaneEngine): void {
  const skip = engine.skip();
  describe(`control plane on ${engine.name}`, { skip: skip ?? false }, () => {
    after(() => engine.teardown());

  test('config overlays merge along the environment chain and read the same after reopen', async (t) => {
    const dir = await engine.location(t);
    const kekText = randomKekBase64();
    const first = await openTestPlane(t, dir, { kek: kekOf(kekText) }, engine);
    await first.plane.putItem(ML, 'base', 'config', json({ replicas: 1, model: { name: 'bert', batch: 8 }, tags: ['a'] }), 'alice');
    await first.plane.putItem(ML, 'staging', 'config', json({ model: { batch: 16 }, tags: ['s'] }), 'alice');
    await first.plane.putItem(ML, 'prod', 'config', json({ replicas: 5 }), 'alice');

    const expected = {
      base: { replicas: 1, model: { name: 'bert', batch: 8 }, tags: ['a'] },
      dev: { replicas: 1, model: { name: 'bert', batch: 8 }, tags: ['a'] },
      staging: { replicas: 1, model: { name: 'bert', batch: 16 }, tags: ['s'] },
      prod: { replicas: 5, model: { name: 'bert', batch: 16 }, tags: ['s'] },
    };
    const etags = new Map<string, string>();
    for (const [env, value] of Object.entries(expected)) {
      const item = await first.plane.getItem(ML, env);
      assert.deepEqual(parse(item.value), value, env);
      assert.equal(item.kind, 'config');
      etags.set(env, item.etag);
    }
    assert.equal((await first.plane.getItem(ML, 'prod')).version, 3);
    assert.equal((await first.plane.getItem(ML, 'dev')).version, 1);
    // The etag covers every contributing layer: staging and prod differ, base and dev share one layer.
    assert.equal(etags.get('base'), etags.get('dev'));
    assert.notEqual(etags.get('staging'), etags.get('prod'));

    await first.plane.close();
    const second = await openTestPlane(t, dir, { kek: kekOf(kekText) }, engine);
    for (const [env, value] of Object.entries(expected)) {
      const item = await second.plane.getItem(ML, env);
      assert.deepEqual(parse(item.value), value, `${env} after reopen`);
      assert.equal(item.etag, etags.get(env));
    }
    // A write to a less specific layer changes the merged prod value and its etag.
    await second.plane.putItem(ML, 'base', 'config', json({ replicas: 1, model: { name: 'gpt' } }), 'alice');
    const prod = await second.plane.getItem(ML, 'prod');
    assert.deepEqual(parse(prod.value), { replicas: 5, model: { name: 'gpt', batch: 16 }, tags: ['s'] });
    assert.notEqual(prod.etag, etags.get('prod'));
  });

  test('secrets are never merged: the most specific existing layer wins', async (t) => {
    const { plane } = await openTestPlane(t, await engine.location(t), {}, engine);
    await plane.putItem(DB_PASSWORD, 'base', 'secret', Buffer.from('base-pw'), 'alice');
    await plane.putItem(DB_PASSWORD, 'staging', 'secret', Buffer.from('staging-pw'), 'alice');
    assert.equal((await plane.getItem(DB_PASSWORD, 'base')).value.toString(), 'base-pw');
    assert.equal((await plane.getItem(DB_PASSWORD, 'dev')).value.toString(), 'base-pw');
    assert.equal((await plane.getItem(DB_PASSWORD, 'prod')).value.toString(), 'staging-pw');
    const envelope = await plane.getEnvelope(DB_PASSWORD, 'prod');
    assert.equal(envelope.layers.length, 1, 'a secret envelope carries only the winning layer');
    assert.equal(envelope.layers[0]?.env, 'staging');

    // JSON-looking secrets are bytes, not merged objects.
    const tls = { namespace: 'production/ml-service', name: 'tls' };
    await plane.putItem(tls, 'base', 'secret', json({ a: 1 }), 'alice');
    await plane.putItem(tls, 'prod', 'secret', json({ b: 2 }), 'alice');
    assert.deepEqual(parse((await plane.getItem(tls, 'prod')).value), { b: 2 });

    const prodOnly = { namespace: 'production/ml-service', name: 'prod-only' };
    await plane.putItem(prodOnly, 'prod', 'secret', Buffer.from([0, 255, 1]), 'alice');
    assert.deepEqual([...(await plane.getItem(prodOnly, 'prod')).value], [0, 255, 1]);
    await assert.rejects(plane.getItem(prodOnly, 'dev'), hasCode('not_found'));
  });

  test('bad writes are refused without storing anything', async (t) => {
    const { plane } = await openTestPlane(t, await engine.location(t), {}, engine);
    await assert.rejects(plane.putItem(ML, 'qa', 'config', json({}), 'a'), hasCode('invalid_argument'));
    await assert.rejects(plane.putItem(ML, 'base', 'config', Buffer.from('{nope'), 'a'), hasCode('invalid_json'));
    await assert.rejects(plane.putItem({ namespace: 'Prod', name: 'x' }, 'base', 'config', json(1), 'a'), hasCode('invalid_path'));
    await assert.rejects(plane.putItem({ namespace: 'a/../b', name: 'x' }, 'base', 'config', json(1), 'a'), hasCode('invalid_path'));
    await plane.putItem(ML, 'base', 'config', json({ a: 1 }), 'a');
    await assert.rejects(plane.putItem(ML, 'prod', 'secret', Buffer.from('x'), 'a'), hasCode('conflict'));
    assert.equal(await plane.currentRevision(), 1, 'refused writes take no revision');
    assert.deepEqual(parse((await plane.getItem(ML, 'prod')).value), { a: 1 });
  });

  test('history, rollback and pruning keep the current versions', async (t) => {
    const { plane } = await openTestPlane(t, await engine.location(t), { maxVersionsPerItem: 3 }, engine);
    await plane.putItem(ML, 'base', 'config', json({ v: 'base' }), 'alice'); // v1, stays current for base
    for (let i = 2; i <= 6; i += 1) await plane.putItem(ML, 'prod', 'config', json({ v: i }), 'bob'); // v2..v6

    const history = await plane.history(ML);
    assert.deepEqual(
      history.versions.map((v) => [v.version, v.env]),
      [
        [1, 'base'],
        [5, 'prod'],
        [6, 'prod'],
      ],
      'at most 3 versions kept, and the base layer current version is never pruned',
    );
    assert.equal(history.versions[2]?.createdBy, 'bob');
    assert.equal(history.versions[0]?.createdAt, new Date(Date.UTC(2026, 0, 1)).toISOString());

    const rolled = await plane.rollback(ML, 5, 'carol');
    assert.equal(rolled.version, 7);
    const prod = await plane.getItem(ML, 'prod');
    assert.deepEqual(parse(prod.value), { v: 5 }, 'the prod layer overrides base');
    assert.equal(prod.version, 7);
    await assert.rejects(plane.rollback(ML, 2, 'carol'), hasCode('not_found'), 'a pruned version');
    await assert.rejects(plane.rollback(ML, 99, 'carol'), hasCode('not_found'), 'an unknown version');
    await assert.rejects(plane.rollback({ namespace: 'production/ml-service', name: 'ghost' }, 1, 'carol'), hasCode('not_found'));
    const after = await plane.history(ML);
    assert.deepEqual(
      after.versions.map((v) => v.version),
      [1, 6, 7],
    );
  });

  test('deleting a layer falls back to inherited layers; deleting the item removes it everywhere', async (t) => {
    const { plane } = await openTestPlane(t, await engine.location(t), {}, engine);
    const events: LogEvent[] = [];
    plane.onCommitted((batch) => events.push(...batch));
    await plane.putItem(ML, 'base', 'config', json({ a: 1 }), 'a');
    await plane.putItem(ML, 'prod', 'config', json({ a: 2 }), 'a');
    const { revision } = await plane.deleteItem(ML, 'prod', 'a');
    assert.deepEqual(parse((await plane.getItem(ML, 'prod')).value), { a: 1 });
    assert.deepEqual(events.at(-1), { revision, digest: events.at(-1)?.digest, type: 'itemDeleted', namespace: ML.namespace, name: ML.name, env: 'prod', version: 3 });
    assert.match(events.at(-1)?.digest ?? '', /^[0-9a-f]{32}$/, 'each event gets a 16-byte digest when written');
    assert.equal((await plane.history(ML)).versions.at(-1)?.deleted, true);
    await assert.rejects(plane.deleteItem(ML, 'prod', 'a'), hasCode('not_found'), 'the layer is already gone');
    assert.deepEqual(
      (await plane.list('production', ALL)).items.map((i) => [i.name, i.envs]),
      [['inference', ['base']]],
    );

    const whole = await plane.deleteItem(ML, undefined, 'a');
    assert.equal(events.at(-1)?.type, 'itemDeleted');
    assert.equal(events.at(-1)?.revision, whole.revision);
    await assert.rejects(plane.getItem(ML, 'base'), hasCode('not_found'));
    await assert.rejects(plane.history(ML), hasCode('not_found'));
    assert.deepEqual(await plane.list('production', ALL), { items: [] });

    // Written again, the item continues its version numbers so no (item, version) names two values.
    const again = await plane.putItem(ML, 'base', 'secret', Buffer.from('now a secret'), 'a');
    assert.equal(again.version, 4);
  });

  test('list matches whole segments only', async (t) => {
    const { plane } = await openTestPlane(t, await engine.location(t), {}, engine);
    await plane.putItem({ namespace: 'production/ml', name: 'a' }, 'base', 'config', json(1), 'x');
    await plane.putItem({ namespace: 'production/ml/inner', name: 'b' }, 'base', 'config', json(1), 'x');
    await plane.putItem({ namespace: 'production/ml-admin', name: 'c' }, 'base', 'config', json(1), 'x');
    await plane.putItem({ namespace: 'production/m_', name: 'd' }, 'base', 'config', json(1), 'x');
    assert.deepEqual(
      (await plane.list('production/ml', ALL)).items.map((i) => i.name),
      ['a', 'b'],
    );
    assert.deepEqual(
      (await plane.list('production/m_', ALL)).items.map((i) => i.name),
      ['d'],
      '"_" is not a wildcard',
    );
    assert.equal((await plane.list('production', ALL)).items.length, 4);
  });

  // Where text order is the database's, also on a database that does not sort by bytes.
  for (const ordered of engine === postgresPlane ? [engine, postgresLocalePlane] : [engine]) listPagingTest(ordered);

  test('DEK rotation re-encrypts current versions under a new key version and emits KeyRotated', async (t) => {
    const { plane } = await openTestPlane(t, await engine.location(t), { maxVersionsPerItem: 5 }, engine);
    await plane.putItem(ML, 'base', 'config', json({ n: 1 }), 'a');
    await plane.putItem(ML, 'base', 'config', json({ n: 2 }), 'a'); // v1 stays as history under key 1
    await plane.putItem(DB_PASSWORD, 'prod', 'secret', Buffer.from('pw'), 'a');
    const before = await plane.getEnvelope(ML, 'base');
    const events: LogEvent[] = [];
    plane.onCommitted((batch) => events.push(...batch));

    const rotated = await plane.rotateNamespace(ML.namespace, 'ops');
    assert.equal(rotated.keyVersion, 2);
    assert.deepEqual(events, [{ revision: rotated.revision, digest: events[0]?.digest, type: 'keyRotated', namespace: ML.namespace, keyVersion: 2 }]);

    const afterEnv = await plane.getEnvelope(ML, 'base');
    assert.equal(afterEnv.layers[0]?.keyVersion, 2);
    assert.notEqual(afterEnv.layers[0]?.ciphertext + afterEnv.layers[0]!.iv, before.layers[0]!.ciphertext + before.layers[0]!.iv);
    assert.equal(afterEnv.etag, before.etag, 're-sealing does not change the value or its etag');
    assert.deepEqual(parse((await plane.getItem(ML, 'base')).value), { n: 2 });
    assert.equal((await plane.getItem(DB_PASSWORD, 'prod')).value.toString(), 'pw');

    // The agent path: the envelope opens with the DEK version it names.
    const deks = await plane.getDeks(ML.namespace);
    assert.equal(deks.currentVersion, 2);
    assert.deepEqual(
      deks.keys.map((k) => k.version),
      [2],
      'key 1 seals only version 1 in history, which no agent reads (issue 20: agents get only the keys current values and ring members use)',
    );
    const layer = afterEnv.layers[0]!;
    const dek = deks.keys.find((k) => k.version === layer.keyVersion)!.dek;
    const plain = open(
      dek,
      { iv: Buffer.from(layer.iv, 'base64'), ciphertext: Buffer.from(layer.ciphertext, 'base64'), tag: Buffer.from(layer.tag, 'base64') },
      valueAad({ namespace: ML.namespace, name: ML.name, version: layer.version, env: layer.env, kind: afterEnv.kind, keyId: layer.keyId, keyVersion: layer.keyVersion }, aadVersionOf(layer.aadVersion)),
    );
    assert.deepEqual(parse(plain), { n: 2 });
    await plane.rollback(ML, 1, 'a');
    assert.deepEqual(parse((await plane.getItem(ML, 'base')).value), { n: 1 }, 'history sealed under key 1 still reads');
    await assert.rejects(plane.rotateNamespace('production/empty', 'ops'), hasCode('not_found'));
  });

  test('a key rotation re-seals a namespace larger than one page, letting the event loop turn between pages', async (t) => {
    const { plane } = await openTestPlane(t, await engine.location(t), {}, engine);
    const namespace = 'production/large';
    const count = 1_200; // more than two pages of the rotation's 500
    for (let from = 0; from < count; from += 100) {
      await plane.writeChangeSet(
        Array.from({ length: 100 }, (_, i) => ({ op: 'put' as const, ref: { namespace, name: `k${String(from + i).padStart(4, '0')}` }, env: 'base', kind: 'secret' as const, value: Buffer.from(`v${from + i}`) })),
        'a',
      );
    }
    await plane.deleteItem({ namespace, name: 'k0500' }, 'base', 'a'); // a deleted item's history is re-sealed too
    // Turns of the loop while the rotation runs: none when it re-seals everything in one go, so the server answers nothing meanwhile.
    let turns = 0;
    let running = true;
    const tick = (): void => {
      if (!running) return;
      turns += 1;
      setImmediate(tick);
    };
    const rotation = plane.rotateNamespace(namespace, 'ops', { retirePrevious: true }).finally(() => {
      running = false;
    });
    setImmediate(tick);
    const rotated = await rotation;
    assert.equal(rotated.resealed, count);
    assert.deepEqual(rotated.retiredVersions, [1]);
    assert.ok(turns >= 2, `the loop turned ${turns} time(s) during the rotation`);
    for (const name of ['k0000', 'k0499', 'k0501', 'k1199']) {
      const envelope = await plane.getEnvelope({ namespace, name }, 'base');
      assert.equal(envelope.layers[0]?.keyVersion, 2);
      assert.equal((await plane.getItem({ namespace, name }, 'base')).value.toString(), `v${Number(name.slice(1))}`);
    }
  });

  test('KEK rotation re-wraps every DEK; reopen works with the new KEK and fails clearly with the old', async (t) => {
    const dir = await engine.location(t);
    const oldKek = randomKekBase64();
    const newKek = randomKekBase64();
    const first = await openTestPlane(t, dir, { kek: kekOf(oldKek) }, engine);
    await first.plane.putItem(ML, 'base', 'config', json({ a: 1 }), 'a');
    await first.plane.putItem({ namespace: 'staging/web', name: 'pw' }, 'base', 'secret', Buffer.from('pw'), 'a');
    const envelopeBefore = await first.plane.getEnvelope(ML, 'base');
    const result = await first.plane.rotateKek(kekOf(newKek));
    assert.equal(result.rewrapped, 2);
    assert.deepEqual(await first.plane.getEnvelope(ML, 'base'), envelopeBefore, 'values are not touched');
    assert.deepEqual(parse((await first.plane.getItem(ML, 'base')).value), { a: 1 });
    await first.plane.putItem({ namespace: 'new/ns', name: 'x' }, 'base', 'config', json(1), 'a');
    await first.plane.close();

    const reopened = await openTestPlane(t, dir, { kek: kekOf(newKek) }, engine);
    assert.deepEqual(parse((await reopened.plane.getItem(ML, 'base')).value), { a: 1 });
    assert.equal((await reopened.plane.getItem({ namespace: 'staging/web', name: 'pw' }, 'prod')).value.toString(), 'pw');
    await reopened.plane.close();

    await assert.rejects(openTestPlane(t, dir, { kek: kekOf(oldKek) }, engine), (err: unknown) => {
      assert.ok(err instanceof SettingError);
      assert.match(err.message, /CONFIG_SIDECAR_KEK/);
      assert.match(err.message, new RegExp(kekOf(newKek).id));
      return true;
    });
  });

  test('events are gap-free and in revision order under concurrent writes', async (t) => {
    const { plane } = await openTestPlane(t, await engine.location(t), {}, engine);
    const seen: number[] = [];
    plane.onCommitted((batch) => seen.push(...batch.map((e) => e.revision)));
    await plane.putItem(ML, 'base', 'config', json(0), 'a');
    const writes: Array<Promise<unknown>> = [];
    for (let i = 0; i < 40; i += 1) {
      writes.push(plane.putItem({ namespace: `team${i % 4}/svc`, name: `item${i % 7}` }, envFor(i), 'config', json({ i }), 'a'));
      if (i % 10 === 0) writes.push(plane.rotateNamespace(ML.namespace, 'a'));
      if (i % 13 === 0) writes.push(plane.putItem(ML, 'prod', 'config', json({ i }), 'a'));
    }
    writes.push(plane.putItem(ML, 'base', 'secret', Buffer.from('x'), 'a').catch((err: unknown) => err)); // refused: kind conflict
    await Promise.all(writes);
    const current = await plane.currentRevision();
    assert.deepEqual(
      seen,
      Array.from({ length: current }, (_, i) => i + 1),
      'listeners heard every revision once, in order',
    );
    const logged = await plane.eventsAfter(0, 1000);
    assert.deepEqual(
      logged.map((e) => e.revision),
      seen,
    );
    assert.deepEqual(
      (await plane.eventsAfter(10, 5)).map((e) => e.revision),
      [11, 12, 13, 14, 15],
    );
  });

  test('retention keeps the newest events and reports the oldest retained revision', async (t) => {
    const dir = await engine.location(t);
    const kekText = randomKekBase64();
    const { plane } = await openTestPlane(t, dir, { retainEvents: 5, kek: kekOf(kekText) }, engine);
    assert.equal(await plane.oldestRetainedRevision(), 1);
    assert.equal(await plane.currentRevision(), 0);
    for (let i = 0; i < 12; i += 1) await plane.putItem(ML, 'base', 'config', json({ i }), 'a');
    assert.equal(await plane.currentRevision(), 12);
    assert.equal(await plane.oldestRetainedRevision(), 8);
    assert.deepEqual(
      (await plane.eventsAfter(0, 100)).map((e) => e.revision),
      [8, 9, 10, 11, 12],
    );
    assert.deepEqual(
      (await plane.eventsAfter(7, 100)).map((e) => e.revision),
      [8, 9, 10, 11, 12],
    );
    await plane.close();
    const reopened = await openTestPlane(t, dir, { retainEvents: 5, kek: kekOf(kekText) }, engine);
    assert.equal(await reopened.plane.oldestRetainedRevision(), 8);
    assert.equal(await reopened.plane.currentRevision(), 12);
  });

  test('age retention compacts events older than retainAge on the next write, by the injected clock', async (t) => {
    const HOUR_MS = 3_600_000;
    const { plane, clock } = await openTestPlane(t, await engine.location(t), { retainAge: 24 * HOUR_MS }, engine);
    for (let i = 0; i < 3; i += 1) await plane.putItem(ML, 'base', 'config', json({ i }), 'a');
    clock.advance(23 * HOUR_MS);
    await plane.putItem(ML, 'base', 'config', json({ i: 3 }), 'a');
    assert.equal(await plane.oldestRetainedRevision(), 1, 'nothing is older than a day yet');
    clock.advance(2 * HOUR_MS);
    await plane.putItem(ML, 'base', 'config', json({ i: 4 }), 'a');
    assert.equal(await plane.oldestRetainedRevision(), 4, 'the three events from 25 hours ago are compacted');
    assert.deepEqual(
      (await plane.eventsAfter(0, 100)).map((e) => e.revision),
      [4, 5],
    );
  });

  test('the key-age policy rotates only keys older than keyMaxAge, by the injected clock', async (t) => {
    const { plane, clock } = await openTestPlane(t, await engine.location(t), { keyMaxAge: 90 * DAY_MS }, engine);
    await plane.putItem(ML, 'base', 'config', json(1), 'a');
    clock.advance(30 * DAY_MS);
    await plane.putItem({ namespace: 'younger/ns', name: 'x' }, 'base', 'config', json(1), 'a');
    assert.deepEqual(await plane.rotateDueKeys('policy'), []);
    clock.advance(60 * DAY_MS - 1);
    assert.deepEqual(await plane.rotateDueKeys('policy'), [], 'one millisecond short of 90 days');
    clock.advance(1);
    const rotated = await plane.rotateDueKeys('policy');
    assert.deepEqual(
      rotated.map((r) => [r.namespace, r.keyVersion]),
      [[ML.namespace, 2]],
    );
    assert.deepEqual(await plane.rotateDueKeys('policy'), [], 'the new key is young');
    clock.advance(30 * DAY_MS);
    assert.deepEqual(
      (await plane.rotateDueKeys('policy')).map((r) => r.namespace),
      ['younger/ns'],
    );
    assert.deepEqual(parse((await plane.getItem(ML, 'prod')).value), 1);
  });
  });
}

for (const engine of PLANE_ENGINES) domainSuite(engine);

test('no plaintext value or raw DEK is ever written under the data dir', async (t) => {
  const dir = await tempDir(t);
  const { plane } = await openTestPlane(t, dir);
  const secretText = Buffer.from('hunter2-s3cr3t-value-that-must-never-hit-disk');
  const configText = json({ apiKey: 'config-plaintext-marker-7f3a9c' });
  await plane.putItem(DB_PASSWORD, 'prod', 'secret', secretText, 'alice');
  await plane.putItem(ML, 'base', 'config', configText, 'alice');
  const before = await plane.getDeks(ML.namespace);
  await plane.rotateNamespace(ML.namespace, 'alice');
  await plane.putItem(DB_PASSWORD, 'dev', 'secret', Buffer.from('second-secret-marker-91b2'), 'alice');
  const after = await plane.getDeks(ML.namespace);
  assert.equal(after.currentVersion, 2);

  const needles = [
    { label: 'secret value', bytes: secretText },
    { label: 'config value', bytes: Buffer.from('config-plaintext-marker-7f3a9c') },
    { label: 'second secret', bytes: Buffer.from('second-secret-marker-91b2') },
    ...[...before.keys, ...after.keys].map((k) => ({ label: `DEK v${k.version}`, bytes: Buffer.from(k.dek) })),
  ];
  const open = await scanForNeedles(dir, [...needles, { label: 'item name (stored in clear)', bytes: Buffer.from('db-password') }]);
  assert.ok(open.files.some((f) => f.endsWith('-wal')), `the scan covers the WAL file (${open.files.join(', ')})`);
  assert.ok(open.hits.some((hit) => hit.endsWith('item name (stored in clear)')), 'the scanner does see stored bytes');
  assert.deepEqual(
    open.hits.filter((hit) => !hit.endsWith('item name (stored in clear)')),
    [],
  );
  await plane.close();
  const closed = await scanForNeedles(dir, needles);
  assert.deepEqual(closed.hits, []);
});

test('a ciphertext moved onto another row fails authentication; other items still read', async (t) => {
  const dir = await tempDir(t);
  const { plane, logs } = await openTestPlane(t, dir);
  const other = { namespace: 'production/ml-service', name: 'api-key' };
  await plane.putItem(DB_PASSWORD, 'prod', 'secret', Buffer.from('pw-one'), 'a');
  await plane.putItem(other, 'prod', 'secret', Buffer.from('pw-two'), 'a');
  await plane.putItem(ML, 'prod', 'config', json({ ok: true }), 'a');

  // Raw SQL, as an attacker with write access to the database file would.
  const db = new DatabaseSync(join(dir, SQLITE_FILE_NAME));
  db.prepare(
    `UPDATE versions SET iv = src.iv, ciphertext = src.ciphertext, tag = src.tag
       FROM (SELECT iv, ciphertext, tag FROM versions WHERE name = 'api-key') AS src
      WHERE versions.name = 'db-password'`,
  ).run();
  db.close();

  await assert.rejects(plane.getItem(DB_PASSWORD, 'prod'), (err: unknown) => err instanceof AppError && err.code === 'decryption_failed' && err.httpStatus === 500);
  assert.equal((await plane.getItem(other, 'prod')).value.toString(), 'pw-two');
  assert.deepEqual(parse((await plane.getItem(ML, 'prod')).value), { ok: true });
  assert.match(logs.text, /failed authentication/);
  assert.doesNotMatch(logs.text, /pw-one|pw-two/);

  // Rotation skips the damaged row instead of failing the namespace.
  await plane.rotateNamespace(DB_PASSWORD.namespace, 'a');
  assert.equal((await plane.getItem(other, 'prod')).value.toString(), 'pw-two');
  await assert.rejects(plane.getItem(DB_PASSWORD, 'prod'), hasCode('decryption_failed'));
});

function envFor(i: number): string {
  return TEST_ENVIRONMENTS[i % TEST_ENVIRONMENTS.length] as string;
}

test('audit entries are stored without values and backup copies a readable database', async (t) => {
  const dir = await tempDir(t);
  const kekText = randomKekBase64();
  const { plane } = await openTestPlane(t, dir, { kek: kekOf(kekText) });
  await plane.putItem(DB_PASSWORD, 'prod', 'secret', Buffer.from('pw-in-backup'), 'alice');
  await Promise.all([
    plane.audit({ subject: 'alice', action: 'read', target: 'production/ml-service/db-password', outcome: 'ok' }),
    plane.audit({ subject: 'mallory', action: 'denied', target: 'production/ml-service', outcome: 'denied', detail: 'no binding' }),
  ]);

  const backupDir = await tempDir(t, 'cs-backup-');
  await plane.backup(join(backupDir, 'snapshot.db'));
  await copyFile(join(backupDir, 'snapshot.db'), join(backupDir, SQLITE_FILE_NAME));
  const restored = await openTestPlane(t, backupDir, { kek: kekOf(kekText) });
  assert.equal((await restored.plane.getItem(DB_PASSWORD, 'prod')).value.toString(), 'pw-in-backup');

  const db = new DatabaseSync(join(dir, SQLITE_FILE_NAME), { readOnly: true });
  const rows = db.prepare('SELECT subject, action, target, outcome, detail FROM audit_log ORDER BY id').all();
  db.close();
  assert.deepEqual(
    rows.map((r) => ({ ...r })),
    [
      { subject: 'alice', action: 'read', target: 'production/ml-service/db-password', outcome: 'ok', detail: '' },
      { subject: 'mallory', action: 'denied', target: 'production/ml-service', outcome: 'denied', detail: 'no binding' },
    ],
  );
});

test('KEK providers accept exactly 32 bytes of base64 and bind wrapped keys to their context', async (t) => {
  assert.throws(() => kekFromBase64('not base64!!', 'CONFIG_SIDECAR_KEK'), (err: unknown) => err instanceof SettingError && /CONFIG_SIDECAR_KEK/.test(err.message));
  assert.throws(() => kekFromBase64(Buffer.alloc(16, 1).toString('base64'), '--kek-file'), /16 bytes, it must be exactly 32/);
  const text = randomKekBase64();
  const a = kekFromBase64(`${text}\n`, 'X');
  const b = kekFromBase64(text, 'X');
  assert.equal(a.id, b.id, 'the id is a stable fingerprint');
  assert.match(a.id, /^local:[0-9a-f]{16}$/);
  assert.notEqual(a.id, kekFromBase64(randomKekBase64(), 'X').id);
  const dek = Buffer.alloc(32, 7);
  const wrapped = await a.wrap(dek, 'dek|a#1');
  assert.ok(!wrapped.includes(dek));
  assert.deepEqual(await b.unwrap(wrapped, 'dek|a#1'), dek);
  await assert.rejects(b.unwrap(wrapped, 'dek|b#1'), hasCode('decryption_failed'));
  await assert.rejects(kekFromBase64(randomKekBase64(), 'X').unwrap(wrapped, 'dek|a#1'), hasCode('decryption_failed'));

  const dir = await tempDir(t);
  const { writeFile } = await import('node:fs/promises');
  await writeFile(join(dir, 'kek'), `${text}\n`, { mode: 0o600 });
  assert.equal(loadLocalKek({ file: join(dir, 'kek'), env: {} })?.id, a.id);
  assert.equal(loadLocalKek({ env: { CONFIG_SIDECAR_KEK: text } })?.id, a.id);
  assert.equal(loadLocalKek({ env: {} }), undefined);
  assert.throws(() => loadLocalKek({ file: join(dir, 'missing'), env: {} }), /--kek-file/);
});

test('unwrapped DEKs are zero-filled on close, and callers zero-filling their copies breaks nothing', async (t) => {
  const real = kekOf(randomKekBase64());
  const unwrapped: Buffer[] = [];
  // Records every plaintext DEK the control plane receives from its KEK.
  const recordingKek: KekProvider = {
    id: real.id,
    wrap: (dek, context) => real.wrap(dek, context),
    unwrap: async (wrapped, context) => {
      const dek = await real.unwrap(wrapped, context);
      unwrapped.push(dek);
      return dek;
    },
  };
  const dir = await tempDir(t);
  const first = await openTestPlane(t, dir, { kek: recordingKek });
  await first.plane.putItem(DB_PASSWORD, 'prod', 'secret', Buffer.from('pw'), 'a');
  await first.plane.close();
  const { plane } = await openTestPlane(t, dir, { kek: recordingKek });
  const deks = await plane.getDeks(DB_PASSWORD.namespace);
  zeroize(...deks.keys.map((k) => k.dek));
  assert.equal((await plane.getItem(DB_PASSWORD, 'prod')).value.toString(), 'pw', 'the cache kept its own copy');
  assert.ok(unwrapped.length > 0);
  assert.ok(unwrapped.some((dek) => dek.some((byte) => byte !== 0)), 'still in use while open');
  await plane.rotateNamespace(DB_PASSWORD.namespace, 'a');
  assert.equal((await plane.getItem(DB_PASSWORD, 'prod')).value.toString(), 'pw');
  assert.ok(unwrapped.every((dek) => dek.every((byte) => byte === 0)), 'the rotation dropped (zero-filled) the older key versions held unwrapped');
  await plane.close();
  assert.ok(
    unwrapped.every((dek) => dek.every((byte) => byte === 0)),
    'every unwrapped DEK is zero-filled after close',
  );
});

test('after a KEK rotation no DEK wrapped by the old KEK remains anywhere under the data dir', async (t) => {
  const dir = await tempDir(t);
  const { plane } = await openTestPlane(t, dir);
  for (let i = 0; i < 5; i += 1) await plane.putItem({ namespace: `team${i}/svc`, name: 'pw' }, 'base', 'secret', Buffer.from(`pw${i}`), 'a');
  await plane.rotateNamespace('team0/svc', 'a');
  const db = new DatabaseSync(join(dir, SQLITE_FILE_NAME), { readOnly: true });
  const oldWrapped = db.prepare('SELECT namespace, version, wrapped FROM deks').all();
  db.close();
  const needles = oldWrapped.map((row) => ({ label: `${String(row.namespace)}#${String(row.version)}`, bytes: Buffer.from(row.wrapped as Uint8Array) }));
  assert.equal(needles.length, 6);
  assert.equal((await scanForNeedles(dir, needles)).hits.length, 6, 'the scanner finds the current wrapped keys');

  await plane.rotateKek(kekOf(randomKekBase64()));
  assert.deepEqual((await scanForNeedles(dir, needles)).hits, [], 'while the server still runs');
  assert.equal((await plane.getItem({ namespace: 'team3/svc', name: 'pw' }, 'prod')).value.toString(), 'pw3');
});
