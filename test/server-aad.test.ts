/**
 * The value AAD binds the environment layer, the kind and liveness (v2), so a
 * row moved between environments in the database is refused instead of
 * served; values sealed with the old layout (v1) still open on the server and
 * the agent, and the server re-seals them as v2 at its next start.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { generateTransportKeyPair, open, seal, sealedFromWire, unwrapDek, valueAad } from '../src/shared/crypto.ts';
import { checkDeksResponse, checkEnvelopeResponse } from '../src/shared/envelope-wire.ts';
import type { Checked } from '../src/shared/shape-check.ts';
import { http, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { socketGet, startAgentProcess, type AgentProcess } from './helpers/agent-process.ts';

/** The server's answer, checked as the agent checks it (the test fails on a shape the agent would refuse). */
function valid<T>(check: (json: unknown) => Checked<T>, json: unknown): T {
  const result = check(json);
  if (!result.ok) assert.fail(`response does not match the protocol: ${result.error}`);
  return result.value;
}

const NS = 'production/pay';
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function server(restart?: ServerProcess): Promise<ServerProcess> {
  const s = await startServerProcess(restart ? { dataDir: restart.dataDir, kek: restart.kek, rootToken: restart.rootToken } : {});
  cleanups.push(() => s.stop('SIGKILL'));
  return s;
}

function withDb<T>(s: ServerProcess, fn: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(join(s.dataDir, 'config-sidecar.db'));
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

test('swapping the env column of two versions in the database: prod is refused (decryption_failed), never served the dev secret', async () => {
  const s = await server();
  cleanups.push(() => removeDir(s.dataDir));
  const token = s.rootToken;
  assert.equal((await http(s.httpUrl, 'PUT', `/v1/items/${NS}/db-password?env=prod`, { token, body: { kind: 'secret', value: 'prod-only-secret' } })).status, 200);
  assert.equal((await http(s.httpUrl, 'PUT', `/v1/items/${NS}/db-password?env=dev`, { token, body: { kind: 'secret', value: 'dev-sandbox-secret' } })).status, 200);
  withDb(s, (db) => {
    db.exec(`UPDATE versions SET env = CASE env WHEN 'prod' THEN 'dev' ELSE 'prod' END WHERE namespace = '${NS}' AND name = 'db-password'`);
  });
  const res = await http(s.httpUrl, 'GET', `/v1/items/${NS}/db-password?env=prod`, { token });
  assert.notEqual(res.json?.value, 'dev-sandbox-secret', 'prod must never serve the dev secret');
  assert.equal(res.status, 500, res.text);
  assert.equal(res.json.error.code, 'decryption_failed');
});

test('v1-sealed values read on the server and through the agent, and are re-sealed as v2 at the next start (same value, same etag)', async () => {
  const first = await server();
  const dataDir = first.dataDir;
  cleanups.push(() => removeDir(dataDir));
  const token = first.rootToken;
  const put = await http(first.httpUrl, 'PUT', `/v1/items/${NS}/api-key?env=prod`, { token, body: { kind: 'secret', value: 'k-v1-sealed' } });
  assert.equal(put.status, 200, put.text);

  // Re-seal the stored row the way a build from before AAD v2 did.
  const transport = generateTransportKeyPair();
  const deks = valid(checkDeksResponse, (await http(first.httpUrl, 'POST', `/v1/deks/${NS}`, { token, body: { publicKey: transport.publicKeyBase64 } })).json);
  const wrapped = deks.keys.find((k) => k.version === deks.currentVersion);
  assert.ok(wrapped);
  const dek = unwrapDek(wrapped, transport, { namespace: NS, keyVersion: wrapped.version, senderPublicKey: deks.serverPublicKey });
  const id = { namespace: NS, name: 'api-key', version: put.json.version as number, env: 'prod', kind: 'secret', keyId: NS, keyVersion: wrapped.version } as const;
  const v1 = seal(dek, Buffer.from('k-v1-sealed'), valueAad(id, 1));
  withDb(first, (db) => {
    db.prepare('UPDATE versions SET iv = ?, ciphertext = ?, tag = ?, aad_version = 1 WHERE namespace = ? AND name = ?').run(v1.iv, v1.ciphertext, v1.tag, NS, 'api-key');
  });

  const before = await http(first.httpUrl, 'GET', `/v1/items/${NS}/api-key?env=prod`, { token });
  assert.equal(before.status, 200, before.text);
  assert.equal(before.json.value, 'k-v1-sealed', 'the server opens v1');
  const envelope = valid(checkEnvelopeResponse, (await http(first.httpUrl, 'GET', `/v1/envelopes/${NS}/api-key?env=prod`, { token })).json);
  assert.equal(envelope.layers[0]?.aadVersion, undefined, 'a v1 layer is sent without aadVersion, as an older server would');
  const agent: AgentProcess = await startAgentProcess(first, { prefixes: [NS], args: ['--env', 'prod'] });
  cleanups.push(() => agent.stop('SIGKILL'));
  const viaAgent = await socketGet(agent.socketPath, `/v1/items/${NS}/api-key`);
  assert.equal(viaAgent.status, 200, viaAgent.body.toString());
  assert.equal(viaAgent.json.value, 'k-v1-sealed', 'the agent opens v1');

  await first.stop('SIGTERM');
  const second = await server(first);
  await second.waitForLog((l) => l.msg === 'values re-sealed with the current AAD layout' && l.resealed === 1);
  assert.equal(withDb(second, (db) => (db.prepare('SELECT aad_version FROM versions WHERE namespace = ? AND name = ?').get(NS, 'api-key') as { aad_version: number }).aad_version), 2);
  const afterRestart = await http(second.httpUrl, 'GET', `/v1/items/${NS}/api-key?env=prod`, { token });
  assert.equal(afterRestart.json.value, 'k-v1-sealed');
  assert.equal(afterRestart.headers.etag, before.headers.etag, 'a re-seal is not a change');
  const v2 = valid(checkEnvelopeResponse, (await http(second.httpUrl, 'GET', `/v1/envelopes/${NS}/api-key?env=prod`, { token })).json).layers[0];
  assert.ok(v2);
  assert.equal(v2.aadVersion, 2);
  assert.equal(open(dek, sealedFromWire(v2), valueAad(id, 2)).toString(), 'k-v1-sealed');
  assert.throws(() => open(dek, sealedFromWire(v2), valueAad({ ...id, env: 'dev' }, 2)), /authentication/);
  dek.fill(0);
  assert.ok(!second.output().includes('k-v1-sealed') && !agent.output().includes('k-v1-sealed'), 'no value in any log');
});
