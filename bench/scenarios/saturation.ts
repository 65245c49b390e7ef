/**
 * Cached reads at saturation (Unix socket, TCP + pod token), conditional
 * reads (304) and cost (CPU per 100k requests). The agent and every
 * reference run on the SUT core, the lean closed-loop client
 * (lib/lean-load.ts) on the load core; each run's server CPU time comes
 * from /proc/PID/stat, and with the run's length it says how busy the
 * server's core was (a server short of 100 % was not saturated).
 */
import { cpuSeconds } from '../lib/proc.ts';
import { runClosedLoop } from '../lib/lean-load.ts';
import { type Target, type ThroughputResult } from '../lib/load.ts';
import { redisBenchmark, redisFill, startBareHttp, startNginx, startRedis, type RedisRef, type RefServer } from '../lib/refs.ts';
import { SUT_CORE } from '../lib/proc.ts';
import { median } from '../lib/stats.ts';
import type { Context } from '../lib/context.ts';
import type { Row, ScenarioResult, TargetCheck } from '../lib/types.ts';

interface System {
  readonly name: string;
  readonly reference: boolean;
  readonly pid: number;
  readonly target: Target;
  readonly paths: readonly string[];
  readonly headersFor?: (path: string) => Record<string, string>;
}

interface Measured {
  readonly run: ThroughputResult;
  readonly cpuUsPerReq: number;
  /** The server's CPU time over the run's wall time, in % of its one core. */
  readonly busyPercent: number;
  /** The same for this process, the load client. */
  readonly clientBusyPercent: number;
}

/**
 * Each run takes a window of PATHS_PER_RUN keys (its requests are built once
 * per run), and successive runs move the window over the keyspace.
 */
const PATHS_PER_RUN = 1_000;
/** Issue 15's targets for a cached read, against bare node:http on the same transport in the same run. */
const MIN_THROUGHPUT_RATIO = 0.8;
const MAX_CPU_RATIO = 1.25;
let runCounter = 0;

function window(paths: readonly string[]): string[] {
  const offset = ((runCounter++ * PATHS_PER_RUN) % Math.max(1, paths.length - PATHS_PER_RUN + 1)) | 0;
  return paths.slice(offset, offset + PATHS_PER_RUN);
}

