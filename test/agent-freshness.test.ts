/**
 * Unit tests of the freshness rules the event applier owns, with the real
 * cache, DEK store and applied-events hub on a ManualClock (the loader is
 * scripted): positions (now / after, bookmarks, resyncs, a new store id), a
 * start from `now` superseding fills and cached values and announcing what
 * changed, and change events applied from their inline layers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../src/shared/clock.ts';
import { AppError } from '../src/shared/errors.ts';
import { createLogger } from '../src/shared/logger.ts';
import { generateTransportKeyPair } from '../src/shared/crypto.ts';
import type { ItemRef } from '../src/shared/paths.ts';
import { AppliedEventsHub, type AppliedEvent } from '../src/agent/applied-events.ts';
import { createAgentMetrics } from '../src/agent/agent-metrics.ts';
import { DekStore } from '../src/agent/dek-store.ts';
import { EventApplier } from '../src/agent/event-applier.ts';
import type { Upstream } from '../src/agent/upstream.ts';
import { release, ValueCache, type LoadedValue, type Loader } from '../src/agent/value-cache.ts';
import { SealedKeyring } from './helpers/sealed-keyring.ts';

const NS = 'production/ml';
const REF: ItemRef = { namespace: NS, name: 'db' };
const OTHER: ItemRef = { namespace: NS, name: 'other' };
const JITTER_MS = 1_000;

interface Call {
  readonly ref: ItemRef;
  readonly env: string;
  resolve(v: LoadedValue): void;
  reject(e: unknown): void;
}

const value = (text: string, version: number): LoadedValue => ({ kind: 'secret', version, revision: version, etag: `"${version}"`, plaintext: Buffer.from(text) });

function setup() {
  const clock = new ManualClock();
  const calls: Call[] = [];
  const loader: Loader = (ref, env) => new Promise<LoadedValue>((resolve, reject) => calls.push({ ref, env, resolve, reject }));
  const keyring = new SealedKeyring();
  const keyPair = generateTransportKeyPair();
  const upstream: Upstream = {
    fetchEnvelope: () => Promise.reject(new Error('unused')),
    fetchRingEnvelope: () => Promise.reject(new Error('unused')),
    fetchDeks: async (namespace, publicKey) => keyring.fetchDeks(namespace, publicKey),
    close: async () => {},
  };
  const deks = new DekStore(upstream, keyPair);
  const hub = new AppliedEventsHub();
  const events: AppliedEvent[] = [];
  const sub = hub.subscribe({});
  void (async () => {
    for await (const e of sub) events.push(e);
  })();
  const late: { applier?: EventApplier } = {};
  const down = { since: undefined as number | undefined };
  const cache = new ValueCache({
    loader,
    clock,
    ttl: 3_600_000,
    maxStale: 60_000,
    maxEntries: 100,
    maxBytes: 1 << 20,
    streamDownSince: () => down.since,
    onChange: (v) => late.applier?.valueChanged(v),
  });
  const applier = new EventApplier({
    cache,
    deks,
    hub,
    prefixes: () => [NS],
    prefetch: () => [],
    env: 'prod',
    clock,
    jitterMs: JITTER_MS,
    random: () => 0.5,
    metrics: createAgentMetrics({ entries: () => cache.size, bytes: () => cache.bytes }),
    logger: createLogger({ component: 'test', level: 'silent' }),
  });
  late.applier = applier;
  return { clock, calls, cache, hub, events, applier, deks, keyring, down };
}

const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function readText(cache: ValueCache, ref: ItemRef = REF, env = 'prod'): Promise<string> {
  const r = await cache.read(ref, env);
  const text = r.value.plaintext.toString();
  release(r.value);
  return text;
}

/** Resolves the next pending loader call for (ref, env). */
async function answer(calls: Call[], ref: ItemRef, env: string, v: LoadedValue): Promise<void> {
  for (let i = 0; i < 20 && !calls.some((c) => c.ref.name === ref.name && c.env === env); i++) await settle();
  const index = calls.findIndex((c) => c.ref.name === ref.name && c.env === env);
  assert.ok(index >= 0, `a fetch of ${ref.name} in ${env} is pending`);
  const [call] = calls.splice(index, 1);
  call?.resolve(v);
  await settle();
}

