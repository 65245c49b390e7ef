/**
 * `npm run bench [-- --quick | --scenario ID ... | --out DIR]`: runs the
 * scenarios against references measured in the same run and writes
 * bench/results/<stamp>.{json,md} plus SVG charts. The runner pins itself to
 * the load core and every system under test to the other core (taskset).
 * Every loop is bounded in count and time; traffic stays on loopback and
 * Unix sockets.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { cpus, freemem, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { Context } from './lib/context.ts';
import { runClosedLoop } from './lib/lean-load.ts';
import { commandVersion, CORES, HAS_TASKSET, LOAD_CORE, stopAllChildren, SUT_CORE, which } from './lib/proc.ts';
import { writeReport, type Report } from './lib/report.ts';
import { lagChart, percentileChart } from './lib/charts.ts';
import { readAll, ITEMS_NS, itemPath } from './lib/context.ts';
import { startAgent, tempDir, waitReady } from './lib/stack.ts';
import { PROFILES, type Profile, type ScenarioResult } from './lib/types.ts';
import { SCENARIOS } from './scenarios/index.ts';
import { parseQuantity } from '../src/webhook/quantity.ts';
import type { LatencySummary } from './lib/load.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Wall-clock budgets: a scenario past its limit is reported failed and the suite moves on. */
const SCENARIO_LIMIT_S: Record<Profile['name'], number> = { full: 300, quick: 60, smoke: 60 };
const SUITE_LIMIT_S: Record<Profile['name'], number> = { full: 480, quick: 95, smoke: 120 };
const PROFILE_LOAD_S = 3;
const RUN_LAST = new Set(['memory', 'pod-limit']);
/** A scenario started near the end of the budget may overrun it by this much. */
const GRACE_S: Record<Profile['name'], number> = { full: 60, quick: 10, smoke: 30 };
const FRESHNESS_TARGET_MS: Record<string, number> = { 'freshness-api': 50, 'freshness-sse': 50, 'freshness-files': 100, 'fan-out': 500 };

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
    scenario: { type: 'string', multiple: true },
    out: { type: 'string' },
    'no-profile': { type: 'boolean', default: false },
    'pod-limit-entries': { type: 'string' },
    'pod-limit-memory': { type: 'string' },
    'time-limit': { type: 'string' },
    agents: { type: 'string' },
    'replica-agents': { type: 'string' },
    keys: { type: 'string' },
    list: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  allowPositionals: false,
});

if (args.help || args.list) {
  console.log(`Usage: npm run bench [-- --quick] [-- --scenario ID[,ID]] [-- --out DIR] [-- --no-profile]

  --quick        smaller sizes and shorter runs (under 2 minutes)
  --smoke        a tiny configuration (a few hundred requests) used by the test suite
  --scenario ID  run only this scenario (repeatable or comma-separated)
  --out DIR      where the reports go (default bench/results)
  --no-profile   do not profile the agent when a target is missed
  --pod-limit-entries N
                 entries loaded in the pod-limit scenario (default: the profile's, 100000 in full)
  --agents N[,N]  agents connected in steps in the control-plane scenario (default: 1000,5000,10000 in full)
  --replica-agents N
                 agents split over two PostgreSQL replicas in the control-plane scenario (0 skips; default 5000 in full)
  --time-limit S  seconds for the whole run and for each scenario in it (default: the profile's,
                 ${SUITE_LIMIT_S.full} s and ${SCENARIO_LIMIT_S.full} s per scenario in full; a scenario run alone
                 gets its own, e.g. 1800 s for memory and 2700 s for pod-limit in full)
  --pod-limit-memory Q[,Q]
                 limits the pod-limit scenario runs under besides the injector's default
                 (Kubernetes quantities; default: the profile's, 128Mi in full)
  --keys N       items seeded and read in the cached-read, latency and cost scenarios
                 (default: the profile's, 10000 in full; fewer warm faster on a loaded machine)

Scenarios:
${SCENARIOS.map((s) => `  ${s.id.padEnd(20)} ${s.title}`).join('\n')}`);
  process.exit(0);
}

// Re-run pinned to the load core, so the runner (the load clients) never shares the SUT's core.
if (HAS_TASKSET && CORES > 1 && process.env.CSB_PINNED !== '1') {
  const child = spawn('taskset', ['-c', String(LOAD_CORE), process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, CSB_PINNED: '1' },
  });
  const forward = (signal: NodeJS.Signals): void => {
    child.kill(signal);
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  child.on('exit', (code) => process.exit(code ?? 1));
} else {
  await main();
}

