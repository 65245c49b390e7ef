import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateTransportKeyPair, open, sealedFromWire, unwrapDek, valueAad } from '../src/shared/crypto.ts';
import { checkDeksResponse, checkEnvelopeResponse } from '../src/shared/envelope-wire.ts';
import type { Checked } from '../src/shared/shape-check.ts';
import { http, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

/** The server's answer, checked as the agent checks it (the test fails on a shape the agent would refuse). */
function valid<T>(check: (json: unknown) => Checked<T>, json: unknown): T {
  const result = check(json);
  if (!result.ok) assert.fail(`response does not match the protocol: ${result.error}`);
  return result.value;
}

let server: ServerProcess | undefined;
after(async () => {
  await server?.stop('SIGKILL');
  if (server) await removeDir(server.dataDir);
});

test('a DEK response unwraps only with the caller’s key, for its own namespace and version, and opens the envelope', async () => {
  server = await startServerProcess();
  const token = server.rootToken;
  const ns = 'production/ml-service';
  assert.equal((await http(server.httpUrl, 'PUT', `/v1/items/${ns}/api-key`, { token, body: { kind: 'secret', value: 'k-123' } })).status, 200);
  const rotated = await http(server.httpUrl, 'POST', `/v1/rotate/${ns}`, { token });
  assert.equal(rotated.status, 200, rotated.text);
  assert.equal((await http(server.httpUrl, 'PUT', '/v1/items/production/other/x', { token, body: { kind: 'secret', value: 'y' } })).status, 200);

  const agent = generateTransportKeyPair();
  const res = await http(server.httpUrl, 'POST', `/v1/deks/${ns}`, { token, body: { publicKey: agent.publicKeyBase64 } });
  assert.equal(res.status, 200, res.text);
  const deks = valid(checkDeksResponse, res.json);
  assert.equal(deks.currentVersion, rotated.json.keyVersion);
  assert.ok(deks.keys.some((k) => k.version === deks.currentVersion), 'the current version is offered');
  const again = valid(checkDeksResponse, (await http(server.httpUrl, 'POST', `/v1/deks/${ns}`, { token, body: { publicKey: agent.publicKeyBase64 } })).json);
  assert.notEqual(again.serverPublicKey, deks.serverPublicKey, 'a fresh ephemeral key per response');

  const keys = new Map<number, Buffer>();
  for (const wrapped of deks.keys) {
    const binding = { namespace: ns, keyVersion: wrapped.version, senderPublicKey: deks.serverPublicKey };
    keys.set(wrapped.version, unwrapDek(wrapped, agent, binding));
    assert.throws(() => unwrapDek(wrapped, agent, { ...binding, namespace: 'production/other' }), /authentication/, 'not as another namespace’s key');
    assert.throws(() => unwrapDek(wrapped, agent, { ...binding, keyVersion: wrapped.version + 1 }), /authentication/, 'not as another version');
    assert.throws(() => unwrapDek(wrapped, generateTransportKeyPair(), binding), /authentication/, 'not with another private key');
  }

  const envelope = valid(checkEnvelopeResponse, (await http(server.httpUrl, 'GET', `/v1/envelopes/${ns}/api-key?env=prod`, { token })).json);
  const layer = envelope.layers.at(-1);
  assert.ok(layer);
  assert.equal(layer.keyVersion, deks.currentVersion, 'current values were re-encrypted under the new key');
  assert.equal(layer.aadVersion, 2, 'sealed with the v2 AAD layout');
  const aad = valueAad({ namespace: ns, name: 'api-key', version: layer.version, env: layer.env, kind: envelope.kind, keyId: layer.keyId, keyVersion: layer.keyVersion }, 2);
  assert.equal(open(keys.get(layer.keyVersion) as Buffer, sealedFromWire(layer), aad).toString(), 'k-123');
  assert.ok(!server.output().includes('k-123'));
});
