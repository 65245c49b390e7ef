/**
 * Key rings and retiring data keys (issue 20) in the control plane's domain
 * layer, on SQLite and on PostgreSQL: a ring keeps each version that stops
 * being current readable for the item's grace (ManualClock, no sleeping),
 * `revokePrevious` ends it at once, pruning keeps ring members, agents are
 * offered only the key versions current values and ring members use, and a
 * rotation with `retirePrevious` re-seals history and destroys the older
 * wrapped keys in the store.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import { zeroize } from '../src/shared/crypto.ts';
import { SQLITE_FILE_NAME } from '../src/server/store/sqlite-store.ts';
import type { ControlPlane } from '../src/server/control-plane.ts';
import { openTestPlane, scanForNeedles, type PlaneEngine } from './helpers/store-fixtures.ts';
import { PLANE_ENGINES } from './helpers/store-engines.ts';

const HOUR = 3_600_000;
const KEY = { namespace: 'production/auth', name: 'signing-key' };
const OTHER = { namespace: 'production/auth', name: 'db-password' };

const text = (b: Buffer): string => {
  const out = b.toString('utf8');
  zeroize(b);
  return out;
};

async function ringOf(plane: ControlPlane, ref = KEY, env = 'prod'): Promise<{ current: [number, string]; previous: Array<[number, string]>; etag: string }> {
  const ring = await plane.getRing(ref, env);
  return { current: [ring.current.version, text(ring.current.value)], previous: ring.previous.map((p) => [p.version, text(p.value)]), etag: ring.etag };
}

/** The (namespace, version) rows of the deks table, read straight from the database. */
async function storedDekVersions(engine: PlaneEngine, location: string, namespace: string): Promise<number[]> {
  if (engine.name === 'sqlite') {
    const db = new DatabaseSync(join(location, SQLITE_FILE_NAME), { readOnly: true });
    try {
      return (db.prepare('SELECT version FROM deks WHERE namespace = ? ORDER BY version').all(namespace) as Array<{ version: number }>).map((r) => Number(r.version));
    } finally {
      db.close();
    }
  }
  const client = new pg.Client({ connectionString: location });
  await client.connect();
  try {
    return (await client.query('SELECT version FROM deks WHERE namespace = $1 ORDER BY version', [namespace])).rows.map((r: { version: string }) => Number(r.version));
  } finally {
    await client.end();
  }
}

