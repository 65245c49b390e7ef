/**
 * The agent's settings handoff (src/cli/agent-handoff.ts, agent-reexec.ts):
 * the bin validates the settings with the one pipeline (zod), re-executes
 * itself once (same PID) with the result in one environment variable, and
 * the process that serves reads checks that by hand and never loads zod.
 * The real-process tests look at the serving process's loaded scripts
 * through the inspector (test/helpers/loaded-scripts.ts), so nothing in the
 * agent is there for the test; test/dockerfile-build.test.ts does the same
 * for the agent built as the image ships it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { resolveAgentSettings } from '../src/agent/agent-settings.ts';
import { decodeHandoff, encodeHandoff, HANDOFF_ENV, HANDOFF_MAX_BYTES, handoffWrittenBy } from '../src/cli/agent-handoff.ts';
import { agentReexecPlan } from '../src/cli/agent-reexec.ts';
import { execveBytes, execveProblem, execveRoom } from '../src/cli/execve-room.ts';
import { processIdentity, type ProcessIdentity } from '../src/cli/process-identity.ts';
import { AGENT_ENV, AGENT_NODE_FLAGS } from '../src/cli/runtime-settings.ts';
import { makeTempDir, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { putItem, socketGet, startAgentProcess } from './helpers/agent-process.ts';
import { CLI, LOG_WAIT_TIMEOUT_MS } from './helpers/process.ts';
import { inspectorImages, lastInspectorUrl, loadedPackages, loadedScripts, packagesOf } from './helpers/loaded-scripts.ts';

const SELF = { pid: 4242, start: 'b00t/1234' };
const BASE = { server: ['http://127.0.0.1:1'], serverGrpc: ['127.0.0.1:2'], prefix: ['team-a'] };

test('handoff: the validated settings come back whole, typed as the schema made them', () => {
  const settings = resolveAgentSettings({
    ...BASE,
    prefetch: ['team-a/app/db-password'],
    httpListen: 'off',
    memoryLimit: '128MiB',
    cacheTtl: '30s',
    logLevel: 'debug',
    agentId: 'pod-1',
    files: [
      { path: 'app.env', format: 'env', items: ['team-a/app/db-password'] },
      {
        path: 'app/settings.yaml',
        format: 'yaml',
        items: [{ item: 'team-a/app/db-password', env: 'staging', as: 'pw' }],
        template: 'password: {{pw}}\n',
        mode: '0640',
        onChange: { http: 'http://127.0.0.1:8080/-/reload', retries: 2 },
      },
    ],
  });
  // The flags as commander gives them, for a --config reload in the new image.
  const flags = { config: '/etc/cs/agent.yaml', prefix: ['team-a'], insecure: true };
  const text = encodeHandoff({ settings, flags }, SELF);
  assert.ok(text);
  const back = decodeHandoff(text, SELF);
  assert.ok(back.ok, back.ok ? '' : back.error);
  assert.deepEqual(back.value, { settings, flags });
  assert.ok(Object.isFrozen(back.value.settings));
  assert.equal(back.value.settings.cacheTtl, 30_000);
  assert.deepEqual(back.value.settings.prefetch, [{ namespace: 'team-a/app', name: 'db-password' }]);
  // The defaults the schema filled in travel too: the serving process never applies them itself.
  assert.deepEqual(back.value.settings.adminListen, { host: '127.0.0.1', port: 8431 });
  // The files specs arrive validated (the serving process does not load their schema), defaults and hook included.
  assert.deepEqual(back.value.settings.files?.[0], { path: 'app.env', items: [{ namespace: 'team-a/app', name: 'db-password', as: 'db-password' }], format: 'env', mode: 0o440 });
  assert.deepEqual(back.value.settings.files?.[1]?.onChange, { url: 'http://127.0.0.1:8080/-/reload', method: 'POST', timeoutMs: 5000, retries: 2 });
  assert.equal(back.value.settings.files?.[1]?.mode, 0o640);
});

test('handoff: refused unless written by this process, and every shape problem is named', () => {
  const text = encodeHandoff({ settings: resolveAgentSettings(BASE), flags: { prefix: ['team-a'] } }, SELF) as string;
  const refused = (t: string, self: ProcessIdentity | undefined = SELF): string => {
    const r = decodeHandoff(t, self);
    assert.equal(r.ok, false, t);
    return r.ok ? '' : r.error;
  };
  assert.match(refused(text, { ...SELF, pid: 4243 }), /written by process 4242, not this one \(4243\)/);
  // The same PID in a later process (PID 1 of the next pod, or a reused PID): refused.
  assert.match(refused(text, { ...SELF, start: 'b00t/5678' }), /written by an earlier process 4242 \(started b00t\/1234\), not this one \(started b00t\/5678\)/);
  assert.deepEqual(decodeHandoff(text, undefined), { ok: false, error: 'this process\'s start time cannot be read' });
  assert.equal(handoffWrittenBy(text, SELF), true);
  assert.equal(handoffWrittenBy(text, { ...SELF, start: 'b00t/5678' }), false, 'another process: the agent still re-executes');
  assert.equal(handoffWrittenBy('{', SELF), false);
  assert.equal(handoffWrittenBy(text, undefined), false);
  assert.equal(encodeHandoff({ settings: resolveAgentSettings(BASE), flags: {} }, undefined), undefined, 'no identity, no handoff');
  assert.match(refused('{'), /not JSON/);
  const doc = JSON.parse(text) as { v: number; pid: number; settings: Record<string, unknown>; flags: Record<string, unknown> };
  const edited = (edit: (settings: Record<string, unknown>) => void, v = doc.v): string => {
    const settings = { ...doc.settings };
    edit(settings);
    return JSON.stringify({ ...doc, v, settings });
  };
  assert.match(refused(edited(() => {}, 2)), /handoff version 2, expected 1/);
  assert.match(refused(edited((s) => (s.cacheTtl = '5m'))), /^settings\.cacheTtl: expected a number, received string$/);
  assert.match(refused(edited((s) => (s.prefix = ['team-a', 7]))), /^settings\.prefix\.1: expected a string, received number$/);
  assert.match(refused(edited((s) => (s.httpListen = 'on'))), /^settings\.httpListen: expected one of "off", received "on"$/);
  assert.match(refused(edited((s) => (s.memoryLimit = 'lots'))), /^settings\.memoryLimit: expected one of "auto", "none"/);
  assert.match(refused(edited((s) => (s.logLevel = 'loud'))), /^settings\.logLevel: expected one of "fatal"/);
  assert.match(refused(edited((s) => delete s.socket)), /^settings\.socket: expected a string, received undefined$/);
  assert.match(refused(edited((s) => (s.tokenFlie = '/t'))), /^settings: unknown key\(s\) "tokenFlie"$/);
  assert.match(refused(edited((s) => (s.adminListen = { host: '127.0.0.1', port: 1, extra: true }))), /^settings\.adminListen: unknown key\(s\) "extra"$/);
  const spec = { path: 'a.env', items: [{ namespace: 'team-a', name: 'x', as: 'x' }], format: 'env', mode: 0o440 };
  assert.match(refused(edited((s) => (s.files = [{ ...spec, format: 'toml' }]))), /^settings\.files\.0\.format: expected one of "raw", "json"/);
  assert.match(refused(edited((s) => (s.files = [{ ...spec, items: [] }]))), /^settings\.files\.0\.items: expected at least 1 element\(s\), received 0$/);
  assert.match(refused(edited((s) => (s.files = [{ ...spec, mode: '0440' }]))), /^settings\.files\.0\.mode: expected an integer, received string$/);
  assert.match(refused(edited((s) => (s.files = [{ ...spec, onChange: { url: 'http://127.0.0.1/', method: 'POST', timeoutMs: 1, retries: 0, signal: 'HUP' } }]))), /^settings\.files\.0\.onChange: unknown key\(s\) "signal"$/);
  assert.match(refused(JSON.stringify({ ...doc, flags: { prefix: [1] } })), /^flags\.prefix\.0: expected a string, received number$/);
  assert.match(refused(JSON.stringify({ ...doc, flags: undefined })), /^flags: expected an object, received undefined$/);
});

test('process identity: PID, boot and start time from /proc, read past a command name with spaces and parentheses', async (t) => {
  const self = processIdentity();
  assert.ok(self, 'Linux /proc');
  assert.equal(self.pid, process.pid);
  assert.match(self.start, /^[0-9a-f-]{36}\/[0-9]+$/);
  assert.deepEqual(processIdentity(), self, 'stable for the life of the process');
  const proc = await makeTempDir('cs-proc-');
  t.after(() => removeDir(proc));
  await mkdir(join(proc, '7'));
  await mkdir(join(proc, 'sys', 'kernel', 'random'), { recursive: true });
  await writeFile(join(proc, 'sys', 'kernel', 'random', 'boot_id'), 'b00t\n');
  await writeFile(join(proc, '7', 'stat'), '7 (a) b (c) S 1 7 7 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10 0\n');
  assert.deepEqual(processIdentity(7, proc), { pid: 7, start: 'b00t/98765' });
  assert.equal(processIdentity(8, proc), undefined, 'no such process');
  await rm(join(proc, 'sys'), { recursive: true });
  assert.deepEqual(processIdentity(7, proc), { pid: 7, start: '/98765' }, 'no boot id: the start time still binds');
});

test('handoff: settings too large for one environment variable are not handed over', () => {
  const many = Array.from({ length: 4000 }, (_, i) => `team-a/app/item-${i}`);
  assert.equal(encodeHandoff({ settings: resolveAgentSettings({ ...BASE, prefetch: many }), flags: {} }, SELF), undefined);
  assert.ok(JSON.stringify(many).length > HANDOFF_MAX_BYTES);
});

test('re-exec plan: runtime flags, heap flags and the handoff in one execve; nothing missing, no re-exec', () => {
  const NODE = '/usr/bin/node';
  const argv = [NODE, '/app/dist/cli/main.js', 'agent', '--prefix', 'p'];
  const handoff = { [HANDOFF_ENV]: 'H' };
  const seen: Array<readonly string[]> = [];
  const plan = agentReexecPlan({ execPath: NODE, argv, execArgv: ['--enable-source-maps'], env: { PATH: '/bin', UNSET: undefined } }, (execArgv) => {
    seen.push(execArgv);
    return ['--max-old-space-size=96'];
  }, handoff);
  assert.ok(plan);
  assert.deepEqual(plan.args, [NODE, '--max-old-space-size=96', '--enable-source-maps', ...AGENT_NODE_FLAGS, ...argv.slice(1)]);
  assert.deepEqual(seen, [['--enable-source-maps', ...AGENT_NODE_FLAGS]], 'the heap flags are chosen knowing the runtime flags the new image gets');
  assert.deepEqual(plan.env, { PATH: '/bin', ...AGENT_ENV, ...handoff });
  const given = { execPath: NODE, argv, execArgv: [...AGENT_NODE_FLAGS], env: { ...AGENT_ENV } };
  assert.equal(agentReexecPlan(given, () => undefined, handoff), undefined, 'every setting given, no memory limit: the process runs as started');
  const heapOnly = agentReexecPlan(given, () => ['--max-old-space-size=96'], handoff);
  assert.deepEqual(heapOnly?.args, [NODE, '--max-old-space-size=96', ...AGENT_NODE_FLAGS, ...argv.slice(1)]);
  assert.equal(heapOnly?.env[HANDOFF_ENV], 'H');
});

test('execve room: a quarter of the stack limit within [128 KiB, 6 MiB]; a plan over it, or a file that cannot run, is named', async (t) => {
  const dir = await makeTempDir('cs-limits-');
  t.after(() => removeDir(dir));
  const limits = async (soft: string): Promise<number | undefined> => {
    await writeFile(join(dir, 'limits'), `Limit                     Soft Limit           Hard Limit           Units     \nMax stack size            ${soft}              unlimited            bytes     \n`);
    return execveRoom(join(dir, 'limits'));
  };
  assert.equal(await limits('8388608'), 2 * 1024 * 1024);
  assert.equal(await limits('unlimited'), 6 * 1024 * 1024);
  assert.equal(await limits('65536'), 128 * 1024);
  assert.equal(execveRoom(join(dir, 'none')), undefined);
  const plan = { file: process.execPath, args: [process.execPath, 'x'], env: { A: 'b' } };
  assert.equal(execveBytes(plan), process.execPath.length + 1 + 8 + (process.execPath.length + 1 + 8) + (2 + 8) + (4 + 8));
  assert.equal(execveProblem(plan, 128 * 1024), undefined);
  assert.equal(execveProblem(plan, undefined), undefined, 'room unknown: not checked');
  assert.match(execveProblem(plan, 100) ?? '', /^re-executing needs \d+ bytes of arguments and environment; the stack limit allows 100 \(a quarter of ulimit -s\)/);
  assert.match(execveProblem({ ...plan, file: join(dir, 'limits') }, undefined) ?? '', /cannot be executed again \(EACCES\)/);
});

// --- real processes -------------------------------------------------------------------------

let server: ServerProcess;

before(async () => {
  server = await startServerProcess();
  await putItem(server, 'production/zf/secret', { kind: 'secret', value: 'zod-free' });
});

after(async () => {
  await server?.stop();
  await removeDir(server?.dataDir ?? '');
});

test('the agent as the bin starts it serves reads from a process that never loaded zod, commander, nor node\'s bundled fetch', async () => {
  const agent = await startAgentProcess(server, { prefetch: ['production/zf/secret'], env: { NODE_OPTIONS: '--inspect=127.0.0.1:0' } });
  try {
    const res = await socketGet(agent.socketPath, '/v1/items/production/zf/secret?format=raw');
    assert.equal(res.status, 200);
    assert.equal(res.body.toString(), 'zod-free');
    const output = agent.output();
    assert.equal(inspectorImages(output), 2, 'validated in one image, served from the re-executed one');
    const scripts = await loadedScripts(lastInspectorUrl(output));
    const packages = packagesOf(scripts);
    assert.ok(packages.has('lru-cache') && packages.has('undici'), `the listing sees the agent's libraries: ${[...packages].join(' ')}`);
    // An ESM import of node:http reads its WebSocket getter, which compiles node's bundled undici (shared/node-http.ts).
    assert.ok(scripts.includes('node:internal/http2/core'), 'the listing sees node\'s own modules');
    assert.ok(!scripts.includes('node:internal/deps/undici/undici'), 'node\'s bundled fetch (undici) compiled by the serving process');
    assert.ok(!packages.has('zod'), `zod loaded by the serving process: ${[...packages].join(' ')}`);
    assert.ok(!packages.has('commander'), 'nor the command table: the re-executed image goes straight to the agent');
    assert.ok(!packages.has('yaml'), 'nor yaml (no --config)');
  } finally {
    assert.equal(await agent.stop('SIGTERM'), 0);
    await removeDir(agent.dir);
  }
});

test('an agent started with every runtime setting given is not re-executed, and validates its settings in place (zod loaded)', async (t) => {
  const dir = await makeTempDir('cs-agent-noexec-');
  t.after(() => removeDir(dir));
  await mkdir(join(dir, 'run'));
  await writeFile(join(dir, 'token'), server.rootToken, { mode: 0o600 });
  const args = ['--server', server.httpUrl, '--server-grpc', server.grpcAddress, '--token-file', join(dir, 'token'), '--socket', join(dir, 'run', 'agent.sock')];
  const proc = spawn(process.execPath, [...AGENT_NODE_FLAGS, '--inspect=127.0.0.1:0', CLI, 'agent', ...args, '--prefix', 'production', '--http-listen', 'off', '--admin-listen', '127.0.0.1:0', '--memory-limit', 'none'], {
    env: { PATH: process.env.PATH ?? '', ...AGENT_ENV },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => proc.kill('SIGKILL'));
  let output = '';
  const listening = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "agent listening" within ${LOG_WAIT_TIMEOUT_MS} ms: ${output.slice(-800)}`)), LOG_WAIT_TIMEOUT_MS);
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      if (output.includes('"agent listening"')) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.once('exit', (code) => reject(new Error(`agent exited ${code}: ${output.slice(-800)}`)));
  });
  await listening;
  assert.equal(inspectorImages(output), 1, 'no re-exec');
  assert.ok((await loadedPackages(output)).has('zod'), 'the inspection sees zod where it is loaded');
});

test('a bad setting is still refused by the bin with the setting named, before any re-exec', async () => {
  const proc = spawn(process.execPath, [CLI, 'agent', '--server', server.httpUrl, '--server-grpc', server.grpcAddress, '--prefix', 'production', '--cache-ttl', 'soon'], {
    env: { PATH: process.env.PATH ?? '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => proc.once('exit', resolve));
  assert.equal(code, 2);
  assert.match(stderr, /Invalid setting --cache-ttl \(CONFIG_SIDECAR_CACHE_TTL\): "soon" is not a duration/);
});

test('a handoff not written by this very process (the same PID, as PID 1 in every pod) is refused: the flags are validated, re-executed with, and served', async (t) => {
  const dir = await makeTempDir('cs-agent-forged-');
  t.after(() => removeDir(dir));
  await mkdir(join(dir, 'run'));
  await writeFile(join(dir, 'token'), server.rootToken, { mode: 0o600 });
  const flagged = join(dir, 'run', 'agent.sock');
  const injected = join(dir, 'run', 'injected.sock');
  const args = ['--server', server.httpUrl, '--server-grpc', server.grpcAddress, '--token-file', join(dir, 'token'), '--socket', flagged, '--prefix', 'production'];
  const common = { tokenFile: join(dir, 'token'), httpListen: 'off' as const, adminListen: '127.0.0.1:0', memoryLimit: 'none' as const };
  // A value copied from a running agent's environment, or set by hand: right PID, settings the schema never saw.
  const settings = resolveAgentSettings({ server: [server.httpUrl], serverGrpc: [server.grpcAddress], prefix: ['production'], socket: injected, ...common });
  const template = JSON.stringify({ v: 1, pid: '@PID@', settings, flags: {} }).replace('"@PID@"', '%d');
  assert.ok(!template.includes('\\'), 'printf would read a backslash');
  // `exec` keeps the shell's PID ($$), as execve does for the bin's own re-exec.
  const proc = spawn('/bin/sh', ['-c', `export ${HANDOFF_ENV}="$(printf "$T" $$)"; exec "$0" "$@"`, process.execPath, CLI, 'agent', ...args, '--http-listen', 'off', '--admin-listen', '127.0.0.1:0', '--memory-limit', 'none'], {
    env: { PATH: process.env.PATH ?? '', T: template, NODE_OPTIONS: '--inspect=127.0.0.1:0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => proc.kill('SIGKILL'));
  const output = await untilListening(proc);
  assert.match(output, new RegExp(`validating the settings again \\(${HANDOFF_ENV}: `));
  // Not its own handoff: the agent still re-executes once with its runtime settings and hands itself the settings it validated.
  assert.equal(inspectorImages(output), 2, 'validated in one image, served from the re-executed one');
  assert.ok(!(await loadedPackages(output)).has('zod'), 'the serving process took its own handoff');
  const res = await socketGet(flagged, '/v1/items/production/zf/secret?format=raw');
  assert.equal(res.status, 200, 'served where the flags say');
  await assert.rejects(socketGet(injected, '/v1/items/production/zf/secret?format=raw'), 'nothing where the forged handoff said');
});

/** The kernel's bound on execve's strings (fs/exec.c bprm_stack_limits): a quarter of the stack limit, within [128 KiB, 6 MiB]. */
function execveStringLimit(): number {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max stack size')) ?? '';
  const soft = line.replace('Max stack size', '').trim().split(/\s+/)[0] ?? 'unlimited';
  const quarter = soft === 'unlimited' ? Infinity : Number(soft) / 4;
  return Math.max(128 * 1024, Math.min(6 * 1024 * 1024, quarter));
}

