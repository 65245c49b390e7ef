/**
 * `config-sidecar exec` as a user runs it: a real server and agent, exec as a
 * real process, and a real child that writes the environment it was given to
 * a file (and counts the SIGHUPs it trapped). Where the pod harness works,
 * exec and its child run as the app container's user (uid 1000 in the pod's
 * fsGroup, no capabilities) against an agent running as 65532, as in a pod. Restart on change, signal on
 * change, debounce, the child's exit status, SIGTERM leaving no child, bad
 * usage, and no value ever in exec's own output.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, watch, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { http, removeDir, makeTempDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { defaultPod, putItem, startAgentProcess, type AgentProcess } from './helpers/agent-process.ts';
import { makePodDir, makeVolume, reachableProject } from './helpers/pod-harness.ts';
import { spawnCli, type LoggedProcess } from './helpers/process.ts';
import { within } from './helpers/files-wait.ts';

let server: ServerProcess;
let agent: AgentProcess;
let dir: string;
let childScript: string;
let stateDir: string;
const pod = defaultPod();
/** The node the child runs on: one the app's uid can reach. */
const childNode = (): string => (pod ? reachableProject(pod.app).node : process.execPath);
/** `config-sidecar exec ...` as the app container's user (where the harness works). */
const execCli = (args: readonly string[], env: Record<string, string> = {}): LoggedProcess => spawnCli('exec', ['exec', ...args], env, pod ? { as: pod.app } : {});
const secrets = new Set<string>();
let runs = 0;

/** The child: records pid, the variables under test and its SIGHUP count; SIGTERM ends it unless told to ignore it. */
const CHILD = `
import { writeFileSync, renameSync, appendFileSync } from 'node:fs';
const out = process.argv[2];
const mode = process.argv[3] ?? '';
let hups = 0;
const write = () => {
  const state = { pid: process.pid, password: process.env.DB_PASSWORD, host: process.env.DB_HOST, rps: process.env.LIMITS_RPS, inherited: process.env.INHERITED, hups };
  writeFileSync(out + '.tmp', JSON.stringify(state));
  renameSync(out + '.tmp', out);
};
appendFileSync(out + '.starts', process.pid + '\\n');
process.on('SIGHUP', () => { hups += 1; write(); });
process.on('SIGTERM', () => { if (mode !== 'ignore-term') process.exit(0); });
write();
if (mode.startsWith('exit:')) process.exit(Number(mode.slice(5)));
setInterval(() => {}, 1 << 30);
`;

interface ChildState {
  readonly pid: number;
  readonly password?: string;
  readonly host?: string;
  readonly rps?: string;
  readonly inherited?: string;
  readonly hups: number;
}

async function put(name: string, body: { kind: 'secret' | 'config'; value: unknown }): Promise<void> {
  if (body.kind === 'secret') secrets.add(String(body.value));
  await putItem(server, `production/app/${name}`, body);
}

before(async () => {
  dir = pod ? await makePodDir('cs-exec-') : await makeTempDir('cs-exec-');
  childScript = join(dir, 'child.mjs');
  writeFileSync(childScript, CHILD, { mode: 0o644 });
  // Where the child writes what it was given: writable by the app's user, like an emptyDir.
  stateDir = join(dir, 'state');
  if (pod) await makeVolume(stateDir, pod.fsGroup);
  else mkdirSync(stateDir);
  server = await startServerProcess();
  await put('db-password', { kind: 'secret', value: 'pw-initial-4f1c' });
  await put('limits', { kind: 'config', value: { rps: 100, db: { host: 'db-1.internal' } } });
  agent = await startAgentProcess(server, { prefixes: ['production/app'] });
});

after(async () => {
  await agent?.stop();
  await server?.stop();
  await removeDir(agent?.dir ?? '');
  await removeDir(server?.dataDir ?? '');
  await removeDir(dir ?? '');
});

/** Starts exec with `flags` around the child; returns the process and the child's state file. */
function startExec(flags: readonly string[], childMode = '', env: Record<string, string> = {}): { exec: LoggedProcess; out: string } {
  runs += 1;
  const out = join(stateDir, `state-${runs}.json`);
  const exec = execCli(['--socket', agent.socketPath, ...flags, '--', childNode(), childScript, out, childMode], { INHERITED: 'kept', ...env });
  return { exec, out };
}

