/**
 * The agent's one settings schema (STYLE.md §3). Flags, their `CONFIG_SIDECAR_*`
 * env twins and an optional YAML file (`--config`) all pass through
 * `agentSettingsSchema`: unknown keys are refused, each field is checked and
 * named, then fields are checked together, then the result is frozen.
 *
 * Keys are the flags' camelCase names (`--cache-ttl` → `cacheTtl`) in both
 * the file and the flag object, so one label table serves both. Flags win over
 * the file; defaults apply last (they live here, not in commander, so a file
 * value is never shadowed by a flag default).
 */
import { z } from 'zod';
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { definedSettings, isLoopbackHost, SettingError } from '../shared/settings.ts';
import { durationSchema, listenSchema, listSchema, parseSettings, sizeSchema } from '../shared/setting-schemas.ts';
import { validatePrefix, parseItemPath, type ItemRef } from '../shared/paths.ts';
import { AppError } from '../shared/errors.ts';
import { loopbackUrlProblem } from '../shared/loopback-url.ts';
import { AGENT_ID_RE } from '../shared/agent-id-format.ts';
import { DEFAULT_ENV } from '../shared/protocol-constants.ts';
import { LOG_LEVELS, type LogLevel } from '../shared/log-levels.ts';
import type { Bytes, Milliseconds } from '../shared/units.ts';
import { checkFilesDir, DEFAULT_FILES_DIR } from './files/file-spec.ts';
import { describeFilesIssue, filesSchema } from './files/file-spec-schema.ts';
import { AGENT_SETTING_LABELS } from './agent-setting-labels.ts';

export { AGENT_SETTING_LABELS };

export const DEFAULT_SOCKET_PATH = '/run/config-sidecar/agent.sock';
export const DEFAULT_HTTP_LISTEN = '127.0.0.1:8430';
export const DEFAULT_ADMIN_LISTEN = '127.0.0.1:8431';
export const DEFAULT_CACHE_TTL = '5m';
export const DEFAULT_MAX_STALE = '1h';
export const DEFAULT_CACHE_MAX_ENTRIES = 100_000;
/** Without a container memory limit; under one, the bound is derived from it (memory-budget.ts). */
export const DEFAULT_CACHE_MAX_BYTES = '64MiB';
/** `auto`: the container's limit (cgroup, memory-limit.ts); `none`: ignore it; a size: use that. */
export const DEFAULT_MEMORY_LIMIT = 'auto';
export { DEFAULT_ENV };
/** Upper bound of the random delay spreading refetches after KeyRotated / ResyncRequired. */
export const DEFAULT_REFETCH_JITTER = '1s';
/** How often, at most, the warm-restart snapshot is rewritten (deletions and revocations: at once). */
export const DEFAULT_SNAPSHOT_INTERVAL = '5s';

const itemRefSchema = z.string().transform((value, ctx): ItemRef => {
  try {
    return parseItemPath(value);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: err instanceof AppError ? err.message : `"${value}" is not namespace/name` });
    return z.NEVER;
  }
});

const prefixSchema = z.string().transform((value, ctx): string => {
  try {
    return validatePrefix(value);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: err instanceof AppError ? err.message : `"${value}" is not a namespace prefix` });
    return z.NEVER;
  }
});

const positiveInt = z.coerce.number().int().positive();

/**
 * Every agent setting. `files` belongs to the files renderer: its entries are
 * parsed here with `filesSchema` (`src/agent/files/file-spec-schema.ts`) and
 * checked against `--prefix` and the real `--files-dir`, so a bad entry stops
 * the agent before it binds and the renderer receives checked specs.
 */
