/**
 * Several real `config-sidecar server` processes on one throwaway PostgreSQL
 * cluster: cross-replica watch, concurrent writers, the same item written
 * through two replicas at once, PostgreSQL restarted under load, a replica
 * killed mid-burst, retention on the shared log, and start-up errors naming
 * --database-url. Skipped, with the reason shown, only when PostgreSQL is not
 * installed.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { loadMigrations } from '../src/server/store/migrate.ts';
import { hook, openSse, putItem as agentPut, socketGet, startAgentProcess, type SseEvent } from './helpers/agent-process.ts';
import { CLI, http, openWatch, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { runCli } from './helpers/process.ts';
import { collect, contiguous, putItem, replicaSet } from './helpers/postgres-replicas.ts';
import { appendAndCompact, findPostgresBin, postgresTool, startThrowawayPostgres, type ThrowawayPostgres } from './helpers/store-postgres.ts';

const SKIP = findPostgresBin() ? false : 'PostgreSQL is not installed (no initdb/pg_ctl found); install postgresql to run the replica tests';

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

interface Ack {
  readonly path: string;
  readonly version: number;
  readonly revision: number;
}

/** Every acknowledged write is still in its item's history with the version and revision it was answered with. */
async function assertStored(server: ServerProcess, token: string, acks: readonly Ack[]): Promise<void> {
  const byPath = new Map<string, Ack[]>();
  for (const ack of acks) byPath.set(ack.path, [...(byPath.get(ack.path) ?? []), ack]);
  for (const [path, expected] of byPath) {
    const res = await http(server.httpUrl, 'GET', `/v1/history/${path}`, { token });
    assert.equal(res.status, 200, res.text);
    const stored = new Set((res.json.versions as Array<{ version: number; revision: number }>).map((v) => `${v.version}@${v.revision}`));
    for (const ack of expected) assert.ok(stored.has(`${ack.version}@${ack.revision}`), `${path} v${ack.version} (revision ${ack.revision}) was acknowledged and must be stored`);
  }
}

