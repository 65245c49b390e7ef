/**
 * Settings of the injector, shared by `config-sidecar webhook` and the
 * offline `config-sidecar inject`: what every injected agent is told about
 * the cluster (image, server addresses, CA, token audience, shared group).
 * Parsed through the shared settings pipeline, so an error names the flag and
 * its environment twin.
 */
import { z } from 'zod';
import type { ListenAddress } from '../shared/settings.ts';
import { durationSchema, listenSchema, parseSettings, sizeSchema } from '../shared/setting-schemas.ts';
import type { Bytes, Milliseconds } from '../shared/units.ts';
import type { LogLevel } from '../shared/logger.ts';
import { LOG_LEVELS } from '../shared/logger.ts';

import {
  DEFAULT_AGENT_SERVER,
  DEFAULT_AGENT_SERVER_CA_CONFIG_MAP,
  DEFAULT_AGENT_SERVER_GRPC,
  DEFAULT_SHARED_GROUP,
  DEFAULT_SIDECAR_IMAGE,
  DEFAULT_TOKEN_AUDIENCE,
  DEFAULT_TOKEN_EXPIRATION,
  DEFAULT_WEBHOOK_LISTEN,
  DEFAULT_WEBHOOK_MAX_BODY,
  DEFAULT_WEBHOOK_TLS_CERT,
  DEFAULT_WEBHOOK_TLS_KEY,
} from './defaults.ts';

export { SIDECAR_UID } from './defaults.ts';
export const MIN_TOKEN_EXPIRATION_MS: Milliseconds = 10 * 60_000;

/** What the injector tells every agent it injects. */
export interface InjectorSettings {
  readonly sidecarImage: string;
  readonly agentServer: string;
  readonly agentServerGrpc: string;
  /** ConfigMap (in the pod's namespace) with `ca.crt` for TLS to the server; empty = none. */
  readonly agentServerCaConfigMap: string;
  /** Pass `--insecure` to agents (plaintext to a non-loopback server; dev clusters only). */
  readonly agentInsecure: boolean;
  readonly tokenAudience: string;
  readonly tokenExpirationMs: Milliseconds;
  readonly sharedGroup: number;
}

/** Commander option keys → `--flag (ENV)` labels for error messages. */
export const INJECTOR_LABELS: Readonly<Record<string, string>> = {
  sidecarImage: '--sidecar-image (CONFIG_SIDECAR_SIDECAR_IMAGE)',
  agentServer: '--agent-server (CONFIG_SIDECAR_AGENT_SERVER)',
  agentServerGrpc: '--agent-server-grpc (CONFIG_SIDECAR_AGENT_SERVER_GRPC)',
  agentServerCaConfigMap: '--agent-server-ca-config-map (CONFIG_SIDECAR_AGENT_SERVER_CA_CONFIG_MAP)',
  agentInsecure: '--agent-insecure (CONFIG_SIDECAR_AGENT_INSECURE)',
  tokenAudience: '--token-audience (CONFIG_SIDECAR_TOKEN_AUDIENCE)',
  tokenExpiration: '--token-expiration (CONFIG_SIDECAR_TOKEN_EXPIRATION)',
  sharedGroup: '--shared-group (CONFIG_SIDECAR_SHARED_GROUP)',
  listen: '--listen (CONFIG_SIDECAR_LISTEN)',
  tlsCert: '--tls-cert (CONFIG_SIDECAR_TLS_CERT)',
  tlsKey: '--tls-key (CONFIG_SIDECAR_TLS_KEY)',
  maxBody: '--max-body (CONFIG_SIDECAR_MAX_BODY)',
  logLevel: '--log-level (CONFIG_SIDECAR_LOG_LEVEL)',
};

const boolText = z.union([z.boolean(), z.enum(['true', 'false', '1', '0'])]).transform((v) => v === true || v === 'true' || v === '1');

