/**
 * Secret bytes are zero-filled on the paths that used to drop them: the
 * unauthenticated output of `decipher.update` when the tag fails, values the
 * cache refuses as over its size, and the agent's data keys (a caller gets a
 * private copy, so an eviction never wipes a key in use and a caller never
 * holds the cache's own buffer). Unit tests of each module, fakes at the edge.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createDecipheriv, randomBytes } from 'node:crypto';
import { ManualClock } from '../src/shared/clock.ts';
import { generateTransportKeyPair, newDek, open, seal, valueAad, wrapDek } from '../src/shared/crypto.ts';
import { DekStore } from '../src/agent/dek-store.ts';
import type { Upstream } from '../src/agent/upstream.ts';
import { release, ValueCache, type Loader } from '../src/agent/value-cache.ts';

const isZero = (b: Buffer): boolean => b.every((x) => x === 0);

test('a failed tag check wipes the plaintext decipher.update already produced', (t) => {
  const dek = newDek();
  const id = { namespace: 'a/b', name: 'c', version: 1, env: 'prod', kind: 'secret', keyId: 'a/b', keyVersion: 1 } as const;
  const sealed = seal(dek, Buffer.from('the-secret-plaintext-'.repeat(8)), valueAad(id, 2));
  const proto = Object.getPrototypeOf(createDecipheriv('aes-256-gcm', dek, randomBytes(12))) as { update: (...a: unknown[]) => Buffer };
  const original = proto.update;
  const produced: Buffer[] = [];
  proto.update = function (this: unknown, ...args: unknown[]) {
    const out = original.apply(this, args);
    produced.push(out);
    return out;
  };
  t.after(() => {
    proto.update = original;
  });
  const tampered = { ...sealed, tag: Buffer.from(sealed.tag).fill(1) };
  assert.throws(() => open(dek, tampered, valueAad(id, 2)), /authentication/);
  assert.ok(produced.length > 0 && produced.some((b) => b.length > 0), 'update produced bytes');
  assert.ok(produced.every(isZero), 'every byte update handed out was zero-filled');
});

test('a value over the cache’s size limit is served once and zero-filled when its lease ends', async () => {
  const loader: Loader = async () => ({ kind: 'secret', version: 1, revision: 1, etag: '"1"', plaintext: Buffer.alloc(4096, 0x41) });
  const cache = new ValueCache({ loader, clock: new ManualClock(), ttl: 60_000, maxStale: 10_000, maxEntries: 10, maxBytes: 1024, streamDownSince: () => undefined });
  const result = await cache.read({ namespace: 'a/b', name: 'big' }, 'prod');
  assert.equal(result.value.plaintext.length, 4096);
  assert.ok(result.value.plaintext.every((b) => b === 0x41), 'the reader got the value');
  assert.equal(cache.size, 0, 'never stored');
  const buffers = [result.value.plaintext, result.value.json];
  release(result.value);
  await new Promise((resolve) => setImmediate(resolve));
  assert.ok(buffers.every(isZero), 'zero-filled after the last lease');
});

function dekUpstream(dek: Buffer): { upstream: Upstream; gate: { release: () => void; wait: Promise<void> } } {
  let releaseGate = (): void => {};
  const wait = new Promise<void>((resolve) => {
    releaseGate = resolve;
  });
  const gate = { release: () => releaseGate(), wait };
  const upstream: Upstream = {
    fetchEnvelope: () => Promise.reject(new Error('unused')),
    fetchRingEnvelope: () => Promise.reject(new Error('unused')),
    fetchDeks: async (namespace, publicKey) => {
      await gate.wait;
      const ephemeral = generateTransportKeyPair();
      const recipient = (await import('../src/shared/crypto.ts')).parseTransportPublicKey(publicKey);
      return {
        namespace,
        keyId: namespace,
        currentVersion: 1,
        serverPublicKey: ephemeral.publicKeyBase64,
        keys: [{ version: 1, ...wrapDek(dek, recipient, ephemeral, { namespace, keyVersion: 1 }) }],
      };
    },
    close: async () => {},
  };
  return { upstream, gate };
}

test('the data-key store hands out private copies: a rotation wipes its own keys, never the one a caller holds', async () => {
  const dek = newDek();
  const { upstream, gate } = dekUpstream(dek);
  gate.release();
  const store = new DekStore(upstream, generateTransportKeyPair());
  const first = await store.key('a/b', 'a/b', 1);
  const second = await store.key('a/b', 'a/b', 1);
  assert.deepEqual(first, dek);
  assert.notEqual(first.buffer, second.buffer, 'two callers never share a buffer');
  first.fill(0);
  assert.deepEqual(await store.key('a/b', 'a/b', 1), dek, 'a caller wiping its copy does not wipe the held key');
  store.invalidate('a/b');
  assert.deepEqual(second, dek, 'a rotation does not wipe a key a caller is still using');
});

test('a superseded data-key fetch still answers its waiters with a usable copy', async () => {
  const dek = newDek();
  const { upstream, gate } = dekUpstream(dek);
  const store = new DekStore(upstream, generateTransportKeyPair());
  const pending = store.key('a/b', 'a/b', 1);
  store.invalidate('a/b');
  gate.release();
  const key = await pending;
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(key, dek, 'the waiter’s copy survives the superseded set being wiped');
  assert.equal(store.size, 0, 'the superseded set was not kept');
});