async function main(): Promise<void> {
  const base = PROFILES[args.smoke ? 'smoke' : args.quick ? 'quick' : 'full'];
  const podLimitEntries = args['pod-limit-entries'] === undefined ? base.podLimitEntries : Number(args['pod-limit-entries']);
  if (!Number.isInteger(podLimitEntries) || podLimitEntries < 1) {
    console.error(`--pod-limit-entries must be a positive whole number, got "${args['pod-limit-entries'] ?? ''}"`);
    process.exit(2);
  }
  const keys = args.keys === undefined ? base.keys : Number(args.keys);
  if (!Number.isInteger(keys) || keys < 1) {
    console.error(`--keys must be a positive whole number, got "${args.keys ?? ''}"`);
    process.exit(2);
  }
  const counts = (flag: 'agents' | 'replica-agents', fallback: readonly number[]): number[] => {
    const raw = args[flag];
    if (raw === undefined) return [...fallback];
    const list = raw.split(',').map((n) => Number(n.trim()));
    if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 0)) {
      console.error(`--${flag} must be whole numbers separated by commas, got "${raw}"`);
      process.exit(2);
    }
    return list;
  };
  const podLimitMemory = args['pod-limit-memory'] === undefined ? base.podLimitMemory : args['pod-limit-memory'].split(',').map((q) => q.trim()).filter(Boolean);
  const badQuantity = podLimitMemory.find((q) => parseQuantity(q) === undefined);
  if (badQuantity !== undefined) {
    console.error(`--pod-limit-memory takes Kubernetes memory quantities such as 128Mi, got "${badQuantity}"`);
    process.exit(2);
  }
  const timeLimitS = args['time-limit'] === undefined ? undefined : Number(args['time-limit']);
  if (timeLimitS !== undefined && !(Number.isFinite(timeLimitS) && timeLimitS > 0)) {
    console.error(`--time-limit takes a number of seconds, got "${args['time-limit'] ?? ''}"`);
    process.exit(2);
  }
  const profile = {
    ...base,
    podLimitEntries,
    keys,
    podLimitMemory,
    controlPlaneAgents: counts('agents', base.controlPlaneAgents).filter((n) => n > 0),
    controlPlaneReplicaAgents: counts('replica-agents', [base.controlPlaneReplicaAgents])[0] ?? 0,
  };
  const wanted = (args.scenario ?? []).flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
  const unknown = wanted.filter((id) => !SCENARIOS.some((s) => s.id === id));
  if (unknown.length) {
    console.error(`unknown scenario(s): ${unknown.join(', ')}; known: ${SCENARIOS.map((s) => s.id).join(', ')}`);
    process.exit(2);
  }
  const inTableOrder = wanted.length ? SCENARIOS.filter((s) => wanted.includes(s.id)) : SCENARIOS;
  // The slowest scenario runs last, so a tight budget costs it (its 100k part) rather than others.
  const selected = [...inTableOrder.filter((s) => !RUN_LAST.has(s.id)), ...inTableOrder.filter((s) => RUN_LAST.has(s.id))];
  const outDir = args.out ?? join(ROOT, 'bench', 'results');
  await mkdir(outDir, { recursive: true });
  const startedAt = new Date();
  const stamp = startedAt.toISOString().replace(/\.\d+Z$/, 'Z').replaceAll(':', '-');
  const t0 = Date.now();
  const log = (msg: string): void => console.log(`[bench ${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${msg}`);
  log(`profile ${profile.name}, ${selected.length} scenario(s), results in ${outDir}`);
  const caveats: string[] = [];
  if (!HAS_TASKSET || CORES < 2) caveats.push('taskset unavailable or fewer than 2 cores: the systems under test and the load generator share cores.');
  const machineLoad = loadavg();
  if (machineLoad[0] !== undefined && machineLoad[0] > 0.5) {
    caveats.push(`The machine was not idle (load average ${machineLoad.map((l) => l.toFixed(2)).join(' / ')} at start): other work shares these cores, so absolute figures are noisy; the ratios to references measured in the same run are the meaningful part.`);
  }
  const ctx = new Context(profile, log);
  // A scenario with its own budget (the control plane's 10k agents) gets it when run on its own; --time-limit overrides both.
  const ownLimitS = selected.length === 1 ? (selected[0]?.limitS?.[profile.name] ?? 0) : 0;
  const suiteLimitS = timeLimitS ?? Math.max(SUITE_LIMIT_S[profile.name], ownLimitS);
  ctx.deadline = t0 + suiteLimitS * 1000;
  const results: ScenarioResult[] = [];
  try {
    for (const s of selected) {
      const elapsed = (Date.now() - t0) / 1000;
      if (elapsed > suiteLimitS) {
        results.push(notRun(s.id, s.title, `suite time budget (${suiteLimitS} s) used up before this scenario`));
        continue;
      }
      log(`▶ ${s.id}`);
      const started = Date.now();
      try {
        const limitS = Math.max(30, Math.min(timeLimitS ?? s.limitS?.[profile.name] ?? SCENARIO_LIMIT_S[profile.name], ctx.secondsLeft() + GRACE_S[profile.name]));
        const r = await withTimeout(s.run(ctx), limitS * 1000, s.id);
        results.push({ ...r, seconds: (Date.now() - started) / 1000 });
        for (const t of r.targets) log(`  ${t.pass === null ? 'n/a ' : t.pass ? 'PASS' : 'MISS'} ${t.target}: ${t.measured}`);
      } catch (err) {
        const reason = err instanceof Error ? err.message.split('\n')[0]?.slice(0, 400) : String(err);
        log(`  failed: ${reason}`);
        if (reason?.includes('did not finish within')) {
          // The overrunning scenario may still be running: stop every process so it cannot skew what follows.
          await ctx.reset();
          await stopAllChildren();
        }
        results.push({ ...notRun(s.id, s.title, reason ?? 'error'), status: 'failed', seconds: (Date.now() - started) / 1000 });
      }
    }
    const missed = results.some((r) => r.targets.some((t) => t.pass === false));
    let profileFile: string | undefined;
    let profileTop: Array<{ fn: string; selfPct: number }> | undefined;
    if (missed && !args['no-profile'] && profile.name !== 'smoke') {
      try {
        log('a target was missed: profiling the agent (--cpu-prof) under the cached-read load');
        ({ profileFile, profileTop } = await profileAgent(ctx, outDir, stamp));
      } catch (err) {
        log(`profiling failed: ${String(err)}`);
      }
    }
    const charts = await writeCharts(results, outDir, stamp);
    const report: Report = {
      schema: 1,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      profile: profile.name,
      ...gitFacts(),
      machine: {
        cpuModel: cpus()[0]?.model ?? 'unknown',
        cores: CORES,
        memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
        kernel: release(),
        loadAverage: machineLoad,
        pinning: HAS_TASKSET && CORES > 1 ? `Pinned with taskset: systems under test (agent, references) on core ${SUT_CORE}; the load generator and this runner on core ${LOAD_CORE}.` : 'Not pinned (taskset missing or one core).',
      },
      versions: versions(),
      // The report lists scenarios in the issue's table order, whatever order they ran in.
      scenarios: inTableOrder.map((s) => results.find((r) => r.id === s.id)).filter((r): r is ScenarioResult => r !== undefined),
      charts,
      ...(profileFile ? { profileFile, profileTop } : {}),
      caveats: [...caveats, `Free memory at the end: ${(freemem() / 2 ** 30).toFixed(1)} GiB.`],
    };
    const files = await writeReport(outDir, stamp, report);
    log(`wrote ${files.md} and ${files.json}`);
  } finally {
    await ctx.close();
    await stopAllChildren();
  }
}

