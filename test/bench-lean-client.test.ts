/**
 * The bench's lean HTTP/1.1 load client (bench/lib/lean-http.ts,
 * lean-load.ts) against real servers on Unix sockets: it counts what the
 * server answered, reads a response however the bytes are split, and counts
 * an unframed answer as an error instead of hanging. Never asserts a speed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runClosedLoop, runOpenLoops } from '../bench/lib/lean-load.ts';

async function listen(server: Server | NetServer, path: string): Promise<void> {
  await new Promise<void>((resolve) => server.listen(path, resolve));
}

async function tempSocket(t: { after: (fn: () => Promise<void>) => void }, name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'lean-client-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return join(dir, name);
}

test('closed loop: every request answered, statuses counted, headers sent, 304 without a body', async (t) => {
  const path = await tempSocket(t, 'http.sock');
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(`${req.url} ${req.headers['x-token'] ?? ''}`);
    const notFound = '{"error":{"code":"not_found","message":"no"}}';
    if (req.url === '/missing') res.writeHead(404, { 'content-type': 'application/json', 'content-length': notFound.length }).end(notFound);
    else if (req.headers['if-none-match'] === '"1"') res.writeHead(304, { etag: '"1"', 'content-length': '1024' }).end();
    else res.writeHead(200, { 'content-length': '1024' }).end(Buffer.alloc(1024, 'x'));
  });
  server.keepAliveTimeout = 30_000;
  await listen(server, path);
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const target = { kind: 'socket' as const, socketPath: path, headers: { 'x-token': 'secret-for-test' } };
  const run = await runClosedLoop(target, { connections: 4, amount: 300, paths: ['/a', '/b', '/missing'], headersFor: (p): Record<string, string> => (p === '/b' ? { 'if-none-match': '"1"' } : {}) });
  assert.equal(run.requests, 300);
  assert.equal(run.errors, 0);
  assert.deepEqual(run.statusCodes, { '200': 100, '304': 100, '404': 100 });
  assert.equal(run.non2xx, 200);
  assert.equal(seen.length, 300);
  assert.ok(seen.every((s) => s.endsWith(' secret-for-test')), 'the target headers go with every request');
});

test('a response split into single bytes is read whole; an unframed one counts as an error and the run still ends', async (t) => {
  const path = await tempSocket(t, 'raw.sock');
  const body = 'y'.repeat(300);
  const framed = Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  const sockets = new Set<Socket>();
  const server = createNetServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('data', (chunk) => {
      if (chunk.toString('latin1').startsWith('GET /unframed')) {
        socket.end('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
        return;
      }
      // One byte per write, each its own read on the client's side (or not): the parse must not care.
      let i = 0;
      const next = (): void => {
        if (i < framed.length) socket.write(framed.subarray(i, ++i), next);
      };
      next();
    });
  });
  await listen(server, path);
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const target = { kind: 'socket' as const, socketPath: path };
  const whole = await runClosedLoop(target, { connections: 2, amount: 10, paths: ['/split'] });
  assert.deepEqual(whole.statusCodes, { '200': 10 });
  assert.equal(whole.errors, 0);
  const broken = await runClosedLoop(target, { connections: 1, amount: 3, paths: ['/unframed'] });
  assert.equal(broken.requests, 0);
  assert.equal(broken.errors, 3);
});

test('open loop: two servers loaded at once at the given rate, each request timed into its own histogram', async (t) => {
  const servers = await Promise.all(
    ['a.sock', 'b.sock'].map(async (name) => {
      const path = await tempSocket(t, name);
      let count = 0;
      const server = createServer((_req, res) => {
        count++;
        res.writeHead(200, { 'content-length': '2' }).end('ok');
      });
      await listen(server, path);
      t.after(() => {
        server.closeAllConnections();
        server.close();
      });
      return { path, count: () => count };
    }),
  );
  const [a, b] = await runOpenLoops(
    servers.map((s) => ({ target: { kind: 'socket' as const, socketPath: s.path }, nextPath: (i: number) => `/k${i}` })),
    { rate: 500, durationS: 0.2, connections: 2 },
  );
  for (const r of [a, b]) {
    assert.ok(r);
    assert.equal(r.sent, 100);
    assert.equal(r.completed + r.dropped, 100);
    assert.equal(r.errors, 0);
    assert.equal(r.latency.count, r.completed);
    assert.ok(r.latency.p50 > 0);
  }
  // 50 warm-up rounds of one request per connection, then the measured 100.
  for (const s of servers) assert.equal(s.count(), 100 + 50 * 2);
});
