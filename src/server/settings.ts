/**
 * The server's settings: every flag (and its CONFIG_SIDECAR_* twin) parsed,
 * checked and frozen in one place, so a bad value stops start-up with a message
 * naming the setting. Secrets (KEK, root token) arrive already read from env or
 * file by the CLI; they are never flag values.
 */
import { z } from 'zod';
import { DEFAULT_ENVIRONMENTS } from '../shared/protocol.ts';
import { LOG_LEVELS } from '../shared/logger.ts';
import { definedSettings, flagLabels, isLoopbackHost, SettingError, type ListenAddress } from '../shared/settings.ts';
import { durationSchema, listenSchema, listSchema, parseSettings, sizeSchema } from '../shared/setting-schemas.ts';
import { SEGMENT_RE } from '../shared/paths.ts';
import { KEK_MISSING_HINT, kekFromBase64, type LocalKekProvider } from './kek.ts';
import type { Bytes, Milliseconds } from '../shared/units.ts';

export const DEFAULT_DATA_DIR = '.config-sidecar/server';
export const DEFAULT_HTTP_LISTEN = '127.0.0.1:8420';
export const DEFAULT_GRPC_LISTEN = '127.0.0.1:8421';
export const DEFAULT_ADMIN_LISTEN = '127.0.0.1:8422';
export const DEFAULT_MAX_VERSIONS = 20;
export const DEFAULT_KEY_MAX_AGE = '90d';
/** Requests per second per subject; bursts up to twice that. 0 disables the limit. */
export const DEFAULT_RATE_LIMIT_PER_S = 200;
export const DEFAULT_HEARTBEAT_INTERVAL = '1s';
/** Events queued per watch stream before a slow reader is ended. */
export const DEFAULT_WATCH_BUFFER = 1024;
export const DEFAULT_MAX_BODY = '1MiB';
/** In-flight requests and watch streams get this long on SIGTERM before connections are cut (keep it below the pod's terminationGracePeriodSeconds). */
export const DEFAULT_SHUTDOWN_GRACE = '10s';
export const DEFAULT_TRACE_SAMPLE_RATIO = 0.1;
export const DEFAULT_RETAIN_EVENTS = 100_000;
/** Connections per listener (REST); past it the oldest one without a request yet is shed. */
export const DEFAULT_MAX_CONNECTIONS = 4096;
/** Each agent holds one gRPC connection; sized for a large cluster per replica. */
export const DEFAULT_MAX_GRPC_CONNECTIONS = 20_000;
export const DEFAULT_GRPC_FIRST_CALL_TIMEOUT = '10s';
/** Open Watch streams per pod (auth/identity.ts pod key); an agent needs one, two while it reconnects. */
export const DEFAULT_MAX_WATCH_STREAMS_PER_POD = 64;
/** Watch opens per second per pod (burst twice that); 0 disables the limit. */
export const DEFAULT_WATCH_OPEN_RATE = 10;
/** Audit rows older than this are deleted. */
export const DEFAULT_AUDIT_RETAIN_AGE = '30d';
/** At most this many audit rows are kept (the oldest go first). */
export const DEFAULT_AUDIT_MAX_ROWS = 1_000_000;
/** Agents silent this long leave the fleet view. */
export const DEFAULT_AGENT_EXPIRY = '10m';
/** PostgreSQL connections per replica (plus one for LISTEN). */
export const DEFAULT_DATABASE_POOL_SIZE = 10;

/** Every flag of `config-sidecar server`, by settings key. */
export const SERVER_FLAGS = {
  dataDir: '--data-dir',
  databaseUrl: '--database-url',
  databasePoolSize: '--database-pool-size',
  httpListen: '--http-listen',
  grpcListen: '--grpc-listen',
  adminListen: '--admin-listen',
  authFile: '--auth-file',
  tlsCert: '--tls-cert',
  tlsKey: '--tls-key',
  insecure: '--insecure',
  environments: '--environments',
  maxVersions: '--max-versions',
  keyMaxAge: '--key-max-age',
  retainEvents: '--retain-events',
  retainAge: '--retain-age',
  rateLimit: '--rate-limit',
  maxConnections: '--max-connections',
  maxGrpcConnections: '--max-grpc-connections',
  grpcFirstCallTimeout: '--grpc-first-call-timeout',
  maxWatchStreamsPerPod: '--max-watch-streams-per-pod',
  watchOpenRate: '--watch-open-rate',
  auditRetainAge: '--audit-retain-age',
  auditMaxRows: '--audit-max-rows',
  heartbeatInterval: '--heartbeat-interval',
  agentExpiry: '--agent-expiry',
  watchBuffer: '--watch-buffer',
  maxBody: '--max-body',
  shutdownGrace: '--shutdown-grace',
  logLevel: '--log-level',
  otlpEndpoint: '--otlp-endpoint',
  traceSampleRatio: '--trace-sample-ratio',
  jwtIssuer: '--jwt-issuer',
  jwtAudience: '--jwt-audience',
  jwksUrl: '--jwks-url',
  jwksFile: '--jwks-file',
  kek: '--kek-file (CONFIG_SIDECAR_KEK)',
  rootToken: '--root-token-file (CONFIG_SIDECAR_ROOT_TOKEN)',
} as const;

