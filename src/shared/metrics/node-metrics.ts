/**
 * The process and Node.js runtime metrics every component exposes, under a
 * prefix: the same families, types, labels and HELP text as prom-client's
 * `collectDefaultMetrics` (minus its three `*_total` gauges, which
 * `promtool check metrics` rejects), written for the agent so that its
 * process does not load prom-client. Values are read when scraped, except
 * the two that must watch continuously: the event-loop delay histogram
 * (perf_hooks, 10 ms resolution, reset at each scrape) and GC durations (a
 * `gc` PerformanceObserver, every entry counted).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { constants, monitorEventLoopDelay, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { getHeapSpaceStatistics } from 'node:v8';
import { Counter } from './counter.ts';
import { Gauge } from './gauge.ts';
import { Histogram } from './histogram.ts';
import type { MetricRegistrar } from './metric.ts';

/** prom-client's `eventLoopMonitoringPrecision` default. */
const EVENT_LOOP_RESOLUTION_MS = 10;
/** prom-client's default GC duration buckets (seconds). */
const GC_DURATION_BUCKETS_S = [0.001, 0.01, 0.1, 1, 2, 5];
const NS_PER_S = 1e9;

const GC_KINDS: Readonly<Record<number, string>> = {
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

/** Node's undocumented handle and request lists, which prom-client counts by constructor name. */
interface ProcessInternals {
  _getActiveHandles?: () => unknown[];
  _getActiveRequests?: () => unknown[];
}

function countBy(items: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(item, (counts.get(item) ?? 0) + 1);
  return counts;
}

function constructorNames(list: readonly unknown[]): string[] {
  return list.flatMap((o) => {
    const name = (o as { constructor?: { name?: unknown } } | null)?.constructor?.name;
    return typeof name === 'string' ? [name] : [];
  });
}

/** `VmRSS`, `VmSize`, `VmData` in bytes from /proc/self/status; undefined off Linux. */
function procStatus(): Record<string, number> | undefined {
  try {
    const out: Record<string, number> = {};
    for (const line of readFileSync('/proc/self/status', 'utf8').split('\n')) {
      const m = /^(VmRSS|VmSize|VmData):\s+(\d+) kB$/.exec(line);
      if (m?.[1] !== undefined) out[m[1]] = Number(m[2]) * 1024;
    }
    return out;
  } catch {
    return undefined;
  }
}

function maxOpenFiles(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    return line === undefined ? undefined : Number(line.split(/ {2,}/)[1]);
  } catch {
    return undefined;
  }
}

