/**
 * Key rings end to end (issue 20): a real server and a real agent process (as
 * the pod runs it, where the harness works). A ring item written three times
 * with a 1h grace serves current + two previous through the server and the
 * agent; the jwks file is a key set `jose` imports, with no private member;
 * after the agent's clock passes the grace (the test-hook clock, no sleeping)
 * only current is served and the files re-render; `revokePrevious` drops the
 * previous versions at once. Then `retire-previous` leaves no agent holding
 * the old data-key version, and the audit names the retired versions.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { createLocalJWKSet, importJWK, type JWK } from 'jose';
import { ringResponse } from '../src/shared/protocol.ts';
import { SQLITE_FILE_NAME } from '../src/server/store/sqlite-store.ts';
import { defaultPod, hook, makeAgentDir, socketGet, startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';
import { makeVolume } from './helpers/pod-harness.ts';
import { http, metricValue, startServerProcess, type LogLine, type ServerProcess } from './helpers/server-process.ts';
import { waitForMetric } from './helpers/tcp-proxy.ts';

const TEST_TIMEOUT_MS = 120_000;
const HOUR = 3_600_000;
const ITEM = 'production/auth/signing-keys';
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];
const SNAPSHOT_WRITES = 'config_sidecar_agent_snapshot_writes_total';

/** Every private scalar written, to check none is ever printed. */
const privateScalars: string[] = [];

function signingJwk(kid: string): JWK {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...(privateKey.export({ format: 'jwk' }) as JWK), kid, alg: 'ES256', use: 'sig' };
  privateScalars.push(jwk.d as string);
  return jwk;
}

interface Stack {
  readonly server: ServerProcess;
  readonly agent: AgentProcess;
  readonly filesDir: string;
  published(file: string): Promise<LogLine>;
}

async function stack(t: { after(fn: () => unknown): void }, options: { snapshot?: boolean } = {}): Promise<Stack> {
  const cleanup: Array<() => unknown> = [];
  t.after(async () => {
    for (const step of cleanup.reverse()) await step();
  });
  const server = await startServerProcess();
  cleanup.push(async () => {
    await server.stop();
    await rm(server.dataDir, { recursive: true, force: true });
  });
  await write(server, 'k1', { ringGrace: '1h' });
  const pod = defaultPod();
  const dir = await makeAgentDir(pod, 'cs-rings-');
  cleanup.push(() => rm(dir, { recursive: true, force: true, maxRetries: 5 }));
  const configPath = join(dir, 'agent.yaml');
  writeFileSync(configPath, `files: ${JSON.stringify([{ path: 'jwks.json', items: [ITEM], format: 'jwks' }])}\n`);
  const filesDir = join(dir, 'files');
  if (pod) await makeVolume(filesDir, pod.fsGroup);
  const snapshotArgs: string[] = [];
  if (options.snapshot) {
    // An interval far beyond the test: a write can only come from requestNow.
    const snapshotDir = join(dir, 'snapshot');
    const volume = pod ? await makeVolume(snapshotDir, pod.fsGroup, { medium: 'Memory', sizeBytes: 8 * 1024 * 1024 }) : undefined;
    if (!pod) await mkdir(snapshotDir);
    cleanup.push(async () => volume?.unmount());
    snapshotArgs.push('--snapshot-dir', snapshotDir, '--snapshot-interval', '1h');
  }
  const agent = await startAgentProcess(server, { prefixes: ['production'], args: ['--config', configPath, '--files-dir', filesDir, '--cache-ttl', '1h', ...snapshotArgs] });
  cleanup.push(() => agent.stop());
  await waitReady(agent.adminUrl);
  const published = (file: string): Promise<LogLine> => {
    const from = agent.logs.length;
    return agent.waitForLog((l) => agent.logs.indexOf(l) >= from && l.msg === 'files published' && Array.isArray(l.files) && (l.files as string[]).includes(file));
  };
  return { server, agent, filesDir, published };
}

async function write(server: ServerProcess, kid: string, extra: Record<string, unknown> = {}): Promise<number> {
  const res = await http(server.httpUrl, 'PUT', `/v1/items/${ITEM}?env=prod`, { token: server.rootToken, body: { kind: 'config', value: signingJwk(kid), ...extra } });
  assert.equal(res.status, 200, res.text);
  return res.json.revision as number;
}

type Ring = { current: string; previous: string[] };

function kids(body: unknown): Ring {
  const ring = ringResponse.parse(body);
  const kid = (value: unknown): string => (value as { kid: string }).kid;
  return { current: kid(ring.current.value), previous: ring.previous.map((p) => kid(p.value)) };
}

