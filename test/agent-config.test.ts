/**
 * The agent's settings pipeline through the real command: a YAML `--config`
 * with flags and env twins over it, start-up failures that name the setting
 * (exit 2), test hooks refused in production, and a hot reload of the file,
 * validated in a child process (src/agent/config-validator.ts) so the serving
 * process never loads the schema (zod) nor yaml.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { watch } from 'node:fs';
import { chmod, mkdir, readdir, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { defaultPod, makeAgentDir, putItem, socketGet, startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';
import { loadedPackages } from './helpers/loaded-scripts.ts';
import { reachableProject } from './helpers/pod-harness.ts';
import { within } from './helpers/files-wait.ts';

let server: ServerProcess;
let dir: string;
const agents: AgentProcess[] = [];

before(async () => {
  server = await startServerProcess();
  // The agent runs as the pod's uid (pod harness): its config file must be reachable as in a pod.
  dir = await makeAgentDir(defaultPod(), 'cs-agent-config-');
  await putItem(server, 'production/ml/db-password', { kind: 'secret', value: 'from-yaml' });
  await putItem(server, 'production/ml/later', { kind: 'secret', value: 'added-on-reload' });
});

after(async () => {
  for (const agent of agents) {
    await agent.stop();
    await removeDir(agent.dir);
  }
  await server?.stop();
  await removeDir(server?.dataDir ?? '');
  await removeDir(dir ?? '');
});

/** Replaces a file atomically, as editors and ConfigMap volumes do (a reader never sees it half written). */
async function replaceFile(path: string, text: string): Promise<void> {
  await writeFile(`${path}.tmp`, text);
  await rename(`${path}.tmp`, path);
}

/** Runs `agent` expecting it to refuse to start; resolves with exit code and stderr. */
function refused(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, 'agent', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '', ...env } });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.stdout.resume();
    child.once('exit', (code) => resolve({ code, stderr }));
  });
}

test('start-up failures name the setting and exit 2', async () => {
  const base = ['--server', server.httpUrl, '--server-grpc', server.grpcAddress, '--socket', join(dir, 'bad', 'agent.sock')];
  const typo = join(dir, 'typo.yaml');
  await writeFile(typo, 'prefix: [production/ml]\ncacheTTL: 5m\n');
  const unknown = await refused([...base, '--config', typo]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown key\(s\) "cacheTTL"/);
  const badDuration = await refused([...base, '--prefix', 'production/ml', '--max-stale', 'soon']);
  assert.equal(badDuration.code, 2);
  assert.match(badDuration.stderr, /--max-stale \(CONFIG_SIDECAR_MAX_STALE\)/);
  const noPrefix = await refused(base);
  assert.match(noPrefix.stderr, /--prefix \(CONFIG_SIDECAR_PREFIX\)/);
  const production = await refused([...base, '--prefix', 'production/ml'], { CONFIG_SIDECAR_TEST_HOOKS: '1', NODE_ENV: 'production' });
  assert.equal(production.code, 2);
  assert.match(production.stderr, /CONFIG_SIDECAR_TEST_HOOKS/);
});

test('a YAML config with env twins over it serves, and a file edit hot-reloads the prefetch set', async () => {
  const config = join(dir, 'agent.yaml');
  await writeFile(config, 'prefetch:\n  - production/ml/db-password\ncacheTtl: 1h\nlogLevel: info\n');
  const agent = await startAgentProcess(server, { prefixes: [], args: ['--config', config], env: { CONFIG_SIDECAR_PREFIX: 'production/ml' } });
  agents.push(agent);
  await waitReady(agent.adminUrl);
  assert.equal((await socketGet(agent.socketPath, '/v1/items/production/ml/db-password')).json.value, 'from-yaml');

  const seen = agent.logs.length;
  await replaceFile(config, 'prefetch:\n  - production/ml/db-password\n  - production/ml/later\ncacheTtl: 1h\nlogLevel: info\n');
  const reloaded = await agent.waitForLog((l) => l.msg === 'config reloaded' && agent.logs.indexOf(l) >= seen);
  assert.equal(reloaded.prefetch, 2);
  const refusedEdit = agent.logs.length;
  await replaceFile(config, 'prefetch: [production/ml/db-password]\ncacheTtl: whenever\n');
  const refusal = await agent.waitForLog((l) => l.msg === 'config reload refused; keeping the running config' && agent.logs.indexOf(l) >= refusedEdit);
  assert.match(String(refusal.err), /--cache-ttl/);
  assert.equal((await socketGet(agent.socketPath, '/v1/items/production/ml/later')).json.value, 'added-on-reload');
});

test('a live agent on the socket is never replaced; a stale socket from a killed agent is', async () => {
  const first = await startAgentProcess(server, { prefixes: ['production/ml'] });
  agents.push(first);
  await waitReady(first.adminUrl);
  const second = await refused(['--server', server.httpUrl, '--server-grpc', server.grpcAddress, '--prefix', 'production/ml', '--socket', first.socketPath, '--http-listen', 'off', '--admin-listen', '127.0.0.1:0']);
  assert.equal(second.code, 2);
  assert.match(second.stderr, /another agent is serving/);
  assert.equal((await socketGet(first.socketPath, '/v1/items/production/ml/db-password')).status, 200, 'the first agent still serves');

  await first.stop('SIGKILL');
  const replacement = await startAgentProcess(server, { dir: first.dir, prefixes: ['production/ml'] });
  agents.push(replacement);
  await waitReady(replacement.adminUrl);
  assert.equal((await socketGet(replacement.socketPath, '/v1/items/production/ml/db-password')).json.value, 'from-yaml');
});

