/**
 * prom-client's default Node.js process metrics, minus the three gauges whose
 * names break the Prometheus naming rules: `nodejs_active_handles_total`,
 * `nodejs_active_requests_total` and `nodejs_active_resources_total` are gauges
 * ending in `_total`, which `promtool check metrics` rejects (a `_total` name
 * means a counter to every Prometheus tool). The per-type gauges
 * `nodejs_active_handles{type}` etc. stay; `sum()` over them is the total.
 */
import { collectDefaultMetrics, type Registry } from 'prom-client';

const GAUGES_NAMED_LIKE_COUNTERS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'] as const;

export function collectProcessMetrics(registry: Registry, prefix: string): void {
  collectDefaultMetrics({ register: registry, prefix });
  for (const name of GAUGES_NAMED_LIKE_COUNTERS) registry.removeSingleMetric(prefix + name);
}
