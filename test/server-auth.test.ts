import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { GrpcStatus } from '../src/shared/errors.ts';
import { http, makeTempDir, openWatch, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

const ML_TOKEN = 'ml-reader-token-0123456789abcdef';
const NOROLE_TOKEN = 'no-role-token-0123456789abcdef';
const ISSUER = 'https://kubernetes.default.svc.cluster.local';
const AUDIENCE = 'config-sidecar';
const SA = 'system:serviceaccount:production:ml-service';
const sha = (t: string) => createHash('sha256').update(t).digest('hex');

function authYaml(withBinding: boolean): string {
  return `version: 1
subjects:
  - name: ml-reader
    tokens:
      - sha256: ${sha(ML_TOKEN)}
  - name: nobody
    tokens:
      - sha256: ${sha(NOROLE_TOKEN)}
roles:
  - name: ml-service
    rules:
      - prefixes: [production/ml-service]
        actions: [read, list, write]
bindings:
${withBinding ? '  - role: ml-service\n    subjects: [ml-reader, "' + SA + '"]\n' : '  - role: ml-service\n    subjects: ["' + SA + '"]\n'}`;
}

let server: ServerProcess;
let dir: string;
let authFile: string;
let signingKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

before(async () => {
  dir = await makeTempDir('cs-auth-');
  authFile = join(dir, 'auth.yaml');
  await writeFile(authFile, authYaml(true));
  const { publicKey, privateKey } = await generateKeyPair('RS256');
  signingKey = privateKey;
  const jwk = { ...(await exportJWK(publicKey)), kid: 'test-key', alg: 'RS256', use: 'sig' };
  const jwksFile = join(dir, 'jwks.json');
  await writeFile(jwksFile, JSON.stringify({ keys: [jwk] }));
  server = await startServerProcess({
    args: ['--auth-file', authFile, '--jwt-issuer', ISSUER, '--jwt-audience', AUDIENCE, '--jwks-file', jwksFile],
  });
  for (const path of ['production/ml-service/db-password', 'production/ml-service-admin/db-password', 'staging/other/db-password']) {
    const res = await http(server.httpUrl, 'PUT', `/v1/items/${path}`, { token: server.rootToken, body: { kind: 'secret', value: 'p4ss' } });
    assert.equal(res.status, 200, res.text);
  }
});
after(async () => {
  await server.stop('SIGKILL');
  await removeDir(server.dataDir);
  await removeDir(dir);
});

async function jwt(claims: { aud?: string; expSeconds?: number; sub?: string }): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: 'RS256', kid: 'test-key' })
    .setIssuer(ISSUER)
    .setSubject(claims.sub ?? SA)
    .setAudience(claims.aud ?? AUDIENCE)
    .setIssuedAt(now - 10)
    .setExpirationTime(now + (claims.expSeconds ?? 600))
    .sign(signingKey);
}

test('a token limited to production/ml-service reaches nothing else: read, list, watch, envelopes, DEKs', async () => {
  const get = (path: string) => http(server.httpUrl, 'GET', path, { token: ML_TOKEN });
  assert.equal((await get('/v1/items/production/ml-service/db-password')).status, 200);
  assert.equal((await get('/v1/list/production/ml-service')).status, 200);
  assert.equal((await get('/v1/envelopes/production/ml-service/db-password')).status, 200);

  for (const path of [
    '/v1/items/production/ml-service-admin/db-password',
    '/v1/items/staging/other/db-password',
    '/v1/list/production/ml-service-admin',
    '/v1/list/production',
    '/v1/history/production/ml-service-admin/db-password',
    '/v1/envelopes/production/ml-service-admin/db-password',
  ]) {
    const res = await get(path);
    assert.equal(res.status, 403, path);
    assert.equal(res.json.error.code, 'permission_denied', path);
  }
  const deks = await http(server.httpUrl, 'POST', '/v1/deks/production/ml-service-admin', { token: ML_TOKEN, body: { publicKey: Buffer.alloc(32, 9).toString('base64') } });
  assert.equal(deks.status, 403);
  const rotate = await http(server.httpUrl, 'POST', '/v1/rotate/production/ml-service', { token: ML_TOKEN });
  assert.equal(rotate.status, 403, 'rotate was not granted');

  const watch = openWatch(server.grpcAddress, { prefixes: ['production/ml-service', 'production/ml-service-admin'] }, ML_TOKEN);
  const status = await watch.status;
  assert.equal(status.code, GrpcStatus.PERMISSION_DENIED, 'refused, not filtered');
  assert.match(status.details, /ml-service-admin/);

  const nobody = await http(server.httpUrl, 'GET', '/v1/items/production/ml-service/db-password', { token: NOROLE_TOKEN });
  assert.equal(nobody.status, 403);
  assert.equal(nobody.json.error.code, 'permission_denied');
});

