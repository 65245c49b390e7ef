/**
 * What the injector can check of an agent config (the YAML in the
 * `config-sidecar.io/config-map` ConfigMap) when it knows the content offline,
 * i.e. `inject -f` given the ConfigMap in the same input: the YAML parses,
 * and every item its `files:` and `prefetch:` name lies under the pod's
 * prefixes. The webhook never reads ConfigMaps from the cluster (it has no
 * side effects and no RBAC for that); there the agent refuses such a config
 * at start and its startupProbe keeps the app from starting.
 */
import { parse as parseYaml } from 'yaml';
import { describeError } from '../shared/errors.ts';
import { namespaceMatchesAny, parseItemPath } from '../shared/paths.ts';

/** Item references named by the config, with where they were found (for messages). */
function collectItemRefs(config: unknown): Array<{ ref: string; where: string }> {
  const refs: Array<{ ref: string; where: string }> = [];
  if (config === null || typeof config !== 'object') return refs;
  const root = config as Record<string, unknown>;
  const files = Array.isArray(root.files) ? root.files : [];
  files.forEach((file: unknown, i) => {
    const entry = (file ?? {}) as Record<string, unknown>;
    const where = `files[${i}]${typeof entry.path === 'string' ? ` (${entry.path})` : ''}`;
    const items = Array.isArray(entry.items) ? entry.items : [];
    for (const item of items) {
      const ref = itemRefOf(item);
      if (ref) refs.push({ ref, where });
    }
  });
  const prefetch = Array.isArray(root.prefetch) ? root.prefetch : [];
  for (const item of prefetch) {
    const ref = itemRefOf(item);
    if (ref) refs.push({ ref, where: 'prefetch' });
  }
  return refs;
}

/** Items are written `namespace/name`, or as an object `{ item: namespace/name, ... }` / `{ namespace, name }`. */
function itemRefOf(item: unknown): string | undefined {
  if (typeof item === 'string') return item;
  if (item && typeof item === 'object') {
    const o = item as Record<string, unknown>;
    for (const key of ['item', 'ref', 'path', 'key']) if (typeof o[key] === 'string') return o[key];
    if (typeof o.namespace === 'string' && typeof o.name === 'string') return `${o.namespace}/${o.name}`;
  }
  return undefined;
}

/** Returns the problems found (empty when the config fits the prefixes). */
export function checkAgentConfig(yamlText: string, prefixes: readonly string[]): string[] {
  let config: unknown;
  try {
    config = parseYaml(yamlText);
  } catch (err) {
    return [`the agent config is not valid YAML: ${describeError(err).split('\n')[0]}`];
  }
  const problems: string[] = [];
  for (const { ref, where } of collectItemRefs(config)) {
    try {
      const { namespace } = parseItemPath(ref);
      if (!namespaceMatchesAny(namespace, prefixes)) {
        problems.push(`${where} refers to "${ref}", outside the prefixes (${prefixes.join(', ')})`);
      }
    } catch (err) {
      problems.push(`${where} refers to "${ref}": ${describeError(err)}`);
    }
  }
  return problems;
}
