/**
 * The agent's acceptance tests with real processes: a real `config-sidecar
 * server` (SQLite, REST, gRPC Watch) and a real `config-sidecar agent`, over
 * the agent's real Unix socket and TCP listener. Time-dependent behaviour is
 * driven through the agent's test hooks (its OffsetClock, held fetches), never
 * by sleeping.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { spawn } from 'node:child_process';
import { CLI, http, metricValue, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { hook, openSse, putItem, socketGet, startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';

const ENVELOPE_ROUTE = 'route="/v1/envelopes/{path}"';

/** Sum of the server's envelope request counter across methods and statuses. */
async function envelopeRequests(server: ServerProcess): Promise<number> {
  const res = await http(server.adminUrl, 'GET', '/metrics');
  return res.text
    .split('\n')
    .filter((l) => l.startsWith('config_sidecar_server_http_requests_total{') && l.includes(ENVELOPE_ROUTE))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

describe('agent with a real server', () => {
  let server: ServerProcess;
  let agent: AgentProcess;

  before(async () => {
    server = await startServerProcess();
    await putItem(server, 'production/ml/db-password', { kind: 'secret', value: 'first-secret' });
    await putItem(server, 'production/ml/settings', { kind: 'config', value: { pool: { size: 4 }, mode: 'base' } });
    await putItem(server, 'production/ml/settings', { kind: 'config', value: { mode: 'prod' } }, 'prod');
    agent = await startAgentProcess(server, {
      prefixes: ['production/ml', 'production/tamper'],
      prefetch: ['production/ml/db-password'],
      args: ['--cache-ttl', '1h', '--refetch-jitter', '0'],
    });
    await waitReady(agent.adminUrl);
  });

  after(async () => {
    await agent?.stop();
    await server?.stop();
    await removeDir(agent?.dir ?? '');
    await removeDir(server?.dataDir ?? '');
  });

  test('serves a prefetched secret and a merged config over the socket with ETag, Age and revision', async () => {
    const secret = await socketGet(agent.socketPath, '/v1/items/production/ml/db-password');
    assert.equal(secret.status, 200);
    assert.equal(secret.json.value, 'first-secret');
    assert.ok(secret.headers.etag);
    assert.ok(secret.headers['x-config-revision']);
    assert.ok(secret.headers.age !== undefined);
    const config = await socketGet(agent.socketPath, '/v1/items/production/ml/settings');
    assert.deepEqual(config.json.value, { pool: { size: 4 }, mode: 'prod' });
    const raw = await socketGet(agent.socketPath, '/v1/items/production/ml/db-password?format=raw');
    assert.equal(raw.body.toString(), 'first-secret');
    const notModified = await socketGet(agent.socketPath, '/v1/items/production/ml/db-password', { 'if-none-match': String(secret.headers.etag) });
    assert.equal(notModified.status, 304);
  });

  test('200 concurrent reads of one cold key make exactly one upstream fetch', async () => {
    await putItem(server, 'production/ml/cold', { kind: 'secret', value: 'cold-value' });
    const before = await envelopeRequests(server);
    const results = await Promise.all(Array.from({ length: 200 }, () => socketGet(agent.socketPath, '/v1/items/production/ml/cold')));
    assert.ok(results.every((r) => r.status === 200 && r.json.value === 'cold-value'));
    assert.equal((await envelopeRequests(server)) - before, 1);
  });

  test('after a put or a rotate the next read is new and an SSE watcher gets the event (TTL 1h)', async () => {
    assert.equal((await socketGet(agent.socketPath, '/v1/items/production/ml/db-password')).json.value, 'first-secret');
    const sse = openSse(agent.socketPath, '/v1/watch?prefix=production/ml');
    await sse.opened;
    const put = await putItem(server, 'production/ml/db-password', { kind: 'secret', value: 'second-secret' });
    const changed = await sse.next();
    assert.equal(changed.event, 'changed');
    assert.equal(Number(changed.id), put.revision);
    assert.deepEqual([changed.data.namespace, changed.data.name, changed.data.revision], ['production/ml', 'db-password', put.revision]);
    assert.equal(changed.data.value, undefined, 'events never carry values');
    assert.equal((await socketGet(agent.socketPath, '/v1/items/production/ml/db-password')).json.value, 'second-secret');

    const rotate = await http(server.httpUrl, 'POST', '/v1/rotate/production/ml', { token: server.rootToken });
    assert.equal(rotate.status, 200, rotate.text);
    const rotated = await sse.next();
    assert.equal(rotated.event, 'rotated');
    assert.equal(rotated.data.version, rotate.json.keyVersion);
    // Values re-encrypted under the new key still open, and a change after the rotation arrives too.
    await putItem(server, 'production/ml/db-password', { kind: 'secret', value: 'third-secret' });
    assert.equal((await sse.next()).event, 'changed');
    assert.equal((await socketGet(agent.socketPath, '/v1/items/production/ml/db-password')).json.value, 'third-secret');
    sse.close();
  });

  test('the fill/invalidate race: a fetch held while the event lands is never served', async () => {
    await putItem(server, 'production/ml/racy', { kind: 'secret', value: 'old-racy' });
    await hook(agent.adminUrl, 'POST', '/debug/hold?key=production/ml/racy');
    const pending = socketGet(agent.socketPath, '/v1/items/production/ml/racy');
    // The agent has the old value in hand and is held before storing it.
    await hook(agent.adminUrl, 'GET', '/debug/held?key=production/ml/racy');
    const put = await putItem(server, 'production/ml/racy', { kind: 'secret', value: 'new-racy' });
    await hook(agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${put.revision}`);
    await hook(agent.adminUrl, 'POST', '/debug/release?key=production/ml/racy');
    const answered = await pending;
    assert.equal(answered.status, 200);
    assert.equal(answered.json.value, 'new-racy');
    assert.equal((await socketGet(agent.socketPath, '/v1/items/production/ml/racy')).json.value, 'new-racy');
    const superseded = await metricValue(agent.adminUrl, 'config_sidecar_agent_cache_superseded_fetches_total');
    assert.ok((superseded ?? 0) >= 1);
  });

  test('a tampered envelope is refused and not cached; other keys are still served', async () => {
    await putItem(server, 'production/tamper/victim', { kind: 'secret', value: 'victim-value' });
    await putItem(server, 'production/tamper/bystander', { kind: 'secret', value: 'bystander-value' });
    const db = new DatabaseSync(join(server.dataDir, 'config-sidecar.db'));
    try {
      const row = db.prepare("SELECT tag FROM versions WHERE namespace = 'production/tamper' AND name = 'victim'").get() as { tag: Uint8Array };
      const tag = Buffer.from(row.tag);
      tag[0] = (tag[0] ?? 0) ^ 0xff;
      db.prepare("UPDATE versions SET tag = ? WHERE namespace = 'production/tamper' AND name = 'victim'").run(tag);
    } finally {
      db.close();
    }
    const before = await envelopeRequests(server);
    const refused = await socketGet(agent.socketPath, '/v1/items/production/tamper/victim');
    assert.equal(refused.status, 500);
    assert.equal(refused.json.error.code, 'decryption_failed');
    const again = await socketGet(agent.socketPath, '/v1/items/production/tamper/victim');
    assert.equal(again.status, 500);
    assert.equal((await envelopeRequests(server)) - before, 2, 'nothing was cached: the second read went upstream');
    assert.equal((await socketGet(agent.socketPath, '/v1/items/production/tamper/bystander')).json.value, 'bystander-value');
    assert.ok(((await metricValue(agent.adminUrl, 'config_sidecar_agent_decryption_failures_total')) ?? 0) >= 2);
    assert.ok(!agent.output().includes('victim-value'));
  });

  test('TCP needs the pod token and refuses forwarded requests; socket 0660, token 0440', async () => {
    const token = (await import('node:fs/promises')).readFile(agent.tokenPath, 'utf8');
    const path = '/v1/items/production/ml/db-password';
    assert.equal((await http(agent.httpUrl, 'GET', path)).status, 401);
    assert.equal((await http(agent.httpUrl, 'GET', path, { headers: { 'x-config-sidecar-token': 'not-the-token' } })).status, 401);
    const ok = await http(agent.httpUrl, 'GET', path, { headers: { 'x-config-sidecar-token': await token } });
    assert.equal(ok.status, 200);
    const forwarded = await http(agent.httpUrl, 'GET', path, { headers: { 'x-config-sidecar-token': await token, 'x-forwarded-for': '10.1.2.3' } });
    assert.equal(forwarded.status, 403);
    assert.equal(forwarded.json.error.code, 'forwarded_request');
    assert.equal((await socketGet(agent.socketPath, path, { via: '1.1 proxy' })).status, 403);
    assert.equal((await stat(agent.socketPath)).mode & 0o777, 0o660);
    assert.equal((await stat(agent.tokenPath)).mode & 0o777, 0o440);
    if (agent.pod) {
      // Run as the pod runs it (uid 65532 in the fsGroup, no capabilities): the pod's group gets both.
      assert.equal((await stat(agent.socketPath)).gid, agent.pod.fsGroup);
      assert.equal((await stat(agent.tokenPath)).gid, agent.pod.fsGroup);
      assert.equal((await stat(agent.socketPath)).uid, agent.pod.agent.uid);
    }
  });

  test('doctor passes every check against a live agent and names the failing one otherwise', async () => {
    const doctor = (socket: string): Promise<{ code: number | null; out: string }> =>
      new Promise((resolve) => {
        const child = spawn(process.execPath, [CLI, 'doctor', '--socket', socket, '--admin-url', agent.adminUrl, '--server', server.httpUrl], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
        child.once('exit', (code) => resolve({ code, out }));
      });
    const healthy = await doctor(agent.socketPath);
    assert.equal(healthy.code, 0, healthy.out);
    assert.equal(healthy.out.split('\n').filter((l) => l.startsWith('ok')).length, 4);
    const broken = await doctor(join(agent.dir, 'nowhere', 'agent.sock'));
    assert.equal(broken.code, 1);
    assert.match(broken.out, /FAIL {2}socket reachable .*is the agent running/);
  });

  test('config-sidecar get prints the value through the agent, or from the server with --server', async () => {
    const run = (args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; out: string; err: string }> =>
      new Promise((resolve) => {
        const child = spawn(process.execPath, [CLI, 'get', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '', ...env } });
        let out = '';
        let err = '';
        child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
        child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
        child.once('exit', (code) => resolve({ code, out, err }));
      });
    await putItem(server, 'production/ml/cli-secret', { kind: 'secret', value: 'printed-secret' });
    const viaAgent = await run(['production/ml/cli-secret'], { CONFIG_SIDECAR_SOCKET: agent.socketPath });
    assert.deepEqual([viaAgent.code, viaAgent.out], [0, 'printed-secret']);
    const config = await run(['production/ml/settings', '--socket', agent.socketPath, '--json']);
    assert.equal(JSON.parse(config.out).value.mode, 'prod');
    const viaServer = await run(['production/ml/cli-secret', '--server', server.httpUrl, '--env', 'prod'], { CONFIG_SIDECAR_TOKEN: server.rootToken });
    assert.deepEqual([viaServer.code, viaServer.out], [0, 'printed-secret']);
    const missing = await run(['production/ml/nope', '--socket', agent.socketPath]);
    assert.equal(missing.code, 1);
    assert.match(missing.err, /not_found/);
    const down = await run(['production/ml/nope', '--socket', join(agent.dir, 'no.sock')]);
    assert.equal(down.code, 3);
  });

  test('watch streams beyond the per-agent limit get 429 with Retry-After', async () => {
    const streams = Array.from({ length: 256 }, () => openSse(agent.socketPath, '/v1/watch?prefix=production/ml'));
    try {
      await Promise.all(streams.map((s) => s.opened));
      const refused = await socketGet(agent.socketPath, '/v1/watch?prefix=production/ml');
      assert.equal(refused.status, 429);
      assert.equal(refused.json.error.code, 'rate_limited');
      assert.ok(refused.headers['retry-after']);
    } finally {
      for (const s of streams) s.close();
    }
  });

  test('bad input is answered and the agent keeps serving', async () => {
    assert.equal((await socketGet(agent.socketPath, '/v1/items/production/other/x')).status, 403);
    assert.equal((await socketGet(agent.socketPath, '/v1/items/production/ml/missing')).status, 404);
    assert.equal((await socketGet(agent.socketPath, '/v1/items/production/ml/%2e%2e/x')).status, 400);
    assert.equal((await socketGet(agent.socketPath, '/v1/items/production/ml/x', { 'x-big': 'a'.repeat(20_000) })).status, 431);
    assert.equal((await socketGet(agent.socketPath, '/v1/items/production/ml/db-password')).status, 200);
  });
});

describe('agent when the server goes away', () => {
  let server: ServerProcess;
  let agent: AgentProcess;

  after(async () => {
    await agent?.stop();
    await server?.stop();
    await removeDir(agent?.dir ?? '');
    await removeDir(server?.dataDir ?? '');
  });

  test('serves stale-marked within max-stale, 503 past it, resumes without resync when the server returns', async () => {
    server = await startServerProcess();
    await putItem(server, 'production/ml/db-password', { kind: 'secret', value: 'kept-value' });
    agent = await startAgentProcess(server, { prefixes: ['production/ml'], prefetch: ['production/ml/db-password'], args: ['--cache-ttl', '1h', '--max-stale', '5m'] });
    await waitReady(agent.adminUrl);
    const path = '/v1/items/production/ml/db-password';
    assert.equal((await socketGet(agent.socketPath, path)).headers['x-config-stale'], undefined);

    const { httpUrl, grpcAddress, adminUrl, dataDir, kek, rootToken } = server;
    await server.stop('SIGKILL');
    await agent.waitForLog((l) => l.msg === 'watch stream lost; serving from cache (stale-marked) within max-stale');
    await hook(agent.adminUrl, 'POST', '/debug/clock/advance?ms=60000');
    const stale = await socketGet(agent.socketPath, path);
    assert.equal(stale.status, 200);
    assert.equal(stale.json.value, 'kept-value');
    assert.equal(stale.headers.warning, '110 - "Response is Stale"');
    assert.ok(Number(stale.headers['x-config-stale']) >= 60);
    assert.equal((await http(agent.adminUrl, 'GET', '/readyz')).status, 200);
    assert.ok(((await metricValue(agent.adminUrl, 'config_sidecar_agent_cache_stale_serves_total')) ?? 0) >= 1);

    await hook(agent.adminUrl, 'POST', '/debug/clock/advance?ms=300000');
    const expired = await socketGet(agent.socketPath, path);
    assert.equal(expired.status, 503);
    assert.equal(expired.json.error.code, 'stale_expired');
    assert.equal((await http(agent.adminUrl, 'GET', '/readyz')).status, 503);

    const applied = (await hook(agent.adminUrl, 'GET', '/debug/state')).appliedRevision as number;
    assert.ok(applied > 0);
    const port = (url: string): string => url.slice(url.lastIndexOf(':') + 1);
    server = await startServerProcess({
      dataDir,
      kek,
      rootToken,
      args: ['--http-listen', `127.0.0.1:${port(httpUrl)}`, '--grpc-listen', grpcAddress, '--admin-listen', `127.0.0.1:${port(adminUrl)}`],
    });
    const reconnected = agent.logs.length;
    // Fire the pending reconnect timer now instead of waiting out the backoff.
    await hook(agent.adminUrl, 'POST', '/debug/clock/advance?ms=30000');
    const line = await agent.waitForLog((l) => l.msg === 'watch stream connected' && agent.logs.indexOf(l) >= reconnected);
    assert.equal(line.sinceRevision, applied, 'resumed from the applied revision');
    const fresh = await socketGet(agent.socketPath, path);
    assert.equal(fresh.status, 200);
    assert.equal(fresh.headers['x-config-stale'], undefined);
    await waitReady(agent.adminUrl);
    const put = await putItem(server, 'production/ml/db-password', { kind: 'secret', value: 'after-outage' });
    await hook(agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${put.revision}`);
    assert.equal((await socketGet(agent.socketPath, path)).json.value, 'after-outage');
    assert.ok(!agent.logs.some((l) => l.msg === 'resync required: cache dropped'));
  });

  test('SIGTERM drains, exits 0 and removes the socket', async () => {
    const code = await agent.stop('SIGTERM');
    assert.equal(code, 0);
    await assert.rejects(stat(agent.socketPath), /ENOENT/);
    assert.ok(agent.logs.some((l) => l.msg === 'agent stopped'));
  });
});
