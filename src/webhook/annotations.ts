/**
 * The pod annotations that drive injection: one documented table (key,
 * meaning, accepted values, default), and the parser that resolves a pod's
 * annotations plus the injector's defaults into a typed, frozen
 * `InjectionSpec`. An invalid annotation is refused with a message naming it
 * and what is allowed; an unknown key under `config-sidecar.io/` is refused
 * too, so a typo (`config-sidecar.io/prefix`) never silently injects less.
 */
import { z } from 'zod';
import { SEGMENT_RE } from '../shared/paths.ts';
import { parseDuration } from '../shared/units.ts';
import { parseItemPath, validatePrefix } from '../shared/paths.ts';
import { describeError } from '../shared/errors.ts';
import { parseQuantity } from './quantity.ts';
import { loopbackUrlProblem } from '../shared/loopback-url.ts';

export const ANNOTATION_PREFIX = 'config-sidecar.io/';

/** Everything an operator needs to know about one annotation. */
export interface AnnotationDoc {
  readonly key: string;
  readonly meaning: string;
  readonly values: string;
  readonly default: string;
}

/**
 * Defaults here are the injector's built-in ones; `image` defaults to the
 * webhook's `--sidecar-image`. Keep docs/KUBERNETES.md in sync (a test checks
 * every key appears there).
 */
export const ANNOTATIONS = {
  inject: {
    key: `${ANNOTATION_PREFIX}inject`,
    meaning: 'Inject the config-sidecar agent into this pod.',
    values: '"true" or "false"',
    default: '"false" (nothing is injected)',
  },
  prefixes: {
    key: `${ANNOTATION_PREFIX}prefixes`,
    meaning: 'Namespace prefixes the agent may read (its --prefix); whole path segments.',
    values: 'comma-separated prefixes, e.g. "production/ml-service,shared/tls"',
    default: 'none: required when inject is "true"',
  },
  prefetch: {
    key: `${ANNOTATION_PREFIX}prefetch`,
    meaning: 'Items loaded before the agent reports ready (its --prefetch); each must lie under a prefix.',
    values: 'comma-separated "namespace/name", e.g. "production/ml-service/db-password"',
    default: 'none',
  },
  env: {
    key: `${ANNOTATION_PREFIX}env`,
    meaning: 'Environment overlay the agent reads (its --env).',
    values: 'one path segment, e.g. "prod"',
    default: "the agent's default",
  },
  configMap: {
    key: `${ANNOTATION_PREFIX}config-map`,
    meaning:
      "ConfigMap (in the pod's namespace) holding the agent's YAML config, e.g. its files:. Mounted as a directory (never subPath) so the agent hot-reloads it when the kubelet swaps it.",
    values: 'a ConfigMap name (DNS subdomain)',
    default: 'none: no --config',
  },
  configMapKey: {
    key: `${ANNOTATION_PREFIX}config-map-key`,
    meaning: 'Key of that ConfigMap that holds the YAML.',
    values: 'a ConfigMap key, e.g. "agent.yaml"',
    default: '"agent.yaml"',
  },
  image: {
    key: `${ANNOTATION_PREFIX}image`,
    meaning: 'Image of the injected agent container.',
    values: 'an image reference without spaces',
    default: "the webhook's --sidecar-image",
  },
  cpuRequest: {
    key: `${ANNOTATION_PREFIX}cpu-request`,
    meaning: "The agent container's CPU request.",
    values: 'a Kubernetes CPU quantity, e.g. "50m" or "0.1"; at most cpu-limit',
    default: '"50m"',
  },
  cpuLimit: {
    key: `${ANNOTATION_PREFIX}cpu-limit`,
    meaning: "The agent container's CPU limit.",
    values: 'a Kubernetes CPU quantity, e.g. "200m"',
    default: '"200m"',
  },
  memoryRequest: {
    key: `${ANNOTATION_PREFIX}memory-request`,
    meaning: "The agent container's memory request.",
    values: 'a Kubernetes memory quantity, e.g. "128Mi"; at most memory-limit',
    default: '"128Mi"',
  },
  memoryLimit: {
    key: `${ANNOTATION_PREFIX}memory-limit`,
    meaning: "The agent container's memory limit; the agent sizes its cache, stream caps and heap from it (see Memory below).",
    values: 'a Kubernetes memory quantity, e.g. "256Mi"',
    default: '"256Mi"',
  },
  filesSizeLimit: {
    key: `${ANNOTATION_PREFIX}files-size-limit`,
    meaning: "sizeLimit of the in-memory files volume (it counts against the pod's memory).",
    values: 'a Kubernetes memory quantity, e.g. "16Mi"',
    default: '"16Mi"',
  },
  snapshot: {
    key: `${ANNOTATION_PREFIX}snapshot`,
    meaning:
      "Warm restart: the agent keeps an encrypted snapshot of what it serves in an agent-private in-memory volume (its --snapshot-dir, not mounted into app containers) and serves it, stale-marked, when it restarts while the server is unreachable.",
    values: '"true" or "false"',
    default: '"true"',
  },
  snapshotSizeLimit: {
    key: `${ANNOTATION_PREFIX}snapshot-size-limit`,
    meaning: "sizeLimit of the agent-private in-memory snapshot volume (it counts against the pod's memory; the agent's memory budget includes it).",
    values: 'a Kubernetes memory quantity, e.g. "32Mi"',
    default: '"32Mi"',
  },
  cacheTtl: {
    key: `${ANNOTATION_PREFIX}cache-ttl`,
    meaning: "The agent's cache TTL (its --cache-ttl), a backstop for lost events.",
    values: 'a duration, e.g. "5m"',
    default: "the agent's default (5m)",
  },
  maxStale: {
    key: `${ANNOTATION_PREFIX}max-stale`,
    meaning: 'How long the agent serves a cached value while the server is unreachable (its --max-stale).',
    values: 'a duration, e.g. "1h"',
    default: "the agent's default (1h)",
  },
  httpPort: {
    key: `${ANNOTATION_PREFIX}http-port`,
    meaning: "Port of the agent's pod-local HTTP listener (127.0.0.1 only); must not clash with the app's ports.",
    values: 'an integer 1024-65535',
    default: '"8430"',
  },
  adminPort: {
    key: `${ANNOTATION_PREFIX}admin-port`,
    meaning: 'Port of the agent\'s admin listener (/healthz, /readyz, /metrics; all interfaces, no data); must not clash with the app\'s ports.',
    values: 'an integer 1024-65535',
    default: '"8431"',
  },
  appHealthUrl: {
    key: `${ANNOTATION_PREFIX}app-health-url`,
    meaning: "A loopback URL of the application the agent probes every 2 s (its --app-health-url): 2xx is healthy. A staged rollout rolls back when its canaries' applications turn unhealthy.",
    values: 'an http(s) URL on 127.0.0.1, localhost or [::1], e.g. "http://127.0.0.1:8080/healthz"',
    default: 'none: only what the application POSTs to /v1/health',
  },
  status: {
    key: `${ANNOTATION_PREFIX}status`,
    meaning: 'Written by the injector; a pod with it and the agent container is left as it is (injection is idempotent).',
    values: '"injected" (set by the injector, not by users)',
    default: 'absent',
  },
} as const satisfies Record<string, AnnotationDoc>;

