/**
 * Unit tests of the value cache alone (its loader is a scripted function):
 * coalescing, the fill/invalidate race, stale-if-error and max-stale on a
 * ManualClock, drops on 401/403/404, negative caching and zero-fill.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock, type Clock } from '../src/shared/clock.ts';
import { AppError } from '../src/shared/errors.ts';
import type { ItemRef } from '../src/shared/paths.ts';
import { ENTRY_OVERHEAD_BYTES, NEGATIVE_TTL_MS, RECENCY_INTERVAL_MS, release, ValueCache, variantKey, type CacheObserver, type LoadedValue, type Loader, type VariantMemo } from '../src/agent/value-cache.ts';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const REF: ItemRef = { namespace: 'production/ml', name: 'db-password' };
const TTL = 60_000;
const MAX_STALE = 10_000;

interface Pending {
  resolve: (v: LoadedValue) => void;
  reject: (e: unknown) => void;
}

/** A loader whose calls the test settles by hand. */
function scriptedLoader(): { loader: Loader; calls: Pending[]; next: () => Promise<Pending> } {
  const calls: Pending[] = [];
  const waiters: Array<(p: Pending) => void> = [];
  const loader: Loader = () =>
    new Promise<LoadedValue>((resolve, reject) => {
      const pending = { resolve, reject };
      calls.push(pending);
      waiters.shift()?.(pending);
    });
  return {
    loader,
    calls,
    next: () => {
      const ready = calls.find((c) => !(c as { taken?: boolean }).taken);
      if (ready) {
        (ready as { taken?: boolean }).taken = true;
        return Promise.resolve(ready);
      }
      return new Promise((resolve) =>
        waiters.push((p) => {
          (p as { taken?: boolean }).taken = true;
          resolve(p);
        }),
      );
    },
  };
}

const secret = (text: string, version = 1): LoadedValue => ({
  kind: 'secret',
  version,
  revision: version,
  etag: `"${version}"`,
  plaintext: Buffer.from(text),
});

function makeCache(loader: Loader, clock: ManualClock, down: { since: number | undefined } = { since: undefined }): ValueCache {
  return new ValueCache({
    loader,
    clock,
    ttl: TTL,
    maxStale: MAX_STALE,
    maxEntries: 100,
    maxBytes: 1024 * 1024,
    streamDownSince: () => down.since,
  });
}

async function readText(cache: ValueCache): Promise<{ text: string; source: string; stale: number }> {
  const result = await cache.read(REF, 'prod');
  const text = result.value.plaintext.toString();
  release(result.value);
  return { text, source: result.source, stale: result.staleSeconds };
}

test('200 concurrent misses for one key make one upstream fetch', async () => {
  const clock = new ManualClock();
  const script = scriptedLoader();
  const cache = makeCache(script.loader, clock);
  const reads = Array.from({ length: 200 }, () => readText(cache));
  (await script.next()).resolve(secret('v1'));
  const results = await Promise.all(reads);
  assert.equal(script.calls.length, 1);
  assert.ok(results.every((r) => r.text === 'v1'));
  assert.equal(results.filter((r) => r.source === 'miss').length, 1);
  assert.equal((await readText(cache)).source, 'hit');
});

test('a fetch in flight when an event lands is never stored or served', async () => {
  const clock = new ManualClock();
  const script = scriptedLoader();
  const cache = makeCache(script.loader, clock);
  const reader = readText(cache);
  const first = await script.next();
  // The event for the key lands while the old value is on its way back.
  cache.invalidate(REF);
  first.resolve(secret('old', 1));
  // The waiting reader fetches again instead of taking the superseded value.
  (await script.next()).resolve(secret('new', 2));
  assert.equal((await reader).text, 'new');
  assert.equal((await readText(cache)).text, 'new');
  assert.equal(script.calls.length, 2);
});

test('an invalidated entry is zero-filled and the next read refetches', async () => {
  const clock = new ManualClock();
  const script = scriptedLoader();
  const cache = makeCache(script.loader, clock);
  const reading = cache.read(REF, 'prod');
  (await script.next()).resolve(secret('v1'));
  const held = await reading;
  const buffer = held.value.plaintext;
  release(held.value);
  cache.invalidate(REF);
  assert.ok(buffer.every((b) => b === 0), 'dropped plaintext is zero-filled');
  const again = readText(cache);
  (await script.next()).resolve(secret('v2', 2));
  assert.equal((await again).text, 'v2');
});

