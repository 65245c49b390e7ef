/**
 * Rendered files end to end: a real `config-sidecar server` and a real
 * `config-sidecar agent` process (real socket, real gRPC Watch), files on a
 * temp `--files-dir`, the agent's config file edited while it runs. Waits are
 * on the agent's own log lines ("files published", "config file reloaded"),
 * never on sleeps. TTL is an hour, so only the event stream can refresh a file.
 */
import { test } from 'node:test';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, unlinkSync, writeFileSync, renameSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { defaultPod, makeAgentDir, startAgentProcess, putItem, waitReady, type AgentProcess } from './helpers/agent-process.ts';
import { canRead, makeVolume, ownedByRoot } from './helpers/pod-harness.ts';
import { CLI, makeTempDir, metricValue, startServerProcess, type LogLine, type ServerProcess } from './helpers/server-process.ts';
import { startSnapshotReader } from './helpers/files-reader-run.ts';
import { loadedPackages } from './helpers/loaded-scripts.ts';

/**
 * A last-resort bound per test, far above a loaded run (~15 s): a test that
 * stalls is cancelled and its after hooks still stop every process, so it
 * can fail but never hang the suite.
 */
const E2E_TEST_TIMEOUT_MS = 240_000;

/** Retries: the agent's guard and renderer may have left a last entry landing as the tree goes. */
function removeTree(dir: string): Promise<void> {
  return rm(dir, { recursive: true, force: true, maxRetries: 5 });
}

interface Stack {
  server: ServerProcess;
  agent: AgentProcess;
  filesDir: string;
  configPath: string;
  /** Resolves with the first log line after now matching the predicate. */
  nextLog(predicate: (l: LogLine) => boolean): Promise<LogLine>;
  /** Resolves with the first log line at index `from` or later matching the predicate (the wait starts now). */
  logSince(from: number, predicate: (l: LogLine) => boolean): Promise<LogLine>;
  /** Resolves once a publication containing `file` is logged after now. */
  published(file: string): Promise<LogLine>;
}

function yamlFiles(entries: Array<Record<string, unknown>>): string {
  return `files: ${JSON.stringify(entries)}\n`; // JSON is YAML
}

