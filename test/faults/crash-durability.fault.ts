/**
 * Fault suite: kill -9 under concurrent writers. Every acknowledged write must
 * be stored with the version and revision it was answered with, and the event
 * log must stay gap-free (a watch from revision 0 sees every revision once, in
 * order). SQLite: three kill/restart rounds on one data dir. PostgreSQL: two
 * replicas, one killed mid-burst, then the database itself crash-restarted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { http, removeDir, startServerProcess, type ServerProcess } from '../helpers/server-process.ts';
import { collect, contiguous, putItem, replicaSet } from '../helpers/postgres-replicas.ts';
import { findPostgresBin, startThrowawayPostgres } from '../helpers/store-postgres.ts';

interface Ack {
  readonly path: string;
  readonly version: number;
  readonly revision: number;
}

/** Each write goes to its own item (no pruning in play), so one list shows every stored write's version and revision. */
async function assertStored(server: ServerProcess, token: string, acks: readonly Ack[]): Promise<void> {
  const res = await http(server.httpUrl, 'GET', '/v1/list/crash', { token });
  assert.equal(res.status, 200, res.text);
  const stored = new Set((res.json.items as Array<{ namespace: string; name: string; version: number; revision: number }>).map((i) => `${i.namespace}/${i.name}@${i.version}@${i.revision}`));
  for (const ack of acks) assert.ok(stored.has(`${ack.path}@${ack.version}@${ack.revision}`), `${ack.path} (version ${ack.version}, revision ${ack.revision}) was acknowledged and must be stored`);
}

/** Writers that record acknowledgements until their server dies (connection reset) or they are done. */
function writers(server: ServerProcess, token: string, round: number, acks: Ack[], onAck: () => void): Promise<void[]> {
  const one = async (id: string): Promise<void> => {
    for (let i = 0; i < 40; i++) {
      const path = `crash/app/r${round}-${id}-${i}`;
      let res;
      try {
        res = await putItem(server, token, path, { round, i });
      } catch {
        return;
      }
      if (res.status !== 200) return;
      acks.push({ path, version: res.json.version, revision: res.json.revision });
      onAck();
    }
  };
  return Promise.all(['w1', 'w2', 'w3', 'w4'].map(one));
}

test('SQLite: kill -9 under 4 concurrent writers, three times: every acknowledged write stored, the log gap-free', async (t) => {
  const acks: Ack[] = [];
  let server = await startServerProcess();
  const { dataDir, kek, rootToken } = server;
  t.after(async () => {
    await server.stop('SIGKILL');
    await removeDir(dataDir);
  });
  const start = await putItem(server, rootToken, 'crash/app/start', { start: true });
  assert.equal(start.status, 200, start.text);
  const first = start.json.revision as number;
  for (let round = 1; round <= 3; round++) {
    const killAt = acks.length + 30;
    let killed = false;
    await writers(server, rootToken, round, acks, () => {
      if (!killed && acks.length >= killAt) {
        killed = true;
        server.proc.kill('SIGKILL');
      }
    });
    assert.ok(killed, `round ${round}: the server was killed mid-burst`);
    assert.notEqual(await server.exited, 0);
    server = await startServerProcess({ dataDir, kek, rootToken });
    await assertStored(server, rootToken, acks);
    t.diagnostic(`tried: round ${round}: kill -9 after ${killAt} acknowledged writes (4 writers in flight); held: all ${acks.length} acknowledged writes stored after restart`);
  }
  const final = await putItem(server, rootToken, 'crash/app/final', { done: true });
  assert.equal(final.status, 200, final.text);
  const last = final.json.revision as number;
  const watcher = await collect(server, rootToken, ['crash'], first);
  t.after(() => watcher.watch.close());
  await watcher.reach(last);
  assert.ok(contiguous(watcher.revisions, first + 1, last), `revisions ${first + 1}..${last} each once, in order`);
  t.diagnostic(`held: the event log replays revisions ${first + 1}..${last} with no gap and no duplicate`);
});

test('PostgreSQL: two replicas, one killed -9 mid-burst, then PostgreSQL crash-restarted: nothing acknowledged lost, the log gap-free', { skip: findPostgresBin() ? false : 'PostgreSQL is not installed (no initdb/pg_ctl); install postgresql to run this case' }, async (t) => {
  const cluster = await startThrowawayPostgres();
  t.after(() => cluster.stop());
  const set = replicaSet(t, await cluster.createDatabase());
  const [a, b] = await Promise.all([set.start(), set.start()]);
  const token = set.rootToken;
  const start = await putItem(a, token, 'crash/app/start', { start: true });
  assert.equal(start.status, 200, start.text);
  const first = start.json.revision as number;
  const watcher = await collect(a, token, ['crash'], first);
  t.after(() => watcher.watch.close());
  const acks: Ack[] = [];
  let bKilled = false;
  await Promise.all([
    writers(a, token, 1, acks, () => {}),
    writers(b, token, 2, acks, () => {
      if (!bKilled && acks.length >= 30) {
        bKilled = true;
        b.proc.kill('SIGKILL');
      }
    }),
  ]);
  assert.ok(bKilled);
  t.diagnostic(`tried: replica B killed -9 after ${acks.length >= 30 ? 30 : acks.length} acknowledged writes across both replicas`);

  await cluster.crash();
  const down = await putItem(a, token, 'crash/app/while-down', { down: true });
  assert.equal(down.status, 503, 'refused while PostgreSQL is down');
  await cluster.restart();
  t.diagnostic('tried: PostgreSQL crashed (pg_ctl stop -m immediate: no checkpoint) and restarted with WAL recovery under replica A');

  const after = await putItem(a, token, 'crash/app/after', { n: 1 });
  assert.equal(after.status, 200, after.text);
  const last = after.json.revision as number;
  await watcher.reach(last, 30_000);
  assert.ok(contiguous(watcher.revisions, first + 1, last), `replica A streamed revisions ${first + 1}..${last} each once, in order`);
  await assertStored(a, token, acks);
  t.diagnostic(`held: all ${acks.length} acknowledged writes stored; revisions ${first + 1}..${last} gap-free on the survivor`);
});
