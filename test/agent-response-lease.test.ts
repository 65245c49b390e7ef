/**
 * The data listener ends a value's lease (after which the cache may zero-fill
 * the bytes) only once the response's bytes have left: at once when the
 * kernel took the whole response, on 'close' when a slow reader left part of
 * it queued. Real Unix sockets; the release zero-fills the body as the cache
 * does for a dropped value, so a lease ended too early shows as zeros on the
 * wire.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDataServer, listenSocket } from '../src/agent/data-listeners.ts';
import type { HandlerDeps } from '../src/agent/request-handler.ts';
import type { CachedValue, ReadResult } from '../src/agent/value-cache.ts';
import { rawEtag } from '../src/agent/item-representation.ts';

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function cachedValue(bytes: number): CachedValue {
  const plaintext = Buffer.alloc(bytes, 'a');
  return {
    namespace: 'production/ml',
    name: 'db',
    env: 'prod',
    kind: 'secret',
    version: 1,
    revision: 1,
    etag: '"1"',
    plaintext,
    json: Buffer.from('{}'),
    rawEtag: rawEtag('"1"'),
    fetchedAt: 0,
    leases: 0,
    dropped: false,
  };
}

/** A listener serving one cached value; records whether the lease had ended when the response was handed to the socket. */
async function serve(bytes: number): Promise<{ socketPath: string; released: () => number; releasedAtResponse: Promise<number> }> {
  const dir = await mkdtemp(join(tmpdir(), 'csb-lease-'));
  const socketPath = join(dir, 'run', 'agent.sock');
  let released = 0;
  let atResponse: (n: number) => void = () => {};
  const releasedAtResponse = new Promise<number>((resolve) => (atResponse = resolve));
  const deps: HandlerDeps = {
    prefixes: () => ['production'],
    podToken: Buffer.from('t'),
    env: 'prod',
    read: () => Promise.reject(new Error('a cache hit is expected')),
    readCached: (): ReadResult => ({ value: cachedValue(bytes), source: 'hit', staleSeconds: 0, ageSeconds: 0 }),
    release: (result) => {
      released += 1;
      // What the cache does to a dropped value once its last lease ends.
      result.value.plaintext.fill(0);
    },
  };
  const server = createDataServer('socket', { deps, serveSse: () => {}, onResponse: () => atResponse(released) });
  await listenSocket(server, socketPath);
  cleanups.push(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });
  return { socketPath, released: () => released, releasedAtResponse };
}

/** Sends one raw read; `holdUntil` keeps the client from reading until it resolves. */
function get(socketPath: string, holdUntil?: Promise<unknown>): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(socketPath, () => {
      socket.write('GET /v1/items/production/ml/db?format=raw HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n');
    });
    if (holdUntil) {
      socket.pause();
      void holdUntil.then(() => socket.resume());
    }
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

function bodyOf(response: Buffer): Buffer {
  return response.subarray(response.indexOf('\r\n\r\n') + 4);
}

test('a response the socket takes whole ends its lease at once, and the reader gets every byte', async () => {
  const { socketPath, released, releasedAtResponse } = await serve(1024);
  const response = await get(socketPath);
  assert.equal(await releasedAtResponse, 1, 'lease ended as the response was handed over, with no listener left behind');
  assert.equal(released(), 1);
  assert.deepEqual(bodyOf(response), Buffer.alloc(1024, 'a'));
});

test('a response a slow reader leaves queued keeps its lease until it is written: the bytes arrive intact', async () => {
  // Far more than a Unix socket buffer holds, so most of the body waits in the process.
  const bytes = 8 * 1024 * 1024;
  const { socketPath, released, releasedAtResponse } = await serve(bytes);
  const response = await get(socketPath, releasedAtResponse);
  assert.equal(await releasedAtResponse, 0, 'still leased while queued');
  assert.equal(released(), 1, 'released once written');
  const body = bodyOf(response);
  assert.equal(body.length, bytes);
  assert.ok(body.every((b) => b === 0x61), 'no byte was zero-filled while it waited to be written');
});
