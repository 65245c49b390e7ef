// Unit tests of the server's pure pieces (one module each, no sockets).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { Readable } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { ManualClock } from '../src/shared/clock.ts';
import { AppError, GrpcStatus } from '../src/shared/errors.ts';
import { watchEventFromWire, watchServiceDefinition, type StartFrom, type WatchEvent } from '../src/shared/watch-proto.ts';
import { Policy } from '../src/server/auth/policy.ts';
import { AuthFileError, parseAuthFile, sha256Hex } from '../src/server/auth/auth-file.ts';
import { createAuthenticator } from '../src/server/auth/authenticator.ts';
import { createRateLimiter } from '../src/server/rate-limiter.ts';
import { parseRoute } from '../src/server/rest/routes.ts';
import { handleRest, type RestDeps } from '../src/server/rest/rest-handler.ts';
import { createRefusalAudit } from '../src/server/refusal-audit.ts';
import { encodeEvent } from '../src/server/watch/event-codec.ts';
import { WatchStream, type StreamSink, type WatchLog } from '../src/server/watch/watch-stream.ts';
import { HeartbeatTicker } from '../src/server/watch/heartbeat-ticker.ts';
import { peerHost } from '../src/server/watch/watch-service.ts';
import type { ControlPlane, LogEvent } from '../src/server/control-plane.ts';

const AUTH = `
subjects:
  - name: ml
    tokens: [{ sha256: ${sha256Hex('ml-token')} }]
  - name: old
    tokens: [{ sha256: ${sha256Hex('old-token')}, expires: 2020-01-01T00:00:00Z }]
roles:
  - name: ml
    rules: [{ prefixes: [production/ml], actions: [read, list] }]
  - name: ops
    rules: [{ prefixes: ["*"], actions: [admin] }]
bindings:
  - { role: ml, subjects: [ml] }
  - { role: ops, subjects: [ops-user] }
`;

test('policy: whole-segment prefixes, admin implies every action, deny by default', () => {
  const policy = new Policy(parseAuthFile(AUTH));
  assert.ok(policy.allows({ kind: 'token', name: 'ml', tokenSha256: '' }, 'read', 'production/ml'));
  assert.ok(policy.allows({ kind: 'token', name: 'ml', tokenSha256: '' }, 'read', 'production/ml/inference'));
  assert.ok(!policy.allows({ kind: 'token', name: 'ml', tokenSha256: '' }, 'read', 'production/ml-admin'));
  assert.ok(!policy.allows({ kind: 'token', name: 'ml', tokenSha256: '' }, 'read', 'production'));
  assert.ok(!policy.allows({ kind: 'token', name: 'ml', tokenSha256: '' }, 'write', 'production/ml'));
  assert.ok(policy.allows({ kind: 'jwt', issuer: 'i', sub: 'ops-user' }, 'rotate', 'anything/at/all'));
  assert.ok(!policy.allows({ kind: 'jwt', issuer: 'i', sub: 'stranger' }, 'read', 'production/ml'));
  assert.ok(policy.allows({ kind: 'root' }, 'delete', 'x'));
  // Kinds never collide: a JWT sub named like the root or a static subject is neither.
  assert.ok(!policy.allows({ kind: 'jwt', issuer: 'i', sub: 'root' }, 'read', 'x'));
  assert.ok(!policy.allows({ kind: 'jwt', issuer: 'i', sub: 'ml' }, 'read', 'production/ml'));
});

test('auth file: strict parsing with the path of the problem', () => {
  assert.throws(() => parseAuthFile('roles: [{ name: r, rules: [{ prefixes: [a], actions: [fly] }] }]'), (e: unknown) => e instanceof AuthFileError && /roles\.0\.rules\.0\.actions\.0/.test(e.message));
  assert.throws(() => parseAuthFile('subjects: [{ name: a, tokens: [{ sha256: nothex }] }]'), /sha256/);
  assert.throws(() => parseAuthFile('bindings: [{ role: missing, subjects: [a] }]'), /not defined/);
  assert.throws(() => parseAuthFile('rolez: []'), /unknown key/);
  assert.throws(() => parseAuthFile('roles: [{ name: r, rules: [{ prefixes: ["../x"], actions: [read] }] }]'), /prefix/);
  assert.throws(() => parseAuthFile('a: [unclosed'), /YAML/);
});

