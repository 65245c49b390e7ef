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

/** What the build step decided to add. */
interface Plan {
  readonly spec: InjectionSpec | undefined;
  readonly sidecar: Record<string, unknown> | undefined;
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

function isInjected(pod: Pod): boolean {
  return (
    pod.metadata?.annotations?.[ANNOTATIONS.status.key] === INJECTED_STATUS &&
    (pod.spec.initContainers ?? []).some((c) => c.name === SIDECAR_NAME && c.restartPolicy === 'Always')
  );
}

export function mutate(pod: Pod, context: MutateContext): MutateResult {
  const annotations = pod.metadata?.annotations ?? {};
  const wanted = step('should-inject', () => wantsInjection(annotations));
  if (!wanted) return { outcome: 'skipped', reason: `${ANNOTATIONS.inject.key} is not "true"` };
  const injected = isInjected(pod);
  const spec = step('defaults', () => parseInjectionSpec(annotations, { image: context.settings.sidecarImage }));
  const plan = step('build', () => build(pod, spec, injected, context.settings));
  step('validate', () => validate(pod, plan, injected, context));
  if (injected && plan.wiring.length === 0) return { outcome: 'unchanged', reason: 'already injected' };
  const patch = step('patch', () => toPatch(pod, plan));
  return { outcome: 'patched', patch, reason: injected ? 'wired containers added after injection' : 'injected' };
}

function build(pod: Pod, spec: InjectionSpec, injected: boolean, settings: InjectorSettings): Plan {
  const wiring: Wiring[] = [];
  const consider = (list: 'containers' | 'initContainers', containers: readonly Container[]) => {
    containers.forEach((container, index) => {
      if (container.name === SIDECAR_NAME) return;
      const have = new Set((container.volumeMounts ?? []).map((m) => m.name));
      const mounts = appVolumeMounts().filter((m) => !have.has(m.name as string));
      const env = !(container.env ?? []).some((e) => e.name === SOCKET_ENV);
      if (mounts.length > 0 || env) wiring.push({ list, index, container, mounts, env });
    });
  };
  consider('initContainers', pod.spec.initContainers ?? []);
  consider('containers', pod.spec.containers);
  if (injected) return { spec: undefined, sidecar: undefined, volumes: [], fsGroup: undefined, wiring };
  return {
    spec,
    sidecar: sidecarContainer(spec, settings),
    volumes: sidecarVolumes(spec, settings),
    fsGroup: pod.spec.securityContext?.fsGroup === undefined ? settings.sharedGroup : undefined,
    wiring,
  };
}

function validate(pod: Pod, plan: Plan, injected: boolean, context: MutateContext): void {
  const all = [...(pod.spec.initContainers ?? []), ...pod.spec.containers];
  if (!injected) {
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
  if (!spec) return;
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
  // Index-based paths of existing init containers first: the sidecar is prepended last, which shifts them.
  for (const w of plan.wiring) {
    const base = pointer('spec', w.list, w.index);
    for (const mount of w.mounts) patch.append(`${base}/volumeMounts`, w.container.volumeMounts, mount);
    if (w.env) patch.append(`${base}/env`, w.container.env, appEnv());
  }
  for (const volume of plan.volumes) patch.append(pointer('spec', 'volumes'), pod.spec.volumes, volume);
  if (plan.fsGroup !== undefined) {
    const context = pod.spec.securityContext;
    patch.setKey(pointer('spec', 'securityContext'), context, 'fsGroup', plan.fsGroup);
    // A new fsGroup makes the kubelet chown the pod's volumes (PVCs too); do it once, not at every mount.
    if (context?.fsGroupChangePolicy === undefined) {
      patch.setKey(pointer('spec', 'securityContext'), context, 'fsGroupChangePolicy', FS_GROUP_CHANGE_POLICY);
    }
  }
  if (plan.sidecar) {
    patch.prepend(pointer('spec', 'initContainers'), pod.spec.initContainers, plan.sidecar);
    patch.setKey(pointer('metadata', 'annotations'), pod.metadata?.annotations, ANNOTATIONS.status.key, INJECTED_STATUS);
    // The server's NetworkPolicy admits pods with this label (in opted-in namespaces).
    patch.setKey(pointer('metadata', 'labels'), pod.metadata?.labels, AGENT_LABEL, AGENT_LABEL_VALUE);
  }
  return [...patch.operations];
}
