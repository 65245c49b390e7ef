/**
 * Unit tests of the pure pieces of the data API: the request handler (no
 * sockets), the applied-events hub (bounded delivery, resume, close twice)
 * and the settings schema (unknown keys, named settings).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppliedEventsHub } from '../src/agent/applied-events.ts';
import { rawEtag } from '../src/agent/item-representation.ts';
import { handleDataRequest, type BodyResult, type DataRequest, type HandlerDeps, type HeaderList } from '../src/agent/request-handler.ts';
import { newTokenProof, type TokenProof } from '../src/agent/pod-token.ts';
import { resolveAgentSettings } from '../src/agent/agent-settings.ts';
import { agentReadiness, type ReadinessState } from '../src/agent/readiness.ts';
import { release, ValueCache, variantKey, type CachedValue, type ReadResult } from '../src/agent/value-cache.ts';
import { ManualClock } from '../src/shared/clock.ts';
import { SettingError } from '../src/shared/settings.ts';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const TOKEN = Buffer.from('pod-token-0123456789');

function value(): CachedValue {
  const json = Buffer.from('{"value":"s3cret"}');
  const plaintext = Buffer.from('s3cret');
  return {
    namespace: 'production/ml',
    name: 'db',
    env: 'prod',
    kind: 'secret',
    version: 3,
    revision: 7,
    etag: '"3"',
    plaintext,
    json,
    rawEtag: rawEtag('"3"'),
    fetchedAt: 0,
    leases: 0,
    dropped: false,
  };
}

function deps(read?: () => Promise<ReadResult>): HandlerDeps & { released: number } {
  const d = {
    released: 0,
    prefixes: () => ['production/ml'],
    podToken: TOKEN,
    env: 'prod',
    read: read ?? (async () => ({ value: value(), source: 'hit' as const, staleSeconds: 0, ageSeconds: 2 })),
    release: () => {
      d.released += 1;
    },
  };
  return d;
}

/** A small real cache on a manual clock, as the agent builds one (a minute's TTL and max-stale, stream up). */
function testCache(loader: ConstructorParameters<typeof ValueCache>[0]['loader'], clock: ManualClock): ValueCache {
  return new ValueCache({ loader, clock, ttl: 60_000, maxStale: 60_000, maxEntries: 100, maxBytes: 1 << 20, streamDownSince: () => undefined });
}

const req = (url: string, extra: Partial<DataRequest> = {}): DataRequest => ({ method: 'GET', url, headers: {}, listener: 'socket', ...extra });

async function body(r: DataRequest, d: HandlerDeps = deps()): Promise<BodyResult> {
  const result = await handleDataRequest(r, d);
  assert.equal(result.kind, 'body');
  return result as BodyResult;
}

/** A result's headers by name, whichever form the handler gave them in (an item read's are a flat list). */
function headersOf(r: BodyResult | undefined): Readonly<Record<string, string | number>> {
  const headers = r?.headers ?? {};
  if (!isHeaderList(headers)) return headers;
  const out: Record<string, string | number> = {};
  for (let i = 0; i < headers.length; i += 2) out[String(headers[i])] = headers[i + 1] ?? '';
  return out;
}
const isHeaderList = (headers: BodyResult['headers']): headers is HeaderList => Array.isArray(headers);

const code = (r: BodyResult): string => (JSON.parse(r.body?.toString() ?? '{}') as { error: { code: string } }).error.code;

test('a read answers the value with ETag, Age and X-Config-Revision; raw gives the bytes', async () => {
  const ok = await body(req('/v1/items/production/ml/db'));
  assert.equal(ok.status, 200);
  assert.equal(headersOf(ok).etag, '"3"');
  assert.equal(headersOf(ok).age, 2);
  assert.equal(headersOf(ok)['x-config-revision'], 7);
  const raw = await body(req('/v1/items/production/ml/db?format=raw'));
  assert.equal(raw.body?.toString(), 's3cret');
  assert.equal(headersOf(raw)['content-type'], 'application/octet-stream');
  assert.notEqual(headersOf(raw).etag, headersOf(ok).etag, 'each representation has its own ETag');
});

