/**
 * What the agent says about its memory: the limit, the derived bounds, the
 * cgroup usage and peak, and the headroom below the 80 % target, as a
 * `/readyz` check and as gauges on `/metrics`. Usage is read from the cgroup
 * at scrape time, so it counts what the OOM killer counts (tmpfs pages of
 * memory-backed volumes the agent wrote included).
 */
import { Gauge } from '../shared/metrics/gauge.ts';
import type { MetricsRegistry } from '../shared/metrics/registry.ts';
import type { Bytes } from '../shared/units.ts';
import { describeBytes as formatSize, type MemoryBudget } from './memory-budget.ts';
import type { MemoryLimit } from './memory-limit.ts';

const P = 'config_sidecar_agent_';

/** Bytes left below the target (negative when over); undefined without a limit or a readable usage. */
export function headroom(memory: MemoryLimit, budget: MemoryBudget): Bytes | undefined {
  const usage = memory.usage();
  return budget.target === undefined || usage === undefined ? undefined : budget.target - usage;
}

/** The `/readyz` check: informational (memory pressure is no reason to leave the Service). */
export function memoryCheck(memory: MemoryLimit, budget: MemoryBudget): { ok: boolean; detail: string } {
  const size = (b: Bytes | undefined): string => (b === undefined ? 'unknown' : formatSize(b));
  const usage = memory.usage();
  const room = headroom(memory, budget);
  const parts = [
    memory.limit === undefined ? 'no limit' : `limit ${formatSize(memory.limit)} (${memory.source})`,
    `usage ${size(usage)}, peak ${size(memory.peak())}`,
    room === undefined ? undefined : `headroom ${room < 0 ? '-' : ''}${formatSize(Math.abs(room))} below the target ${size(budget.target)}`,
    `cache ≤ ${formatSize(budget.cacheMaxBytes)} (${budget.cacheMaxBytesFrom})`,
    `≤ ${budget.maxSseClients} watch streams`,
    `≤ ${budget.maxConnections} connections per listener`,
    budget.oldSpaceBytes === undefined ? undefined : `V8 old space ${formatSize(budget.oldSpaceBytes)}`,
  ];
  return { ok: true, detail: parts.filter((p) => p !== undefined).join('; ') };
}

export function registerMemoryMetrics(registry: MetricsRegistry, memory: MemoryLimit, budget: MemoryBudget): void {
  const gauge = (name: string, help: string, read: () => number | undefined): void => {
    new Gauge({
      name: P + name,
      help,
      registers: [registry],
      collect() {
        const value = read();
        if (value !== undefined) this.set(value);
      },
    });
  };
  gauge('memory_limit_bytes', "The container's memory limit the bounds were derived from (absent without one).", () => memory.limit);
  gauge('memory_target_bytes', 'Cgroup usage the agent sizes itself to stay under (80 % of the limit).', () => budget.target);
  gauge('memory_cgroup_usage_bytes', "The memory cgroup's usage: what the OOM killer counts.", () => memory.usage());
  gauge('memory_cgroup_peak_bytes', "The memory cgroup's peak usage.", () => memory.peak());
  gauge('memory_headroom_bytes', 'The target minus the cgroup usage (negative when over).', () => headroom(memory, budget));
  gauge('memory_cache_max_bytes', 'The cache byte bound in force (flag, derived from the limit, or the default).', () => budget.cacheMaxBytes);
  gauge('memory_max_watch_streams', 'The /v1/watch stream cap in force.', () => budget.maxSseClients);
  gauge('memory_max_connections', 'The connection cap per data listener in force.', () => budget.maxConnections);
  gauge('memory_old_space_bytes', "V8's old-space limit set from the budget (absent when Node's own applies).", () => budget.oldSpaceBytes);
}
