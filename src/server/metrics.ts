/**
 * The server's Prometheus metrics, in one registry served by the admin
 * listener. Labels are bounded: routes are templates, never paths.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../shared/process-metrics.ts';

export interface ServerMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'route' | 'method' | 'status'>;
  readonly requestDuration: Histogram<'route' | 'method'>;
  readonly watchers: Gauge;
  readonly events: Counter<'type'>;
  readonly eventsSent: Counter;
  readonly rotations: Counter<'trigger'>;
  readonly storeErrors: Counter<'code'>;
  readonly watchBufferHighWater: Gauge;
  /** From a commit reaching the Watch fan-out to the last open stream being offered it. */
  readonly watchFanOutDuration: Histogram;
  readonly watchEnded: Counter<'reason'>;
  readonly authReloads: Counter<'outcome'>;
  readonly connectionsShed: Counter<'reason'>;
  readonly grpcConnectionsShed: Counter<'reason'>;
  readonly watchRefused: Counter<'reason'>;
  readonly auditDropped: Counter<'reason'>;
  /** Agent reports received, by outcome (ok or the refusal's error code). */
  readonly agentReports?: Counter<'outcome'>;
  /** Staged rollouts entering a state (rolling at start, rolled_back, completed, aborted, paused). */
  readonly rolloutTransitions?: Counter<'state'>;
}

/** Fleet gauges read at scrape time: live agents by state and the largest lag. */
export function registerFleetGauges(registry: Registry, snapshot: () => Promise<{ connected: number; disconnected: number; silent: number; maxLag: number }>): void {
  const p = 'config_sidecar_server_';
  new Gauge({
    name: `${p}agents`,
    help: 'Agents that reported within --agent-expiry, by watch stream state (connected, disconnected; silent: no report for 3 report intervals).',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      const s = await snapshot();
      this.set({ state: 'connected' }, s.connected);
      this.set({ state: 'disconnected' }, s.disconnected);
      this.set({ state: 'silent' }, s.silent);
    },
  });
  new Gauge({
    name: `${p}agent_max_lag_revisions`,
    help: 'The largest lag (current revision minus applied revision) among live agents.',
    registers: [registry],
    async collect() {
      this.set((await snapshot()).maxLag);
    },
  });
}

export function createServerMetrics(): ServerMetrics {
  const registry = new Registry();
  collectProcessMetrics(registry, 'config_sidecar_server_');
  const p = 'config_sidecar_server_';
  return {
    registry,
    requests: new Counter({ name: `${p}http_requests_total`, help: 'REST requests by route template, method and status.', labelNames: ['route', 'method', 'status'], registers: [registry] }),
    requestDuration: new Histogram({
      name: `${p}http_request_duration_seconds`,
      help: 'REST request latency by route template.',
      labelNames: ['route', 'method'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    watchers: new Gauge({ name: `${p}watch_streams`, help: 'Open gRPC Watch streams.', registers: [registry] }),
    events: new Counter({ name: `${p}events_total`, help: 'Events committed to the log, by type.', labelNames: ['type'], registers: [registry] }),
    eventsSent: new Counter({ name: `${p}watch_events_sent_total`, help: 'Events written to watch streams (all streams).', registers: [registry] }),
    rotations: new Counter({ name: `${p}key_rotations_total`, help: 'DEK rotations, by trigger (api, policy).', labelNames: ['trigger'], registers: [registry] }),
    storeErrors: new Counter({ name: `${p}store_errors_total`, help: 'Store and decryption failures, by error code.', labelNames: ['code'], registers: [registry] }),
    watchBufferHighWater: new Gauge({
      name: `${p}watch_buffer_high_water`,
      help: 'Most events ever queued for one watch stream; never above --watch-buffer.',
      registers: [registry],
    }),
    watchFanOutDuration: new Histogram({
      name: `${p}watch_fanout_duration_seconds`,
      help: 'From a commit reaching the Watch fan-out to the last open stream being offered its events (per batch).',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    watchEnded: new Counter({ name: `${p}watch_streams_ended_total`, help: 'Watch streams ended by the server, by reason.', labelNames: ['reason'], registers: [registry] }),
    authReloads: new Counter({ name: `${p}auth_reloads_total`, help: 'Auth file reloads, by outcome.', labelNames: ['outcome'], registers: [registry] }),
    connectionsShed: new Counter({
      name: `${p}connections_shed_total`,
      help: 'REST connections closed at --max-connections: oldest_pending (had not sent a request) or full (the newcomer).',
      labelNames: ['reason'],
      registers: [registry],
    }),
    grpcConnectionsShed: new Counter({
      name: `${p}grpc_connections_shed_total`,
      help: 'gRPC connections closed by the listener: oldest_pending (had not started a call) or full (the newcomer) at --max-grpc-connections, first_call_timeout (no call within --grpc-first-call-timeout).',
      labelNames: ['reason'],
      registers: [registry],
    }),
    watchRefused: new Counter({ name: `${p}watch_refused_total`, help: 'Watch opens refused before a stream opened, by reason (unauthenticated: no or a bad token; streams, rate: a per-pod limit).', labelNames: ['reason'], registers: [registry] }),
    auditDropped: new Counter({
      name: `${p}audit_rows_deleted_total`,
      help: 'Audit rows deleted by retention (age, rows), and refusals folded into an aggregate row (aggregated).',
      labelNames: ['reason'],
      registers: [registry],
    }),
    agentReports: new Counter({ name: `${p}agent_reports_total`, help: 'Agent reports received, by outcome (ok or the error code).', labelNames: ['outcome'], registers: [registry] }),
    rolloutTransitions: new Counter({ name: `${p}rollout_transitions_total`, help: 'Staged rollouts entering a state (rolling, paused, completed, rolled_back, aborted), by this replica.', labelNames: ['state'], registers: [registry] }),
  };
}