async function measure(ctx: Context, sys: System, connections: number, amount?: number): Promise<Measured> {
  const paths = window(sys.paths);
  const cpu0 = cpuSeconds(sys.pid);
  const client0 = process.cpuUsage();
  const run = await runClosedLoop(sys.target, {
    connections,
    paths,
    ...(amount !== undefined ? { amount } : ctx.profile.saturationAmount !== undefined ? { amount: ctx.profile.saturationAmount } : { durationS: ctx.profile.saturationS }),
    ...(sys.headersFor ? { headersFor: sys.headersFor } : {}),
  });
  const cpu = cpuSeconds(sys.pid) - cpu0;
  const client = process.cpuUsage(client0);
  return {
    run,
    cpuUsPerReq: run.requests > 0 ? (cpu / run.requests) * 1e6 : Number.NaN,
    busyPercent: (cpu / run.seconds) * 100,
    clientBusyPercent: ((client.user + client.system) / 1e6 / run.seconds) * 100,
  };
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
  try {
    if (refs.redis) await redisFill(refs.redis, warm.keys);
    for (const connections of ctx.profile.connections) {
      const rps = new Map<string, number[]>();
      const cpu = new Map<string, number[]>();
      const busy = new Map<string, number[]>();
      const clientBusy = new Map<string, number[]>();
      const bad = new Map<string, number>();
      const systems = [agent, ...refs.systems];
      for (let rep = 0; rep < ctx.profile.reps; rep++) {
        // Interleaved so drift in the machine's load hits every system alike.
        for (const sys of systems) {
          const m = await measure(ctx, sys, connections);
          push(rps, sys.name, m.run.rps);
          push(cpu, sys.name, m.cpuUsPerReq);
          push(busy, sys.name, m.busyPercent);
          push(clientBusy, sys.name, m.clientBusyPercent);
          bad.set(sys.name, (bad.get(sys.name) ?? 0) + m.run.errors + m.run.non2xx);
        }
        if (refs.redis) {
          const amount = ctx.profile.redisRequests;
          const cpu0 = cpuSeconds(refs.redis.child.pid);
          const r = await redisBenchmark(refs.redis, connections, amount, warm.keys);
          push(rps, 'Redis GET (socket)', r.rps);
          push(cpu, 'Redis GET (socket)', ((cpuSeconds(refs.redis.child.pid) - cpu0) / amount) * 1e6);
        }
      }
      for (const [name, values] of rps) {
        const reference = name !== agent.name;
        rows.push({ system: name, metric: `req/s @${connections} conns`, unit: 'req/s', values, better: 'higher', reference });
        rows.push({ system: name, metric: `server CPU per request @${connections}`, unit: 'µs', values: cpu.get(name) ?? [], better: 'lower', reference });
        const busyValues = busy.get(name);
        if (busyValues) rows.push({ system: name, metric: `server core busy @${connections}`, unit: '%', values: busyValues, better: 'higher', reference });
        const clientValues = clientBusy.get(name);
        if (clientValues) rows.push({ system: name, metric: `load client busy @${connections}`, unit: '%', values: clientValues, better: 'lower', reference });
        const errors = bad.get(name) ?? 0;
        if (errors > 0) notes.push(`${name} @${connections}: ${errors} errors or non-2xx responses`);
      }
      const bareName = refs.systems[0]?.name ?? '';
      const ratio = median(rps.get(agent.name) ?? []) / median(rps.get(bareName) ?? []);
      targets.push({
        target: `req/s @${connections} ≥ ${MIN_THROUGHPUT_RATIO} × ${bareName}`,
        measured: `${ratio.toFixed(2)}×`,
        pass: Number.isFinite(ratio) ? ratio >= MIN_THROUGHPUT_RATIO && (bad.get(agent.name) ?? 0) === 0 : null,
      });
      const cpuRatio = median(cpu.get(agent.name) ?? []) / median(cpu.get(bareName) ?? []);
      targets.push({
        target: `server CPU per request @${connections} ≤ ${MAX_CPU_RATIO} × ${bareName}`,
        measured: `${cpuRatio.toFixed(2)}×`,
        pass: Number.isFinite(cpuRatio) ? cpuRatio <= MAX_CPU_RATIO : null,
      });
    }
  } finally {
    await refs.stop();
  }
  notes.push(
    `${warm.keys} keys of 1 KiB cached; each run cycles through a window of ${Math.min(PATHS_PER_RUN, warm.keys)} of them, the window moving over the keyspace from run to run (?format=raw, so every system answers a 1 KiB body); the lean closed-loop client (bench/lib/lean-http.ts), ${ctx.profile.saturationAmount !== undefined ? `${ctx.profile.saturationAmount} requests` : `${ctx.profile.saturationS} s`} per run, pipelining 1.`,
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
  };
}

