/**
 * What the embedded store refuses, so no command loses data or reports work it
 * did not do: `rotate --kek` and a second server on a directory a server holds,
 * a `backup` of a directory with no store, and a store file that is empty,
 * headerless or damaged (never silently replaced by a new empty store).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { http, makeTempDir, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { runCli } from './helpers/process.ts';
import { openTestPlane, randomKekBase64, kekOf } from './helpers/store-fixtures.ts';
import { SQLITE_FILE_NAME } from '../src/server/store/sqlite-store.ts';

const cleanup: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

/** A refusal must come at once, not after a hang. */
const REFUSAL_TIMEOUT_MS = 15_000;

async function start(dataDir?: string, kek?: string, rootToken?: string): Promise<ServerProcess> {
  const server = await startServerProcess({ ...(dataDir ? { dataDir } : {}), ...(kek ? { kek } : {}), ...(rootToken ? { rootToken } : {}) });
  cleanup.push(() => server.stop('SIGKILL'));
  if (!dataDir) cleanup.push(() => removeDir(server.dataDir));
  return server;
}

function serverArgs(dataDir: string): string[] {
  return ['server', '--data-dir', dataDir, '--http-listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0'];
}

async function putSecret(server: ServerProcess, name: string, value: string): Promise<void> {
  const res = await http(server.httpUrl, 'PUT', `/v1/items/team/app/${name}`, { token: server.rootToken, body: { kind: 'secret', value } });
  assert.equal(res.status, 200);
}

async function readSecret(server: ServerProcess, name: string): Promise<unknown> {
  return (await http(server.httpUrl, 'GET', `/v1/items/team/app/${name}`, { token: server.rootToken })).json.value;
}

test('rotate --kek on a data dir a server holds exits 1 and changes nothing; the server keeps its data across more writes and a restart', async () => {
  const server = await start();
  await putSecret(server, 'one', 'before-rotate');
  const dir = await makeTempDir();
  cleanup.push(() => removeDir(dir));
  const newKekFile = join(dir, 'new.kek');
  await writeFile(newKekFile, `${randomKekBase64()}\n`, { mode: 0o600 });

  const rotated = await runCli(['rotate', '--kek', '--data-dir', server.dataDir, '--new-kek-file', newKekFile], { CONFIG_SIDECAR_KEK: server.kek }, { timeoutMs: REFUSAL_TIMEOUT_MS });
  assert.equal(rotated.timedOut, false);
  assert.equal(rotated.code, 1, rotated.stderr);
  assert.match(rotated.stderr, /held by another process/);
  assert.match(rotated.stderr, /Stop it first/);
  assert.doesNotMatch(rotated.stdout, /re-wrapped/);

  // More writes through the server (a new namespace key included), then a restart with the same KEK.
  await putSecret(server, 'two', 'after-refusal');
  assert.equal((await http(server.httpUrl, 'POST', '/v1/rotate/team/app', { token: server.rootToken })).status, 200);
  assert.equal(await server.stop(), 0);
  const again = await start(server.dataDir, server.kek, server.rootToken);
  assert.equal(await readSecret(again, 'one'), 'before-rotate');
  assert.equal(await readSecret(again, 'two'), 'after-refusal');
});

test('a second server on a held data dir exits 1 at once; backup works beside the holder; a killed holder frees the dir', async () => {
  const server = await start();
  await putSecret(server, 'kept', 'v1');
  const second = await runCli(serverArgs(server.dataDir), { CONFIG_SIDECAR_KEK: server.kek, CONFIG_SIDECAR_ROOT_TOKEN: server.rootToken }, { timeoutMs: REFUSAL_TIMEOUT_MS });
  assert.equal(second.timedOut, false, 'the second server exits instead of serving');
  assert.equal(second.code, 1, second.stderr);
  assert.match(second.stderr, new RegExp(`store in ${server.dataDir} is held by another process`));

  const dir = await makeTempDir();
  cleanup.push(() => removeDir(dir));
  const backup = await runCli(['backup', '--to', join(dir, 'snapshot.db'), '--data-dir', server.dataDir], { CONFIG_SIDECAR_KEK: server.kek });
  assert.equal(backup.code, 0, backup.stderr);
  assert.ok((await stat(join(dir, 'snapshot.db'))).size > 0);

  // SIGKILL: no clean-up code runs, the OS drops the lock with the process.
  await server.stop('SIGKILL');
  const next = await start(server.dataDir, server.kek, server.rootToken);
  assert.equal(await readSecret(next, 'kept'), 'v1');
});

test('backup of a data dir with no store exits 1, says where the store is, and creates nothing', async () => {
  const dir = await makeTempDir();
  cleanup.push(() => removeDir(dir));
  const missing = join(dir, 'no-such-dir');
  const to = join(dir, 'snapshot.db');
  const result = await runCli(['backup', '--to', to, '--data-dir', missing], { CONFIG_SIDECAR_KEK: randomKekBase64() });
  assert.equal(result.code, 1, result.stderr);
  assert.doesNotMatch(result.stdout, /backed up/);
  assert.match(result.stderr, /There is no store in .*no-such-dir/);
  assert.match(result.stderr, /--data-dir/);
  assert.equal(existsSync(missing), false, 'the data dir is not created');
  assert.equal(existsSync(to), false, 'no backup file is written');
});