test('a read through a variant memo answers the value that replaced the one it found, misses once the entry is gone, and keeps no value alive', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const clock = new ManualClock();
  const script = scriptedLoader();
  const cache = makeCache(script.loader, clock);
  const other = makeCache(script.loader, clock);
  const key = variantKey(REF, 'prod');
  const memo: VariantMemo = {};
  const viaMemo = (from: ValueCache): string | undefined => {
    const hit = from.readCached(REF, 'prod', key, memo);
    if (hit === undefined) return undefined;
    release(hit.value);
    return hit.value.plaintext.toString();
  };
  const fill = async (from: ValueCache, text: string, version: number): Promise<void> => {
    const reading = from.read(REF, 'prod');
    (await script.next()).resolve(secret(text, version));
    release((await reading).value);
  };
  await fill(cache, 'v1', 1);
  assert.equal(viaMemo(cache), 'v1');
  // A refetch replaces the entry the memo found (a TTL refresh, or an event's refetch).
  cache.refresh(REF, 'prod');
  (await script.next()).resolve(secret('v2', 2));
  await new Promise(setImmediate);
  assert.equal(viaMemo(cache), 'v2', 'the memo never answers a replaced entry');
  // Another cache read with the same memo (a reload, or a second agent in one process) answers its own value.
  await fill(other, 'other', 5);
  assert.equal(viaMemo(other), 'other');
  assert.equal(viaMemo(cache), 'v2');
  // Invalidated: the memo's entry is gone, so only a fetch may answer.
  const weak = new WeakRef((cache.peek(REF, 'prod') as { value: object }).value);
  cache.invalidate(REF);
  assert.equal(viaMemo(cache), undefined, 'a read through the memo misses once the entry is gone');
  // A WeakRef keeps its target until the current job ends.
  await new Promise(setImmediate);
  gc();
  assert.equal(weak.deref(), undefined, 'the memo must not keep a value the cache let go of (and its buffers) alive');
  cache.close();
  other.close();
});

test('a read through a variant memo keeps the cache\'s rules: stale-marked while the stream is down, a fetch past the TTL, LRU recency', async () => {
  // The memo only skips the key lookup; everything after it must be what a read by key gets.
  const clock = new ManualClock();
  const down: { since: number | undefined } = { since: undefined };
  const script = scriptedLoader();
  const cache = new ValueCache({ loader: script.loader, clock, ttl: TTL, maxStale: MAX_STALE, maxEntries: 2, maxBytes: 1024 * 1024, streamDownSince: () => down.since });
  const ref = (name: string): ItemRef => ({ namespace: 'a', name });
  const memos = new Map<string, VariantMemo>();
  const viaMemo = (name: string): { text: string; source: string } | undefined => {
    let memo = memos.get(name);
    if (memo === undefined) memos.set(name, (memo = {}));
    const hit = cache.readCached(ref(name), 'prod', variantKey(ref(name), 'prod'), memo);
    if (hit === undefined) return undefined;
    release(hit.value);
    return { text: hit.value.plaintext.toString(), source: hit.source };
  };
  const fill = async (name: string, version: number): Promise<void> => {
    const reading = cache.read(ref(name), 'prod');
    (await script.next()).resolve(secret(`${name}-${version}`, version));
    release((await reading).value);
  };
  await fill('hot', 1);
  assert.deepEqual(viaMemo('hot'), { text: 'hot-1', source: 'hit' });
  assert.deepEqual(viaMemo('hot'), { text: 'hot-1', source: 'hit' }, 'from the memo');
  // While the stream is down, the memo's entry is served marked stale, as a read by key would serve it.
  down.since = clock.now();
  assert.deepEqual(viaMemo('hot'), { text: 'hot-1', source: 'stale' });
  // ...and revalidated in the background: its answer replaces the entry the memo found.
  (await script.next()).resolve(secret('hot-2', 2));
  await new Promise(setImmediate);
  down.since = undefined;
  assert.deepEqual(viaMemo('hot'), { text: 'hot-2', source: 'hit' });
  // Read through its memo all along, the hot key outlives one only stored (eviction stays least-recently-used).
  clock.advance(1);
  await fill('cold', 1);
  for (let t = 0; t < 3 * RECENCY_INTERVAL_MS; t += RECENCY_INTERVAL_MS / 4) {
    clock.advance(RECENCY_INTERVAL_MS / 4);
    assert.equal(viaMemo('hot')?.text, 'hot-2');
  }
  await fill('new', 1);
  assert.ok(cache.peek(ref('hot'), 'prod') !== undefined && cache.peek(ref('cold'), 'prod') === undefined, 'the key read through its memo stays, the cold one is evicted');
  // Past the TTL only a fetch may answer, memo or not.
  clock.advance(TTL);
  assert.equal(viaMemo('hot'), undefined, 'past the TTL the memo answers nothing');
  cache.close();
});

