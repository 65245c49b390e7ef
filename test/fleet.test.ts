/**
 * Fleet convergence with real processes: agents report over FleetService,
 * GET /v1/agents shows who applied what (RBAC agents:read, filtered by the
 * agents' prefixes), a killed agent shows silent once it misses three reports
 * and leaves after --agent-expiry (the server's clock is moved through its
 * test hook, no sleeping), and a service-account
 * token can only report as its own pod.
 */
import type { AgentView } from '../src/shared/fleet-proto.ts';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { GrpcStatus } from '../src/shared/errors.ts';
import { fleetClientConstructor, reportToWire, type AgentReport } from '../src/shared/fleet-proto.ts';
import { SILENT_AFTER_MS } from '../src/server/fleet/report-silence.ts';
import { startAgentProcess, type AgentProcess } from './helpers/agent-process.ts';
import { passFleetTime } from './helpers/fleet-time.ts';
import { CLI, http, makeTempDir, metricValue, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

const FLEET_TOKEN = 'fleet-team-a-token-0123456789abcdef';
const NOBODY_TOKEN = 'nobody-token-0123456789abcdef';
const TEAM_B_TOKEN = 'team-b-agent-token-0123456789abcdef';
const ISSUER = 'https://kubernetes.default.svc.cluster.local';
const AUDIENCE = 'config-sidecar';
const SA = 'system:serviceaccount:team-a:app';
const sha = (t: string) => createHash('sha256').update(t).digest('hex');
const CONVERGE_WAIT_MS = 5_000;

function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (output += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (output += c));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, output }));
  });
}

let server: ServerProcess;
let dir: string;
let signingKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
const agents: AgentProcess[] = [];

