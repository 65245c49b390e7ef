/**
 * Deep merge of config overlays (base → dev → staging → prod). Objects merge
 * key by key; any other value (array, scalar, null) from the more specific
 * layer replaces the less specific one. Secrets are never merged.
 */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

function isPlainObject(value: unknown): value is Record<string, JsonValue> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function deepMerge(base: JsonValue, overlay: JsonValue): JsonValue {
  if (!isPlainObject(base) || !isPlainObject(overlay)) return overlay;
  const out: Record<string, JsonValue> = { ...base };
  for (const [key, value] of Object.entries(overlay)) {
    const existing = out[key];
    out[key] = existing === undefined ? value : deepMerge(existing, value);
  }
  return out;
}

/** Merges layers from least to most specific. */
export function mergeLayers(layers: readonly JsonValue[]): JsonValue {
  let merged: JsonValue = null;
  layers.forEach((layer, index) => {
    merged = index === 0 ? layer : deepMerge(merged, layer);
  });
  return merged;
}

/** The environment chain for `env`: every environment up to and including it. */
export function environmentChain(env: string, environments: readonly string[]): string[] | undefined {
  const index = environments.indexOf(env);
  return index < 0 ? undefined : environments.slice(0, index + 1);
}