test('a value being written is zero-filled only when its lease ends', async () => {
  const clock = new ManualClock();
  const script = scriptedLoader();
  const cache = makeCache(script.loader, clock);
  const reading = cache.read(REF, 'prod');
  (await script.next()).resolve(secret('v1'));
  const held = await reading;
  cache.invalidate(REF);
  assert.equal(held.value.plaintext.toString(), 'v1', 'still intact while leased');
  release(held.value);
  assert.ok(held.value.plaintext.every((b) => b === 0));
});

test('stream down: values are served stale-marked until max-stale, then refetched or refused', async () => {
  const clock = new ManualClock();
  const script = scriptedLoader();
  const down: { since: number | undefined } = { since: undefined };
  const cache = makeCache(script.loader, clock, down);
  const first = readText(cache);
  (await script.next()).resolve(secret('v1'));
  await first;
  down.since = clock.now();
  clock.advance(4_000);
  const stale = await readText(cache);
  assert.deepEqual([stale.text, stale.source, stale.stale], ['v1', 'stale', 4]);
  // The background revalidation fails: still served.
  (await script.next()).reject(new AppError('unavailable', 'down'));
  await new Promise((resolve) => setImmediate(resolve));
  clock.advance(MAX_STALE);
  const past = cache.read(REF, 'prod');
  (await script.next()).reject(new AppError('unavailable', 'down'));
  await assert.rejects(past, (e: unknown) => e instanceof AppError && e.code === 'stale_expired' && e.httpStatus === 503);
});

test('TTL expiry with the server answering 5xx serves the last good value within max-stale', async () => {
  const clock = new ManualClock();
  const script = scriptedLoader();
  const cache = makeCache(script.loader, clock);
  const first = readText(cache);
  (await script.next()).resolve(secret('v1'));
  await first;
  clock.advance(TTL + 1_000);
  const read = readText(cache);
  (await script.next()).reject(new AppError('upstream_error', 'HTTP 500'));
  const result = await read;
  assert.deepEqual([result.text, result.source, result.stale], ['v1', 'stale', 1]);
});

for (const code of ['not_found', 'permission_denied', 'unauthenticated', 'decryption_failed'] as const) {
  test(`a ${code} answer drops the cached value instead of serving it stale`, async () => {
    const clock = new ManualClock();
    const script = scriptedLoader();
    const cache = makeCache(script.loader, clock);
    const first = readText(cache);
    (await script.next()).resolve(secret('v1'));
    await first;
    clock.advance(TTL + 1);
    const read = cache.read(REF, 'prod');
    (await script.next()).reject(new AppError(code));
    await assert.rejects(read, (e: unknown) => e instanceof AppError && e.code === code);
    assert.equal(cache.size, code === 'not_found' ? 1 : 0, 'only a short negative entry remains for 404');
  });
}

test('a 404 is remembered briefly, then asked again; an event clears it at once', async () => {
  const clock = new ManualClock();
  const script = scriptedLoader();
  const cache = makeCache(script.loader, clock);
  const first = cache.read(REF, 'prod');
  (await script.next()).reject(new AppError('not_found'));
  await assert.rejects(first, /Not found/);
  await assert.rejects(cache.read(REF, 'prod'), /Not found/);
  assert.equal(script.calls.length, 1, 'negative hit');
  clock.advance(NEGATIVE_TTL_MS);
  const second = cache.read(REF, 'prod');
  (await script.next()).reject(new AppError('not_found'));
  await assert.rejects(second, /Not found/);
  cache.invalidate(REF);
  const third = readText(cache);
  (await script.next()).resolve(secret('created'));
  assert.equal((await third).text, 'created');
});

test('refresh-ahead refetches a hot entry before its TTL runs out', async () => {
  const clock = new ManualClock();
  const script = scriptedLoader();
  const cache = makeCache(script.loader, clock);
  const first = readText(cache);
  (await script.next()).resolve(secret('v1'));
  await first;
  await readText(cache);
  clock.advance(TTL * 0.9);
  assert.equal((await readText(cache)).source, 'hit');
  (await script.next()).resolve(secret('v2', 2));
  await new Promise((r) => setImmediate(r));
  clock.advance(TTL * 0.5);
  const later = await readText(cache);
  assert.deepEqual([later.text, later.source], ['v2', 'hit']);
});

