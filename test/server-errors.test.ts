import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { http, removeDir, startServerProcess, type HttpResult, type ServerProcess } from './helpers/server-process.ts';

let server: ServerProcess;
before(async () => {
  server = await startServerProcess({ args: ['--max-body', '2KiB'] });
  for (const name of ['good', 'victim']) {
    const res = await http(server.httpUrl, 'PUT', `/v1/items/team/app/${name}`, { token: server.rootToken, body: { kind: 'secret', value: `value-of-${name}` } });
    assert.equal(res.status, 200, res.text);
  }
});
after(async () => {
  await server.stop('SIGKILL');
  await removeDir(server.dataDir);
});

function assertError(res: HttpResult, status: number, code: string): void {
  assert.equal(res.status, status, res.text);
  assert.equal(res.json?.error?.code, code, res.text);
  assert.equal(typeof res.json.error.message, 'string');
}

async function stillServes(): Promise<void> {
  const res = await http(server.httpUrl, 'GET', '/v1/items/team/app/good', { token: server.rootToken });
  assert.equal(res.status, 200, 'the server still serves after the bad request');
  assert.equal(res.json.value, 'value-of-good');
}

const cases: Array<{ name: string; send: () => Promise<HttpResult>; status: number; code: string }> = [
  {
    name: 'malformed JSON',
    send: () => http(server.httpUrl, 'PUT', '/v1/items/team/app/x', { token: server.rootToken, rawBody: '{"kind": "config", "value": ' }),
    status: 400,
    code: 'invalid_json',
  },
  {
    name: 'a body over the limit',
    send: () => http(server.httpUrl, 'PUT', '/v1/items/team/app/x', { token: server.rootToken, body: { kind: 'secret', value: 'x'.repeat(4096) } }),
    status: 413,
    code: 'payload_too_large',
  },
  { name: 'a bad segment', send: () => http(server.httpUrl, 'GET', '/v1/items/Team/App/x', { token: server.rootToken }), status: 400, code: 'invalid_path' },
  { name: 'a dot-dot segment', send: () => http(server.httpUrl, 'GET', '/v1/items/team/../app/x', { token: server.rootToken }), status: 400, code: 'invalid_path' },
  { name: 'an encoded slash', send: () => http(server.httpUrl, 'GET', '/v1/items/team/a%2Fb/x', { token: server.rootToken }), status: 400, code: 'invalid_path' },
  {
    name: 'an unknown kind',
    send: () => http(server.httpUrl, 'PUT', '/v1/items/team/app/x', { token: server.rootToken, body: { kind: 'binary', value: 'x' } }),
    status: 400,
    code: 'invalid_argument',
  },
  { name: 'an unknown environment', send: () => http(server.httpUrl, 'GET', '/v1/items/team/app/good?env=qa', { token: server.rootToken }), status: 400, code: 'invalid_argument' },
  { name: 'a missing token', send: () => http(server.httpUrl, 'GET', '/v1/items/team/app/good'), status: 401, code: 'unauthenticated' },
  { name: 'a wrong token', send: () => http(server.httpUrl, 'GET', '/v1/items/team/app/good', { token: 'not-a-real-token' }), status: 401, code: 'unauthenticated' },
  {
    name: 'a rollback to a version that does not exist',
    send: () => http(server.httpUrl, 'POST', '/v1/rollback/team/app/good', { token: server.rootToken, body: { version: 99 } }),
    status: 404,
    code: 'not_found',
  },
  { name: 'a missing item', send: () => http(server.httpUrl, 'GET', '/v1/items/team/app/nope', { token: server.rootToken }), status: 404, code: 'not_found' },
  {
    name: 'headers over the limit',
    send: () => http(server.httpUrl, 'GET', '/v1/items/team/app/good', { token: server.rootToken, headers: { 'x-padding': 'p'.repeat(20_000) } }),
    status: 431,
    code: 'headers_too_large',
  },
  { name: 'an unknown route', send: () => http(server.httpUrl, 'GET', '/v1/frobnicate/x', { token: server.rootToken }), status: 404, code: 'not_found' },
  { name: 'a wrong method', send: () => http(server.httpUrl, 'POST', '/v1/items/team/app/x', { token: server.rootToken }), status: 405, code: 'method_not_allowed' },
  {
    name: 'a malformed public key',
    send: () => http(server.httpUrl, 'POST', '/v1/deks/team/app', { token: server.rootToken, body: { publicKey: 'abc' } }),
    status: 400,
    code: 'invalid_argument',
  },
];

for (const c of cases) {
  test(`bad input: ${c.name} → ${c.status} ${c.code}, and the server keeps serving`, async () => {
    assertError(await c.send(), c.status, c.code);
    await stillServes();
  });
}

test('a corrupted row answers 500 decryption_failed, is logged without the value, and other items still read', async () => {
  const db = new DatabaseSync(join(server.dataDir, 'config-sidecar.db'));
  try {
    const row = db.prepare("SELECT ciphertext FROM versions WHERE namespace = 'team/app' AND name = 'victim'").get() as { ciphertext: Uint8Array };
    const flipped = Buffer.from(row.ciphertext);
    flipped[0] = (flipped[0] as number) ^ 0xff;
    db.prepare("UPDATE versions SET ciphertext = ? WHERE namespace = 'team/app' AND name = 'victim'").run(flipped);
  } finally {
    db.close();
  }
  assertError(await http(server.httpUrl, 'GET', '/v1/items/team/app/victim', { token: server.rootToken }), 500, 'decryption_failed');
  await server.waitForLog((l) => l.msg === 'request failed' && l.code === 'decryption_failed');
  await stillServes();
  assert.ok(!server.output().includes('value-of-'), 'no value in the logs');
});

test('the OpenAPI document is served without auth', async () => {
  const doc = await http(server.httpUrl, 'GET', '/v1/openapi.json');
  assert.equal(doc.status, 200);
  assert.equal(doc.json.openapi, '3.1.0');
  assert.ok(doc.json.paths['/v1/items/{path}']);
});

test('over the per-subject rate limit: 429 rate_limited with Retry-After; other subjects unaffected', async (t) => {
  const limited = await startServerProcess({ args: ['--rate-limit', '1'] });
  t.after(async () => {
    await limited.stop('SIGKILL');
    await removeDir(limited.dataDir);
  });
  let refused: HttpResult | undefined;
  // Burst is 2 at 1/s: a handful of back-to-back requests must hit the limit.
  for (let i = 0; i < 50 && !refused; i++) {
    const res = await http(limited.httpUrl, 'GET', '/v1/list/team', { token: limited.rootToken });
    if (res.status === 429) refused = res;
  }
  assert.ok(refused, 'the limit was hit');
  assertError(refused, 429, 'rate_limited');
  assert.match(String(refused.headers['retry-after']), /^[1-9]\d*$/);
  const other = await http(limited.httpUrl, 'GET', '/v1/list/team', { token: 'someone-else' });
  assert.equal(other.status, 401, 'another caller is judged on its own (here: its token), not throttled');
});
