import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LogPosition } from '../src/shared/watch-proto.ts';
import { CLI, http, makeTempDir, openWatch, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

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
  // An agent's position in the original store, and a write the backup does not have.
  const watch = openWatch(server.grpcAddress, { prefixes: ['team'], start: { kind: 'now' } }, token);
  const beat = await watch.next();
  watch.close();
  assert.ok(beat.type === 'heartbeat' && beat.storeId);
  const original: LogPosition = { storeId: beat.storeId, revision: beat.revision, digest: beat.digest ?? '' };
  assert.equal((await http(server.httpUrl, 'PUT', '/v1/items/team/app/later', { token, body: { kind: 'secret', value: 'not-in-the-backup' } })).status, 200);

  const restoredData = join(restoreDir, 'data');
  const noSource = await run(['restore', '--data-dir', restoredData]);
  assert.equal(noSource.code, 2);
  assert.match(noSource.stderr, /--from FILE/);
  const notBackup = await run(['restore', '--from', join(restoreDir, 'missing.db'), '--data-dir', restoredData]);
  assert.equal(notBackup.code, 2);
  assert.match(notBackup.stderr, /does not exist/);
  const restore = await run(['restore', '--from', backupFile, '--data-dir', restoredData]);
  assert.equal(restore.code, 0, restore.stderr);
  const newId = /new store id (\S+) \(was (\S+)\)/.exec(restore.stdout);
  assert.ok(newId, restore.stdout);
  assert.equal(newId[2], original.storeId, 'the backup carried the original identity');
  assert.notEqual(newId[1], original.storeId, 'the restored store has a new one');
  const twice = await run(['restore', '--from', backupFile, '--data-dir', restoredData]);
  assert.equal(twice.code, 2, 'refuses a directory that holds a store');
  assert.match(twice.stderr, /already holds a store/);

  const restored = await start(restoredData, server.kek, token);
  assert.equal((await http(restored.httpUrl, 'GET', '/v1/items/team/app/secret', { token })).json.value, 'keep-me');
  assert.equal((await http(restored.httpUrl, 'GET', '/v1/items/team/app/later', { token })).status, 404, 'the restore has what the backup had');
  // An agent resuming from the original store resyncs (its position is from another store), then gets live events.
  const resumed = openWatch(restored.grpcAddress, { prefixes: ['team'], start: { kind: 'after', position: original } }, token);
  const resync = await resumed.next();
  assert.ok(resync.type === 'resyncRequired', `got ${resync.type}`);
  assert.match(resync.reason, /another store/);
  assert.equal(resync.storeId, newId[1]);
  // A v1.0 agent (since_revision only) resyncs too: the restored log is compacted past every old revision.
  const legacy = openWatch(restored.grpcAddress, { prefixes: ['team'], sinceRevision: original.revision }, token);
  assert.equal((await legacy.next()).type, 'resyncRequired');
  legacy.close();
  const live = await http(restored.httpUrl, 'PUT', '/v1/items/team/app/secret', { token, body: { kind: 'secret', value: 'after-restore' } });
  assert.ok((await resumed.until((e) => e.type === 'itemChanged')).some((e) => e.revision === live.json.revision));
  resumed.close();
  assert.equal(await restored.stop(), 0);
  const inPlace = await run(['restore', '--in-place', '--data-dir', restoredData]);
  assert.equal(inPlace.code, 0, inPlace.stderr);
  assert.match(inPlace.stdout, new RegExp(`marked .* as restored: new store id \\S+ \\(was ${newId[1]}\\)`));

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