before(async () => {
  dir = await makeTempDir('cs-fleet-');
  const authFile = join(dir, 'auth.yaml');
  await writeFile(
    authFile,
    `version: 1
subjects:
  - name: fleet-viewer
    tokens:
      - sha256: ${sha(FLEET_TOKEN)}
  - name: nobody
    tokens:
      - sha256: ${sha(NOBODY_TOKEN)}
  - name: team-b-agent
    tokens:
      - sha256: ${sha(TEAM_B_TOKEN)}
roles:
  - name: fleet-team-a
    rules:
      - prefixes: [team-a]
        actions: [agents:read]
  - name: team-a-reader
    rules:
      - prefixes: [team-a]
        actions: [read]
  - name: team-b-reader
    rules:
      - prefixes: [team-b]
        actions: [read]
bindings:
  - role: fleet-team-a
    subjects: [fleet-viewer]
  - role: team-a-reader
    subjects: ["${SA}"]
  - role: team-b-reader
    subjects: [team-b-agent]
`,
  );
  const { publicKey, privateKey } = await generateKeyPair('RS256');
  signingKey = privateKey;
  const jwksFile = join(dir, 'jwks.json');
  await writeFile(jwksFile, JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k', alg: 'RS256', use: 'sig' }] }));
  server = await startServerProcess({
    args: ['--auth-file', authFile, '--jwt-issuer', ISSUER, '--jwt-audience', AUDIENCE, '--jwks-file', jwksFile, '--agent-expiry', '1m', '--rate-limit', '0'],
  });
});
after(async () => {
  for (const a of agents) await a.stop('SIGKILL');
  await server.stop('SIGKILL');
  await removeDir(server.dataDir);
  await removeDir(dir);
});

async function listAgents(token = server.rootToken): Promise<AgentView[]> {
  const res = await http(server.httpUrl, 'GET', '/v1/agents', { token });
  assert.equal(res.status, 200, res.text);
  return res.json.agents as AgentView[];
}

/** Polls the fleet view (what an operator would do) until `predicate` holds. */
async function waitAgents(predicate: (agents: AgentView[]) => boolean, what: string): Promise<AgentView[]> {
  const deadline = Date.now() + CONVERGE_WAIT_MS;
  for (;;) {
    const listed = await listAgents();
    if (predicate(listed)) return listed;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${CONVERGE_WAIT_MS} ms; last view ${JSON.stringify(listed)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const put = async (path: string, value: unknown): Promise<number> => {
  const res = await http(server.httpUrl, 'PUT', `/v1/items/${path}`, { token: server.rootToken, body: { kind: 'config', value } });
  assert.equal(res.status, 200, res.text);
  return res.json.revision as number;
};

async function jwt(pod: string): Promise<string> {
  return new SignJWT({ 'kubernetes.io': { namespace: 'team-a', pod: { name: pod, uid: 'u-1' }, serviceaccount: { name: 'app', uid: 'u-2' } } })
    .setProtectedHeader({ alg: 'RS256', kid: 'k' })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(SA)
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(signingKey);
}

function report(token: string, body: Partial<AgentReport> & { agentId: string }): Promise<{ code: number; details: string }> {
  const Client = fleetClientConstructor();
  const client = new Client(server.grpcAddress, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    Report(req: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null) => void): void;
  };
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  const full: AgentReport = { prefixes: ['team-a'], appliedRevision: 1, storeId: '', connected: true, health: 'ok', rollouts: [], ...body };
  return new Promise((resolve) => {
    client.Report(reportToWire(full), md, (err) => {
      client.close();
      resolve(err ? { code: err.code, details: err.details } : { code: GrpcStatus.OK, details: '' });
    });
  });
}

test('three agents a1..a3 converge in GET /v1/agents after a write; agents:read filters by prefix; a killed agent shows silent after three missed reports and leaves after --agent-expiry', async () => {
  const seed = await put('team-a/app/flag', 1);
  await put('team-b/app/flag', 1);
  for (const id of ['a1', 'a2', 'a3']) agents.push(await startAgentProcess(server, { prefixes: ['team-a'], args: ['--agent-id', id] }));
  // An agent of team B (reported directly): not visible to a viewer of team A.
  assert.equal((await report(TEAM_B_TOKEN, { agentId: 'b1', prefixes: ['team-b'] })).code, GrpcStatus.OK);
  await waitAgents((l) => ['a1', 'a2', 'a3'].every((id) => l.some((a) => a.id === id && a.appliedRevision >= seed)), 'three agents listed');

  const revision = await put('team-a/app/flag', 2);
  const written = Date.now();
  const listed = await waitAgents((l) => ['a1', 'a2', 'a3'].every((id) => l.some((a) => a.id === id && a.appliedRevision >= revision)), `all three at ≥ ${revision}`);
  const convergedMs = Date.now() - written;
  assert.ok(convergedMs < CONVERGE_WAIT_MS, `converged in ${convergedMs} ms (target: within a second, measured in bench)`);
  const a1 = listed.find((a) => a.id === 'a1') as AgentView;
  assert.deepEqual({ subject: a1.subject, prefixes: a1.prefixes, connected: a1.connected, health: a1.health, lag: a1.lag }, { subject: 'root', prefixes: ['team-a'], connected: true, health: 'ok', lag: 0 });
  assert.ok(!Number.isNaN(Date.parse(a1.lastSeen)));

  assert.deepEqual((await listAgents(FLEET_TOKEN)).map((a) => a.id), ['a1', 'a2', 'a3'], 'agents:read on team-a shows only team-a agents');
  assert.ok((await listAgents()).some((a) => a.id === 'b1'));
  const denied = await http(server.httpUrl, 'GET', '/v1/agents', { token: NOBODY_TOKEN });
  assert.equal(denied.status, 403, denied.text);
  assert.match(denied.json.error.message, /agents:read/);
  assert.equal(await metricValue(server.adminUrl, 'config_sidecar_server_agents', 'state="connected"'), 4);

  // `status --item`: everyone serving team-a applied the item's latest revision (exit 0); a lagging agent makes it exit 1.
  const cli = { CONFIG_SIDECAR_TOKEN: server.rootToken, CONFIG_SIDECAR_SERVER: server.httpUrl };
  const ok = await runCli(['status', '--item', 'team-a/app/flag'], cli);
  assert.equal(ok.code, 0, ok.output);
  assert.match(ok.output, new RegExp(`team-a/app/flag: latest revision ${revision}; 3 of 3 agent\\(s\\) serving it have applied it`));
  assert.equal((await report(server.rootToken, { agentId: 'slow-1', appliedRevision: revision - 2 })).code, GrpcStatus.OK);
  const lagging = await runCli(['status', '--item', 'team-a/app/flag'], cli);
  assert.equal(lagging.code, 1, lagging.output);
  assert.match(lagging.output, /3 of 4 agent\(s\)[\s\S]*lagging:\n {2}slow-1 {2}applied \d+ \(2 behind\)/);
  const denied403 = await runCli(['status'], { ...cli, CONFIG_SIDECAR_TOKEN: NOBODY_TOKEN });
  assert.equal(denied403.code, 1);
  assert.match(denied403.output, /agents:read.*\(permission_denied\)/);

  // a3 is killed: once three of its reports are missed it is silent, not connected, with its last report time and why.
  const lastHeard = (await listAgents()).find((a) => a.id === 'a3')?.lastSeen;
  await (agents[2] as AgentProcess).stop('SIGKILL');
  await passFleetTime(server, new Map(['a1', 'a2'].map((id, i) => [id, agents[i] as AgentProcess])), SILENT_AFTER_MS + 1_000);
  const quiet = await listAgents();
  const a3 = quiet.find((a) => a.id === 'a3') as AgentView;
  assert.deepEqual({ connected: a3.connected, silent: a3.silent, lastSeen: a3.lastSeen }, { connected: false, silent: true, lastSeen: lastHeard }, JSON.stringify(a3));
  assert.match(a3.silentReason ?? '', /^no report for 3\d s \(agents report every 10 s; silent after 30 s\)/);
  for (const id of ['a1', 'a2']) {
    const live = quiet.find((a) => a.id === id) as AgentView;
    assert.deepEqual({ connected: live.connected, silent: live.silent, reason: live.silentReason }, { connected: true, silent: false, reason: undefined }, id);
  }
  assert.equal(await metricValue(server.adminUrl, 'config_sidecar_server_agents', 'state="connected"'), 2);
  assert.equal(await metricValue(server.adminUrl, 'config_sidecar_server_agents', 'state="silent"'), 3, 'a3, b1 and slow-1');
  assert.match((await runCli(['status'], cli)).output, /\n {2}a3 {2}applied \d+ {2}SILENT {2}ok/);

  // After the expiry only the agents that still report remain.
  const advanced = await http(server.adminUrl, 'POST', '/test/clock/advance?ms=61000');
  assert.equal(advanced.status, 200, advanced.text);
  const next = await put('team-a/app/flag', 3);
  const after = await waitAgents((l) => !l.some((a) => a.id === 'a3') && ['a1', 'a2'].every((id) => l.some((a) => a.id === id && a.appliedRevision >= next)), 'a3 expired, a1 and a2 current');
  assert.deepEqual(after.map((a) => a.id), ['a1', 'a2'], 'b1 and slow-1 (silent) expired too');
});

test('a service-account token reports only as its own pod; an id owned by another subject is refused; an agent with a mismatched --agent-id does not start', async () => {
  const podX = await jwt('pod-x');
  const other = await report(podX, { agentId: 'pod-y' });
  assert.equal(other.code, GrpcStatus.PERMISSION_DENIED, other.details);
  assert.match(other.details, /pod-x may only report as agent pod-x/);
  assert.equal((await report(podX, { agentId: 'pod-x' })).code, GrpcStatus.OK);
  assert.ok((await listAgents()).some((a) => a.id === 'pod-x' && a.subject.includes(SA)));

  const stolen = await report(TEAM_B_TOKEN, { agentId: 'pod-x', prefixes: ['team-b'] });
  assert.equal(stolen.code, GrpcStatus.PERMISSION_DENIED, stolen.details);
  const unreadable = await report(TEAM_B_TOKEN, { agentId: 'b-1', prefixes: ['team-a'] });
  assert.equal(unreadable.code, GrpcStatus.PERMISSION_DENIED, 'cannot claim to serve prefixes it may not read');
  const badId = await report(TEAM_B_TOKEN, { agentId: '../etc', prefixes: ['team-b'] });
  assert.equal(badId.code, GrpcStatus.INVALID_ARGUMENT);

  const tokenFile = join(dir, 'pod-x.jwt');
  await writeFile(tokenFile, podX, { mode: 0o600 });
  const run = await runCli(['agent', '--server', server.httpUrl, '--server-grpc', server.grpcAddress, '--token-file', tokenFile, '--prefix', 'team-a', '--agent-id', 'pod-z', '--socket', join(dir, 'z', 'a.sock'), '--http-listen', 'off', '--admin-listen', '127.0.0.1:0']);
  assert.notEqual(run.code, 0);
  assert.match(run.output, /--agent-id.*pod-z.*pod-x/);
});
