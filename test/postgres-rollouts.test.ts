/**
 * Staged rollouts on PostgreSQL with two server replicas: the rollout lives
 * in the shared database, so a rollout started on one replica is listed,
 * promoted and judged on the other; agents split across the replicas; one
 * replica drives a rollout at a time (the lease in the database), and an
 * unhealthy canary reported to either replica rolls the rollout back.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { AgentView } from '../src/shared/fleet-proto.ts';
import type { RolloutView } from '../src/shared/protocol.ts';
import { startAgentProcess, type AgentProcess } from './helpers/agent-process.ts';
import type { ServerProcess } from './helpers/server-process.ts';
import { postHealth, restApi, servedBecomes as servedBecomesFor, until, type RestApi } from './helpers/rollout-stack.ts';
import { replicaSet } from './helpers/postgres-replicas.ts';
import { findPostgresBin, startThrowawayPostgres, type ThrowawayPostgres } from './helpers/store-postgres.ts';

const SKIP = findPostgresBin() ? false : 'PostgreSQL is not installed (no initdb/pg_ctl found); install postgresql to run the rollout replica test';
const ITEM = 'team-a/app/flag';
const ROLLBACK_WAIT_MS = 5_000;

describe('PostgreSQL: staged rollouts across two replicas', { skip: SKIP }, () => {
  let cluster: ThrowawayPostgres;
  const agents = new Map<string, AgentProcess>();
  before(async () => {
    cluster = await startThrowawayPostgres();
  });
  after(async () => {
    for (const a of agents.values()) await a.stop('SIGKILL');
    await cluster?.stop();
  });
  // The replicas share the set's root token.
  const api = (server: ServerProcess, ...req: Parameters<RestApi>) => restApi(server)(...req);

  /** Two replicas and a rollout of an item no agent serves (no canaries): the driver completes it after the bake. */
  async function quietRollout(t: TestContext, bakeSeconds: number): Promise<{ url: string; a: ServerProcess; b: ServerProcess; id: string }> {
    const url = await cluster.createDatabase();
    const set = replicaSet(t, url);
    const [a, b] = (await Promise.all([set.start(), set.start()])) as [ServerProcess, ServerProcess];
    assert.equal((await api(a, 'PUT', '/v1/items/quiet/app/flag', { kind: 'config', value: 1 })).status, 200);
    const started = await api(a, 'POST', '/v1/rollouts', { changes: [{ item: 'quiet/app/flag', kind: 'config', value: 2 }], steps: [50, 100], bakeSeconds, maxUnhealthy: 0 });
    assert.equal(started.status, 201, started.text);
    return { url, a, b, id: started.json.id as string };
  }

  test('30% of three agents on two replicas: one canary, listed at creation; promote on the other replica → all three; an unhealthy canary rolls the next one back', async (t) => {
    const url = await cluster.createDatabase();
    const set = replicaSet(t, url);
    const [a, b] = (await Promise.all([set.start(['--rate-limit', '0']), set.start(['--rate-limit', '0'])])) as [ServerProcess, ServerProcess];
    assert.equal((await api(a, 'PUT', `/v1/items/${ITEM}`, { kind: 'config', value: 'v1' })).status, 200);
    for (const [id, server] of [['a1', a], ['a2', a], ['a3', b]] as const) {
      agents.set(id, await startAgentProcess({ httpUrl: server.httpUrl, grpcAddress: server.grpcAddress, rootToken: set.rootToken }, { prefixes: ['team-a'], prefetch: [ITEM], args: ['--agent-id', id] }));
    }
    const servedBecomes = (what: string, expected: (id: string) => unknown): Promise<unknown> => servedBecomesFor(agents, ITEM, what, expected);
    await servedBecomes('all serve v1', () => 'v1');
    await until('three agents connected (either replica lists them)', async () => {
      const list = ((await api(b, 'GET', '/v1/agents')).json?.agents ?? []) as AgentView[];
      return ['a1', 'a2', 'a3'].every((id) => list.some((x) => x.id === id && x.connected)) ? true : undefined;
    });

    const started = await api(a, 'POST', '/v1/rollouts', { changes: [{ item: ITEM, kind: 'config', value: 'v2' }], steps: [30, 100], bakeSeconds: 3600, maxUnhealthy: 0 });
    assert.equal(started.status, 201, started.text);
    const first = started.json as RolloutView;
    assert.equal(first.canary.length, 1);
    const canary = first.canary[0] as string;
    await servedBecomes('the canary serves v2 (on whichever replica it watches)', (id) => (id === canary ? 'v2' : 'v1'));
    const onB = await api(b, 'GET', `/v1/rollouts/${first.id}`);
    assert.deepEqual({ state: onB.json.state, canary: onB.json.canary }, { state: 'rolling', canary: [canary] }, 'the other replica answers the same');
    assert.equal((await api(b, 'PUT', `/v1/items/${ITEM}`, { kind: 'config', value: 'direct' })).status, 409, 'the item is held on every replica');

    const promoted = await api(b, 'POST', `/v1/rollouts/${first.id}/promote`);
    assert.equal(promoted.status, 200, promoted.text);
    assert.equal(promoted.json.state, 'completed');
    await servedBecomes('all serve v2', () => 'v2');

    const bad = await api(b, 'POST', '/v1/rollouts', { changes: [{ item: ITEM, kind: 'config', value: 'v3' }], steps: [30, 100], bakeSeconds: 3600, maxUnhealthy: 0 });
    assert.equal(bad.status, 201, bad.text);
    const badView = bad.json as RolloutView;
    const badCanary = badView.canary[0] as string;
    await servedBecomes('the canary serves v3', (id) => (id === badCanary ? 'v3' : 'v2'));
    assert.equal((await postHealth(agents.get(badCanary) as AgentProcess, { healthy: false, reason: 'crash loop' })).status, 200);
    const rolledBack = await until(
      'rolled back',
      async () => {
        const view = (await api(a, 'GET', `/v1/rollouts/${badView.id}`)).json as RolloutView;
        return view.state === 'rolled_back' ? view : undefined;
      },
      ROLLBACK_WAIT_MS,
    );
    assert.match(rolledBack.reason ?? '', /crash loop/);
    await servedBecomes('every agent serves v2 again', () => 'v2');
    const leases = await cluster.query(url, `SELECT lease_owner FROM rollouts WHERE id = '${badView.id}'`);
    assert.match(String(leases[0]?.lease_owner), /^replica-[0-9a-f]{12}$/, 'one replica held the drive lease');
  });

  test('the replica driving a rollout is killed: the other takes its lease over when it lapses and completes the rollout', async (t) => {
    // No agent serves quiet/: no canaries; after the bake the driver completes the rollout.
    const { a, b, id } = await quietRollout(t, 3);
    const taken = (server: ServerProcess, timeoutMs: number) => server.waitForLog((l) => l.msg === 'rollout lease taken: this replica drives it' && l.rollout === id, timeoutMs).then(() => server);
    const driver = await Promise.any([taken(a, 5_000), taken(b, 5_000)]);
    const survivor = driver === a ? b : a;
    await driver.stop('SIGKILL');
    // The lease (5 s) lapses; the survivor's next tick takes it.
    await taken(survivor, 15_000);
    const done = await until('completed by the survivor', async () => {
      const view = (await api(survivor, 'GET', `/v1/rollouts/${id}`)).json as RolloutView;
      return view.state === 'completed' ? view : undefined;
    });
    assert.equal(done.percent, 100);
    assert.equal((await api(survivor, 'GET', '/v1/items/quiet/app/flag')).json.value, 2);
  });

  test('the replica driving a rollout stops gracefully (SIGTERM): it releases its lease, and the other takes the rollout over at once, not when the lease would lapse', async (t) => {
    const { url, a, b, id } = await quietRollout(t, 3600);
    const taken = (server: ServerProcess, timeoutMs: number) => server.waitForLog((l) => l.msg === 'rollout lease taken: this replica drives it' && l.rollout === id, timeoutMs).then((line) => ({ server, owner: String(line.owner) }));
    const driver = await Promise.any([taken(a, 5_000), taken(b, 5_000)]);
    const survivor = driver.server === a ? b : a;
    const takenOver = taken(survivor, 15_000);
    assert.equal(await driver.server.stop('SIGTERM'), 0);
    assert.ok(driver.server.logs.some((l) => l.msg === 'rollout leases released: another replica drives them now' && l.released === 1 && l.owner === driver.owner));
    // Before the fix the row still named the stopped driver until its lease lapsed (ROLLOUT_LEASE_MS).
    const [row] = await cluster.query(url, `SELECT lease_owner FROM rollouts WHERE id = '${id}'`);
    assert.notEqual(row?.lease_owner, driver.owner, 'the stopped replica holds no lease');
    const survivorOwner = (await takenOver).owner;
    const [held] = await cluster.query(url, `SELECT lease_owner, lease_until FROM rollouts WHERE id = '${id}'`);
    assert.equal(held?.lease_owner, survivorOwner);
    const view = (await api(survivor, 'GET', `/v1/rollouts/${id}`)).json as RolloutView;
    assert.equal(view.state, 'rolling', 'the rollout goes on, driven by the survivor');
  });
});
