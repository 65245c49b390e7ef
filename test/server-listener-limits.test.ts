/**
 * Listeners cannot be starved and streams cannot be hoarded, through the real
 * server: idle connections past --max-connections are shed at once (oldest
 * request-less first) while clients keep being served; Watch streams are
 * capped per pod and Watch opens rate limited per pod; a reload that tightens
 * a static token's `expires` ends its open streams.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import { connect as connectHttp2, type Settings as Http2Settings } from 'node:http2';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { GrpcStatus } from '../src/shared/errors.ts';
import { GRPC_HTTP2_SETTINGS } from '../src/server/grpc-listener.ts';
import { http, makeTempDir, metricValue, openWatch, removeDir, startServerProcess, type ServerProcess, type WatchHandle } from './helpers/server-process.ts';

const TOKENS = { a: 'pod-a-token-0123456789abcdef', b: 'pod-b-token-0123456789abcdef', c: 'pod-c-token-0123456789abcdef' };
const sha = (t: string) => createHash('sha256').update(t).digest('hex');
const MAX_CONNECTIONS = 100;
const MAX_STREAMS = 3;
const MAX_GRPC_CONNECTIONS = 16;
const GRPC_FIRST_CALL_TIMEOUT_MS = 1_000;

let server: ServerProcess;
let dir: string;
let authFile: string;

function authYaml(cExpires?: string): string {
  const token = (name: keyof typeof TOKENS, expires?: string) => `  - name: pod-${name}\n    tokens: [{ sha256: ${sha(TOKENS[name])}${expires ? `, expires: ${expires}` : ''} }]\n`;
  return `version: 1
subjects:
${token('a')}${token('b')}${token('c', cExpires)}roles:
  - name: reader
    rules: [{ prefixes: [production/app], actions: [read] }]
bindings:
  - { role: reader, subjects: [pod-a, pod-b, pod-c] }
`;
}

before(async () => {
  dir = await makeTempDir('cs-limits-');
  authFile = join(dir, 'auth.yaml');
  await writeFile(authFile, authYaml());
  server = await startServerProcess({
    args: ['--auth-file', authFile, '--max-connections', String(MAX_CONNECTIONS), '--max-watch-streams-per-pod', String(MAX_STREAMS),
      '--max-grpc-connections',
      String(MAX_GRPC_CONNECTIONS),
      '--grpc-first-call-timeout',
      `${GRPC_FIRST_CALL_TIMEOUT_MS}ms`, '--watch-open-rate', '2'],
  });
  assert.equal((await http(server.httpUrl, 'PUT', '/v1/items/production/app/key', { token: server.rootToken, body: { kind: 'secret', value: 'v' } })).status, 200);
});
after(async () => {
  await server.stop('SIGKILL');
  await removeDir(server.dataDir);
  await removeDir(dir);
});

const watches: WatchHandle[] = [];
after(() => {
  for (const w of watches) w.close();
});
function watch(token: string): WatchHandle {
  const w = openWatch(server.grpcAddress, { prefixes: ['production/app'] }, token);
  watches.push(w);
  return w;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms).unref())]);
}

test(`idle connections past --max-connections (${MAX_CONNECTIONS}) are shed at once, oldest first, and requests are still served`, async () => {
  const url = new URL(server.httpUrl);
  const IDLE = 6 * MAX_CONNECTIONS;
  const sockets: Socket[] = [];
  let closed = 0;
  let enough: () => void = () => {};
  const shed = new Promise<void>((resolve) => {
    enough = resolve;
  });
  for (let i = 0; i < IDLE; i++) {
    const socket = connect(Number(url.port), url.hostname);
    socket.on('error', () => {});
    socket.on('close', () => {
      closed += 1;
      if (closed >= IDLE - MAX_CONNECTIONS) enough();
    });
    sockets.push(socket);
  }
  try {
    await withTimeout(shed, 8_000, `${IDLE} idle connections, ${closed} closed`);
    for (let i = 0; i < 20; i++) {
      const res = await http(server.httpUrl, 'GET', '/v1/items/production/app/key', { token: server.rootToken, headers: { connection: 'close' } });
      assert.equal(res.status, 200, `request ${i} during the flood: ${res.text}`);
    }
    const shedCount = (await metricValue(server.adminUrl, 'config_sidecar_server_connections_shed_total', 'reason="oldest_pending"')) ?? 0;
    assert.ok(shedCount >= IDLE - MAX_CONNECTIONS, `shed ${shedCount}`);
  } finally {
    for (const s of sockets) s.destroy();
  }
});

/** Opens `count` TCP connections to `address` that send `greeting` (or nothing) and then idle; counts closes. */
function idleFlood(address: string, count: number, greeting?: string): { sockets: Socket[]; closedAtLeast(n: number, ms: number): Promise<void> } {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  const sockets: Socket[] = [];
  let closed = 0;
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  for (let i = 0; i < count; i++) {
    const socket = connect(port, host);
    socket.on('error', () => {});
    // Reading is what notices the server's FIN; the server's SETTINGS frame is discarded.
    socket.resume();
    if (greeting) socket.on('connect', () => socket.write(greeting));
    socket.on('close', () => {
      closed += 1;
      for (const w of waiters.filter((x) => closed >= x.n)) w.resolve();
    });
    sockets.push(socket);
  }
  return {
    sockets,
    closedAtLeast: (n, ms) =>
      new Promise<void>((resolve, reject) => {
        if (closed >= n) return resolve();
        waiters.push({ n, resolve });
        setTimeout(() => reject(new Error(`${count} idle gRPC connections: ${closed} closed within ${ms} ms, wanted ${n}`)), ms).unref();
      }),
  };
}