export const agentSettingsSchema = z
  .object({
    /** Path of the YAML config file this came from (hot-reloaded). */
    config: z.string().optional(),
    /** REST base URLs, paired by position with `serverGrpc`, tried in order. */
    server: listSchema.pipe(z.array(z.url()).min(1, 'at least one server URL is required, e.g. http://127.0.0.1:8420')),
    /** gRPC `host:port` of each server, same order as `server`. */
    serverGrpc: listSchema.pipe(z.array(z.string().regex(/^[^\s/]+:\d{1,5}$/, 'write host:port, e.g. 127.0.0.1:8421')).min(1)),
    /** CA bundle (PEM) for TLS to the server; unset = plaintext, allowed only to loopback or with `insecure`. */
    serverCa: z.string().optional(),
    insecure: z.boolean().default(false),
    /** The credential sent upstream; re-read when it changes. */
    tokenFile: z.string().optional(),
    env: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'an environment name such as prod').default(DEFAULT_ENV),
    /** Namespace prefixes this pod may read (whole segments). */
    prefix: listSchema.pipe(z.array(prefixSchema).min(1, 'at least one --prefix is required (the namespaces this pod may read)')),
    /** Items loaded before the agent reports ready. */
    prefetch: listSchema.pipe(z.array(itemRefSchema)).default([]),
    socket: z.string().min(1).default(DEFAULT_SOCKET_PATH),
    /** `off` disables the TCP listener. */
    httpListen: z.union([z.literal('off'), listenSchema]).default(listenSchema.parse(DEFAULT_HTTP_LISTEN)),
    adminListen: listenSchema.default(listenSchema.parse(DEFAULT_ADMIN_LISTEN)),
    cacheTtl: durationSchema.default(durationSchema.parse(DEFAULT_CACHE_TTL)),
    cacheMaxEntries: positiveInt.default(DEFAULT_CACHE_MAX_ENTRIES),
    /** Unset: derived from the memory limit, or DEFAULT_CACHE_MAX_BYTES without one (memory-budget.ts). */
    cacheMaxBytes: sizeSchema.optional(),
    /** The container memory limit the bounds are derived from. */
    memoryLimit: z.union([z.literal('auto'), z.literal('none'), sizeSchema.refine((n) => n > 0, 'must be above zero')]).default(DEFAULT_MEMORY_LIMIT),
    maxStale: durationSchema.default(durationSchema.parse(DEFAULT_MAX_STALE)),
    refetchJitter: durationSchema.default(durationSchema.parse(DEFAULT_REFETCH_JITTER)),
    logLevel: z.enum(LOG_LEVELS as [LogLevel, ...LogLevel[]]).default('info'),
    otlpEndpoint: z.url().optional(),
    traceSampleRatio: z.coerce.number().min(0).max(1).default(0.1),
    /**
     * This agent's id in the fleet view (GET /v1/agents). Default: the pod
     * name from a service-account token, else POD_NAME, else the hostname.
     */
    agentId: z.string().regex(AGENT_ID_RE, 'letters, digits, ".", "_", ":" and "-" (up to 253), starting with a letter or digit, e.g. the pod name').optional(),
    /** Probed as the application's health signal for staged rollouts (app-health.ts); loopback only. */
    appHealthUrl: z
      .string()
      .superRefine((url, ctx) => {
        const problem = loopbackUrlProblem(url);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      })
      .optional(),
    /** Where rendered files go (files renderer). */
    filesDir: z.string().optional(),
    /**
     * Warm restart (issue 19): the agent-private, memory-backed directory for
     * the sealed snapshot and its key. Unset: no snapshot.
     */
    snapshotDir: z.string().min(1).optional(),
    snapshotInterval: durationSchema.pipe(z.number().min(100, 'must be at least 100ms')).default(durationSchema.parse(DEFAULT_SNAPSHOT_INTERVAL)),
    /**
     * Rendered files, validated into the renderer's specs here (the schema is
     * `src/agent/files/file-spec-schema.ts`), so the serving process takes
     * them checked and never loads that schema. One issue naming the entry
     * (files[i] (path)) instead of zod's path.
     */
    files: z
      .array(z.unknown())
      .optional()
      .transform((raw, ctx) => {
        if (raw === undefined) return undefined;
        const files = filesSchema.safeParse(raw);
        if (files.success) return files.data;
        ctx.addIssue({ code: 'custom', message: describeFilesIssue(files.error, raw) });
        return z.NEVER;
      }),
  })
  .strict()
  .superRefine((s, ctx) => {
    if (s.files !== undefined) {
      // Refused at load, before any listener binds, with the entry named (files[i] (path)).
      s.files.forEach((spec, index) => {
        for (const item of spec.items) {
          if (!s.prefix.some((p) => item.namespace === p || item.namespace.startsWith(`${p}/`))) {
            ctx.addIssue({ code: 'custom', path: ['files'], message: `files[${index}] (${spec.path}): ${item.namespace}/${item.name} lies outside every --prefix` });
          }
        }
      });
      try {
        checkFilesDir(s.files, s.filesDir ?? DEFAULT_FILES_DIR);
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['files'], message: err instanceof Error ? err.message.replace(/^Invalid setting files: /, '') : String(err) });
      }
    }
    if (s.server.length !== s.serverGrpc.length) {
      ctx.addIssue({
        code: 'custom',
        path: ['serverGrpc'],
        message: `lists ${s.serverGrpc.length} address(es) but --server lists ${s.server.length}; they are paired by position`,
      });
    }
    // --server-ca secures https:// URLs only; it never makes an http:// URL safe.
    if (!s.insecure) {
      for (const url of s.server) {
        const u = new URL(url);
        if (u.protocol === 'http:' && !isLoopbackHost(u.hostname.replace(/^\[|\]$/g, ''))) {
          const ca = s.serverCa ? ' (--server-ca applies to https:// URLs only)' : '';
          ctx.addIssue({ code: 'custom', path: ['server'], message: `${url} is plaintext to a non-loopback host${ca}; use https:// with --server-ca, or --insecure` });
        }
      }
    }
    if (!s.serverCa && !s.insecure) {
      for (const addr of s.serverGrpc) {
        const host = addr.slice(0, addr.lastIndexOf(':')).replace(/^\[|\]$/g, '');
        if (!isLoopbackHost(host)) {
          ctx.addIssue({ code: 'custom', path: ['serverGrpc'], message: `${addr} is not loopback; plaintext gRPC needs --server-ca or --insecure` });
        }
      }
    }
    if (s.httpListen !== 'off' && !isLoopbackHost(s.httpListen.host)) {
      ctx.addIssue({ code: 'custom', path: ['httpListen'], message: `must bind a loopback address (127.0.0.1); the data API is pod-local` });
    }
    if (s.snapshotDir !== undefined) {
      // The snapshot's key lies beside it: never in a volume the app containers mount.
      const snapshot = resolve(s.snapshotDir);
      const shared = [
        { dir: resolve(dirname(s.socket)), flag: "--socket's directory" },
        ...(s.files?.length || s.filesDir ? [{ dir: resolve(s.filesDir ?? DEFAULT_FILES_DIR), flag: '--files-dir' }] : []),
      ];
      for (const { dir, flag } of shared) {
        if (snapshot === dir || snapshot.startsWith(`${dir}/`) || dir.startsWith(`${snapshot}/`)) {
          ctx.addIssue({ code: 'custom', path: ['snapshotDir'], message: `${s.snapshotDir} overlaps ${flag} (${dir}), which the app containers share; give the snapshot a volume of its own (the injector mounts one at /config-sidecar/snapshot)` });
        }
      }
    }
    for (const ref of s.prefetch) {
      if (!s.prefix.some((p) => ref.namespace === p || ref.namespace.startsWith(`${p}/`))) {
        ctx.addIssue({ code: 'custom', path: ['prefetch'], message: `${ref.namespace}/${ref.name} lies outside every --prefix` });
      }
    }
  });