function push(map: Map<string, number[]>, key: string, value: number): void {
  const list = map.get(key) ?? [];
  list.push(value);
  map.set(key, list);
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
  const rps = new Map<string, number[]>();
  const cpu = new Map<string, number[]>();
  const codes = new Map<string, Record<string, number>>();
  for (let rep = 0; rep < ctx.profile.reps; rep++) {
    for (const sys of [plain, conditional]) {
      const m = await measure(ctx, sys, connections);
      push(rps, sys.name, m.run.rps);
      push(cpu, sys.name, m.cpuUsPerReq);
      const c = codes.get(sys.name) ?? {};
      for (const [code, n] of Object.entries(m.run.statusCodes)) c[code] = (c[code] ?? 0) + n;
      codes.set(sys.name, c);
    }
  }
  const rows: Row[] = [];
  for (const sys of [conditional, plain]) {
    rows.push({ system: sys.name, metric: `req/s @${connections} conns`, unit: 'req/s', values: rps.get(sys.name) ?? [], better: 'higher', reference: sys.reference });
    rows.push({ system: sys.name, metric: 'server CPU per request', unit: 'µs', values: cpu.get(sys.name) ?? [], better: 'lower', reference: sys.reference });
  }
  const c304 = codes.get(conditional.name) ?? {};
  const all304 = Object.keys(c304).every((k) => k === '304');
  const ratio = median(rps.get(conditional.name) ?? []) / median(rps.get(plain.name) ?? []);
  return {
    id: 'conditional-read',
    title: 'Conditional read (If-None-Match → 304)',
    status: 'ok',
    setup: `${warm.keys} keys, each request carrying the key's current ETag, ${connections} connections over the socket`,
    rows,
    targets: [
      { target: 'every conditional request answered 304', measured: JSON.stringify(c304), pass: all304 },
      { target: '304 req/s ≥ cached read req/s', measured: `${ratio.toFixed(2)}×`, pass: Number.isFinite(ratio) ? ratio >= 1 : null },
    ],
    notes: ['Both runs hit the same warm agent, interleaved; the 200 run is the cached read of the socket scenario.'],
  };
}

export async function cost(ctx: Context): Promise<Omit<ScenarioResult, 'seconds'>> {
  const warm = await ctx.warmAgent();
  const connections = ctx.profile.connections[0] ?? 16;
  const amount = ctx.profile.costRequests;
  const agent: System = { name: 'agent (socket)', reference: false, pid: warm.agent.child.pid, target: { kind: 'socket', socketPath: warm.agent.socketPath }, paths: warm.paths };
  const refs = await startRefs('socket', warm.paths, true);
  const cpuPer100k = new Map<string, number[]>();
  try {
    if (refs.redis) await redisFill(refs.redis, warm.keys);
    for (let rep = 0; rep < ctx.profile.reps; rep++) {
      for (const sys of [agent, ...refs.systems]) {
        const m = await measure(ctx, sys, connections, amount);
        push(cpuPer100k, sys.name, (m.cpuUsPerReq * 100_000) / 1e6);
      }
      if (refs.redis) {
        const cpu0 = cpuSeconds(refs.redis.child.pid);
        await redisBenchmark(refs.redis, connections, amount, warm.keys);
        push(cpuPer100k, 'Redis GET (socket)', ((cpuSeconds(refs.redis.child.pid) - cpu0) / amount) * 100_000);
      }
    }
  } finally {
    await refs.stop();
  }
  const rows: Row[] = [...cpuPer100k].map(([name, values]) => ({
    system: name,
    metric: 'CPU seconds per 100k requests',
    unit: 's',
    values,
    better: 'lower' as const,
    reference: name !== agent.name,
  }));
  const bareName = refs.systems[0]?.name ?? '';
  const ratio = median(cpuPer100k.get(agent.name) ?? []) / median(cpuPer100k.get(bareName) ?? []);
  return {
    id: 'cost',
    title: 'Cost: server CPU per 100k requests',
    status: 'ok',
    setup: `${amount.toLocaleString('en-US')} requests per run at ${connections} connections over the socket; CPU from /proc/PID/stat (utime + stime, ${'10 ms ticks'})`,
    rows,
    targets: [{ target: `agent ≤ ${MAX_CPU_RATIO} × ${bareName}`, measured: `${ratio.toFixed(2)}×`, pass: Number.isFinite(ratio) ? ratio <= MAX_CPU_RATIO : null }],
    notes: [...refs.skipped, 'CPU time is read in clock ticks (usually 10 ms), so short runs are coarse; the full profile runs 100k requests.'],
  };
}
