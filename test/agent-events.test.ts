/**
 * Unit tests of the event applier with a real cache and hub on a ManualClock
 * (the loader is scripted): a change refetches a hot key at once, a key
 * rotation keeps serving and fetches only the new data key (jittered), a
 * resync drops everything and reloads the prefetch set, and the applied
 * revision follows the stream.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../src/shared/clock.ts';
import { createLogger } from '../src/shared/logger.ts';
import { generateEphemeralKeyPair, generateTransportKeyPair, newDek, parseTransportPublicKey, wrapDek, zeroize, type TransportKeyPair } from '../src/shared/crypto.ts';
import type { DeksResponse } from '../src/shared/protocol.ts';
import type { ItemRef } from '../src/shared/paths.ts';
import { AppliedEventsHub, type AppliedEvent } from '../src/agent/applied-events.ts';
import { createAgentMetrics } from '../src/agent/agent-metrics.ts';
import { DekStore } from '../src/agent/dek-store.ts';
import { EventApplier } from '../src/agent/event-applier.ts';
import type { Upstream } from '../src/agent/upstream.ts';
import { release, ValueCache, type Loader } from '../src/agent/value-cache.ts';

const REF: ItemRef = { namespace: 'production/ml', name: 'db' };
const JITTER_MS = 1_000;

function setup(keys?: KeyServer): { clock: ManualClock; applier: EventApplier; cache: ValueCache; hub: AppliedEventsHub; loads: string[]; events: AppliedEvent[]; deks: DekStore; transport: TransportKeyPair } {
  const clock = new ManualClock();
  const loads: string[] = [];
  let version = 0;
  const loader: Loader = async (ref) => {
    loads.push(ref.name);
    version += 1;
    return { kind: 'secret', version, revision: version, etag: `"${version}"`, plaintext: Buffer.from(`${ref.name}-v${version}`) };
  };
  const cache = new ValueCache({ loader, clock, ttl: 3_600_000, maxStale: 60_000, maxEntries: 100, maxBytes: 1 << 20, streamDownSince: () => undefined });
  const hub = new AppliedEventsHub();
  const events: AppliedEvent[] = [];
  hub.setFloor(0);
  const sub = hub.subscribe({});
  void (async () => {
    for await (const e of sub) events.push(e);
  })();
  const upstream: Upstream = {
    fetchEnvelope: () => Promise.reject(new Error('unused')),
    fetchRingEnvelope: () => Promise.reject(new Error('unused')),
    fetchDeks: (namespace, publicKey) => (keys ? keys.fetch(namespace, publicKey) : Promise.reject(new Error('unused'))),
    close: async () => {},
  };
  const transport = generateTransportKeyPair();
  const deks = new DekStore(upstream, transport);
  const applier = new EventApplier({
    cache,
    deks,
    hub,
    prefixes: () => ['production/ml'],
    prefetch: () => [REF],
    env: 'prod',
    clock,
    jitterMs: JITTER_MS,
    random: () => 0.5,
    metrics: createAgentMetrics({ entries: () => cache.size, bytes: () => cache.bytes }),
    logger: createLogger({ component: 'test', level: 'silent' }),
  });
  return { clock, applier, cache, hub, loads, events, deks, transport };
}

/** The server's data keys for one namespace, by version, as POST /v1/deks wraps them; counts the calls and can hold one. */
class KeyServer {
  readonly versions = new Map<number, Buffer>([[1, newDek()]]);
  fetches = 0;
  #hold: Promise<void> | undefined;

  rotate(): number {
    const version = this.versions.size + 1;
    this.versions.set(version, newDek());
    return version;
  }

  /** The next fetch answers with the keys of the moment it was asked, once `release` is called. */
  hold(): () => void {
    let release = (): void => {};
    this.#hold = new Promise((resolve) => {
      release = resolve;
    });
    return release;
  }

  async fetch(namespace: string, publicKey: string): Promise<DeksResponse> {
    this.fetches += 1;
    const ephemeral = generateEphemeralKeyPair();
    const recipient = parseTransportPublicKey(publicKey);
    const keys = [...this.versions].map(([version, dek]) => ({ version, ...wrapDek(dek, recipient, ephemeral, { namespace, keyVersion: version }) }));
    const hold = this.#hold;
    this.#hold = undefined;
    await hold;
    return { namespace, keyId: NS, currentVersion: keys.length, serverPublicKey: ephemeral.publicKeyBase64, keys };
  }
}

const NS = 'production/ml';

const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function read(cache: ValueCache, ref: ItemRef = REF): Promise<string> {
  const r = await cache.read(ref, 'prod');
  const text = r.value.plaintext.toString();
  release(r.value);
  return text;
}

