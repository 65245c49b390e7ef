/**
 * The audit log stays bounded and its health is visible: refused requests
 * (REST and Watch opens) are folded into aggregate rows, retention by age and row count runs at start
 * (and every minute), and /readyz is not-ready while audit rows cannot be
 * written (secret reads are refused then), ready again once they can.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { GrpcStatus } from '../src/shared/errors.ts';
import { http, metricValue, openWatch, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

const DAY_MS = 24 * 60 * 60 * 1000;
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function start(options: Parameters<typeof startServerProcess>[0] = {}): Promise<ServerProcess> {
  const s = await startServerProcess(options);
  cleanups.push(() => s.stop('SIGKILL'));
  return s;
}

function db<T>(s: ServerProcess, fn: (d: DatabaseSync) => T): T {
  const d = new DatabaseSync(join(s.dataDir, 'config-sidecar.db'));
  try {
    return fn(d);
  } finally {
    d.close();
  }
}

/** Re-reads `probe` until it holds (the thing awaited is a row another process writes), bounded in time. */
async function eventually<T>(probe: () => T | Promise<T>, holds: (v: T) => boolean, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (holds(v)) return v;
    if (Date.now() > deadline) assert.fail(`${what}: last ${JSON.stringify(v)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test('300 unauthenticated requests write one audit row at once and one aggregate row when the window ends', async () => {
  const s = await start();
  cleanups.push(() => removeDir(s.dataDir));
  for (let i = 0; i < 300; i++) {
    const res = await http(s.httpUrl, 'GET', `/v1/items/team/app/x${i}`, { token: `wrong-token-${i}` });
    assert.equal(res.status, 401);
  }
  const rows = () => db(s, (d) => d.prepare("SELECT target, detail FROM audit_log WHERE subject = '(unauthenticated)' ORDER BY id").all() as Array<{ target: string; detail: string }>);
  assert.equal(rows().length, 1, 'one row for the first refusal, not 300');
  assert.equal((await http(s.adminUrl, 'POST', '/test/clock/advance?ms=61000')).status, 200);
  const aggregated = await eventually(rows, (r) => r.length === 2, 'the aggregate row');
  assert.match(aggregated[1]?.detail ?? '', /unauthenticated; 299 more within 60s \(aggregated\)/);
});

test('Watch opens refused for a bad or missing token are audited: one row per source and reason at once, a count when the window ends, never the token', async () => {
  const s = await start();
  cleanups.push(() => removeDir(s.dataDir));
  const refused = async (token: string | undefined, prefix: string) => {
    const watch = openWatch(s.grpcAddress, { prefixes: [prefix] }, token);
    const status = await watch.status;
    watch.close();
    assert.equal(status.code, GrpcStatus.UNAUTHENTICATED, status.details);
  };
  // A fleet with a wrong token (each pod its own) and one with none at all.
  for (let i = 0; i < 40; i++) await refused(`wrong-token-${i}-0123456789abcdef`, `team-${i}`);
  for (let i = 0; i < 15; i++) await refused(undefined, 'team-x');
  const rows = () =>
    db(s, (d) => d.prepare("SELECT subject, action, target, outcome, detail FROM audit_log WHERE subject = '(unauthenticated)' ORDER BY id").all() as Array<Record<string, string>>);
  const first = rows();
  assert.deepEqual(
    first.map((r) => [r.action, r.outcome, r.target, r.detail]),
    [
      ['denied', 'denied', 'team-0', 'watch unauthenticated from 127.0.0.1: The bearer token is not recognised.'],
      ['denied', 'denied', 'team-x', 'watch unauthenticated from 127.0.0.1: Send "Authorization: Bearer <token>".'],
    ],
    'the first refusal of each reason from this source is written at once; the other 53 are counted',
  );
  assert.equal(await metricValue(s.adminUrl, 'config_sidecar_server_watch_refused_total', 'reason="unauthenticated"'), 55);

  assert.equal((await http(s.adminUrl, 'POST', '/test/clock/advance?ms=61000')).status, 200);
  const all = await eventually(rows, (r) => r.length === 4, 'the aggregate rows');
  assert.deepEqual(
    all.slice(2).map((r) => r.detail).sort(),
    [
      'watch unauthenticated from 127.0.0.1: Send "Authorization: Bearer <token>".; 14 more within 60s (aggregated)',
      'watch unauthenticated from 127.0.0.1: The bearer token is not recognised.; 39 more within 60s (aggregated)',
    ],
  );
  const everything = db(s, (d) => JSON.stringify(d.prepare('SELECT * FROM audit_log').all()));
  assert.doesNotMatch(everything, /wrong-token/, 'no token in any audit row');
});

test('retention at start: rows older than --audit-retain-age go, then all but the newest --audit-max-rows', async () => {
  const first = await start();
  cleanups.push(() => removeDir(first.dataDir));
  await first.stop('SIGTERM');
  const now = Date.now();
  db(first, (d) => {
    const insert = d.prepare('INSERT INTO audit_log (at, subject, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)');
    d.exec('BEGIN');
    for (let i = 0; i < 500; i++) insert.run(now - 60 * DAY_MS, 'old', 'read', 'a/b', 'ok', '');
    for (let i = 0; i < 2_500; i++) insert.run(now - 1_000 + i / 10, 'recent', 'read', 'a/b', 'ok', `n=${i}`);
    d.exec('COMMIT');
  });
  const second = await start({ dataDir: first.dataDir, kek: first.kek, rootToken: first.rootToken, args: ['--audit-max-rows', '1000', '--audit-retain-age', '30d'] });
  const line = await second.waitForLog((l) => l.msg === 'audit log compacted');
  assert.equal(line.age, 500);
  const left = db(second, (d) => d.prepare('SELECT COUNT(*) AS n, MIN(at) AS oldest, MAX(detail) AS newest FROM audit_log').get() as { n: number; oldest: number });
  assert.ok(left.n <= 1_000 && left.n >= 999, `rows left: ${left.n}`);
  assert.ok(left.oldest > now - 30 * DAY_MS, 'nothing older than the retention age');
  const kept = db(second, (d) => d.prepare("SELECT COUNT(*) AS n FROM audit_log WHERE detail = 'n=2499'").get() as { n: number });
  assert.equal(kept.n, 1, 'the newest rows are the ones kept');
});

test('/readyz is not-ready while audit rows cannot be written (secret reads refused), and ready again once they can', async () => {
  const s = await start();
  cleanups.push(() => removeDir(s.dataDir));
  assert.equal((await http(s.httpUrl, 'PUT', '/v1/items/team/app/secret', { token: s.rootToken, body: { kind: 'secret', value: 'v' } })).status, 200);
  assert.equal((await http(s.adminUrl, 'GET', '/readyz')).status, 200);
  db(s, (d) => d.exec("CREATE TRIGGER audit_broken BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit disk broken'); END"));
  const read = await http(s.httpUrl, 'GET', '/v1/items/team/app/secret', { token: s.rootToken });
  assert.equal(read.status, 503, read.text);
  assert.equal(read.json.error.code, 'store_unavailable');
  const notReady = await http(s.adminUrl, 'GET', '/readyz');
  assert.equal(notReady.status, 503, notReady.text);
  assert.equal(notReady.json.checks.audit.ok, false);
  db(s, (d) => d.exec('DROP TRIGGER audit_broken'));
  await eventually(async () => (await http(s.adminUrl, 'GET', '/readyz')).status, (st) => st === 200, 'ready again after audit writes recover');
  assert.equal((await http(s.httpUrl, 'GET', '/v1/items/team/app/secret', { token: s.rootToken })).status, 200);
});
