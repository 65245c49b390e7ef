/**
 * The agent's Watch stream against a real server: a resume older than the
 * server's retained log gets ResyncRequired (cache dropped, SSE `resync`,
 * prefetch reloaded), and a server that goes silent (SIGSTOP) is declared dead
 * after 3 heartbeat intervals on the agent's clock and reconnected to, resuming
 * from the applied revision.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { hook, openSse, putItem, socketGet, startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';

const stack: Array<{ server: ServerProcess; agent?: AgentProcess }> = [];

after(async () => {
  for (const { server, agent } of stack) {
    if (server.proc.exitCode === null) server.proc.kill('SIGCONT');
    await agent?.stop();
    await server.stop();
    await removeDir(agent?.dir ?? '');
    await removeDir(server.dataDir);
  }
});

test('a resume older than the retained log gets a resync: cache dropped, SSE resync, prefetch reloaded', async () => {
  const server = await startServerProcess({ args: ['--retain-events', '2'] });
  stack.push({ server });
  await putItem(server, 'production/ml/db-password', { kind: 'secret', value: 'before-resync' });
  const agent = await startAgentProcess(server, { prefixes: ['production/ml'], prefetch: ['production/ml/db-password'], args: ['--refetch-jitter', '0'] });
  (stack[0] as { agent?: AgentProcess }).agent = agent;
  await waitReady(agent.adminUrl);
  const sse = openSse(agent.socketPath, '/v1/watch?prefix=production/ml');
  await sse.opened;

  await hook(agent.adminUrl, 'POST', '/debug/stream/pause');
  let last = 0;
  for (let i = 0; i < 4; i++) last = (await putItem(server, `production/ml/other-${i}`, { kind: 'config', value: { i } })).revision;
  await putItem(server, 'production/ml/db-password', { kind: 'secret', value: 'after-resync' });
  await hook(agent.adminUrl, 'POST', '/debug/stream/resume');

  const resync = await sse.next();
  assert.equal(resync.event, 'resync');
  assert.ok(Number(resync.id) > last);
  await agent.waitForLog((l) => l.msg === 'resync required: cache dropped');
  assert.equal((await socketGet(agent.socketPath, '/v1/items/production/ml/db-password')).json.value, 'after-resync');
  // The stream goes on live after the resync.
  const live = await putItem(server, 'production/ml/db-password', { kind: 'secret', value: 'live-again' });
  const changed = await sse.next();
  assert.deepEqual([changed.event, Number(changed.id)], ['changed', live.revision]);
  sse.close();
});

test('a silent stream is dead after 3 heartbeat intervals and the agent resumes from its applied revision', async () => {
  const server = await startServerProcess();
  const entry: { server: ServerProcess; agent?: AgentProcess } = { server };
  stack.push(entry);
  const put = await putItem(server, 'production/ml/db-password', { kind: 'secret', value: 'v1' });
  const agent = await startAgentProcess(server, { prefixes: ['production/ml'], prefetch: ['production/ml/db-password'] });
  entry.agent = agent;
  await waitReady(agent.adminUrl);
  await hook(agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${put.revision}`);
  const applied = (await hook(agent.adminUrl, 'GET', '/debug/state')).appliedRevision as number;

  server.proc.kill('SIGSTOP');
  // Default heartbeat 10 s: 31 s on the agent's clock is past 3 missed intervals.
  await hook(agent.adminUrl, 'POST', '/debug/clock/advance?ms=31000');
  await agent.waitForLog((l) => l.msg === 'watch stream silent for 3 heartbeat intervals; reconnecting');
  // Within max-stale the agent stays ready and keeps serving (stale-marked).
  const stale = await socketGet(agent.socketPath, '/v1/items/production/ml/db-password');
  assert.equal(stale.json.value, 'v1');
  assert.ok(stale.headers['x-config-stale'] !== undefined);
  const seen = agent.logs.length;
  server.proc.kill('SIGCONT');
  const line = await agent.waitForLog((l) => l.msg === 'watch stream connected' && agent.logs.indexOf(l) >= seen);
  assert.equal(line.sinceRevision, applied);
  const fresh = await socketGet(agent.socketPath, '/v1/items/production/ml/db-password');
  assert.equal(fresh.headers['x-config-stale'], undefined);
});

test('comma-separated server lists fail over: a dead first server is skipped for REST and gRPC', async () => {
  const server = await startServerProcess();
  const entry: { server: ServerProcess; agent?: AgentProcess } = { server };
  stack.push(entry);
  await putItem(server, 'production/ml/db-password', { kind: 'secret', value: 'via-second' });
  const dead = await deadPort();
  const agent = await startAgentProcess(
    { httpUrl: `http://127.0.0.1:${dead},${server.httpUrl}`, grpcAddress: `127.0.0.1:${dead},${server.grpcAddress}`, rootToken: server.rootToken },
    { prefixes: ['production/ml'], prefetch: ['production/ml/db-password'] },
  );
  entry.agent = agent;
  await waitReady(agent.adminUrl);
  assert.equal((await socketGet(agent.socketPath, '/v1/items/production/ml/db-password')).json.value, 'via-second');
  const connected = await agent.waitForLog((l) => l.msg === 'watch stream connected');
  assert.equal(connected.address, server.grpcAddress);
});

/** A port nothing listens on (bound by the OS, then released). */
function deadPort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.listen(0, '127.0.0.1', () => {
      const port = (probe.address() as { port: number }).port;
      probe.close(() => resolve(port));
    });
  });
}
