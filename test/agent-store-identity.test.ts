/**
 * Positions and store identity end to end: real server and agent processes,
 * with both of the agent's paths (REST and gRPC) through TCP proxies so the
 * server can be cut, or replaced by another one on new ports. Waits on the
 * agent's stream metric, its applied revision and its log, never on sleeps.
 *
 * - Finding 1: a store at revision 0; the stream drops; a value is filled over
 *   REST and written again meanwhile: the resume replays the writes.
 * - Finding 3: restore from an older backup: the agent resyncs and never
 *   serves a version from the lost history.
 * - Finding 6: a reset store (new store id, new data keys): the agent drops the
 *   old store's keys and serves the new store's values, no decryption_failed.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { HEADERS } from '../src/shared/protocol.ts';
import { runCli } from './helpers/process.ts';
import { makeTempDir, metricValue, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { hook, putItem, socketGet, startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';
import { startTcpProxy, waitForMetric, type TcpProxy } from './helpers/tcp-proxy.ts';

const STREAM_CONNECTED = 'config_sidecar_agent_stream_connected';
const ITEM = '/v1/items/production/ident/key';

const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn().catch(() => {});
});

interface Stack {
  server: ServerProcess;
  readonly rest: TcpProxy;
  readonly grpc: TcpProxy;
  readonly agent: AgentProcess;
}

async function server(options: { dataDir?: string; kek?: string; rootToken?: string } = {}): Promise<ServerProcess> {
  const s = await startServerProcess({ ...options, args: ['--heartbeat-interval', '1s'] });
  cleanups.push(async () => {
    await s.stop();
    await removeDir(s.dataDir);
  });
  return s;
}

async function stack(first: ServerProcess): Promise<Stack> {
  const rest = await startTcpProxy(new URL(first.httpUrl).host);
  const grpc = await startTcpProxy(first.grpcAddress);
  cleanups.push(() => rest.close(), () => grpc.close());
  const agent = await startAgentProcess({ httpUrl: `http://${rest.address}`, grpcAddress: grpc.address, rootToken: first.rootToken }, { prefixes: ['production'], args: ['--cache-ttl', '1h', '--refetch-jitter', '0'] });
  cleanups.push(() => agent.stop());
  await waitReady(agent.adminUrl);
  await waitForMetric(() => metricValue(agent.adminUrl, STREAM_CONNECTED), (v) => v === 1, 'the stream to connect');
  return { server: first, rest, grpc, agent };
}

/** Points the agent's both paths at another server. */
function moveTo(s: Stack, next: ServerProcess): void {
  s.server = next;
  s.rest.retarget(new URL(next.httpUrl).host);
  s.grpc.retarget(next.grpcAddress);
}

async function value(agent: AgentProcess): Promise<{ status: number; value: unknown; stale: boolean; code?: string }> {
  const r = await socketGet(agent.socketPath, ITEM);
  return { status: r.status, value: r.json?.value, stale: r.headers[HEADERS.stale] !== undefined, code: r.json?.error?.code };
}

test('finding 1: a store at revision 0 is resumed after 0, so writes made while the stream was down are applied', async () => {
  const s = await stack(await server());
  s.grpc.cut();
  await waitForMetric(() => metricValue(s.agent.adminUrl, STREAM_CONNECTED), (v) => v === 0, 'the stream to drop');
  await putItem(s.server, 'production/ident/key', { kind: 'secret', value: 'first' });
  assert.equal((await value(s.agent)).value, 'first', 'filled over REST while the stream is down');
  const second = await putItem(s.server, 'production/ident/key', { kind: 'secret', value: 'second' });
  s.grpc.restore();
  await hook(s.agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${second.revision}`);
  assert.deepEqual(await value(s.agent), { status: 200, value: 'second', stale: false, code: undefined });
});

test('finding 3: after a restore from an older backup the agent resyncs and never serves the lost history', async () => {
  const first = await server();
  await putItem(first, 'production/ident/key', { kind: 'secret', value: 'in-backup' });
  const backupDir = await makeTempDir('cs-ident-backup-');
  cleanups.push(() => removeDir(backupDir));
  const file = join(backupDir, 'snapshot.db');
  const backup = await runCli(['backup', '--to', file, '--data-dir', first.dataDir], { CONFIG_SIDECAR_KEK: first.kek });
  assert.equal(backup.code, 0, backup.stderr);
  const s = await stack(first);
  const lost = await putItem(first, 'production/ident/key', { kind: 'secret', value: 'lost' });
  await hook(s.agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${lost.revision}`);
  assert.equal((await value(s.agent)).value, 'lost');

  await first.stop();
  const restoredDir = await makeTempDir('cs-ident-restored-');
  const restore = await runCli(['restore', '--from', file, '--data-dir', restoredDir], { CONFIG_SIDECAR_KEK: first.kek });
  assert.equal(restore.code, 0, restore.stderr);
  const seen = s.agent.logs.length;
  moveTo(s, await server({ dataDir: restoredDir, kek: first.kek, rootToken: first.rootToken }));
  await s.agent.waitForLog((l) => s.agent.logs.indexOf(l) >= seen && l.msg === 'resync required: cache dropped');
  await waitForMetric(() => metricValue(s.agent.adminUrl, STREAM_CONNECTED), (v) => v === 1, 'the stream to the restored server');
  assert.deepEqual(await value(s.agent), { status: 200, value: 'in-backup', stale: false, code: undefined }, 'the restored value, not one from the lost history');
  const next = await putItem(s.server, 'production/ident/key', { kind: 'secret', value: 'after-restore' });
  await hook(s.agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${next.revision}`);
  assert.equal((await value(s.agent)).value, 'after-restore', 'writes after the restore are applied');
});

test('finding 6: a reset store (new id, new data keys): the old keys are dropped, no decryption_failed', async () => {
  const first = await server();
  await putItem(first, 'production/ident/key', { kind: 'secret', value: 'old-store' });
  const s = await stack(first);
  assert.equal((await value(s.agent)).value, 'old-store');
  await first.stop();
  const seen = s.agent.logs.length;
  const fresh = await server({ kek: first.kek, rootToken: first.rootToken });
  await putItem(fresh, 'production/ident/key', { kind: 'secret', value: 'new-store' });
  await putItem(fresh, 'production/ident/other', { kind: 'secret', value: 'also-new' });
  moveTo(s, fresh);
  await s.agent.waitForLog((l) => s.agent.logs.indexOf(l) >= seen && l.msg === 'resync required: cache dropped');
  assert.deepEqual(await value(s.agent), { status: 200, value: 'new-store', stale: false, code: undefined });
  const other = await socketGet(s.agent.socketPath, '/v1/items/production/ident/other');
  assert.equal(other.status, 200, JSON.stringify(other.json));
  assert.equal(other.json.value, 'also-new');
});