/** Registers the families on `registry`; the event-loop monitor and GC observer run from now on. */
export function registerNodeMetrics(registry: MetricRegistrar, prefix: string): void {
  const registers = [registry];
  const gauge = (name: string, help: string, collect?: (this: Gauge) => void): Gauge => new Gauge({ name: prefix + name, help, registers, ...(collect && { collect }) });
  const byType = (name: string, help: string, read: () => Map<string, number>): void => {
    new Gauge<'type'>({
      name: prefix + name,
      help,
      labelNames: ['type'],
      registers,
      collect() {
        this.reset();
        for (const [type, n] of read()) this.set({ type }, n);
      },
    });
  };

  // CPU since the process started (prom-client counted from its registration).
  let cpu = { user: 0, system: 0 };
  new Counter({
    name: `${prefix}process_cpu_user_seconds_total`,
    help: 'Total user CPU time spent in seconds.',
    registers,
    collect() {
      const now = process.cpuUsage();
      const user = Math.max(0, now.user - cpu.user) / 1e6;
      const system = Math.max(0, now.system - cpu.system) / 1e6;
      cpu = now;
      this.inc(user);
      cpuSystem.inc(system);
      cpuTotal.inc(user + system);
    },
  });
  const cpuSystem = new Counter({ name: `${prefix}process_cpu_system_seconds_total`, help: 'Total system CPU time spent in seconds.', registers });
  const cpuTotal = new Counter({ name: `${prefix}process_cpu_seconds_total`, help: 'Total user and system CPU time spent in seconds.', registers });

  const startSeconds = Math.round(Date.now() / 1000 - process.uptime());
  gauge('process_start_time_seconds', 'Start time of the process since unix epoch in seconds.', function () {
    this.set(startSeconds);
  });
  gauge('process_resident_memory_bytes', 'Resident memory size in bytes.', function () {
    const status = procStatus();
    if (status?.VmRSS === undefined) {
      this.set(process.memoryUsage.rss());
      return;
    }
    this.set(status.VmRSS);
    if (status.VmSize !== undefined) virtual.set(status.VmSize);
    if (status.VmData !== undefined) heap.set(status.VmData);
  });
  const virtual = gauge('process_virtual_memory_bytes', 'Virtual memory size in bytes.');
  const heap = gauge('process_heap_bytes', 'Process heap size in bytes.');
  gauge('process_open_fds', 'Number of open file descriptors.', function () {
    try {
      // Minus the descriptor readdirSync itself held while listing.
      this.set(readdirSync('/proc/self/fd').length - 1);
    } catch {
      // not Linux: stays 0
    }
  });
  const maxFds = maxOpenFiles();
  if (maxFds !== undefined) gauge('process_max_fds', 'Maximum number of open file descriptors.', function () {
    this.set(maxFds);
  });

  const delay = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
  delay.enable();
  new Gauge({
    name: `${prefix}nodejs_eventloop_lag_seconds`,
    help: 'Lag of event loop in seconds.',
    registers,
    async collect() {
      lagMin.set(delay.min / NS_PER_S);
      lagMax.set(delay.max / NS_PER_S);
      lagMean.set(delay.mean / NS_PER_S);
      lagStddev.set(delay.stddev / NS_PER_S);
      lagP50.set(delay.percentile(50) / NS_PER_S);
      lagP90.set(delay.percentile(90) / NS_PER_S);
      lagP99.set(delay.percentile(99) / NS_PER_S);
      delay.reset();
      // How long a callback queued now waits for the loop (measured in this scrape, not the previous one).
      const start = process.hrtime.bigint();
      await new Promise<void>((resolve) => setImmediate(resolve));
      this.set(Number(process.hrtime.bigint() - start) / NS_PER_S);
    },
  });
  const lagMin = gauge('nodejs_eventloop_lag_min_seconds', 'The minimum recorded event loop delay.');
  const lagMax = gauge('nodejs_eventloop_lag_max_seconds', 'The maximum recorded event loop delay.');
  const lagMean = gauge('nodejs_eventloop_lag_mean_seconds', 'The mean of the recorded event loop delays.');
  const lagStddev = gauge('nodejs_eventloop_lag_stddev_seconds', 'The standard deviation of the recorded event loop delays.');
  const lagP50 = gauge('nodejs_eventloop_lag_p50_seconds', 'The 50th percentile of the recorded event loop delays.');
  const lagP90 = gauge('nodejs_eventloop_lag_p90_seconds', 'The 90th percentile of the recorded event loop delays.');
  const lagP99 = gauge('nodejs_eventloop_lag_p99_seconds', 'The 99th percentile of the recorded event loop delays.');

  byType('nodejs_active_resources', 'Number of active resources that are currently keeping the event loop alive, grouped by async resource type.', () => countBy(process.getActiveResourcesInfo()));
  const internals = process as unknown as ProcessInternals;
  byType('nodejs_active_handles', 'Number of active libuv handles grouped by handle type. Every handle type is C++ class name.', () => countBy(constructorNames(internals._getActiveHandles?.() ?? [])));
  byType('nodejs_active_requests', 'Number of active libuv requests grouped by request type. Every request type is C++ class name.', () => countBy(constructorNames(internals._getActiveRequests?.() ?? [])));

  gauge('nodejs_heap_size_total_bytes', 'Process heap size from Node.js in bytes.', function () {
    const usage = process.memoryUsage();
    this.set(usage.heapTotal);
    heapUsed.set(usage.heapUsed);
    external.set(usage.external);
  });
  const heapUsed = gauge('nodejs_heap_size_used_bytes', 'Process heap size used from Node.js in bytes.');
  const external = gauge('nodejs_external_memory_bytes', 'Node.js external memory size in bytes.');

  const space = (kind: 'total' | 'used' | 'available', collect?: (this: Gauge<'space'>) => void): Gauge<'space'> =>
    new Gauge<'space'>({ name: `${prefix}nodejs_heap_space_size_${kind}_bytes`, help: `Process heap space size ${kind} from Node.js in bytes.`, labelNames: ['space'], registers, ...(collect && { collect }) });
  space('total', function () {
    for (const s of getHeapSpaceStatistics()) {
      const name = s.space_name.slice(0, s.space_name.indexOf('_space'));
      this.set({ space: name }, s.space_size);
      spaceUsed.set({ space: name }, s.space_used_size);
      spaceAvailable.set({ space: name }, s.space_available_size);
    }
  });
  const spaceUsed = space('used');
  const spaceAvailable = space('available');

  const [major = '', minor = '', patch = ''] = process.versions.node.split('.');
  new Gauge<'version' | 'major' | 'minor' | 'patch'>({
    name: `${prefix}nodejs_version_info`,
    help: 'Node.js version info.',
    labelNames: ['version', 'major', 'minor', 'patch'],
    registers,
    collect() {
      this.set({ version: process.version, major, minor, patch }, 1);
    },
  });

  const gc = new Histogram<'kind'>({
    name: `${prefix}nodejs_gc_duration_seconds`,
    help: 'Garbage collection duration by kind, one of major, minor, incremental or weakcb.',
    labelNames: ['kind'],
    buckets: GC_DURATION_BUCKETS_S,
    registers,
  });
  // Every entry of a batch (prom-client observed only the first of each).
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries() as Array<PerformanceEntry & { detail?: { kind?: number } }>) {
      const kind = GC_KINDS[entry.detail?.kind ?? -1];
      if (kind !== undefined) gc.observe({ kind }, entry.duration / 1000);
    }
  }).observe({ entryTypes: ['gc'] });
}