export type AgentSettings = Readonly<z.infer<typeof agentSettingsSchema>>;
export type AgentSettingsInput = z.input<typeof agentSettingsSchema>;

/** Drops undefined values and empty lists (an absent repeatable flag) so absent flags do not override file values. */
function defined(raw: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(definedSettings(raw)).filter(([, v]) => !(Array.isArray(v) && v.length === 0)));
}

/** Reads and parses the YAML config file; YAML is imported only when a file is given. */
export async function readConfigFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new SettingError(AGENT_SETTING_LABELS.config ?? '--config', `cannot read "${path}" (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const { parse } = await import('yaml');
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw new SettingError(AGENT_SETTING_LABELS.config ?? '--config', `"${path}" is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new SettingError(AGENT_SETTING_LABELS.config ?? '--config', `"${path}" must hold a mapping of settings`);
  }
  return doc as Record<string, unknown>;
}

/** Validates flag values merged over file values (flags win). */
export function resolveAgentSettings(flags: Record<string, unknown>, file: Record<string, unknown> = {}): AgentSettings {
  if ('config' in file) throw new SettingError('config (config file key)', 'a config file cannot name another config file');
  return parseSettings(agentSettingsSchema, { ...defined(file), ...defined(flags) }, AGENT_SETTING_LABELS);
}

/** The whole pipeline: read `flags.config` if set, merge, validate, freeze. */
export async function loadAgentSettings(flags: Record<string, unknown>): Promise<AgentSettings> {
  const path = typeof flags.config === 'string' && flags.config !== '' ? flags.config : undefined;
  const file = path ? await readConfigFile(path) : {};
  try {
    return resolveAgentSettings(flags, file);
  } catch (err) {
    // Flags are checked by commander, so an unknown key at the top can only come from the file: name it.
    if (path && err instanceof SettingError && err.setting === 'configuration') throw new SettingError(`${AGENT_SETTING_LABELS.config ?? '--config'} file "${path}"`, err.detail);
    throw err;
  }
}

export type { Bytes, Milliseconds };
