/**
 * Fault & security suite: hostile input, table-driven over every REST route of
 * the server and the agent's API (Unix socket and TCP listener). Each case
 * prints what it tried and what held; after each, both processes still serve.
 * Sizes, depth, encodings, smuggling, slowloris, idle floods, JWT confusion
 * and subject collisions.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from 'jose';
import { http, makeTempDir, metricValue, openWatch, removeDir, startServerProcess, type ServerProcess } from '../helpers/server-process.ts';
import { socketGet, startAgentProcess, waitReady, type AgentProcess } from '../helpers/agent-process.ts';
import { rawRequest, type RawTarget } from '../helpers/raw-http.ts';
import { waitForMetric } from '../helpers/tcp-proxy.ts';

const ISSUER = 'https://kubernetes.default.svc.cluster.local';
const AUDIENCE = 'config-sidecar';
const DEPLOYER = 'deployer-token-0123456789abcdef';
const ITEM = 'team/app/secret';
/** Small enough that the gRPC flood below passes it several times over. */
const MAX_GRPC_CONNECTIONS = 256;
const sha = (t: string) => createHash('sha256').update(t).digest('hex');

let server: ServerProcess;
let agent: AgentProcess;
let dir: string;
let podToken: string;
let signingKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
let publicPem: string;
let serverTcp: RawTarget;
let agentTcp: RawTarget;