async function stack(t: { after(fn: () => unknown): void }, files: Array<Record<string, unknown>>, seed: Record<string, unknown>, env: Record<string, string> = {}): Promise<Stack> {
  const cleanup: Array<() => unknown> = [];
  // One hook, in reverse order of start: the agent has exited before its directories go.
  // Every step runs even when one fails: a skipped stop would leave a process holding the suite open.
  t.after(async () => {
    const errors: unknown[] = [];
    for (const step of cleanup.reverse()) {
      try {
        await step();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length) throw errors.length === 1 ? errors[0] : new AggregateError(errors, 'stack cleanup failed');
  });
  // The helpers kill a process that fails to start, so only started ones need a step here.
  const server = await startServerProcess();
  cleanup.push(async () => {
    await server.stop();
    await removeTree(server.dataDir);
  });
  for (const [path, body] of Object.entries(seed)) await putItem(server, path, body);
  // As a pod runs it: the agent as 65532 and --files-dir a kubelet-made emptyDir (pod harness), where the harness works.
  const pod = defaultPod();
  const dir = await makeAgentDir(pod, 'cs-files-e2e-');
  cleanup.push(() => removeTree(dir));
  const filesDir = join(dir, 'files');
  if (pod) await makeVolume(filesDir, pod.fsGroup);
  const configPath = join(dir, 'agent.yaml');
  writeFileSync(configPath, yamlFiles(files));
  const agent = await startAgentProcess(server, {
    prefixes: ['production'],
    args: ['--config', configPath, '--files-dir', filesDir, '--cache-ttl', '1h'],
    env,
  });
  cleanup.push(() => agent.stop());
  await waitReady(agent.adminUrl);
  // Edits made before the watcher is up would be folded into the start-up config, not seen as edits.
  await agent.waitForLog((l) => l.msg === 'watching the config file for changes');
  const logSince = (from: number, predicate: (l: LogLine) => boolean): Promise<LogLine> =>
    agent.waitForLog((l) => agent.logs.indexOf(l) >= from && predicate(l));
  const nextLog = (predicate: (l: LogLine) => boolean): Promise<LogLine> => logSince(agent.logs.length, predicate);
  return {
    server,
    agent,
    filesDir,
    configPath,
    nextLog,
    logSince,
    published: (file) => nextLog((l) => l.msg === 'files published' && Array.isArray(l.files) && (l.files as string[]).includes(file)),
  };
}

const secret = (value: string) => ({ kind: 'secret', value });

test('a changed value reaches the files through the event stream (TTL 1h), with the configured modes', { timeout: E2E_TEST_TIMEOUT_MS }, async (t) => {
  const s = await stack(
    t,
    [
      { path: 'db/password', items: ['production/app/db-password'], mode: '0400' },
      { path: 'app.env', items: ['production/app/db-password', 'production/app/settings'], format: 'env', mode: '0440' },
    ],
    { 'production/app/db-password': secret('first'), 'production/app/settings': { kind: 'config', value: { log: { level: 'info' } } } },
  );
  const pw = join(s.filesDir, 'db/password');
  assert.equal(readFileSync(pw, 'utf8'), 'first');
  assert.equal(statSync(pw).mode & 0o777, 0o400);
  assert.equal(statSync(join(s.filesDir, 'app.env')).mode & 0o777, 0o440);
  assert.equal(readFileSync(join(s.filesDir, 'app.env'), 'utf8'), "DB_PASSWORD='first'\nSETTINGS_LOG_LEVEL='info'\n");
  const pod = s.agent.pod;
  if (pod) {
    assert.equal(statSync(join(s.filesDir, 'app.env')).gid, pod.fsGroup, 'files keep the volume group');
    assert.equal(await canRead(pod.app, join(s.filesDir, 'app.env')), true, 'the app (in the fsGroup) reads a 0440 file');
    assert.equal(await canRead(pod.app, pw), false, 'a 0400 file is for its owner only');
    assert.equal(await canRead(pod.stranger, join(s.filesDir, 'app.env')), false);
  }

  const published = s.published('db/password');
  await putItem(s.server, 'production/app/db-password', secret('second'));
  await published;
  assert.equal(readFileSync(pw, 'utf8'), 'second');
  assert.match(readFileSync(join(s.filesDir, 'app.env'), 'utf8'), /^DB_PASSWORD='second'$/m);
  assert.ok(((await metricValue(s.agent.adminUrl, 'config_sidecar_agent_files_renders_total', 'file="db/password"')) ?? 0) >= 2);
  if (pod) assert.deepEqual(await ownedByRoot(s.filesDir), [], 'nothing in the files volume is root-owned');
});

test('two files fed by one item always read as one publication during 200 rapid writes', { timeout: E2E_TEST_TIMEOUT_MS }, async (t) => {
  const s = await stack(
    t,
    [
      { path: 'a.txt', items: ['production/app/token'] },
      { path: 'conf/b.json', items: ['production/app/token'], format: 'json' },
    ],
    { 'production/app/token': secret('gen-0') },
  );
  const reader = startSnapshotReader(t, s.filesDir, ['a.txt', 'conf/b.json'], /gen-(\d+)/);
  const from = s.agent.logs.length;
  for (let i = 1; i <= 200; i++) await putItem(s.server, 'production/app/token', secret(`gen-${i}`));
  // The wait starts after the writes (their time under load is not the agent's), but counts publications since the first.
  await s.logSince(from, (l) => l.msg === 'files published' && readFileSync(join(s.filesDir, 'a.txt'), 'utf8') === 'gen-200');
  const report = await reader.stop();
  assert.deepEqual(report.mixes, [], 'no read saw two publications');
  assert.ok(report.distinct > 1, 'the reader saw publications change under it');
  assert.equal(readFileSync(join(s.filesDir, 'conf/b.json'), 'utf8'), '"gen-200"\n');
});

test('a rendered file overwritten or deleted by hand is restored, and the metric counts both', { timeout: E2E_TEST_TIMEOUT_MS }, async (t) => {
  const s = await stack(t, [{ path: 'pw', items: ['production/app/db-password'] }, { path: 'tls/key', items: ['production/app/db-password'] }], {
    'production/app/db-password': secret('right'),
  });
  const restoredChanged = s.nextLog((l) => l.msg === 'rendered file was changed by someone else; restoring it' && l.file === 'pw');
  const restoredFirst = s.nextLog((l) => l.msg === 'files published');
  writeFileSync(join(s.filesDir, 'pw'), 'wrong');
  await restoredChanged;
  await restoredFirst;
  assert.equal(readFileSync(join(s.filesDir, 'pw'), 'utf8'), 'right');

  const restoredDeleted = s.nextLog((l) => l.msg === 'rendered file was deleted by someone else; restoring it' && l.file === 'tls/key');
  const republished = s.nextLog((l) => l.msg === 'files published');
  unlinkSync(join(s.filesDir, 'tls/key'));
  await restoredDeleted;
  await republished;
  assert.equal(readFileSync(join(s.filesDir, 'tls/key'), 'utf8'), 'right');
  assert.equal(await metricValue(s.agent.adminUrl, 'config_sidecar_agent_files_restores_total', 'file="pw",kind="changed"'), 1);
  assert.equal(await metricValue(s.agent.adminUrl, 'config_sidecar_agent_files_restores_total', 'file="tls/key",kind="deleted"'), 1);
});

test('editing the agent config while it runs: a new file appears, a removed one disappears, an invalid edit changes nothing and is reported', { timeout: E2E_TEST_TIMEOUT_MS }, async (t) => {
  const s = await stack(t, [{ path: 'old.txt', items: ['production/app/db-password'] }], {
    'production/app/db-password': secret('pw'),
    'production/app/settings': { kind: 'config', value: { replicas: 3 } },
  });
  assert.equal(readFileSync(join(s.filesDir, 'old.txt'), 'utf8'), 'pw');

  const reloaded = s.nextLog((l) => l.msg === 'config file reloaded');
  writeFileSync(s.configPath, yamlFiles([{ path: 'new/settings.yaml', items: ['production/app/settings'], format: 'yaml' }]));
  await reloaded;
  assert.equal(readFileSync(join(s.filesDir, 'new/settings.yaml'), 'utf8'), 'replicas: 3\n');
  assert.equal(existsSync(join(s.filesDir, 'old.txt')), false);

  const refused = s.nextLog((l) => l.msg === 'config file change refused; the running config stays in force');
  // Replace by rename, as editors and ConfigMap volumes do.
  writeFileSync(`${s.configPath}.tmp`, yamlFiles([{ path: '../escape', items: ['production/app/settings'] }]));
  renameSync(`${s.configPath}.tmp`, s.configPath);
  const line = await refused;
  assert.match(String(line.err), /files\[0\] \(\.\.\/escape\)/);
  assert.equal(readFileSync(join(s.filesDir, 'new/settings.yaml'), 'utf8'), 'replicas: 3\n');
  assert.equal(existsSync(join(s.filesDir, '..', 'escape')), false);
  assert.equal(await metricValue(s.agent.adminUrl, 'config_sidecar_agent_config_reloads_total', 'outcome="refused"'), 1);
});

test('the serving process renders files without loading their schema (zod), nor yaml unless a file is YAML: validated before the re-exec and, on reload, in the validator child', { timeout: E2E_TEST_TIMEOUT_MS }, async (t) => {
  const s = await stack(
    t,
    [
      { path: 'app.env', items: ['production/app/db-password'], format: 'env' },
      { path: 'app/settings.json', items: ['production/app/settings'], format: 'json', mode: '0640', onChange: { http: 'http://127.0.0.1:9/-/reload', retries: 0 } },
    ],
    { 'production/app/db-password': secret('pw'), 'production/app/settings': { kind: 'config', value: { replicas: 3 } } },
    { NODE_OPTIONS: '--inspect=127.0.0.1:0' },
  );
  assert.equal(readFileSync(join(s.filesDir, 'app.env'), 'utf8'), "DB_PASSWORD='pw'\n");
  assert.equal(statSync(join(s.filesDir, 'app/settings.json')).mode & 0o777, 0o640);
  const reloaded = s.nextLog((l) => l.msg === 'config file reloaded');
  writeFileSync(s.configPath, yamlFiles([{ path: 'app.env', items: ['production/app/db-password'], format: 'env' }, { path: 'replicas.txt', items: ['production/app/settings'], template: 'replicas={{settings.replicas}}\n' }]));
  await reloaded;
  assert.equal(readFileSync(join(s.filesDir, 'replicas.txt'), 'utf8'), 'replicas=3\n');
  const packages = await loadedPackages(s.agent.output());
  assert.ok(packages.has('chokidar'), `the listing sees the agent's libraries: ${[...packages].join(' ')}`);
  assert.ok(!packages.has('zod'), 'zod loaded into the serving process for the files spec');
  assert.ok(!packages.has('yaml'), 'yaml loaded into the serving process though no file is rendered as YAML');
  // A bad entry is still refused on reload, naming the entry, and nothing changes.
  const refused = s.nextLog((l) => l.msg === 'config file change refused; the running config stays in force');
  writeFileSync(s.configPath, yamlFiles([{ path: 'replicas.txt', items: ['production/app/settings'], template: '{{> partial}}' }]));
  assert.match(String((await refused).err), /files\[0\] \(replicas\.txt\) template: template uses a partial/);
  assert.equal(readFileSync(join(s.filesDir, 'app.env'), 'utf8'), "DB_PASSWORD='pw'\n");
});

test('a bad files: entry stops the agent at start (exit 2) with a message naming the entry, before anything binds', { timeout: E2E_TEST_TIMEOUT_MS }, async (t) => {
  const dir = await makeTempDir('cs-files-bad-');
  t.after(() => removeTree(dir));
  const config = join(dir, 'agent.yaml');
  writeFileSync(config, yamlFiles([{ path: 'ok', items: ['production/app/a'] }, { path: 'ok', items: ['production/app/b'] }]));
  const child = spawn(
    process.execPath,
    [CLI, 'agent', '--config', config, '--server', 'http://127.0.0.1:1', '--server-grpc', '127.0.0.1:1', '--prefix', 'production', '--socket', join(dir, 'run', 'agent.sock'), '--http-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--files-dir', join(dir, 'files')],
    { env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const exit = once(child, 'exit');
  // Meant to exit on its own; if it ever does not, the test must still end.
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const [code] = (await exit) as [number | null];
  assert.equal(code, 2);
  assert.match(stderr, /Invalid setting files .*files\[1\] \(ok\) writes the same destination as files\[0\] \(ok\)/);
  assert.equal(existsSync(join(dir, 'run', 'agent.sock')), false);
});