test('format is read the same whether the query is the exact short form or any other spelling', async () => {
  const raw = ['?format=raw', '?x=1&format=raw', '?format=r%61w', '?format=raw&format=json'];
  // Twice each: the second answer comes from the parsed-URL memo and must be the same.
  for (let pass = 0; pass < 2; pass++) for (const q of raw) assert.equal((await body(req(`/v1/items/production/ml/db${q}`))).body?.toString(), 's3cret', q);
  const json = ['', '?', '?format=json', '?x=1', '?format=json&format=raw'];
  for (let pass = 0; pass < 2; pass++) for (const q of json) assert.equal(headersOf(await body(req(`/v1/items/production/ml/db${q}`)))['content-type'], 'application/json; charset=utf-8', q);
  for (let pass = 0; pass < 2; pass++) for (const q of ['?format=RAW', '?format=', '?format=raw%20']) assert.equal(code(await body(req(`/v1/items/production/ml/db${q}`))), 'bad_request', q);
});

test('a cache hit is answered synchronously, without a promise', () => {
  const d = { ...deps(), readCached: () => ({ value: value(), source: 'hit' as const, staleSeconds: 0, ageSeconds: 0 }) };
  const result = handleDataRequest(req('/v1/items/production/ml/db'), d);
  assert.ok(!(result instanceof Promise));
  assert.equal((result as BodyResult).status, 200);
});

test('a URL read through agents of different envs answers each its own env, also once the URL is remembered', async () => {
  // The handler remembers each URL's cache key; the key is per env, so one URL must never answer another env's value.
  const cache = testCache(async (_ref, env) => ({ kind: 'secret', version: 1, revision: 1, etag: `"${env}"`, plaintext: Buffer.from(`value-for-${env}`) }), new ManualClock(0));
  const inEnv = (env: string): HandlerDeps => ({
    ...deps(),
    env,
    read: (ref, e) => cache.read(ref, e),
    // With the URL's memo of the entry, as agent.ts wires it: the memo must follow the key's env too.
    readCached: (ref, e, key, memo) => cache.readCached(ref, e, key, memo),
    cacheKey: variantKey,
    release: (result) => release(result.value),
  });
  const prod = inEnv('prod');
  const dev = inEnv('dev');
  const url = '/v1/items/production/ml/env-memo?format=raw';
  for (let pass = 0; pass < 3; pass++) {
    assert.equal((await body(req(url), prod)).body?.toString(), 'value-for-prod', `pass ${pass}`);
    assert.equal((await body(req(url), dev)).body?.toString(), 'value-for-dev', `pass ${pass}`);
  }
  // The hits were answered from the cache, synchronously, by the remembered key.
  const hit = handleDataRequest(req(url), dev);
  assert.ok(!(hit instanceof Promise) && hit.kind === 'body' && hit.lease !== undefined);
  release(hit.lease.value);
  cache.close();
});

test('a URL read before answers the value that replaced its cached one, and a fetch once the cache let it go', async () => {
  // The URL's memo remembers the cache entry its last read found; a new value or an invalidation must never be answered from it.
  let version = 1;
  let fetches = 0;
  const cache = testCache(async () => {
      fetches += 1;
      return { kind: 'secret', version, revision: version, etag: `"${version}"`, plaintext: Buffer.from(`value-${version}`) };
    }, new ManualClock(0));
  const d: HandlerDeps = {
    ...deps(),
    read: (ref, e) => cache.read(ref, e),
    readCached: (ref, e, key, memo) => cache.readCached(ref, e, key, memo),
    cacheKey: variantKey,
    release: (result) => release(result.value),
  };
  const url = '/v1/items/production/ml/replaced?format=raw';
  const read = async (): Promise<{ text: string | undefined; etag: unknown }> => {
    const r = await body(req(url), d);
    const text = r.body?.toString();
    if (r.lease) d.release(r.lease);
    return { text, etag: headersOf(r).etag };
  };
  assert.deepEqual(await read(), { text: 'value-1', etag: rawEtag('"1"') });
  assert.deepEqual(await read(), { text: 'value-1', etag: rawEtag('"1"') }, 'a hit');
  version = 2;
  cache.refresh({ namespace: 'production/ml', name: 'replaced' }, 'prod');
  await new Promise(setImmediate);
  assert.deepEqual(await read(), { text: 'value-2', etag: rawEtag('"2"') }, 'the refetched value replaced the remembered one');
  version = 3;
  cache.invalidate({ namespace: 'production/ml', name: 'replaced' });
  assert.deepEqual(await read(), { text: 'value-3', etag: rawEtag('"3"') }, 'an invalidated value is fetched again');
  assert.equal(fetches, 3);
  cache.close();
});