test('a fresh start adopts the first heartbeat revision; events and bookmarks advance it', () => {
  const { applier } = setup();
  assert.deepEqual(applier.startFrom(), { kind: 'now' });
  applier.apply({ type: 'heartbeat', revision: 40, currentRevision: 40, intervalMs: 1_000, storeId: 's1' });
  assert.equal(applier.appliedRevision, 40);
  applier.apply({ type: 'itemChanged', revision: 41, namespace: 'production/ml', name: 'x', kind: 'secret', version: 1, env: 'base', digest: 'aa' });
  assert.deepEqual(applier.position, { storeId: 's1', revision: 41, digest: 'aa' });
  applier.apply({ type: 'heartbeat', revision: 45, currentRevision: 45, intervalMs: 1_000, storeId: 's1', digest: 'bb' });
  assert.deepEqual(applier.position, { storeId: 's1', revision: 45, digest: 'bb' }, 'a heartbeat is a bookmark: nothing in our prefixes changed up to 45');
  assert.equal(applier.serverRevision, 45);
});

test('a change refetches a hot key at once and announces it after invalidating', async () => {
  const { applier, cache, loads, events } = setup();
  assert.equal(await read(cache), 'db-v1');
  applier.apply({ type: 'itemChanged', revision: 2, namespace: 'production/ml', name: 'db', kind: 'secret', version: 2, env: 'prod' });
  assert.deepEqual(loads, ['db', 'db'], 'refetched without waiting for a reader');
  await settle();
  assert.equal(await read(cache), 'db-v2');
  assert.deepEqual(events.map((e) => [e.type, e.name, e.revision]), [['changed', 'db', 2]]);
});

test('a key rotation keeps every value, drops the older held keys, and fetches the new data key once after the jitter delay', async () => {
  // Before: every hot value was refetched (a request per key) and the held keys dropped, so the change after a rotation waited on a fetch of every key version.
  const keys = new KeyServer();
  const { applier, cache, clock, loads, events, deks } = setup(keys);
  await read(cache);
  zeroize(await deks.key(NS, NS, 1));
  assert.equal(keys.fetches, 1);
  const version = keys.rotate();
  applier.apply({ type: 'keyRotated', revision: 3, namespace: NS, keyVersion: version });
  assert.equal(await read(cache), 'db-v1', 'plaintext is unchanged by re-encryption: still served');
  // Issue 20: the rotation re-sealed every current value, so no older version stays in memory (after retire-previous the server destroyed it).
  assert.deepEqual(deks.heldVersions()[NS], [], 'the older key version is dropped on the event');
  assert.equal(keys.fetches, 1, 'dropping it costs no fetch');
  clock.advance(JITTER_MS * 0.5);
  await settle();
  assert.equal(keys.fetches, 2, 'the new key is fetched at the jittered time');
  assert.deepEqual(loads, ['db'], 'no value is refetched: plaintext and ETag are unchanged');
  zeroize(await deks.key(NS, NS, version));
  assert.equal(keys.fetches, 2, 'the change after the rotation opens with the prefetched key');
  assert.deepEqual(events.map((e) => [e.type, e.version]), [['rotated', 2]]);
});

test('a key fetch in flight when a rotation lands is not trusted for the new version', async () => {
  const keys = new KeyServer();
  const { applier, deks } = setup(keys);
  const release = keys.hold();
  const before = deks.key(NS, NS, 1);
  const version = keys.rotate();
  applier.apply({ type: 'keyRotated', revision: 3, namespace: NS, keyVersion: version });
  // The inline layers of the next change name the new version before the jittered prefetch ran.
  const after = deks.key(NS, NS, version);
  release();
  zeroize(await before, await after);
  assert.equal(keys.fetches, 2, 'the new version is fetched anew, not read from the answer that predates it');
});

test('a resync drops everything, announces it, and reloads the prefetch set spread over the jitter', async () => {
  const { applier, cache, clock, loads, events } = setup();
  await read(cache, { namespace: 'production/ml', name: 'other' });
  applier.apply({ type: 'resyncRequired', revision: 90, oldestRevision: 50, currentRevision: 90, reason: 'compacted' });
  assert.equal(cache.size, 0);
  assert.equal(applier.appliedRevision, 90);
  await settle();
  assert.deepEqual(events.map((e) => [e.type, e.reason]), [['resync', 'server']]);
  clock.advance(JITTER_MS);
  await settle();
  assert.deepEqual(loads.slice(1).sort(), ['db', 'other'], 'prefetch set and hot keys reloaded');
});
