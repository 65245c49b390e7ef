/**
 * Bare node:http (as refs/bare-http.ts: the same 1 KiB body on a Unix
 * socket) with, when the second argument is `other-users`, the agent's other
 * kinds of node:events users exercised in the same process before it serves:
 * an HTTP/2 session and streams over loopback (what gRPC uses), an undici
 * pool's requests to a loopback node:http server (the control-plane client),
 * a `fs/promises` file handle and a `Readable` with a `read` option. They
 * hand node's `emit` and `_addListener` the shapes that make them
 * megamorphic in the agent (docs/FOOTPRINT-LOG.md,
 * y16), so the difference to the plain variant is what that costs a server
 * that does nothing else. `http2` or `undici` instead exercises that user
 * alone. `worker` runs what `other-users` runs in a `worker_threads` Worker
 * that stays up (its session and pool kept open), so the serving isolate
 * never sees those shapes: the upper bound of moving the agent's
 * control-plane I/O off the main thread (g27). `worker-empty` starts an
 * idle Worker only (what the thread itself costs).
 * Usage: node other-users-http.ts SOCKET [plain|other-users|http2|undici|worker|worker-empty]
 * Prints `listening SOCKET` once ready; on SIGUSR2 prints its memory
 * (`memory VmRSS=… RssAnon=…` in KiB, from /proc/self/status).
 */
import { createServer, type Server } from 'node:http';
import { connect, createServer as createHttp2Server, type ClientHttp2Session } from 'node:http2';
import { rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { readFileSync } from 'node:fs';
import { poolClass } from '../../src/shared/undici-pool.ts';

const where: string | undefined = isMainThread ? process.argv[2] : 'worker';
if (where === undefined) throw new Error('give the Unix socket path to listen on');
const mode: string = isMainThread ? (process.argv[3] ?? 'plain') : String(workerData);
const uses = (user: string): boolean => mode === 'other-users' || mode === user;
const body = Buffer.alloc(1024, 'x');

function listen(server: { listen(port: number, host: string, cb: () => void): unknown; address(): unknown }): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
}

function http2Request(session: ClientHttp2Session): Promise<void> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': '/' });
    stream.on('error', reject);
    stream.resume();
    stream.on('end', resolve);
    stream.end();
  });
}

/** Each kind of user a few times, long enough for their shapes to reach node's shared code; all on loopback, bounded. */
async function exerciseOtherUsers(): Promise<void> {
  if (uses('http2')) {
    const h2 = createHttp2Server((_req, res) => res.end('ok'));
    const session = connect(`http://127.0.0.1:${await listen(h2)}`);
    for (let i = 0; i < 20; i++) await http2Request(session);
    // Kept open, as the agent keeps its watch stream.
    process.on('SIGTERM', () => {
      session.close();
      h2.close();
    });
  }
  if (uses('undici')) {
    const upstream: Server = createServer((_req, res) => res.end('ok'));
    const Pool = poolClass();
    const pool = new Pool(`http://127.0.0.1:${await listen(upstream)}`, { connections: 2 });
    for (let i = 0; i < 20; i++) await (await pool.request({ path: '/', method: 'GET' })).body.text();
    process.on('SIGTERM', () => {
      void pool.close();
      upstream.close();
    });
  }
  if (mode === 'other-users') {
    const file = await open(fileURLToPath(import.meta.url), 'r');
    await file.read(Buffer.alloc(16), 0, 16, 0);
    await file.close();
    for await (const chunk of new Readable({ read() { this.push('x'); this.push(null); } })) void chunk;
  }
}

/** Starts this file again as a Worker running `workerMode`, and waits until its users have run. */
function startWorker(workerMode: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: workerMode });
    worker.once('message', () => resolve());
    worker.once('error', reject);
    process.on('SIGTERM', () => void worker.terminate());
  });
}

async function serve(): Promise<void> {
  if (where === undefined) return;
  process.on('SIGUSR2', () => {
    const status = readFileSync('/proc/self/status', 'utf8');
    const kib = (field: string): string => new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? '?';
    console.log(`memory VmRSS=${kib('VmRSS')} RssAnon=${kib('RssAnon')}`);
  });
  if (mode === 'worker') await startWorker('other-users');
  else if (mode === 'worker-empty') await startWorker('plain');
  else await exerciseOtherUsers();
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.end(body);
  });
  server.keepAliveTimeout = 30_000;
  process.on('SIGTERM', () => {
    server.close();
    server.closeAllConnections();
  });
  rmSync(where, { force: true });
  server.listen(where, () => console.log(`listening ${where}`));
}

if (isMainThread) await serve();
else {
  await exerciseOtherUsers();
  // The port's listener keeps an idle Worker up until the main thread terminates it.
  parentPort?.on('message', () => undefined);
  parentPort?.postMessage('ready');
}
