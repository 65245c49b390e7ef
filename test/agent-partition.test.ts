/**
 * Partitions between the agent and the control plane, with real processes
 * and a TCP proxy on the agent's gRPC path (test/helpers/tcp-proxy.ts); REST
 * goes straight to the server, so only the stream is partitioned. Waits on
 * `config_sidecar_agent_stream_connected` and on reads, never on sleeps.
 *
 * - Finding 6, a frozen path (the proxy stops forwarding without closing):
 *   within 5 s of a write the agent serves it or marks what it serves stale.
 * - Finding 6, an outage: the stream is back within the agent's 10 s backoff
 *   cap of the server's return (grpc-js's own channel backoff no longer adds
 *   to it). The outage lasts PARTITION_OUTAGE_MS (default 12 s so the suite
 *   stays fast; the acceptance run uses 30000).
 * - Finding 2: files rendered before the stream connects are re-rendered
 *   when it connects, including a file item with its own `env:`.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HEADERS } from '../src/shared/protocol.ts';
import { metricValue, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { makeAgentDir, putItem, socketGet, startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';
import { startTcpProxy, waitForMetric, type TcpProxy } from './helpers/tcp-proxy.ts';

const OUTAGE_MS = Number(process.env.PARTITION_OUTAGE_MS ?? 12_000);
const FROZEN_BOUND_MS = 5_000;
const RECONNECT_CAP_MS = 10_000;
/** Connection set-up on a loaded 2-core machine, on top of the backoff cap. */
const CONNECT_SLACK_MS = 1_000;
const STREAM_CONNECTED = 'config_sidecar_agent_stream_connected';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn().catch(() => {});
});

async function stack(): Promise<{ server: ServerProcess; proxy: TcpProxy }> {
  const server = await startServerProcess({ args: ['--heartbeat-interval', '1s'] });
  cleanups.push(async () => {
    await server.stop();
    await removeDir(server.dataDir);
  });
  const proxy = await startTcpProxy(server.grpcAddress);
  cleanups.push(() => proxy.close());
  return { server, proxy };
}

async function startAgent(server: ServerProcess, proxy: TcpProxy, options: { args?: string[]; dir?: string; prefetch?: string[] } = {}): Promise<AgentProcess> {
  const agent = await startAgentProcess({ ...server, grpcAddress: proxy.address }, { prefixes: ['production'], prefetch: options.prefetch ?? [], args: ['--cache-ttl', '1h', ...(options.args ?? [])], ...(options.dir ? { dir: options.dir, pod: false } : {}) });
  cleanups.push(() => agent.stop());
  return agent;
}

const connected = (agent: AgentProcess) => () => metricValue(agent.adminUrl, STREAM_CONNECTED);

