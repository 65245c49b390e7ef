import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CLI, http, makeTempDir, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

const cleanup: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

function run(args: string[], env: Record<string, string> = {}, stdin?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(stdin ?? '');
  });
}

async function start(dataDir?: string, kek?: string, rootToken?: string): Promise<ServerProcess> {
  const server = await startServerProcess({ ...(dataDir ? { dataDir } : {}), ...(kek ? { kek } : {}), ...(rootToken ? { rootToken } : {}) });
  cleanup.push(() => server.stop('SIGKILL'));
  return server;
}

test('put, history, rollback and rotate through the CLI, with clear errors and exit codes', async () => {
  const server = await start();
  cleanup.push(() => removeDir(server.dataDir));
  const env = { CONFIG_SIDECAR_SERVER: server.httpUrl, CONFIG_SIDECAR_TOKEN: server.rootToken };
  const item = 'production/ml-service/settings';
  assert.equal((await run(['put', item, '{"replicas": 1}'], env)).code, 0);
  const put2 = await run(['put', item, '{"replicas": 2}'], env);
  assert.equal(put2.code, 0, put2.stderr);
  assert.match(put2.stdout, /version 2/);
  const secret = await run(['put', 'production/ml-service/db-password', '--kind', 'secret', '--file', '-'], env, 's3cr3t');
  assert.equal(secret.code, 0, secret.stderr);

  const history = await run(['history', item, '--json'], env);
  assert.equal(history.code, 0, history.stderr);
  assert.deepEqual((JSON.parse(history.stdout) as { versions: Array<{ version: number }> }).versions.map((v) => v.version), [1, 2]);

  const rollback = await run(['rollback', item, '--to', '1'], env);
  assert.equal(rollback.code, 0, rollback.stderr);
  // put writes the environment `get` and the agent read by default (prod).
  const read = await http(server.httpUrl, 'GET', `/v1/items/${item}?env=prod`, { token: server.rootToken });
  assert.deepEqual(read.json.value, { replicas: 1 });
  assert.equal(read.json.version, 3);

  const rotate = await run(['rotate', 'production/ml-service'], env);
  assert.equal(rotate.code, 0, rotate.stderr);
  assert.match(rotate.stdout, /key version 2/);

  const missing = await run(['rollback', item, '--to', '42'], env);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /not_found/);
  const wrongToken = await run(['history', item], { ...env, CONFIG_SIDECAR_TOKEN: 'wrong-token' });
  assert.equal(wrongToken.code, 1);
  assert.match(wrongToken.stderr, /unauthenticated/);
  const secretOnCommandLine = await run(['put', 'production/ml-service/db-password', 'hunter2', '--kind', 'secret'], env);
  assert.equal(secretOnCommandLine.code, 2);
  assert.match(secretOnCommandLine.stderr, /--file/);
  const badJson = await run(['put', item, '{nope'], env);
  assert.equal(badJson.code, 2);
  const unreachable = await run(['history', item], { ...env, CONFIG_SIDECAR_SERVER: 'http://127.0.0.1:1' });
  assert.equal(unreachable.code, 3);
  assert.match(unreachable.stderr, /cannot reach/);
  const noToken = await run(['history', item], { CONFIG_SIDECAR_SERVER: server.httpUrl });
  assert.equal(noToken.code, 2);
});

test('backup while the server runs restores on a fresh server; rotate --kek re-wraps so only the new KEK opens the store', async () => {
  const server = await start();
  cleanup.push(() => removeDir(server.dataDir));
  const token = server.rootToken;
  assert.equal((await http(server.httpUrl, 'PUT', '/v1/items/team/app/secret', { token, body: { kind: 'secret', value: 'keep-me' } })).status, 200);

  const restoreDir = await makeTempDir();
  cleanup.push(() => removeDir(restoreDir));
  const backupFile = join(restoreDir, 'snapshot.db');
  const backup = await run(['backup', '--to', backupFile, '--data-dir', server.dataDir], { CONFIG_SIDECAR_KEK: server.kek });
  assert.equal(backup.code, 0, backup.stderr);
  const again = await run(['backup', '--to', backupFile, '--data-dir', server.dataDir], { CONFIG_SIDECAR_KEK: server.kek });
  assert.equal(again.code, 2, 'refuses to overwrite');
  const restoredData = join(restoreDir, 'data');
  await mkdir(restoredData);
  await rename(backupFile, join(restoredData, 'config-sidecar.db'));
  const restored = await start(restoredData, server.kek, token);
  assert.equal((await http(restored.httpUrl, 'GET', '/v1/items/team/app/secret', { token })).json.value, 'keep-me');
  assert.equal(await restored.stop(), 0);

  // KEK rotation is offline: stop, re-wrap, restart with the new key.
  assert.equal(await server.stop(), 0);
  const newKek = randomBytes(32).toString('base64');
  const newKekFile = join(restoreDir, 'new.kek');
  await writeFile(newKekFile, `${newKek}\n`, { mode: 0o600 });
  const rotated = await run(['rotate', '--kek', '--data-dir', server.dataDir, '--new-kek-file', newKekFile], { CONFIG_SIDECAR_KEK: server.kek });
  assert.equal(rotated.code, 0, rotated.stderr);
  assert.match(rotated.stdout, /re-wrapped 1 data key/);
  const withNew = await start(server.dataDir, newKek, token);
  assert.equal((await http(withNew.httpUrl, 'GET', '/v1/items/team/app/secret', { token })).json.value, 'keep-me');
  assert.equal(await withNew.stop(), 0);
  const withOld = await run(['server', '--data-dir', server.dataDir, '--http-listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0'], {
    CONFIG_SIDECAR_KEK: server.kek,
  });
  assert.equal(withOld.code, 2, 'the old KEK no longer opens the store');
  assert.match(withOld.stderr, /KEK/);
});
