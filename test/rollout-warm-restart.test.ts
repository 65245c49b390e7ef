/**
 * A canary's warm restart during a staged rollout (issues 17 + 19), with real
 * processes: a server, and one canary agent (as uid 65532 in a pod where the
 * harness can) with a memory-backed snapshot volume and a rendered env file,
 * reaching the server's gRPC port through a proxy the test cuts.
 *
 * Restarted from its snapshot while the rollout is active, the canary serves
 * the candidate only stale-marked until its stream resumes, still reports the
 * rollout it serves, and the rollout does not count it healthy (nor advance
 * past the bake) while its stream is down; once it resumed it is vouched for
 * and the rollout completes. Restarted after the rollout was aborted while it
 * was down, the candidate from its snapshot is served only stale-marked and
 * the resume replaces it (values, file, report) with the stable version.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AgentView } from '../src/shared/fleet-proto.ts';
import type { CanaryStatus, RolloutView } from '../src/shared/protocol.ts';
import { defaultPod, hook, makeAgentDir, socketGet, startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';
import { makeVolume } from './helpers/pod-harness.ts';
import { http, metricValue, removeDir } from './helpers/server-process.ts';
import { cleanupStack, startRolloutServer, until as untilWithin } from './helpers/rollout-stack.ts';
import { startTcpProxy, waitForMetric } from './helpers/tcp-proxy.ts';

const ITEM = 'team-w/app/settings';
const AGENT = 'warm-canary';
/** Agents reconnect with capped (10 s), jittered backoff after the server was unreachable. */
const WAIT_MS = 30_000;
const WRITES = 'config_sidecar_agent_snapshot_writes_total';

const cleanup = cleanupStack();
const until = <T>(what: string, probe: () => Promise<T | undefined>): Promise<T> => untilWithin(what, probe, WAIT_MS);

