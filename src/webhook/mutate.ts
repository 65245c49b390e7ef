/**
 * `mutate`: one pod (or pod template) in, a JSON Patch out, through named
 * steps as vault-k8s does: should-inject → defaults → build → validate →
 * patch. Each failure is a `MutateError` that says which step failed, so an
 * operator reading `kubectl` output knows whether an annotation, a conflict
 * with the pod, or the injector itself is at fault. Pure: no I/O; the
 * webhook and the offline `inject` both call it.
 */
import { describeError } from '../shared/errors.ts';
import { ANNOTATIONS, INJECTED_STATUS, parseInjectionSpec, wantsInjection, type InjectionSpec } from './annotations.ts';
import { checkAgentConfig } from './agent-config-check.ts';
import { PatchBuilder, pointer, type PatchOperation } from './json-patch.ts';
import type { Container, Pod } from './pod.ts';
import type { InjectorSettings } from './settings.ts';
import { appEnv, appVolumeMounts, PATHS, SIDECAR_NAME, SOCKET_ENV, sidecarContainer, sidecarVolumes, VOLUMES } from './sidecar.ts';

/** Label on injected pods: what the server's NetworkPolicy selects (defence in depth; the token is the authentication). */
export const AGENT_LABEL = 'config-sidecar.io/agent';
export const AGENT_LABEL_VALUE = 'injected';

/** Set with an fsGroup the injector adds, so an existing PVC is re-chowned only when its root does not match. */
export const FS_GROUP_CHANGE_POLICY = 'OnRootMismatch';

export const MUTATE_STEPS = ['should-inject', 'defaults', 'build', 'validate', 'patch'] as const;
export type MutateStep = (typeof MUTATE_STEPS)[number];

export class MutateError extends Error {
  override readonly name = 'MutateError';
  readonly step: MutateStep;
  constructor(step: MutateStep, message: string) {
    super(`injection failed at step "${step}": ${message}`);
    this.step = step;
  }
}

export interface MutateContext {
  readonly settings: InjectorSettings;
  /** ConfigMap data by name, when known offline (`inject -f` with the ConfigMap in its input). */
  readonly configMaps?: (name: string) => Readonly<Record<string, string>> | undefined;
}

export type MutateResult =
  | { readonly outcome: 'skipped'; readonly reason: string }
  | { readonly outcome: 'unchanged'; readonly reason: string }
  | { readonly outcome: 'patched'; readonly patch: readonly PatchOperation[]; readonly reason: string };

/** What the build step decided the pod should have. */
interface Plan {
  readonly spec: InjectionSpec;
  readonly sidecar: Record<string, unknown>;
  /** Index of the sidecar in `initContainers` when the pod is already injected. */
  readonly existingSidecar: number | undefined;
  readonly volumes: readonly Record<string, unknown>[];
  /** Set on the pod when it has no fsGroup. */
  readonly fsGroup: number | undefined;
  /** App containers to wire: where they are and what each lacks. */
  readonly wiring: readonly Wiring[];
}

interface Wiring {
  readonly list: 'containers' | 'initContainers';
  readonly index: number;
  readonly container: Container;
  readonly mounts: readonly Record<string, unknown>[];
  readonly env: boolean;
}

function step<T>(name: MutateStep, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof MutateError) throw err;
    throw new MutateError(name, describeError(err));
  }
}

/** Index of the injector's sidecar when the pod carries the injected marker and the container, else undefined. */
function injectedSidecarIndex(pod: Pod): number | undefined {
  if (pod.metadata?.annotations?.[ANNOTATIONS.status.key] !== INJECTED_STATUS) return undefined;
  const index = (pod.spec.initContainers ?? []).findIndex((c) => c.name === SIDECAR_NAME && c.restartPolicy === 'Always');
  return index < 0 ? undefined : index;
}

/**
 * True when every field of `desired` is present and equal in `actual`. Extra
 * fields in `actual` are the API server's defaults (terminationMessagePath,
 * successThreshold, ...) and do not make a pod stale.
 */
