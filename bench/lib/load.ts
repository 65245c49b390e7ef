/**
 * Load generation, run from the bench process (which pins itself to the load
 * core): autocannon for throughput at saturation, and an open-loop fixed-rate
 * client that times every request with process.hrtime into an HDR histogram
 * (autocannon's own histogram is whole milliseconds, too coarse below 1 ms).
 */
import autocannon from 'autocannon';
import * as hdr from 'hdr-histogram-js';
import { Pool } from 'undici';

export type Target =
  | { readonly kind: 'socket'; readonly socketPath: string; readonly headers?: Record<string, string> }
  | { readonly kind: 'tcp'; readonly url: string; readonly headers?: Record<string, string> };

export interface ThroughputResult {
  readonly requests: number;
  readonly seconds: number;
  readonly rps: number;
  readonly errors: number;
  readonly non2xx: number;
  readonly statusCodes: Record<string, number>;
}

/** Requests per second at saturation with `connections` keep-alive connections. */
export async function runAutocannon(
  target: Target,
  options: { connections: number; durationS?: number; amount?: number; paths: readonly string[]; headersFor?: (path: string) => Record<string, string> },
): Promise<ThroughputResult> {
  const url = target.kind === 'socket' ? 'http://localhost' : target.url;
  const requests = options.paths.map((path) => ({ method: 'GET' as const, path, headers: { ...target.headers, ...options.headersFor?.(path) } }));
  const started = process.hrtime.bigint();
  const result = await autocannon({
    url,
    ...(target.kind === 'socket' ? { socketPath: target.socketPath } : {}),
    connections: options.connections,
    pipelining: 1,
    ...(options.amount !== undefined ? { amount: options.amount } : { duration: options.durationS ?? 3 }),
    // Hard cap so a stuck server cannot hang the suite.
    timeout: 10,
    requests,
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const statusCodes: Record<string, number> = {};
  for (const [code, count] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = (count as { count: number }).count;
  const total = result.requests.total;
  return {
    requests: total,
    seconds: options.amount !== undefined ? seconds : result.duration,
    rps: options.amount !== undefined ? total / seconds : result.requests.average,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
    statusCodes,
  };
}

/** Percentile → microseconds, the shape stored in the report (no raw arrays). */
export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
  readonly mean: number;
  /** [percentile, µs] points for the distribution chart. */
  readonly curve: ReadonlyArray<readonly [number, number]>;
}

const CURVE_PERCENTILES = [0, 10, 25, 50, 75, 90, 95, 98, 99, 99.5, 99.9, 99.95, 99.99, 100];

export function newHistogram(): hdr.Histogram {
  // Nanoseconds, up to 60 s, 3 significant digits.
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: 3, useWebAssembly: false });
}

export function summarise(h: hdr.Histogram): LatencySummary {
  const us = (ns: number): number => Math.round(ns / 10) / 100;
  return {
    count: h.totalCount,
    p50: us(h.getValueAtPercentile(50)),
    p90: us(h.getValueAtPercentile(90)),
    p99: us(h.getValueAtPercentile(99)),
    p999: us(h.getValueAtPercentile(99.9)),
    max: us(h.maxValue),
    mean: us(h.mean),
    curve: CURVE_PERCENTILES.map((p) => [p, us(p === 100 ? h.maxValue : h.getValueAtPercentile(p))] as const),
  };
}

export interface FixedRateResult {
  readonly sent: number;
  /** Not sent because MAX_IN_FLIGHT requests were outstanding: the client (or the machine) fell behind the schedule. */
  readonly dropped: number;
  readonly completed: number;
  readonly errors: number;
  readonly statusCodes: Record<string, number>;
  readonly latency: LatencySummary;
  /** Achieved rate (requests started per second). */
  readonly rate: number;
}

export interface ResponseInfo {
  readonly path: string;
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
  /** hrtime (ns) when the request was started. */
  readonly startedNs: bigint;
}

/** Scheduler tick: requests due since the last tick are started together. */
const TICK_MS = 1;
/** Requests due while this many are in flight are dropped and counted (the system fell behind), so memory stays bounded. */
const MAX_IN_FLIGHT = 512;
/** Unrecorded rounds (one request per connection each) before the measured run. */
const WARMUP_ROUNDS = 50;

/**
 * Open-loop load at `rate` req/s for `durationS`: each request is started on
 * schedule whatever the previous ones did, and timed from start to the last
 * body byte with process.hrtime.
 */
export async function runFixedRate(
  target: Target,
  options: {
    rate: number;
    durationS: number;
    connections?: number;
    nextPath: (i: number) => string;
    onResponse?: (info: ResponseInfo) => void;
    headersFor?: (path: string) => Record<string, string> | undefined;
    /** Record into this histogram (one run's slices merged); the result's latency then covers every slice so far. */
    histogram?: hdr.Histogram;
  },
): Promise<FixedRateResult> {
  const pool =
    target.kind === 'socket'
      ? new Pool('http://localhost', { socketPath: target.socketPath, connections: options.connections ?? 8, pipelining: 1 })
      : new Pool(target.url, { connections: options.connections ?? 8, pipelining: 1 });
  const histogram = options.histogram ?? newHistogram();
  const statusCodes: Record<string, number> = {};
  let sent = 0;
  let completed = 0;
  let errors = 0;
  let dropped = 0;
  let inFlight = 0;
  const total = Math.round(options.rate * options.durationS);
  // Warm-up, not recorded: open the connections and let both sides' JIT settle.
  for (let w = 0; w < WARMUP_ROUNDS; w++) {
    await Promise.all(
      Array.from({ length: options.connections ?? 8 }, async (_, c) => {
        const path = options.nextPath(w * 64 + c);
        const res = await pool.request({ method: 'GET', path, headers: { ...target.headers, ...options.headersFor?.(path) } }).catch(() => undefined);
        await res?.body.dump();
      }),
    );
  }
  const started = process.hrtime.bigint();
  const one = async (i: number): Promise<void> => {
    const path = options.nextPath(i);
    inFlight++;
    const t0 = process.hrtime.bigint();
    try {
      const res = await pool.request({ method: 'GET', path, headers: { ...target.headers, ...options.headersFor?.(path) }, headersTimeout: 10_000, bodyTimeout: 10_000 });
      const body = Buffer.from(await res.body.arrayBuffer());
      const elapsed = Number(process.hrtime.bigint() - t0);
      histogram.recordValue(Math.max(1, elapsed));
      completed++;
      statusCodes[res.statusCode] = (statusCodes[res.statusCode] ?? 0) + 1;
      options.onResponse?.({ path, status: res.statusCode, headers: res.headers, body, startedNs: t0 });
    } catch {
      errors++;
    } finally {
      inFlight--;
    }
  };
  const pending = new Set<Promise<void>>();
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const elapsedS = Number(process.hrtime.bigint() - started) / 1e9;
      const due = Math.min(total, Math.floor(elapsedS * options.rate));
      while (sent < due) {
        if (inFlight >= MAX_IN_FLIGHT) {
          dropped++;
          sent++;
          continue;
        }
        const p = one(sent++);
        pending.add(p);
        void p.finally(() => pending.delete(p));
      }
      if (sent >= total) resolve();
      else setTimeout(tick, TICK_MS);
    };
    tick();
  });
  await Promise.all(pending);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await pool.close();
  return { sent, dropped, completed, errors, statusCodes, latency: summarise(histogram), rate: (sent - dropped) / seconds };
}