test('If-None-Match with the current ETag gives 304 and releases the value at once', async () => {
  const d = deps();
  const r = await body(req('/v1/items/production/ml/db', { headers: { 'if-none-match': '"3"' } }), d);
  assert.equal(r.status, 304);
  assert.equal(r.body, undefined);
  assert.equal(d.released, 1);
});

test('a stale value carries the Warning and X-Config-Stale headers', async () => {
  const r = await body(req('/v1/items/production/ml/db'), deps(async () => ({ value: value(), source: 'stale', staleSeconds: 42, ageSeconds: 50 })));
  assert.equal(headersOf(r).warning, '110 - "Response is Stale"');
  assert.equal(headersOf(r)['x-config-stale'], 42);
});

test('bad requests are refused with the right status and a JSON error', async () => {
  const cases: Array<[DataRequest, number, string]> = [
    [req('/v1/items/production/other/db'), 403, 'permission_denied'],
    [req('/v1/items/production/ml/../db'), 400, 'invalid_path'],
    [req('/v1/items/nothing'), 400, 'invalid_path'],
    [req(`/v1/items/production/ml/${'x'.repeat(3000)}`), 400, 'invalid_path'],
    [req('/v1/nope'), 404, 'not_found'],
    [req('/v1/items/production/ml/db', { method: 'POST' }), 405, 'method_not_allowed'],
    [req('/v1/items/production/ml/db', { headers: { 'content-length': String(10 * 1024 * 1024) } }), 413, 'payload_too_large'],
    [req('/v1/items/production/ml/db', { headers: { 'x-forwarded-for': '10.0.0.1' } }), 403, 'forwarded_request'],
    [req('/v1/items/production/ml/db', { headers: { forwarded: 'for=1.2.3.4' } }), 403, 'forwarded_request'],
    [req('/v1/items/production/ml/db', { headers: { via: '1.1 proxy' } }), 403, 'forwarded_request'],
    [req('/v1/items/production/ml/db', { listener: 'tcp' }), 401, 'unauthenticated'],
    [req('/v1/items/production/ml/db', { listener: 'tcp', headers: { 'x-config-sidecar-token': 'wrong-token-0123456789' } }), 401, 'unauthenticated'],
    [req('/v1/items/production/ml/db', { listener: 'tcp', headers: { 'x-config-sidecar-token': 'pod-token-0123456780' } }), 401, 'unauthenticated'],
    [req('/v1/watch?prefix=production'), 403, 'permission_denied'],
  ];
  for (const [r, status, errorCode] of cases) {
    const result = await body(r);
    assert.equal(result.status, status, r.url);
    assert.equal(code(result), errorCode, r.url);
  }
  const ok = await body(req('/v1/items/production/ml/db', { listener: 'tcp', headers: { 'x-config-sidecar-token': TOKEN.toString() } }));
  assert.equal(ok.status, 200);
});

