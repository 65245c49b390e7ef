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
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { AgentView } from '../src/shared/fleet-proto.ts';
import type { RolloutView } from '../src/shared/protocol.ts';
import { hook, startAgentProcess, type AgentProcess } from './helpers/agent-process.ts';
import { http, makeTempDir, metricValue, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.ts';
import { passFleetTime } from './helpers/fleet-time.ts';
import { postHealth, restApi, runCli, servedBecomes as servedBecomesFor, servedValues, until } from './helpers/rollout-stack.ts';

const ITEM = 'team-a/app/flag';
const ROLLBACK_WAIT_MS = 5_000;
/** Agents reconnect with capped (10 s), jittered backoff after the server was gone. */
const RECONNECT_WAIT_MS = 30_000;

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

const api = restApi(() => server);
const servedBecomes = (what: string, expected: (id: string) => unknown): Promise<Record<string, unknown>> => servedBecomesFor(agents, ITEM, what, expected);

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
  // The canary's Report reaches the new server before its Watch stream does (the two reconnect on their own
  // backoffs; issue 17, seen under load): a stream down for a server restart is not the candidate's fault.
  await server.stop('SIGTERM');
  const canaryAgent = agents.get(canary) as AgentProcess;
  await hook(canaryAgent.adminUrl, 'POST', '/debug/stream/pause');
  server = await startServerProcess({ dataDir: server.dataDir, kek: server.kek, rootToken: server.rootToken, args: ['--rate-limit', '0'] });
  const afterRestart = await rollout(first.id);
  assert.deepEqual({ state: afterRestart.state, canary: afterRestart.canary }, { state: 'rolling', canary: [canary] });
  // The new server drives the rollout (the old one's lease lapsed) before any agent reaches it: every report is judged.
  await server.waitForLog((l) => l.msg === 'rollout lease taken: this replica drives it' && l.rollout === first.id, RECONNECT_WAIT_MS);
  httpProxy.retarget(hostPort(server.httpUrl));
  grpcProxy.retarget(server.grpcAddress);
  await until('the canary reports its stream down to the new server', async () => {
    const list = ((await api('GET', '/v1/agents')).json?.agents ?? []) as AgentView[];
    return list.some((a) => a.id === canary && !a.connected) ? true : undefined;
  }, RECONNECT_WAIT_MS);
  await hook(canaryAgent.adminUrl, 'POST', '/debug/stream/resume');
  await until('three agents connected after the restart', connectedAgents, RECONNECT_WAIT_MS);
  assert.deepEqual(await servedValues(agents, ITEM), Object.fromEntries([...agents.keys()].map((id) => [id, id === canary ? 'v2' : 'v1'])));
  const reconnected = await rollout(first.id);
  assert.deepEqual({ state: reconnected.state, reason: reconnected.reason, unhealthy: reconnected.unhealthy }, { state: 'rolling', reason: undefined, unhealthy: [] });

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
  assert.deepEqual(rolledBack.unhealthy, [{ agent: badView.canary[0], reason: 'db pool exhausted' }]);
  await servedBecomes('every agent serves v2 again', () => 'v2');
  assert.equal((await api('GET', `/v1/items/${ITEM}`)).json.value, 'v2');
  await server.waitForLog((l) => l.msg === 'rollout rolled back' && String(l.reason).includes('db pool exhausted'));
  assert.equal(await metricValue(server.adminUrl, 'config_sidecar_server_rollout_transitions_total', 'state="rolled_back"'), 1);
  const listed = await api('GET', '/v1/rollouts');
  assert.deepEqual((listed.json.rollouts as RolloutView[]).map((r) => [r.id, r.state]), [[badView.id, 'rolled_back'], [first.id, 'completed']]);
  assert.ok(tookMs < ROLLBACK_WAIT_MS, `rolled back ${tookMs} ms after the signal`);
});