/** A two-entry cache of `value-of-<name>` values, and a read by name that ends its lease at once (returning the value's buffer). */
function twoEntryCache(clock: Clock, observer?: CacheObserver): { readName(name: string): Promise<Buffer>; has(name: string): boolean } {
  const cache = new ValueCache({
    loader: async (ref) => secret(`value-of-${ref.name}`),
    clock,
    ttl: TTL,
    maxStale: MAX_STALE,
    maxEntries: 2,
    maxBytes: 1024 * 1024,
    streamDownSince: () => undefined,
    ...(observer === undefined ? {} : { observer }),
  });
  const ref = (name: string): ItemRef => ({ namespace: 'a', name });
  return {
    readName: async (name) => {
      const { value } = await cache.read(ref(name), 'prod');
      release(value);
      return value.plaintext;
    },
    has: (name) => cache.peek(ref(name), 'prod') !== undefined,
  };
}

test('capacity eviction zero-fills and counts', async () => {
  let evictions = 0;
  const { readName, has } = twoEntryCache(new ManualClock(), { hit() {}, miss() {}, coalesced() {}, stale() {}, superseded() {}, upstreamFailure() {}, eviction: () => evictions++ });
  const buffer = await readName('one');
  await readName('two');
  await readName('three');
  assert.ok(!has('one') && has('two') && has('three'));
  assert.equal(evictions, 1);
  assert.ok(buffer.every((b) => b === 0));
});

test('eviction is least-recently-used to within RECENCY_INTERVAL_MS: a key read all along outlives one only stored', async () => {
  const clock = new ManualClock();
  const { readName, has } = twoEntryCache(clock);
  await readName('hot');
  clock.advance(1);
  await readName('cold');
  // Read far more often than the interval for several intervals: the hot key still moves to the tail.
  for (let t = 0; t < 5 * RECENCY_INTERVAL_MS; t += RECENCY_INTERVAL_MS / 10) {
    clock.advance(RECENCY_INTERVAL_MS / 10);
    await readName('hot');
  }
  await readName('new');
  assert.ok(has('hot'), 'the hot key stays');
  assert.ok(!has('cold'), 'the cold key is evicted');
});

test('after the wall clock steps back, a key read all along still outlives one only stored', async () => {
  // ManualClock never goes back; the system clock does on an NTP step.
  let now = 10 * 60_000;
  const { readName, has } = twoEntryCache({ now: () => now, setTimeout: () => ({ cancel() {} }) });
  await readName('hot');
  now += 1;
  await readName('cold');
  now -= 5 * 60_000;
  await readName('hot');
  await readName('new');
  assert.ok(has('hot'), 'the hot key stays');
  assert.ok(!has('cold'), 'the cold key is evicted');
});

test('fresh hits take a lease each, report the age in whole seconds, and the value is zero-filled when the last lease ends', async () => {
  const clock = new ManualClock();
  const script = scriptedLoader();
  const cache = makeCache(script.loader, clock);
  const reading = cache.read(REF, 'prod');
  (await script.next()).resolve(secret('v1'));
  release((await reading).value);
  const first = cache.readCached(REF, 'prod');
  const second = cache.readCached(REF, 'prod');
  assert.ok(first && second);
  assert.deepEqual([first.source, first.ageSeconds, first.staleSeconds, second.source, second.ageSeconds], ['hit', 0, 0, 'hit', 0]);
  clock.advance(1_500);
  const later = cache.readCached(REF, 'prod');
  assert.ok(later);
  assert.deepEqual([later.ageSeconds, first.ageSeconds], [1, 0], 'a later age never changes an earlier result');
  const buffer = first.value.plaintext;
  cache.invalidate(REF);
  release(first.value);
  release(second.value);
  assert.equal(buffer.toString(), 'v1', 'intact while one read still holds it');
  release(later.value);
  assert.ok(buffer.every((b) => b === 0), 'zero-filled when the last lease ends');
});