export function isSubset(desired: unknown, actual: unknown): boolean {
  if (desired === null || typeof desired !== 'object') return desired === actual;
  if (actual === null || typeof actual !== 'object') return false;
  if (Array.isArray(desired)) {
    return Array.isArray(actual) && desired.length === actual.length && desired.every((d, i) => isSubset(d, actual[i]));
  }
  return Object.entries(desired).every(([key, value]) => isSubset(value, (actual as Record<string, unknown>)[key]));
}

export function mutate(pod: Pod, context: MutateContext): MutateResult {
  const annotations = pod.metadata?.annotations ?? {};
  const wanted = step('should-inject', () => wantsInjection(annotations));
  if (!wanted) return { outcome: 'skipped', reason: `${ANNOTATIONS.inject.key} is not "true"` };
  const existing = injectedSidecarIndex(pod);
  const spec = step('defaults', () => parseInjectionSpec(annotations, { image: context.settings.sidecarImage }));
  const plan = step('build', () => build(pod, spec, existing, context.settings));
  step('validate', () => validate(pod, plan, context));
  const patch = step('patch', () => toPatch(pod, plan));
  if (patch.length === 0) return { outcome: 'unchanged', reason: 'already injected with the current annotations and settings' };
  return { outcome: 'patched', patch, reason: existing === undefined ? 'injected' : 'brought up to date with the current annotations and settings' };
}

function build(pod: Pod, spec: InjectionSpec, existingSidecar: number | undefined, settings: InjectorSettings): Plan {
  const wiring: Wiring[] = [];
  const consider = (list: 'containers' | 'initContainers', containers: readonly Container[]) => {
    containers.forEach((container, index) => {
      if (list === 'initContainers' && index === existingSidecar) return;
      const have = new Set((container.volumeMounts ?? []).map((m) => m.name));
      const mounts = appVolumeMounts().filter((m) => !have.has(m.name as string));
      const env = !(container.env ?? []).some((e) => e.name === SOCKET_ENV);
      if (mounts.length > 0 || env) wiring.push({ list, index, container, mounts, env });
    });
  };
  consider('initContainers', pod.spec.initContainers ?? []);
  consider('containers', pod.spec.containers);
  return {
    spec,
    sidecar: sidecarContainer(spec, settings),
    existingSidecar,
    volumes: sidecarVolumes(spec, settings),
    fsGroup: pod.spec.securityContext?.fsGroup === undefined ? settings.sharedGroup : undefined,
    wiring,
  };
}

function validate(pod: Pod, plan: Plan, context: MutateContext): void {
  const all = [...(pod.spec.initContainers ?? []).filter((_, i) => i !== plan.existingSidecar), ...pod.spec.containers];
  if (plan.existingSidecar === undefined) {
    const clash = all.find((c) => c.name === SIDECAR_NAME);
    if (clash) {
      throw new Error(
        `the pod already has a container named "${SIDECAR_NAME}" that config-sidecar did not inject; rename it or remove ${ANNOTATIONS.inject.key}`,
      );
    }
    const ours = new Set(plan.volumes.map((v) => v.name as string));
    const taken = (pod.spec.volumes ?? []).find((v) => ours.has(v.name));
    if (taken) {
      throw new Error(`the pod already has a volume named "${taken.name}", which the injector needs; rename that volume`);
    }
  }
  if (pod.spec.hostNetwork === true) {
    throw new Error("hostNetwork pods are not injected: the agent's listeners would bind on the node's network");
  }
  const pathOwners = new Map<string, string>([
    [PATHS.runDir, VOLUMES.run],
    [PATHS.filesDir, VOLUMES.files],
  ]);
  for (const w of plan.wiring) {
    for (const mount of w.container.volumeMounts ?? []) {
      const owner = pathOwners.get(mount.mountPath.replace(/\/+$/, ''));
      if (owner && owner !== mount.name) {
        throw new Error(`container "${w.container.name}" already mounts volume "${mount.name}" at ${mount.mountPath}, where the injector mounts "${owner}"`);
      }
    }
  }
  const spec = plan.spec;
  for (const container of all) {
    for (const p of container.ports ?? []) {
      if (p.containerPort === spec.httpPort || p.containerPort === spec.adminPort) {
        throw new Error(
          `container "${container.name}" uses port ${p.containerPort}, which the agent listens on; set ${ANNOTATIONS.httpPort.key} / ${ANNOTATIONS.adminPort.key} to free ports`,
        );
      }
    }
  }
  if (spec.configMap && context.configMaps) {
    const data = context.configMaps(spec.configMap);
    if (data !== undefined) {
      const text = data[spec.configMapKey];
      if (text === undefined) {
        throw new Error(`ConfigMap "${spec.configMap}" has no key "${spec.configMapKey}" (set ${ANNOTATIONS.configMapKey.key})`);
      }
      const problems = checkAgentConfig(text, spec.prefixes);
      if (problems.length > 0) {
        throw new Error(`the agent config in ConfigMap "${spec.configMap}" conflicts with ${ANNOTATIONS.prefixes.key}: ${problems.join('; ')}`);
      }
    }
  }
}

