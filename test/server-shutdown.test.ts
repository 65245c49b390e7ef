import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { GrpcStatus } from '../src/shared/errors.ts';
import { http, makeTempDir, openWatch, removeDir, startServerProcess } from './helpers/server-process.ts';

const cleanup: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

test('SIGTERM during an open watch and an in-flight write: the watch ends cleanly, the write is stored whole, exit 0', async () => {
  const dataDir = await makeTempDir();
  cleanup.push(() => removeDir(dataDir));
  const server = await startServerProcess({ dataDir });
  cleanup.push(() => server.stop('SIGKILL'));
  const watch = openWatch(server.grpcAddress, { prefixes: ['team'] }, server.rootToken);
  assert.equal((await watch.next()).type, 'heartbeat');

  // A write whose body is only half sent when the signal arrives.
  const value = 'v'.repeat(50_000);
  const body = Buffer.from(JSON.stringify({ kind: 'secret', value }));
  const url = new URL(server.httpUrl);
  const response = new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, method: 'PUT', path: '/v1/items/team/app/big', headers: { authorization: `Bearer ${server.rootToken}`, 'content-type': 'application/json', 'content-length': body.length } },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on('error', reject);
    // Signal only once the server holds the request: a later request on another
    // connection has been answered, so the earlier connection was accepted and its headers read.
    req.write(body.subarray(0, body.length / 2), () => {
      void http(server.httpUrl, 'GET', '/v1/openapi.json').then(() => server.proc.kill('SIGTERM'), reject);
    });
    void server.waitForLog((l) => l.msg === 'signal received').then(() => req.end(body.subarray(body.length / 2)));
  });
  const [written, status, code] = await Promise.all([response, watch.status, server.exited]);
  const stopped = server.logs.findIndex((l) => l.msg === 'server stopped');
  assert.ok(stopped > 0 && !server.logs.some((l) => l.msg === 'shutdown grace period over; cutting remaining connections'), 'shut down without cutting connections');
  assert.equal(code, 0, 'exit 0');
  assert.equal(status.code, GrpcStatus.UNAVAILABLE, 'the watch ends with a status telling the agent to reconnect');
  assert.equal(written.status, 200, written.text);

  const restarted = await startServerProcess({ dataDir, kek: server.kek, rootToken: server.rootToken });
  cleanup.push(() => restarted.stop('SIGKILL'));
  const read = await http(restarted.httpUrl, 'GET', '/v1/items/team/app/big', { token: restarted.rootToken });
  assert.equal(read.status, 200);
  assert.equal(read.json.value, value, 'the write is stored whole');
  const refused = await new Promise<string>((resolve) => {
    const req = request({ host: url.hostname, port: url.port, path: '/v1/openapi.json' }, () => resolve('answered'));
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    req.end();
  });
  assert.equal(refused, 'ECONNREFUSED', 'the old listener is gone');
});

/** Sends the headers and half the body of a PUT, so the server holds an in-flight request it cannot finish. */
function halfSentPut(server: { httpUrl: string; rootToken: string }): Promise<void> {
  const url = new URL(server.httpUrl);
  const body = Buffer.from(JSON.stringify({ kind: 'secret', value: 'x'.repeat(10_000) }));
  return new Promise((resolve, reject) => {
    const req = request({
      host: url.hostname,
      port: url.port,
      method: 'PUT',
      path: '/v1/items/team/app/held',
      headers: { authorization: `Bearer ${server.rootToken}`, 'content-type': 'application/json', 'content-length': body.length },
    });
    req.on('error', () => undefined); // cut by the shutdown, as intended
    req.write(body.subarray(0, body.length / 2), (err) => (err ? reject(err) : resolve()));
  });
}

test('a second SIGTERM during a shutdown held by an in-flight request exits 1 at once', async () => {
  const server = await startServerProcess({ args: ['--shutdown-grace', '10m'] });
  cleanup.push(() => server.stop('SIGKILL'), () => removeDir(server.dataDir));
  await halfSentPut(server);
  // Another request answered: the held connection's headers have been read.
  assert.equal((await http(server.httpUrl, 'GET', '/v1/openapi.json')).status, 200);
  server.proc.kill('SIGTERM');
  await server.waitForLog((l) => l.msg?.startsWith('shutting down') === true);
  server.proc.kill('SIGTERM');
  assert.equal(await server.exited, 1);
  assert.ok(server.logs.some((l) => l.msg === 'second signal during shutdown; exiting now'));
  assert.ok(!server.logs.some((l) => l.msg === 'server stopped'), 'the orderly close was still waiting');
});

test('--shutdown-grace: an in-flight request that never finishes is cut when the grace period ends, and the exit is 0', async () => {
  const server = await startServerProcess({ args: ['--shutdown-grace', '500ms'] });
  cleanup.push(() => server.stop('SIGKILL'), () => removeDir(server.dataDir));
  await halfSentPut(server);
  assert.equal((await http(server.httpUrl, 'GET', '/v1/openapi.json')).status, 200);
  assert.equal(await server.stop('SIGTERM'), 0);
  assert.ok(server.logs.some((l) => l.msg === 'shutdown grace period over; cutting remaining connections'));
  assert.ok(server.logs.some((l) => l.msg === 'server stopped'));
});

test('a watcher that stopped reading with a full buffer cannot hold the exit past the grace period', async () => {
  const server = await startServerProcess({ args: ['--shutdown-grace', '500ms', '--watch-buffer', '8', '--rate-limit', '0'] });
  cleanup.push(() => server.stop('SIGKILL'), () => removeDir(server.dataDir));
  const slow = openWatch(server.grpcAddress, { prefixes: ['slow'] }, server.rootToken, { stallAfterFirst: true });
  cleanup.push(async () => slow.close());
  assert.equal((await slow.next()).type, 'heartbeat');
  // Fat events fill the HTTP/2 flow-control window; the stream then holds queued bytes its peer never takes.
  const namespace = Array.from({ length: 8 }, (_, i) => `s${i}`.padEnd(60, 'x')).join('/').replace(/^s0x*/, 'slow');
  const ended = () => server.logs.some((l) => l.msg === 'watch stream ended' && l.reason === 'slow');
  for (let i = 0; !ended() && i < 5000; i++) {
    const res = await http(server.httpUrl, 'PUT', `/v1/items/${namespace}/item`, { token: server.rootToken, body: { kind: 'config', value: i } });
    assert.equal(res.status, 200, res.text);
  }
  assert.ok(ended(), 'the slow watcher was ended');
  assert.equal(await server.stop('SIGTERM'), 0);
  assert.ok(server.logs.some((l) => l.msg === 'server stopped'));
});

test('SIGTERM exits 0 even when nobody reads the log any more (broken stdout pipe)', async () => {
  const server = await startServerProcess();
  cleanup.push(() => server.stop('SIGKILL'), () => removeDir(server.dataDir));
  // The reader of the server's stdout goes away, as when the parent that piped it dies:
  // every later log write fails with EPIPE. Such a server used to take SIGTERM and never exit.
  server.proc.stdout?.destroy();
  assert.equal(await server.stop('SIGTERM'), 0, `signal ${server.proc.signalCode}; stderr: ${server.output().slice(-1000)}`);
});