async function serverRing(s: Stack): Promise<Ring> {
  const res = await http(s.server.httpUrl, 'GET', `/v1/items/${ITEM}?env=prod&ring=1`, { token: s.server.rootToken });
  assert.equal(res.status, 200, res.text);
  return kids(res.json);
}

async function agentRing(s: Stack): Promise<Ring> {
  const res = await socketGet(s.agent.socketPath, `/v1/items/${ITEM}?ring=1`);
  assert.equal(res.status, 200, res.body.toString());
  return kids(JSON.parse(res.body.toString()));
}

function jwksFile(s: Stack): { keys: JWK[] } {
  return JSON.parse(readFileSync(join(s.filesDir, 'jwks.json'), 'utf8')) as { keys: JWK[] };
}

test('a ring item written three times with a 1h grace: current + two previous on server and agent, a jwks file jose imports; the grace ends on the agent clock; revokePrevious drops them at once', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const s = await stack(t);
  assert.deepEqual(jwksFile(s).keys.map((k) => k.kid), ['k1']);
  let published = s.published('jwks.json');
  await write(s.server, 'k2');
  await published;
  published = s.published('jwks.json');
  const revision = await write(s.server, 'k3');
  await published;
  await hook(s.agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${revision}`);

  const expected = { current: 'k3', previous: ['k2', 'k1'] };
  assert.deepEqual(await serverRing(s), expected);
  assert.deepEqual(await agentRing(s), expected);

  const jwks = jwksFile(s);
  assert.deepEqual(jwks.keys.map((k) => k.kid), ['k3', 'k2', 'k1'], 'verifiers hold the current key and both previous ones');
  for (const key of jwks.keys) {
    for (const member of PRIVATE_MEMBERS) assert.equal(member in key, false, `no "${member}" in ${key.kid}`);
    const imported = await importJWK(key, 'ES256');
    assert.equal((imported as { type?: string }).type, 'public');
  }
  const keySet = createLocalJWKSet(jwks as Parameters<typeof createLocalJWKSet>[0]);
  const found = await keySet({ alg: 'ES256', kid: 'k1' });
  assert.equal((found as { type?: string }).type, 'public', 'jose resolves a previous key by kid');
  const viaApi = await socketGet(s.agent.socketPath, `/v1/items/${ITEM}?ring=1&format=jwks`);
  assert.equal(viaApi.status, 200);
  assert.equal(viaApi.headers['content-type'], 'application/jwk-set+json');
  assert.deepEqual(JSON.parse(viaApi.body.toString()), jwks, '?ring=1&format=jwks answers the file\'s bytes');
  const plain = await socketGet(s.agent.socketPath, `/v1/items/${ITEM}`);
  assert.equal((JSON.parse(plain.body.toString()) as { value: { kid: string } }).value.kid, 'k3', 'a plain read is unchanged');

  // revokePrevious ends every grace at once (server and agent); later versions join the ring again.
  published = s.published('jwks.json');
  const r4 = await write(s.server, 'k4', { revokePrevious: true });
  await published;
  await hook(s.agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${r4}`);
  assert.deepEqual(await serverRing(s), { current: 'k4', previous: [] });
  assert.deepEqual(await agentRing(s), { current: 'k4', previous: [] });
  assert.deepEqual(jwksFile(s).keys.map((k) => k.kid), ['k4']);
  published = s.published('jwks.json');
  const r5 = await write(s.server, 'k5');
  await published;
  await hook(s.agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${r5}`);
  assert.deepEqual(await agentRing(s), { current: 'k5', previous: ['k4'] });
  assert.deepEqual(jwksFile(s).keys.map((k) => k.kid), ['k5', 'k4']);

  // After the agent's clock passes the grace: only current, and the file re-renders.
  published = s.published('jwks.json');
  await hook(s.agent.adminUrl, 'POST', `/debug/clock/advance?ms=${HOUR + 1000}`);
  await published;
  assert.deepEqual(await agentRing(s), { current: 'k5', previous: [] });
  assert.deepEqual(jwksFile(s).keys.map((k) => k.kid), ['k5']);
  const printed = s.agent.output() + s.server.output();
  assert.deepEqual(privateScalars.filter((d) => printed.includes(d)), [], 'no private key is ever logged');
});

test('bad ring input gets a clear 400; a ring of symmetric keys is refused for jwks', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const s = await stack(t);
  const bad = await http(s.server.httpUrl, 'PUT', `/v1/items/${ITEM}`, { token: s.server.rootToken, body: { kind: 'secret', value: 'x', ringGrace: 'soon' } });
  assert.equal(bad.status, 400);
  assert.equal(bad.json.error.code, 'invalid_argument');
  assert.match(bad.json.error.message, /ringGrace must be a duration such as "24h"/);
  const inSet = await http(s.server.httpUrl, 'POST', '/v1/changes', { token: s.server.rootToken, body: { changes: [{ item: 'production/auth/hmac', kind: 'config', value: { kty: 'oct', k: 'c2VjcmV0', kid: 'h1' }, ringGrace: '-1h' }] } });
  assert.equal(inSet.status, 400);
  assert.match(inSet.json.error.message, /^changes\.0\.ringGrace must be/);
  const ok = await http(s.server.httpUrl, 'POST', '/v1/changes', { token: s.server.rootToken, body: { changes: [{ item: 'production/auth/hmac', kind: 'config', value: { kty: 'oct', k: 'c2VjcmV0', kid: 'h1' }, ringGrace: '1h' }] } });
  assert.equal(ok.status, 200, ok.text);
  const res = await socketGet(s.agent.socketPath, '/v1/items/production/auth/hmac?ring=1&format=jwks');
  assert.equal(res.status, 400);
  const body = JSON.parse(res.body.toString()) as { error: { code: string; message: string } };
  assert.equal(body.error.code, 'invalid_argument');
  assert.match(body.error.message, /only symmetric keys/);
  assert.ok(!res.body.toString().includes('c2VjcmV0'), 'the refusal never carries the key');
  const raw = await socketGet(s.agent.socketPath, `/v1/items/${ITEM}?ring=1&format=raw`);
  assert.equal(raw.status, 400);
  const withRollout = await http(s.server.httpUrl, 'GET', `/v1/items/${ITEM}?env=prod&ring=1&rollout=r-1`, { token: s.server.rootToken });
  assert.equal(withRollout.status, 400);
  assert.match(withRollout.json.error.message, /ring=1 reads the stable key ring/);
});

test('after rotate ?retire-previous=true no agent holds the old data-key version, its warm-restart snapshot is rewritten, history still reads, the old wrapped key is gone and the audit names it', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const s = await stack(t, { snapshot: true });
  const token = s.server.rootToken;
  const ns = 'production/auth';
  const snapshotWrites = async (): Promise<number> => (await metricValue(s.agent.adminUrl, SNAPSHOT_WRITES, 'outcome="ok"')) ?? 0;
  await write(s.server, 'k2');
  const before = await socketGet(s.agent.socketPath, `/v1/items/${ITEM}?ring=1`);
  assert.equal(before.status, 200);
  const state0 = await hook(s.agent.adminUrl, 'GET', '/debug/state');
  const writesBefore = await snapshotWrites();
  const rotated = await http(s.server.httpUrl, 'POST', `/v1/rotate/${ns}?retire-previous=true`, { token });
  assert.equal(rotated.status, 200, rotated.text);
  assert.deepEqual(rotated.json.retiredVersions, [1]);
  await waitForMetric(() => snapshotWrites(), (v) => (v ?? 0) > writesBefore, 'the warm-restart snapshot rewritten after the rotation', 20_000);
  assert.equal(rotated.json.keyVersion, 2);
  // The agent dropped its keys on the event; the next value it opens fetches only what is needed now.
  const r3 = await write(s.server, 'k3');
  await hook(s.agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${r3}`);
  assert.deepEqual(await agentRing(s), { current: 'k3', previous: ['k2', 'k1'] }, 'history (the ring members) still reads, under the new key');
  const state = await hook(s.agent.adminUrl, 'GET', '/debug/state');
  assert.deepEqual(state.dekVersions?.[ns], [2], `the agent holds only key 2 (was ${JSON.stringify(state0.dekVersions?.[ns])})`);
  const rollback = await http(s.server.httpUrl, 'POST', `/v1/rollback/${ITEM}`, { token, body: { version: 1 } });
  assert.equal(rollback.status, 200, rollback.text);
  const back = await http(s.server.httpUrl, 'GET', `/v1/items/${ITEM}?env=prod`, { token });
  assert.equal(back.json.value.kid, 'k1', 'the oldest version, re-sealed, rolls back');
  const db = new DatabaseSync(join(s.server.dataDir, SQLITE_FILE_NAME), { readOnly: true });
  try {
    assert.deepEqual((db.prepare('SELECT version FROM deks WHERE namespace = ?').all(ns) as Array<{ version: number }>).map((r) => r.version), [2]);
    const audit = db.prepare("SELECT detail FROM audit_log WHERE action = 'rotate' AND target = ?").get(ns) as { detail: string };
    assert.match(audit.detail, /keyVersion=2 retired=1 resealed=\d+/);
  } finally {
    db.close();
  }
  const refused = await http(s.server.httpUrl, 'POST', `/v1/rotate/${ns}?retire-previous=maybe`, { token });
  assert.equal(refused.status, 400);
  assert.match(refused.json.error.message, /retire-previous must be true or false/);
});