test(`idle connections past --max-grpc-connections (${MAX_GRPC_CONNECTIONS}) are shed at once and a Watch stream still opens`, async () => {
  const IDLE = 6 * MAX_GRPC_CONNECTIONS;
  const flood = idleFlood(server.grpcAddress, IDLE);
  try {
    await flood.closedAtLeast(IDLE - MAX_GRPC_CONNECTIONS, 8_000);
    const w = openWatch(server.grpcAddress, { prefixes: ['production/app'] }, server.rootToken);
    watches.push(w);
    assert.equal((await w.next(10_000)).type, 'heartbeat', 'a Watch opened and got its first heartbeat during the flood');
    const shed = (await metricValue(server.adminUrl, 'config_sidecar_server_grpc_connections_shed_total', 'reason="oldest_pending"')) ?? 0;
    // Counted as shed by the limit, not closed by the first-call timeout.
    assert.ok(shed >= IDLE - MAX_GRPC_CONNECTIONS, `shed ${shed}`);
    w.close();
  } finally {
    for (const s of flood.sockets) s.destroy();
  }
});

test('the gRPC listener announces HTTP/2 settings sized for agents: no header table, 16 KiB receive window and header list', async () => {
  const session = connectHttp2(`http://${server.grpcAddress}`);
  try {
    const settings = await new Promise<Http2Settings>((resolve, reject) => {
      session.once('remoteSettings', resolve);
      session.once('error', reject);
    });
    assert.deepEqual(
      { headerTableSize: settings.headerTableSize, initialWindowSize: settings.initialWindowSize, maxHeaderListSize: settings.maxHeaderListSize },
      GRPC_HTTP2_SETTINGS,
    );
  } finally {
    session.destroy();
  }
});

test(`gRPC connections that start no call within --grpc-first-call-timeout (${GRPC_FIRST_CALL_TIMEOUT_MS} ms) are closed; a served one stays`, async () => {
  const w = openWatch(server.grpcAddress, { prefixes: ['production/app'] }, server.rootToken);
  watches.push(w);
  assert.equal((await w.next()).type, 'heartbeat');
  const started = Date.now();
  // Silent sockets, and sockets that send the HTTP/2 preface and SETTINGS but never a call.
  const silent = idleFlood(server.grpcAddress, 4);
  const prefaceOnly = idleFlood(server.grpcAddress, 4, 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00');
  try {
    await Promise.all([silent.closedAtLeast(4, GRPC_FIRST_CALL_TIMEOUT_MS + 5_000), prefaceOnly.closedAtLeast(4, GRPC_FIRST_CALL_TIMEOUT_MS + 5_000)]);
    assert.ok(Date.now() - started >= GRPC_FIRST_CALL_TIMEOUT_MS - 100, `closed after ${Date.now() - started} ms, not before the timeout`);
    const timedOut = (await metricValue(server.adminUrl, 'config_sidecar_server_grpc_connections_shed_total', 'reason="first_call_timeout"')) ?? 0;
    assert.ok(timedOut >= 8, `first_call_timeout ${timedOut}`);
    // The Watch stream that started a call before the timeout is still live.
    assert.equal((await w.next()).type, 'heartbeat', 'the served connection keeps its stream');
  } finally {
    for (const s of [...silent.sockets, ...prefaceOnly.sockets]) s.destroy();
    w.close();
  }
});

test('an unauthenticated request does not keep its connection', async () => {
  const res = await http(server.httpUrl, 'GET', '/v1/items/production/app/key', { token: 'nope' });
  assert.equal(res.status, 401);
  assert.equal(res.headers.connection, 'close');
});

test(`Watch streams are capped per pod (${MAX_STREAMS}); another pod is unaffected`, async () => {
  const open = [watch(TOKENS.a), watch(TOKENS.a), watch(TOKENS.a)];
  for (const w of open) assert.equal((await w.next()).type, 'heartbeat');
  const extra = watch(TOKENS.a);
  const status = await withTimeout(extra.status, 10_000, 'the extra stream');
  assert.equal(status.code, GrpcStatus.RESOURCE_EXHAUSTED, status.details);
  assert.match(status.details, /--max-watch-streams-per-pod/);
  const other = watch(TOKENS.b);
  assert.equal((await other.next()).type, 'heartbeat', 'pod b still opens a stream');
  open[0]?.close();
  await withTimeout(open[0]!.status, 10_000, 'closing a stream');
  other.close();
});

test('Watch opens are rate limited per pod', async () => {
  const statuses: Array<{ code: number; details: string }> = [];
  // Burst 4 at 2/s: ten opens back to back must hit the limit.
  for (let i = 0; i < 10; i++) {
    const w = watch(TOKENS.b);
    const first = await Promise.race([w.next().then(() => undefined, () => undefined), w.status]);
    if (first) statuses.push(first);
    w.close();
  }
  const limited = statuses.find((s) => s.code === GrpcStatus.RESOURCE_EXHAUSTED && /Too many Watch opens/.test(s.details));
  assert.ok(limited, `one of ten rapid opens was refused: ${JSON.stringify(statuses)}`);
});

test('a reload that sets a static token’s expires in the past ends its open stream', async () => {
  const w = watch(TOKENS.c);
  assert.equal((await w.next()).type, 'heartbeat');
  const next = `${authFile}.next`;
  await writeFile(next, authYaml('2020-01-01T00:00:00Z'));
  await rename(next, authFile);
  const status = await withTimeout(w.status, 10_000, 'the stream of the expired token');
  assert.equal(status.code, GrpcStatus.UNAUTHENTICATED);
  assert.match(status.details, /expired/);
});