const LABELS = flagLabels(SERVER_FLAGS);

const intSchema = (min: number) => z.coerce.number().int(`must be a whole number`).min(min, `must be at least ${min}`);

const rawSchema = z
  .object({
    dataDir: z.string().min(1).default(DEFAULT_DATA_DIR),
    databaseUrl: z.string().url().optional(),
    databasePoolSize: intSchema(1).max(1000, 'must be at most 1000').default(DEFAULT_DATABASE_POOL_SIZE),
    httpListen: listenSchema.prefault(DEFAULT_HTTP_LISTEN),
    grpcListen: listenSchema.prefault(DEFAULT_GRPC_LISTEN),
    adminListen: listenSchema.prefault(DEFAULT_ADMIN_LISTEN),
    authFile: z.string().min(1).optional(),
    tlsCert: z.string().min(1).optional(),
    tlsKey: z.string().min(1).optional(),
    insecure: z.boolean().default(false),
    environments: listSchema
      .prefault([...DEFAULT_ENVIRONMENTS])
      .refine((envs) => envs.length >= 1 && envs.every((e) => SEGMENT_RE.test(e)), 'write a comma list like base,dev,staging,prod')
      .refine((envs) => new Set(envs).size === envs.length, 'environments must be unique'),
    maxVersions: intSchema(1).default(DEFAULT_MAX_VERSIONS),
    keyMaxAge: durationSchema.prefault(DEFAULT_KEY_MAX_AGE).refine((ms) => ms >= 60_000, 'must be at least 1m'),
    retainEvents: intSchema(1).default(DEFAULT_RETAIN_EVENTS),
    retainAge: durationSchema.optional(),
    rateLimit: intSchema(0).default(DEFAULT_RATE_LIMIT_PER_S),
    maxConnections: intSchema(16).default(DEFAULT_MAX_CONNECTIONS),
    maxGrpcConnections: intSchema(16).default(DEFAULT_MAX_GRPC_CONNECTIONS),
    grpcFirstCallTimeout: durationSchema.prefault(DEFAULT_GRPC_FIRST_CALL_TIMEOUT).refine((ms) => ms >= 100 && ms <= 300_000, 'must be between 100ms and 5m'),
    maxWatchStreamsPerPod: intSchema(1).default(DEFAULT_MAX_WATCH_STREAMS_PER_POD),
    watchOpenRate: intSchema(0).default(DEFAULT_WATCH_OPEN_RATE),
    auditRetainAge: durationSchema.prefault(DEFAULT_AUDIT_RETAIN_AGE).refine((ms) => ms >= 60_000, 'must be at least 1m'),
    auditMaxRows: intSchema(1000).default(DEFAULT_AUDIT_MAX_ROWS),
    heartbeatInterval: durationSchema.prefault(DEFAULT_HEARTBEAT_INTERVAL).refine((ms) => ms >= 100, 'must be at least 100ms'),
    agentExpiry: durationSchema.prefault(DEFAULT_AGENT_EXPIRY).refine((ms) => ms >= 1_000 && ms <= 7 * 86_400_000, 'must be between 1s and 7d'),
    watchBuffer: intSchema(1).default(DEFAULT_WATCH_BUFFER),
    maxBody: sizeSchema.prefault(DEFAULT_MAX_BODY).refine((b) => b >= 1024, 'must be at least 1KiB'),
    shutdownGrace: durationSchema.prefault(DEFAULT_SHUTDOWN_GRACE).refine((ms) => ms >= 100 && ms <= 3_600_000, 'must be between 100ms and 1h'),
    logLevel: z.enum(LOG_LEVELS as [string, ...string[]]).default('info'),
    otlpEndpoint: z.string().url().optional(),
    traceSampleRatio: z.coerce.number().min(0).max(1, 'must be between 0 and 1').default(DEFAULT_TRACE_SAMPLE_RATIO),
    jwtIssuer: z.string().min(1).optional(),
    jwtAudience: z.string().min(1).optional(),
    jwksUrl: z.string().url().optional(),
    jwksFile: z.string().min(1).optional(),
    /** Base64 of 32 bytes, from CONFIG_SIDECAR_KEK or --kek-file. */
    kek: z.string({ error: KEK_MISSING_HINT }).min(1, KEK_MISSING_HINT),
    rootToken: z.string().min(16, 'must be at least 16 characters').optional(),
  })
  .strict();

