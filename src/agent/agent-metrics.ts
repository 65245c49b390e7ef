/**
 * The agent's Prometheus metrics (served on the admin listener), on the
 * project's own small metrics module (src/shared/metrics/), not prom-client,
 * which costs every pod ~4 MiB of memory for its code (docs/FOOTPRINT-LOG.md,
 * "Footprint"). Counters on the read path are plain numbers added to the
 * families when scraped.
 */
import { Counter } from '../shared/metrics/counter.ts';
import { Gauge } from '../shared/metrics/gauge.ts';
import { Histogram } from '../shared/metrics/histogram.ts';
import { registerNodeMetrics } from '../shared/metrics/node-metrics.ts';
import { MetricsRegistry } from '../shared/metrics/registry.ts';
import type { CacheObserver } from './value-cache.ts';

const P = 'config_sidecar_agent_';

export interface AgentMetrics {
  readonly registry: MetricsRegistry;
  readonly cacheObserver: CacheObserver;
  readonly invalidations: Counter<'type'>;
  readonly ignoredEvents: Counter<'reason'>;
  readonly decryptionFailures: Counter;
  readonly upstreamLatency: Histogram<'route' | 'outcome'>;
  readonly streamReconnects: Counter;
  readonly streamConnected: Gauge;
  readonly appliedRevision: Gauge;
  readonly revisionLag: Gauge;
  readonly eventApplySeconds: Histogram;
  /** One data API response (batched: reaches `requests_total` when scraped). */
  readonly countResponse: (listener: string, status: number) => void;
  readonly refused: Counter<'reason'>;
  readonly sseClients: Gauge;
  /** Change sets applied as one unit. Optional so a hand-built metrics object in a unit test needs no change. */
  readonly changeSetsApplied?: Counter;
  /** Fills from a revision the agent had not applied yet, held until it had (or the wait ran out). */
  readonly futureFillWaits?: Counter<'outcome'>;
}

export function createAgentMetrics(gauges: { entries: () => number; bytes: () => number }): AgentMetrics {
  const registry = new MetricsRegistry();
  registerNodeMetrics(registry, P);
  const counter = <L extends string>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> =>
    new Counter({ name: P + name, help, labelNames, registers: [registry] });
  // Counted per read on the hot path: kept in plain numbers and added to the families when scraped,
  // so a cached read builds no label key.
  let pendingHits = 0;
  const pendingResponses: Record<string, Map<number, number>> = { socket: new Map(), tcp: new Map() };
  new Counter({
    name: `${P}cache_hits_total`,
    help: 'Reads answered from the cache.',
    registers: [registry],
    collect() {
      if (pendingHits > 0) this.inc(pendingHits);
      pendingHits = 0;
    },
  });
  new Counter({
    name: `${P}requests_total`,
    help: 'Data API requests by listener and status.',
    labelNames: ['listener', 'status'],
    registers: [registry],
    collect() {
      for (const [listener, byStatus] of Object.entries(pendingResponses)) {
        for (const [status, n] of byStatus) this.inc({ listener, status: String(status) }, n);
        byStatus.clear();
      }
    },
  });
  const misses = counter('cache_misses_total', 'Reads that started an upstream fetch.');
  const coalesced = counter('cache_coalesced_waits_total', 'Reads that joined a fetch already in flight.');
  const stale = counter('cache_stale_serves_total', 'Reads answered with a stale value (server unreachable).');
  const evictions = counter('cache_evictions_total', 'Entries evicted for capacity.', ['reason']);
  const superseded = counter('cache_superseded_fetches_total', 'Fetches discarded because an event for the key landed meanwhile.');
  const upstreamFailures = counter('upstream_failures_total', 'Upstream fetches that failed, by error code.', ['code']);
  new Gauge({ name: `${P}cache_entries`, help: 'Entries in the value cache.', registers: [registry], collect() { this.set(gauges.entries()); } });
  new Gauge({ name: `${P}cache_bytes`, help: 'Bytes counted against --cache-max-bytes.', registers: [registry], collect() { this.set(gauges.bytes()); } });
  return {
    registry,
    cacheObserver: {
      hit: () => {
        pendingHits += 1;
      },
      miss: () => misses.inc(),
      coalesced: () => coalesced.inc(),
      stale: () => stale.inc(),
      eviction: (reason) => evictions.inc({ reason }),
      superseded: () => superseded.inc(),
      upstreamFailure: (code) => upstreamFailures.inc({ code }),
    },
    invalidations: counter('invalidations_total', 'Cache invalidations by watch event type.', ['type']),
    ignoredEvents: counter('ignored_events_total', 'Watch events not applied (outside --prefix).', ['reason']),
    decryptionFailures: counter('decryption_failures_total', 'Envelopes that failed GCM authentication (never cached or served).'),
    upstreamLatency: new Histogram({
      name: `${P}upstream_request_duration_seconds`,
      help: 'Upstream REST call latency, retries included.',
      labelNames: ['route', 'outcome'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    streamReconnects: counter('stream_reconnects_total', 'Watch stream reconnect attempts.'),
    streamConnected: new Gauge({ name: `${P}stream_connected`, help: '1 while the watch stream is connected.', registers: [registry] }),
    appliedRevision: new Gauge({ name: `${P}applied_revision`, help: 'The last revision the agent applied.', registers: [registry] }),
    revisionLag: new Gauge({ name: `${P}revision_lag`, help: "The server's current revision (last heartbeat) minus the applied revision.", registers: [registry] }),
    eventApplySeconds: new Histogram({
      name: `${P}event_apply_lag_seconds`,
      help: 'Time from receiving a watch event to having applied it (cache and subscribers).',
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
      registers: [registry],
    }),
    countResponse: (listener, status) => {
      const byStatus = pendingResponses[listener] ?? (pendingResponses[listener] = new Map());
      byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
    },
    refused: counter('refused_requests_total', 'Data API requests refused before routing, by reason.', ['reason']),
    sseClients: new Gauge({ name: `${P}sse_clients`, help: 'Open /v1/watch streams.', registers: [registry] }),
    changeSetsApplied: counter('change_sets_applied_total', 'Change sets applied as one unit (every member at once).'),
    futureFillWaits: counter('future_fill_waits_total', 'Fetched values newer than the applied revision, held until the stream applied it (applied) or the wait ran out (timeout).', ['outcome']),
  };
}