function notRun(id: string, title: string, reason: string): ScenarioResult {
  return { id, title, status: 'not-run', reason, setup: '', rows: [], targets: [], notes: [], seconds: 0 };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms / 1000} s`)), ms);
    }),
  ]);
}

function gitFacts(): { commit: string; dirty: boolean } {
  const rev = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT, encoding: 'utf8' });
  const status = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' });
  return { commit: rev.status === 0 ? rev.stdout.trim() : 'unknown', dirty: status.status === 0 && status.stdout.trim() !== '' };
}

function versions(): Record<string, string> {
  // Read the files directly: some packages' "exports" do not expose package.json.
  const pkg = (name: string): string => {
    try {
      return (JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      return 'missing';
    }
  };
  const v: Record<string, string> = {
    node: process.versions.node,
    'config-sidecar': (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version,
    autocannon: pkg('autocannon'),
    'hdr-histogram-js': pkg('hdr-histogram-js'),
    undici: pkg('undici'),
    'lru-cache': pkg('lru-cache'),
    '@grpc/grpc-js': pkg('@grpc/grpc-js'),
    vega: pkg('vega'),
    'vega-lite': pkg('vega-lite'),
  };
  const nginx = which('nginx');
  v.nginx = nginx ? commandVersion(nginx, ['-v']) : 'not installed';
  const redis = which('redis-server');
  v.redis = redis ? commandVersion(redis, ['--version']) : 'not installed';
  return v;
}

async function writeCharts(results: readonly ScenarioResult[], outDir: string, stamp: string): Promise<string[]> {
  const charts: string[] = [];
  for (const r of results) {
    if (r.latency && Object.keys(r.latency).length) {
      const name = `${stamp}-${r.id}-latency.svg`;
      await writeFile(join(outDir, name), await percentileChart(`${r.title}: latency by percentile`, r.latency, 'µs'));
      charts.push(name);
    }
  }
  const lag: Record<string, { summary: LatencySummary; targetMs: number }> = {};
  for (const r of results) {
    for (const [system, summary] of Object.entries(r.lag ?? {})) lag[`${r.id}: ${system}`] = { summary, targetMs: FRESHNESS_TARGET_MS[r.id] ?? Number.NaN };
  }
  if (Object.keys(lag).length) {
    const name = `${stamp}-freshness-lag.svg`;
    await writeFile(join(outDir, name), await lagChart('Freshness: lag from the server ack (p50 / p90 / p99 / max)', lag));
    charts.push(name);
  }
  return charts;
}

/** Runs a fresh agent under --cpu-prof with the cached-read load, keeps the profile and its top self-time functions. */
async function profileAgent(ctx: Context, outDir: string, stamp: string): Promise<{ profileFile: string; profileTop: Array<{ fn: string; selfPct: number }> }> {
  const base = await ctx.baseWith(ctx.profile.keys);
  const profDir = await tempDir('csb-prof-');
  const agent = await startAgent(base.server, { core: SUT_CORE, prefixes: ['bench'], args: ['--cache-ttl', '1h'], nodeArgs: ['--cpu-prof', '--cpu-prof-dir', profDir] });
  try {
    await waitReady(agent.adminUrl);
    const paths = Array.from({ length: ctx.profile.keys }, (_, i) => itemPath(ITEMS_NS, i));
    await readAll(agent.socketPath, paths);
    await runClosedLoop({ kind: 'socket', socketPath: agent.socketPath }, { connections: ctx.profile.connections[0] ?? 16, durationS: PROFILE_LOAD_S, paths });
  } finally {
    await agent.stop();
  }
  const file = (await readdir(profDir)).find((f) => f.endsWith('.cpuprofile'));
  if (!file) throw new Error('the agent wrote no .cpuprofile (did it exit cleanly?)');
  const name = `${stamp}-agent-cached-read.cpuprofile`;
  await rename(join(profDir, file), join(outDir, name)).catch(async () => {
    await writeFile(join(outDir, name), await readFile(join(profDir, file)));
  });
  await rm(profDir, { recursive: true, force: true });
  return { profileFile: name, profileTop: topSelfTime(JSON.parse(await readFile(join(outDir, name), 'utf8')) as CpuProfile) };
}

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number } }>;
  samples: number[];
  timeDeltas: number[];
}

/** Self time per function (name + file:line), as a share of all samples. */
function topSelfTime(profile: CpuProfile, count = 15): Array<{ fn: string; selfPct: number }> {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    const frame = byId.get(id)?.callFrame;
    const file = frame?.url.replace(/^file:\/\/.*?\/(node_modules|src)\//, '$1/') ?? '';
    const key = `${frame?.functionName || '(anonymous)'} ${file ? `${file}:${(frame?.lineNumber ?? 0) + 1}` : ''}`.trim();
    // Shares of busy time: idle samples say only that the load generator was the bottleneck.
    if (key === '(idle)') return;
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  });
  return [...self]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([fn, t]) => ({ fn, selfPct: (t / total) * 100 }));
}