function readState(out: string): ChildState | undefined {
  try {
    return JSON.parse(readFileSync(out, 'utf8')) as ChildState;
  } catch {
    return undefined;
  }
}

/** Waits until the child's state file satisfies `predicate` (woken by the file's rename, not a sleep). */
async function waitForState(out: string, predicate: (s: ChildState) => boolean, what: string, timeoutMs = 20_000): Promise<ChildState> {
  const watcher = watch(stateDir);
  try {
    return await within(
      new Promise<ChildState>((resolve) => {
        const check = (): void => {
          const state = readState(out);
          if (state && predicate(state)) resolve(state);
        };
        watcher.on('change', check);
        check();
      }),
      what,
      timeoutMs,
    );
  } finally {
    watcher.close();
  }
}

const starts = (out: string): number[] => (existsSync(`${out}.starts`) ? readFileSync(`${out}.starts`, 'utf8').trim().split('\n').map(Number) : []);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function assertNoValue(output: string): void {
  for (const secret of secrets) assert.ok(!output.includes(secret), 'exec printed a secret value');
  assert.ok(!output.includes('db-1.internal') && !output.includes('db-2.internal'), 'exec printed a config value');
}

test('--on-change restart: the child is restarted with the new value, at once, not after the debounce window', async () => {
  // A 60 s window: only the immediate (leading) action can deliver the change in time.
  const { exec, out } = startExec([
    '--env',
    'DB_PASSWORD=production/app/db-password',
    '--env',
    'DB_HOST=production/app/limits#/db/host',
    '--env-prefix',
    'LIMITS_=production/app/limits',
    '--debounce',
    '60s',
  ]);
  try {
    const first = await waitForState(out, (s) => s.password !== undefined, 'the first child');
    assert.deepEqual([first.password, first.host, first.rps, first.inherited], ['pw-initial-4f1c', 'db-1.internal', '100', 'kept']);
    await put('db-password', { kind: 'secret', value: 'pw-second-9a2b' });
    const second = await waitForState(out, (s) => s.password === 'pw-second-9a2b', 'the restarted child with the new value', 10_000);
    assert.notEqual(second.pid, first.pid, 'a new process');
    assert.ok(!alive(first.pid), 'the old child is gone');
    assert.equal(second.host, 'db-1.internal');
  } finally {
    assert.equal(await exec.stop(), 0, 'SIGTERM ends exec with the child status (it exits 0 on SIGTERM)');
    assertNoValue(exec.output());
  }
});

test('--on-change signal:SIGHUP delivers the signal to the child, which keeps running', async () => {
  const refs = join(dir, 'signal.refs');
  writeFileSync(refs, '# references, not values\nDB_PASSWORD=production/app/db-password\n\nexport DB_HOST=production/app/limits#/db/host\n');
  const { exec, out } = startExec(['--env-file', refs, '--on-change', 'signal:SIGHUP', '--debounce', '100ms']);
  try {
    const first = await waitForState(out, (s) => s.password !== undefined, 'the first child');
    assert.equal(first.host, 'db-1.internal', 'read through --env-file');
    await put('db-password', { kind: 'secret', value: 'pw-hup-77c1' });
    const hupped = await waitForState(out, (s) => s.hups >= 1, 'the SIGHUP');
    assert.equal(hupped.pid, first.pid, 'the same process');
    assert.equal(hupped.password, first.password, 'signal mode does not change the environment of a running process');
    assert.deepEqual(starts(out), [first.pid], 'never restarted');
  } finally {
    await exec.stop();
    assertNoValue(exec.output());
  }
});

test('ten changes within the debounce window give at most two restarts and end on the last value', async () => {
  const { exec, out } = startExec(['--env', 'DB_PASSWORD=production/app/db-password', '--debounce', '3s']);
  try {
    await waitForState(out, (s) => s.password !== undefined, 'the first child');
    for (let i = 1; i <= 10; i += 1) await put('db-password', { kind: 'secret', value: `pw-burst-${i}-e5d0` });
    await waitForState(out, (s) => s.password === 'pw-burst-10-e5d0', 'the last value', 20_000);
    const restarts = starts(out).length - 1;
    assert.ok(restarts >= 1 && restarts <= 2, `${restarts} restarts`);
  } finally {
    await exec.stop();
    assertNoValue(exec.output());
  }
});

