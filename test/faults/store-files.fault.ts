/**
 * Fault suite: the store's file and its life cycle. A truncated or corrupted
 * SQLite file is refused at start (non-zero exit, a message, nothing served);
 * a restore from backup and a reset to an empty store, with an agent connected
 * throughout, never leave the agent serving values the store no longer has.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CLI, http, makeTempDir, removeDir, startServerProcess, type ServerProcess } from '../helpers/server-process.ts';
import { socketGet, startAgentProcess, waitReady } from '../helpers/agent-process.ts';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';

const DB = 'config-sidecar.db';

function startOffline(dataDir: string, kek: string): { status: number | null; stderr: string; stdout: string } {
  const r = spawnSync(process.execPath, [CLI, 'server', '--data-dir', dataDir, '--http-listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0'], {
    env: { PATH: process.env.PATH ?? '', CONFIG_SIDECAR_KEK: kek },
    timeout: 20_000,
    encoding: 'utf8',
  });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

test('truncated and corrupted store files are refused at start: non-zero exit, a message, never "server listening"', async (t) => {
  const server = await startServerProcess();
  t.after(() => removeDir(server.dataDir));
  for (let i = 0; i < 40; i++) {
    assert.equal((await http(server.httpUrl, 'PUT', `/v1/items/files/app/k${i}`, { token: server.rootToken, body: { kind: 'secret', value: `v${i}-${'x'.repeat(1000)}` } })).status, 200);
  }
  assert.equal(await server.stop('SIGTERM'), 0);
  const file = join(server.dataDir, DB);
  const original = await readFile(file);
  const damages: Array<[string, () => Promise<void>]> = [
    ['truncated to half', () => truncate(file, Math.floor(original.length / 2))],
    ['truncated to 100 bytes', () => truncate(file, 100)],
    ['every 97th byte flipped after the header', () => writeFile(file, Buffer.from(original).map((b, i) => (i >= 4096 && i % 97 === 0 ? b ^ 0x5a : b)))],
    ['header overwritten', () => writeFile(file, Buffer.concat([Buffer.alloc(100, 0x41), original.subarray(100)]))],
  ];
  for (const [what, damage] of damages) {
    await writeFile(file, original);
    await rm(`${file}-wal`, { force: true });
    await damage();
    const r = startOffline(server.dataDir, server.kek);
    t.diagnostic(`tried: store file ${what}; exit ${r.status}: ${r.stderr.trim().split('\n')[0]?.slice(0, 160)}`);
    assert.notEqual(r.status, 0, `${what}: must not start`);
    assert.ok(r.status !== null, `${what}: exits rather than hangs`);
    assert.ok(!r.stdout.includes('server listening'), `${what}: nothing served`);
    // The wording is the engine's (or the migration checksum's) until a store integrity check names the file.
    assert.match(r.stderr, /config-sidecar: \S/, `${what}: says what is wrong`);
  }
  t.diagnostic('held: every damaged file was refused at start with a message');
});

/** A server behind proxies, so a restart on other ports keeps the agent's addresses. */
async function proxied(t: { after: (fn: () => Promise<void>) => void }): Promise<{ rest: TcpProxy; grpc: TcpProxy; point: (s: ServerProcess) => void }> {
  const rest = await startTcpProxy('127.0.0.1:9');
  const grpc = await startTcpProxy('127.0.0.1:9');
  t.after(async () => {
    await rest.close();
    await grpc.close();
  });
  return {
    rest,
    grpc,
    point(s) {
      rest.retarget(`127.0.0.1:${new URL(s.httpUrl).port}`);
      grpc.retarget(s.grpcAddress);
    },
  };
}

async function agentValue(socketPath: string, item: string): Promise<{ status: number; value: unknown }> {
  const res = await socketGet(socketPath, `/v1/items/${item}`);
  return { status: res.status, value: res.json?.value };
}

/** Re-reads until `probe` holds; a read refused at the transport (the agent reconnecting under load) counts as not yet. */
async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 30_000): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    if (await probe().catch(() => false)) return Date.now() - started;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return assert.fail(`${what} within ${timeoutMs} ms`);
}

test('restore from a backup and reset to an empty store with an agent connected: the agent follows the store', async (t) => {
  const net = await proxied(t);
  let server = await startServerProcess({ args: ['--heartbeat-interval', '500ms'] });
  const { kek, rootToken: token, dataDir } = server;
  const backupDir = await makeTempDir('cs-restore-');
  t.after(async () => {
    await server.stop('SIGKILL');
    await removeDir(dataDir);
    await removeDir(backupDir);
  });
  net.point(server);
  const ITEM = 'files/app/db-password';
  assert.equal((await http(server.httpUrl, 'PUT', `/v1/items/${ITEM}`, { token, body: { kind: 'secret', value: 'v1-in-backup' } })).status, 200);
  const agent = await startAgentProcess({ httpUrl: `http://${net.rest.address}`, grpcAddress: net.grpc.address, rootToken: token }, { prefixes: ['files'], prefetch: [ITEM] });
  t.after(async () => {
    await agent.stop('SIGKILL');
    await removeDir(agent.dir);
  });
  await waitReady(agent.adminUrl);

  const backup = join(backupDir, 'snapshot.db');
  const b = spawnSync(process.execPath, [CLI, 'backup', '--to', backup, '--data-dir', dataDir], { env: { PATH: process.env.PATH ?? '', CONFIG_SIDECAR_KEK: kek }, encoding: 'utf8' });
  assert.equal(b.status, 0, b.stderr);
  for (let i = 2; i <= 5; i++) assert.equal((await http(server.httpUrl, 'PUT', `/v1/items/${ITEM}`, { token, body: { kind: 'secret', value: `v${i}-after-backup` } })).status, 200);
  await until('the agent serves v5', async () => (await agentValue(agent.socketPath, ITEM)).value === 'v5-after-backup');

  // Restore: stop, put the backup in place, start (on new ports, behind the same proxies).
  await server.stop('SIGTERM');
  await rm(join(dataDir, `${DB}-wal`), { force: true });
  await rm(join(dataDir, `${DB}-shm`), { force: true });
  await copyFile(backup, join(dataDir, DB));
  server = await startServerProcess({ dataDir, kek, rootToken: token, args: ['--heartbeat-interval', '500ms'] });
  net.point(server);
  t.diagnostic('tried: restored a backup taken at v1 while the agent held v5, then restarted the server');
  const restoredAfter = await until('the agent serves the restored v1, not v5', async () => (await agentValue(agent.socketPath, ITEM)).value === 'v1-in-backup');
  t.diagnostic(`held: the agent served the restored value ${restoredAfter} ms after the restart`);

  // Reset: an empty store with the same KEK.
  await server.stop('SIGTERM');
  await rm(dataDir, { recursive: true, force: true });
  server = await startServerProcess({ dataDir, kek, rootToken: token, args: ['--heartbeat-interval', '500ms'] });
  net.point(server);
  t.diagnostic('tried: reset the store to empty while the agent held the item');
  const resetAfter = await until('the agent stops serving the vanished item', async () => (await agentValue(agent.socketPath, ITEM)).status === 404);
  t.diagnostic(`held: the agent answered 404 for the vanished item ${resetAfter} ms after the reset`);
});