test('a config reload is validated in a child process: applied, while the serving process loads neither zod nor yaml', async () => {
  const config = join(dir, 'inspected.yaml');
  await writeFile(config, 'cacheTtl: 1h\n');
  const agent = await startAgentProcess(server, { prefixes: ['production/ml'], args: ['--config', config], env: { NODE_OPTIONS: '--inspect=127.0.0.1:0' } });
  agents.push(agent);
  await waitReady(agent.adminUrl);
  const seen = agent.logs.length;
  await replaceFile(config, 'cacheTtl: 1h\nprefetch: [production/ml/later]\n');
  const reloaded = await agent.waitForLog((l) => l.msg === 'config reloaded' && agent.logs.indexOf(l) >= seen);
  assert.equal(reloaded.prefetch, 1);
  const packages = await loadedPackages(agent.output());
  assert.ok(packages.has('lru-cache'), `the listing sees the agent's libraries: ${[...packages].join(' ')}`);
  assert.ok(!packages.has('zod'), 'zod loaded into the serving process by the reload');
  assert.ok(!packages.has('yaml'), 'yaml loaded into the serving process by the reload');
  // A refusal still names the setting, from the child's run of the same pipeline.
  const refusedEdit = agent.logs.length;
  await replaceFile(config, 'cacheTtl: whenever\n');
  const refusal = await agent.waitForLog((l) => l.msg === 'config reload refused; keeping the running config' && agent.logs.indexOf(l) >= refusedEdit);
  assert.equal(refusal.err, 'Invalid setting --cache-ttl (CONFIG_SIDECAR_CACHE_TTL): "whenever" is not a duration; write e.g. 500ms, 30s, 5m, 1h or 90d');
});

test('a reload whose validator dies applies nothing and the agent keeps serving; the next edit applies', async () => {
  // The validator child as the OOM killer would leave it: SIGKILLed while a marker file exists, else the real one.
  const pod = defaultPod();
  const root = pod ? reachableProject(pod.agent).root : fileURLToPath(new URL('..', import.meta.url));
  const marker = join(dir, 'validator-dies');
  const validator = join(dir, 'dying-validator.mjs');
  await writeFile(validator, `import { existsSync } from 'node:fs';\nif (existsSync(${JSON.stringify(marker)})) process.kill(process.pid, 'SIGKILL');\nawait import(${JSON.stringify(join(root, 'src/agent/config-validator-main.ts'))});\n`, { mode: 0o644 });
  const config = join(dir, 'dying.yaml');
  await writeFile(config, 'cacheTtl: 1h\n');
  const agent = await startAgentProcess(server, { prefixes: ['production/ml'], args: ['--config', config], env: { CONFIG_SIDECAR_TEST_CONFIG_VALIDATOR: validator } });
  agents.push(agent);
  await waitReady(agent.adminUrl);
  await writeFile(marker, '');
  const refusedEdit = agent.logs.length;
  await replaceFile(config, 'cacheTtl: 1h\nprefetch: [production/ml/later]\n');
  const refusal = await agent.waitForLog((l) => l.msg === 'config reload refused; keeping the running config' && agent.logs.indexOf(l) >= refusedEdit);
  assert.equal(refusal.err, 'the config file could not be validated: it was killed by SIGKILL');
  assert.ok(!agent.logs.slice(refusedEdit).some((l) => l.msg === 'config reloaded'), 'nothing applied');
  assert.equal((await socketGet(agent.socketPath, '/v1/items/production/ml/db-password')).json.value, 'from-yaml', 'still serving');
  await unlink(marker);
  const seen = agent.logs.length;
  await replaceFile(config, 'cacheTtl: 1h\nprefetch: [production/ml/later, production/ml/db-password]\n');
  const reloaded = await agent.waitForLog((l) => l.msg === 'config reloaded' && agent.logs.indexOf(l) >= seen);
  assert.equal(reloaded.prefetch, 2);
});

test('an agent that stops while a reload validates kills the validator child and drops the reload, without waiting for it', async () => {
  // The child hangs; without the stop killing it, shutdown would wait for its 15 s timeout (past the bin's 10 s watchdog).
  const started = join(dir, 'validator-started');
  await mkdir(started);
  await chmod(started, 0o777); // the pod's agent (uid 65532) runs the child and writes here
  const validator = join(dir, 'hanging-validator.mjs');
  await writeFile(validator, `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(join(started, 'pid'))}, String(process.pid));\nsetInterval(() => {}, 1000);\n`, { mode: 0o644 });
  const config = join(dir, 'hanging.yaml');
  await writeFile(config, 'cacheTtl: 1h\n');
  const agent = await startAgentProcess(server, { prefixes: ['production/ml'], args: ['--config', config], env: { CONFIG_SIDECAR_TEST_CONFIG_VALIDATOR: validator } });
  agents.push(agent);
  await waitReady(agent.adminUrl);
  const childStarted = new Promise<void>((resolve) => {
    const watcher = watch(started, () => {
      watcher.close();
      resolve();
    });
  });
  const seen = agent.logs.length;
  await replaceFile(config, 'cacheTtl: 2h\n');
  await within(childStarted, 'the validator child starting');
  assert.deepEqual(await readdir(started), ['pid']);
  await within(agent.stop('SIGTERM'), 'the agent stopping', 8_000);
  assert.ok(agent.logs.slice(seen).some((l) => l.msg === 'config reload dropped: the agent is stopping'), 'the reload was dropped by the stop');
  assert.ok(!agent.logs.slice(seen).some((l) => l.msg === 'config reloaded'), 'nothing applied');
});