test('service-account JWTs: the right audience is accepted; a wrong audience, an expiry or a bad signature is refused', async () => {
  const path = '/v1/items/production/ml-service/db-password';
  const good = await http(server.httpUrl, 'GET', path, { token: await jwt({}) });
  assert.equal(good.status, 200, good.text);
  assert.equal(good.json.value, 'p4ss');
  const wrongAud = await http(server.httpUrl, 'GET', path, { token: await jwt({ aud: 'someone-else' }) });
  assert.equal(wrongAud.status, 401);
  assert.equal(wrongAud.json.error.code, 'unauthenticated');
  const expired = await http(server.httpUrl, 'GET', path, { token: await jwt({ expSeconds: -60 }) });
  assert.equal(expired.status, 401);
  const { privateKey: otherKey } = await generateKeyPair('RS256');
  const forged = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'test-key' }).setIssuer(ISSUER).setSubject(SA).setAudience(AUDIENCE).setExpirationTime('5m').sign(otherKey);
  assert.equal((await http(server.httpUrl, 'GET', path, { token: forged })).status, 401);
  const admin = await http(server.httpUrl, 'GET', '/v1/items/production/ml-service-admin/db-password', { token: await jwt({}) });
  assert.equal(admin.status, 403);
});

test('a watch ends when its JWT expires (server clock moved by the test hook)', async () => {
  const watch = openWatch(server.grpcAddress, { prefixes: ['production/ml-service'] }, await jwt({ expSeconds: 120 }));
  assert.equal((await watch.next()).type, 'heartbeat');
  const advanced = await http(server.adminUrl, 'POST', '/test/clock/advance?ms=180000');
  assert.equal(advanced.status, 200);
  assert.equal((await watch.status).code, GrpcStatus.UNAUTHENTICATED);
  await http(server.adminUrl, 'POST', '/test/clock/advance?ms=-180000');
});

test('removing a binding from the auth file ends that subject’s open watch; others keep streaming', async () => {
  const ml = openWatch(server.grpcAddress, { prefixes: ['production/ml-service'] }, ML_TOKEN);
  const sa = openWatch(server.grpcAddress, { prefixes: ['production/ml-service'] }, await jwt({}));
  assert.equal((await ml.next()).type, 'heartbeat');
  assert.equal((await sa.next()).type, 'heartbeat');
  const next = join(dir, 'auth.yaml.next');
  await writeFile(next, authYaml(false));
  await rename(next, authFile);
  const status = await ml.status;
  assert.equal(status.code, GrpcStatus.PERMISSION_DENIED);
  assert.match(status.details, /revoked/);
  const denied = await http(server.httpUrl, 'GET', '/v1/items/production/ml-service/db-password', { token: ML_TOKEN });
  assert.equal(denied.status, 403);
  const put = await http(server.httpUrl, 'PUT', '/v1/items/production/ml-service/flag', { token: server.rootToken, body: { kind: 'config', value: 1 } });
  const event = (await sa.until((e) => e.type === 'itemChanged')).at(-1);
  assert.equal(event?.revision, put.json.revision, 'the still-bound subject keeps its stream');
  sa.close();
});

test('--jwks-url: keys fetched from the issuer’s JWKS endpoint', async (t) => {
  const { createServer } = await import('node:http');
  const { publicKey, privateKey } = await generateKeyPair('ES256');
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'url-key', alg: 'ES256', use: 'sig' }] });
  let fetched = 0;
  const issuer = createServer((req, res) => {
    fetched++;
    res.writeHead(req.url === '/openid/v1/jwks' ? 200 : 404, { 'content-type': 'application/json' }).end(jwks);
  });
  await new Promise<void>((resolve) => issuer.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => issuer.close(resolve)));
  const jwksUrl = `http://127.0.0.1:${(issuer.address() as { port: number }).port}/openid/v1/jwks`;
  const urlServer = await startServerProcess({ args: ['--auth-file', authFile, '--jwt-issuer', ISSUER, '--jwt-audience', AUDIENCE, '--jwks-url', jwksUrl] });
  t.after(async () => {
    await urlServer.stop('SIGKILL');
    await removeDir(urlServer.dataDir);
  });
  await http(urlServer.httpUrl, 'PUT', '/v1/items/production/ml-service/db-password', { token: urlServer.rootToken, body: { kind: 'secret', value: 'p4ss' } });
  const token = await new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: 'url-key' }).setIssuer(ISSUER).setSubject(SA).setAudience(AUDIENCE).setExpirationTime('5m').sign(privateKey);
  const res = await http(urlServer.httpUrl, 'GET', '/v1/items/production/ml-service/db-password', { token });
  assert.equal(res.status, 200, res.text);
  assert.ok(fetched >= 1);
});

test('a broken auth file is refused on reload and the last good policy stays in force', async () => {
  const { metricValue } = await import('./helpers/server-process.ts');
  const next = join(dir, 'auth.yaml.broken');
  await writeFile(next, 'roles: [{ name: r, rules: [{ prefixes: [production], actions: [everything] }] }]\n');
  await rename(next, authFile);
  await server.waitForLog((l) => l.msg === 'auth file reload failed; keeping the previous policy');
  const res = await http(server.httpUrl, 'GET', '/v1/items/production/ml-service/db-password', { token: await jwt({}) });
  assert.equal(res.status, 200, 'the service account keeps its access');
  assert.equal(await metricValue(server.adminUrl, 'config_sidecar_server_auth_reloads_total', 'outcome="error"'), 1);
  await writeFile(authFile, authYaml(true));
});