describe('PostgreSQL: several server replicas on one database', { skip: SKIP }, () => {
  let cluster: ThrowawayPostgres;
  before(async () => {
    cluster = await startThrowawayPostgres();
  });
  after(() => cluster?.stop());

  test('replicas starting together migrate once; a watcher on A sees B’s write; concurrent writers through both: every watcher gets every revision once, in order', async (t) => {
    const url = await cluster.createDatabase();
    const set = replicaSet(t, url);
    const [a, b] = await Promise.all([set.start(), set.start()]);
    const migrations = await cluster.query(url, 'SELECT version FROM schema_migrations ORDER BY version');
    assert.deepEqual(
      migrations.map((row) => Number(row.version)),
      loadMigrations().map((m) => m.version),
      'each migration recorded once',
    );

    const token = set.rootToken;
    const [wa, wb] = await Promise.all([collect(a, token, ['team']), collect(b, token, ['team'])]);
    t.after(() => {
      wa.watch.close();
      wb.watch.close();
    });
    const first = await putItem(b, token, 'team/app/first', { n: 1 });
    assert.equal(first.status, 200, first.text);
    await wa.reach(first.json.revision);
    assert.deepEqual(wa.revisions, [first.json.revision], 'the watcher on A saw the write made through B');

    const WRITERS_PER_REPLICA = 3;
    const WRITES_EACH = 8;
    const writers = [a, b].flatMap((server, s) =>
      range(1, WRITERS_PER_REPLICA).map(async (w) => {
        const revisions: number[] = [];
        for (let i = 0; i < WRITES_EACH; i++) {
          const res = await putItem(server, token, `team/app/w${s}-${w}`, { i });
          assert.equal(res.status, 200, res.text);
          revisions.push(res.json.revision as number);
        }
        return revisions;
      }),
    );
    const acknowledged = (await Promise.all(writers)).flat().sort((x, y) => x - y);
    const last = first.json.revision + 2 * WRITERS_PER_REPLICA * WRITES_EACH;
    assert.deepEqual(acknowledged, range(first.json.revision + 1, last), 'revisions are global and gap-free across replicas');
    await Promise.all([wa.reach(last), wb.reach(last)]);
    assert.deepEqual(wa.revisions, range(first.json.revision, last), 'replica A: every revision once, in order');
    assert.deepEqual(wb.revisions, range(first.json.revision, last), 'replica B: every revision once, in order');
  });

  test('two replicas writing the same item at once: both versions stored, in order, no lost update', async (t) => {
    const url = await cluster.createDatabase();
    const set = replicaSet(t, url);
    const [a, b] = await Promise.all([set.start(), set.start()]);
    const token = set.rootToken;
    const ROUNDS = 6;
    const acks: Ack[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const results = await Promise.all([putItem(a, token, 'team/app/shared', { from: 'a', round }), putItem(b, token, 'team/app/shared', { from: 'b', round })]);
      for (const res of results) {
        assert.equal(res.status, 200, res.text);
        acks.push({ path: 'team/app/shared', version: res.json.version, revision: res.json.revision });
      }
    }
    const history = await http(a.httpUrl, 'GET', '/v1/history/team/app/shared', { token });
    assert.equal(history.status, 200, history.text);
    const versions = history.json.versions as Array<{ version: number; revision: number }>;
    assert.deepEqual(
      versions.map((v) => v.version),
      range(1, 2 * ROUNDS),
      'every write got its own version',
    );
    const revisions = versions.map((v) => v.revision);
    assert.deepEqual(revisions, [...revisions].sort((x, y) => x - y), 'versions are in revision (commit) order');
    await assertStored(b, token, acks);
    const newest = acks.reduce((m, ack) => (ack.version > m.version ? ack : m));
    const current = await http(b.httpUrl, 'GET', '/v1/items/team/app/shared', { token });
    assert.equal(current.json.version, newest.version, 'the read serves the last committed version');
  });

  test('PostgreSQL restarted under load: 503 store_unavailable while down, writes succeed after, nothing acknowledged lost, no event skipped', async (t) => {
    const url = await cluster.createDatabase();
    const set = replicaSet(t, url);
    const [a, b] = await Promise.all([set.start(), set.start()]);
    const token = set.rootToken;
    const [wa, wb] = await Promise.all([collect(a, token, ['load']), collect(b, token, ['load'])]);
    t.after(() => {
      wa.watch.close();
      wb.watch.close();
    });

    const acks: Ack[] = [];
    let markBackUp!: () => void;
    const backUp = new Promise<void>((resolve) => {
      markBackUp = resolve;
    });
    let markLoaded!: () => void;
    const loaded = new Promise<void>((resolve) => {
      markLoaded = resolve;
    });
    const WRITES_EACH = 12;
    const LOADED_AFTER = 8;
    const writer = async (server: ServerProcess, id: string): Promise<void> => {
      const path = `load/app/${id}`;
      for (let i = 0; i < WRITES_EACH; i++) {
        const res = await putItem(server, token, path, { i });
        if (res.status === 200) {
          acks.push({ path, version: res.json.version, revision: res.json.revision });
          if (acks.length >= LOADED_AFTER) markLoaded();
        } else {
          assert.equal(res.status, 503, res.text);
          assert.equal(res.json.error.code, 'store_unavailable');
          // Wait for the database rather than spin on 503s.
          await backUp;
        }
      }
    };
    const writers = Promise.all([writer(a, 'a1'), writer(a, 'a2'), writer(b, 'b1'), writer(b, 'b2')]);

    await loaded;
    await cluster.shutdown();
    let restarted = false;
    t.after(async () => {
      if (!restarted) await cluster.restart(); // leave the cluster up for the next test even when this one fails
    });
    for (const server of [a, b]) {
      const res = await putItem(server, token, 'load/app/while-down', { down: true });
      assert.equal(res.status, 503, 'a write while PostgreSQL is down is refused');
      assert.equal(res.json.error.code, 'store_unavailable');
      const health = await http(server.httpUrl, 'GET', '/v1/items/load/app/a1', { token });
      assert.equal(health.status, 503, 'reads are refused too, with the same code');
    }
    await cluster.restart();
    restarted = true;
    markBackUp();
    await writers;

    const after = await Promise.all([putItem(a, token, 'load/app/after', { n: 1 }), putItem(b, token, 'load/app/after', { n: 2 })]);
    for (const res of after) assert.equal(res.status, 200, `writes succeed once PostgreSQL is back: ${res.text}`);
    const last = Math.max(...after.map((res) => res.json.revision as number));
    await Promise.all([wa.reach(last), wb.reach(last)]);
    for (const [name, watcher] of [
      ['A', wa],
      ['B', wb],
    ] as const) {
      assert.ok(contiguous(watcher.revisions, 1, last), `replica ${name}: every committed revision once, in order (${watcher.revisions.join(',')})`);
    }
    assert.ok(acks.length >= LOADED_AFTER);
    await assertStored(a, token, acks);
  });

  test('a replica killed during a write burst: the survivor streams every committed revision once, in order; acknowledged writes are stored', async (t) => {
    const url = await cluster.createDatabase();
    const set = replicaSet(t, url);
    const [a, b] = await Promise.all([set.start(), set.start()]);
    const token = set.rootToken;
    const wa = await collect(a, token, ['burst']);
    t.after(() => wa.watch.close());

    const acks: Ack[] = [];
    let bAcks = 0;
    const KILL_AFTER = 5;
    const WRITES_EACH = 12;
    const writer = async (server: ServerProcess, id: string): Promise<void> => {
      const path = `burst/app/${id}`;
      for (let i = 0; i < WRITES_EACH; i++) {
        let res;
        try {
          res = await putItem(server, token, path, { i });
        } catch {
          return; // the replica is gone: its connection was reset
        }
        assert.equal(res.status, 200, res.text);
        acks.push({ path, version: res.json.version, revision: res.json.revision });
        if (server === b && ++bAcks === KILL_AFTER) b.proc.kill('SIGKILL');
      }
    };
    await Promise.all([writer(a, 'a1'), writer(a, 'a2'), writer(b, 'b1'), writer(b, 'b2')]);
    assert.notEqual(await b.exited, 0);

    const final = await putItem(a, token, 'burst/app/final', { done: true });
    assert.equal(final.status, 200, final.text);
    const last = final.json.revision as number;
    await wa.reach(last);
    assert.ok(contiguous(wa.revisions, 1, last), `every committed revision once, in order (${wa.revisions.join(',')})`);
    await assertStored(a, token, acks);
  });

  test('retention compacts the shared log: a too-old resume gets ResyncRequired on any replica, a recent one replays', async (t) => {
    const url = await cluster.createDatabase();
    const set = replicaSet(t, url);
    const a = await set.start(['--retain-events', '5']);
    const b = await set.start();
    const token = set.rootToken;
    let last = 0;
    for (let i = 1; i <= 12; i++) {
      const res = await putItem(a, token, `keep/app/item${i}`, { i });
      assert.equal(res.status, 200, res.text);
      last = res.json.revision;
    }
    const old = openWatch(b.grpcAddress, { prefixes: ['keep'], sinceRevision: 2 }, token);
    t.after(() => old.close());
    const resync = await old.next();
    assert.equal(resync.type, 'resyncRequired');
    assert.equal(resync.type === 'resyncRequired' && resync.oldestRevision, last - 4, 'the newest 5 revisions are retained');

    const recent = openWatch(b.grpcAddress, { prefixes: ['keep'], sinceRevision: last - 3 }, token);
    t.after(() => recent.close());
    assert.equal((await recent.next()).type, 'heartbeat');
    const replayed = (await recent.until((e) => e.revision === last && e.type !== 'heartbeat')).filter((e) => e.type !== 'heartbeat');
    assert.deepEqual(
      replayed.map((e) => [e.type, e.revision]),
      range(last - 2, last).map((r) => ['itemChanged', r]),
    );
  });

  test('a replica that finds events compacted before it delivered them ends its watch streams; the resume gets ResyncRequired', async (t) => {
    const url = await cluster.createDatabase();
    const set = replicaSet(t, url);
    const a = await set.start();
    const token = set.rootToken;
    const watch = openWatch(a.grpcAddress, { prefixes: ['gone'] }, token);
    t.after(() => watch.close());
    assert.equal((await watch.next()).type, 'heartbeat');
    // Other replicas wrote and compacted while this one could not read the log.
    const through = await appendAndCompact(url, 3);
    const ended = await watch.status;
    assert.equal(ended.code, 14, `UNAVAILABLE: ${ended.details}`);
    await a.waitForLog((l) => l.msg === 'events were compacted before this replica delivered them; ending its watch streams so agents resume (and resync)');
    const resumed = openWatch(a.grpcAddress, { prefixes: ['gone'], sinceRevision: 1 }, token);
    t.after(() => resumed.close());
    const resync = await resumed.next();
    assert.equal(resync.type, 'resyncRequired');
    assert.equal(resync.type === 'resyncRequired' && resync.oldestRevision, through + 1);
  });

  test('killing replica A: the agent fails over to B and resumes from its applied revision, with no ResyncRequired and no missed event', async (t) => {
    const url = await cluster.createDatabase();
    const set = replicaSet(t, url);
    const [a, b] = await Promise.all([set.start(), set.start()]);
    const ITEM = 'production/ml/settings';
    await agentPut({ httpUrl: a.httpUrl, rootToken: set.rootToken }, ITEM, { kind: 'config', value: { v: 0 } });
    const agent = await startAgentProcess(
      { httpUrl: a.httpUrl, grpcAddress: a.grpcAddress, rootToken: set.rootToken },
      {
        prefixes: ['production'],
        prefetch: [ITEM],
        // Both replicas, tried in order; the later flags win over the helper's single server.
        args: ['--server', `${a.httpUrl},${b.httpUrl}`, '--server-grpc', `${a.grpcAddress},${b.grpcAddress}`, '--refetch-jitter', '0s'],
      },
    );
    t.after(async () => {
      await agent.stop('SIGKILL');
      await removeDir(agent.dir);
    });
    await agent.waitForLog((l) => l.msg === 'watch stream connected' && l.address === a.grpcAddress);
    const sse = openSse(agent.socketPath, '/v1/watch?prefix=production/ml');
    t.after(() => sse.close());
    await sse.opened;
    const applied = await agentPut({ httpUrl: a.httpUrl, rootToken: set.rootToken }, ITEM, { kind: 'config', value: { v: 1 } });
    assert.equal(Number((await sse.next()).id), applied.revision);
    await hook(agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${applied.revision}`);

    a.proc.kill('SIGKILL');
    await a.exited;
    // Written through B while the agent is between replicas, then live once it is on B.
    const missed: number[] = [];
    for (let v = 2; v <= 4; v++) missed.push((await agentPut({ httpUrl: b.httpUrl, rootToken: set.rootToken }, ITEM, { kind: 'config', value: { v } })).revision);
    const resumed = await agent.waitForLog((l) => l.msg === 'watch stream connected' && l.address === b.grpcAddress);
    assert.ok(Number(resumed.sinceRevision) >= applied.revision, `resumed from its applied revision (${String(resumed.sinceRevision)})`);
    const live = await agentPut({ httpUrl: b.httpUrl, rootToken: set.rootToken }, ITEM, { kind: 'config', value: { v: 5 } });

    const seen: SseEvent[] = [];
    while (Number(seen.at(-1)?.id ?? 0) < live.revision) seen.push(await sse.next());
    // The replay and the live event arrive once each, in order. A REST fill made
    // while the agent was between replicas (a value with another ETag) is
    // announced too, and so is the drop of a value the resumed stream cannot
    // vouch for, so extra `changed` announcements may come before the replay.
    assert.ok(seen.every((e) => e.event === 'changed'), `only changes: ${JSON.stringify(seen.map((e) => [e.event, e.id]))}`);
    const ids = seen.map((e) => Number(e.id));
    const lastAt = [...missed, live.revision].map((r) => ids.lastIndexOf(r));
    assert.ok(
      lastAt.every((at, i) => at >= 0 && (i === 0 || at > (lastAt[i - 1] as number))),
      `every missed revision and the live one announced, in order: ${JSON.stringify(ids)}`,
    );
    assert.ok(!agent.logs.some((l) => l.msg === 'resync required: cache dropped'), 'no ResyncRequired');
    await hook(agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${live.revision}`);
    const read = await socketGet(agent.socketPath, `/v1/items/${ITEM}`);
    assert.deepEqual(read.json.value, { v: 5 }, 'the agent serves the value written through B');
  });

  test('backup --database-url runs pg_dump; a server on the restored database serves the same values with the same KEK', async (t) => {
    const url = await cluster.createDatabase();
    const set = replicaSet(t, url);
    const a = await set.start();
    const token = set.rootToken;
    assert.equal((await putItem(a, token, 'dump/app/settings', { replicas: 3 })).status, 200);
    const secret = await http(a.httpUrl, 'PUT', '/v1/items/dump/app/password', { token, body: { kind: 'secret', value: 'restore-me' } });
    assert.equal(secret.status, 200, secret.text);

    const dir = await mkdtemp(join(tmpdir(), 'cs-pg-backup-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'snapshot.dump');
    const pgDump = postgresTool('pg_dump');
    const pgRestore = postgresTool('pg_restore');
    if (!pgDump || !pgRestore) return t.skip('pg_dump/pg_restore are not installed');
    const env = { PATH: `${dirname(pgDump)}${delimiter}${process.env.PATH ?? ''}`, CONFIG_SIDECAR_KEK: set.kek, CONFIG_SIDECAR_DATABASE_URL: url };
    const run = promisify(execFile);
    const backup = await run(process.execPath, [CLI, 'backup', '--to', file], { env });
    assert.match(backup.stdout, /backed up the PostgreSQL database/);
    assert.equal((await readFile(file)).subarray(0, 5).toString(), 'PGDMP', 'a pg_dump custom-format archive');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.ok(!(await readFile(file)).includes('restore-me'), 'the dump holds no plaintext');

    const restoredUrl = await cluster.createDatabase();
    const restore = await run(process.execPath, [CLI, 'restore', '--from', file], { env: { ...env, CONFIG_SIDECAR_DATABASE_URL: restoredUrl } });
    const ids = /new store id (\S+) \(was (\S+)\)/.exec(restore.stdout);
    assert.ok(ids && ids[1] !== ids[2], `a restored database gets a new store id: ${restore.stdout}`);
    const [[counter]] = [await cluster.query(restoredUrl, 'SELECT store_id, revision, compacted_through FROM revision_counter')];
    assert.deepEqual([counter?.store_id, Number(counter?.compacted_through)], [ids[1], Number(counter?.revision)], 'the whole log counts as compacted');
    await assert.rejects(
      run(process.execPath, [CLI, 'restore', '--from', file], { env: { ...env, CONFIG_SIDECAR_DATABASE_URL: restoredUrl } }),
      /already holds a store/,
      'a database that holds a store is never restored over',
    );
    await assert.rejects(
      startServerProcess({ dataDir: join(dir, 'other-kek'), env: { CONFIG_SIDECAR_DATABASE_URL: restoredUrl } }),
      /CONFIG_SIDECAR_KEK/,
      'another KEK cannot open the restored keys',
    );
    const again = await startServerProcess({ kek: set.kek, rootToken: token, env: { CONFIG_SIDECAR_DATABASE_URL: restoredUrl } });
    t.after(async () => {
      await again.stop('SIGKILL');
      await removeDir(again.dataDir);
    });
    const read = await http(again.httpUrl, 'GET', '/v1/items/dump/app/settings', { token });
    assert.deepEqual(read.json.value, { replicas: 3 });
    const password = await http(again.httpUrl, 'GET', '/v1/items/dump/app/password', { token });
    assert.equal(password.json.value, 'restore-me');
  });

  test('a corrupted row in PostgreSQL answers 500 decryption_failed on every replica; other items still read', async (t) => {
    const url = await cluster.createDatabase();
    const set = replicaSet(t, url);
    const [a, b] = await Promise.all([set.start(), set.start()]);
    const token = set.rootToken;
    assert.equal((await putItem(a, token, 'tamper/app/victim', { v: 'value-of-victim' })).status, 200);
    assert.equal((await putItem(a, token, 'tamper/app/bystander', { v: 1 })).status, 200);
    await cluster.query(url, "UPDATE versions SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 255) WHERE namespace = 'tamper/app' AND name = 'victim'");
    for (const server of [a, b]) {
      const res = await http(server.httpUrl, 'GET', '/v1/items/tamper/app/victim', { token });
      assert.equal(res.status, 500, res.text);
      assert.equal(res.json.error.code, 'decryption_failed');
      const other = await http(server.httpUrl, 'GET', '/v1/items/tamper/app/bystander', { token });
      assert.deepEqual(other.json.value, { v: 1 });
      assert.ok(!server.output().includes('value-of-victim'), 'no value in the logs');
    }
  });

  test('rotate --kek --database-url is refused while a replica runs (nothing re-wrapped); once they stop it re-wraps the keys; replicas start with the new KEK and refuse the old one', async (t) => {
    const url = await cluster.createDatabase();
    const set = replicaSet(t, url);
    const a = await set.start();
    const token = set.rootToken;
    const put = await http(a.httpUrl, 'PUT', '/v1/items/kek/app/secret', { token, body: { kind: 'secret', value: 'keep-me' } });
    assert.equal(put.status, 200, put.text);
    const newKek = randomBytes(32).toString('base64');
    const wrappedBy = async (): Promise<string[]> => (await cluster.query(url, 'SELECT DISTINCT kek_id FROM deks')).map((r) => String(r.kek_id));
    const wrappedAtFirst = await wrappedBy();

    // Offline commands under a live replica would leave it writing with the old keys: refused, naming what to do.
    for (const args of [['rotate', '--kek'], ['rotate', '--reseal-history']]) {
      const refused = await runCli([...args, '--database-url', url], { CONFIG_SIDECAR_KEK: set.kek, CONFIG_SIDECAR_NEW_KEK: newKek });
      assert.equal(refused.code, 1, `${args.join(' ')}: ${refused.stderr}`);
      assert.match(refused.stderr, /Server replicas are running on this PostgreSQL database \(--database-url; \d+ session\(s\) named config-sidecar/);
      assert.match(refused.stderr, /stop every replica first \(kubectl scale deployment\/config-sidecar-server --replicas=0\), run it again/);
      assert.doesNotMatch(refused.stdout, /re-wrapped|re-sealed/);
    }
    assert.deepEqual(await wrappedBy(), wrappedAtFirst, 'no data key was re-wrapped');
    assert.equal((await http(a.httpUrl, 'GET', '/v1/items/kek/app/secret', { token })).json.value, 'keep-me', 'the replica goes on serving');
    assert.equal(await a.stop(), 0);

    const run = promisify(execFile);
    const rotated = await run(process.execPath, [CLI, 'rotate', '--kek', '--database-url', url], {
      env: { PATH: process.env.PATH ?? '', CONFIG_SIDECAR_KEK: set.kek, CONFIG_SIDECAR_NEW_KEK: newKek },
    });
    assert.match(rotated.stdout, /re-wrapped 1 data key/);
    const dir = await mkdtemp(join(tmpdir(), 'cs-pg-kek-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const [b, c] = await Promise.all(
      ['b', 'c'].map((name) => startServerProcess({ dataDir: join(dir, name), kek: newKek, rootToken: token, env: { CONFIG_SIDECAR_DATABASE_URL: url } })),
    );
    t.after(async () => {
      await b?.stop('SIGKILL');
      await c?.stop('SIGKILL');
    });
    for (const server of [b, c] as ServerProcess[]) {
      assert.equal((await http(server.httpUrl, 'GET', '/v1/items/kek/app/secret', { token })).json.value, 'keep-me');
    }
    await assert.rejects(startServerProcess({ dataDir: join(dir, 'old'), kek: set.kek, env: { CONFIG_SIDECAR_DATABASE_URL: url } }), /KEK/);
  });

  test('a malformed or unreachable --database-url stops start-up with an error naming the setting, without the password', async () => {
    const run = promisify(execFile);
    const start = async (url: string): Promise<{ code: number; stderr: string }> => {
      try {
        await run(process.execPath, [CLI, 'server', '--http-listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0'], {
          env: { PATH: process.env.PATH ?? '', CONFIG_SIDECAR_KEK: Buffer.alloc(32, 7).toString('base64'), CONFIG_SIDECAR_DATABASE_URL: url },
          timeout: 30_000,
        });
        return { code: 0, stderr: '' };
      } catch (err) {
        const e = err as { code?: number; stderr?: string; stdout?: string };
        return { code: e.code ?? -1, stderr: `${e.stderr ?? ''}${e.stdout ?? ''}` };
      }
    };
    const cases = [
      { url: 'not a url', expect: /--database-url/ },
      { url: 'mysql://user:s3cret-pw@127.0.0.1/db', expect: /--database-url.*postgres:\/\// },
      { url: 'postgres://user:s3cret-pw@127.0.0.1:1/db', expect: /--database-url.*cannot reach PostgreSQL at 127\.0\.0\.1:1\/db/ },
    ];
    const results = await Promise.all(cases.map((c) => start(c.url)));
    results.forEach((result, i) => {
      const c = cases[i] as (typeof cases)[number];
      assert.notEqual(result.code, 0, `${c.url} must stop start-up`);
      assert.match(result.stderr, c.expect);
      assert.doesNotMatch(result.stderr, /s3cret-pw/, 'the password is never printed');
    });
  });
});
