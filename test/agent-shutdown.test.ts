/**
 * How a real `config-sidecar agent` process ends on SIGTERM when something
 * would hold it: a reader of its stdout that went away (every log write
 * fails with EPIPE), a reader that stopped reading (a full stdout pipe), or
 * a request still in flight when a second signal comes.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CLI, makeTempDir, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { hook, putItem, socketGet, startAgentProcess, waitReady } from './helpers/agent-process.ts';

/** Bytes put in the stdout pipe before the agent starts: just under Linux's 64 KiB pipe capacity, so its start-up lines fill it. */
const PIPE_PREFILL_BYTES = 65_000;
/** Longer than the agent's own hard shutdown deadline (drain 5 s + 5 s). */
const EXIT_WAIT_MS = 20_000;
const POLL_MS = 50;

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

const quote = (arg: string): string => `'${arg.replaceAll("'", "'\\''")}'`;

/** Resolves with what `read` returns once it returns something, or rejects after `timeoutMs`. */
async function pollFor<T>(read: () => Promise<T | undefined>, what: string, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what} not seen within ${timeoutMs}ms`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

test('SIGTERM exits 0 when stdout is a full pipe nobody reads', async () => {
  const dir = await makeTempDir('cs-agent-full-');
  const tokenFile = join(dir, 'upstream-token');
  await writeFile(tokenFile, server.rootToken, { mode: 0o600 });
  const socketPath = join(dir, 'run', 'agent.sock');
  const pidFile = join(dir, 'agent.pid');
  const statusFile = join(dir, 'agent.status');
  const agent = [process.execPath, CLI, 'agent', '--server', server.httpUrl, '--server-grpc', server.grpcAddress, '--token-file', tokenFile,
    '--socket', socketPath, '--http-listen', 'off', '--admin-listen', '127.0.0.1:0', '--prefix', 'production'].map(quote).join(' ');
  // A real kernel pipe whose reader (sleep) never reads, nearly full before the agent writes a line. Such a
  // blocking pipe held pino's write in a worker thread forever, and process.exit waited for that thread.
  const script = `{ head -c ${PIPE_PREFILL_BYTES} /dev/zero; ${agent} & echo $! > ${quote(pidFile)}; wait $!; echo $? > ${quote(statusFile)}; } | sleep 600`;
  const shell = spawn('sh', ['-c', script], { stdio: ['ignore', 'ignore', 'inherit'], detached: true, env: { PATH: process.env.PATH ?? '' } });
  cleanup.push(async () => {
    if (shell.pid !== undefined) process.kill(-shell.pid, 'SIGKILL');
  }, () => removeDir(dir));
  const pid = Number(await pollFor(async () => (await readFile(pidFile, 'utf8')).trim() || undefined, 'agent pid', EXIT_WAIT_MS));
  const answered = await pollFor(async () => (await socketGet(socketPath, '/v1/items/production/ml/db-password')).status, 'agent socket', EXIT_WAIT_MS);
  assert.equal(answered, 200);
  process.kill(pid, 'SIGTERM');
  const status = await pollFor(async () => (await readFile(statusFile, 'utf8')).trim() || undefined, 'agent exit', EXIT_WAIT_MS).catch((err: unknown) => {
    process.kill(pid, 'SIGKILL');
    throw err;
  });
  assert.equal(status, '0');
});
