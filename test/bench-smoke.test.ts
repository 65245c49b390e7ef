/**
 * Keeps the benchmark suite from rotting: runs two real scenarios (cached
 * read over the agent's socket against the references, and API freshness)
 * in the tiny `--smoke` configuration (a few hundred requests) and checks
 * the report's structure. Never asserts a speed: figures belong to bench/.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const RUN = fileURLToPath(new URL('../bench/run.ts', import.meta.url));
const RUN_TIMEOUT_MS = 90_000;

function runBench(args: readonly string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    // Under nice, so the suite raises the priority of nothing it starts above the tests running beside it (bench/lib/priority.ts);
    // by 1 only: at 10 on a loaded machine the smoke run's agents took over 30 s to start.
    const child = spawn('nice', ['-n', '1', process.execPath, RUN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (output += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (output += c));
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      reject(new Error(`bench did not finish within ${RUN_TIMEOUT_MS} ms: ${output.slice(-2000)}`));
    }, RUN_TIMEOUT_MS);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

test('npm run bench -- --smoke writes a JSON and a Markdown report with every field, and SVG charts', async (t) => {
  const out = await mkdtemp(join(tmpdir(), 'bench-smoke-'));
  t.after(() => rm(out, { recursive: true, force: true }));
  const { code, output } = await runBench(['--smoke', '--scenario', 'cached-read-socket,freshness-api', '--out', out, '--no-profile']);
  assert.equal(code, 0, output);

  const files = await readdir(out);
  const json = files.filter((f) => f.endsWith('.json'));
  const md = files.filter((f) => f.endsWith('.md'));
  assert.equal(json.length, 1, `one JSON report: ${files.join(', ')}`);
  assert.equal(md.length, 1, `one Markdown report: ${files.join(', ')}`);
  assert.equal(json[0]?.replace(/\.json$/, ''), md[0]?.replace(/\.md$/, ''), 'both named by the same timestamp');

  const report = JSON.parse(await readFile(join(out, json[0] as string), 'utf8'));
  assert.equal(report.schema, 1);
  assert.equal(report.profile, 'smoke');
  assert.match(report.commit, /^([0-9a-f]{40}|unknown)$/);
  assert.equal(typeof report.machine.cores, 'number');
  assert.equal(typeof report.machine.cpuModel, 'string');
  assert.match(report.machine.pinning, /taskset|Not pinned/);
  assert.equal(report.versions.node, process.versions.node);
  for (const v of ['autocannon', 'hdr-histogram-js', 'nginx', 'redis']) assert.ok(report.versions[v], `version of ${v}`);

  assert.deepEqual(
    report.scenarios.map((s: { id: string }) => s.id),
    ['cached-read-socket', 'freshness-api'],
  );
  for (const s of report.scenarios) {
    assert.equal(s.status, 'ok', `${s.id}: ${s.reason ?? ''}`);
    assert.ok(s.rows.length > 0, `${s.id} has rows`);
    for (const row of s.rows) {
      assert.ok(row.values.length >= 3, `${s.id} ${row.system} ${row.metric}: at least 3 repetitions`);
      assert.ok(['higher', 'lower'].includes(row.better));
      assert.equal(typeof row.unit, 'string');
    }
    assert.ok(s.targets.length > 0, `${s.id} checks targets`);
    for (const target of s.targets) assert.ok(target.pass === true || target.pass === false || target.pass === null);
  }
  const cached = report.scenarios[0];
  assert.ok(
    cached.rows.some((r: { reference?: boolean; system: string }) => r.reference && r.system.startsWith('bare node:http')),
    'the bare node:http reference was measured in the same run',
  );
  assert.ok(cached.rows.some((r: { metric: string }) => r.metric.startsWith('server CPU per request')), 'CPU per request reported');
  // The suite runs beside other tests: it must not raise its servers above them (bench/lib/priority.ts).
  assert.ok(cached.notes.some((n: string) => n.startsWith('The runner was started under nice')), `no priority raised in a test: ${cached.notes.join(' | ')}`);
  const freshness = report.scenarios[1];
  assert.equal(freshness.extra.staleReads, 0, 'the freshness scenario checks for stale reads');
  assert.ok(freshness.lag['agent API read'].p99 >= 0, 'lag distribution stored as percentiles');
  assert.ok(!JSON.stringify(report).includes('"samples"'), 'no raw sample arrays in the report');

  const text = await readFile(join(out, md[0] as string), 'utf8');
  assert.match(text, /^# config-sidecar benchmark/);
  assert.match(text, /## Cached read, Unix socket/);
  assert.match(text, /\| system \| metric \| median \| range \| spread \| reps \| ratio \|/);
  assert.match(text, /× bare node:http \(socket\)/, 'ratios to the reference');
  assert.match(text, /PASS|MISS/);
  for (const chart of report.charts) {
    assert.ok(files.includes(chart), `chart ${chart} written`);
    assert.match(await readFile(join(out, chart), 'utf8'), /^<svg/);
  }
  assert.ok(report.charts.some((c: string) => c.endsWith('freshness-lag.svg')), 'freshness lag chart');
});

test('the control-plane scenario in --smoke: agents in a load process each get every write, with RSS and fan-out time reported, and the bare node:http2 floor beside it', async (t) => {
  const out = await mkdtemp(join(tmpdir(), 'bench-smoke-cp-'));
  t.after(() => rm(out, { recursive: true, force: true }));
  const { code, output } = await runBench(['--smoke', '--scenario', 'control-plane', '--replica-agents', '0', '--out', out, '--no-profile']);
  assert.equal(code, 0, output);
  const json = (await readdir(out)).find((f) => f.endsWith('.json')) as string;
  const report = JSON.parse(await readFile(join(out, json), 'utf8'));
  const [scenario] = report.scenarios;
  assert.equal(scenario.id, 'control-plane');
  assert.equal(scenario.status, 'ok', scenario.reason ?? '');
  const row = (metric: string) => scenario.rows.find((r: { system: string; metric: string }) => r.system === 'server, 20 agents' && r.metric === metric);
  assert.deepEqual(row('missing deliveries')?.values, [0], 'every agent got every write');
  assert.equal(row('write acknowledged')?.values.length, 2, 'one ack per write');
  for (const metric of ['delivery to every stream p99', 'RSS per agent', 'server fan-out (commit → last stream offered), mean']) {
    assert.ok(Number.isFinite(row(metric)?.values[0]), `${metric} reported`);
  }
  assert.ok(scenario.rows.some((r: { system: string }) => r.system === 'server, 0 agents'), 'the ack with no agents is the reference');
  assert.equal(scenario.targets.length, 3);
  const floor = (metric: string) => scenario.rows.find((r: { system: string; metric: string }) => r.system === 'bare node:http2 floor, 20 connections' && r.metric === metric);
  assert.deepEqual(floor('missing deliveries')?.values, [0], 'the floor delivered every write to the same load processes');
  for (const metric of ['RSS per agent', 'delivery to every stream p99', 'load processes: CPU per received message']) {
    assert.ok(Number.isFinite(floor(metric)?.values[0]), `floor: ${metric} reported`);
  }
});
