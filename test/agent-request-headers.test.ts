/**
 * The request headers the data API reads (forwarded headers, pod token,
 * body headers, If-None-Match), through the real TCP listener and node's own
 * parser: any spelling of a name, repeated names and absent ones behave the
 * same request after request, also while an earlier request on the
 * connection still waits for its value (the listener reuses its view of the
 * request; the handler copies it before waiting).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { createDataServer } from '../src/agent/data-listeners.ts';
import type { ReadResult } from '../src/agent/value-cache.ts';
import { cachedSecret as value } from './helpers/cached-value.ts';
import { rawRequest, type RawTarget } from './helpers/raw-http.ts';

const TOKEN = 'pod-token-0123456789';

let server: Server;
let target: RawTarget & { host: string; port: number };

before(async () => {
  server = createDataServer('tcp', {
    deps: {
      prefixes: () => ['production/ml'],
      podToken: Buffer.from(TOKEN),
      env: 'prod',
      // `cached` is a hit; anything else waits for a fetch that settles on a later turn.
      readCached: (ref) => (ref.name === 'cached' ? { value: value(ref.name), source: 'hit', staleSeconds: 0, ageSeconds: 0 } : undefined),
      read: (ref) => new Promise<ReadResult>((resolve) => setImmediate(() => resolve({ value: value(ref.name), source: 'miss', staleSeconds: 0, ageSeconds: 0 }))),
      release: () => {},
    },
    serveSse: () => {},
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  target = { host: '127.0.0.1', port: (server.address() as AddressInfo).port };
});

after(() => new Promise<void>((resolve) => server.close(() => resolve())));

const get = (lines: readonly string[], path = '/v1/items/production/ml/cached'): Promise<{ status: number; body: string }> =>
  rawRequest(target, `GET ${path} HTTP/1.1\r\nHost: agent\r\n${lines.map((l) => `${l}\r\n`).join('')}Connection: close\r\n\r\n`);

const code = (body: string): string => (JSON.parse(body) as { error: { code: string; message: string } }).error.code;

test('a header is found in any spelling of its name; absent ones refuse nothing', async () => {
  assert.equal((await get([`x-config-sidecar-token: ${TOKEN}`])).status, 200);
  assert.equal((await get([`X-CONFIG-SIDECAR-TOKEN: ${TOKEN}`])).status, 200);
  assert.equal((await get([`X-Config-Sidecar-Token: ${TOKEN}`], '/v1/items/production/ml/fetched')).status, 200);
  const none = await get([]);
  assert.equal(none.status, 401, 'no token on TCP');
  assert.equal(code(none.body), 'unauthenticated');
  for (const forwarded of ['X-Forwarded-For: 10.0.0.1', 'FORWARDED: for=1.2.3.4', 'Via: 1.1 proxy']) {
    const refused = await get([`X-Config-Sidecar-Token: ${TOKEN}`, forwarded]);
    assert.equal(refused.status, 403, forwarded);
    const name = forwarded.split(':')[0]?.toLowerCase() ?? '';
    assert.match(refused.body, new RegExp(`carrying ${name} are refused`), 'the refusal names the header');
  }
  assert.equal((await get([`x-config-sidecar-token: ${TOKEN}`, 'Transfer-Encoding: chunked'])).status, 413);
  assert.equal((await get([`x-config-sidecar-token: ${TOKEN}`, 'If-None-Match: "3"'])).status, 304);
  assert.equal((await get([`x-config-sidecar-token: ${TOKEN}`, 'IF-NONE-MATCH: "4"'])).status, 200);
});

test('a repeated header behaves as node joins it: two tokens are no token, two If-None-Match lines are one list', async () => {
  // Node joins repeated custom headers with ", ": the joined text is not the token.
  assert.equal((await get([`X-Config-Sidecar-Token: ${TOKEN}`, `x-config-sidecar-token: ${TOKEN}`])).status, 401);
  assert.equal((await get([`x-config-sidecar-token: ${TOKEN}`, 'If-None-Match: "1"', 'if-none-match: "3"'])).status, 304);
  assert.equal((await get([`x-config-sidecar-token: ${TOKEN}`, 'Via: a', 'via: b'])).status, 403);
});

test('a request that waits for its value is answered as it was sent, while later requests on the connection are read', async () => {
  // Pipelined: the second request is parsed (and answered) while the first still waits for its fetch.
  const first = `GET /v1/items/production/ml/fetched-304 HTTP/1.1\r\nHost: agent\r\nx-config-sidecar-token: ${TOKEN}\r\nIf-None-Match: "3"\r\n\r\n`;
  const second = `HEAD /v1/items/production/ml/cached HTTP/1.1\r\nHost: agent\r\nx-config-sidecar-token: ${TOKEN}\r\nConnection: close\r\n\r\n`;
  const text = await new Promise<string>((resolve, reject) => {
    const socket = connect(target.port, target.host, () => socket.write(first + second));
    let got = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no two answers within 5 s: ${got}`));
    }, 5_000);
    socket.setEncoding('latin1').on('data', (c: string) => (got += c));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
  });
  const statuses = [...text.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => Number(m[1]));
  assert.deepEqual(statuses, [304, 200], 'the first answer is its own (a 304 for its If-None-Match), not the second request\'s');
});
