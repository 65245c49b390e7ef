/**
 * Runs of one server at saturation under the lean closed-loop client
 * (lean-load.ts), and the paired sequence a target ratio is measured by:
 * discarded warm-up runs of each of the two systems until settled, then
 * pairs of adjacent runs in ABBA order (subject, reference, reference,
 * subject, …). Each pair gives one ratio, measured seconds apart on the same
 * machine state; the target is judged by the median of those ratios, and
 * its range is the measurement's spread (bench/README.md, "How the
 * saturation ratios are computed").
 */
import { runClosedLoop } from './lean-load.ts';
import { coreBusySeconds, cpuSample } from './schedstat.ts';
import { SUT_CORE } from './proc.ts';
import { pooled, subjectFirst } from './stats.ts';
import type { Target, ThroughputResult } from './load.ts';

export interface System {
  readonly name: string;
  readonly reference: boolean;
  readonly pid: number;
  readonly target: Target;
  readonly paths: readonly string[];
  readonly headersFor?: (path: string) => Record<string, string>;
}

/** How long one run lasts: seconds at saturation, or a fixed number of requests. */
export type RunLength = { readonly durationS: number } | { readonly amount: number };

export interface Measured {
  readonly run: ThroughputResult;
  /** The server's CPU time over the run, in seconds. */
  readonly cpuS: number;
  readonly cpuUsPerReq: number;
  /** The server's CPU time over the run's wall time, in % of its one core. */
  readonly busyPercent: number;
  /** The same for this process, the load client. */
  readonly clientBusyPercent: number;
  /** Time the server's threads were runnable but waited for a core, in % of the run (its own GC threads count too). */
  readonly waitPercent: number;
  /** The SUT core's busy time that was not the server's, in % of the run: other processes on its core. */
  readonly otherOnCorePercent: number;
}

/**
 * Each run takes a window of PATHS_PER_RUN keys (its requests are built once
 * per run), and successive runs move the window over the keyspace.
 */
export const PATHS_PER_RUN = 1_000;
let runCounter = 0;

function window(paths: readonly string[]): string[] {
  const offset = ((runCounter++ * PATHS_PER_RUN) % Math.max(1, paths.length - PATHS_PER_RUN + 1)) | 0;
  return paths.slice(offset, offset + PATHS_PER_RUN);
}

export async function measure(sys: System, connections: number, length: RunLength): Promise<Measured> {
  const paths = window(sys.paths);
  const core0 = coreBusySeconds(SUT_CORE);
  const cpu0 = cpuSample(sys.pid);
  const client0 = process.cpuUsage();
  const run = await runClosedLoop(sys.target, {
    connections,
    paths,
    ...length,
    ...(sys.headersFor ? { headersFor: sys.headersFor } : {}),
  });
  const cpu1 = cpuSample(sys.pid);
  const client = process.cpuUsage(client0);
  const core = coreBusySeconds(SUT_CORE) - core0;
  const cpu = cpu1.cpuS - cpu0.cpuS;
  return {
    run,
    cpuS: cpu,
    cpuUsPerReq: run.requests > 0 ? (cpu / run.requests) * 1e6 : Number.NaN,
    busyPercent: (cpu / run.seconds) * 100,
    clientBusyPercent: ((client.user + client.system) / 1e6 / run.seconds) * 100,
    waitPercent: ((cpu1.waitS - cpu0.waitS) / run.seconds) * 100,
    otherOnCorePercent: Math.max(0, ((core - cpu) / run.seconds) * 100),
  };
}

/**
 * A warm-up run counts as settled when the system's own threads waited for
 * the core (their schedstat wait, less the time other processes held the
 * core) for under this share of it: its JIT compiler and GC threads,
 * pinned to the server's core with it, are no longer catching up. In the
 * suite's first paired runs the agent's threads waited 10–90 % of a run for
 * up to four pairs after start (most likely recompiling after the heap
 * trimmer dropped its code in the idle spell while the references started), at 1.2–2×
 * the CPU per request of its later runs.
 */
export const SETTLED_WAIT_PERCENT = 10;
/** Warm-up runs of one system at most (4.5 s at the full profile's 0.75 s). */
export const MAX_WARMUP_RUNS = 6;

/** Whether a run found the server settled; without schedstat (wait NaN) every run counts as settled. */
export function settled(m: Pick<Measured, 'waitPercent' | 'otherOnCorePercent'>): boolean {
  return !(m.waitPercent - m.otherOnCorePercent >= SETTLED_WAIT_PERCENT);
}

/** Warm-up runs (not kept) until one is settled; returns how many ran. */
async function warmUp(sys: System, connections: number, length: RunLength): Promise<number> {
  for (let run = 1; run < MAX_WARMUP_RUNS; run++) {
    if (settled(await measure(sys, connections, length))) return run;
  }
  await measure(sys, connections, length);
  return MAX_WARMUP_RUNS;
}

export interface PairedRuns {
  /** The measured runs of each side, pair by pair (index i of both is pair i). */
  readonly subject: readonly Measured[];
  readonly reference: readonly Measured[];
  /** Whether the subject ran first in each pair. */
  readonly subjectFirst: readonly boolean[];
  /** Warm-up runs each side took to settle (not kept). */
  readonly warmUpRuns: { readonly subject: number; readonly reference: number };
}

/** The subject's CPU per request over the reference's, each side's runs pooled (stats.ts `pooled`). */
export function pooledCpuRatio(p: PairedRuns): number {
  const side = (runs: readonly Measured[]): number => pooled(runs.map((m) => m.cpuS), runs.map((m) => m.run.requests));
  return side(p.subject) / side(p.reference);
}

/**
 * Warm-up runs of each system until one is settled (not kept: the first
 * runs after a start or an idle spell also pay for JIT tiering, connection
 * set-up and heap growth; the agent's first of three runs was its slowest
 * in most earlier suite runs), then `pairs` pairs in ABBA order; `afterQuad` runs after every second pair (the
 * references that take no part in the ratio), so each pair's two runs stay
 * next to each other.
 */
export async function runPaired(
  subject: System,
  reference: System,
  connections: number,
  length: RunLength,
  pairs: number,
  afterQuad?: (quad: number) => Promise<void>,
): Promise<PairedRuns> {
  const warmUpRuns = { subject: await warmUp(subject, connections, length), reference: await warmUp(reference, connections, length) };
  const out = { subject: [] as Measured[], reference: [] as Measured[], subjectFirst: [] as boolean[], warmUpRuns };
  for (let pair = 0; pair < pairs; pair++) {
    const first = subjectFirst(pair);
    const order = first ? [subject, reference] : [reference, subject];
    const [a, b] = [await measure(order[0] as System, connections, length), await measure(order[1] as System, connections, length)];
    out.subject.push(first ? a : b);
    out.reference.push(first ? b : a);
    out.subjectFirst.push(first);
    if (afterQuad && (pair % 2 === 1 || pair === pairs - 1)) await afterQuad(pair >> 1);
  }
  return out;
}