test('finding 1: a store still at revision 0 resumes after (store, 0), never "now"', () => {
  const { applier } = setup();
  assert.deepEqual(applier.startFrom(), { kind: 'now' });
  applier.apply({ type: 'heartbeat', revision: 0, currentRevision: 0, intervalMs: 1_000, storeId: 's1' });
  assert.deepEqual(applier.startFrom(), { kind: 'after', position: { storeId: 's1', revision: 0, digest: '' } });
});

test('the first heartbeat of a resume moves nothing; later ones are bookmarks', () => {
  const { applier } = setup();
  applier.startFrom();
  applier.apply({ type: 'heartbeat', revision: 10, currentRevision: 10, intervalMs: 1_000, storeId: 's1', digest: '0a' });
  applier.startFrom();
  applier.apply({ type: 'heartbeat', revision: 30, currentRevision: 30, intervalMs: 1_000, storeId: 's1', digest: '1e' });
  assert.equal(applier.appliedRevision, 10, 'the replay after 10 has not arrived yet');
  applier.apply({ type: 'itemChanged', revision: 12, namespace: NS, name: 'x', kind: 'secret', version: 3, env: 'prod', digest: '0c' });
  applier.apply({ type: 'heartbeat', revision: 30, currentRevision: 30, intervalMs: 1_000, storeId: 's1', digest: '1e' });
  assert.deepEqual(applier.position, { storeId: 's1', revision: 30, digest: '1e' });
});

test('finding 2: a start from now supersedes a fill in flight, revalidates every (item, env) and announces what changed', async () => {
  const { applier, cache, calls, clock, events } = setup();
  // Before the stream exists: one value in the agent's env, one in a file item's own env, one fill in flight.
  const prod = readText(cache, REF, 'prod');
  await answer(calls, REF, 'prod', value('db-v1', 1));
  assert.equal(await prod, 'db-v1');
  const staging = readText(cache, REF, 'staging');
  await answer(calls, REF, 'staging', value('db-staging-v1', 1));
  assert.equal(await staging, 'db-staging-v1');
  const inFlight = readText(cache, OTHER, 'prod');
  await settle();

  applier.startFrom();
  applier.apply({ type: 'heartbeat', revision: 7, currentRevision: 7, intervalMs: 1_000, storeId: 's1' });
  assert.equal(cache.readCached(REF, 'prod'), undefined, 'a value from before the stream is not served as fresh');

  // The fill that was in flight answers with what it read before the stream: never stored, the reader refetches.
  await answer(calls, OTHER, 'prod', value('other-v1', 1));
  await answer(calls, OTHER, 'prod', value('other-v2', 2));
  assert.equal(await inFlight, 'other-v2');

  clock.advance(JITTER_MS);
  await answer(calls, REF, 'prod', value('db-v2', 2));
  await answer(calls, REF, 'staging', value('db-staging-v1', 1));
  assert.equal(await readText(cache, REF, 'prod'), 'db-v2');
  assert.deepEqual(
    events.filter((e) => e.type === 'changed').map((e) => [e.name, e.env, e.version]),
    [['db', 'prod', 2]],
    'the changed value is announced to files and SSE; the unchanged one is not',
  );
});

