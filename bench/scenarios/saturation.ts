/**
 * Cached reads at saturation (Unix socket, TCP + pod token), conditional
 * reads (304) and cost (CPU per 100k requests). The agent and every
 * reference run on the SUT core, the lean closed-loop client
 * (lib/lean-load.ts) on the load core; each run's server CPU time comes
 * from the schedstat of every thread (/proc/PID/task/TID/schedstat,
 * lib/schedstat.ts), and with the run's length it says how busy the
 * server's core was (a server short of 100 % was not saturated).
 */
import { cpuSeconds } from '../lib/proc.ts';
import { type Target } from '../lib/load.ts';
import { redisBenchmark, redisFill, startBareHttp, startNginx, startRedis, type RedisRef, type RefServer } from '../lib/refs.ts';
import { measure, PATHS_PER_RUN, pooledCpuRatio, runPaired, type Measured, type PairedRuns, type RunLength, type System } from '../lib/saturation-runs.ts';
import { SUT_CORE } from '../lib/proc.ts';
import { raisePriority, RAISED_NICE, type Raised } from '../lib/priority.ts';
import { formatRatio, pairedRatios, summariseRatios } from '../lib/stats.ts';
import type { Context } from '../lib/context.ts';
import type { Row, ScenarioResult, TargetCheck } from '../lib/types.ts';

/** Issue 15's targets for a cached read, against bare node:http on the same transport in the same run. */
const MIN_THROUGHPUT_RATIO = 0.8;
const MAX_CPU_RATIO = 1.25;

/** Raises the measured servers and this process (the load client) for the runs (lib/priority.ts). */
function raiseFor(systems: readonly System[], redis?: RedisRef): Raised {
  return raisePriority([...new Set([...systems.map((s) => s.pid), ...(redis ? [redis.child.pid] : []), process.pid])]);
}

function priorityNote(p: Raised): string {
  switch (p.state) {
    case 'raised':
      return `Every thread of the servers and of this runner (the load client) ran at nice ${RAISED_NICE} during the runs, so other work on the machine (tests and builds are not under the bench lock) takes little of their cores; so did redis-benchmark, which this runner starts (a child takes its parent's nice).`;
    case 'refused':
      return `The servers' and the load client's priority could not be raised (needs root or CAP_SYS_NICE): the runs competed with other work on the machine at normal priority.`;
    case 'runner-niced':
      return 'The runner was started under nice, so the servers and the load client kept their priority: the runs competed with other work on the machine.';
  }
}

function saturationLength(ctx: Context): RunLength {
  return ctx.profile.saturationAmount !== undefined ? { amount: ctx.profile.saturationAmount } : { durationS: ctx.profile.saturationS };
}

interface Refs {
  readonly systems: System[];
  readonly redis?: RedisRef;
  readonly skipped: string[];
  stop(): Promise<void>;
}

/** Starts the references of the given transport; a missing nginx/redis is listed in `skipped`. */
async function startRefs(kind: 'socket' | 'tcp', paths: readonly string[], withRedis: boolean): Promise<Refs> {
  const started: Array<RefServer | RedisRef> = [];
  const systems: System[] = [];
  const skipped: string[] = [];
  const bare = await startBareHttp(SUT_CORE, kind);
  started.push(bare);
  systems.push({
    name: `bare node:http (${kind === 'socket' ? 'socket' : 'TCP'})`,
    reference: true,
    pid: bare.child.pid,
    target: kind === 'socket' ? { kind: 'socket', socketPath: bare.socketPath as string } : { kind: 'tcp', url: bare.url as string },
    paths,
  });
  let redis: RedisRef | undefined;
  if (kind === 'socket') {
    const nginx = await startNginx(SUT_CORE);
    if (typeof nginx === 'string') skipped.push(`nginx skipped: ${nginx}`);
    else {
      started.push(nginx);
      systems.push({ name: 'nginx (socket)', reference: true, pid: nginx.child.pid, target: { kind: 'socket', socketPath: nginx.socketPath as string }, paths });
    }
    if (withRedis) {
      const r = await startRedis(SUT_CORE);
      if (typeof r === 'string') skipped.push(`Redis skipped: ${r}`);
      else {
        started.push(r);
        redis = r;
      }
    }
  }
  return {
    systems,
    ...(redis ? { redis } : {}),
    skipped,
    async stop() {
      for (const s of started) await s.stop();
    },
  };
}