function suite(engine: PlaneEngine): void {
  const skip = engine.skip();
  describe(`key rings on ${engine.name}`, { skip: skip ?? false }, () => {
    after(() => engine.teardown());

    test('a ring item written three times with a 1h grace serves current + two previous; after the grace only current; revokePrevious drops them at once', async (t) => {
      const { plane, clock } = await openTestPlane(t, await engine.location(t), { maxVersionsPerItem: 2 }, engine);
      await plane.putItem(KEY, 'prod', 'secret', Buffer.from('k1'), 'alice', { grace: HOUR });
      clock.advance(60_000);
      await plane.putItem(KEY, 'prod', 'secret', Buffer.from('k2'), 'alice');
      clock.advance(60_000);
      await plane.putItem(KEY, 'prod', 'secret', Buffer.from('k3'), 'alice');
      const ring = await ringOf(plane);
      assert.deepEqual(ring.current, [3, 'k3']);
      assert.deepEqual(ring.previous, [[2, 'k2'], [1, 'k1']], 'newest first; pruning (max 2 versions) kept the ring members');
      const full = await plane.getRing(KEY, 'prod');
      assert.equal(full.previous[0]?.retiredAt, clock.now(), 'v2 stopped being current when v3 was written');
      assert.equal(full.previous[0]?.expiresAt, clock.now() + HOUR);
      zeroize(full.current.value, ...full.previous.map((p) => p.value));
      assert.equal(text((await plane.getItem(KEY, 'prod')).value), 'k3', 'a plain read is unchanged');

      clock.advance(HOUR - 60_000);
      assert.deepEqual((await ringOf(plane)).previous, [[2, 'k2']], 'v1 retired an hour ago: out of the ring');
      clock.advance(60_000);
      const aged = await ringOf(plane);
      assert.deepEqual(aged.previous, [], 'after the clock passes the grace, only current');
      assert.notEqual(aged.etag, ring.etag, 'the ring etag changes with its membership');

      await plane.putItem(KEY, 'prod', 'secret', Buffer.from('k4'), 'alice');
      await plane.putItem(KEY, 'prod', 'secret', Buffer.from('k5'), 'alice');
      assert.deepEqual((await ringOf(plane)).previous, [[4, 'k4'], [3, 'k3']]);
      await plane.putItem(KEY, 'prod', 'secret', Buffer.from('k6'), 'alice', { revokePrevious: true });
      assert.deepEqual(await ringOf(plane).then((r) => [r.current, r.previous]), [[6, 'k6'], []], 'revokePrevious ends every grace at once');
      await plane.putItem(KEY, 'prod', 'secret', Buffer.from('k7'), 'alice');
      assert.deepEqual((await ringOf(plane)).previous, [[6, 'k6']], 'the ring (1h) goes on for later versions');
      await plane.putItem(KEY, 'prod', 'secret', Buffer.from('k8'), 'alice', { grace: 0 });
      assert.deepEqual((await ringOf(plane)).previous, [], 'ringGrace 0 turns the ring off');
      assert.deepEqual((await ringOf(plane, OTHER).catch((err: Error) => err.message)), `${OTHER.namespace}/${OTHER.name} does not exist.`);
      await plane.putItem(KEY, 'prod', 'secret', Buffer.from('k9'), 'alice', { grace: HOUR });
      await plane.deleteItem(KEY, undefined, 'alice');
      await plane.putItem(KEY, 'prod', 'secret', Buffer.from('new-1'), 'alice');
      await plane.putItem(KEY, 'prod', 'secret', Buffer.from('new-2'), 'alice');
      assert.deepEqual((await ringOf(plane)).previous, [], 'a deleted item\'s ring does not carry over to an item written again under its name');
    });

    test('a config ring merges each previous version with the current less specific layers; a change-set entry sets the grace', async (t) => {
      const { plane } = await openTestPlane(t, await engine.location(t), {}, engine);
      const ref = { namespace: 'production/auth', name: 'jwks' };
      await plane.putItem(ref, 'base', 'config', Buffer.from('{"alg":"ES256"}'), 'alice');
      await plane.writeChangeSet([{ op: 'put', ref, env: 'prod', kind: 'config', value: Buffer.from('{"kid":"a"}'), ring: { grace: HOUR } }], 'alice');
      await plane.writeChangeSet([{ op: 'put', ref, env: 'prod', kind: 'config', value: Buffer.from('{"kid":"b"}') }], 'alice');
      const ring = await ringOf(plane, ref);
      assert.deepEqual(JSON.parse(ring.current[1]), { alg: 'ES256', kid: 'b' });
      assert.deepEqual(ring.previous.map(([v, value]) => [v, JSON.parse(value)]), [[2, { alg: 'ES256', kid: 'a' }]]);
      const envelope = await plane.getRingEnvelope(ref, 'prod');
      assert.deepEqual(envelope.previous.map((p) => [p.version, p.layers.map((l) => l.version)]), [[2, [1, 2]]], 'the agent gets the layers that make each previous value');
    });

    test('agents are offered only the key versions current values and ring members use; retirePrevious re-seals history and destroys the old wrapped keys', async (t) => {
      const location = await engine.location(t);
      const { plane, clock } = await openTestPlane(t, location, {}, engine);
      await plane.putItem(KEY, 'prod', 'secret', Buffer.from('old-1'), 'alice', { grace: HOUR });
      await plane.putItem(OTHER, 'prod', 'secret', Buffer.from('pw-1'), 'alice');
      await plane.putItem(KEY, 'prod', 'secret', Buffer.from('new-2'), 'alice');
      await plane.putItem(OTHER, 'prod', 'secret', Buffer.from('pw-2'), 'alice');
      // Re-seals the current values only: the ring member old-1 and OTHER's history stay under key 1.
      await plane.rotateNamespace(KEY.namespace, 'ops');
      const versions = async (): Promise<number[]> => {
        const set = await plane.getDeks(KEY.namespace);
        zeroize(...set.keys.map((k) => k.dek));
        return set.keys.map((k) => k.version);
      };
      assert.deepEqual(await versions(), [1, 2], 'v1 still seals the ring member old-1 (history row of OTHER does not count)');
      clock.advance(HOUR);
      assert.deepEqual(await versions(), [2], 'the ring member aged out: key 1 is no longer sent');
      assert.deepEqual(await storedDekVersions(engine, location, KEY.namespace), [1, 2], 'a plain rotation keeps old keys for history');

      const rotated = await plane.rotateNamespace(KEY.namespace, 'ops', { retirePrevious: true });
      assert.equal(rotated.keyVersion, 3);
      assert.deepEqual(rotated.retiredVersions, [1, 2]);
      assert.equal(rotated.resealed, 4, 'every row, history included');
      assert.deepEqual(await storedDekVersions(engine, location, KEY.namespace), [3], 'the old wrapped keys are gone from the store');
      assert.deepEqual(await versions(), [3]);
      // History still reads: a rollback opens the old row, now sealed under key 3.
      await plane.rollback(OTHER, 1, 'alice');
      assert.equal(text((await plane.getItem(OTHER, 'prod')).value), 'pw-1');
      assert.deepEqual((await plane.history(KEY)).versions.map((v) => v.version), [1, 2]);
      await plane.putItem(KEY, 'prod', 'secret', Buffer.from('new-3'), 'alice');
      assert.deepEqual((await ringOf(plane)).previous, [[2, 'new-2']], 'ring members read under the new key');
    });
  });
}

for (const engine of PLANE_ENGINES) suite(engine);

test('on SQLite no copy of a retired wrapped key survives in the data dir (secure_delete, WAL truncated)', async (t) => {
  const { sqlitePlane } = await import('./helpers/store-fixtures.ts');
  const location = await sqlitePlane.location(t);
  const { plane } = await openTestPlane(t, location);
  await plane.putItem(KEY, 'prod', 'secret', Buffer.from('v'), 'alice');
  const db = new DatabaseSync(join(location, SQLITE_FILE_NAME), { readOnly: true });
  const wrapped = (db.prepare('SELECT wrapped FROM deks WHERE namespace = ? AND version = 1').get(KEY.namespace) as { wrapped: Uint8Array }).wrapped;
  db.close();
  const needle = Buffer.from(wrapped);
  assert.equal((await scanForNeedles(location, [{ label: 'wrapped v1', bytes: needle }])).hits.length > 0, true, 'the scan finds the key while it is stored');
  await plane.rotateNamespace(KEY.namespace, 'ops', { retirePrevious: true });
  assert.deepEqual((await scanForNeedles(location, [{ label: 'wrapped v1', bytes: needle }])).hits, []);
});