test('finding 6: a new store id drops values, data keys and remembered 404s, and adopts the new position', async () => {
  const { applier, cache, calls, deks, events } = setup();
  applier.startFrom();
  applier.apply({ type: 'heartbeat', revision: 50, currentRevision: 50, intervalMs: 1_000, storeId: 'old' });
  const r = readText(cache);
  await answer(calls, REF, 'prod', value('db-v1', 1));
  await r;
  const missing = cache.read(OTHER, 'prod');
  await settle();
  const call = calls.splice(0, 1)[0];
  call?.reject(new AppError('not_found'));
  await assert.rejects(missing, { code: 'not_found' });
  await deks.key(NS, 'k1', 1);
  assert.equal(deks.size, 1);

  applier.startFrom();
  applier.apply({ type: 'resyncRequired', revision: 3, oldestRevision: 0, currentRevision: 3, reason: 'store id mismatch', storeId: 'new' });
  assert.equal(cache.size, 0, 'values and negative entries dropped');
  assert.equal(deks.size, 0, 'the old store\'s data keys dropped');
  assert.deepEqual(applier.position, { storeId: 'new', revision: 3, digest: '' });
  assert.deepEqual(applier.startFrom(), { kind: 'after', position: { storeId: 'new', revision: 3, digest: '' } });
  await settle();
  assert.ok(events.some((e) => e.type === 'resync'), 'files and SSE are told to resync');
  // The 404 is asked again at once.
  const again = readText(cache, OTHER);
  await answer(calls, OTHER, 'prod', value('other-v1', 1));
  assert.equal(await again, 'other-v1');
});

test('a heartbeat from another store id (same stream) resyncs too', async () => {
  const { applier, cache, calls } = setup();
  applier.startFrom();
  applier.apply({ type: 'heartbeat', revision: 5, currentRevision: 5, intervalMs: 1_000, storeId: 'a' });
  const r = readText(cache);
  await answer(calls, REF, 'prod', value('db-v1', 1));
  await r;
  applier.apply({ type: 'heartbeat', revision: 2, currentRevision: 2, intervalMs: 1_000, storeId: 'b' });
  assert.equal(cache.size, 0);
  assert.deepEqual(applier.position, { storeId: 'b', revision: 2, digest: '' });
});

test('a change with inline layers is applied locally: one decrypt, merged per env, no refetch', async () => {
  const { applier, cache, calls, keyring } = setup();
  applier.startFrom();
  applier.apply({ type: 'heartbeat', revision: 1, currentRevision: 1, intervalMs: 1_000, storeId: 's1', environments: ['base', 'staging', 'prod'] });
  for (const env of ['prod', 'staging']) {
    const r = readText(cache, REF, env);
    await answer(calls, REF, env, { kind: 'config', version: 1, revision: 1, etag: '"1"', plaintext: Buffer.from('{"a":1}') });
    await r;
  }
  const layers = [
    keyring.sealLayer(NS, 'db', { env: 'base', version: 1, revision: 1 }, Buffer.from('{"a":1,"b":1}')),
    keyring.sealLayer(NS, 'db', { env: 'prod', version: 4, revision: 9 }, Buffer.from('{"b":2}')),
  ];
  applier.apply({ type: 'itemChanged', revision: 9, namespace: NS, name: 'db', kind: 'config', version: 4, env: 'prod', layers });
  assert.equal(await readText(cache, REF, 'prod'), '{"a":1,"b":2}');
  assert.equal(await readText(cache, REF, 'staging'), '{"a":1,"b":1}');
  assert.equal(calls.length, 0, 'no envelope fetch');
  assert.equal(keyring.deksFetched, 1, 'the data key fetched once (it was unknown)');
  const again = [keyring.sealLayer(NS, 'db', { env: 'base', version: 1, revision: 1 }, Buffer.from('{"a":1,"b":1}')), keyring.sealLayer(NS, 'db', { env: 'prod', version: 5, revision: 10 }, Buffer.from('{"b":3}'))];
  applier.apply({ type: 'itemChanged', revision: 10, namespace: NS, name: 'db', kind: 'config', version: 5, env: 'prod', layers: again });
  assert.equal(await readText(cache, REF, 'prod'), '{"a":1,"b":3}');
  assert.equal(keyring.deksFetched, 1, 'a known key version needs no request');
  const r = await cache.read(REF, 'prod');
  assert.equal(r.value.etag, '"1.5"', 'the ETag is the server\'s: contributing versions in chain order');
  release(r.value);
});
