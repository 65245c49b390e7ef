/**
 * The FleetService contract (watch.proto v1.2; v1.3 app health, v1.4 files published): an agent's report of where it
 * is, and the server's answer. Loaded from the same .proto as Watch, with the
 * same loader options; uint64 travels as a string and becomes a number here.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { WATCH_PROTO_PATH } from './watch-proto.ts';

export const FLEET_SERVICE_NAME = 'configsidecar.v1.FleetService';

export { AGENT_ID_RE } from './agent-id-format.ts';

export const AGENT_HEALTH = ['ok', 'degraded', 'starting'] as const;
export type AgentHealth = (typeof AGENT_HEALTH)[number];

/** The application's own signal, as the agent last heard it (v1.3); unknown until it says. */
export const APP_HEALTH = ['unknown', 'healthy', 'unhealthy'] as const;
export type AppHealth = (typeof APP_HEALTH)[number];
/** Longest reason an agent reports (the POST /v1/health bound). */
export const HEALTH_REASON_MAX_CHARS = 200;

export interface RolloutVersion {
  readonly rollout: string;
  readonly item: string;
  readonly version: number;
}

export interface AgentReport {
  readonly agentId: string;
  readonly prefixes: readonly string[];
  readonly appliedRevision: number;
  readonly storeId: string;
  readonly connected: boolean;
  readonly health: AgentHealth;
  readonly rollouts: readonly RolloutVersion[];
  /** Absent from older agents: unknown. */
  readonly appHealth?: AppHealth;
  readonly healthReason?: string;
  /** The agent's applied revision when `appHealth` was last observed (0: never). */
  readonly appHealthRevision?: number;
  /** v1.4: the agent renders files; absent (older agents, no --files-dir): it does not. */
  readonly rendersFiles?: boolean;
  /** v1.4: the revision its files are published at (meaningful with `rendersFiles`). */
  readonly filesRevision?: number;
}

export interface ReportAck {
  readonly currentRevision: number;
  readonly nextReportMs: number;
}

interface WireReport {
  agentId?: string;
  prefixes?: string[];
  appliedRevision?: string;
  storeId?: string;
  connected?: boolean;
  health?: string;
  rollouts?: Array<{ rollout?: string; item?: string; version?: string }>;
  appHealth?: string;
  healthReason?: string;
  appHealthRevision?: string;
  rendersFiles?: boolean;
  filesRevision?: string;
}

interface WireAck {
  currentRevision?: string;
  nextReportMs?: number;
}

let cached: grpc.ServiceDefinition | undefined;

export function fleetServiceDefinition(): grpc.ServiceDefinition {
  if (!cached) {
    const definition = protoLoader.loadSync(WATCH_PROTO_PATH, { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(definition) as unknown as { configsidecar: { v1: { FleetService: grpc.ServiceClientConstructor } } };
    cached = pkg.configsidecar.v1.FleetService.service;
  }
  return cached;
}

export function fleetClientConstructor(): grpc.ServiceClientConstructor {
  return grpc.makeClientConstructor(fleetServiceDefinition(), FLEET_SERVICE_NAME);
}

export function reportToWire(report: AgentReport): WireReport {
  return {
    agentId: report.agentId,
    prefixes: [...report.prefixes],
    appliedRevision: String(report.appliedRevision),
    storeId: report.storeId,
    connected: report.connected,
    health: report.health,
    rollouts: report.rollouts.map((r) => ({ rollout: r.rollout, item: r.item, version: String(r.version) })),
    appHealth: report.appHealth ?? 'unknown',
    healthReason: report.healthReason ?? '',
    appHealthRevision: String(report.appHealthRevision ?? 0),
    rendersFiles: report.rendersFiles === true,
    filesRevision: String(report.filesRevision ?? 0),
  };
}

/** Unknown health values (a newer agent) read as degraded rather than failing the report. */
export function reportFromWire(wire: WireReport): AgentReport {
  const health = AGENT_HEALTH.includes(wire.health as AgentHealth) ? (wire.health as AgentHealth) : 'degraded';
  return {
    agentId: wire.agentId ?? '',
    prefixes: wire.prefixes ?? [],
    appliedRevision: Number(wire.appliedRevision ?? 0),
    storeId: wire.storeId ?? '',
    connected: wire.connected ?? false,
    health,
    rollouts: (wire.rollouts ?? []).map((r) => ({ rollout: r.rollout ?? '', item: r.item ?? '', version: Number(r.version ?? 0) })),
    appHealth: APP_HEALTH.includes(wire.appHealth as AppHealth) ? (wire.appHealth as AppHealth) : 'unknown',
    healthReason: (wire.healthReason ?? '').slice(0, HEALTH_REASON_MAX_CHARS),
    appHealthRevision: Number(wire.appHealthRevision ?? 0),
    ...(wire.rendersFiles === true ? { rendersFiles: true, filesRevision: Number(wire.filesRevision ?? 0) } : {}),
  };
}

export function ackToWire(ack: ReportAck): WireAck {
  return { currentRevision: String(ack.currentRevision), nextReportMs: ack.nextReportMs };
}

export function ackFromWire(wire: WireAck): ReportAck {
  return { currentRevision: Number(wire.currentRevision ?? 0), nextReportMs: wire.nextReportMs ?? 0 };
}

/** One agent as GET /v1/agents lists it. */
export interface AgentView {
  readonly id: string;
  readonly subject: string;
  readonly prefixes: readonly string[];
  readonly appliedRevision: number;
  /** The server's current revision minus the agent's applied one (0 when caught up). */
  readonly lag: number;
  /** Its Watch stream is up: it said so in a report that is not silent. */
  readonly connected: boolean;
  /** Its reports stopped (none for 3 report intervals): shown so until --agent-expiry drops it, never as connected. */
  readonly silent: boolean;
  /** Why it is silent (how long since its last report, and what that means); only when `silent`. */
  readonly silentReason?: string;
  readonly lastSeen: string;
  readonly health: AgentHealth;
  readonly rollouts: readonly RolloutVersion[];
  readonly appHealth?: AppHealth;
  readonly healthReason?: string;
}

/** GET /v1/agents */
export interface AgentsResponse {
  readonly currentRevision: number;
  readonly agents: readonly AgentView[];
}
