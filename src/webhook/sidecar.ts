/**
 * Pure builders for what injection adds to a pod: the agent as a native
 * sidecar (an init container with `restartPolicy: Always`), its volumes, and
 * the mounts and environment of each app container. No I/O, no pod reading:
 * `mutate.ts` decides where these go.
 */
import type { InjectionSpec } from './annotations.ts';
import type { InjectorSettings } from './settings.ts';
import { SIDECAR_UID } from './settings.ts';

export const SIDECAR_NAME = 'config-sidecar';

/** Volume names the injector owns; a pod that already uses one is refused. */
export const VOLUMES = {
  run: 'config-sidecar-run',
  files: 'config-sidecar-files',
  token: 'config-sidecar-token',
  config: 'config-sidecar-config',
  snapshot: 'config-sidecar-snapshot',
} as const;

/** Paths inside the containers (the agent's defaults, so its flags and the docs agree). */
export const PATHS = {
  runDir: '/run/config-sidecar',
  socket: '/run/config-sidecar/agent.sock',
  filesDir: '/config-sidecar/files',
  tokenDir: '/var/run/secrets/config-sidecar.io/serviceaccount',
  configDir: '/etc/config-sidecar/agent',
  /** The agent's alone: the sealed snapshot and its key (never mounted into app containers). */
  snapshotDir: '/config-sidecar/snapshot',
} as const;

export const SOCKET_ENV = 'CONFIG_SIDECAR_SOCKET';
/** The socket and pod token need little; a cap keeps a runaway writer from filling the node. */
export const RUN_VOLUME_SIZE_LIMIT = '1Mi';
export const ADMIN_PORT_NAME = 'cs-admin';
/** startupProbe: poll readiness every second for up to two minutes (prefetch of a cold cache). */
export const STARTUP_PROBE_PERIOD_S = 1;
export const STARTUP_PROBE_FAILURE_THRESHOLD = 120;
export const LIVENESS_PROBE_PERIOD_S = 10;
export const LIVENESS_PROBE_FAILURE_THRESHOLD = 3;
export const PROBE_TIMEOUT_S = 2;
/** 0440: the agent and the shared group read the token and config; nobody else. */
export const READ_ONLY_MODE = 0o440;

/** The restricted Pod Security Standard, container level. */
export function restrictedSecurityContext(): Record<string, unknown> {
  return {
    runAsNonRoot: true,
    runAsUser: SIDECAR_UID,
    runAsGroup: SIDECAR_UID,
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' },
  };
}

/** The agent's command line: the same flags an operator would type. */
export function agentArgs(spec: InjectionSpec, settings: InjectorSettings): string[] {
  const args = ['agent', `--server=${settings.agentServer}`, `--server-grpc=${settings.agentServerGrpc}`];
  if (settings.agentServerCaConfigMap) args.push(`--server-ca=${PATHS.tokenDir}/ca.crt`);
  if (settings.agentInsecure) args.push('--insecure');
  args.push(`--token-file=${PATHS.tokenDir}/token`);
  if (spec.env) args.push(`--env=${spec.env}`);
  for (const prefix of spec.prefixes) args.push(`--prefix=${prefix}`);
  for (const item of spec.prefetch) args.push(`--prefetch=${item}`);
  args.push(
    `--socket=${PATHS.socket}`,
    `--http-listen=127.0.0.1:${spec.httpPort}`,
    // The admin listener carries no data; the kubelet's probes and Prometheus need it off loopback.
    `--admin-listen=0.0.0.0:${spec.adminPort}`,
    `--files-dir=${PATHS.filesDir}`,
  );
  if (spec.configMap) args.push(`--config=${PATHS.configDir}/${spec.configMapKey}`);
  if (spec.snapshot) args.push(`--snapshot-dir=${PATHS.snapshotDir}`);
  if (spec.cacheTtl) args.push(`--cache-ttl=${spec.cacheTtl}`);
  if (spec.maxStale) args.push(`--max-stale=${spec.maxStale}`);
  if (spec.appHealthUrl) args.push(`--app-health-url=${spec.appHealthUrl}`);
  return args;
}