export type AnnotationName = keyof typeof ANNOTATIONS;

export const INJECTED_STATUS = 'injected';

/** Built-in defaults (named constants with units in the name where they have one). */
export const DEFAULT_CPU_REQUEST = '50m';
export const DEFAULT_CPU_LIMIT = '200m';
/**
 * From the bench (`memory`, `pod-limit`, 2026-11-30): an idle agent holds
 * ~90 MiB RSS (53 MiB of it the node binary's file pages), so the request
 * covers it with a warm cache;
 * under the 256Mi limit (and under 128Mi) the agent derives bounds that keep
 * it under 80 % (docs/KUBERNETES.md "Memory").
 */
export const DEFAULT_MEMORY_REQUEST = '128Mi';
export const DEFAULT_MEMORY_LIMIT = '256Mi';
export const DEFAULT_FILES_SIZE_LIMIT = '16Mi';
/** The snapshot holds at most the cached plaintext, twice while a new one replaces the old. */
export const DEFAULT_SNAPSHOT_SIZE_LIMIT = '32Mi';
export const DEFAULT_CONFIG_MAP_KEY = 'agent.yaml';
export const DEFAULT_HTTP_PORT = 8430;
export const DEFAULT_ADMIN_PORT = 8431;

/** The resolved, typed injection request for one pod. */
export interface InjectionSpec {
  readonly prefixes: readonly string[];
  readonly prefetch: readonly string[];
  readonly env: string | undefined;
  readonly configMap: string | undefined;
  readonly configMapKey: string;
  readonly image: string;
  readonly cpuRequest: string;
  readonly cpuLimit: string;
  readonly memoryRequest: string;
  readonly memoryLimit: string;
  readonly filesSizeLimit: string;
  /** Warm restart from an agent-private in-memory snapshot volume. */
  readonly snapshot: boolean;
  readonly snapshotSizeLimit: string;
  readonly cacheTtl: string | undefined;
  readonly maxStale: string | undefined;
  readonly httpPort: number;
  readonly adminPort: number;
  readonly appHealthUrl: string | undefined;
}