test('a change set (two items in one POST /v1/changes) is one restart with both new values', async () => {
  const { exec, out } = startExec(['--env', 'DB_PASSWORD=production/app/db-password', '--env', 'DB_HOST=production/app/limits#/db/host', '--debounce', '60s']);
  try {
    const first = await waitForState(out, (s) => s.password !== undefined, 'the first child');
    secrets.add('pw-set-31aa');
    const res = await http(server.httpUrl, 'POST', '/v1/changes', {
      token: server.rootToken,
      body: {
        changes: [
          { item: 'production/app/db-password', kind: 'secret', value: 'pw-set-31aa' },
          { item: 'production/app/limits', kind: 'config', value: { rps: 100, db: { host: 'db-2.internal' } } },
        ],
      },
    });
    assert.equal(res.status, 200, res.text);
    const next = await waitForState(out, (s) => s.password === 'pw-set-31aa' && s.host === 'db-2.internal', 'the child with both new values', 10_000);
    assert.notEqual(next.pid, first.pid);
    assert.equal(starts(out).length, 2, 'one restart for the set (a second would wait out the 60 s window)');
  } finally {
    await exec.stop();
    assertNoValue(exec.output());
  }
});

test('a child that exits non-zero ends exec with its status; a missing command is 127', async () => {
  const { exec, out } = startExec(['--env', 'DB_PASSWORD=production/app/db-password'], 'exit:7');
  assert.equal(await within(exec.exited, 'exec exit'), 7);
  assert.equal(starts(out).length, 1, 'exec does not restart a child that exited on its own');
  assertNoValue(exec.output());

  const missing = execCli(['--socket', agent.socketPath, '--env', 'P=production/app/db-password', '--', 'no-such-command-x1']);
  assert.equal(await within(missing.exited, 'exec exit'), 127);
  assert.match(missing.stderr(), /cannot start "no-such-command-x1": not found/);
});

test('SIGTERM to exec leaves no child behind, even one that ignores SIGTERM (SIGKILL after --grace)', async () => {
  const { exec, out } = startExec(['--env', 'DB_PASSWORD=production/app/db-password', '--grace', '300ms'], 'ignore-term');
  const { pid } = await waitForState(out, (s) => s.password !== undefined, 'the child');
  const code = await exec.stop('SIGTERM');
  assert.equal(code, 128 + 9, 'the child was SIGKILLed after the grace period');
  assert.ok(!alive(pid), 'no child left');
  assert.match(exec.stderr(), /SIGTERM: stopping/);
  assertNoValue(exec.output());
});

test('bad usage names the flag; an agent that never answers is a clear error after --wait', async () => {
  const bad = execCli(['--socket', agent.socketPath, '--env', 'not a ref', '--', 'true']);
  assert.equal(await within(bad.exited, 'exec exit'), 2);
  assert.match(bad.stderr(), /--env/);
  const badChange = execCli(['--socket', agent.socketPath, '--env', 'A=production/app/limits', '--on-change', 'signal:SIGNOPE', '--', 'true']);
  assert.equal(await within(badChange.exited, 'exec exit'), 2);
  assert.match(badChange.stderr(), /--on-change \(CONFIG_SIDECAR_ON_CHANGE\)/);
  const missing = execCli(['--socket', agent.socketPath, '--env', 'A=production/app/nope', '--', 'true']);
  assert.equal(await within(missing.exited, 'exec exit'), 1);
  assert.match(missing.stderr(), /production\/app\/nope.*not_found/);
  const noAgent = execCli(['--socket', join(dir, 'no-agent.sock'), '--wait', '300ms', '--env', 'A=production/app/limits', '--', 'true']);
  assert.equal(await within(noAgent.exited, 'exec exit'), 3);
  assert.match(noAgent.stderr(), /was not ready within 300ms.*--socket \(CONFIG_SIDECAR_SOCKET\)/);
});
