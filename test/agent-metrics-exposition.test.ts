/**
 * The agent's /metrics as a scraper sees it, and what the agent's process
 * loads to serve it. One real agent with every part that registers metrics
 * switched on (files from a config file, the warm-restart snapshot, a memory
 * limit), scraped after a read. The text must parse strictly as the
 * Prometheus exposition format and carry the same families — name, type,
 * HELP and label names — as the agent exposed with prom-client
 * (test/fixtures/agent-metric-families.json, taken from that agent's output
 * with CS_WRITE_METRIC_FAMILIES=1, then the label names of the families that
 * had no sample in that run completed from their declarations); and prom-client, with the
 * OpenTelemetry API it pulls in, must not be loaded at all.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultPod, makeAgentDir, putItem, socketGet, startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';
import { makeVolume, type Volume } from './helpers/pod-harness.ts';
import { http, metricValue, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { familyShapes, parsePrometheusText, type FamilyShape } from './helpers/prom-text.ts';
import { lastInspectorUrl, loadedScripts, packagesOf } from './helpers/loaded-scripts.ts';

const EXPECTED = fileURLToPath(new URL('./fixtures/agent-metric-families.json', import.meta.url));
const SECRET = 'production/app/db-password';
const SNAPSHOT_WAIT_MS = 20_000;
/** Packages the running agent must not load: prom-client (~4 MiB per pod) and what it pulls in. */
const NOT_IN_THE_AGENT = ['prom-client', '@opentelemetry/api', 'tdigest', 'bintrees'];

let server: ServerProcess | undefined;
let agent: AgentProcess | undefined;
let dir: string | undefined;
let volumes: Volume[] = [];
let scrape: { status: number; contentType: unknown; text: string } | undefined;

before(async () => {
  server = await startServerProcess();
  await putItem(server, SECRET, { kind: 'secret', value: 's3cret' });
  const pod = defaultPod();
  dir = await makeAgentDir(pod, 'cs-metrics-');
  const snapshotDir = join(dir, 'snapshot');
  const filesDir = join(dir, 'files');
  volumes = pod ? [await makeVolume(snapshotDir, pod.fsGroup, { medium: 'Memory', sizeBytes: 8 << 20 }), await makeVolume(filesDir, pod.fsGroup)] : [];
  if (!pod) await Promise.all([mkdir(snapshotDir), mkdir(filesDir)]);
  const config = join(dir, 'agent.yaml');
  await writeFile(config, `files: ${JSON.stringify([{ path: 'db/password', items: [SECRET] }])}\n`);
  agent = await startAgentProcess(server, {
    dir,
    prefetch: [SECRET],
    args: ['--config', config, '--files-dir', filesDir, '--snapshot-dir', snapshotDir, '--snapshot-interval', '200ms', '--memory-limit', '256MiB'],
    // What the serving process loaded, read through its inspector (test/helpers/loaded-scripts.ts).
    env: { NODE_OPTIONS: '--inspect=127.0.0.1:0' },
  });
  await waitReady(agent.adminUrl);
  assert.equal((await socketGet(agent.socketPath, `/v1/items/${SECRET}`)).status, 200);
  // A snapshot write (its labelled counter has a sample) before the scrape.
  const deadline = Date.now() + SNAPSHOT_WAIT_MS;
  while (((await metricValue(agent.adminUrl, 'config_sidecar_agent_snapshot_writes_total', 'outcome="ok"')) ?? 0) < 1) {
    assert.ok(Date.now() < deadline, 'a snapshot write within 20 s');
    await new Promise((r) => setImmediate(r));
  }
  const res = await http(agent.adminUrl, 'GET', '/metrics');
  scrape = { status: res.status, contentType: res.headers['content-type'], text: res.text };
});

after(async () => {
  await agent?.stop('SIGKILL');
  for (const v of volumes) await v.unmount();
  if (dir) await rm(dir, { recursive: true, force: true });
  await server?.stop('SIGKILL');
  if (server) await removeDir(server.dataDir);
});

test('the agent’s /metrics parses strictly and has the same families, types, HELP and labels as before', async () => {
  assert.ok(scrape);
  assert.equal(scrape.status, 200);
  assert.equal(scrape.contentType, 'text/plain; version=0.0.4; charset=utf-8');
  const families = parsePrometheusText(scrape.text);
  const shapes = familyShapes(families);
  if (process.env.CS_WRITE_METRIC_FAMILIES === '1') await writeFile(EXPECTED, `${JSON.stringify(shapes, null, 1)}\n`);
  const expected = JSON.parse(await readFile(EXPECTED, 'utf8')) as FamilyShape[];
  const strip = (list: readonly FamilyShape[]): Array<Omit<FamilyShape, 'labels'>> => list.map(({ name, type, help }) => ({ name, type, help }));
  assert.deepEqual(strip(shapes), strip(expected));
  // Label names: a family with samples carries exactly the names it had (one with none yet, e.g. no evictions, shows none).
  const expectedLabels = new Map(expected.map((f) => [f.name, f.labels]));
  for (const f of shapes) if (f.labels.length > 0) assert.deepEqual(f.labels, expectedLabels.get(f.name), `labels of ${f.name}`);
  // Values a user reads: the read was counted, the cache holds the prefetched secret, the process figures are real.
  const value = (name: string): number | undefined => families.find((f) => f.name === name)?.samples[0]?.value;
  assert.ok((value('config_sidecar_agent_cache_hits_total') ?? 0) >= 1, 'the read counted as a hit');
  assert.equal(value('config_sidecar_agent_cache_entries'), 1);
  assert.equal(value('config_sidecar_agent_memory_limit_bytes'), 256 * 1024 * 1024);
  assert.ok((value('config_sidecar_agent_process_resident_memory_bytes') ?? 0) > 10 * 1024 * 1024);
  assert.ok((value('config_sidecar_agent_process_open_fds') ?? 0) > 5);
  const gc = families.find((f) => f.name === 'config_sidecar_agent_nodejs_gc_duration_seconds');
  assert.ok(gc?.samples.some((s) => s.name.endsWith('_count') && s.value > 0), 'start-up’s collections were observed');
});

test('the running agent (files, snapshot, memory limit, scraped) never loads prom-client or the OpenTelemetry API', async () => {
  assert.ok(agent);
  const scripts = await loadedScripts(lastInspectorUrl(agent.output()));
  assert.ok(scripts.some((url) => url.includes('/agent/agent-metrics.')), 'the listing sees the agent’s metrics module');
  const packages = packagesOf(scripts);
  assert.ok(packages.has('chokidar'), `the listing sees the files part's libraries: ${[...packages].join(' ')}`);
  for (const pkg of NOT_IN_THE_AGENT) assert.ok(!packages.has(pkg), `${pkg} loaded by the serving process: ${[...packages].join(' ')}`);
});