/** One pair's figures, kept in the JSON report so a reader can see order, drift and contention run by run. */
interface PairLog {
  readonly connections: number;
  readonly subjectFirst: boolean;
  readonly subject: RunLog;
  readonly reference: RunLog;
}

interface RunLog {
  readonly cpuUs: number;
  readonly rps: number;
  readonly busyPct: number;
  readonly waitPct: number;
  readonly otherOnCorePct: number;
}

function runLog(m: Measured): RunLog {
  return { cpuUs: m.cpuUsPerReq, rps: m.run.rps, busyPct: m.busyPercent, waitPct: m.waitPercent, otherOnCorePct: m.otherOnCorePercent };
}

function pairLogs(connections: number, paired: PairedRuns): PairLog[] {
  return paired.subject.map((m, i) => ({
    connections,
    subjectFirst: paired.subjectFirst[i] ?? true,
    subject: runLog(m),
    reference: runLog(paired.reference[i] as Measured),
  }));
}

/** The absolute rows of one system's runs at one connection count. */
function systemRows(name: string, reference: boolean, connections: number, runs: readonly Measured[]): Row[] {
  const of = (f: (m: Measured) => number): number[] => runs.map(f);
  return [
    { system: name, metric: `req/s @${connections} conns`, unit: 'req/s', values: of((m) => m.run.rps), better: 'higher', reference },
    { system: name, metric: `server CPU per request @${connections}`, unit: 'µs', values: of((m) => m.cpuUsPerReq), better: 'lower', reference },
    { system: name, metric: `server core busy @${connections}`, unit: '%', values: of((m) => m.busyPercent), better: 'higher', reference },
    { system: name, metric: `load client busy @${connections}`, unit: '%', values: of((m) => m.clientBusyPercent), better: 'lower', reference },
    { system: name, metric: `other processes on the SUT core @${connections}`, unit: '%', values: of((m) => m.otherOnCorePercent), better: 'lower', reference },
  ];
}

function errorsOf(runs: readonly Measured[]): number {
  return runs.reduce((n, m) => n + m.run.errors + m.run.non2xx, 0);
}

const PAIRED_NOTE =
  'Target ratios are paired: after warm-up runs of each (not kept) until one has the server\'s own threads waiting for its core under 10 % of the run (JIT and GC threads caught up; at most 6), the agent and bare node:http take turns in ABBA order (agent, bare, bare, agent, …), each pair\'s ratio is the agent\'s figure over bare\'s in the run next to it, and the target is judged by the median of those ratios; the range beside it (and the "per pair" rows) is their spread. Linear drift in the machine\'s speed cancels between the two orders, and a run disturbed by other work spoils one pair, not a median of its own. A CPU target also gives "all runs pooled": each side\'s CPU over its requests in all its runs, which spreads work that lands in a few runs only (the agent\'s own threads at times busy for a third of a run: a major GC, most likely) over all of them, where the median leaves it out; it follows the machine\'s speed changes more, so the target is judged by the median and the pooled figure says how much that leaves out. The ratio column of the absolute rows divides their medians, which are measured at different times, so it can differ from the target\'s figure. CPU is every thread of the server\'s, from /proc/PID/task/*/schedstat (nanoseconds); "other processes on the SUT core" is that core\'s busy time (/proc/stat) not spent by the server.';