test('finding 6: a frozen path: within 5 s of a write the agent serves it or marks what it serves as stale', async () => {
  const { server, proxy } = await stack();
  await putItem(server, 'production/part/key', { kind: 'secret', value: 'v1' });
  const agent = await startAgent(server, proxy, { prefetch: ['production/part/key'] });
  await waitReady(agent.adminUrl);
  await waitForMetric(connected(agent), (v) => v === 1, 'the stream to connect');
  assert.equal((await socketGet(agent.socketPath, '/v1/items/production/part/key')).json.value, 'v1');

  proxy.freeze();
  const written = Date.now();
  await putItem(server, 'production/part/key', { kind: 'secret', value: 'v2' });
  for (;;) {
    const read = await socketGet(agent.socketPath, '/v1/items/production/part/key');
    const elapsed = Date.now() - written;
    if (read.json.value === 'v2' || read.headers[HEADERS.stale] !== undefined) {
      assert.ok(elapsed <= FROZEN_BOUND_MS, `the write was served or the read stale-marked after ${elapsed} ms`);
      break;
    }
    assert.ok(elapsed <= FROZEN_BOUND_MS, `still serving ${read.json.value} unmarked ${elapsed} ms after the write`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  proxy.restore();
  await waitForMetric(connected(agent), (v) => v === 1, 'the stream to come back');
  const back = await socketGet(agent.socketPath, '/v1/items/production/part/key');
  assert.equal(back.json.value, 'v2');
  assert.equal(back.headers[HEADERS.stale], undefined, 'fresh again once the stream is back');
});

test(`finding 6: after a ${OUTAGE_MS / 1000} s outage the stream is back within the agent's 10 s backoff cap`, { timeout: OUTAGE_MS + 60_000 }, async () => {
  const { server, proxy } = await stack();
  const agent = await startAgent(server, proxy);
  await waitReady(agent.adminUrl);
  await waitForMetric(connected(agent), (v) => v === 1, 'the stream to connect');
  proxy.cut();
  await waitForMetric(connected(agent), (v) => v === 0, 'the agent to notice the cut');
  // The outage: every attempt meanwhile is refused, so the agent's backoff grows to its cap.
  await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS));
  proxy.restore();
  const took = await waitForMetric(connected(agent), (v) => v === 1, 'the stream to come back', RECONNECT_CAP_MS * 3);
  assert.ok(took <= RECONNECT_CAP_MS + CONNECT_SLACK_MS, `the stream came back ${took} ms after the server was reachable again (cap ${RECONNECT_CAP_MS} ms)`);
});

test('finding 2: files rendered before the stream connects are re-rendered when it connects (own env: included)', async () => {
  const { server, proxy } = await stack();
  await putItem(server, 'production/files/conf', { kind: 'config', value: { a: 1 } });
  await putItem(server, 'production/files/conf', { kind: 'config', value: { s: 1 } }, 'staging');
  // As the test's user: file permissions in a pod are files-e2e's subject; this one is about freshness.
  const dir = await makeAgentDir(undefined, 'cs-partition-files-');
  cleanups.push(() => removeDir(dir));
  const filesDir = join(dir, 'files');
  const config = join(dir, 'agent.yaml');
  writeFileSync(config, `files: ${JSON.stringify([{ path: 'conf.json', items: ['production/files/conf'], format: 'json' }, { path: 'staging.json', items: [{ item: 'production/files/conf', env: 'staging' }], format: 'json' }])}\n`);
  proxy.freeze(); // the stream cannot connect: files are rendered over REST
  const agent = await startAgent(server, proxy, { args: ['--config', config, '--files-dir', filesDir], dir });
  await agent.waitForLog((l) => l.msg === 'files published' && Array.isArray(l.files) && (l.files as string[]).includes('staging.json'));
  const read = (file: string): string => JSON.stringify(JSON.parse(readFileSync(join(filesDir, file), 'utf8')));
  assert.equal(read('conf.json'), JSON.stringify({ a: 1, s: 1 }));
  assert.equal(read('staging.json'), JSON.stringify({ a: 1, s: 1 }));
  // Written while the stream is down: no event will ever announce these to this agent's stream start.
  await putItem(server, 'production/files/conf', { kind: 'config', value: { a: 2 } });
  await putItem(server, 'production/files/conf', { kind: 'config', value: { s: 2 } }, 'staging');
  assert.equal(await metricValue(agent.adminUrl, STREAM_CONNECTED), 0);

  proxy.cut(); // the frozen attempt is reset; the next one goes through
  proxy.restore();
  await waitForMetric(connected(agent), (v) => v === 1, 'the stream to connect');
  const deadline = Date.now() + 15_000;
  for (;;) {
    const [conf, staging] = [read('conf.json'), read('staging.json')];
    if (conf === JSON.stringify({ a: 2, s: 2 }) && staging === JSON.stringify({ a: 2, s: 2 })) break;
    assert.ok(Date.now() < deadline, `files not re-rendered after the stream connected: ${conf} ${staging}`);
    await agent.waitForLog((l) => l.msg === 'files published', 5_000).catch(() => undefined);
  }
});
