/**
 * Read latency at a fixed rate (2,000 req/s, well below saturation): an
 * open-loop client (bench/lib/lean-load.ts) timing every request into an HDR
 * histogram, against the warm agent and the references on the same socket,
 * all loaded at once.
 */
import { runOpenLoops } from '../lib/lean-load.ts';
import { type LatencySummary, type Target } from '../lib/load.ts';
import { lruCacheInProcess, startBareHttp, startNginx, type RefServer } from '../lib/refs.ts';
import { SUT_CORE } from '../lib/proc.ts';
import { median } from '../lib/stats.ts';
import type { Context } from '../lib/context.ts';
import type { Row, ScenarioResult } from '../lib/types.ts';

const MAX_BEHIND = 512;
/**
 * Repetitions beyond the profile's: a repetition is now one run for every
 * system at once (it was one per system), so two more fit in less time than
 * the profile's took, and the median p99 rests on five stall draws, not three.
 */
const EXTRA_REPS = 2;
/** Keep-alive connections of the fixed-rate client (a handful, as an application would). */
const CLIENT_CONNECTIONS = 4;

export async function latencyFixedRate(ctx: Context): Promise<Omit<ScenarioResult, 'seconds'>> {
  const warm = await ctx.warmAgent();
  const notes: string[] = [];
  const refs: RefServer[] = [];
  const bare = await startBareHttp(SUT_CORE, 'socket');
  refs.push(bare);
  const systems: Array<{ name: string; target: Target; reference: boolean }> = [
    { name: 'agent (socket)', target: { kind: 'socket', socketPath: warm.agent.socketPath }, reference: false },
    { name: 'bare node:http (socket)', target: { kind: 'socket', socketPath: bare.socketPath as string }, reference: true },
  ];
  const nginx = await startNginx(SUT_CORE);
  if (typeof nginx === 'string') notes.push(`nginx skipped: ${nginx}`);
  else {
    refs.push(nginx);
    systems.push({ name: 'nginx (socket)', target: { kind: 'socket', socketPath: nginx.socketPath as string }, reference: true });
  }
  const { fixedRateS } = ctx.profile;
  const p50 = new Map<string, number[]>();
  const p99 = new Map<string, number[]>();
  const p999 = new Map<string, number[]>();
  const curves: Record<string, LatencySummary> = {};
  let errors = 0;
  let dropped = 0;
  try {
    const reps = ctx.profile.reps + EXTRA_REPS;
    for (let rep = 0; rep < reps; rep++) {
      // Every system at once, on one schedule: a stall of either core (this
      // machine is shared) lands on all of them alike, where taking turns
      // gave it to whichever system's turn it was (docs/ARCHITECTURE.md,
      // "Footprint (issue 15)", fixed-rate part).
      const results = await runOpenLoops(
        systems.map((sys) => ({
          target: sys.target,
          // Each repetition goes on through the keyspace where the last one stopped.
          nextPath: (i: number) => warm.paths[((i + rep * 1_000_003) * 7919) % warm.paths.length] as string,
        })),
        { rate: ctx.profile.fixedRate, durationS: fixedRateS, connections: CLIENT_CONNECTIONS },
      );
      systems.forEach((sys, k) => {
        const r = results[k];
        if (r === undefined) return;
        errors += sys.reference ? 0 : r.errors + r.completed - (r.statusCodes['200'] ?? 0);
        dropped += r.dropped;
        add(p50, sys.name, r.latency.p50);
        add(p99, sys.name, r.latency.p99);
        add(p999, sys.name, r.latency.p999);
        // Keep the distribution of the middle repetition for the chart.
        if (rep === Math.floor(reps / 2)) curves[sys.name] = r.latency;
      });
    }
  } finally {
    for (const r of refs) await r.stop();
  }
  const lru = lruCacheInProcess(warm.keys, 200_000);
  curves['lru-cache in-process get'] = lru.latency;
  const rows: Row[] = [];
  for (const sys of systems) {
    rows.push({ system: sys.name, metric: 'p50', unit: 'µs', values: p50.get(sys.name) ?? [], better: 'lower', reference: sys.reference });
    rows.push({ system: sys.name, metric: 'p99', unit: 'µs', values: p99.get(sys.name) ?? [], better: 'lower', reference: sys.reference });
    rows.push({ system: sys.name, metric: 'p99.9', unit: 'µs', values: p999.get(sys.name) ?? [], better: 'lower', reference: sys.reference });
  }
  rows.push({ system: 'lru-cache in-process get', metric: 'p50', unit: 'µs', values: [lru.latency.p50], better: 'lower', reference: true, note: `${Math.round(lru.opsPerSecond).toLocaleString('en-US')} gets/s, ${lru.nsPerOp.toFixed(0)} ns/get in a tight loop` });
  rows.push({ system: 'lru-cache in-process get', metric: 'p99', unit: 'µs', values: [lru.latency.p99], better: 'lower', reference: true });
  const agentP99 = median(p99.get('agent (socket)') ?? []);
  const bareP99 = median(p99.get('bare node:http (socket)') ?? []);
  return {
    id: 'latency-fixed-rate',
    title: `Read latency at a fixed ${ctx.profile.fixedRate.toLocaleString('en-US')} req/s`,
    status: 'ok',
    setup: `open-loop client (bench/lib/lean-http.ts), ${CLIENT_CONNECTIONS} keep-alive connections per system over the socket, ${ctx.profile.fixedRate} req/s to each system for ${fixedRateS} s per repetition, every system loaded at once on one 1 ms schedule, every request timed into the system's HDR histogram for the repetition (ns)`,
    rows,
    latency: curves,
    targets: [
      { target: 'agent p99 ≤ 1 ms', measured: `${agentP99.toFixed(0)} µs`, pass: Number.isFinite(agentP99) ? agentP99 <= 1000 && errors === 0 : null },
      { target: 'agent p99 ≤ 1.5 × bare node:http p99', measured: `${(agentP99 / bareP99).toFixed(2)}×`, pass: Number.isFinite(agentP99 / bareP99) ? agentP99 <= 1.5 * bareP99 : null },
    ],
    notes: [
      ...notes,
      ...(errors > 0 ? [`agent: ${errors} errors or non-200 responses`] : []),
      ...(dropped > 0 ? [`${dropped} requests not sent on schedule (the client fell ${MAX_BEHIND} requests behind: the machine was busy)`] : []),
      `agent p99 / bare node:http p99 per repetition (the same seconds, so the pairs are comparable): ${(p99.get('agent (socket)') ?? []).map((v, i) => `${(v / (p99.get('bare node:http (socket)')?.[i] ?? Number.NaN)).toFixed(2)}×`).join(', ')}.`,
      'Latency includes the client on the load core; it is the same client for every system, and the systems are loaded together, so a stall of either core (the machine is shared) lands on each of them alike.',
      'lru-cache is timed per get in this process (hrtime overhead included): what an application caching values itself pays.',
    ],
  };
}

function add(map: Map<string, number[]>, key: string, value: number): void {
  map.set(key, [...(map.get(key) ?? []), value]);
}
