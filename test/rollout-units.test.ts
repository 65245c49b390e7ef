/**
 * The pure parts of staged rollouts, without processes: canary selection
 * (count, order, a superset as the percentage grows), the health verdict
 * (rollback, hold, advance, a canary that never applied), the routes, the
 * agent's POST /v1/health decision and body, and the loopback rule for
 * --app-health-url.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canaryHash, chooseCanaries, eligibleAgents } from '../src/server/rollouts/canary-selection.ts';
import { DatabaseSync } from 'node:sqlite';
import { canaryStatuses, healthVerdict, STREAM_DOWN_GRACE_MS, type CanaryReport } from '../src/server/rollouts/health-verdict.ts';
import { heardFrom, SILENT_AFTER_MS } from '../src/server/fleet/report-silence.ts';
import { sqlAgentReports } from '../src/server/store/agent-reports.ts';
import type { SqlParam, SqlRow } from '../src/server/store/sql-store.ts';
import { reportFromWire, reportToWire } from '../src/shared/fleet-proto.ts';
import { canaryLevels } from '../src/cli/rollout.ts';
import type { RolloutRecord } from '../src/server/rollouts/rollout-record.ts';
import { parseRoute } from '../src/server/rest/routes.ts';
import { handleDataRequest, type HandlerDeps } from '../src/agent/request-handler.ts';
import { parseHealthBody } from '../src/agent/app-health.ts';
import { loopbackUrlProblem } from '../src/shared/loopback-url.ts';
import { resolveAgentSettings } from '../src/agent/agent-settings.ts';
import { AppError } from '../src/shared/errors.ts';

test('canaries: ceil(p × n / 100) of the eligible agents with the smallest hash(rollout, agent); a later step keeps them', () => {
  const ids = Array.from({ length: 10 }, (_, i) => `pod-${i}`);
  const byHash = [...ids].sort((a, b) => (canaryHash('ro-1', a) < canaryHash('ro-1', b) ? -1 : 1));
  assert.deepEqual(chooseCanaries('ro-1', ids, 10), byHash.slice(0, 1));
  assert.deepEqual(chooseCanaries('ro-1', ids, 25), byHash.slice(0, 3), 'ceil(2.5) = 3');
  const step1 = chooseCanaries('ro-1', ids, 30);
  const step2 = chooseCanaries('ro-1', ids, 60, step1);
  assert.equal(step2.length, 6);
  assert.ok(step1.every((id) => step2.includes(id)));
  assert.deepEqual(chooseCanaries('ro-1', [], 50), []);
  const byHash2 = [...ids].sort((a, b) => (canaryHash('ro-2', a) < canaryHash('ro-2', b) ? -1 : 1));
  assert.deepEqual(chooseCanaries('ro-2', ids, 30), byHash2.slice(0, 3), 'another rollout picks by its own hash');
  const agents = [
    { id: 'a', prefixes: ['team-a'], connected: true },
    { id: 'b', prefixes: ['team-a/app'], connected: true },
    { id: 'c', prefixes: ['team-b'], connected: true },
    { id: 'd', prefixes: ['team-a'], connected: false },
    { id: 'e', prefixes: ['team-ab'], connected: true },
  ];
  assert.deepEqual(eligibleAgents(agents, ['team-a/app/flag']), ['a', 'b'], 'connected, prefixes covering the item by whole segments');
});

const record = (over: Partial<RolloutRecord> = {}): RolloutRecord => ({
  id: 'ro-1',
  state: 'rolling',
  steps: [30, 100],
  step: 0,
  bakeSeconds: 60,
  maxUnhealthy: 0,
  items: ['team-a/app/flag'],
  canary: ['a1', 'a2'],
  unhealthy: [],
  createdAt: 0,
  createdBy: 'root',
  stepStartedAt: 1_000,
  revision: 5,
  candidate: [],
  ...over,
});
const report = (id: string, over: Partial<CanaryReport> = {}): [string, CanaryReport] => [
  id,
  { id, appliedRevision: 5, connected: true, health: 'ok', appHealth: 'unknown', appHealthRevision: 5, healthReason: '', ...over },
];

test('health verdict: more than maxUnhealthy unhealthy canaries roll back at once; health before the candidate applied does not count; the bake end counts a canary that never applied', () => {
  const healthy = new Map([report('a1'), report('a2')]);
  assert.equal(healthVerdict(record(), healthy, 2_000).kind, 'hold', 'baking');
  assert.equal(healthVerdict(record(), healthy, 61_000).kind, 'advance');
  const sick = new Map([report('a1', { appHealth: 'unhealthy', healthReason: 'db down' }), report('a2')]);
  const verdict = healthVerdict(record(), sick, 2_000);
  assert.equal(verdict.kind, 'rollback');
  assert.deepEqual(verdict.unhealthy, [{ agent: 'a1', reason: 'db down' }]);
  assert.match(verdict.kind === 'rollback' ? verdict.reason : '', /1 canary agent\(s\) unhealthy, more than maxUnhealthy 0: a1 \(db down\)/);
  assert.equal(healthVerdict(record({ maxUnhealthy: 1 }), sick, 2_000).kind, 'hold', 'within maxUnhealthy');
  const before = new Map([report('a1', { appHealth: 'unhealthy', appHealthRevision: 4 }), report('a2')]);
  assert.equal(healthVerdict(record(), before, 2_000).kind, 'hold', 'a signal observed before the change is not blamed on it');
  const notApplied = new Map([report('a1', { appHealth: 'unhealthy', appliedRevision: 4 }), report('a2')]);
  assert.equal(healthVerdict(record(), notApplied, 2_000).kind, 'hold', 'nothing counts before the canary applied the change');
  const late = healthVerdict(record(), notApplied, 61_000);
  assert.equal(late.kind, 'rollback');
  assert.deepEqual(late.unhealthy, [{ agent: 'a1', reason: 'did not apply the candidate within bakeSeconds' }]);
  assert.equal(healthVerdict(record({ state: 'paused' }), healthy, 61_000).kind, 'hold', 'a paused rollout does not advance');
  assert.equal(healthVerdict(record({ state: 'paused' }), sick, 2_000).kind, 'rollback', 'but still rolls back');
  const down = new Map([report('a1', { connected: false, downSince: 2_000 - STREAM_DOWN_GRACE_MS }), report('a2', { health: 'degraded', healthReason: 'serving stale' })]);
  assert.deepEqual(healthVerdict(record({ maxUnhealthy: 5 }), down, 2_000).unhealthy, [
    { agent: 'a1', reason: 'watch stream down' },
    { agent: 'a2', reason: 'agent degraded: serving stale' },
  ]);
});

test('health verdict: a canary whose stream just went down (a server restart) is not blamed within the grace, but holds the rollout; after it, it counts', () => {
  const justDown = new Map([report('a1', { connected: false, health: 'degraded', healthReason: 'watch stream down', downSince: 1_000 }), report('a2')]);
  assert.deepEqual(healthVerdict(record(), justDown, 2_000), { kind: 'hold', unhealthy: [] }, 'within the grace');
  assert.deepEqual(healthVerdict(record(), new Map([report('a1', { connected: false }), report('a2')]), 2_000), { kind: 'hold', unhealthy: [] }, 'first seen down now');
  assert.equal(healthVerdict(record(), new Map([report('a1', { connected: false, downSince: 50_000 }), report('a2')]), 61_000).kind, 'hold', 'the bake end does not advance past a canary that is reconnecting');
  const long = healthVerdict(record(), justDown, 1_000 + STREAM_DOWN_GRACE_MS);
  assert.equal(long.kind, 'rollback');
  assert.deepEqual(long.unhealthy, [{ agent: 'a1', reason: 'watch stream down' }]);
});

test('health verdict: a canary silent longer than three report intervals counts as stream down whatever its last report said (applied or not), with the same grace; shown as silent; never picked', () => {
  const lastSeen = 1_000;
  const quiet = (over: Partial<CanaryReport> = {}) => new Map([report('a1', { lastSeen, ...over }), report('a2')]);
  assert.equal(SILENT_AFTER_MS, 30_000, 'three of the agents\' 10 s report intervals');
  assert.deepEqual(healthVerdict(record(), quiet(), lastSeen + SILENT_AFTER_MS), { kind: 'hold', unhealthy: [] }, 'not silent yet: still baking');
  assert.deepEqual(healthVerdict(record(), quiet(), lastSeen + SILENT_AFTER_MS + 1), { kind: 'hold', unhealthy: [] }, 'silent, within the grace');
  assert.equal(healthVerdict(record(), quiet({ lastSeen: 10_000 }), 61_000).kind, 'hold', 'the bake end does not advance past a silent canary within the grace');
  const gone = healthVerdict(record(), quiet(), lastSeen + SILENT_AFTER_MS + STREAM_DOWN_GRACE_MS);
  assert.equal(gone.kind, 'rollback');
  assert.deepEqual(gone.unhealthy, [{ agent: 'a1', reason: 'silent: no report since 1970-01-01T00:00:01.000Z' }]);
  assert.match(gone.kind === 'rollback' ? gone.reason : '', /a1 \(silent: no report since 1970-01-01T00:00:01\.000Z\)/);
  assert.equal(healthVerdict(record(), quiet({ appliedRevision: 4 }), lastSeen + SILENT_AFTER_MS + STREAM_DOWN_GRACE_MS).kind, 'rollback', 'a canary that never applied and went silent does not wait for the bake end');
  assert.equal(healthVerdict(record(), quiet({ downSince: 50_000 }), 50_000 + STREAM_DOWN_GRACE_MS - 1).kind, 'hold', 'a replica that started driving later gives the grace from then');
  assert.equal(healthVerdict(record({ maxUnhealthy: 1 }), quiet(), 100_000).kind, 'advance', 'within maxUnhealthy');
  assert.deepEqual(healthVerdict(record(), new Map([report('a1', { lastSeen: 60_000 }), report('a2', { lastSeen: 60_000 })]), 61_000), { kind: 'advance', unhealthy: [] }, 'fresh reports');

  const [status] = canaryStatuses(record({ canary: ['a1'] }), quiet(), lastSeen + SILENT_AFTER_MS + 1);
  assert.deepEqual(status, { agent: 'a1', reporting: true, lastReport: '1970-01-01T00:00:01.000Z', silent: true, connected: false, applied: true, files: 'none', appHealth: 'unknown' });
  assert.equal(canaryLevels(status as NonNullable<typeof status>), 'stream down (silent: no report since 1970-01-01T00:00:01.000Z), applied, app health unknown');
  assert.equal(canaryStatuses(record({ canary: ['a1'] }), quiet(), lastSeen + 1_000)[0]?.connected, true);

  const fleet = [
    { id: 'a', prefixes: ['team-a'], connected: true, lastSeen: 1_000 },
    { id: 'b', prefixes: ['team-a'], connected: true, lastSeen: 40_000 },
  ];
  assert.deepEqual(eligibleAgents(fleet.map((r) => heardFrom(r, 45_000)), ['team-a/app/flag']), ['b'], 'a silent agent is not picked as a canary');
});

test('routes: /v1/rollouts GET lists, POST starts; /{id} GET; /{id}/{action} POST; anything else is a clear 404/405', () => {
  assert.deepEqual(parseRoute('GET', '/v1/rollouts'), { op: 'rollouts' });
  assert.deepEqual(parseRoute('POST', '/v1/rollouts'), { op: 'rolloutStart' });
  assert.deepEqual(parseRoute('GET', '/v1/rollouts/ro-0123456789ab'), { op: 'rollout', id: 'ro-0123456789ab' });
  assert.deepEqual(parseRoute('POST', '/v1/rollouts/ro-1/abort'), { op: 'rolloutAction', id: 'ro-1', action: 'abort' });
  assert.deepEqual(parseRoute('GET', '/v1/items/team-a/app/flag?rollout=ro-1'), { op: 'getItem', ref: { namespace: 'team-a/app', name: 'flag' }, env: undefined, rollout: 'ro-1' });
  const code = (fn: () => unknown): string => {
    try {
      fn();
      return 'ok';
    } catch (err) {
      return (err as AppError).code;
    }
  };
  assert.equal(code(() => parseRoute('DELETE', '/v1/rollouts')), 'method_not_allowed');
  assert.equal(code(() => parseRoute('GET', '/v1/rollouts/ro-1/abort')), 'method_not_allowed');
  assert.equal(code(() => parseRoute('POST', '/v1/rollouts/ro-1/explode')), 'not_found');
  assert.equal(code(() => parseRoute('GET', '/v1/rollouts/RO<1>')), 'not_found');
  assert.equal(code(() => parseRoute('PUT', '/v1/items/team-a/app/flag?rollout=ro-1')), 'invalid_argument');
  assert.equal(code(() => parseRoute('GET', '/v1/items/team-a/app/flag?rollout=%3Cx%3E')), 'invalid_argument');
});

test('agent data API: POST /v1/health is the one POST (its body read by the listener); the body is checked with a clear message', () => {
  const deps = { prefixes: () => ['team-a'], podToken: Buffer.from('t'), env: 'prod' } as unknown as HandlerDeps;
  const post = (url: string, listener: 'socket' | 'tcp' = 'socket', headers: Record<string, string> = {}) =>
    handleDataRequest({ method: 'POST', url, headers: { 'content-length': '30', ...headers }, listener }, deps);
  assert.deepEqual(post('/v1/health'), { kind: 'health' });
  assert.equal((post('/v1/items/team-a/x') as { status: number }).status, 405);
  assert.equal((post('/v1/health', 'tcp') as { status: number }).status, 401, 'the TCP listener wants the pod token');
  assert.deepEqual(post('/v1/health', 'tcp', { 'x-config-sidecar-token': 't' }), { kind: 'health' });
  assert.equal((handleDataRequest({ method: 'GET', url: '/v1/health', headers: {}, listener: 'socket' }, deps) as { status: number }).status, 405);
  assert.deepEqual(parseHealthBody(Buffer.from('{"healthy":false,"reason":"db pool exhausted"}')), { healthy: false, reason: 'db pool exhausted' });
  assert.deepEqual(parseHealthBody(Buffer.from('{"healthy":true}')), { healthy: true, reason: '' });
  assert.throws(() => parseHealthBody(Buffer.from('nope')), (e: unknown) => e instanceof AppError && e.code === 'invalid_json');
  assert.throws(() => parseHealthBody(Buffer.from(JSON.stringify({ healthy: false, reason: 'x'.repeat(201) }))), /reason/);
  assert.throws(() => parseHealthBody(Buffer.from(JSON.stringify({ healthy: false, reason: 'line\nbreak' }))), /printable/);
  assert.throws(() => parseHealthBody(Buffer.from('{"healthy":false,"extra":1}')), (e: unknown) => e instanceof AppError && e.code === 'invalid_argument');
});

test('--app-health-url: loopback http(s) only, named in the error', () => {
  assert.equal(loopbackUrlProblem('http://127.0.0.1:8080/healthz'), undefined);
  assert.equal(loopbackUrlProblem('http://localhost/ready'), undefined);
  assert.equal(loopbackUrlProblem('https://[::1]:8443/'), undefined);
  assert.match(loopbackUrlProblem('http://10.1.2.3/healthz') ?? '', /loopback only/);
  assert.match(loopbackUrlProblem('file:///etc/passwd') ?? '', /http/);
  assert.match(loopbackUrlProblem('http://user:pw@127.0.0.1/') ?? '', /credentials/);
  const base = { server: ['http://127.0.0.1:1'], serverGrpc: ['127.0.0.1:2'], prefix: ['team-a'] };
  assert.equal(resolveAgentSettings({ ...base, appHealthUrl: 'http://127.0.0.1:9/h' }).appHealthUrl, 'http://127.0.0.1:9/h');
  assert.throws(() => resolveAgentSettings({ ...base, appHealthUrl: 'http://example.com/h' }), /--app-health-url.*loopback only/);
});

test('files published as a health level: a canary rendering files is applied only once its files revision reaches the rollout; the bake end names its files; the level list, the wire and the stored report carry it', async () => {
  const filesBehind = new Map([report('a1', { rendersFiles: true, filesRevision: 4 }), report('a2')]);
  assert.equal(healthVerdict(record(), filesBehind, 2_000).kind, 'hold');
  const late = healthVerdict(record(), filesBehind, 61_000);
  assert.equal(late.kind, 'rollback');
  assert.deepEqual(late.unhealthy, [{ agent: 'a1', reason: 'did not publish its files at revision 5 within bakeSeconds (published at 4)' }]);
  assert.equal(healthVerdict(record(), new Map([report('a1', { rendersFiles: true, filesRevision: 5 }), report('a2')]), 61_000).kind, 'advance');
  assert.equal(healthVerdict(record(), new Map([report('a1', { filesRevision: 0 }), report('a2')]), 61_000).kind, 'advance', 'an agent rendering no files (or an older one) is applied at its applied revision');

  assert.deepEqual(
    canaryStatuses(record({ canary: ['a1', 'a2', 'a3'] }), new Map([report('a1', { rendersFiles: true, filesRevision: 4, appHealth: 'healthy' }), report('a2', { appHealth: 'unhealthy', appHealthRevision: 4 })]), 2_000),
    [
      { agent: 'a1', reporting: true, connected: true, applied: true, files: 'pending', appHealth: 'healthy' },
      { agent: 'a2', reporting: true, connected: true, applied: true, files: 'none', appHealth: 'unknown' },
      { agent: 'a3', reporting: false, connected: false, applied: false, files: 'none', appHealth: 'unknown' },
    ],
  );
  assert.equal(canaryLevels({ agent: 'a1', reporting: true, connected: true, applied: true, files: 'pending', appHealth: 'healthy' }), 'connected, applied, files not published yet, app healthy');

  const base = { agentId: 'a1', prefixes: ['team-a'], appliedRevision: 7, storeId: 's', connected: true, health: 'ok' as const, rollouts: [] };
  assert.deepEqual(reportFromWire(reportToWire({ ...base, rendersFiles: true, filesRevision: 6 })), { ...base, appHealth: 'unknown', healthReason: '', appHealthRevision: 0, rendersFiles: true, filesRevision: 6 });
  assert.equal(reportFromWire(reportToWire(base)).rendersFiles, undefined, 'an agent without files (or from before v1.4) renders none');

  // The PostgreSQL table's encoding, on the embedded engine's SQL (no migration: the app_health column carries it).
  const db = new DatabaseSync(':memory:');
  db.exec("CREATE TABLE agent_reports (id TEXT PRIMARY KEY, subject TEXT, prefixes TEXT, applied_revision BIGINT, store_id TEXT, connected INTEGER, health TEXT, rollouts TEXT, last_seen BIGINT, app_health TEXT NOT NULL DEFAULT 'unknown', health_reason TEXT NOT NULL DEFAULT '')");
  const conn = { all: async (sql: string, params: readonly SqlParam[] = []) => db.prepare(sql).all(...(params as never[])) as SqlRow[], run: async (sql: string, params: readonly SqlParam[] = []) => Number(db.prepare(sql).run(...(params as never[])).changes), exec: async (sql: string) => void db.exec(sql) };
  const table = sqlAgentReports((fn) => fn(conn), (sql) => sql);
  const row = { id: 'a1', subject: 'pod', prefixes: ['team-a'], appliedRevision: 7, storeId: 's', connected: true, health: 'ok' as const, rollouts: [], lastSeen: 1, appHealth: 'healthy' as const, appHealthRevision: 6, healthReason: '' };
  await table.upsert({ ...row, rendersFiles: true, filesRevision: 5 });
  await table.upsert({ ...row, id: 'a2' });
  const [a1, a2] = await table.seenSince(0);
  assert.deepEqual([a1?.appHealth, a1?.appHealthRevision, a1?.rendersFiles, a1?.filesRevision], ['healthy', 6, true, 5]);
  assert.deepEqual([a2?.appHealth, a2?.appHealthRevision, a2?.rendersFiles], ['healthy', 6, undefined]);
  db.close();
});
