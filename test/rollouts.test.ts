/**
 * Staged rollouts with real processes: three agents (as uid 65532 in a pod
 * where the harness can) behind TCP proxies, so the server can restart on new
 * ports under them. A rollout at 30% serves the candidate through exactly one
 * agent (listed as the canary when it is created), the server's REST reads
 * stay stable and `?rollout=` reads the candidate; the rollout survives a
 * server restart; promote makes all three serve it. A second rollout whose
 * canary's application posts unhealthy rolls back by itself and every agent
 * serves the stable version again.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import type { AgentView } from '../src/shared/fleet-proto.ts';
import type { RolloutView } from '../src/shared/protocol.ts';
import { socketGet, startAgentProcess, type AgentProcess } from './helpers/agent-process.ts';
import { http, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.ts';

const ITEM = 'team-a/app/flag';
const WAIT_MS = 10_000;
const ROLLBACK_WAIT_MS = 5_000;

let server: ServerProcess;
let httpProxy: TcpProxy;
let grpcProxy: TcpProxy;
const agents = new Map<string, AgentProcess>();

const hostPort = (url: string): string => new URL(url).host;

before(async () => {
  server = await startServerProcess({ args: ['--rate-limit', '0'] });
  httpProxy = await startTcpProxy(hostPort(server.httpUrl));
  grpcProxy = await startTcpProxy(server.grpcAddress);
});
after(async () => {
  for (const a of agents.values()) await a.stop('SIGKILL');
  await server.stop('SIGKILL');
  await httpProxy.close();
  await grpcProxy.close();
  await removeDir(server.dataDir);
});

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
    last = value;
    await new Promise((r) => setTimeout(r, 25));
  }
}

const api = (method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown) => http(server.httpUrl, method, path, { token: server.rootToken, ...(body === undefined ? {} : { body }) });

async function served(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const [id, agent] of agents) {
    const res = await socketGet(agent.socketPath, `/v1/items/${ITEM}`);
    out[id] = res.status === 200 ? res.json.value : `HTTP ${res.status}`;
  }
  return out;
}

/** Waits until every agent serves what `expected` says (by agent id). */
function servedBecomes(what: string, expected: (id: string) => unknown): Promise<Record<string, unknown>> {
  return until(what, async () => {
    const now = await served();
    return [...agents.keys()].every((id) => now[id] === expected(id)) ? now : undefined;
  });
}

function postHealth(agent: AgentProcess, body: unknown): Promise<{ status: number; text: string }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath: agent.socketPath, path: '/v1/health', method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

async function connectedAgents(): Promise<AgentView[] | undefined> {
  const res = await api('GET', '/v1/agents');
  const list = (res.json?.agents ?? []) as AgentView[];
  return ['a1', 'a2', 'a3'].every((id) => list.some((a) => a.id === id && a.connected)) ? list : undefined;
}

async function rollout(id: string): Promise<RolloutView> {
  const res = await api('GET', `/v1/rollouts/${id}`);
  assert.equal(res.status, 200, res.text);
  return res.json as RolloutView;
}