/** A real store with enough rows to span many pages, closed (so the WAL is folded into the file). */
async function storeWithData(t: Parameters<typeof openTestPlane>[0], dataDir: string, kek: string): Promise<void> {
  const { plane } = await openTestPlane(t, dataDir, { kek: kekOf(kek) });
  for (let i = 0; i < 200; i++) {
    await plane.putItem({ namespace: 'team/app', name: `item-${i}` }, 'base', 'config', Buffer.from(JSON.stringify({ filler: randomBytes(400).toString('hex') })), 'test');
  }
  await plane.close();
}

test('only a missing store file makes a new store: an empty, headerless or damaged file stops the server naming the file, and stays as it was', async (t) => {
  const kek = randomKekBase64();
  const root = await makeTempDir();
  cleanup.push(() => removeDir(root));
  const dirs = { empty: join(root, 'empty'), headerless: join(root, 'headerless'), damaged: join(root, 'damaged') };
  for (const d of Object.values(dirs)) await mkdir(d);
  await writeFile(join(dirs.empty, SQLITE_FILE_NAME), '');
  await writeFile(join(dirs.headerless, SQLITE_FILE_NAME), randomBytes(8192));
  await storeWithData(t, dirs.damaged, kek);
  const damagedFile = join(dirs.damaged, SQLITE_FILE_NAME);
  const { size } = await stat(damagedFile);
  const pages = size / 4096;
  assert.ok(pages > 20, `the store spans ${pages} pages`);
  const handle = await open(damagedFile, 'r+');
  await handle.write(Buffer.alloc(4096, 0xff), 0, 4096, Math.floor(pages / 2) * 4096);
  await handle.close();

  const before = await Promise.all(Object.values(dirs).map((d) => readFile(join(d, SQLITE_FILE_NAME))));
  const results = await Promise.all(
    Object.values(dirs).map((d) => runCli(serverArgs(d), { CONFIG_SIDECAR_KEK: kek, CONFIG_SIDECAR_ROOT_TOKEN: 'root-token-0123456789' }, { timeoutMs: REFUSAL_TIMEOUT_MS })),
  );
  const [empty, headerless, damaged] = results as [Awaited<ReturnType<typeof runCli>>, Awaited<ReturnType<typeof runCli>>, Awaited<ReturnType<typeof runCli>>];
  for (const [i, result] of results.entries()) {
    const file = join(Object.values(dirs)[i] as string, SQLITE_FILE_NAME);
    assert.equal(result.timedOut, false, `${file}: exits instead of serving`);
    assert.equal(result.code, 1, result.stderr);
    assert.ok(result.stderr.includes(file), `names ${file}: ${result.stderr}`);
    assert.match(result.stderr, /Restore the file from a backup/);
    assert.deepEqual(await readFile(file), before[i], `${file} is left as it was`);
  }
  assert.match(empty.stderr, /is empty \(0 bytes\)/);
  assert.match(headerless.stderr, /does not start with the SQLite header/);
  assert.match(damaged.stderr, /quick_check/);

  const verifyDamaged = await runCli(['verify', '--data-dir', dirs.damaged]);
  assert.equal(verifyDamaged.code, 1);
  assert.match(verifyDamaged.stderr, /is damaged/);

  const fresh = join(root, 'fresh');
  const created = await start(fresh, kek);
  assert.equal(await created.stop(), 0);
  const verifyFresh = await runCli(['verify', '--data-dir', fresh]);
  assert.equal(verifyFresh.code, 0, verifyFresh.stderr);
  assert.match(verifyFresh.stdout, /ok \(PRAGMA integrity_check/);
});

test('a data dir the server user cannot write stops start-up naming --data-dir and the uid (run as uid 65532, as in a pod)', { skip: process.getuid?.() === 0 ? false : 'needs root to start the server as uid 65532' }, async () => {
  const root = await makeTempDir();
  cleanup.push(() => removeDir(root));
  const dataDir = join(root, 'data');
  await mkdir(dataDir, { mode: 0o755 }); // root-owned, not writable by 65532
  const { chmod } = await import('node:fs/promises');
  await chmod(root, 0o755);
  const result = await runCli(serverArgs(dataDir), { CONFIG_SIDECAR_KEK: randomKekBase64() }, { timeoutMs: REFUSAL_TIMEOUT_MS, uid: 65532, gid: 65532 });
  assert.equal(result.code, 1, result.stderr);
  assert.match(result.stderr, new RegExp(`The data directory ${dataDir} \\(--data-dir, CONFIG_SIDECAR_DATA_DIR\\) is not writable by uid 65532`));
});