export async function cachedRead(ctx: Context, kind: 'socket' | 'tcp'): Promise<Omit<ScenarioResult, 'seconds'>> {
  const warm = await ctx.warmAgent();
  const agentTarget: Target =
    kind === 'socket'
      ? { kind: 'socket', socketPath: warm.agent.socketPath }
      : { kind: 'tcp', url: warm.agent.httpUrl, headers: { 'x-config-sidecar-token': warm.agent.podToken } };
  const agent: System = { name: `agent (${kind === 'socket' ? 'socket' : 'TCP + token'})`, reference: false, pid: warm.agent.child.pid, target: agentTarget, paths: warm.paths };
  const refs = await startRefs(kind, warm.paths, kind === 'socket');
  const rows: Row[] = [];
  const notes: string[] = [...refs.skipped];
  const targets: TargetCheck[] = [];
  const pairs: PairLog[] = [];
  const warmUps: string[] = [];
  const [bare, ...others] = refs.systems as [System, ...System[]];
  const length = saturationLength(ctx);
  const priority = raiseFor([agent, ...refs.systems], refs.redis);
  try {
    if (refs.redis) await redisFill(refs.redis, warm.keys);
    for (const connections of ctx.profile.connections) {
      const otherRuns = new Map<string, Measured[]>(others.map((o) => [o.name, []]));
      const redisRps: number[] = [];
      const redisCpu: number[] = [];
      const paired = await runPaired(agent, bare, connections, length, ctx.profile.saturationPairs, async () => {
        for (const sys of others) otherRuns.get(sys.name)?.push(await measure(sys, connections, length));
        if (refs.redis) {
          const amount = ctx.profile.redisRequests;
          const cpu0 = cpuSeconds(refs.redis.child.pid);
          const r = await redisBenchmark(refs.redis, connections, amount, warm.keys);
          redisRps.push(r.rps);
          redisCpu.push(((cpuSeconds(refs.redis.child.pid) - cpu0) / amount) * 1e6);
        }
      });
      pairs.push(...pairLogs(connections, paired));
      warmUps.push(`@${connections}: agent ${paired.warmUpRuns.subject}, ${bare.name} ${paired.warmUpRuns.reference}`);
      const runsOf: Array<[System, readonly Measured[]]> = [[agent, paired.subject], [bare, paired.reference], ...others.map((o): [System, Measured[]] => [o, otherRuns.get(o.name) ?? []])];
      for (const [sys, runs] of runsOf) {
        rows.push(...systemRows(sys.name, sys.reference, connections, runs));
        const errors = errorsOf(runs);
        if (errors > 0) notes.push(`${sys.name} @${connections}: ${errors} errors or non-2xx responses`);
      }
      if (redisRps.length) {
        rows.push({ system: 'Redis GET (socket)', metric: `req/s @${connections} conns`, unit: 'req/s', values: redisRps, better: 'higher', reference: true });
        rows.push({ system: 'Redis GET (socket)', metric: `server CPU per request @${connections}`, unit: 'µs', values: redisCpu, better: 'lower', reference: true });
      }
      const rpsRatios = pairedRatios(paired.subject.map((m) => m.run.rps), paired.reference.map((m) => m.run.rps));
      const cpuRatios = pairedRatios(paired.subject.map((m) => m.cpuUsPerReq), paired.reference.map((m) => m.cpuUsPerReq));
      rows.push({ system: `${agent.name} / ${bare.name}`, metric: `req/s @${connections}, per pair`, unit: '×', values: rpsRatios, better: 'higher' });
      rows.push({ system: `${agent.name} / ${bare.name}`, metric: `server CPU per request @${connections}, per pair`, unit: '×', values: cpuRatios, better: 'lower' });
      const rps = summariseRatios(rpsRatios);
      const cpu = summariseRatios(cpuRatios);
      targets.push({
        target: `req/s @${connections} ≥ ${MIN_THROUGHPUT_RATIO} × ${bare.name}`,
        measured: formatRatio(rps),
        pass: rps.pairs > 0 ? rps.median >= MIN_THROUGHPUT_RATIO && errorsOf(paired.subject) === 0 : null,
      });
      targets.push({
        target: `server CPU per request @${connections} ≤ ${MAX_CPU_RATIO} × ${bare.name}`,
        measured: formatRatio(cpu, pooledCpuRatio(paired)),
        pass: cpu.pairs > 0 ? cpu.median <= MAX_CPU_RATIO : null,
      });
    }
  } finally {
    priority.restore();
    await refs.stop();
  }
  notes.push(
    PAIRED_NOTE,
    `Warm-up runs until settled ${warmUps.join('; ')}.`,
    priorityNote(priority),
    warm.compiled ? 'The agent is the bin as installed: the CLI compiled to JavaScript, started with its own node flags.' : 'The agent runs the TypeScript source through Node\'s type stripping (--smoke, or compiling failed): not the bin as installed, so not the targets\' figure.',
    `${warm.keys} keys of 1 KiB cached; each run cycles through a window of ${Math.min(PATHS_PER_RUN, warm.keys)} of them, the window moving over the keyspace from run to run (?format=raw, so every system answers a 1 KiB body); the lean closed-loop client (bench/lib/lean-http.ts), ${lengthText(length)} per run, pipelining 1, ${ctx.profile.saturationPairs} pairs per connection count; ${others.length ? `${others.map((o) => o.name).join(', ')}${refs.redis ? ' and Redis' : ''} run once after every second pair` : 'no other reference'}.`,
    '"server core busy" is the server\'s CPU time over the run\'s length, "load client busy" the same for the client (this process, on the load core): with the server near 100 % the req/s is its capacity; with both well below it, the machine\'s other work set the pace. Redis is driven by redis-benchmark, the others by the same client.',
  );
  return {
    id: kind === 'socket' ? 'cached-read-socket' : 'cached-read-tcp',
    title: kind === 'socket' ? 'Cached read, Unix socket' : 'Cached read, TCP + pod token',
    status: 'ok',
    setup: `agent with ${warm.keys} cached keys vs references on the same ${kind === 'socket' ? 'socket type' : 'loopback TCP'}`,
    rows,
    targets,
    notes,
    extra: { pairs },
  };
}

