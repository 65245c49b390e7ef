/**
 * "Files published" as a rollout health level (issue 17): a real server and a
 * canary agent rendering the rollout's item into a file (as uid 65532 in a pod
 * where the harness can, the files on a kubelet-made volume). The agent
 * reports the revision its files are published at; the rollout counts it as
 * applied only once that reaches the rollout's revision. A candidate the
 * agent publishes is shown as such (`GET /v1/rollouts/{id}`, `rollout
 * status`) and advances after the bake; one its file cannot hold (an env file
 * refuses `${…}`) is applied but never published, so at the end of the bake
 * the rollout rolls back naming the files, and the app's file keeps the last
 * good version.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CanaryStatus, RolloutView } from '../src/shared/protocol.ts';
import { defaultPod, makeAgentDir, socketGet, startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';
import { makeVolume } from './helpers/pod-harness.ts';
import { removeDir } from './helpers/server-process.ts';
import { cleanupStack, runCli, startRolloutServer, until } from './helpers/rollout-stack.ts';
import { passFleetTime } from './helpers/fleet-time.ts';

const ITEM = 'team-f/app/settings';
const AGENT = 'files-canary';

const cleanup = cleanupStack();

test('a canary rendering files counts as applied only once its files are published at the rollout revision: shown per canary, a published candidate advances, an unpublishable one rolls back naming the files', async () => {
  const { server, api } = await startRolloutServer(cleanup, ITEM, { flag: 'v1' });

  const pod = defaultPod();
  const dir = await makeAgentDir(pod, 'cs-rollout-files-');
  cleanup(() => removeDir(dir));
  const filesDir = join(dir, 'files');
  if (pod) await makeVolume(filesDir, pod.fsGroup);
  else await mkdir(filesDir);
  const config = join(dir, 'agent.yaml');
  await writeFile(config, `files: ${JSON.stringify([{ path: 'app.env', items: [ITEM], format: 'env' }])}\n`);
  const agent: AgentProcess = await startAgentProcess(server, { dir, prefixes: ['team-f'], prefetch: [ITEM], args: ['--agent-id', AGENT, '--config', config, '--files-dir', filesDir] });
  cleanup(() => agent.stop('SIGKILL'));
  await waitReady(agent.adminUrl);
  const envFile = (): Promise<string> => readFile(join(filesDir, 'app.env'), 'utf8');
  assert.match(await envFile(), /^FLAG=["']?v1["']?$/m);
  await until('the agent reports', async () => (((await api('GET', '/v1/agents')).json?.agents ?? []) as Array<{ id: string; connected: boolean }>).some((a) => a.id === AGENT && a.connected) || undefined);

  const status = async (id: string): Promise<{ view: RolloutView; canary: CanaryStatus | undefined }> => {
    const res = await api('GET', `/v1/rollouts/${id}`);
    assert.equal(res.status, 200, res.text);
    const view = res.json as RolloutView;
    return { view, canary: view.canaryStatus?.find((c) => c.agent === AGENT) };
  };

  // --- a candidate the file can hold: published, shown so, and the bake passes ---
  const good = await api('POST', '/v1/rollouts', { changes: [{ item: ITEM, kind: 'config', value: { flag: 'v2' } }], steps: [50, 100], bakeSeconds: 60, maxUnhealthy: 0 });
  assert.equal(good.status, 201, good.text);
  const goodId = (good.json as RolloutView).id;
  assert.deepEqual((good.json as RolloutView).canary, [AGENT]);
  const published = await until('the canary reports its files published at the rollout revision', async () => {
    const { canary } = await status(goodId);
    return canary?.files === 'published' ? canary : undefined;
  });
  const { lastReport, ...levels } = published;
  assert.deepEqual(levels, { agent: AGENT, reporting: true, connected: true, applied: true, files: 'published', appHealth: 'unknown' });
  assert.ok(lastReport !== undefined && Date.parse(lastReport) > 0, 'when it last reported');
  assert.match(await envFile(), /^FLAG=["']?v2["']?$/m, 'the candidate is in the app\'s file');
  const cli = await runCli(server, ['rollout', 'status', goodId]);
  assert.equal(cli.code, 0, cli.output);
  assert.match(cli.output, new RegExp(`${AGENT}: connected, applied, files published, app health unknown`));
  await passFleetTime(server, new Map([[AGENT, agent]]), 61_000);
  await until('the rollout completes after the bake', async () => ((await status(goodId)).view.state === 'completed' ? true : undefined));
  assert.equal((await status(goodId)).view.canaryStatus, undefined, 'a finished rollout shows no canary levels');

  // --- a candidate the env file cannot hold: applied, never published; the bake ends in a rollback ---
  const bad = await api('POST', '/v1/rollouts', { changes: [{ item: ITEM, kind: 'config', value: { flag: '${HOME}' } }], steps: [50, 100], bakeSeconds: 60, maxUnhealthy: 0 });
  assert.equal(bad.status, 201, bad.text);
  const badId = (bad.json as RolloutView).id;
  // The candidate is served (the API answers it) but the env file refuses it: applied, files not published.
  const pending = await until('the canary is shown applied with its files not published', async () => {
    const { canary } = await status(badId);
    return canary?.applied === true && canary.files === 'pending' ? canary : undefined;
  });
  assert.equal(pending.connected, true);
  const cliPending = await runCli(server, ['rollout', 'status', badId]);
  assert.match(cliPending.output, new RegExp(`${AGENT}: connected, applied, files not published yet`));
  assert.equal((await status(badId)).view.state, 'rolling', 'not rolled back before the bake ends: the files may still be published');
  await passFleetTime(server, new Map([[AGENT, agent]]), 61_000);
  const rolledBack = await until('the rollout rolls back at the end of the bake', async () => {
    const { view } = await status(badId);
    return view.state === 'rolled_back' ? view : undefined;
  });
  assert.match(rolledBack.reason ?? '', new RegExp(`${AGENT} \\(did not publish its files at revision \\d+ within bakeSeconds`));
  assert.match(await envFile(), /^FLAG=["']?v2["']?$/m, 'the app\'s file kept the last good version');
  await until('the agent serves the stable version again', async () => {
    const served = await socketGet(agent.socketPath, `/v1/items/${ITEM}`);
    return served.status === 200 && (served.json.value as { flag: string }).flag === 'v2' ? true : undefined;
  });
});