test('authenticator: root, hashed static tokens, expiry on the clock, refusals', async () => {
  const clock = new ManualClock(Date.UTC(2026, 0, 1));
  const policy = new Policy(parseAuthFile(AUTH));
  const auth = createAuthenticator({ rootToken: 'root-token-0123456789', policy: () => policy, clock });
  assert.equal((await auth.authenticate('Bearer root-token-0123456789')).subject, 'root');
  const ml = await auth.authenticate('bearer ml-token');
  assert.equal(ml.subject, 'ml');
  assert.equal(ml.tokenSha256, sha256Hex('ml-token'));
  for (const header of [undefined, '', 'Basic abc', 'Bearer', 'Bearer nope', 'Bearer old-token']) {
    await assert.rejects(auth.authenticate(header), (e: unknown) => e instanceof AppError && e.code === 'unauthenticated', String(header));
  }
});

test('rate limiter: burst of twice the rate, then 429 with Retry-After, refilled by the clock', () => {
  const clock = new ManualClock(0);
  const limiter = createRateLimiter(5, clock);
  for (let i = 0; i < 10; i++) limiter.take('a');
  assert.throws(() => limiter.take('a'), (e: unknown) => e instanceof AppError && e.code === 'rate_limited' && e.headers['retry-after'] === '1');
  limiter.take('b'); // per subject
  clock.advance(1000);
  for (let i = 0; i < 5; i++) limiter.take('a');
  assert.throws(() => limiter.take('a'));
  const off = createRateLimiter(0, clock);
  for (let i = 0; i < 1000; i++) off.take('a');
});

test('a refused Watch is audited by its source address without the port (a new one per connection)', () => {
  assert.equal(peerHost('127.0.0.1:50432'), '127.0.0.1');
  assert.equal(peerHost('::ffff:10.0.0.5:443'), '::ffff:10.0.0.5');
  assert.equal(peerHost('::1:50432'), '::1');
  assert.equal(peerHost('[fd00::7]:50432'), 'fd00::7');
  assert.equal(peerHost(''), 'unknown');
});

test('routes: one resource per operation; bad paths refused before anything else', () => {
  assert.deepEqual(parseRoute('GET', '/v1/items/a/b/name?env=prod'), { op: 'getItem', ref: { namespace: 'a/b', name: 'name' }, env: 'prod' });
  assert.deepEqual(parseRoute('POST', '/v1/rotate/a/b'), { op: 'rotate', namespace: 'a/b' });
  assert.deepEqual(parseRoute('GET', '/v1/list/a/'), { op: 'list', prefix: 'a', page: { limit: 1000, after: undefined } });
  assert.deepEqual(parseRoute('GET', '/v1/items/rotate/x'), { op: 'getItem', ref: { namespace: 'rotate', name: 'x' }, env: undefined });
  const code = (fn: () => unknown) => {
    try {
      fn();
      return 'ok';
    } catch (e) {
      return (e as AppError).code;
    }
  };
  assert.equal(code(() => parseRoute('GET', '/v1/items/a/../b')), 'invalid_path');
  assert.equal(code(() => parseRoute('GET', '/v1/items/a%2Fb/c')), 'invalid_path');
  assert.equal(code(() => parseRoute('GET', '/v1/items/onlyname')), 'invalid_path');
  assert.equal(code(() => parseRoute('PATCH', '/v1/items/a/b')), 'method_not_allowed');
  assert.equal(code(() => parseRoute('GET', '/v2/items/a/b')), 'not_found');
});

function fakeRequest(method: string, url: string, headers: Record<string, string>, body?: string): IncomingMessage {
  const req = Readable.from(body === undefined ? [] : [Buffer.from(body)]) as unknown as IncomingMessage;
  Object.assign(req, { method, url, headers, socket: { remoteAddress: '127.0.0.1' } });
  return req;
}