test('a re-exec the kernel would refuse (environment near the execve limit) is not attempted: the agent starts as it was started, saying why', async (t) => {
  const dir = await makeTempDir('cs-agent-e2big-');
  t.after(() => removeDir(dir));
  await mkdir(join(dir, 'run'));
  await writeFile(join(dir, 'token'), server.rootToken, { mode: 0o600 });
  const socket = join(dir, 'run', 'agent.sock');
  const args = [CLI, 'agent', '--server', server.httpUrl, '--server-grpc', server.grpcAddress, '--token-file', join(dir, 'token'), '--socket', socket, '--prefix', 'production', '--http-listen', 'off', '--admin-listen', '127.0.0.1:0', '--memory-limit', 'none'];
  // An environment that leaves 100 bytes of the kernel's room: the first exec fits, a re-exec adding the runtime settings (with or without the handoff) would not.
  const env: Record<string, string> = { PATH: process.env.PATH ?? '' };
  const used = (): number =>
    Buffer.byteLength(process.execPath) + 1 + [process.execPath, ...args].reduce((n, a) => n + Buffer.byteLength(a) + 1, 0) +
    Object.entries(env).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(v) + 2, 0) + 8 * (args.length + 1 + Object.keys(env).length) + 8;
  for (let i = 0; used() < execveStringLimit() - 100 - 100_000; i++) env[`PAD_${i}`] = 'x'.repeat(100_000 - 10);
  env.PAD_LAST = 'x'.repeat(execveStringLimit() - 100 - used() - 'PAD_LAST'.length - 10);
  const proc = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => proc.kill('SIGKILL'));
  const output = await untilListening(proc);
  assert.match(output, /config-sidecar: running without the runtime settings \(re-executing needs \d+ bytes of arguments and environment; the stack limit allows \d+/);
  assert.equal(inspectorImages(output), 0);
  const res = await socketGet(socket, '/v1/items/production/zf/secret?format=raw');
  assert.equal(res.status, 200);
  assert.equal(res.body.toString(), 'zod-free');
});

/** The process's output (stdout and stderr) up to its "agent listening" line; rejects if it exits first or takes too long. */
function untilListening(proc: ChildProcessByStdio<null, Readable, Readable>): Promise<string> {
  let output = '';
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "agent listening" within ${LOG_WAIT_TIMEOUT_MS} ms: ${output.slice(-800)}`)), LOG_WAIT_TIMEOUT_MS);
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      if (output.includes('"agent listening"')) {
        clearTimeout(timer);
        resolve(output);
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`agent exited ${code ?? signal}: ${output.slice(-800)}`));
    });
  });
}
