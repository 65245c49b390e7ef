/**
 * Bad input at the agent's edges, one module at a time: the upstream client
 * against a misbehaving HTTP server (500, garbage, refusals, a dead server to
 * fail over from), a token file that disappears, a Watch event outside the
 * agent's prefixes, and the data listener on a real socket against a slow
 * client and a 10 MiB body.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock, systemClock } from '../src/shared/clock.ts';
import { AppError } from '../src/shared/errors.ts';
import { createLogger } from '../src/shared/logger.ts';
import { createUpstream } from '../src/agent/upstream.ts';
import { createTokenSource, TOKEN_RECHECK_INTERVAL_MS } from '../src/agent/token-source.ts';
import { EventApplier } from '../src/agent/event-applier.ts';
import { AppliedEventsHub } from '../src/agent/applied-events.ts';
import { createAgentMetrics } from '../src/agent/agent-metrics.ts';
import { DekStore } from '../src/agent/dek-store.ts';
import { ValueCache } from '../src/agent/value-cache.ts';
import { createDataServer, listenSocket } from '../src/agent/data-listeners.ts';
import { generateTransportKeyPair } from '../src/shared/crypto.ts';

const silent = createLogger({ component: 'test', level: 'silent' });
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn();
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'cs-agent-bad-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function serve(handler: Parameters<typeof createServer>[1]): Promise<{ server: Server; url: string; hits: () => number }> {
  let hits = 0;
  const server = createServer((req, res) => {
    hits++;
    handler?.(req, res);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
      const port = (server.address() as { port: number }).port;
      resolve({ server, url: `http://127.0.0.1:${port}`, hits: () => hits });
    }),
  );
}

const REF = { namespace: 'production/ml', name: 'db' };
const noToken = { current: () => undefined, healthy: true };

test('upstream: 500 and garbage are transient upstream errors; 404/403 are not retried', async () => {
  const cases: Array<[number, string, string, number]> = [
    [500, '{"error":{"code":"internal","message":"boom"}}', 'upstream_error', 3],
    [200, 'this is not json', 'upstream_error', 3],
    [200, '{"unexpected":true}', 'upstream_error', 3],
    [404, '{"error":{"code":"not_found","message":"No such item."}}', 'not_found', 1],
    [403, '{"error":{"code":"permission_denied","message":"no"}}', 'permission_denied', 1],
  ];
  for (const [status, body, code, attempts] of cases) {
    const upstreamServer = await serve((_req, res) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(body);
    });
    const upstream = createUpstream({ servers: [upstreamServer.url], token: noToken, clock: systemClock, agentId: 'test' });
    await assert.rejects(upstream.fetchEnvelope(REF, 'prod'), (e: unknown) => e instanceof AppError && e.code === code, `${status} ${body}`);
    assert.equal(upstreamServer.hits(), attempts, `attempts for ${status} ${body}`);
    await upstream.close();
  }
});

test('upstream: a dead first server fails over to the next', async () => {
  const dead = await serve(() => {});
  const deadUrl = dead.url;
  await new Promise<void>((r) => dead.server.close(() => r()));
  const alive = await serve((_req, res) => {
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"error":{"code":"not_found","message":"none"}}');
  });
  const upstream = createUpstream({ servers: [deadUrl, alive.url], token: noToken, clock: systemClock, agentId: 'test' });
  await assert.rejects(upstream.fetchEnvelope(REF, 'prod'), /none/);
  assert.equal(alive.hits(), 1);
  await upstream.close();
});

test('a token file that disappears keeps the last token and reports it; a new one is picked up', async () => {
  const dir = await tempDir();
  const path = join(dir, 'token');
  await writeFile(path, 'first-token\n');
  const clock = new ManualClock();
  const source = createTokenSource(path, clock, silent);
  assert.equal(source.current(), 'first-token');
  await unlink(path);
  clock.advance(TOKEN_RECHECK_INTERVAL_MS);
  assert.equal(source.current(), 'first-token');
  assert.equal(source.healthy, false);
  await writeFile(path, 'rotated-token-longer\n');
  clock.advance(TOKEN_RECHECK_INTERVAL_MS);
  assert.equal(source.current(), 'rotated-token-longer');
  assert.equal(source.healthy, true);
});

test('a Watch event for a namespace the agent does not serve is ignored and counted', async () => {
  const clock = new ManualClock();
  const metrics = createAgentMetrics({ entries: () => 0, bytes: () => 0 });
  const hub = new AppliedEventsHub();
  hub.setFloor(0);
  const sub = hub.subscribe({});
  const upstream = createUpstream({ servers: ['http://127.0.0.1:1'], token: noToken, clock, agentId: 'test' });
  cleanups.push(() => upstream.close());
  const cache = new ValueCache({ loader: async () => { throw new AppError('unavailable'); }, clock, ttl: 1000, maxStale: 1000, maxEntries: 10, maxBytes: 10_000, streamDownSince: () => undefined });
  const applier = new EventApplier({
    cache,
    deks: new DekStore(upstream, generateTransportKeyPair()),
    hub,
    prefixes: () => ['production/ml'],
    prefetch: () => [],
    env: 'prod',
    clock,
    jitterMs: 0,
    metrics,
    logger: silent,
  });
  applier.apply({ type: 'itemChanged', revision: 5, namespace: 'production/other', name: 'x', kind: 'secret', version: 1, env: 'base' });
  assert.equal(sub.pending, 0);
  applier.apply({ type: 'itemChanged', revision: 6, namespace: 'production/ml', name: 'x', kind: 'secret', version: 1, env: 'base' });
  assert.equal(sub.pending, 1);
  assert.match(await metrics.registry.metrics(), /config_sidecar_agent_ignored_events_total\{reason="outside-prefix"\} 1/);
});

test('the data listener drops a slow client and refuses a 10 MiB body, and keeps serving', async () => {
  const dir = await tempDir();
  const socketPath = join(dir, 'run', 'agent.sock');
  const server = createDataServer('socket', {
    deps: { prefixes: () => ['production'], podToken: Buffer.from('t'), env: 'prod', read: async () => { throw new AppError('not_found'); }, release: () => {} },
    serveSse: () => {},
    limits: { headersTimeoutMs: 300, requestTimeoutMs: 600 },
  });
  await listenSocket(server, socketPath);
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));

  // A client that never finishes its headers gets 408 and is disconnected.
  const slow = await new Promise<string>((resolve) => {
    const socket = connect(socketPath, () => socket.write('GET /v1/items/production/ml/db HTTP/1.1\r\nHost: agent\r\n'));
    let got = '';
    socket.setEncoding('utf8').on('data', (c: string) => (got += c));
    socket.on('close', () => resolve(got));
  });
  assert.match(slow, /^HTTP\/1\.1 408/);

  const big = await new Promise<string>((resolve) => {
    const socket = connect(socketPath, () => {
      socket.write(`GET /v1/items/production/ml/db HTTP/1.1\r\nHost: agent\r\nContent-Length: ${10 * 1024 * 1024}\r\n\r\n`);
      socket.write(Buffer.alloc(64 * 1024));
    });
    let got = '';
    socket.setEncoding('utf8').on('data', (c: string) => (got += c));
    socket.on('error', () => {});
    socket.on('close', () => resolve(got));
  });
  assert.match(big, /^HTTP\/1\.1 413/);
  assert.match(big, /payload_too_large/);

  const after = await new Promise<string>((resolve) => {
    const socket = connect(socketPath, () => socket.write('GET /v1/items/production/ml/db HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n'));
    let got = '';
    socket.setEncoding('utf8').on('data', (c: string) => (got += c));
    socket.on('close', () => resolve(got));
  });
  assert.match(after, /^HTTP\/1\.1 404/);
});