test('the CLI drives a rollout: start from a change file, the next step after the bake (server clock moved), pause holds it, resume, abort → stable everywhere; status exits 1', async () => {
  const dir = await makeTempDir('cs-rollout-cli-');
  try {
    const file = join(dir, 'changes.yaml');
    await writeFile(file, `changes:\n  - { item: ${ITEM}, kind: config, value: v4 }\n`);
    const bad = await runCli(server, ['rollout', 'start', '--from-file', file, '--steps', '60,30,100']);
    assert.equal(bad.code, 2, bad.output);
    assert.match(bad.output, /steps must increase/);
    const started = await runCli(server, ['rollout', 'start', '--from-file', file, '--steps', '30,60,100', '--bake', '60s', '--json']);
    assert.equal(started.code, 0, started.output);
    const view = JSON.parse(started.output) as RolloutView;
    assert.equal(view.canary.length, 1);
    const firstCanary = view.canary[0] as string;
    await servedBecomes('the canary serves v4', (id) => (id === firstCanary ? 'v4' : 'v2'));
    // Only a canary that applied the candidate passes the bake; wait for its report, then let the bake pass.
    await until('the canary reports the rollout', async () => ((await connectedAgents())?.find((a) => a.id === firstCanary)?.rollouts.some((r) => r.rollout === view.id) ? true : undefined));
    await passFleetTime(server, agents, 61_000);
    const second = await until('step 2 at 60%', async () => {
      const r = await rollout(view.id);
      return r.step === 1 ? r : undefined;
    });
    assert.equal(second.percent, 60);
    assert.equal(second.canary.length, 2, 'ceil(60 × 3 / 100) = 2');
    assert.ok(second.canary.includes(firstCanary), 'a canary stays a canary');
    await servedBecomes('two canaries serve v4', (id) => (second.canary.includes(id) ? 'v4' : 'v2'));

    const paused = await runCli(server, ['rollout', 'pause', view.id]);
    assert.equal(paused.code, 0, paused.output);
    assert.match(paused.output, new RegExp(`rollout ${view.id}: paused, step 2 of 3 \\(60%\\)`));
    await passFleetTime(server, agents, 61_000);
    const again = await runCli(server, ['rollout', 'pause', view.id]);
    assert.equal(again.code, 1, again.output);
    assert.match(again.output, /is paused; pause applies to a rolling rollout\. \(conflict\)/);
    assert.equal((await rollout(view.id)).step, 1, 'a paused rollout does not advance');
    assert.equal((await runCli(server, ['rollout', 'resume', view.id])).code, 0);
    const aborted = await runCli(server, ['rollout', 'abort', view.id]);
    assert.equal(aborted.code, 0, aborted.output);
    assert.match(aborted.output, /aborted[\s\S]*reason: {2}aborted by /);
    await servedBecomes('every agent serves v2 again', () => 'v2');
    const status = await runCli(server, ['rollout', 'status', view.id]);
    assert.equal(status.code, 1, 'status exits 1 for an aborted rollout');
    const list = await runCli(server, ['rollout', 'status']);
    assert.equal(list.code, 0, list.output);
    assert.match(list.output, new RegExp(`rollout ${view.id}: aborted`));
  } finally {
    await removeDir(dir);
  }
});