test('rest handler: the chain answers 401 → 403 → body checks, and builds a secret body around the bytes', async () => {
  const audits: string[] = [];
  const policy = new Policy(parseAuthFile(AUTH));
  const secret = Buffer.from([0xff, 0x00, 0x7f]);
  const cp = {
    environments: ['base', 'prod'],
    getItem: async () => ({ namespace: 'production/ml', name: 'k', kind: 'secret', env: 'prod', version: 2, revision: 7, etag: '"2"', value: secret }),
    audit: async (e: { action: string; outcome: string }) => {
      audits.push(`${e.action}:${e.outcome}`);
    },
  } as unknown as ControlPlane;
  const deps: RestDeps = {
    controlPlane: cp,
    authenticator: createAuthenticator({ policy: () => policy, clock: new ManualClock() }),
    policy: () => policy,
    rateLimiter: createRateLimiter(0, new ManualClock()),
    refusals: createRefusalAudit({ clock: new ManualClock(), write: (e) => cp.audit(e) }),
    maxBody: 1024,
    openapi: Buffer.from('{}'),
    logger: { error() {} } as unknown as RestDeps['logger'],
  };
  const code = async (req: IncomingMessage) => (await handleRest(req, deps).then(() => 'ok', (e: AppError) => e.code));
  assert.equal(await code(fakeRequest('GET', '/v1/items/production/ml/k', {})), 'unauthenticated');
  assert.equal(await code(fakeRequest('GET', '/v1/items/production/other/k', { authorization: 'Bearer ml-token' })), 'permission_denied');
  assert.equal(await code(fakeRequest('PUT', '/v1/items/production/ml/k', { authorization: 'Bearer ml-token' }, '{}')), 'permission_denied');
  assert.equal(await code(fakeRequest('GET', '/v1/items/production/ml/k?env=qa', { authorization: 'Bearer ml-token' })), 'invalid_argument');
  const result = await handleRest(fakeRequest('GET', '/v1/items/production/ml/k?env=prod', { authorization: 'Bearer ml-token' }), deps);
  assert.equal(result.status, 200);
  const body = JSON.parse((result.raw as Buffer).toString()) as { value: string; encoding: string; version: number };
  assert.equal(body.encoding, 'base64');
  assert.deepEqual(Buffer.from(body.value, 'base64'), Buffer.from([0xff, 0x00, 0x7f]));
  assert.deepEqual(secret, Buffer.alloc(3), 'the plaintext buffer is zero-filled after the body is built');
  assert.deepEqual(audits, ['denied:denied', 'denied:denied', 'denied:denied', 'read:ok']);
  // No audit entry, no secret: the read fails closed.
  (cp as unknown as { audit: () => Promise<void> }).audit = async () => {
    throw new Error('disk full');
  };
  secret.set([1, 2, 3]);
  assert.equal(await code(fakeRequest('GET', '/v1/items/production/ml/k?env=prod', { authorization: 'Bearer ml-token' })), 'store_unavailable');
  assert.deepEqual(secret, Buffer.alloc(3), 'zero-filled on the error path too');
});

class FakeSink extends EventEmitter implements StreamSink {
  written: WatchEvent[] = [];
  accepting = true;
  status: { code: number; details: string } | undefined;
  write(bytes: Buffer): boolean {
    const wire = watchServiceDefinition().Watch?.responseDeserialize(bytes) as Parameters<typeof watchEventFromWire>[0];
    this.written.push(watchEventFromWire(wire) as WatchEvent);
    return this.accepting;
  }
  finish(code: number, details: string): void {
    this.status = { code, details };
  }
}

function changed(revision: number, namespace = 'app'): LogEvent {
  return { type: 'itemChanged', revision, digest: digestOf(revision), namespace, name: 'x', kind: 'config', version: revision, env: 'base' };
}
const digestOf = (revision: number): string => revision.toString(16).padStart(32, '0');

/** An in-memory log: `events`, compacted through `compactedThrough`, current revision `revision`. */
function memoryLog(state: { events: LogEvent[]; revision: number; compactedThrough: number; storeId?: string }): WatchLog {
  const page = async (after: number, limit: number) => {
    const at = state.events.find((e) => e.revision === after);
    const afterDigest = after === 0 ? '' : at ? at.digest : after === state.compactedThrough ? digestOf(after) : undefined;
    return {
      storeId: state.storeId ?? 'store-1',
      revision: state.revision,
      compactedThrough: state.compactedThrough,
      compactedDigest: digestOf(state.compactedThrough),
      afterDigest,
      events: state.events.filter((e) => e.revision > after && e.revision > state.compactedThrough).slice(0, limit),
    };
  };
  return { page, head: () => page(state.revision, 1) };
}

function makeStream(sink: FakeSink, start: StartFrom, log: WatchLog, clock = new ManualClock(), bound = 4) {
  const depths: number[] = [];
  const stream = new WatchStream({
    id: 1,
    subject: 's',
    prefixes: ['app'],
    start,
    environments: ['base', 'prod'],
    log,
    sink,
    bound,
    heartbeatInterval: 1000,
    onQueueDepth: (d) => depths.push(d),
    onSent: () => {},
    onEnd: () => {},
  });
  // Heartbeats come from the service's one ticker; here it beats only this stream.
  const ticker = new HeartbeatTicker({ clock, interval: 1000, streams: () => [stream] });
  return { stream, depths, ticker };
}