export interface ServerSettings {
  readonly dataDir: string;
  readonly databaseUrl?: string | undefined;
  /** PostgreSQL pool size per process; unused with the embedded store. */
  readonly databasePoolSize: number;
  readonly httpListen: ListenAddress;
  readonly grpcListen: ListenAddress;
  readonly adminListen: ListenAddress;
  readonly authFile?: string | undefined;
  readonly tlsCert?: string | undefined;
  readonly tlsKey?: string | undefined;
  readonly insecure: boolean;
  readonly environments: readonly string[];
  readonly maxVersions: number;
  readonly keyMaxAge: Milliseconds;
  readonly retainEvents: number;
  /** Events older than this are compacted too (0 or unset: by count only). */
  readonly retainAge?: Milliseconds | undefined;
  /** Requests per second per pod (identity.ts pod key); 0 = unlimited. */
  readonly rateLimit: number;
  /** Connections the REST listener holds (shared/connection-limit.ts). */
  readonly maxConnections: number;
  /** Connections the gRPC listener holds (grpc-listener.ts). */
  readonly maxGrpcConnections: number;
  /** A gRPC connection that starts no call within this is closed. */
  readonly grpcFirstCallTimeout: Milliseconds;
  readonly maxWatchStreamsPerPod: number;
  /** Watch opens per second per pod; 0 = unlimited. */
  readonly watchOpenRate: number;
  readonly auditRetainAge: Milliseconds;
  readonly auditMaxRows: number;
  readonly heartbeatInterval: Milliseconds;
  /** An agent that has not reported for this long is dropped from GET /v1/agents. */
  readonly agentExpiry: Milliseconds;
  readonly watchBuffer: number;
  readonly maxBody: Bytes;
  /** SIGTERM: time for in-flight work before connections are cut; the process exits at most HARD_EXIT_MARGIN_MS later. */
  readonly shutdownGrace: Milliseconds;
  readonly logLevel: (typeof LOG_LEVELS)[number];
  readonly otlpEndpoint?: string | undefined;
  readonly traceSampleRatio: number;
  readonly jwt?: { readonly issuer: string; readonly audience: string; readonly jwksUrl?: string | undefined; readonly jwksFile?: string | undefined } | undefined;
  readonly kek: LocalKekProvider;
  readonly rootToken?: string | undefined;
}

/** Parses raw settings (commander options plus secrets) and checks fields together. */
export function parseServerSettings(raw: Record<string, unknown>, kekSetting = LABELS.kek as string): ServerSettings {
  const s = parseSettings(rawSchema, definedSettings(raw), LABELS);
  if (Boolean(s.tlsCert) !== Boolean(s.tlsKey)) {
    throw new SettingError(s.tlsCert ? LABELS.tlsKey! : LABELS.tlsCert!, 'set both --tls-cert and --tls-key, or neither');
  }
  if (!s.tlsCert && !s.insecure) {
    for (const key of ['httpListen', 'grpcListen'] as const) {
      if (!isLoopbackHost(s[key].host)) {
        throw new SettingError(LABELS[key]!, `plaintext on ${s[key].host} is refused; bind a loopback address, set --tls-cert/--tls-key, or pass --insecure`);
      }
    }
  }
  const jwtParts = [s.jwtIssuer, s.jwtAudience, s.jwksUrl ?? s.jwksFile];
  if (jwtParts.some(Boolean) && !jwtParts.every(Boolean)) {
    const missing = !s.jwtIssuer ? 'jwtIssuer' : !s.jwtAudience ? 'jwtAudience' : 'jwksUrl';
    throw new SettingError(LABELS[missing]!, 'Kubernetes JWT auth needs --jwt-issuer, --jwt-audience and --jwks-url or --jwks-file together');
  }
  if (s.jwksUrl && s.jwksFile) throw new SettingError(LABELS.jwksFile!, 'set --jwks-url or --jwks-file, not both');
  return Object.freeze({
    dataDir: s.dataDir,
    databaseUrl: s.databaseUrl,
    databasePoolSize: s.databasePoolSize,
    httpListen: s.httpListen,
    grpcListen: s.grpcListen,
    adminListen: s.adminListen,
    authFile: s.authFile,
    tlsCert: s.tlsCert,
    tlsKey: s.tlsKey,
    insecure: s.insecure,
    environments: Object.freeze([...s.environments]),
    maxVersions: s.maxVersions,
    keyMaxAge: s.keyMaxAge,
    retainEvents: s.retainEvents,
    retainAge: s.retainAge ? s.retainAge : undefined,
    rateLimit: s.rateLimit,
    maxConnections: s.maxConnections,
    maxGrpcConnections: s.maxGrpcConnections,
    grpcFirstCallTimeout: s.grpcFirstCallTimeout,
    maxWatchStreamsPerPod: s.maxWatchStreamsPerPod,
    watchOpenRate: s.watchOpenRate,
    auditRetainAge: s.auditRetainAge,
    auditMaxRows: s.auditMaxRows,
    heartbeatInterval: s.heartbeatInterval,
    agentExpiry: s.agentExpiry,
    watchBuffer: s.watchBuffer,
    maxBody: s.maxBody,
    shutdownGrace: s.shutdownGrace,
    logLevel: s.logLevel as ServerSettings['logLevel'],
    otlpEndpoint: s.otlpEndpoint,
    traceSampleRatio: s.traceSampleRatio,
    jwt: s.jwtIssuer && s.jwtAudience ? { issuer: s.jwtIssuer, audience: s.jwtAudience, jwksUrl: s.jwksUrl, jwksFile: s.jwksFile } : undefined,
    kek: kekFromBase64(s.kek, kekSetting),
    rootToken: s.rootToken,
  });
}
