/**
 * Hostile JSON bodies get a 400 that names the problem, and the server keeps
 * serving: nesting past the documented 64 levels (checked before anything
 * recursive can overflow the stack) and `__proto__` keys (which every copy of
 * the parsed value would otherwise drop silently).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { http, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { MAX_JSON_DEPTH } from '../src/shared/json-guard.ts';

let server: ServerProcess;
before(async () => {
  server = await startServerProcess();
});
after(async () => {
  await server.stop('SIGKILL');
  await removeDir(server.dataDir);
});

const nested = (depth: number): string => `${'['.repeat(depth)}1${']'.repeat(depth)}`;
const put = (name: string, rawBody: string) => http(server.httpUrl, 'PUT', `/v1/items/team/app/${name}`, { token: server.rootToken, rawBody });

test('JSON nested 2,000+ deep → 400 invalid_json (not a 500 stack overflow); the server keeps serving', async () => {
  for (const depth of [2_000, 100_000]) {
    const res = await put('deep', `{"kind":"config","value":${nested(depth)}}`);
    assert.equal(res.status, 400, `${depth} deep: ${res.text.slice(0, 200)}`);
    assert.equal(res.json.error.code, 'invalid_json');
    assert.match(res.json.error.message, /nested more than 64 levels/);
  }
  assert.equal((await http(server.httpUrl, 'GET', '/v1/list/team', { token: server.rootToken })).status, 200);
});

test(`the depth limit is exactly ${MAX_JSON_DEPTH}: one level more is refused; brackets inside strings do not count`, async () => {
  // The body object itself is one level, so the value may nest one less.
  const atLimit = await put('at-limit', `{"kind":"config","value":${nested(MAX_JSON_DEPTH - 1)}}`);
  assert.equal(atLimit.status, 200, atLimit.text);
  const read = await http(server.httpUrl, 'GET', '/v1/items/team/app/at-limit', { token: server.rootToken });
  assert.equal(JSON.stringify(read.json.value), nested(MAX_JSON_DEPTH - 1));
  const over = await put('over-limit', `{"kind":"config","value":${nested(MAX_JSON_DEPTH)}}`);
  assert.equal(over.status, 400, over.text);
  assert.equal(over.json.error.code, 'invalid_json');
  const inString = await put('brackets', JSON.stringify({ kind: 'secret', value: '[{\\"'.repeat(500) }));
  assert.equal(inString.status, 200, inString.text);
});

test('a __proto__ key is refused with 400 (never stored and then silently missing); other odd keys are kept', async () => {
  for (const body of ['{"kind":"config","value":{"a":1,"__proto__":{"admin":true}}}', '{"__proto__":{"x":1},"kind":"config","value":{}}', '{"kind":"config","value":[{"b":{"__proto__":1}}]}']) {
    const res = await put('proto', body);
    assert.equal(res.status, 400, `${body}: ${res.text}`);
    assert.equal(res.json.error.code, 'invalid_json');
    assert.match(res.json.error.message, /__proto__/);
  }
  assert.equal((await http(server.httpUrl, 'GET', '/v1/items/team/app/proto', { token: server.rootToken })).status, 404, 'nothing was stored');
  const odd = { constructor: { prototype: 1 }, toString: 'x', hasOwnProperty: 2 };
  assert.equal((await put('odd', JSON.stringify({ kind: 'config', value: odd }))).status, 200);
  const read = await http(server.httpUrl, 'GET', '/v1/items/team/app/odd', { token: server.rootToken });
  assert.deepEqual(read.json.value, odd);
});