before(async () => {
  dir = await makeTempDir('cs-hostile-');
  await writeFile(
    join(dir, 'auth.yaml'),
    `version: 1
subjects:
  - name: ci-deployer
    tokens: [{ sha256: ${sha(DEPLOYER)} }]
roles:
  - name: writer
    rules: [{ prefixes: [team], actions: [read, list, write] }]
bindings:
  - { role: writer, subjects: [ci-deployer] }
`,
  );
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
  signingKey = privateKey;
  publicPem = await exportSPKI(publicKey);
  await writeFile(join(dir, 'jwks.json'), JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k', alg: 'RS256', use: 'sig' }] }));
  server = await startServerProcess({
    args: ['--auth-file', join(dir, 'auth.yaml'), '--jwt-issuer', ISSUER, '--jwt-audience', AUDIENCE, '--jwks-file', join(dir, 'jwks.json'), '--max-body', '64KiB', '--rate-limit', '0', '--max-grpc-connections', String(MAX_GRPC_CONNECTIONS)],
  });
  const put = await http(server.httpUrl, 'PUT', `/v1/items/${ITEM}`, { token: server.rootToken, body: { kind: 'secret', value: 's3cret-value' } });
  assert.equal(put.status, 200, put.text);
  agent = await startAgentProcess(server, { prefixes: ['team'], prefetch: [ITEM] });
  await waitReady(agent.adminUrl);
  podToken = await readFile(agent.tokenPath, 'utf8');
  const s = new URL(server.httpUrl);
  serverTcp = { host: s.hostname, port: Number(s.port) };
  const a = new URL(agent.httpUrl);
  agentTcp = { host: a.hostname, port: Number(a.port) };
});
after(async () => {
  await agent?.stop('SIGKILL');
  await server?.stop('SIGKILL');
  if (agent) await removeDir(agent.dir);
  if (server) await removeDir(server.dataDir);
  if (dir) await removeDir(dir);
});

async function jwt(claims: { sub?: string; aud?: string; exp?: number; alg?: string } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: claims.alg ?? 'RS256', kid: 'k' })
    .setIssuer(ISSUER)
    .setSubject(claims.sub ?? 'system:serviceaccount:team:app')
    .setAudience(claims.aud ?? AUDIENCE)
    .setIssuedAt(now - 10)
    .setExpirationTime(claims.exp ?? now + 600)
    .sign(signingKey);
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');
function unsignedJwt(sub: string): string {
  const now = Math.floor(Date.now() / 1000);
  return `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${b64url(JSON.stringify({ iss: ISSUER, aud: AUDIENCE, sub, exp: now + 600 }))}.`;
}
/** The classic confusion: HS256 keyed with the issuer's public key. */
function hmacWithPublicKey(sub: string): string {
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid: 'k' }))}.${b64url(JSON.stringify({ iss: ISSUER, aud: AUDIENCE, sub, exp: now + 600 }))}`;
  return `${head}.${createHmac('sha256', publicPem).update(head).digest('base64url')}`;
}

interface Outcome {
  readonly status: number;
  readonly code?: string | undefined;
  readonly note?: string;
}

async function still(): Promise<void> {
  const s = await http(server.httpUrl, 'GET', `/v1/items/${ITEM}`, { token: server.rootToken });
  assert.equal(s.status, 200, 'the server still serves');
  assert.equal(s.json.value, 's3cret-value');
  const a = await socketGet(agent.socketPath, `/v1/items/${ITEM}`);
  assert.equal(a.status, 200, 'the agent still serves');
}

const srv = async (method: string, path: string, options: Parameters<typeof http>[3] = {}): Promise<Outcome> => {
  const res = await http(server.httpUrl, method, path, options);
  return { status: res.status, code: res.json?.error?.code };
};
const raw = async (target: () => RawTarget, bytes: string | Buffer, timeoutMs?: number): Promise<Outcome> => {
  const res = await rawRequest(target(), bytes, timeoutMs);
  const code = /"code":"([a-z_]+)"/.exec(res.body)?.[1];
  return { status: res.status, code, note: `${res.ended} after ${res.ms} ms` };
};

const nested = (depth: number) => `${'['.repeat(depth)}1${']'.repeat(depth)}`;
const ROUTES_WITH_BODY: Array<[string, string]> = [
  ['PUT', `/v1/items/${ITEM}`],
  ['POST', `/v1/rollback/${ITEM}`],
  ['POST', '/v1/deks/team/app'],
];
const ROUTES: Array<[string, string]> = [
  ['GET', `/v1/items/${ITEM}`],
  ['DELETE', `/v1/items/${ITEM}?env=dev`],
  ['GET', '/v1/list/team'],
  ['GET', `/v1/history/${ITEM}`],
  ['POST', '/v1/rotate/team/app'],
  ['GET', `/v1/envelopes/${ITEM}`],
  ...ROUTES_WITH_BODY,
];

interface Case {
  readonly name: string;
  readonly send: () => Promise<Outcome>;
  /** Acceptable statuses (the first is the usual one). */
  readonly expect: readonly number[];
  readonly code?: string;
}

const cases: Case[] = [
  // --- authentication on every route ---
  ...ROUTES.flatMap(([method, path]): Case[] => [
    { name: `${method} ${path} without a token`, send: () => srv(method, path), expect: [401], code: 'unauthenticated' },
    { name: `${method} ${path} with alg:none claiming root`, send: () => srv(method, path, { token: unsignedJwt('root') }), expect: [401], code: 'unauthenticated' },
    { name: `${method} ${path} with HS256 keyed by the public key`, send: async () => srv(method, path, { token: hmacWithPublicKey('root') }), expect: [401], code: 'unauthenticated' },
  ]),
  // --- sizes, depth, encodings on every body route ---
  ...ROUTES_WITH_BODY.flatMap(([method, path]): Case[] => [
    { name: `${method} ${path} 10 MB body`, send: () => srv(method, path, { token: server.rootToken, rawBody: Buffer.alloc(10 * 1024 * 1024, 0x20) }), expect: [413], code: 'payload_too_large' },
    { name: `${method} ${path} JSON nested 5,000 deep`, send: () => srv(method, path, { token: server.rootToken, rawBody: `{"kind":"config","value":${nested(5_000)}}` }), expect: [400], code: 'invalid_json' },
    { name: `${method} ${path} JSON nested 65 deep`, send: () => srv(method, path, { token: server.rootToken, rawBody: `{"a":${nested(64)}}` }), expect: [400], code: 'invalid_json' },
    { name: `${method} ${path} a __proto__ key`, send: () => srv(method, path, { token: server.rootToken, rawBody: '{"__proto__":{"kind":"config"},"version":1,"publicKey":"x"}' }), expect: [400], code: 'invalid_json' },
    { name: `${method} ${path} invalid UTF-8`, send: () => srv(method, path, { token: server.rootToken, rawBody: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]) }), expect: [400] },
    { name: `${method} ${path} UTF-16 with BOM`, send: () => srv(method, path, { token: server.rootToken, rawBody: Buffer.from('\ufeff{"kind":"secret","value":"x"}', 'utf16le') }), expect: [400] },
    { name: `${method} ${path} empty body`, send: () => srv(method, path, { token: server.rootToken, rawBody: '' }), expect: [400], code: 'invalid_json' },
  ]),
  // --- paths ---
  { name: 'dot-dot segment', send: () => srv('GET', '/v1/items/team/../app/secret', { token: server.rootToken }), expect: [400], code: 'invalid_path' },
  { name: 'encoded dot-dot', send: () => srv('GET', '/v1/items/team/%2e%2e/secret', { token: server.rootToken }), expect: [400], code: 'invalid_path' },
  { name: 'encoded slash', send: () => srv('GET', '/v1/items/team/a%2Fb/secret', { token: server.rootToken }), expect: [400], code: 'invalid_path' },
  { name: 'NUL in a segment', send: () => srv('GET', '/v1/items/team/a%00b/secret', { token: server.rootToken }), expect: [400], code: 'invalid_path' },
  { name: 'a 12 KB path', send: () => srv('GET', `/v1/items/team/${'a'.repeat(12_000)}/x`, { token: server.rootToken }), expect: [400, 414, 431] },
  { name: '20 KB of headers', send: () => srv('GET', `/v1/items/${ITEM}`, { token: server.rootToken, headers: { 'x-pad': 'p'.repeat(20_000) } }), expect: [431], code: 'headers_too_large' },
  // --- request smuggling (server REST and agent TCP) ---
  ...(['server', 'agent'] as const).flatMap((who): Case[] => {
    const target = () => (who === 'server' ? serverTcp : agentTcp);
    const path = `/v1/items/${ITEM}`;
    return [
      { name: `${who}: CL + TE`, send: () => raw(target, `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n`), expect: [400] },
      { name: `${who}: TE + CL`, send: () => raw(target, `POST ${path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n`), expect: [400] },
      // The agent refuses a tokenless request before any body and closes the connection, so 401 holds too.
      { name: `${who}: obfuscated TE`, send: () => raw(target, `POST ${path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`), expect: who === 'agent' ? [400, 401, 501] : [400, 501] },
      { name: `${who}: two Content-Lengths`, send: () => raw(target, `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab`), expect: [400] },
      { name: `${who}: bare LF line endings`, send: () => raw(target, `GET ${path} HTTP/1.1\nHost: x\n\n`), expect: [400] },
      { name: `${who}: obs-fold header`, send: () => raw(target, `GET ${path} HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n`), expect: [400] },
    ];
  }),
  // --- JWT confusion and subject collisions ---
  { name: 'JWT with a wrong audience', send: async () => srv('GET', `/v1/items/${ITEM}`, { token: await jwt({ aud: 'other' }) }), expect: [401], code: 'unauthenticated' },
  { name: 'expired JWT', send: async () => srv('GET', `/v1/items/${ITEM}`, { token: await jwt({ exp: Math.floor(Date.now() / 1000) - 60 }) }), expect: [401], code: 'unauthenticated' },
  { name: 'JWT whose sub is "root"', send: async () => srv('GET', `/v1/items/${ITEM}`, { token: await jwt({ sub: 'root' }) }), expect: [403], code: 'permission_denied' },
  { name: 'JWT whose sub is the static subject "ci-deployer"', send: async () => srv('PUT', `/v1/items/${ITEM}`, { token: await jwt({ sub: 'ci-deployer' }), body: { kind: 'secret', value: 'x' } }), expect: [403], code: 'permission_denied' },
  { name: 'a static token used as a JWT-shaped string', send: () => srv('GET', `/v1/items/${ITEM}`, { token: `${DEPLOYER}.x.y` }), expect: [401], code: 'unauthenticated' },
  // --- the agent's API ---
  { name: 'agent TCP without the pod token', send: async () => ({ status: (await http(agent.httpUrl, 'GET', `/v1/items/${ITEM}`)).status }), expect: [401] },
  { name: 'agent TCP with a wrong pod token', send: async () => ({ status: (await http(agent.httpUrl, 'GET', `/v1/items/${ITEM}`, { headers: { 'x-config-sidecar-token': 'x'.repeat(43) } })).status }), expect: [401] },
  { name: 'agent TCP with X-Forwarded-For', send: async () => ({ status: (await http(agent.httpUrl, 'GET', `/v1/items/${ITEM}`, { headers: { 'x-config-sidecar-token': podToken, 'x-forwarded-for': '10.0.0.1' } })).status }), expect: [403] },
  { name: 'agent socket: dot-dot', send: async () => ({ status: (await socketGet(agent.socketPath, '/v1/items/team/../etc/passwd')).status }), expect: [400] },
  { name: 'agent socket: outside its prefixes', send: async () => ({ status: (await socketGet(agent.socketPath, '/v1/items/other/app/x')).status }), expect: [403] },
  { name: 'agent socket: POST', send: () => raw(() => ({ socketPath: agent.socketPath }), `POST /v1/items/${ITEM} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}`), expect: [405] },
  { name: 'agent socket: 20 KB of headers', send: async () => ({ status: (await socketGet(agent.socketPath, `/v1/items/${ITEM}`, { 'x-pad': 'p'.repeat(20_000) })).status }), expect: [431] },
  { name: 'agent socket: unknown route', send: async () => ({ status: (await socketGet(agent.socketPath, '/v1/../../admin')).status }), expect: [400, 404] },
];

for (const c of cases) {
  test(`hostile input: ${c.name}`, async (t) => {
    const got = await c.send();
    t.diagnostic(`tried: ${c.name}; got ${got.status}${got.code ? ` ${got.code}` : ''}${got.note ? ` (${got.note})` : ''}; expected ${c.expect.join('|')}${c.code ? ` ${c.code}` : ''}`);
    assert.ok(c.expect.includes(got.status), `${c.name}: status ${got.status}, expected ${c.expect.join(' or ')}`);
    if (c.code && got.code !== undefined) assert.equal(got.code, c.code);
    await still();
    t.diagnostic('held: refused with a 4xx, both processes still serve');
  });
}

/** Opens `count` connections that send `prefix` (or nothing) and then stall. */
async function stalled(target: RawTarget, count: number, prefix: string): Promise<Socket[]> {
  const sockets: Socket[] = [];
  await new Promise<void>((resolve) => {
    let settled = 0;
    for (let i = 0; i < count; i++) {
      const s = 'socketPath' in target ? connect(target.socketPath) : connect(target.port, target.host);
      s.on('error', () => {});
      s.once('connect', () => {
        if (prefix) s.write(prefix);
        if (++settled === count) resolve();
      });
      s.once('error', () => {
        if (++settled === count) resolve();
      });
      sockets.push(s);
    }
  });
  return sockets;
}

test('slowloris: a request head that never ends is cut at the headers timeout (server and agent)', async (t) => {
  for (const [who, target] of [['server', serverTcp], ['agent', agentTcp]] as const) {
    const res = await rawRequest(target, `GET /v1/items/${ITEM} HTTP/1.1\r\nHost: x\r\nX-Slow: `, 20_000);
    t.diagnostic(`tried: ${who} slowloris head; the connection ended ${res.ended} after ${res.ms} ms with ${res.status || 'no status'}`);
    assert.notEqual(res.ended, 'timeout', `${who} kept a half-sent request open for 20 s`);
    assert.ok(res.ms < 15_000);
  }
  await still();
  t.diagnostic('held: cut within the 10 s headers timeout; both still serve');
});

test('idle and slow floods: 1,500 stalled connections on each listener do not lock clients out', async (t) => {
  for (const [who, target, read] of [
    ['server REST', () => serverTcp, () => http(server.httpUrl, 'GET', `/v1/items/${ITEM}`, { token: server.rootToken, headers: { connection: 'close' } })],
    ['agent TCP', () => agentTcp, () => http(agent.httpUrl, 'GET', `/v1/items/${ITEM}`, { headers: { 'x-config-sidecar-token': podToken, connection: 'close' } })],
    ['agent socket', () => ({ socketPath: agent.socketPath }), () => socketGet(agent.socketPath, `/v1/items/${ITEM}`, { connection: 'close' })],
  ] as const) {
    const sockets = await stalled(target(), 1_500, who === 'server REST' ? '' : 'GET / HTTP/1.1\r\n');
    try {
      let ok = 0;
      for (let i = 0; i < 20; i++) {
        try {
          if ((await read()).status === 200) ok += 1;
        } catch {
          // counted as a failure
        }
      }
      t.diagnostic(`tried: 1,500 stalled connections on the ${who}; ${ok}/20 reads answered`);
      assert.equal(ok, 20, `${who}: reads answered during the flood`);
    } finally {
      for (const s of sockets) s.destroy();
    }
  }
  t.diagnostic('held: the oldest request-less connections were shed; every read was answered');
});

test(`gRPC idle flood: 1,500 silent or preface-only connections past --max-grpc-connections (${MAX_GRPC_CONNECTIONS}) do not stop a Watch`, async (t) => {
  const [host, port] = [server.grpcAddress.slice(0, server.grpcAddress.lastIndexOf(':')), Number(server.grpcAddress.slice(server.grpcAddress.lastIndexOf(':') + 1))];
  const target = { host, port };
  const preface = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00';
  const sockets = [...(await stalled(target, 750, '')), ...(await stalled(target, 750, preface))];
  const w = openWatch(server.grpcAddress, { prefixes: ['team'] }, server.rootToken);
  try {
    const first = await w.next(10_000);
    // The Watch can be answered before the last stalled connections are accepted (and shed): wait for the count.
    const shedCount = async (): Promise<number | undefined> => metricValue(server.adminUrl, 'config_sidecar_server_grpc_connections_shed_total', 'reason="oldest_pending"');
    await waitForMetric(shedCount, (v) => (v ?? 0) >= 1_500 - MAX_GRPC_CONNECTIONS, 'the stalled connections shed', 10_000).catch(() => undefined);
    const shed = (await shedCount()) ?? 0;
    t.diagnostic(`tried: 1,500 stalled gRPC connections (half sent the HTTP/2 preface); a Watch got its first ${first.type}; ${shed} connections shed`);
    assert.equal(first.type, 'heartbeat');
    assert.ok(shed >= 1_500 - MAX_GRPC_CONNECTIONS, `shed ${shed}`);
  } finally {
    w.close();
    for (const s of sockets) s.destroy();
  }
  await still();
  t.diagnostic('held: the oldest call-less connections were shed; the Watch opened; the agent\'s own stream was kept');
});