test('30% of three agents: one canary serves the candidate, listed at creation; it survives a server restart; promote → all three; an unhealthy canary rolls the next rollout back', async () => {
  assert.equal((await api('PUT', `/v1/items/${ITEM}`, { kind: 'config', value: 'v1' })).status, 200);
  const upstream = { httpUrl: `http://${httpProxy.address}`, grpcAddress: grpcProxy.address, rootToken: server.rootToken };
  for (const id of ['a1', 'a2', 'a3']) agents.set(id, await startAgentProcess(upstream, { prefixes: ['team-a'], prefetch: [ITEM], args: ['--agent-id', id] }));
  await servedBecomes('all serve v1', () => 'v1');
  await until('three agents connected', connectedAgents);

  // --- a rollout at 30%: exactly one canary, listed in the answer ---
  const started = await api('POST', '/v1/rollouts', { changes: [{ item: ITEM, kind: 'config', value: 'v2' }], steps: [30, 100], bakeSeconds: 3600, maxUnhealthy: 0 });
  assert.equal(started.status, 201, started.text);
  const first = started.json as RolloutView;
  assert.equal(first.state, 'rolling');
  assert.deepEqual({ step: first.step, percent: first.percent, items: first.items }, { step: 0, percent: 30, items: [ITEM] });
  assert.equal(first.canary.length, 1, `ceil(30 × 3 / 100) = 1 canary: ${JSON.stringify(first.canary)}`);
  const canary = first.canary[0] as string;
  assert.ok(agents.has(canary));
  await servedBecomes('the canary serves v2, the others v1', (id) => (id === canary ? 'v2' : 'v1'));

  // REST reads without an agent get the stable version; ?rollout= the candidate; a direct write waits for the rollout.
  assert.equal((await api('GET', `/v1/items/${ITEM}`)).json.value, 'v1');
  assert.equal((await api('GET', `/v1/items/${ITEM}?rollout=${first.id}`)).json.value, 'v2');
  const blocked = await api('PUT', `/v1/items/${ITEM}`, { kind: 'config', value: 'direct' });
  assert.equal(blocked.status, 409, blocked.text);
  assert.match(blocked.json.error.message, new RegExp(`active rollout ${first.id}`));
  const second = await api('POST', '/v1/rollouts', { changes: [{ item: ITEM, kind: 'config', value: 'other' }], steps: [50, 100], bakeSeconds: 60, maxUnhealthy: 0 });
  assert.equal(second.status, 409, `one active rollout per item: ${second.text}`);
  // The canary reports serving the candidate (the fleet view shows it).
  await until('the canary reports the rollout', async () => ((await connectedAgents())?.find((a) => a.id === canary)?.rollouts.some((r) => r.rollout === first.id) ? true : undefined));

  // --- the server restarts (new ports; the proxies follow): the rollout is still rolling with the same canary ---
  await server.stop('SIGTERM');
  server = await startServerProcess({ dataDir: server.dataDir, kek: server.kek, rootToken: server.rootToken, args: ['--rate-limit', '0'] });
  httpProxy.retarget(hostPort(server.httpUrl));
  grpcProxy.retarget(server.grpcAddress);
  const afterRestart = await rollout(first.id);
  assert.deepEqual({ state: afterRestart.state, canary: afterRestart.canary }, { state: 'rolling', canary: [canary] });
  await until('three agents connected after the restart', connectedAgents);
  assert.deepEqual(await served(), Object.fromEntries([...agents.keys()].map((id) => [id, id === canary ? 'v2' : 'v1'])));

  // --- promote: all three serve v2, which is now the stable version ---
  const promoted = await api('POST', `/v1/rollouts/${first.id}/promote`);
  assert.equal(promoted.status, 200, promoted.text);
  assert.equal(promoted.json.state, 'completed');
  await servedBecomes('all serve v2', () => 'v2');
  assert.equal((await api('GET', `/v1/items/${ITEM}`)).json.value, 'v2');
  assert.equal((await api('POST', `/v1/rollouts/${first.id}/abort`)).status, 409, 'a completed rollout cannot be aborted');

  // --- a second rollout whose canary's application reports unhealthy rolls back by itself ---
  const bad = await api('POST', '/v1/rollouts', { changes: [{ item: ITEM, kind: 'config', value: 'v3' }], steps: [30, 100], bakeSeconds: 3600, maxUnhealthy: 0 });
  assert.equal(bad.status, 201, bad.text);
  const badView = bad.json as RolloutView;
  assert.equal(badView.canary.length, 1);
  const badCanary = agents.get(badView.canary[0] as string) as AgentProcess;
  await servedBecomes('the canary serves v3', (id) => (id === badView.canary[0] ? 'v3' : 'v2'));
  const refused = await postHealth(badCanary, { healthy: 'no' });
  assert.equal(refused.status, 400, refused.text);
  const posted = await postHealth(badCanary, { healthy: false, reason: 'db pool exhausted' });
  assert.equal(posted.status, 200, posted.text);
  const signalled = Date.now();
  const rolledBack = await until('rolled back', async () => {
    const view = await rollout(badView.id);
    return view.state === 'rolled_back' ? view : undefined;
  }, ROLLBACK_WAIT_MS);
  const tookMs = Date.now() - signalled;
  assert.match(rolledBack.reason ?? '', /db pool exhausted/);
  assert.deepEqual(rolledBack.unhealthy, [{ agent: badView.canary[0], reason: 'application unhealthy: db pool exhausted' }]);
  await servedBecomes('every agent serves v2 again', () => 'v2');
  assert.equal((await api('GET', `/v1/items/${ITEM}`)).json.value, 'v2');
  await server.waitForLog((l) => l.msg === 'rollout rolled back' && String(l.reason).includes('db pool exhausted'));
  const listed = await api('GET', '/v1/rollouts');
  assert.deepEqual((listed.json.rollouts as RolloutView[]).map((r) => [r.id, r.state]), [[badView.id, 'rolled_back'], [first.id, 'completed']]);
  assert.ok(tookMs < ROLLBACK_WAIT_MS, `rolled back ${tookMs} ms after the signal`);
});
