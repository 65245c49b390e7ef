/**
 * `config-sidecar dev` (what `npm start` runs): it prints commands, and each
 * printed command works when pasted into a shell: the curl reads, the TCP read
 * with the pod token, `watch` seeing the rotation and the new secret arrive,
 * and `get` printing the new value. Ctrl-C (SIGINT) stops both cleanly.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { CLI, http, makeTempDir, removeDir } from './helpers/server-process.ts';
import { runCli } from './helpers/process.ts';

const children: ChildProcess[] = [];
let dir = '';

after(async () => {
  for (const child of children) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    try {
      process.kill(-(child.pid as number), 'SIGKILL');
    } catch {
      child.kill('SIGKILL');
    }
  }
  if (dir) await removeDir(dir);
});

/** Collects a child's stdout and resolves when `predicate` holds for it. */
function output(child: ChildProcess): { text: () => string; until: (predicate: (text: string) => boolean, timeoutMs?: number) => Promise<string> } {
  let text = '';
  const waiters: Array<{ predicate: (t: string) => boolean; resolve: (t: string) => void }> = [];
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    text += chunk;
    for (const w of [...waiters]) {
      if (w.predicate(text)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(text);
      }
    }
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return {
    text: () => text,
    until: (predicate, timeoutMs = 30_000) =>
      predicate(text)
        ? Promise.resolve(text)
        : new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`output not seen in time:\n${text}\nstderr: ${stderr}`)), timeoutMs);
            waiters.push({
              predicate,
              resolve: (t) => {
                clearTimeout(timer);
                resolve(t);
              },
            });
          }),
  };
}

/**
 * The printed `npx config-sidecar` resolves to this package's bin; here it runs
 * this checkout's CLI (npx would run the last build in dist/), after the
 * printed `export` line, as a user pasting both into a shell would.
 */
let exportLine = '';
function pasted(command: string): string {
  return `${exportLine}; ${command.replaceAll('npx config-sidecar', `"${process.execPath}" "${CLI}"`)}`;
}

function sh(command: string): Promise<{ code: number | null; stdout: string }> {
  const child = spawn('sh', ['-c', pasted(command)], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const out = output(child);
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout: out.text() })));
}

test('npm start (config-sidecar dev) prints commands that work when pasted, and Ctrl-C stops both', async () => {
  dir = await makeTempDir('cs-dev-');
  // The default --dir (.config-sidecar in the working directory), as `npm start` runs it.
  const dev = spawn(
    process.execPath,
    [CLI, 'dev', '--server-http-listen', '127.0.0.1:0', '--server-grpc-listen', '127.0.0.1:0', '--server-admin-listen', '127.0.0.1:0', '--agent-http-listen', '127.0.0.1:0', '--agent-admin-listen', '127.0.0.1:0'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '' }, cwd: dir },
  );
  children.push(dev);
  const exited = new Promise<number | null>((resolve) => dev.once('exit', (code) => resolve(code)));
  const banner = await output(dev).until((t) => t.includes(' get production/ml-service/db-password'));
  const commands = banner
    .split('\n')
    .filter((l) => l.startsWith('  ') && (l.includes('curl') || l.includes('npx config-sidecar')))
    .map((l) => l.trim());
  const find = (needle: string): string => {
    const found = commands.find((c) => c.includes(needle));
    assert.ok(found, `a printed command with ${needle}`);
    return found;
  };
  assert.match(banner, /socket {3}\S+agent\.sock/);
  // Every URL: server REST and OpenAPI, gRPC, server admin, agent TCP and admin.
  assert.match(banner, /server {3}http:\/\/127\.0\.0\.1:\d+ {2}\(REST; OpenAPI http:\/\/127\.0\.0\.1:\d+\/v1\/openapi\.json\)/);
  assert.match(banner, /grpc {5}127\.0\.0\.1:\d+/);
  assert.match(banner, /server-admin http:\/\/127\.0\.0\.1:\d+\/readyz {2}http:\/\/127\.0\.0\.1:\d+\/metrics/);
  assert.match(banner, /tcp {6}http:\/\/127\.0\.0\.1:\d+/);
  const statusPage = /status {3}(http:\/\/127\.0\.0\.1:\d+\/ui\/) {2}\(the operator page/.exec(banner)?.[1];
  assert.ok(statusPage, 'the banner names the status page');
  assert.equal((await http(statusPage, 'GET', '/ui/')).status, 200);
  exportLine = banner.split('\n').find((l) => l.trim().startsWith('export CONFIG_SIDECAR_SERVER='))?.trim() ?? '';
  assert.match(exportLine, /^export CONFIG_SIDECAR_SERVER=http:\S+ CONFIG_SIDECAR_TOKEN="\$\(cat \S+root-token\)" CONFIG_SIDECAR_SOCKET=\S+agent\.sock$/);
  for (const command of commands.filter((c) => c.includes('config-sidecar '))) assert.match(command, /npx config-sidecar /, 'CLI commands are printed as npx config-sidecar');

  const secretRead = await sh(find('--unix-socket'));
  assert.equal(secretRead.code, 0);
  assert.equal(JSON.parse(secretRead.stdout).name, 'db-password');
  const tcpRead = await sh(find('X-Config-Sidecar-Token'));
  assert.equal(JSON.parse(tcpRead.stdout).kind, 'config');

  // The printed watch command, in the background, sees the rotation and the new secret.
  const watchCommand = find(' watch production');
  // Its own process group, so the whole pasted pipeline can be stopped like Ctrl-C would.
  const watcher = spawn('sh', ['-c', pasted(watchCommand)], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  children.push(watcher);
  const watched = output(watcher);
  // Wait until the agent counts the watcher's stream (its admin /metrics, printed in the banner).
  const admin = /admin {4}(\S+)\/readyz/.exec(banner)?.[1] ?? '';
  for (;;) {
    const metrics = await http(admin, 'GET', '/metrics');
    if (/^config_sidecar_agent_sse_clients [1-9]/m.test(metrics.text)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const rotate = await sh(find(' rotate production/ml-service'));
  assert.equal(rotate.code, 0);
  const put = await sh(find(' put production/ml-service/db-password'));
  assert.equal(put.code, 0);
  await watched.until((t) => /rotated\s+production\/ml-service key v\d+/.test(t) && /changed\s+production\/ml-service\/db-password/.test(t));
  const got = await sh(find(' get production/ml-service/db-password'));
  assert.equal(got.code, 0);
  assert.match(got.stdout.trim(), /^rotated-\d+$/);
  const listed = await sh(find(' list production/ml-service'));
  assert.equal(listed.code, 0);
  assert.match(listed.stdout, /production\/ml-service\/db-password/);
  process.kill(-(watcher.pid as number), 'SIGINT');

  // The obvious backup of the dev stack, from the same directory with the default --data-dir, holds its items.
  const backup = await runCli(['backup', '--to', 'snapshot.db', '--kek-file', '.config-sidecar/dev-kek'], {}, { cwd: dir });
  assert.equal(backup.code, 0, backup.stderr);
  const snapshot = new DatabaseSync(join(dir, 'snapshot.db'), { readOnly: true });
  const items = (snapshot.prepare("SELECT count(*) AS n FROM items WHERE namespace = 'production/ml-service'").get() as { n: number }).n;
  snapshot.close();
  assert.ok(items >= 2, `the backup holds the dev items (${items})`);

  const socketPath = /socket {3}(\S+)/.exec(banner)?.[1] ?? '';
  dev.kill('SIGINT');
  assert.equal(await exited, 0);
  await assert.rejects(stat(socketPath), /ENOENT/);
});