const after = (revision: number, storeId = 'store-1'): StartFrom => ({ kind: 'after', position: { storeId, revision, digest: digestOf(revision) } });

test('watch stream: replay then live with no gap or duplicate, other prefixes skipped', async () => {
  const sink = new FakeSink();
  const log = [changed(2), changed(3), changed(4, 'app-admin'), changed(5)];
  const { stream } = makeStream(sink, after(2), memoryLog({ events: log, revision: 5, compactedThrough: 0 }));
  // Live events arrive while the replay is running, overlapping it.
  stream.offer(encodeEvent(changed(5)));
  stream.offer(encodeEvent(changed(6)));
  await stream.start();
  stream.offer(encodeEvent(changed(7)));
  assert.deepEqual(sink.written.map((e) => [e.type, e.revision]), [['heartbeat', 2], ['itemChanged', 3], ['itemChanged', 5], ['itemChanged', 6], ['itemChanged', 7]]);
  assert.deepEqual(sink.written[0], { type: 'heartbeat', revision: 2, digest: digestOf(2), currentRevision: 5, intervalMs: 1000, storeId: 'store-1', environments: ['base', 'prod'] });
});

test('watch stream: a reader that stops accepting is ended at the bound, and the queue never passes it', async () => {
  const sink = new FakeSink();
  const { stream, depths } = makeStream(sink, { kind: 'now' }, memoryLog({ events: [], revision: 10, compactedThrough: 10 }));
  await stream.start();
  sink.accepting = false;
  for (let r = 11; r < 30; r++) stream.offer(encodeEvent(changed(r)));
  assert.equal(sink.status?.code, GrpcStatus.RESOURCE_EXHAUSTED);
  assert.ok(Math.max(...depths) <= 4);
  assert.ok(stream.ended);
});

test('watch stream: heartbeats on the clock carry the filtered-out high-water mark; a resync for a compacted revision', async () => {
  const clock = new ManualClock();
  const sink = new FakeSink();
  const { stream } = makeStream(sink, { kind: 'legacy', sinceRevision: 3 }, memoryLog({ events: [changed(50)], revision: 50, compactedThrough: 20 }), clock);
  await stream.start();
  assert.deepEqual(sink.written.map((e) => e.type), ['resyncRequired']);
  assert.deepEqual(sink.written[0], {
    type: 'resyncRequired',
    revision: 50,
    digest: digestOf(50),
    oldestRevision: 21,
    currentRevision: 50,
    reason: 'since_revision 3 is older than the retained log (oldest 21)',
    storeId: 'store-1',
    environments: ['base', 'prod'],
  });
  stream.offer(encodeEvent(changed(51, 'elsewhere')));
  clock.advance(1000);
  const beat = sink.written.at(-1);
  assert.equal(beat?.type, 'heartbeat');
  assert.deepEqual([beat?.revision, beat?.digest], [51, digestOf(51)], 'the bookmark covers the event filtered out');
  stream.end(GrpcStatus.UNAVAILABLE, 'bye', 'shutdown');
  clock.advance(5000);
  assert.equal(sink.written.length, 2, 'no heartbeats after the end');
});

test('watch stream start: another store, a digest mismatch, a future or compacted revision resync; a matching position replays', async () => {
  const state = { events: [changed(5), changed(6), changed(7)], revision: 7, compactedThrough: 4 };
  const first = async (start: StartFrom) => {
    const sink = new FakeSink();
    await makeStream(sink, start, memoryLog(state)).stream.start();
    return sink.written[0];
  };
  const reason = (e: WatchEvent | undefined) => (e?.type === 'resyncRequired' ? e.reason : `not a resync: ${e?.type}`);
  assert.match(reason(await first(after(6, 'store-0'))), /another store/);
  assert.match(reason(await first({ kind: 'after', position: { storeId: 'store-1', revision: 6, digest: digestOf(99) } })), /digest mismatch/);
  assert.match(reason(await first(after(8))), /in the future/);
  assert.match(reason(await first({ kind: 'legacy', sinceRevision: 8 })), /in the future/);
  assert.match(reason(await first(after(3))), /older than the retained log/);
  assert.equal((await first(after(4)))?.type, 'heartbeat', 'exactly at the boundary is verified by the boundary digest');
  assert.equal((await first(after(6)))?.type, 'heartbeat');
});

test('the OpenAPI document describes every route', async () => {
  const { ROUTE_TEMPLATE } = await import('../src/server/rest/routes.ts');
  const { readFile } = await import('node:fs/promises');
  const doc = JSON.parse(await readFile(new URL('../src/server/openapi.json', import.meta.url), 'utf8')) as { paths: Record<string, Record<string, unknown>> };
  for (const template of new Set(Object.values(ROUTE_TEMPLATE))) {
    assert.ok(doc.paths[template], `${template} is documented`);
  }
});

