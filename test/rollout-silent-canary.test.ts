/**
 * A canary that stops reporting must not count as healthy. Real server and
 * three real agents (as uid 65532 in a pod where the harness can); the
 * server's clock is moved by its test hook in report-interval steps with the
 * agents' report clocks following (helpers/fleet-time.ts), so a live agent
 * reports just as it would had the time really passed. A live canary keeps the rollout going past the bake; a canary whose
 * process is killed mid-bake goes silent: its last report (connected,
 * applied) stops counting once it is older than the silence bound, it shows
 * as silent in GET /v1/rollouts/{id} and `rollout status`, and after the
 * stream-down grace the rollout rolls back with a reason naming it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AgentView } from '../src/shared/fleet-proto.ts';
import type { RolloutView } from '../src/shared/protocol.ts';
import { SILENT_AFTER_MS } from '../src/server/fleet/report-silence.ts';
import { STREAM_DOWN_GRACE_MS } from '../src/server/rollouts/health-verdict.ts';
import { socketGet, startAgentProcess, type AgentProcess } from './helpers/agent-process.ts';
import { passFleetTime } from './helpers/fleet-time.ts';
import type { ServerProcess } from './helpers/server-process.ts';
import { cleanupStack, restApi, runCli, startRolloutServer, until } from './helpers/rollout-stack.ts';

const ITEM = 'team-a/app/flag';

let server: ServerProcess | undefined;
const agents = new Map<string, AgentProcess>();

const cleanup = cleanupStack();

function srv(): ServerProcess {
  assert.ok(server);
  return server;
}

const api = restApi(srv);

async function rollout(id: string): Promise<RolloutView> {
  const res = await api('GET', `/v1/rollouts/${id}`);
  assert.equal(res.status, 200, res.text);
  return res.json as RolloutView;
}

async function fleet(): Promise<AgentView[]> {
  return ((await api('GET', '/v1/agents')).json?.agents ?? []) as AgentView[];
}

const passTime = (ms: number): Promise<void> => passFleetTime(srv(), agents, ms);

/** Waits until each of `ids` serves `value`: reads, as the application would (an agent fetches the candidate when it is read). */
function servedBy(ids: readonly string[], value: string): Promise<true> {
  return until(`${ids.join(', ')} serve ${value}`, async () => {
    for (const id of ids) if ((await socketGet((agents.get(id) as AgentProcess).socketPath, `/v1/items/${ITEM}`)).json?.value !== value) return undefined;
    return true;
  });
}

/** Waits until GET /v1/rollouts/{id} shows every canary connected with the candidate applied. */
function allApplied(id: string): Promise<RolloutView> {
  return until(`${id}: every canary applied`, async () => {
    const r = await rollout(id);
    return r.canaryStatus?.length === r.canary.length && r.canaryStatus.every((c) => c.connected && c.applied) ? r : undefined;
  });
}

test('a live canary keeps the rollout going past the bake; a canary killed mid-bake goes silent, shows so, and rolls the rollout back naming it', async () => {
  ({ server } = await startRolloutServer(cleanup, ITEM, 'v1'));
  cleanup(async () => {
    for (const a of agents.values()) await a.stop('SIGKILL');
  });
  for (const id of ['a1', 'a2', 'a3']) agents.set(id, await startAgentProcess(srv(), { prefixes: ['team-a'], prefetch: [ITEM], args: ['--agent-id', id] }));
  await until('three agents connected', async () => ((await fleet()).filter((a) => a.connected).length === 3 ? true : undefined));

  const started = await api('POST', '/v1/rollouts', { changes: [{ item: ITEM, kind: 'config', value: 'v2' }], steps: [30, 60, 100], bakeSeconds: 60, maxUnhealthy: 0 });
  assert.equal(started.status, 201, started.text);
  const view = started.json as RolloutView;
  assert.equal(view.canary.length, 1);
  await servedBy(view.canary, 'v2');
  await allApplied(view.id);

  // --- a live canary: the bake passes (its reports stay fresh, as a live agent's do) → the next step ---
  await passTime(61_000);
  const second = await until('step 2 at 60%', async () => {
    const r = await rollout(view.id);
    return r.step === 1 || r.state !== 'rolling' ? r : undefined;
  });
  assert.equal(second.state, 'rolling', JSON.stringify(second));
  assert.equal(second.canary.length, 2, 'ceil(60 × 3 / 100) = 2');
  await servedBy(second.canary, 'v2');
  await allApplied(view.id);

  // --- one canary's process is killed mid-bake: its last report said connected and applied ---
  const silent = second.canary[0] as string;
  const live = second.canary[1] as string;
  await (agents.get(silent) as AgentProcess).stop('SIGKILL');
  const lastSeen = Date.parse((await fleet()).find((a) => a.id === silent)?.lastSeen ?? '');

  // Past the silence bound but within the grace: held, and shown as silent (the live canary is not).
  await passTime(SILENT_AFTER_MS + 1_000);
  const held = await rollout(view.id);
  assert.equal(held.state, 'rolling', JSON.stringify(held));
  assert.equal(held.step, 1);
  const status = held.canaryStatus?.find((c) => c.agent === silent);
  assert.deepEqual({ connected: status?.connected, silent: status?.silent, lastReport: status?.lastReport }, { connected: false, silent: true, lastReport: new Date(lastSeen).toISOString() });
  assert.equal(held.canaryStatus?.find((c) => c.agent === live)?.silent, undefined, 'the live canary is not silent');
  const cli = await runCli(srv(), ['rollout', 'status', view.id]);
  assert.equal(cli.code, 0, cli.output);
  assert.match(cli.output, new RegExp(`${silent}: stream down \\(silent: no report since ${new Date(lastSeen).toISOString()}\\), applied`));

  // Past the grace (and the bake): rolled back, naming the silent canary and only it.
  await passTime(STREAM_DOWN_GRACE_MS + 1_000);
  const rolledBack = await until('rolled back', async () => {
    const r = await rollout(view.id);
    return r.state !== 'rolling' ? r : undefined;
  });
  assert.equal(rolledBack.state, 'rolled_back', JSON.stringify(rolledBack));
  assert.deepEqual(rolledBack.unhealthy.map((u) => u.agent), [silent]);
  assert.match(rolledBack.reason ?? '', new RegExp(`${silent} \\(silent: no report since ${new Date(lastSeen).toISOString()}`));
  agents.delete(silent);
  await servedBy([...agents.keys()], 'v1');
});