test('a TCP connection\'s token proof accepts only the string it proved, against the token it proved it with', async () => {
  const path = '/v1/items/production/ml/db';
  const tcp = (token: string | undefined, tokenProof: TokenProof): DataRequest =>
    req(path, { listener: 'tcp', tokenProof, headers: token === undefined ? {} : { 'x-config-sidecar-token': token } });
  const proof = newTokenProof();
  assert.equal((await body(tcp('wrong-token-01234567', proof))).status, 401, 'a fresh connection with a wrong token');
  assert.equal(proof.token, undefined, 'a failed check proves nothing');
  assert.equal((await body(tcp(TOKEN.toString(), proof))).status, 200);
  assert.equal(proof.token, TOKEN.toString(), 'the full check passed: the connection holds its proof');
  assert.equal((await body(tcp(TOKEN.toString(), proof))).status, 200, 'the identical string again');
  for (const other of ['pod-token-0123456780', `${TOKEN.toString()}, ${TOKEN.toString()}`, '']) {
    assert.equal((await body(tcp(other, proof))).status, 401, `${other} on a proved connection`);
  }
  assert.equal(proof.token, undefined, 'a failed check drops the proof');
  assert.equal((await body(tcp(TOKEN.toString(), proof))).status, 200, 'proved again');
  assert.equal((await body(tcp(undefined, proof))).status, 401, 'no header on a proved connection');
  assert.equal(proof.token, undefined, 'a request without the header drops the proof too');
  // A proof made against another pod token (were the token ever replaced) is not taken.
  const stale: TokenProof = { token: TOKEN.toString(), against: Buffer.from(TOKEN) };
  assert.equal((await body(tcp(TOKEN.toString(), stale), { ...deps(), podToken: Buffer.from('next-token-012345678') })).status, 401);
  // Before the token is written (an empty buffer) nothing is accepted, not even an empty header.
  assert.equal((await body(tcp('', newTokenProof()), { ...deps(), podToken: Buffer.alloc(0) })).status, 401);
});

test('/v1/watch hands over to SSE with the resume revision', async () => {
  const result = await handleDataRequest(req('/v1/watch?prefix=production/ml', { headers: { 'last-event-id': '12' } }), deps());
  assert.deepEqual(result, { kind: 'sse', prefix: 'production/ml', sinceRevision: 12 });
});

test('the hub resumes from its ring, or sends an explicit resync when it cannot', async () => {
  const hub = new AppliedEventsHub({ ringSize: 3 });
  hub.setFloor(10);
  for (let r = 11; r <= 15; r++) hub.publish({ type: 'changed', namespace: 'a', name: `n${r}`, revision: r });
  const resumed = hub.subscribe({ sinceRevision: 13 });
  assert.deepEqual([(await resumed.next())?.revision, (await resumed.next())?.revision], [14, 15]);
  const tooOld = hub.subscribe({ sinceRevision: 11 });
  const first = await tooOld.next();
  assert.equal(first?.type, 'resync');
  resumed.close();
  resumed.close();
  assert.equal(await resumed.next(), undefined);
});

test('a slow subscriber never blocks publishing: its backlog becomes one resync', async () => {
  const hub = new AppliedEventsHub({ maxQueue: 4 });
  hub.setFloor(0);
  const controller = new AbortController();
  const slow = hub.subscribe({ signal: controller.signal });
  for (let r = 1; r <= 100; r++) hub.publish({ type: 'changed', namespace: 'a', name: 'x', revision: r });
  assert.ok(slow.pending <= 4);
  const events = [];
  while (slow.pending > 0) events.push(await slow.next());
  assert.equal(events[0]?.type, 'resync');
  assert.equal(events.at(-1)?.revision, 100);
  controller.abort();
  assert.equal(hub.subscriberCount, 0);
});