export function sidecarContainer(spec: InjectionSpec, settings: InjectorSettings): Record<string, unknown> {
  const mounts: Record<string, unknown>[] = [
    { name: VOLUMES.run, mountPath: PATHS.runDir },
    { name: VOLUMES.files, mountPath: PATHS.filesDir },
    { name: VOLUMES.token, mountPath: PATHS.tokenDir, readOnly: true },
  ];
  if (spec.configMap) mounts.push({ name: VOLUMES.config, mountPath: PATHS.configDir, readOnly: true });
  if (spec.snapshot) mounts.push({ name: VOLUMES.snapshot, mountPath: PATHS.snapshotDir });
  const probe = (path: string) => ({ httpGet: { path, port: spec.adminPort, scheme: 'HTTP' } });
  return {
    name: SIDECAR_NAME,
    image: spec.image,
    imagePullPolicy: 'IfNotPresent',
    // Native sidecar (Kubernetes >= 1.29): starts before the app, runs beside it, and does not keep a Job alive.
    restartPolicy: 'Always',
    args: agentArgs(spec, settings),
    // The agent's id in the fleet view (GET /v1/agents); the projected token names the same pod.
    env: [{ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
    ports: [{ name: ADMIN_PORT_NAME, containerPort: spec.adminPort, protocol: 'TCP' }],
    startupProbe: {
      ...probe('/readyz'),
      periodSeconds: STARTUP_PROBE_PERIOD_S,
      timeoutSeconds: PROBE_TIMEOUT_S,
      failureThreshold: STARTUP_PROBE_FAILURE_THRESHOLD,
    },
    livenessProbe: {
      ...probe('/healthz'),
      periodSeconds: LIVENESS_PROBE_PERIOD_S,
      timeoutSeconds: PROBE_TIMEOUT_S,
      failureThreshold: LIVENESS_PROBE_FAILURE_THRESHOLD,
    },
    resources: {
      requests: { cpu: spec.cpuRequest, memory: spec.memoryRequest },
      limits: { cpu: spec.cpuLimit, memory: spec.memoryLimit },
    },
    securityContext: restrictedSecurityContext(),
    terminationMessagePolicy: 'FallbackToLogsOnError',
    volumeMounts: mounts,
  };
}

export function sidecarVolumes(spec: InjectionSpec, settings: InjectorSettings): Record<string, unknown>[] {
  const tokenSources: Record<string, unknown>[] = [
    {
      serviceAccountToken: {
        audience: settings.tokenAudience,
        expirationSeconds: Math.round(settings.tokenExpirationMs / 1000),
        path: 'token',
      },
    },
  ];
  if (settings.agentServerCaConfigMap) {
    tokenSources.push({ configMap: { name: settings.agentServerCaConfigMap, items: [{ key: 'ca.crt', path: 'ca.crt' }] } });
  }
  const volumes: Record<string, unknown>[] = [
    { name: VOLUMES.run, emptyDir: { sizeLimit: RUN_VOLUME_SIZE_LIMIT } },
    // Memory-backed so rendered secrets never touch the node's disk; the limit counts against the pod's memory.
    { name: VOLUMES.files, emptyDir: { medium: 'Memory', sizeLimit: spec.filesSizeLimit } },
    { name: VOLUMES.token, projected: { defaultMode: READ_ONLY_MODE, sources: tokenSources } },
  ];
  if (spec.configMap) {
    // A whole-directory mount (never subPath) so the kubelet's atomic swap reaches the agent's watcher.
    volumes.push({ name: VOLUMES.config, configMap: { name: spec.configMap, defaultMode: READ_ONLY_MODE } });
  }
  if (spec.snapshot) {
    // Memory-backed so decrypted-then-resealed values and their key never reach the node's disk; the agent's alone.
    volumes.push({ name: VOLUMES.snapshot, emptyDir: { medium: 'Memory', sizeLimit: spec.snapshotSizeLimit } });
  }
  return volumes;
}

/** Mounts every app container gets, read-only. */
export function appVolumeMounts(): Record<string, unknown>[] {
  return [
    { name: VOLUMES.run, mountPath: PATHS.runDir, readOnly: true },
    { name: VOLUMES.files, mountPath: PATHS.filesDir, readOnly: true },
  ];
}

export function appEnv(): Record<string, unknown> {
  return { name: SOCKET_ENV, value: PATHS.socket };
}
