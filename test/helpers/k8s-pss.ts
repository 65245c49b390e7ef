/**
 * The restricted Pod Security Standard (https://kubernetes.io/docs/concepts/security/pod-security-standards/,
 * policy version "latest"), written out as checks on a pod spec. Each rule
 * returns a message naming the container and field, so a failing test says
 * what to fix. Baseline rules are included, since restricted contains them.
 */
import { POD_TEMPLATE_PATHS } from '../../src/webhook/workloads.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- Kubernetes objects are walked freely in these checks
type Json = Record<string, any>;

/** Volume types the restricted profile allows. */
const RESTRICTED_VOLUME_TYPES = new Set(['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'persistentVolumeClaim', 'projected', 'secret']);
/** Baseline's safe sysctls. */
const SAFE_SYSCTLS = new Set([
  'kernel.shm_rmid_forced',
  'net.ipv4.ip_local_port_range',
  'net.ipv4.ip_unprivileged_port_start',
  'net.ipv4.tcp_syncookies',
  'net.ipv4.ping_group_range',
  'net.ipv4.ip_local_reserved_ports',
  'net.ipv4.tcp_keepalive_time',
  'net.ipv4.tcp_fin_timeout',
  'net.ipv4.tcp_keepalive_intvl',
  'net.ipv4.tcp_keepalive_probes',
]);
const SELINUX_TYPES = new Set(['', 'container_t', 'container_init_t', 'container_kvm_t', 'container_engine_t']);

function containersOf(spec: Json): Array<{ kind: string; c: Json }> {
  return [
    ...((spec.initContainers ?? []) as Json[]).map((c) => ({ kind: 'initContainer', c })),
    ...((spec.containers ?? []) as Json[]).map((c) => ({ kind: 'container', c })),
    ...((spec.ephemeralContainers ?? []) as Json[]).map((c) => ({ kind: 'ephemeralContainer', c })),
  ];
}

/** All violations of the restricted profile in one pod spec (empty = compliant). */
export function restrictedViolations(spec: Json, where: string): string[] {
  const v: string[] = [];
  const pod = (spec.securityContext ?? {}) as Json;
  // Baseline: host namespaces.
  for (const field of ['hostNetwork', 'hostPID', 'hostIPC']) if (spec[field] === true) v.push(`${where}: ${field} must be unset or false`);
  // Restricted: volume types (which also rules out baseline's hostPath).
  for (const vol of (spec.volumes ?? []) as Json[]) {
    const types = Object.keys(vol).filter((k) => k !== 'name');
    for (const t of types) if (!RESTRICTED_VOLUME_TYPES.has(t)) v.push(`${where}: volume "${vol.name}" has type ${t}, not allowed by restricted`);
  }
  // Baseline: sysctls.
  for (const s of (pod.sysctls ?? []) as Json[]) if (!SAFE_SYSCTLS.has(s.name)) v.push(`${where}: sysctl ${s.name} is not in the safe set`);
  // Pod-level seccomp / runAsNonRoot / runAsUser / SELinux / AppArmor / Windows.
  const podSeccomp = pod.seccompProfile?.type as string | undefined;
  if (podSeccomp !== undefined && podSeccomp !== 'RuntimeDefault' && podSeccomp !== 'Localhost') {
    v.push(`${where}: securityContext.seccompProfile.type ${podSeccomp} must be RuntimeDefault or Localhost`);
  }
  if (pod.runAsNonRoot === false) v.push(`${where}: securityContext.runAsNonRoot must not be false`);
  if (pod.runAsUser === 0) v.push(`${where}: securityContext.runAsUser must not be 0`);
  checkSelinux(pod.seLinuxOptions, `${where}: securityContext`, v);
  checkAppArmor(pod.appArmorProfile, `${where}: securityContext`, v);
  if (pod.windowsOptions?.hostProcess === true) v.push(`${where}: windowsOptions.hostProcess must not be true`);
  for (const [key, value] of Object.entries((spec.metadataAnnotations ?? {}) as Record<string, string>)) {
    if (key.startsWith('container.apparmor.security.beta.kubernetes.io/') && value !== 'runtime/default' && !value.startsWith('localhost/')) {
      v.push(`${where}: AppArmor annotation ${key}=${value} is not allowed`);
    }
  }

  for (const { kind, c } of containersOf(spec)) {
    const at = `${where}: ${kind} "${c.name}"`;
    const sc = (c.securityContext ?? {}) as Json;
    if (sc.privileged === true) v.push(`${at}: privileged must not be true`);
    if (sc.allowPrivilegeEscalation !== false) v.push(`${at}: securityContext.allowPrivilegeEscalation must be false`);
    const nonRoot = sc.runAsNonRoot ?? pod.runAsNonRoot;
    if (nonRoot !== true) v.push(`${at}: runAsNonRoot must be true (on the pod or the container)`);
    if (sc.runAsUser === 0) v.push(`${at}: runAsUser must not be 0`);
    const seccomp = (sc.seccompProfile?.type as string | undefined) ?? podSeccomp;
    if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost') {
      v.push(`${at}: seccompProfile.type must be RuntimeDefault or Localhost (on the pod or the container), got ${seccomp ?? 'none'}`);
    }
    const drop = (sc.capabilities?.drop ?? []) as string[];
    if (!drop.includes('ALL')) v.push(`${at}: capabilities.drop must include ALL`);
    for (const cap of (sc.capabilities?.add ?? []) as string[]) {
      if (cap !== 'NET_BIND_SERVICE') v.push(`${at}: capabilities.add may only contain NET_BIND_SERVICE, got ${cap}`);
    }
    if (sc.procMount !== undefined && sc.procMount !== 'Default') v.push(`${at}: procMount must be Default`);
    checkSelinux(sc.seLinuxOptions, `${at}: securityContext`, v);
    checkAppArmor(sc.appArmorProfile, `${at}: securityContext`, v);
    if (sc.windowsOptions?.hostProcess === true) v.push(`${at}: windowsOptions.hostProcess must not be true`);
    for (const p of (c.ports ?? []) as Json[]) if (p.hostPort !== undefined && p.hostPort !== 0) v.push(`${at}: hostPort ${p.hostPort} is not allowed`);
  }
  return v;
}

function checkSelinux(options: Json | undefined, at: string, v: string[]): void {
  if (!options) return;
  if (!SELINUX_TYPES.has(options.type ?? '')) v.push(`${at}.seLinuxOptions.type ${options.type} is not allowed`);
  if (options.user) v.push(`${at}.seLinuxOptions.user must be unset`);
  if (options.role) v.push(`${at}.seLinuxOptions.role must be unset`);
}

function checkAppArmor(profile: Json | undefined, at: string, v: string[]): void {
  if (profile && profile.type !== 'RuntimeDefault' && profile.type !== 'Localhost') v.push(`${at}.appArmorProfile.type ${profile.type} is not allowed`);
}

/** Kinds that carry a pod template, and where: the injector's own table. */
export const TEMPLATE_PATHS = POD_TEMPLATE_PATHS;

/** Every pod (or template) in a list of objects, with a name for messages. */
export function podSpecsIn(objects: readonly Json[]): Array<{ where: string; metadata: Json; spec: Json }> {
  const out: Array<{ where: string; metadata: Json; spec: Json }> = [];
  const visit = (obj: Json) => {
    if (obj.kind === 'List') return (obj.items as Json[]).forEach(visit);
    const path = TEMPLATE_PATHS[obj.kind as string];
    if (!path) return;
    let t: Json = obj;
    for (const key of path) t = t[key];
    out.push({ where: `${obj.kind} ${obj.metadata?.namespace ?? ''}/${obj.metadata?.name}`, metadata: t.metadata ?? {}, spec: { ...t.spec, metadataAnnotations: t.metadata?.annotations } });
  };
  objects.forEach(visit);
  return out;
}
