import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { http, metricValue, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

const cleanup: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

test('admin listener: health, readiness, and request metrics by route template and status', async () => {
  const server = await startServerProcess();
  cleanup.push(() => removeDir(server.dataDir));
  cleanup.push(() => server.stop('SIGKILL'));
  assert.equal((await http(server.adminUrl, 'GET', '/healthz')).status, 200);
  const ready = await http(server.adminUrl, 'GET', '/readyz');
  assert.equal(ready.status, 200);
  assert.equal(ready.json.status, 'ready');
  await http(server.httpUrl, 'GET', '/v1/items/team/app/missing', { token: server.rootToken });
  await http(server.httpUrl, 'GET', '/v1/items/team/app/missing', { token: server.rootToken });
  assert.equal(await metricValue(server.adminUrl, 'config_sidecar_server_http_requests_total', 'route="/v1/items/{path}",method="GET",status="404"'), 2);
  const metrics = (await http(server.adminUrl, 'GET', '/metrics')).text;
  assert.match(metrics, /config_sidecar_server_http_request_duration_seconds_bucket\{le="0.005",route="\/v1\/items\/\{path\}",method="GET"\}/);
  assert.match(metrics, /config_sidecar_server_watch_streams 0/);
  assert.ok(!metrics.includes('team/app/missing'), 'labels are route templates, never paths');
});

test('tracing: spans go to the OTLP endpoint and continue the caller’s trace', async () => {
  const bodies: string[] = [];
  let notify: () => void = () => {};
  const received = new Promise<void>((resolve) => (notify = resolve));
  const collector = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => (body += c));
    req.on('end', () => {
      bodies.push(body);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      notify();
    });
  });
  await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
  cleanup.push(() => new Promise((resolve) => collector.close(resolve)));
  const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}/v1/traces`;
  const server: ServerProcess = await startServerProcess({
    args: ['--otlp-endpoint', endpoint, '--trace-sample-ratio', '0'],
    env: { OTEL_BSP_SCHEDULE_DELAY: '50', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' },
  });
  cleanup.push(() => removeDir(server.dataDir));
  cleanup.push(() => server.stop('SIGKILL'));
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  // Sample ratio 0: only the caller's sampled context makes this span recorded.
  const res = await http(server.httpUrl, 'GET', '/v1/list/team', { token: server.rootToken, headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } });
  assert.equal(res.status, 200);
  await received;
  assert.ok(bodies.some((b) => b.includes(traceId) || b.includes(Buffer.from(traceId, 'hex').toString('base64'))), 'the span carries the caller’s trace id');
  assert.ok(!bodies.join('').includes(server.rootToken), 'no token in spans');
});

test('tracing from OpenTelemetry’s standard OTEL_EXPORTER_OTLP_ENDPOINT (a base URL); the old --otel-endpoint is refused naming the new flag', { timeout: 30_000 }, async () => {
  const paths: string[] = [];
  let notify: () => void = () => {};
  const received = new Promise<void>((resolve) => (notify = resolve));
  const collector = createServer((req, res) => {
    paths.push(req.url ?? '');
    req.resume().on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      notify();
    });
  });
  await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
  cleanup.push(() => new Promise((resolve) => collector.close(resolve)));
  const base = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
  const server: ServerProcess = await startServerProcess({
    args: ['--trace-sample-ratio', '1'],
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: base, OTEL_BSP_SCHEDULE_DELAY: '50', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' },
  });
  cleanup.push(() => removeDir(server.dataDir));
  cleanup.push(() => server.stop('SIGKILL'));
  assert.equal((await http(server.httpUrl, 'GET', '/v1/list/team', { token: server.rootToken })).status, 200);
  await received;
  assert.deepEqual([...new Set(paths)], ['/v1/traces']);

  const { runCli } = await import('./helpers/process.ts');
  const old = await runCli(['server', '--otel-endpoint', `${base}/v1/traces`], { CONFIG_SIDECAR_KEK: server.kek });
  assert.equal(old.code, 2);
  assert.match(old.stderr, /--otel-endpoint \(CONFIG_SIDECAR_OTEL_ENDPOINT\): was renamed: use --otlp-endpoint \(CONFIG_SIDECAR_OTLP_ENDPOINT\)/);
});
