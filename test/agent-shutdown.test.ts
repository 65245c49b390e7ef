/**
 * How a real `config-sidecar agent` process ends on SIGTERM when something
 * would hold it: a reader of its stdout that went away (every log write
 * fails with EPIPE), or a request still in flight when a second signal comes.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { hook, putItem, socketGet, startAgentProcess, waitReady } from './helpers/agent-process.ts';

let server: ServerProcess;
const cleanup: Array<() => Promise<unknown>> = [];

before(async () => {
  server = await startServerProcess();
  await putItem(server, 'production/ml/db-password', { kind: 'secret', value: 'shutdown-secret' });
});

after(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await server?.stop();
  await removeDir(server?.dataDir ?? '');
});

test('SIGTERM exits 0 with a broken stdout pipe', async () => {
  const agent = await startAgentProcess(server, { prefetch: ['production/ml/db-password'] });
  cleanup.push(() => agent.stop('SIGKILL'), () => removeDir(agent.dir));
  await waitReady(agent.adminUrl);
  // The reader of the agent's stdout goes away, as when the parent that piped it dies: every later
  // log write fails with EPIPE, and pino's exit hook used to retry its last write forever.
  agent.proc.stdout?.destroy();
  assert.equal(await agent.stop('SIGTERM'), 0, `signal ${agent.proc.signalCode}; stderr: ${agent.output().slice(-1000)}`);
});

test('a second SIGTERM exits at once (1) while the drain waits for an in-flight request', async () => {
  const agent = await startAgentProcess(server);
  cleanup.push(() => agent.stop('SIGKILL'), () => removeDir(agent.dir));
  await waitReady(agent.adminUrl);
  // A read held after the server answered: the request stays in flight, so the drain waits on it.
  await hook(agent.adminUrl, 'POST', '/debug/hold?key=production/ml/db-password');
  const pending = socketGet(agent.socketPath, '/v1/items/production/ml/db-password').catch((err: unknown) => err);
  await hook(agent.adminUrl, 'GET', '/debug/held?key=production/ml/db-password');
  agent.proc.kill('SIGTERM');
  await agent.waitForLog((l) => l.msg === 'agent stopping: draining requests');
  agent.proc.kill('SIGTERM');
  assert.equal(await agent.exited, 1);
  assert.ok(agent.logs.some((l) => l.msg === 'second signal during shutdown; exiting now'));
  assert.ok(!agent.logs.some((l) => l.msg === 'agent stopped'), 'the orderly close was still draining');
  await pending;
});