function toPatch(pod: Pod, plan: Plan): PatchOperation[] {
  const patch = new PatchBuilder();
  // Index-based paths of existing init containers first: a new sidecar is prepended last, which shifts them.
  for (const w of plan.wiring) {
    const base = pointer('spec', w.list, w.index);
    for (const mount of w.mounts) patch.append(`${base}/volumeMounts`, w.container.volumeMounts, mount);
    if (w.env) patch.append(`${base}/env`, w.container.env, appEnv());
  }
  if (plan.existingSidecar === undefined) {
    for (const volume of plan.volumes) patch.append(pointer('spec', 'volumes'), pod.spec.volumes, volume);
  } else {
    refreshInjected(pod, plan, plan.existingSidecar, patch);
  }
  if (plan.fsGroup !== undefined) {
    const context = pod.spec.securityContext;
    patch.setKey(pointer('spec', 'securityContext'), context, 'fsGroup', plan.fsGroup);
    // A new fsGroup makes the kubelet chown the pod's volumes (PVCs too); do it once, not at every mount.
    if (context?.fsGroupChangePolicy === undefined) {
      patch.setKey(pointer('spec', 'securityContext'), context, 'fsGroupChangePolicy', FS_GROUP_CHANGE_POLICY);
    }
  }
  if (plan.existingSidecar === undefined) {
    patch.prepend(pointer('spec', 'initContainers'), pod.spec.initContainers, plan.sidecar);
    patch.setKey(pointer('metadata', 'annotations'), pod.metadata?.annotations, ANNOTATIONS.status.key, INJECTED_STATUS);
  }
  if (pod.metadata?.labels?.[AGENT_LABEL] !== AGENT_LABEL_VALUE) {
    // The server's NetworkPolicy admits pods with this label (in opted-in namespaces).
    patch.setKey(pointer('metadata', 'labels'), pod.metadata?.labels, AGENT_LABEL, AGENT_LABEL_VALUE);
  }
  return [...patch.operations];
}

/**
 * An injected pod whose annotations or injector settings changed since (an
 * edited template injected again, a webhook upgrade) gets the current sidecar
 * and volumes; the injector owns both, so hand edits to them are replaced.
 */
function refreshInjected(pod: Pod, plan: Plan, index: number, patch: PatchBuilder): void {
  const current = (pod.spec.initContainers ?? [])[index];
  if (!isSubset(plan.sidecar, current)) patch.replace(pointer('spec', 'initContainers', index), plan.sidecar);
  const volumes = pod.spec.volumes ?? [];
  for (const volume of plan.volumes) {
    const at = volumes.findIndex((v) => v.name === volume.name);
    if (at < 0) patch.append(pointer('spec', 'volumes'), pod.spec.volumes, volume);
    else if (!isSubset(volume, volumes[at])) patch.replace(pointer('spec', 'volumes', at), volume);
  }
  const wanted = new Set(plan.volumes.map((v) => v.name as string));
  const ours = new Set<string>(Object.values(VOLUMES));
  const stale = volumes.flatMap((v, at) => (ours.has(v.name) && !wanted.has(v.name) ? [at] : []));
  for (const at of stale.reverse()) patch.remove(pointer('spec', 'volumes', at));
}
