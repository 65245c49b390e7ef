/**
 * GET /v1/list pages by key: a real server with 1 100 items answers the
 * default page (1 000) with a nextCursor, every item comes once and in byte
 * order across pages, a bad limit or cursor is a 400 from the error table,
 * and `config-sidecar list` follows the cursor to the end (old callers of the
 * CLI still get the whole list).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from './helpers/process.ts';
import { http, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

const NAMESPACES = 11;
const PER_NAMESPACE = 100;
let server: ServerProcess;
/** Every item written, as "namespace/name", in byte order. */
let written: string[] = [];

before(async () => {
  server = await startServerProcess({ args: ['--rate-limit', '0'] });
  for (let n = 0; n < NAMESPACES; n++) {
    // Names whose byte order differs from a locale's ('-' and '_' before letters).
    const changes = Array.from({ length: PER_NAMESPACE }, (_, i) => ({ item: `team/ns-${String(n).padStart(2, '0')}/${i % 2 ? 'k_' : 'k-'}${String(i).padStart(3, '0')}`, kind: 'config', value: i }));
    const res = await http(server.httpUrl, 'POST', '/v1/changes', { token: server.rootToken, body: { changes } });
    assert.equal(res.status, 200, res.text);
    written.push(...changes.map((c) => c.item));
  }
  written = written.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
});

after(async () => {
  await server.stop('SIGKILL');
  await removeDir(server.dataDir);
});

interface Page {
  readonly items: Array<{ namespace: string; name: string }>;
  readonly nextCursor?: string;
}

async function page(query: string, prefix = 'team'): Promise<Page> {
  const res = await http(server.httpUrl, 'GET', `/v1/list/${prefix}${query}`, { token: server.rootToken });
  assert.equal(res.status, 200, res.text);
  return res.json as Page;
}

test('no limit: the first 1000 items and a nextCursor; the cursor gives the rest and no nextCursor; each item once, in byte order', async () => {
  const first = await page('');
  assert.equal(first.items.length, 1000);
  assert.equal(typeof first.nextCursor, 'string');
  const second = await page(`?cursor=${encodeURIComponent(first.nextCursor ?? '')}`);
  assert.equal(second.items.length, NAMESPACES * PER_NAMESPACE - 1000);
  assert.equal(second.nextCursor, undefined, 'the last page says so');
  assert.deepEqual([...first.items, ...second.items].map((i) => `${i.namespace}/${i.name}`), written);
});

test('limit pages by that many; a cursor from one page continues with any limit', async () => {
  const seen: string[] = [];
  let limit = 333;
  let query = `?limit=${limit}`;
  let pages = 0;
  for (;;) {
    const p = await page(query);
    assert.ok(p.items.length <= limit);
    seen.push(...p.items.map((i) => `${i.namespace}/${i.name}`));
    pages += 1;
    if (!p.nextCursor) break;
    limit = pages === 1 ? 10_000 : 333;
    query = `?limit=${limit}&cursor=${encodeURIComponent(p.nextCursor)}`;
  }
  assert.deepEqual(seen, written);
  assert.equal(pages, 2, '333, then the other 767 in one page of up to 10 000');
  const one = await page('?limit=1', 'team/ns-03');
  assert.deepEqual(one.items.map((i) => i.name), ['k-000']);
});

test('a bad limit or cursor is a 400 invalid_argument naming it; nothing is listed', async () => {
  const refused = async (query: string, prefix = 'team') => {
    const res = await http(server.httpUrl, 'GET', `/v1/list/${prefix}${query}`, { token: server.rootToken });
    assert.equal(res.status, 400, `${query}: ${res.text}`);
    assert.equal(res.json.error.code, 'invalid_argument', query);
    assert.equal(res.json.items, undefined);
    return res.json.error.message as string;
  };
  for (const limit of ['0', '-1', '10001', 'abc', '1.5', '', '1e3']) assert.match(await refused(`?limit=${limit}`), /^limit must be a whole number from 1 to 10000/, limit);
  const cursor = (await page('?limit=5')).nextCursor ?? '';
  for (const bad of ['not a cursor!', 'eyJ4IjoxfQ', Buffer.from('{"p":"team","n":"Bad NS","k":"x"}').toString('base64url'), 'A'.repeat(2000)]) {
    assert.match(await refused(`?cursor=${encodeURIComponent(bad)}`), /^cursor is not one this server gave; pass the nextCursor of the previous page unchanged/, bad.slice(0, 30));
  }
  assert.match(await refused(`?cursor=${cursor}`, 'team/ns-01'), /^cursor continues a listing of "team", not of "team\/ns-01"/);
});

test('config-sidecar list follows the cursor: every item, as before paging', async () => {
  const env = { CONFIG_SIDECAR_TOKEN: server.rootToken, CONFIG_SIDECAR_SERVER: server.httpUrl };
  const json = await runCli(['list', 'team', '-o', 'json'], env);
  assert.equal(json.code, 0, json.stderr);
  const listed = JSON.parse(json.stdout) as Page;
  assert.deepEqual(listed.items.map((i) => `${i.namespace}/${i.name}`), written);
  assert.equal(listed.nextCursor, undefined);
  const text = await runCli(['list', 'team'], env);
  assert.equal(text.code, 0, text.stderr);
  assert.equal(text.stdout.trim().split('\n').length, 1 + written.length, 'a heading and every item');
});