test('the auth file example in docs/AUTH.md parses and means what the text says', async () => {
  const { readFile } = await import('node:fs/promises');
  const markdown = await readFile(new URL('../docs/AUTH.md', import.meta.url), 'utf8');
  const example = /```yaml\n([\s\S]*?)```/.exec(markdown)?.[1];
  assert.ok(example, 'docs/AUTH.md has a yaml example');
  const policy = new Policy(parseAuthFile(example));
  assert.ok(policy.allows({ kind: 'jwt', issuer: 'i', sub: 'system:serviceaccount:production:ml-service' }, 'read', 'production/ml-service'));
  assert.ok(!policy.allows({ kind: 'jwt', issuer: 'i', sub: 'system:serviceaccount:production:ml-service' }, 'read', 'production/ml-service-admin'));
  assert.ok(policy.allows({ kind: 'token', name: 'ci-deployer', tokenSha256: '' }, 'write', 'staging/web'));
  assert.ok(!policy.allows({ kind: 'token', name: 'ci-deployer', tokenSha256: '' }, 'rotate', 'staging/web'));
  assert.ok(policy.allows({ kind: 'token', name: 'oncall', tokenSha256: '' }, 'rotate', 'anything'));
});

test('watch events are serialised once: the registered service passes encoded bytes through', async () => {
  const { passThroughServiceDefinition } = await import('../src/server/watch/event-codec.ts');
  const encoded = encodeEvent(changed(9));
  assert.equal(passThroughServiceDefinition().Watch?.responseSerialize(encoded.bytes), encoded.bytes);
  const decoded = watchEventFromWire(watchServiceDefinition().Watch?.responseDeserialize(encoded.bytes) as Parameters<typeof watchEventFromWire>[0]);
  assert.deepEqual(decoded, changed(9));
});

test('shutdown on signals: close then exit 0; a second signal or the hard deadline exits 1 at once, exactly once', async () => {
  const { exitOnSignals, FORCED_EXIT_CODE, HARD_EXIT_MARGIN_MS } = await import('../src/shared/shutdown.ts');
  const { createLogger } = await import('../src/shared/logger.ts');
  const lines: string[] = [];
  const logger = createLogger({ component: 'test', destination: { write: (line: string) => void lines.push(line) } });
  const setup = (close: () => Promise<void>) => {
    const clock = new ManualClock();
    const signals = new EventEmitter();
    const exits: number[] = [];
    let exited: (code: number) => void = () => undefined;
    const exitedOnce = new Promise<number>((resolve) => (exited = resolve));
    exitOnSignals({ close, logger, graceMs: 10_000, clock, signals, exit: (code) => (exits.push(code), exited(code)) });
    return { clock, signals, exits, exitedOnce };
  };

  const orderly = setup(async () => undefined);
  orderly.signals.emit('SIGTERM', 'SIGTERM');
  assert.equal(await orderly.exitedOnce, 0);
  orderly.clock.advance(60_000);
  assert.deepEqual(orderly.exits, [0], 'the deadline does not fire after an orderly exit');

  const never = () => new Promise<void>(() => undefined);
  const stuck = setup(never);
  stuck.signals.emit('SIGTERM', 'SIGTERM');
  stuck.clock.advance(10_000 + HARD_EXIT_MARGIN_MS - 1);
  assert.deepEqual(stuck.exits, [], 'the grace period and its margin belong to close()');
  stuck.clock.advance(1);
  assert.deepEqual(stuck.exits, [FORCED_EXIT_CODE], 'a close that never settles is cut at the hard deadline');
  assert.ok(lines.some((l) => l.includes('shutdown did not finish by the hard deadline')));

  const twice = setup(never);
  twice.signals.emit('SIGTERM', 'SIGTERM');
  twice.signals.emit('SIGINT', 'SIGINT');
  assert.deepEqual(twice.exits, [FORCED_EXIT_CODE], 'a second signal exits at once');
  twice.clock.advance(60_000);
  twice.signals.emit('SIGTERM', 'SIGTERM');
  assert.deepEqual(twice.exits, [FORCED_EXIT_CODE], 'and only once');

  const failing = setup(() => Promise.reject(new Error('store close failed')));
  failing.signals.emit('SIGTERM', 'SIGTERM');
  assert.equal(await failing.exitedOnce, FORCED_EXIT_CODE);
});