test('settings: unknown keys and bad values are refused naming the setting', () => {
  const base = { server: 'http://127.0.0.1:8420', serverGrpc: '127.0.0.1:8421', prefix: ['production/ml'] };
  assert.equal(resolveAgentSettings(base).cacheTtl, 300_000);
  assert.throws(() => resolveAgentSettings(base, { cacheTTL: '5m' }), (e: unknown) => e instanceof SettingError && /unknown key/.test(e.message));
  assert.throws(() => resolveAgentSettings({ ...base, cacheTtl: 'soon' }), /--cache-ttl \(CONFIG_SIDECAR_CACHE_TTL\)/);
  assert.throws(() => resolveAgentSettings({ ...base, serverGrpc: '127.0.0.1:8421,127.0.0.1:9421' }), /paired by position/);
  assert.throws(() => resolveAgentSettings({ ...base, server: 'http://10.0.0.5:8420', serverGrpc: '10.0.0.5:8421' }), /--insecure/);
  // A CA is for TLS: it never lifts the plaintext check on an http:// URL (issue 14).
  assert.throws(() => resolveAgentSettings({ ...base, server: 'http://10.0.0.5:8420', serverGrpc: '10.0.0.5:8421', serverCa: '/etc/ca.pem' }), /--server-ca applies to https:\/\/ URLs only/);
  assert.equal(resolveAgentSettings({ ...base, server: 'https://10.0.0.5:8420', serverGrpc: '10.0.0.5:8421', serverCa: '/etc/ca.pem' }).serverCa, '/etc/ca.pem');
  assert.throws(() => resolveAgentSettings({ ...base, httpListen: '0.0.0.0:8430' }), /--http-listen/);
  assert.throws(() => resolveAgentSettings({ ...base, prefetch: ['staging/x/db'] }), /outside every --prefix/);
  // The file gives a value; an absent flag does not override it.
  assert.equal(resolveAgentSettings(base, { maxStale: '10m' }).maxStale, 600_000);
});

test('readiness: prefetch and stream, or within max-stale once the stream has been up', () => {
  const base: ReadinessState = {
    now: 100_000,
    streamDownSince: undefined,
    everConnected: true,
    maxStale: 60_000,
    appliedRevision: 7,
    prefetch: { done: true, total: 2, failing: [] },
    tokenHealthy: true,
  };
  assert.equal(agentReadiness(base).ready, true);
  assert.equal(agentReadiness({ ...base, prefetch: { done: false, total: 2, failing: ['a/b'] } }).checks.prefetch?.detail, 'waiting for 1 item(s): a/b');
  assert.equal(agentReadiness({ ...base, streamDownSince: 50_000 }).ready, true, 'lost 50 s ago, max-stale 60 s');
  assert.equal(agentReadiness({ ...base, streamDownSince: 30_000 }).ready, false, 'past max-stale');
  assert.equal(agentReadiness({ ...base, streamDownSince: 90_000, everConnected: false }).ready, false, 'never connected');
  assert.equal(agentReadiness({ ...base, files: { ready: false, files: { 'a.env': { ok: false, detail: 'missing item' } } } }).ready, false);
});

test('a URL read before is refused once the prefixes no longer cover it', async () => {
  let prefixes: readonly string[] = ['production/ml'];
  const d = { ...deps(), prefixes: () => prefixes };
  assert.equal((await body(req('/v1/items/production/ml/db'), d)).status, 200);
  assert.equal((await body(req('/v1/items/production/ml/db'), d)).status, 200, 'same list: the remembered decision');
  prefixes = ['production/other'];
  const refused = await body(req('/v1/items/production/ml/db'), d);
  assert.equal(refused.status, 403);
  assert.equal(code(refused), 'permission_denied');
});