function lengthText(length: RunLength): string {
  return 'amount' in length ? `${length.amount.toLocaleString('en-US')} requests` : `${length.durationS} s`;
}

export async function conditionalRead(ctx: Context): Promise<Omit<ScenarioResult, 'seconds'>> {
  const warm = await ctx.warmAgent();
  const connections = ctx.profile.connections[0] ?? 16;
  const target: Target = { kind: 'socket', socketPath: warm.agent.socketPath };
  const plain: System = { name: 'agent 200 (cached read)', reference: true, pid: warm.agent.child.pid, target, paths: warm.paths };
  const conditional: System = {
    name: 'agent 304 (If-None-Match)',
    reference: false,
    pid: warm.agent.child.pid,
    target,
    paths: warm.paths,
    headersFor: (path) => ({ 'if-none-match': warm.etags.get(path) ?? '' }),
  };
  const priority = raiseFor([plain]);
  let paired: PairedRuns;
  try {
    paired = await runPaired(conditional, plain, connections, saturationLength(ctx), ctx.profile.saturationPairs);
  } finally {
    priority.restore();
  }
  const c304: Record<string, number> = {};
  for (const m of paired.subject) for (const [code, n] of Object.entries(m.run.statusCodes)) c304[code] = (c304[code] ?? 0) + n;
  const rows: Row[] = [];
  for (const [sys, runs] of [[conditional, paired.subject], [plain, paired.reference]] as const) {
    rows.push({ system: sys.name, metric: `req/s @${connections} conns`, unit: 'req/s', values: runs.map((m) => m.run.rps), better: 'higher', reference: sys.reference });
    rows.push({ system: sys.name, metric: 'server CPU per request', unit: 'µs', values: runs.map((m) => m.cpuUsPerReq), better: 'lower', reference: sys.reference });
  }
  const rpsRatios = pairedRatios(paired.subject.map((m) => m.run.rps), paired.reference.map((m) => m.run.rps));
  rows.push({ system: '304 / 200', metric: `req/s @${connections}, per pair`, unit: '×', values: rpsRatios, better: 'higher' });
  const all304 = Object.keys(c304).every((k) => k === '304');
  const ratio = summariseRatios(rpsRatios);
  return {
    id: 'conditional-read',
    title: 'Conditional read (If-None-Match → 304)',
    status: 'ok',
    setup: `${warm.keys} keys, each request carrying the key's current ETag, ${connections} connections over the socket`,
    rows,
    targets: [
      { target: 'every conditional request answered 304', measured: JSON.stringify(c304), pass: all304 },
      { target: '304 req/s ≥ cached read req/s', measured: formatRatio(ratio), pass: ratio.pairs > 0 ? ratio.median >= 1 : null },
    ],
    notes: [`Both hit the same warm agent in ABBA pairs after warm-up runs of each until settled (${paired.warmUpRuns.subject} and ${paired.warmUpRuns.reference}), ${lengthText(saturationLength(ctx))} per run; the ratio is the median of the per-pair ratios (as the cached-read scenarios' targets). The 200 run is the cached read of the socket scenario.`, priorityNote(priority)],
    extra: { pairs: pairLogs(connections, paired) },
  };
}

