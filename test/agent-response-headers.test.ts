/**
 * The response headers of an item read, byte for byte on the wire, through
 * the real socket listener and node's own response code: every header the
 * protocol requires (ETag, Age, X-Config-Revision, Cache-Control, the
 * content headers; Warning and X-Config-Stale on a stale answer), their
 * spelling, values and order, for fresh and stale 200s, 304s and HEAD, and
 * again on a keep-alive connection's later reads. The handler hands node a
 * flat header list for these (docs/FOOTPRINT-LOG.md, h28); this pins that
 * what a client sees did not change with the form.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:http';
import { connect } from 'node:net';
import { createDataServer, KEEPALIVE_TIMEOUT_MS } from '../src/agent/data-listeners.ts';
import type { ReadResult } from '../src/agent/value-cache.ts';
import { cachedSecret as value } from './helpers/cached-value.ts';
import { rawRequest, type RawTarget } from './helpers/raw-http.ts';

let server: Server;
let dir: string;
let target: { readonly socketPath: string } & RawTarget;

/** `cached` is a fresh hit 5 s old; `stale` is served stale 120 s old, 42 s past its TTL. */
function readCached(name: string): ReadResult {
  return name === 'stale'
    ? { value: value(name), source: 'stale', staleSeconds: 42, ageSeconds: 120 }
    : { value: value(name), source: 'hit', staleSeconds: 0, ageSeconds: 5 };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'csa-resp-headers-'));
  server = createDataServer('socket', {
    deps: { prefixes: () => ['production/ml'], podToken: Buffer.from('unused-on-the-socket'), env: 'prod', readCached: (ref) => readCached(ref.name), read: (ref) => Promise.resolve(readCached(ref.name)), release: () => {} },
    serveSse: () => {},
  });
  const socketPath = join(dir, 'agent.sock');
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  target = { socketPath };
});

after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await rm(dir, { recursive: true, force: true });
});

/** The response head's lines after the status line, with the Date header's value (the wall clock) replaced. */
async function headLines(method: string, path: string, extra: readonly string[] = []): Promise<string[]> {
  const answer = await rawRequest(target, `${method} ${path} HTTP/1.1\r\nHost: agent\r\n${extra.map((l) => `${l}\r\n`).join('')}Connection: close\r\n\r\n`);
  const [status = '', ...lines] = answer.head.split('\r\n');
  assert.match(lines.find((l) => l.startsWith('Date: ')) ?? '', /^Date: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
  return [status, ...lines.map((l) => (l.startsWith('Date: ') ? 'Date: (now)' : l))];
}

const FRESH_JSON = ['etag: "3"', 'age: 5', 'x-config-revision: 7', 'cache-control: no-store', 'content-type: application/json; charset=utf-8', 'content-length: 18'];
const TAIL = ['Date: (now)', 'Connection: close'];

test('a fresh 200 sends the protocol headers, named and ordered as before, JSON and raw, read after read', async () => {
  for (let read = 0; read < 3; read++) {
    assert.deepEqual(await headLines('GET', '/v1/items/production/ml/cached'), ['HTTP/1.1 200 OK', ...FRESH_JSON, ...TAIL], `JSON read ${read}`);
    assert.deepEqual(
      await headLines('GET', '/v1/items/production/ml/cached?format=raw'),
      ['HTTP/1.1 200 OK', 'etag: "3-raw"', 'age: 5', 'x-config-revision: 7', 'cache-control: no-store', 'content-type: application/octet-stream', 'content-length: 6', ...TAIL],
      `raw read ${read}`,
    );
  }
  assert.deepEqual(await headLines('HEAD', '/v1/items/production/ml/cached'), ['HTTP/1.1 200 OK', ...FRESH_JSON, ...TAIL], 'HEAD answers the GET headers');
});

test('a stale 200 adds Warning and X-Config-Stale after the content headers', async () => {
  assert.deepEqual(await headLines('GET', '/v1/items/production/ml/stale'), [
    'HTTP/1.1 200 OK',
    'etag: "3"',
    'age: 120',
    'x-config-revision: 7',
    'cache-control: no-store',
    'content-type: application/json; charset=utf-8',
    'content-length: 18',
    'warning: 110 - "Response is Stale"',
    'x-config-stale: 42',
    ...TAIL,
  ]);
});

test('a 304 sends the validators and freshness headers, no content headers', async () => {
  assert.deepEqual(await headLines('GET', '/v1/items/production/ml/cached', ['If-None-Match: "3"']), ['HTTP/1.1 304 Not Modified', 'etag: "3"', 'age: 5', 'x-config-revision: 7', 'cache-control: no-store', ...TAIL]);
  assert.deepEqual(await headLines('GET', '/v1/items/production/ml/stale', ['If-None-Match: W/"3"']), [
    'HTTP/1.1 304 Not Modified',
    'etag: "3"',
    'age: 120',
    'x-config-revision: 7',
    'cache-control: no-store',
    'warning: 110 - "Response is Stale"',
    'x-config-stale: 42',
    ...TAIL,
  ]);
});

test('on a keep-alive connection every read answers its own complete headers', async () => {
  const request = 'GET /v1/items/production/ml/cached HTTP/1.1\r\nHost: agent\r\n\r\n';
  // Three pipelined requests, the last closing: three complete responses, each with the full header set.
  const whole = await untilClosed(request + request + request.replace('\r\n\r\n', '\r\nConnection: close\r\n\r\n'));
  const heads = whole.split('HTTP/1.1 ').slice(1).map((r) => r.slice(0, r.indexOf('\r\n\r\n')).split('\r\n'));
  assert.equal(heads.length, 3);
  for (const [i, lines] of heads.entries()) {
    assert.deepEqual(lines.slice(0, 7), ['200 OK', ...FRESH_JSON], `response ${i}`);
    assert.deepEqual(lines.slice(8), i < 2 ? ['Connection: keep-alive', `Keep-Alive: timeout=${KEEPALIVE_TIMEOUT_MS / 1000}`] : ['Connection: close'], `response ${i}`);
  }
});

/** Everything the listener sends on one connection until it closes it (bounded: the last request asks it to). */
function untilClosed(bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(target.socketPath, () => socket.end(bytes));
    const chunks: Buffer[] = [];
    socket.setTimeout(5_000, () => socket.destroy(new Error('no close within 5 s')));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}
