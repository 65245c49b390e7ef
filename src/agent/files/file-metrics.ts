/**
 * Prometheus metrics of the file renderer, registered on the agent's registry.
 * The `file` label is a configured destination, so its cardinality is bounded
 * by the config (at most 256 entries), never by traffic.
 */
import { Counter } from '../../shared/metrics/counter.ts';
import { Gauge } from '../../shared/metrics/gauge.ts';
import { Histogram } from '../../shared/metrics/histogram.ts';
import type { MetricsRegistry } from '../../shared/metrics/registry.ts';

const P = 'config_sidecar_agent_files_';

/** Event-to-file lag buckets (seconds): the target is milliseconds, the tail shows a slow server. */
const LAG_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface FileMetrics {
  /** Files whose bytes changed and were published. */
  readonly renders: Counter<'file'>;
  /** Re-renders whose output bytes equalled the published ones (nothing written). */
  readonly skips: Counter<'file'>;
  /** Render or write failures; `reason` is a FileRenderError reason or an errno code. */
  readonly failures: Counter<'file' | 'reason'>;
  /** Files restored after someone else changed or deleted them. */
  readonly restores: Counter<'file' | 'kind'>;
  /** 1 when the file's last render and write succeeded. */
  readonly healthy: Gauge<'file'>;
  /** From an applied event reaching the renderer to the affected files being visible. */
  readonly eventLag: Histogram;
  /** Snapshots published (each one swaps `..data`). */
  readonly publications: Counter;
}

function existing<T>(registry: MetricsRegistry, name: string): T | undefined {
  return registry.getSingleMetric(name) as T | undefined;
}

/** Creates the metrics once per registry (a reconfigured or restarted renderer reuses them). */
export function fileMetrics(registry: MetricsRegistry): FileMetrics {
  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> =>
    existing<Counter<L>>(registry, P + name) ?? new Counter<L>({ name: P + name, help, labelNames, registers: [registry] });
  return {
    renders: counter('renders_total', 'Files rendered with new bytes and published.', ['file']),
    skips: counter('skips_total', 'Re-renders skipped because the output bytes did not change.', ['file']),
    failures: counter('failures_total', 'File render or write failures, by reason; the last good file stays in place.', ['file', 'reason']),
    restores: counter('restores_total', 'Rendered files restored after being changed or deleted by someone else.', ['file', 'kind']),
    healthy:
      existing<Gauge<'file'>>(registry, `${P}healthy`) ??
      new Gauge({ name: `${P}healthy`, help: '1 when the file is current, 0 when its last render or write failed.', labelNames: ['file'], registers: [registry] }),
    eventLag:
      existing<Histogram>(registry, `${P}event_to_file_seconds`) ??
      new Histogram({ name: `${P}event_to_file_seconds`, help: 'Lag from an applied event to the affected files being published.', buckets: LAG_BUCKETS_S, registers: [registry] }),
    publications: counter('publications_total', 'Snapshots published (atomic ..data swaps).', []),
  };
}