/** A refused annotation: names the key and what is allowed. */
export class AnnotationError extends Error {
  override readonly name = 'AnnotationError';
  readonly annotation: string;
  constructor(annotation: string, message: string) {
    super(`annotation ${annotation}: ${message}`);
    this.annotation = annotation;
  }
}

type Annotations = Readonly<Record<string, string>>;

/** Reads `config-sidecar.io/inject`; anything but "true"/"false" is refused. */
export function wantsInjection(annotations: Annotations): boolean {
  const raw = annotations[ANNOTATIONS.inject.key];
  if (raw === undefined) return false;
  const value = raw.trim();
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new AnnotationError(ANNOTATIONS.inject.key, `"${raw}" is not allowed; write ${ANNOTATIONS.inject.values}`);
}

const DNS_SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const CONFIG_MAP_KEY_RE = /^[-._a-zA-Z0-9]+$/;
const IMAGE_RE = /^[^\s]+$/;
const MIN_PORT = 1024;
const MAX_PORT = 65535;

function list(raw: string | undefined): string[] {
  return (raw ?? '')
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

/** Each annotation's own check, as zod refinements that carry the key in the path. */
function textField(name: AnnotationName, test: (value: string) => string | undefined) {
  return z
    .string()
    .optional()
    .superRefine((value, ctx) => {
      if (value === undefined) return;
      const problem = test(value);
      if (problem) ctx.addIssue({ code: 'custom', message: problem, path: [] });
    })
    .describe(name);
}

function quantity(value: string, kind: 'cpu' | 'memory'): string | undefined {
  if (parseQuantity(value) === undefined || parseQuantity(value) === 0) {
    return `"${value}" is not a positive Kubernetes ${kind} quantity`;
  }
  return undefined;
}

function duration(value: string): string | undefined {
  return parseDuration(value) === undefined ? `"${value}" is not a duration` : undefined;
}

function port(value: string): string | undefined {
  const n = Number(value);
  return /^\d+$/.test(value) && n >= MIN_PORT && n <= MAX_PORT ? undefined : `"${value}" is not a port`;
}

const FIELD_CHECKS: Partial<Record<AnnotationName, (value: string) => string | undefined>> = {
  prefixes: (value) => {
    if (list(value).length === 0) return 'the list is empty';
    for (const prefix of list(value)) {
      try {
        validatePrefix(prefix);
      } catch (err) {
        return `"${prefix}": ${describeError(err)}`;
      }
    }
    return undefined;
  },
  prefetch: (value) => {
    for (const item of list(value)) {
      try {
        parseItemPath(item);
      } catch (err) {
        return `"${item}": ${describeError(err)}`;
      }
    }
    return undefined;
  },
  env: (value) => (SEGMENT_RE.test(value) ? undefined : `"${value}" is not one path segment`),
  configMap: (value) => (value.length <= 253 && DNS_SUBDOMAIN_RE.test(value) ? undefined : `"${value}" is not a ConfigMap name`),
  configMapKey: (value) => (value.length <= 253 && CONFIG_MAP_KEY_RE.test(value) ? undefined : `"${value}" is not a ConfigMap key`),
  image: (value) => (IMAGE_RE.test(value) ? undefined : `"${value}" is not an image reference`),
  cpuRequest: (value) => quantity(value, 'cpu'),
  cpuLimit: (value) => quantity(value, 'cpu'),
  memoryRequest: (value) => quantity(value, 'memory'),
  memoryLimit: (value) => quantity(value, 'memory'),
  filesSizeLimit: (value) => quantity(value, 'memory'),
  snapshot: (value) => (value === 'true' || value === 'false' ? undefined : `"${value}" is not allowed`),
  snapshotSizeLimit: (value) => quantity(value, 'memory'),
  cacheTtl: duration,
  maxStale: duration,
  httpPort: port,
  adminPort: port,
  appHealthUrl: (value) => loopbackUrlProblem(value),
  status: (value) => (value === INJECTED_STATUS ? undefined : `"${value}" is not a status the injector writes`),
};

const annotationSchema = z
  .object(
    Object.fromEntries(
      (Object.keys(ANNOTATIONS) as AnnotationName[]).map((name) => [name, textField(name, FIELD_CHECKS[name] ?? (() => undefined))]),
    ) as Record<AnnotationName, ReturnType<typeof textField>>,
  )
  .strict();

const KEY_TO_NAME: ReadonlyMap<string, AnnotationName> = new Map(
  (Object.entries(ANNOTATIONS) as [AnnotationName, AnnotationDoc][]).map(([name, doc]) => [doc.key, name]),
);

/** Defaults the injector supplies (from its own settings). */
export interface AnnotationDefaults {
  readonly image: string;
}

/**
 * Resolves a pod's annotations into a spec. Throws `AnnotationError` naming
 * the first bad annotation; relations between annotations (requests within
 * limits, prefetch under prefixes) are checked here too.
 */
export function parseInjectionSpec(annotations: Annotations, defaults: AnnotationDefaults): InjectionSpec {
  const byName: Record<string, string> = {};
  for (const [key, value] of Object.entries(annotations)) {
    if (!key.startsWith(ANNOTATION_PREFIX)) continue;
    const name = KEY_TO_NAME.get(key);
    if (!name) {
      const known = [...KEY_TO_NAME.keys()].map((k) => k.slice(ANNOTATION_PREFIX.length)).join(', ');
      throw new AnnotationError(key, `unknown annotation; the ${ANNOTATION_PREFIX} annotations are: ${known}`);
    }
    byName[name] = value.trim();
  }
  const parsed = annotationSchema.safeParse(byName);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const name = String(issue?.path[0] ?? 'inject') as AnnotationName;
    const doc = ANNOTATIONS[name] ?? ANNOTATIONS.inject;
    throw new AnnotationError(doc.key, `${issue?.message ?? 'invalid value'}; allowed: ${doc.values}`);
  }
  const a = parsed.data;
  if (a.prefixes === undefined) {
    throw new AnnotationError(ANNOTATIONS.prefixes.key, `is required when ${ANNOTATIONS.inject.key} is "true"; allowed: ${ANNOTATIONS.prefixes.values}`);
  }
  const prefixes = list(a.prefixes).map((p) => p.replace(/\/+$/, ''));
  const prefetch = list(a.prefetch);
  for (const item of prefetch) {
    const { namespace } = parseItemPath(item);
    if (!prefixes.some((p) => namespace === p || namespace.startsWith(`${p}/`))) {
      throw new AnnotationError(
        ANNOTATIONS.prefetch.key,
        `"${item}" lies outside ${ANNOTATIONS.prefixes.key} (${prefixes.join(', ')}); the agent could never read it. Add its prefix or remove it`,
      );
    }
  }
  const spec: InjectionSpec = {
    prefixes,
    prefetch,
    env: a.env,
    configMap: a.configMap,
    configMapKey: a.configMapKey ?? DEFAULT_CONFIG_MAP_KEY,
    image: a.image ?? defaults.image,
    cpuRequest: a.cpuRequest ?? DEFAULT_CPU_REQUEST,
    cpuLimit: a.cpuLimit ?? DEFAULT_CPU_LIMIT,
    memoryRequest: a.memoryRequest ?? DEFAULT_MEMORY_REQUEST,
    memoryLimit: a.memoryLimit ?? DEFAULT_MEMORY_LIMIT,
    filesSizeLimit: a.filesSizeLimit ?? DEFAULT_FILES_SIZE_LIMIT,
    snapshot: a.snapshot !== 'false',
    snapshotSizeLimit: a.snapshotSizeLimit ?? DEFAULT_SNAPSHOT_SIZE_LIMIT,
    cacheTtl: a.cacheTtl,
    maxStale: a.maxStale,
    httpPort: a.httpPort === undefined ? DEFAULT_HTTP_PORT : Number(a.httpPort),
    adminPort: a.adminPort === undefined ? DEFAULT_ADMIN_PORT : Number(a.adminPort),
    appHealthUrl: a.appHealthUrl,
  };
  checkRequestWithinLimit(spec.cpuRequest, spec.cpuLimit, 'cpuRequest', 'cpuLimit');
  checkRequestWithinLimit(spec.memoryRequest, spec.memoryLimit, 'memoryRequest', 'memoryLimit');
  if (spec.httpPort === spec.adminPort) {
    throw new AnnotationError(ANNOTATIONS.adminPort.key, `equals ${ANNOTATIONS.httpPort.key} (${spec.httpPort}); the two listeners need different ports`);
  }
  return Object.freeze(spec);
}

function checkRequestWithinLimit(request: string, limit: string, requestName: AnnotationName, limitName: AnnotationName): void {
  if ((parseQuantity(request) as number) > (parseQuantity(limit) as number)) {
    throw new AnnotationError(
      ANNOTATIONS[requestName].key,
      `"${request}" is above ${ANNOTATIONS[limitName].key} "${limit}"; a request must not exceed its limit`,
    );
  }
}