test('--app-health-url: the agent probes the application on loopback and reports what it answers, with the reason', async () => {
  let status = 503;
  const app = createServer((req, res) => {
    res.writeHead(req.url === '/healthz' ? status : 404).end();
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  try {
    const url = `http://127.0.0.1:${(app.address() as AddressInfo).port}/healthz`;
    const upstream = { httpUrl: `http://${httpProxy.address}`, grpcAddress: grpcProxy.address, rootToken: server.rootToken };
    const probed = await startAgentProcess(upstream, { prefixes: ['team-a'], args: ['--agent-id', 'a4', '--app-health-url', url] });
    try {
      const view = async (): Promise<AgentView | undefined> => ((await api('GET', '/v1/agents')).json?.agents as AgentView[] | undefined)?.find((a) => a.id === 'a4');
      const sick = await until('a4 reports its application unhealthy', async () => ((await view())?.appHealth === 'unhealthy' ? view() : undefined));
      assert.equal(sick?.healthReason, 'probe /healthz answered 503');
      status = 200;
      await until('a4 reports its application healthy', async () => ((await view())?.appHealth === 'healthy' ? true : undefined));
    } finally {
      await probed.stop('SIGKILL');
    }
  } finally {
    app.close();
  }
});

test('a rollout with no agent covering its item: no canaries; a key rotation keeps its candidate readable, retiring previous keys is refused while it is active', async () => {
  assert.equal((await api('PUT', '/v1/items/team-r/app/secret', { kind: 'secret', value: 'old-secret' })).status, 200);
  const started = await api('POST', '/v1/rollouts', { changes: [{ item: 'team-r/app/secret', kind: 'secret', value: 'new-secret' }], steps: [50, 100], bakeSeconds: 3600, maxUnhealthy: 0 });
  assert.equal(started.status, 201, started.text);
  const view = started.json as RolloutView;
  assert.deepEqual(view.canary, [], 'no agent serves team-r');
  const retire = await api('POST', '/v1/rotate/team-r/app?retire-previous=true');
  assert.equal(retire.status, 409, retire.text);
  assert.match(retire.json.error.message, new RegExp(`active rollout ${view.id}`));
  assert.equal((await api('POST', '/v1/rotate/team-r/app')).status, 200);
  assert.equal((await api('GET', `/v1/items/team-r/app/secret?rollout=${view.id}`)).json.value, 'new-secret', 'the candidate opens and is re-sealed under the new key');
  assert.equal((await api('GET', '/v1/items/team-r/app/secret')).json.value, 'old-secret');
  assert.equal((await api('POST', `/v1/rollouts/${view.id}/abort`)).status, 200);
  const ended = await api('GET', `/v1/items/team-r/app/secret?rollout=${view.id}`);
  assert.equal(ended.status, 409, 'an ended rollout\'s candidate is no longer served');
  assert.equal((await api('POST', '/v1/rotate/team-r/app?retire-previous=true')).status, 200);
});

test('RBAC: start needs write on every member, the view agents:read on every item, an action write; refusals are 403s naming what to grant', async () => {
  const { createHash } = await import('node:crypto');
  const sha = (t: string): string => createHash('sha256').update(t).digest('hex');
  const tokens = { writer: 'rollout-writer-token-0123456789', viewer: 'rollout-viewer-token-0123456789', other: 'rollout-other-token-0123456789' };
  const dir = await makeTempDir('cs-rollout-rbac-');
  const authFile = join(dir, 'auth.yaml');
  await writeFile(
    authFile,
    `version: 1
subjects:
${Object.entries(tokens).map(([name, token]) => `  - name: ${name}\n    tokens:\n      - sha256: ${sha(token)}`).join('\n')}
roles:
  - name: team-a-writer
    rules:
      - prefixes: [team-a]
        actions: [read, write]
  - name: team-a-viewer
    rules:
      - prefixes: [team-a]
        actions: [agents:read]
  - name: team-b-writer
    rules:
      - prefixes: [team-b]
        actions: [write, agents:read]
bindings:
  - role: team-a-writer
    subjects: [writer]
  - role: team-a-viewer
    subjects: [viewer]
  - role: team-b-writer
    subjects: [other]
`,
  );
  const guarded = await startServerProcess({ args: ['--auth-file', authFile, '--rate-limit', '0'] });
  try {
    const as = (token: string, method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown) => http(guarded.httpUrl, method, path, { token, ...(body === undefined ? {} : { body }) });
    assert.equal((await as(guarded.rootToken, 'PUT', '/v1/items/team-a/app/flag', { kind: 'config', value: 1 })).status, 200);
    const body = { changes: [{ item: 'team-a/app/flag', kind: 'config', value: 2 }], steps: [50, 100], bakeSeconds: 60, maxUnhealthy: 0 };
    const refused = await as(tokens.other, 'POST', '/v1/rollouts', body);
    assert.equal(refused.status, 403, refused.text);
    assert.match(refused.json.error.message, /may not write team-a/);
    const started = await as(tokens.writer, 'POST', '/v1/rollouts', body);
    assert.equal(started.status, 201, started.text);
    const id = started.json.id as string;
    const noView = await as(tokens.writer, 'GET', '/v1/rollouts');
    assert.equal(noView.status, 403, 'no agents:read grant anywhere');
    assert.match(noView.json.error.message, /agents:read/);
    assert.deepEqual(((await as(tokens.viewer, 'GET', '/v1/rollouts')).json.rollouts as RolloutView[]).map((r) => r.id), [id]);
    assert.deepEqual((await as(tokens.other, 'GET', '/v1/rollouts')).json.rollouts, [], 'agents:read on team-b only: not listed');
    assert.equal((await as(tokens.other, 'GET', `/v1/rollouts/${id}`)).status, 403);
    const viewerAbort = await as(tokens.viewer, 'POST', `/v1/rollouts/${id}/abort`);
    assert.equal(viewerAbort.status, 403, viewerAbort.text);
    assert.match(viewerAbort.json.error.message, /grant write on every namespace it changes/);
    assert.equal((await as(tokens.writer, 'POST', `/v1/rollouts/${id}/abort`)).status, 200);
  } finally {
    await guarded.stop('SIGKILL');
    await removeDir(guarded.dataDir);
    await removeDir(dir);
  }
});
