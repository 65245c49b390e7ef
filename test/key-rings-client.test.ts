/**
 * Key rings from an application (issue 20's gap): the Node client's `getRing`
 * and `config-sidecar get --ring [--format jwks|pem-bundle]`, against a real
 * server and a real agent process (in the pod harness where it works). Then
 * the server goes away: a ring the agent holds is served stale-marked within
 * max-stale (the agent's test-hook clock, no sleeping) and the CLI says so; a
 * ring it does not hold, and one past max-stale, is a clear refusal.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { importJWK, type JWK } from 'jose';
import { createClient, type ConfigSidecarError } from '../src/client/index.ts';
import { hook, startAgentProcess, waitReady } from './helpers/agent-process.ts';
import { runCli } from './helpers/process.ts';
import { http, removeDir, startServerProcess } from './helpers/server-process.ts';

const TEST_TIMEOUT_MS = 120_000;
const SIGNING = 'production/auth/signing-keys';
const CA = 'production/auth/ca-bundle';
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];
const MAX_STALE_MS = 5 * 60_000;

function signingJwk(kid: string): JWK {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...(privateKey.export({ format: 'jwk' }) as JWK), kid, alg: 'ES256', use: 'sig' };
}

const cert = (seed: number): string => `-----BEGIN CERTIFICATE-----\n${Buffer.alloc(48, seed).toString('base64')}\n-----END CERTIFICATE-----\n`;

test('getRing and get --ring read a key ring through the agent (JSON, jwks, pem-bundle); with the server down a held ring is served stale-marked, then refused past max-stale', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const server = await startServerProcess();
  t.after(async () => {
    await server.stop('SIGKILL');
    await removeDir(server.dataDir);
  });
  const put = async (item: string, body: Record<string, unknown>): Promise<number> => {
    const res = await http(server.httpUrl, 'PUT', `/v1/items/${item}?env=prod`, { token: server.rootToken, body });
    assert.equal(res.status, 200, res.text);
    return res.json.revision as number;
  };
  const k1 = signingJwk('k1');
  await put(SIGNING, { kind: 'config', value: k1, ringGrace: '1h' });
  await put(SIGNING, { kind: 'config', value: signingJwk('k2') });
  await put(CA, { kind: 'secret', value: cert(1), ringGrace: '1h' });
  const last = await put(CA, { kind: 'secret', value: cert(2) });
  await put('production/auth/never-read', { kind: 'config', value: { kid: 'x' }, ringGrace: '1h' });

  const agent = await startAgentProcess(server, { prefixes: ['production'], args: ['--cache-ttl', '1h', '--max-stale', '5m'] });
  t.after(async () => {
    await agent.stop();
    await removeDir(agent.dir);
  });
  await waitReady(agent.adminUrl);
  await hook(agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${last}`);
  const client = createClient({ socketPath: agent.socketPath });
  t.after(() => client.close());
  const cliEnv = { CONFIG_SIDECAR_SOCKET: agent.socketPath };

  // The Node client: the parsed ring, typed.
  const ring = await client.getRing<{ kid: string; d?: string }>(SIGNING);
  assert.equal(ring.kind, 'config');
  assert.equal(ring.current.value.kid, 'k2');
  assert.deepEqual(ring.previous.map((p) => [p.version, p.value.kid]), [[1, 'k1']]);
  assert.ok(Date.parse(ring.previous[0]!.expiresAt) > Date.parse(ring.previous[0]!.retiredAt), 'each previous version says when it leaves the ring');
  assert.equal(ring.staleSeconds, 0);
  assert.match(ring.etag, /^".+~1"$/);

  const jwks = await client.getRing(SIGNING, { format: 'jwks' });
  assert.deepEqual(jwks.document.keys.map((k) => k.kid), ['k2', 'k1'], 'current first, then the previous key');
  for (const key of jwks.document.keys) {
    for (const member of PRIVATE_MEMBERS) assert.equal(member in key, false, `no "${member}" in ${String(key.kid)}`);
    assert.equal(((await importJWK(key as JWK, 'ES256')) as { type?: string }).type, 'public');
  }
  assert.equal(jwks.staleSeconds, 0);
  assert.equal(jwks.revision, ring.revision);

  const pem = await client.getRing(CA, { format: 'pem-bundle' });
  assert.equal(pem.document, cert(2) + cert(1), 'the certificates, current first');

  await assert.rejects(client.getRing(SIGNING, { format: 'yaml' as 'jwks' }), /format: json, jwks or pem-bundle/);
  await assert.rejects(client.getRing('production/auth/missing'), (err: ConfigSidecarError) => err.code === 'not_found' && err.status === 404);

  // The CLI: the same three shapes, and usage errors that say what to do.
  const cliRing = await runCli(['get', SIGNING, '--ring'], cliEnv);
  assert.equal(cliRing.code, 0, cliRing.stderr);
  const printed = JSON.parse(cliRing.stdout) as { current: { value: { kid: string } }; previous: Array<{ value: { kid: string } }> };
  assert.deepEqual([printed.current.value.kid, printed.previous.map((p) => p.value.kid)], ['k2', ['k1']]);
  const cliJwks = await runCli(['get', SIGNING, '--ring', '--format', 'jwks'], cliEnv);
  assert.equal(cliJwks.code, 0, cliJwks.stderr);
  assert.deepEqual(JSON.parse(cliJwks.stdout), jwks.document, 'the JWKS as the agent renders it');
  assert.ok(!cliJwks.stdout.includes(k1.d as string), 'no private member printed');
  const cliPem = await runCli(['get', CA, '--ring', '--format', 'pem-bundle'], cliEnv);
  assert.equal(cliPem.code, 0, cliPem.stderr);
  assert.equal(cliPem.stdout, cert(2) + cert(1));
  const noRing = await runCli(['get', SIGNING, '--format', 'jwks'], cliEnv);
  assert.equal(noRing.code, 2);
  assert.match(noRing.stderr, /--format renders a key ring: add --ring/);
  const pemAsJson = await runCli(['get', CA, '--ring', '--format', 'pem-bundle', '-o', 'json'], cliEnv);
  assert.equal(pemAsJson.code, 2);
  assert.match(pemAsJson.stderr, /pem-bundle prints PEM text: drop -o/);
  const symmetric = await runCli(['get', CA, '--ring', '--format', 'jwks'], cliEnv);
  assert.equal(symmetric.code, 2, 'a ring that cannot be a JWKS is refused, not printed');
  assert.match(symmetric.stderr, /cannot be rendered as jwks/);
  const fromServer = await runCli(['get', SIGNING, '--ring', '--server', server.httpUrl], { CONFIG_SIDECAR_TOKEN: server.rootToken });
  assert.equal(fromServer.code, 0, fromServer.stderr);
  assert.equal((JSON.parse(fromServer.stdout) as { current: { value: { kid: string } } }).current.value.kid, 'k2');
  const renderedByServer = await runCli(['get', SIGNING, '--ring', '--format', 'jwks', '--server', server.httpUrl], { CONFIG_SIDECAR_TOKEN: server.rootToken });
  assert.equal(renderedByServer.code, 2);
  assert.match(renderedByServer.stderr, /rendered by the agent; the server answers a ring as JSON/);

  // The server goes away: the held ring is served, stale-marked like a value.
  await server.stop('SIGKILL');
  await agent.waitForLog((l) => l.msg === 'watch stream lost; serving from cache (stale-marked) within max-stale');
  await hook(agent.adminUrl, 'POST', '/debug/clock/advance?ms=60000');
  const stale = await client.getRing<{ kid: string }>(SIGNING);
  assert.equal(stale.current.value.kid, 'k2');
  assert.ok(stale.staleSeconds >= 60, `stale for ${stale.staleSeconds}s`);
  const staleJwks = await client.getRing(SIGNING, { format: 'jwks' });
  assert.deepEqual(staleJwks.document.keys.map((k) => k.kid), ['k2', 'k1']);
  assert.ok(staleJwks.staleSeconds >= 60);
  const cliStale = await runCli(['get', SIGNING, '--ring', '--format', 'jwks'], cliEnv);
  assert.equal(cliStale.code, 0, cliStale.stderr);
  assert.match(cliStale.stderr, /warning: the agent cannot reach the server; this key ring may be \d+s stale/);
  await assert.rejects(client.getRing('production/auth/never-read'), (err: ConfigSidecarError) => err.status === 503, 'a ring the agent never held cannot be served');
  const unheld = await runCli(['get', 'production/auth/never-read', '--ring'], cliEnv);
  assert.equal(unheld.code, 1);

  await hook(agent.adminUrl, 'POST', `/debug/clock/advance?ms=${MAX_STALE_MS}`);
  await assert.rejects(client.getRing(SIGNING), (err: ConfigSidecarError) => err.code === 'stale_expired' && err.status === 503);
});
