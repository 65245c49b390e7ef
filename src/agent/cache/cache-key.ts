/**
 * The value cache's key of an (item, env): `env NUL namespace/name`, the item
 * key (`itemKey`) prefixed by the env, and its inverses. The (item, env) of a
 * key is parsed back from it off the read path rather than kept in a second
 * map (~0.1 KiB of heap per entry).
 */
import type { ItemRef } from '../../shared/paths.ts';

const KEY_SEPARATOR = '\u0000';

/**
 * The cache key of an (item, env). A caller that reads the same variant many
 * times (the data API remembers it per URL) keeps it: a remembered key is a
 * flat string whose hash V8 has already computed, where building it per read
 * cost a concatenation, its flattening and hashing on every lookup.
 */
export const cacheKey = (ref: ItemRef, env: string): string => `${env}${KEY_SEPARATOR}${ref.namespace}/${ref.name}`;

/** The item key (`itemKey`) a cache key names. */
export const itemKeyOf = (key: string): string => key.slice(key.indexOf(KEY_SEPARATOR) + 1);

/** The (item, env) a cache key names: the inverse of `cacheKey` (a name holds no `/`). */
export function variantOf(key: string): { ref: ItemRef; env: string } {
  const separator = key.indexOf(KEY_SEPARATOR);
  const slash = key.lastIndexOf('/');
  return { ref: { namespace: key.slice(separator + 1, slash), name: key.slice(slash + 1) }, env: key.slice(0, separator) };
}
