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