export async function cost(ctx: Context): Promise<Omit<ScenarioResult, 'seconds'>> {
  const warm = await ctx.warmAgent();
  const connections = ctx.profile.connections[0] ?? 16;
  const amount = ctx.profile.costRequests;
  const agent: System = { name: 'agent (socket)', reference: false, pid: warm.agent.child.pid, target: { kind: 'socket', socketPath: warm.agent.socketPath }, paths: warm.paths };
  const refs = await startRefs('socket', warm.paths, true);
  const [bare, ...others] = refs.systems as [System, ...System[]];
  const per100k = (m: Measured): number => (m.cpuUsPerReq * 100_000) / 1e6;
  const otherRuns = new Map<string, number[]>(others.map((o) => [o.name, []]));
  const redisCpu: number[] = [];
  let paired: PairedRuns;
  const priority = raiseFor([agent, ...refs.systems], refs.redis);
  try {
    if (refs.redis) await redisFill(refs.redis, warm.keys);
    paired = await runPaired(agent, bare, connections, { amount }, ctx.profile.saturationPairs, async () => {
      for (const sys of others) otherRuns.get(sys.name)?.push(per100k(await measure(sys, connections, { amount })));
      if (refs.redis) {
        const cpu0 = cpuSeconds(refs.redis.child.pid);
        await redisBenchmark(refs.redis, connections, amount, warm.keys);
        redisCpu.push(((cpuSeconds(refs.redis.child.pid) - cpu0) / amount) * 100_000);
      }
    });
  } finally {
    priority.restore();
    await refs.stop();
  }
  const metric = 'CPU seconds per 100k requests';
  const rows: Row[] = [
    { system: agent.name, metric, unit: 's', values: paired.subject.map(per100k), better: 'lower', reference: false },
    { system: bare.name, metric, unit: 's', values: paired.reference.map(per100k), better: 'lower', reference: true },
    ...[...otherRuns].map(([name, values]): Row => ({ system: name, metric, unit: 's', values, better: 'lower', reference: true })),
    ...(redisCpu.length ? [{ system: 'Redis GET (socket)', metric, unit: 's', values: redisCpu, better: 'lower' as const, reference: true }] : []),
  ];
  const ratios = pairedRatios(paired.subject.map((m) => m.cpuUsPerReq), paired.reference.map((m) => m.cpuUsPerReq));
  rows.push({ system: `${agent.name} / ${bare.name}`, metric: `${metric}, per pair`, unit: '×', values: ratios, better: 'lower' });
  const ratio = summariseRatios(ratios);
  return {
    id: 'cost',
    title: 'Cost: server CPU per 100k requests',
    status: 'ok',
    setup: `${amount.toLocaleString('en-US')} requests per run at ${connections} connections over the socket, ${ctx.profile.saturationPairs} pairs; CPU of every server thread from /proc/PID/task/*/schedstat (Redis: /proc/PID/stat)`,
    rows,
    targets: [{ target: `agent ≤ ${MAX_CPU_RATIO} × ${bare.name}`, measured: formatRatio(ratio, pooledCpuRatio(paired)), pass: ratio.pairs > 0 ? ratio.median <= MAX_CPU_RATIO : null }],
    notes: [...refs.skipped, PAIRED_NOTE, `Warm-up runs until settled: agent ${paired.warmUpRuns.subject}, ${bare.name} ${paired.warmUpRuns.reference}.`, priorityNote(priority), 'Redis\'s CPU is read in clock ticks (usually 10 ms), so its figure is coarse.'],
    extra: { pairs: pairLogs(connections, paired) },
  };
}