test('a cached read answers headers that follow the value and its age; a stale read never changes a fresh one', () => {
  const url = '/v1/items/production/ml/db?format=raw';
  let current: ReadResult = { value: value(), source: 'hit', staleSeconds: 0, ageSeconds: 0 };
  const d = { ...deps(), readCached: () => current };
  const read = (): BodyResult => handleDataRequest(req(url), d) as BodyResult;
  const first = read();
  assert.deepEqual(headersOf(first), headersOf(read()), 'the same value in the same second answers the same headers');
  current = { ...current, ageSeconds: 3 };
  assert.equal(headersOf(read()).age, 3, 'a new age is answered at once');
  current = { ...current, source: 'stale', staleSeconds: 40 };
  const stale = read();
  assert.equal(headersOf(stale).warning, '110 - "Response is Stale"');
  current = { value: { ...value(), revision: 8, version: 4, etag: '"4"', rawEtag: rawEtag('"4"'), plaintext: Buffer.from('n3w') }, source: 'hit', staleSeconds: 0, ageSeconds: 3 };
  const fresh = read();
  assert.equal(headersOf(fresh).warning, undefined, 'the stale marking stays on the stale response');
  assert.equal(headersOf(fresh)['x-config-stale'], undefined);
  assert.equal(headersOf(fresh)['x-config-revision'], 8, 'a new value answers its own revision, also within the same second');
  assert.equal(headersOf(fresh).etag, rawEtag('"4"'));
  assert.equal(headersOf(fresh)['content-length'], 3);
  assert.equal(headersOf(first)['x-config-revision'], 7, 'an answer already given is never changed');
});

test('reads sharing a cached result each get their own representation and lease, in any order', async () => {
  // Fresh hits within an age second share one result (value-cache.ts), and each read makes its own response from it:
  // alternating the JSON and raw URLs must never answer one with the other's body or headers.
  const clock = new ManualClock(0);
  const cache = testCache(async () => ({ kind: 'secret', version: 1, revision: 4, etag: '"1"', plaintext: Buffer.from('shared-result') }), clock);
  let leases = 0;
  const d: HandlerDeps = {
    ...deps(),
    read: (ref, e) => cache.read(ref, e),
    readCached: (ref, e, key) => cache.readCached(ref, e, key),
    cacheKey: variantKey,
    release: (result) => {
      leases -= 1;
      release(result.value);
    },
  };
  const json = '/v1/items/production/ml/shared';
  const raw = `${json}?format=raw`;
  release(((await body(req(json), d)).lease as ReadResult).value); // the miss that fills the entry
  const answers: BodyResult[] = [];
  for (const url of [json, raw, raw, json, json, raw]) {
    const r = handleDataRequest(req(url), d) as BodyResult;
    leases += 1;
    answers.push(r);
    const text = r.body?.toString() ?? '';
    assert.equal(url === raw ? text : (JSON.parse(text) as { value: string }).value, 'shared-result', url);
    assert.equal(headersOf(r)['content-type'], url === raw ? 'application/octet-stream' : 'application/json; charset=utf-8', url);
    assert.equal(headersOf(r).etag, url === raw ? rawEtag('"1"') : '"1"', url);
    assert.equal(headersOf(r)['content-length'], r.body?.length, url);
  }
  clock.advance(2_000);
  const later = handleDataRequest(req(json), d) as BodyResult;
  leases += 1;
  assert.equal(headersOf(later).age, 2, 'a new age second answers its own age');
  assert.equal(headersOf(answers[0]).age, 0, 'an answer already given is never changed');
  for (const r of [...answers, later]) d.release(r.lease as ReadResult);
  assert.equal(leases, 0, 'every read ended its own lease');
  const entry = cache.peek({ namespace: 'production/ml', name: 'shared' }, 'prod');
  assert.equal(entry?.value.leases, 0, 'the value holds no lease once every read released');
  cache.close();
});

test('a URL read before keeps no reference to its value once the cache has let it go', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  let held: CachedValue | undefined = value();
  const weak = new WeakRef(held);
  let current: ReadResult | undefined = { value: held, source: 'hit', staleSeconds: 0, ageSeconds: 0 };
  const d = { ...deps(), readCached: () => current };
  assert.equal((handleDataRequest(req('/v1/items/production/ml/db?format=json&gc=1'), d) as BodyResult).status, 200);
  held = undefined;
  current = undefined;
  // A WeakRef keeps its target until the current job ends.
  await new Promise(setImmediate);
  gc();
  assert.equal(weak.deref(), undefined, 'the parsed-URL memo must not keep an evicted value (and its buffers) alive');
});
