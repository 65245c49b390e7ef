import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateTransportKeyPair, newDek, open, seal, unwrapDek, valueAad, wrapDek, parseTransportPublicKey } from '../src/shared/crypto.ts';
import { AppError } from '../src/shared/errors.ts';
import { namespaceMatchesAny, namespaceMatcher, namespaceMatchesPrefix, parseItemPath, decodePathRemainder } from '../src/shared/paths.ts';
import { parseDuration, parseSize } from '../src/shared/units.ts';
import { ManualClock } from '../src/shared/clock.ts';
import { Backoff } from '../src/shared/backoff.ts';
import { mergeLayers } from '../src/shared/merge.ts';

test('sealed values open only under their own identity', () => {
  const dek = newDek();
  const id = { namespace: 'production/ml', name: 'db', version: 3, env: 'prod', kind: 'secret', keyId: 'production/ml', keyVersion: 1 } as const;
  const sealed = seal(dek, Buffer.from('s3cret'), valueAad(id, 2));
  assert.equal(open(dek, sealed, valueAad(id, 2)).toString(), 's3cret');
  assert.throws(() => open(dek, sealed, valueAad({ ...id, name: 'other' }, 2)), (e: unknown) => e instanceof AppError && e.code === 'decryption_failed');
  assert.throws(() => open(dek, sealed, valueAad({ ...id, version: 4 }, 2)), /authentication/);
  // v2 binds the env layer and the kind; v1 did not, and a v2 seal never opens as v1.
  assert.throws(() => open(dek, sealed, valueAad({ ...id, env: 'sandbox' }, 2)), /authentication/);
  assert.throws(() => open(dek, sealed, valueAad({ ...id, kind: 'config' }, 2)), /authentication/);
  assert.throws(() => open(dek, sealed, valueAad(id, 1)), /authentication/);
  const v1 = seal(dek, Buffer.from('old'), valueAad(id, 1));
  assert.equal(open(dek, v1, valueAad({ ...id, env: 'anything' }, 1)).toString(), 'old', 'v1 (still opened during the migration) ignores the env');
});

test('a wrapped DEK unwraps only for its namespace, version and recipient', () => {
  const agent = generateTransportKeyPair();
  const server = generateTransportKeyPair();
  const dek = newDek();
  const wrapped = wrapDek(dek, parseTransportPublicKey(agent.publicKeyBase64), server, { namespace: 'a/b', keyVersion: 2 });
  const binding = { namespace: 'a/b', keyVersion: 2, senderPublicKey: server.publicKeyBase64 };
  assert.deepEqual(unwrapDek(wrapped, agent, binding), dek);
  assert.throws(() => unwrapDek(wrapped, agent, { ...binding, namespace: 'a/c' }), /authentication/);
  assert.throws(() => unwrapDek(wrapped, agent, { ...binding, keyVersion: 1 }), /authentication/);
  assert.throws(() => unwrapDek(wrapped, generateTransportKeyPair(), binding), /authentication/);
});

test('item paths follow the segment rules and prefixes match whole segments', () => {
  assert.deepEqual(parseItemPath('production/ml-service/inference/db-password'), {
    namespace: 'production/ml-service/inference',
    name: 'db-password',
  });
  for (const bad of ['noslash', 'a/../b', 'A/b', 'a//b', '-a/b', `a/${'x'.repeat(64)}`, 'a/b/c/d/e/f/g/h/i/name']) {
    assert.throws(() => parseItemPath(bad), (e: unknown) => e instanceof AppError && e.code === 'invalid_path', bad);
  }
  assert.throws(() => decodePathRemainder('a%2Fb/c'), /encoded/);
  assert.ok(namespaceMatchesPrefix('production/ml', 'production/ml'));
  assert.ok(namespaceMatchesPrefix('production/ml/x', 'production/ml'));
  assert.ok(!namespaceMatchesPrefix('production/ml-admin', 'production/ml'));
});

test('a namespace matcher built once for some prefixes answers as namespaceMatchesAny for every namespace', () => {
  const prefixSets = [['production/ml'], ['production/ml/', 'staging'], ['a//'], [''], ['x', 'production']];
  const namespaces = ['production/ml', 'production/ml/x', 'production/ml-admin', 'production', 'productionx', 'staging/a', 'stagingx', 'a', 'a/b', 'ab', '', 'x/y'];
  for (const prefixes of prefixSets) {
    const matches = namespaceMatcher(prefixes);
    for (const namespace of namespaces) assert.equal(matches(namespace), namespaceMatchesAny(namespace, prefixes), `${namespace} under ${JSON.stringify(prefixes)}`);
  }
});

test('durations and sizes parse as documented', () => {
  assert.equal(parseDuration('30s'), 30_000);
  assert.equal(parseDuration('90d'), 90 * 86_400_000);
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('5 minutes'), undefined);
  assert.equal(parseSize('512KiB'), 512 * 1024);
  assert.equal(parseSize('64MiB'), 64 * 1024 * 1024);
  assert.equal(parseSize('lots'), undefined);
});

test('the manual clock fires due timers in order and only when advanced', () => {
  const clock = new ManualClock(0);
  const fired: string[] = [];
  clock.setTimeout(() => fired.push('b'), 200);
  clock.setTimeout(() => fired.push('a'), 100);
  const c = clock.setTimeout(() => fired.push('c'), 150);
  c.cancel();
  clock.advance(99);
  assert.deepEqual(fired, []);
  clock.advance(200);
  assert.deepEqual(fired, ['a', 'b']);
  assert.equal(clock.now(), 299);
});

test('backoff grows, is capped, and never returns zero', () => {
  const backoff = new Backoff({ baseMs: 100, capMs: 1000, random: () => 0.999 });
  const delays = Array.from({ length: 8 }, () => backoff.next());
  assert.deepEqual(delays.slice(0, 4), [99, 199, 399, 799]);
  assert.ok(delays.every((d) => d <= 1000 && d >= 1));
  assert.equal(new Backoff({ random: () => 0 }).next(), 1);
});

test('config overlays deep-merge from base to the most specific layer', () => {
  assert.deepEqual(mergeLayers([{ db: { host: 'a', port: 1 }, tags: [1] }, { db: { host: 'b' }, tags: [2] }]), {
    db: { host: 'b', port: 1 },
    tags: [2],
  });
});