const injectorShape = {
  sidecarImage: z.string().regex(/^\S+$/, 'an image reference has no spaces'),
  agentServer: z
    .string()
    .refine((v) => v.split(',').every((u) => /^https?:\/\/[^\s/]+/.test(u.trim())), 'write http(s)://host:port, comma-separated for failover'),
  agentServerGrpc: z.string().refine((v) => v.split(',').every((a) => /^[^\s/:]+:\d{1,5}$/.test(a.trim())), 'write host:port, comma-separated'),
  agentServerCaConfigMap: z.string().regex(/^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$/, 'a ConfigMap name, or empty for none'),
  agentInsecure: boolText,
  tokenAudience: z.string().min(1, 'an audience is required'),
  tokenExpiration: durationSchema.refine((ms) => ms >= MIN_TOKEN_EXPIRATION_MS, 'the API server requires at least 10m'),
  sharedGroup: z.coerce.number().int().min(1, 'a non-root group id').max(2 ** 31 - 1),
};

const injectorSchema = z
  .object(injectorShape)
  .strict()
  .transform(
    (s): InjectorSettings => ({
      sidecarImage: s.sidecarImage,
      agentServer: s.agentServer,
      agentServerGrpc: s.agentServerGrpc,
      agentServerCaConfigMap: s.agentServerCaConfigMap,
      agentInsecure: s.agentInsecure,
      tokenAudience: s.tokenAudience,
      tokenExpirationMs: s.tokenExpiration,
      sharedGroup: s.sharedGroup,
    }),
  );

export const INJECTOR_DEFAULTS = {
  sidecarImage: DEFAULT_SIDECAR_IMAGE,
  agentServer: DEFAULT_AGENT_SERVER,
  agentServerGrpc: DEFAULT_AGENT_SERVER_GRPC,
  agentServerCaConfigMap: DEFAULT_AGENT_SERVER_CA_CONFIG_MAP,
  agentInsecure: false,
  tokenAudience: DEFAULT_TOKEN_AUDIENCE,
  tokenExpiration: DEFAULT_TOKEN_EXPIRATION,
  sharedGroup: String(DEFAULT_SHARED_GROUP),
} as const;

export const INJECTOR_KEYS = Object.keys(injectorShape) as ReadonlyArray<keyof typeof injectorShape>;

function pick(raw: Readonly<Record<string, unknown>>, keys: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of keys) if (raw[key] !== undefined) out[key] = raw[key];
  return out;
}

/** Parses the injector settings from commander options (extra keys are ignored here). */
export function parseInjectorSettings(raw: Readonly<Record<string, unknown>>): InjectorSettings {
  return parseSettings(injectorSchema, { ...INJECTOR_DEFAULTS, ...pick(raw, INJECTOR_KEYS) }, INJECTOR_LABELS);
}

export interface WebhookSettings {
  readonly injector: InjectorSettings;
  readonly listen: ListenAddress;
  readonly tlsCert: string;
  readonly tlsKey: string;
  readonly maxBodyBytes: Bytes;
  readonly logLevel: LogLevel;
}

const webhookSchema = z
  .object({
    listen: listenSchema,
    tlsCert: z.string().min(1, 'a certificate file path is required'),
    tlsKey: z.string().min(1, 'a key file path is required'),
    maxBody: sizeSchema.refine((b) => b >= 64 * 1024, 'at least 64KiB, or real pods are refused'),
    logLevel: z.enum(LOG_LEVELS as [LogLevel, ...LogLevel[]]),
  })
  .strict();

export function parseWebhookSettings(raw: Readonly<Record<string, unknown>>): WebhookSettings {
  const injector = parseInjectorSettings(raw);
  const own = parseSettings(
    webhookSchema,
    {
      listen: DEFAULT_WEBHOOK_LISTEN,
      tlsCert: DEFAULT_WEBHOOK_TLS_CERT,
      tlsKey: DEFAULT_WEBHOOK_TLS_KEY,
      maxBody: DEFAULT_WEBHOOK_MAX_BODY,
      logLevel: 'info',
      ...pick(raw, ['listen', 'tlsCert', 'tlsKey', 'maxBody', 'logLevel']),
    },
    INJECTOR_LABELS,
  );
  return Object.freeze({
    injector,
    listen: own.listen,
    tlsCert: own.tlsCert,
    tlsKey: own.tlsKey,
    maxBodyBytes: own.maxBody,
    logLevel: own.logLevel,
  });
}
