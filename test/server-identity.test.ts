/**
 * Subject kinds and the per-pod key, end to end through the real server: a JWT
 * can never become root or a static-token subject, JWT algorithms are pinned,
 * and the rate limit counts per pod (the token's `kubernetes.io.pod` claim), not
 * per service account, which a whole Deployment shares.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { http, makeTempDir, removeDir, startServerProcess, type HttpResult, type ServerProcess } from './helpers/server-process.ts';

const ML_TOKEN = 'ml-reader-token-0123456789abcdef';
const ISSUER = 'https://kubernetes.default.svc.cluster.local';
const AUDIENCE = 'config-sidecar';
const SA = 'system:serviceaccount:production:ml-service';
const ITEM = '/v1/items/production/ml-service/db-password';
const sha = (t: string) => createHash('sha256').update(t).digest('hex');

let server: ServerProcess;
let dir: string;
let rsaKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
let noAlgKey: typeof rsaKey;

before(async () => {
  dir = await makeTempDir('cs-identity-');
  await writeFile(
    join(dir, 'auth.yaml'),
    `version: 1
subjects:
  - name: ml-reader
    tokens: [{ sha256: ${sha(ML_TOKEN)} }]
roles:
  - name: reader
    rules: [{ prefixes: [production/ml-service], actions: [read] }]
bindings:
  - { role: reader, subjects: [ml-reader, "${SA}"] }
`,
  );
  const rsa = await generateKeyPair('RS256', { extractable: true });
  const other = await generateKeyPair('PS256', { extractable: true });
  rsaKey = rsa.privateKey;
  noAlgKey = other.privateKey;
  // The second key carries no `alg`, as some issuers publish them: only the pin stops PS256 on it.
  const keys = [
    { ...(await exportJWK(rsa.publicKey)), kid: 'rsa', alg: 'RS256', use: 'sig' },
    { ...(await exportJWK(other.publicKey)), kid: 'no-alg', use: 'sig' },
  ];
  await writeFile(join(dir, 'jwks.json'), JSON.stringify({ keys }));
  server = await startServerProcess({
    args: ['--auth-file', join(dir, 'auth.yaml'), '--jwt-issuer', ISSUER, '--jwt-audience', AUDIENCE, '--jwks-file', join(dir, 'jwks.json'), '--rate-limit', '1'],
  });
  const put = await http(server.httpUrl, 'PUT', ITEM, { token: server.rootToken, body: { kind: 'secret', value: 'p4ss' } });
  assert.equal(put.status, 200, put.text);
});
after(async () => {
  await server.stop('SIGKILL');
  await removeDir(server.dataDir);
  await removeDir(dir);
});

async function jwt(options: { sub?: string; pod?: string; alg?: 'RS256' | 'PS256'; kid?: string } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims = options.pod === undefined ? {} : { 'kubernetes.io': { namespace: 'production', pod: { name: options.pod, uid: `uid-${options.pod}` } } };
  return new SignJWT(claims)
    .setProtectedHeader({ alg: options.alg ?? 'RS256', kid: options.kid ?? 'rsa' })
    .setIssuer(ISSUER)
    .setSubject(options.sub ?? SA)
    .setAudience(AUDIENCE)
    .setIssuedAt(now - 10)
    .setExpirationTime(now + 600)
    .sign(options.kid === 'no-alg' ? noAlgKey : rsaKey);
}

/** Sends until the answer is not 429 (the bucket refills at 1/s), so one test's spending does not decide the next. */
async function getAsSoonAsAllowed(token: string): Promise<HttpResult> {
  for (let i = 0; i < 10; i++) {
    const res = await http(server.httpUrl, 'GET', ITEM, { token });
    if (res.status !== 429) return res;
    await new Promise((resolve) => setTimeout(resolve, Number(res.headers['retry-after'] ?? 1) * 1000));
  }
  throw new Error('still rate limited after 10 tries');
}

async function exhaust(token: string): Promise<void> {
  for (let i = 0; i < 20; i++) {
    if ((await http(server.httpUrl, 'GET', ITEM, { token })).status === 429) return;
  }
  assert.fail('the bucket never ran dry');
}

test('a JWT whose sub is "root" is not root: 403, not the secret', async () => {
  const res = await getAsSoonAsAllowed(await jwt({ sub: 'root', pod: 'root-pod' }));
  assert.equal(res.status, 403, res.text);
  assert.equal(res.json.error.code, 'permission_denied');
  assert.match(res.json.error.message, /jwt:root/, 'the refusal names the JWT kind');
});

test('a JWT whose sub is a static subject’s name gets neither its role nor its rate-limit bucket', async () => {
  assert.equal((await getAsSoonAsAllowed(ML_TOKEN)).status, 200, 'the static token itself reads');
  await exhaust(ML_TOKEN);
  const impostor = await http(server.httpUrl, 'GET', ITEM, { token: await jwt({ sub: 'ml-reader', pod: 'impostor' }) });
  assert.equal(impostor.status, 403, `refused for its own (missing) role, not throttled as ml-reader: ${impostor.text}`);
});

test('the REST rate limit keys on the pod: one pod over its rate does not throttle another pod of the same service account', async () => {
  const podA = await jwt({ pod: 'ml-service-a' });
  assert.equal((await getAsSoonAsAllowed(podA)).status, 200);
  await exhaust(podA);
  const podB = await http(server.httpUrl, 'GET', ITEM, { token: await jwt({ pod: 'ml-service-b' }) });
  assert.equal(podB.status, 200, podB.text);
  assert.equal(podB.json.value, 'p4ss');
});

test('JWT algorithms are pinned: PS256 on a key published without alg is refused', async () => {
  const res = await getAsSoonAsAllowed(await jwt({ alg: 'PS256', kid: 'no-alg', pod: 'ps-pod' }));
  assert.equal(res.status, 401, res.text);
  assert.equal(res.json.error.code, 'unauthenticated');
});
