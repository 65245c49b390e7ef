/**
 * Offline injection (`config-sidecar inject -f`, like `istioctl kube-inject`):
 * finds the pod template of each workload kind in multi-document YAML, runs
 * the webhook's own `mutate` on it and applies the resulting patch. Other
 * documents pass through untouched (comments kept). ConfigMaps in the same
 * input are used to check an agent config against the pod's prefixes.
 */
import { Document, isMap, isNode, parseAllDocuments } from 'yaml';
import { describeError } from '../shared/errors.ts';
import { applyPatch } from './json-patch.ts';
import { mutate, type MutateContext } from './mutate.ts';
import { podSchema, type Pod } from './pod.ts';
import type { InjectorSettings } from './settings.ts';

/** Where each supported kind keeps its pod template (path of keys from the object root). */
export const POD_TEMPLATE_PATHS: Readonly<Record<string, readonly string[]>> = {
  Pod: [],
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

export class InjectError extends Error {
  override readonly name = 'InjectError';
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function objectName(obj: Json): string {
  const meta = isObject(obj.metadata) ? obj.metadata : {};
  return `${String(obj.kind ?? '(no kind)')} ${String(meta.name ?? meta.generateName ?? '(unnamed)')}`;
}

function namespaceOf(obj: Json): string {
  const meta = isObject(obj.metadata) ? obj.metadata : {};
  return typeof meta.namespace === 'string' ? meta.namespace : '';
}

/**
 * Injects one object (recursing into `kind: List`). Returns the new object,
 * or undefined when nothing changed.
 */
export function injectObject(obj: Json, context: MutateContext): Json | undefined {
  if (obj.kind === 'List' && Array.isArray(obj.items)) {
    let changed = false;
    const items = obj.items.map((item: unknown) => {
      const out = isObject(item) ? injectObject(item, context) : undefined;
      if (out) changed = true;
      return out ?? item;
    });
    return changed ? { ...obj, items } : undefined;
  }
  const path = typeof obj.kind === 'string' ? POD_TEMPLATE_PATHS[obj.kind] : undefined;
  if (!path) return undefined;
  let template: unknown = obj;
  for (const key of path) template = isObject(template) ? template[key] : undefined;
  const parsed = podSchema.safeParse(template);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new InjectError(`${objectName(obj)}: the pod template is invalid at ${[...path, ...(issue?.path ?? [])].join('.')}: ${issue?.message}`);
  }
  const pod: Pod = parsed.data;
  let result;
  try {
    result = mutate(pod, context);
  } catch (err) {
    throw new InjectError(`${objectName(obj)}: ${describeError(err)}`);
  }
  if (result.outcome !== 'patched') return undefined;
  // Patch the template as written (zod's parse reorders keys), so the user's layout survives.
  const patched = applyPatch(template as Pod, result.patch);
  if (path.length === 0) return patched as Json;
  const copy = structuredClone(obj);
  let parent: Json = copy;
  for (const key of path.slice(0, -1)) parent = parent[key] as Json;
  parent[path[path.length - 1] as string] = patched;
  return copy;
}

function leadingComment(doc: Document.Parsed): string | undefined {
  const contents = doc.contents;
  if (!isNode(contents)) return undefined;
  if (contents.commentBefore) return contents.commentBefore;
  const first = isMap(contents) ? contents.items[0]?.key : undefined;
  return isNode(first) ? (first.commentBefore ?? undefined) : undefined;
}

/** ConfigMaps found in the input, keyed by `namespace/name` (namespace '' when unset). */
function configMapsIn(objects: readonly unknown[]): Map<string, Readonly<Record<string, string>>> {
  const maps = new Map<string, Readonly<Record<string, string>>>();
  const visit = (obj: unknown) => {
    if (!isObject(obj)) return;
    if (obj.kind === 'List' && Array.isArray(obj.items)) obj.items.forEach(visit);
    if (obj.kind === 'ConfigMap' && isObject(obj.metadata) && typeof obj.metadata.name === 'string') {
      const data = isObject(obj.data) ? (obj.data as Record<string, string>) : {};
      maps.set(`${namespaceOf(obj)}/${obj.metadata.name}`, data);
    }
  };
  objects.forEach(visit);
  return maps;
}

/**
 * Injects every workload in a multi-document YAML text. Throws `InjectError`
 * naming the document and object on the first failure (nothing is written
 * then, so a pipeline into `kubectl apply` never applies half a file).
 */
export function injectYaml(text: string, settings: InjectorSettings): string {
  const docs: Document.Parsed[] = parseAllDocuments(text) as Document.Parsed[];
  if (!Array.isArray(docs)) throw new InjectError('the input is not YAML documents');
  const objects = docs.map((doc, i) => {
    if (doc.errors.length > 0) throw new InjectError(`document ${i + 1}: not valid YAML: ${doc.errors[0]?.message.split('\n')[0]}`);
    return doc.toJS({ maxAliasCount: 100 }) as unknown;
  });
  const configMaps = configMapsIn(objects);
  const out: string[] = [];
  objects.forEach((obj, i) => {
    const doc = docs[i] as Document.Parsed;
    if (obj === null || obj === undefined) return; // an empty document (e.g. a trailing ---)
    if (!isObject(obj)) throw new InjectError(`document ${i + 1}: expected a Kubernetes object, got ${Array.isArray(obj) ? 'a list' : typeof obj}`);
    const namespace = namespaceOf(obj);
    const context: MutateContext = { settings, configMaps: (name) => configMaps.get(`${namespace}/${name}`) };
    let injected: Json | undefined;
    try {
      injected = injectObject(obj, context);
    } catch (err) {
      throw new InjectError(`document ${i + 1}: ${describeError(err)}`);
    }
    // Documents are re-joined with our own separators, so drop a document's own leading marker.
    if (injected) {
      const rewritten = new Document(injected);
      // Keep the document's leading comment (the parser attaches it to the document or to its first node).
      rewritten.commentBefore = doc.commentBefore ?? leadingComment(doc) ?? null;
      out.push(rewritten.toString({ lineWidth: 0 }));
    } else {
      out.push(doc.toString({ lineWidth: 0, flowCollectionPadding: false }).replace(/^---[ \t]*\r?\n/, ''));
    }
  });
  return out.map((d) => (d.endsWith('\n') ? d : `${d}\n`)).join('---\n');
}
