/**
 * Key rings and retiring data keys from the CLI (issue 20): `put
 * --ring-grace`, `rotate --retire-previous` (online) and `rotate
 * --reseal-history` (offline, on the stopped server's store), against a real
 * server process and its SQLite file.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { SQLITE_FILE_NAME } from '../src/server/store/sqlite-store.ts';
import { http, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { runCli } from './helpers/process.ts';

const cleanup: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

function storedKeys(dataDir: string): Array<[string, number]> {
  const db = new DatabaseSync(join(dataDir, SQLITE_FILE_NAME), { readOnly: true });
  try {
    return (db.prepare('SELECT namespace, version FROM deks ORDER BY namespace, version').all() as Array<{ namespace: string; version: number }>).map((r) => [r.namespace, Number(r.version)]);
  } finally {
    db.close();
  }
}

test('put --ring-grace keeps a ring; rotate --retire-previous online and --reseal-history offline destroy the older keys; history still reads', async () => {
  const server: ServerProcess = await startServerProcess();
  cleanup.push(async () => {
    await server.stop('SIGKILL');
    await removeDir(server.dataDir);
  });
  const token = server.rootToken;
  const env = { CONFIG_SIDECAR_SERVER: server.httpUrl, CONFIG_SIDECAR_TOKEN: token };
  const item = 'production/auth/settings';
  assert.equal((await runCli(['put', item, '{"kid": "a"}', '--ring-grace', '1h'], env)).code, 0);
  assert.equal((await runCli(['put', item, '{"kid": "b"}'], env)).code, 0);
  const ring = await http(server.httpUrl, 'GET', `/v1/items/${item}?env=prod&ring=1`, { token });
  assert.deepEqual([ring.json.current.value, ring.json.previous.map((p: { value: unknown }) => p.value)], [{ kid: 'b' }, [{ kid: 'a' }]]);
  const badGrace = await runCli(['put', item, '{"kid": "c"}', '--ring-grace', 'forever'], env);
  assert.equal(badGrace.code, 2, "a 400 is bad usage");
  assert.match(badGrace.stderr, /ringGrace must be a duration/);

  // Online: the exposed key version goes at once.
  await http(server.httpUrl, 'POST', '/v1/rotate/production/auth', { token });
  assert.deepEqual(storedKeys(server.dataDir), [['production/auth', 1], ['production/auth', 2]], 'a plain rotation keeps the old key for history');
  const retired = await runCli(['rotate', 'production/auth', '--retire-previous'], env);
  assert.equal(retired.code, 0, retired.stderr);
  assert.match(retired.stdout, /rotated production\/auth: key version 3, revision \d+; retired key version\(s\) 1, 2, 2 row\(s\) re-sealed/);
  assert.deepEqual(storedKeys(server.dataDir), [['production/auth', 3]]);

  // Offline: the same for every namespace on the stopped server's store.
  await http(server.httpUrl, 'PUT', '/v1/items/production/db/password', { token, body: { kind: 'secret', value: 'one' } });
  await http(server.httpUrl, 'POST', '/v1/rotate/production/db', { token });
  await http(server.httpUrl, 'PUT', '/v1/items/production/db/password', { token, body: { kind: 'secret', value: 'two' } });
  assert.equal(await server.stop(), 0);
  const usage = await runCli(['rotate', '--reseal-history', '--retire-previous', '--data-dir', server.dataDir], { CONFIG_SIDECAR_KEK: server.kek });
  assert.equal(usage.code, 2);
  const offline = await runCli(['rotate', '--reseal-history', '--data-dir', server.dataDir], { CONFIG_SIDECAR_KEK: server.kek });
  assert.equal(offline.code, 0, offline.stderr);
  assert.match(offline.stdout, /re-sealed production\/db: key version 3, 2 row\(s\); destroyed key version\(s\) 1, 2/);
  assert.match(offline.stdout, /re-sealed production\/auth: key version 4/);
  assert.deepEqual(storedKeys(server.dataDir), [['production/auth', 4], ['production/db', 3]]);
  const db = new DatabaseSync(join(server.dataDir, SQLITE_FILE_NAME), { readOnly: true });
  const audit = db.prepare("SELECT detail FROM audit_log WHERE action = 'rotate' AND target = 'production/db' ORDER BY id DESC").get() as { detail: string };
  db.close();
  assert.match(audit.detail, /keyVersion=3 retired=1,2 resealed=2/);

  const restarted = await startServerProcess({ dataDir: server.dataDir, kek: server.kek, rootToken: token });
  cleanup.push(() => restarted.stop('SIGKILL'));
  const rolledBack = await http(restarted.httpUrl, 'POST', '/v1/rollback/production/db/password', { token, body: { version: 1 } });
  assert.equal(rolledBack.status, 200, rolledBack.text);
  assert.equal((await http(restarted.httpUrl, 'GET', '/v1/items/production/db/password', { token })).json.value, 'one', 'history re-sealed offline still reads');
});