test('a canary restarted from its snapshot mid-rollout serves the candidate stale-marked until its stream resumes, counts healthy only after, and serves the stable version once a rollout aborted meanwhile is replayed', async () => {
  const { server, api } = await startRolloutServer(cleanup, ITEM, { flag: 'v1' });
  const grpc = await startTcpProxy(server.grpcAddress);
  cleanup(() => grpc.close());

  const pod = defaultPod();
  const dir = await makeAgentDir(pod, 'cs-rollout-warm-');
  cleanup(() => removeDir(dir));
  const snapshotDir = join(dir, 'snapshot');
  const filesDir = join(dir, 'files');
  if (pod) {
    const volumes = [await makeVolume(snapshotDir, pod.fsGroup, { medium: 'Memory', sizeBytes: 8 * 1024 * 1024 }), await makeVolume(filesDir, pod.fsGroup)];
    cleanup(async () => {
      for (const v of volumes) await v.unmount();
    });
  } else {
    await Promise.all([mkdir(snapshotDir), mkdir(filesDir)]);
  }
  const config = join(dir, 'agent.yaml');
  await writeFile(config, `files: ${JSON.stringify([{ path: 'app.env', items: [ITEM], format: 'env' }])}\n`);
  const running = new Set<AgentProcess>();
  const start = async (): Promise<AgentProcess> => {
    const agent = await startAgentProcess(
      { httpUrl: server.httpUrl, grpcAddress: grpc.address, rootToken: server.rootToken },
      { dir, prefixes: ['team-w'], prefetch: [ITEM], args: ['--agent-id', AGENT, '--config', config, '--files-dir', filesDir, '--snapshot-dir', snapshotDir, '--snapshot-interval', '200ms', '--cache-ttl', '10m'] },
    );
    running.add(agent);
    return agent;
  };
  cleanup(async () => {
    for (const a of running) await a.stop('SIGKILL');
  });
  const kill = async (agent: AgentProcess): Promise<void> => {
    await agent.stop('SIGKILL');
    running.delete(agent);
  };
  const nextSnapshot = async (agent: AgentProcess): Promise<void> => {
    const before = (await metricValue(agent.adminUrl, WRITES, 'outcome="ok"')) ?? 0;
    await waitForMetric(() => metricValue(agent.adminUrl, WRITES, 'outcome="ok"'), (v) => (v ?? 0) >= before + 1, 'a snapshot write', WAIT_MS);
  };
  const read = async (agent: AgentProcess): Promise<{ flag: string; stale: boolean }> => {
    const res = await socketGet(agent.socketPath, `/v1/items/${ITEM}`);
    assert.equal(res.status, 200, res.body.toString());
    return { flag: (res.json.value as { flag: string }).flag, stale: typeof res.headers.warning === 'string' && res.headers.warning.startsWith('110 ') };
  };
  const envFlag = async (): Promise<string> => /^FLAG=["']?([^"'\n]*)["']?$/m.exec(await readFile(join(filesDir, 'app.env'), 'utf8'))?.[1] ?? '';
  const reported = async (): Promise<AgentView | undefined> => ((await api('GET', '/v1/agents')).json?.agents as AgentView[] | undefined)?.find((a) => a.id === AGENT);
  const rollout = async (id: string): Promise<{ view: RolloutView; canary: CanaryStatus | undefined }> => {
    const res = await api('GET', `/v1/rollouts/${id}`);
    assert.equal(res.status, 200, res.text);
    const view = res.json as RolloutView;
    return { view, canary: view.canaryStatus?.find((c) => c.agent === AGENT) };
  };
  const begin = async (flag: string, bakeSeconds: number): Promise<string> => {
    const res = await api('POST', '/v1/rollouts', { changes: [{ item: ITEM, kind: 'config', value: { flag } }], steps: [50, 100], bakeSeconds, maxUnhealthy: 0 });
    assert.equal(res.status, 201, res.text);
    assert.deepEqual((res.json as RolloutView).canary, [AGENT]);
    return (res.json as RolloutView).id;
  };

  let agent = await start();
  await waitReady(agent.adminUrl);
  await until('the agent reports', async () => ((await reported())?.connected ? true : undefined));

  // --- 1. restarted while the rollout is active ---
  const r1 = await begin('v2', 10);
  await until('the canary applied the candidate and published its file', async () => ((await rollout(r1)).canary?.files === 'published' && (await reported())?.rollouts.some((r) => r.rollout === r1) ? true : undefined));
  assert.deepEqual(await read(agent), { flag: 'v2', stale: false });
  await nextSnapshot(agent);
  await kill(agent);
  grpc.cut();
  agent = await start();
  assert.deepEqual(await read(agent), { flag: 'v2', stale: true }, 'from the snapshot: the candidate, stale-marked until the stream vouches for it');
  assert.equal(await envFlag(), 'v2');
  // The stream stays down (paused); the reports get through again: the server hears the restarted canary.
  await hook(agent.adminUrl, 'POST', '/debug/stream/pause');
  grpc.restore();
  const down = await until('the restarted canary reports, stream down, still serving the rollout', async () => {
    const view = await reported();
    return view && !view.connected && view.rollouts.some((r) => r.rollout === r1) ? view : undefined;
  });
  assert.ok(down.appliedRevision > 0);
  const { lastReport, ...levels } = (await rollout(r1)).canary ?? { agent: 'none', lastReport: undefined };
  assert.deepEqual(levels, { agent: AGENT, reporting: true, connected: false, applied: true, files: 'published', appHealth: 'unknown' });
  assert.ok(lastReport !== undefined && Date.parse(lastReport) >= Date.parse(down.lastSeen), 'when it last reported: since it restarted');
  // The bake passes while it is down (within the 30 s grace): it does not count as healthy, so no advance.
  assert.equal((await http(server.adminUrl, 'POST', '/test/clock/advance?ms=11000')).status, 200);
  const holdUntil = Date.now() + 1_500;
  while (Date.now() < holdUntil) {
    assert.equal((await rollout(r1)).view.state, 'rolling', 'not advanced on a canary whose stream has not resumed');
    await new Promise((r) => setTimeout(r, 100));
  }
  await hook(agent.adminUrl, 'POST', '/debug/stream/resume');
  await until('fresh once the stream resumed', async () => ((await read(agent)).stale ? undefined : true));
  const completed = await until('the rollout completes once the canary is back', async () => {
    const { view } = await rollout(r1);
    return view.state === 'completed' ? view : undefined;
  });
  assert.equal(completed.percent, 100);
  await until('the completed candidate is the stable version everywhere', async () => ((await read(agent)).flag === 'v2' && (await envFlag()) === 'v2' ? true : undefined));

  // --- 2. restarted after the rollout was aborted while it was down ---
  const r2 = await begin('v3', 3600);
  await until('the canary serves the second candidate', async () => ((await read(agent)).flag === 'v3' && (await reported())?.rollouts.some((r) => r.rollout === r2) ? true : undefined));
  await until('its file has it', async () => ((await envFlag()) === 'v3' ? true : undefined));
  await nextSnapshot(agent);
  await kill(agent);
  assert.equal((await api('POST', `/v1/rollouts/${r2}/abort`)).status, 200);
  grpc.cut();
  agent = await start();
  assert.deepEqual(await read(agent), { flag: 'v3', stale: true }, 'the aborted candidate only stale-marked, never as fresh');
  grpc.restore();
  await until('the resume replays the abort: the stable version, fresh', async () => {
    const now = await read(agent);
    return now.flag === 'v2' && !now.stale ? true : undefined;
  });
  await until('the file is back to the stable version', async () => ((await envFlag()) === 'v2' ? true : undefined));
  await until('the report no longer claims the aborted rollout', async () => {
    const view = await reported();
    return view?.connected && !view.rollouts.some((r) => r.rollout === r2) ? true : undefined;
  });
});
