/**
 * The warm-restart snapshot's metrics: writes, the bytes its memory-backed
 * pages hold (counted against the container's memory limit), snapshots
 * refused at start by reason, and values restored.
 */
import { Counter } from '../../shared/metrics/counter.ts';
import { Gauge } from '../../shared/metrics/gauge.ts';
import type { MetricsRegistry } from '../../shared/metrics/registry.ts';
import type { RefusalReason } from './snapshot-format.ts';

const P = 'config_sidecar_agent_snapshot_';

export interface SnapshotMetrics {
  readonly writes: Counter<'outcome'>;
  readonly bytes: Gauge;
  readonly takenAt: Gauge;
  readonly refused: Counter<'reason'>;
  readonly restoredValues: Gauge;
}

export function createSnapshotMetrics(registry: MetricsRegistry): SnapshotMetrics {
  const refused = new Counter({ name: `${P}refused_total`, help: 'Snapshots refused (never served), by reason: truncated, format, foreign-key, foreign-scope, tampered, expired at start; foreign-store when the first stream names another store (its values are dropped).', labelNames: ['reason'], registers: [registry] });
  // Every reason shows as 0 before the first refusal, so an alert can rate() it from the start.
  for (const reason of ['truncated', 'format', 'foreign-key', 'foreign-scope', 'tampered', 'expired', 'foreign-store'] satisfies Array<RefusalReason | 'foreign-store'>) refused.inc({ reason }, 0);
  return {
    writes: new Counter({ name: `${P}writes_total`, help: 'Snapshot writes, by outcome (ok, error).', labelNames: ['outcome'], registers: [registry] }),
    bytes: new Gauge({ name: `${P}bytes`, help: "Bytes of the snapshot file: memory-backed pages charged to the agent's memory limit.", registers: [registry] }),
    takenAt: new Gauge({ name: `${P}taken_timestamp_seconds`, help: 'Until when the values in the last snapshot written were known current (Unix seconds).', registers: [registry] }),
    refused,
    restoredValues: new Gauge({ name: `${P}restored_values`, help: 'Values restored from the snapshot at start.', registers: [registry] }),
  };
}