test('an entry holds its value once when the plaintext appears verbatim in its JSON body; both bodies stay exact and are zero-filled on drop', async () => {
  const clock = new ManualClock();
  const cases: Array<{ loaded: LoadedValue; shared: boolean }> = [
    { loaded: secret('x'.repeat(1024)), shared: true },
    { loaded: { kind: 'config', version: 1, revision: 1, etag: '"1"', plaintext: Buffer.from('{"batchSize":64,"model":"resnet"}') }, shared: true },
    // Needs escaping in JSON, or is not UTF-8 (base64 in JSON): stored side by side.
    { loaded: secret('line "one"\n'), shared: false },
    { loaded: { ...secret(''), plaintext: Buffer.from([0xff, 0xfe, 0x00, 0x01]) }, shared: false },
  ];
  for (const { loaded, shared } of cases) {
    const expected = Buffer.from(loaded.plaintext);
    const cache = makeCache(async () => ({ ...loaded, plaintext: Buffer.from(expected) }), clock);
    const result = await cache.read(REF, 'prod');
    const { plaintext, json } = result.value;
    assert.deepEqual(plaintext, expected, 'raw body is the value');
    const doc = JSON.parse(json.toString()) as { value: unknown; encoding?: string };
    if (loaded.kind === 'config') assert.deepEqual(doc.value, JSON.parse(expected.toString()));
    else assert.deepEqual(doc.encoding === 'base64' ? Buffer.from(doc.value as string, 'base64') : Buffer.from(doc.value as string), expected);
    assert.equal(plaintext.buffer === json.buffer && plaintext.byteOffset >= json.byteOffset && plaintext.byteOffset + plaintext.length <= json.byteOffset + json.length, shared, expected.toString());
    // Its own allocation, sized to its bytes: no slab of Node's shared pool or of a response body kept alive by a view.
    assert.equal(json.buffer.byteLength, json.length + (shared ? 0 : plaintext.length), 'the entry holds exactly its bytes');
    // The byte bound counts what is held: one JSON body (+ the plaintext when it is not inside it) + the fixed overhead.
    assert.equal(cache.bytes, json.length + (shared ? 0 : plaintext.length) + ENTRY_OVERHEAD_BYTES);
    release(result.value);
    cache.invalidate(REF);
    assert.ok(plaintext.every((b) => b === 0) && json.every((b) => b === 0), 'zero-filled on drop');
    cache.close();
  }
});

test('an event drops every env variant of the item (one, two, then one again) and only that item', async () => {
  const clock = new ManualClock();
  const loads: string[] = [];
  const cache = makeCache(async (ref, env) => {
    loads.push(`${env}:${ref.name}`);
    return secret(`${env}-${ref.name}`);
  }, clock);
  const other: ItemRef = { namespace: 'production/ml', name: 'other' };
  const read = async (ref: ItemRef, env: string): Promise<void> => release((await cache.read(ref, env)).value);
  await read(REF, 'prod');
  await read(other, 'prod');
  assert.deepEqual(cache.invalidate(REF).map((v) => v.env), ['prod']);
  await read(REF, 'prod');
  await read(REF, 'dev');
  assert.deepEqual(cache.invalidate(REF).map((v) => v.env).sort(), ['dev', 'prod']);
  await read(REF, 'dev');
  assert.deepEqual(cache.invalidate(REF).map((v) => v.env), ['dev']);
  assert.deepEqual(cache.invalidate(REF), [], 'nothing left of the item');
  loads.length = 0;
  await read(other, 'prod');
  assert.deepEqual(loads, [], 'the other item stayed cached');
  await read(REF, 'prod');
  assert.deepEqual(loads, ['prod:db-password'], 'the invalidated item is fetched again');
  cache.close();
});

test('every cached variant is found again by item, namespace and env (refs are parsed back from the cache keys)', async () => {
  const clock = new ManualClock();
  const cache = makeCache(async (ref, env) => secret(`${env}-${ref.name}`), clock);
  const deep: ItemRef = { namespace: 'production/ml-service/inference', name: 'db-password.v2' };
  const sibling: ItemRef = { namespace: 'production/ml-service', name: 'inference' };
  for (const [ref, env] of [[deep, 'prod'], [deep, 'dev'], [sibling, 'prod']] as const) release((await cache.read(ref, env)).value);
  const byEnv = (vs: ReadonlyArray<{ ref: ItemRef; env: string }>): string[] => vs.map((v) => `${v.env} ${v.ref.namespace} ${v.ref.name}`).sort();
  assert.deepEqual(byEnv(cache.variants('production/ml-service/inference')), ['dev production/ml-service/inference db-password.v2', 'prod production/ml-service/inference db-password.v2']);
  assert.deepEqual(cache.itemsUnder('production/ml-service').map((r) => `${r.namespace}/${r.name}`).sort(), ['production/ml-service/inference', 'production/ml-service/inference/db-password.v2']);
  assert.deepEqual(cache.itemsUnder('production/ml-service', true), [sibling]);
  assert.deepEqual(byEnv(cache.hotVariants()), byEnv([...cache.variants('production/ml-service'), ...cache.variants('production/ml-service/inference')]));
  assert.deepEqual(byEnv(cache.invalidate(deep)), ['dev production/ml-service/inference db-password.v2', 'prod production/ml-service/inference db-password.v2']);
  assert.deepEqual(byEnv(cache.variants()), ['prod production/ml-service inference']);
});
