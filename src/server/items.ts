/**
 * Pure rules of the item model: which environment layers contribute to a read
 * (configs inherit and deep-merge along the chain, a secret takes the most
 * specific layer), the etag over those layers, and which old versions pruning
 * may remove.
 */
import { AppError } from '../shared/errors.ts';
import { assertJsonDepth } from '../shared/json-guard.ts';
import { contributingLayers, layersEtag } from '../shared/item-layers.ts';
import { environmentChain, mergeLayers, type JsonValue } from '../shared/merge.ts';
import type { ItemKind } from '../shared/protocol.ts';
import { zeroize, type AadVersion } from '../shared/crypto.ts';
import type { SealedColumns, VersionMeta, VersionRow } from './store/store.ts';

/** A live (non-tombstone) version. */
export type LiveVersion = Extract<VersionRow, { deleted: false }>;

export interface ResolvedLayers {
  readonly kind: ItemKind;
  /** Least to most specific. */
  readonly layers: readonly LiveVersion[];
  /** The newest contributing version. */
  readonly version: number;
  /** The newest contributing write's revision. */
  readonly revision: number;
  readonly etag: string;
}

/** The chain for `env`, or `invalid_argument` naming the known environments. */
export function chainFor(env: string, environments: readonly string[]): string[] {
  const chain = environmentChain(env, environments);
  if (!chain) throw new AppError('invalid_argument', `Unknown environment "${env.slice(0, 64)}"; use one of: ${environments.join(', ')}.`);
  return chain;
}

/**
 * Picks the contributing layers from an item's current versions, or undefined
 * when no layer of the chain has a value.
 */
export function resolveLayers(kind: ItemKind, current: readonly VersionRow[], chain: readonly string[]): ResolvedLayers | undefined {
  const live = current.filter((row): row is LiveVersion => !row.deleted);
  const layers = contributingLayers(kind, live, chain);
  if (layers.length === 0) return undefined;
  return {
    kind,
    layers,
    version: Math.max(...layers.map((layer) => layer.version)),
    revision: Math.max(...layers.map((layer) => layer.revision)),
    etag: layersEtag(layers),
  };
}

/** Refuses a config value that is not JSON, before anything is stored. */
export function assertJson(value: Buffer): void {
  assertJsonDepth(value);
  try {
    JSON.parse(value.toString('utf8'));
  } catch {
    throw new AppError('invalid_json', 'A config value must be valid JSON.');
  }
}

/**
 * Deep-merges plaintext config layers (least to most specific) into one JSON
 * buffer. Zero-fills the layer buffers it consumes.
 */
export function mergeConfigBuffers(layers: Buffer[]): Buffer {
  if (layers.length === 1) return layers[0] as Buffer;
  try {
    const parsed = layers.map((layer) => JSON.parse(layer.toString('utf8')) as JsonValue);
    return Buffer.from(JSON.stringify(mergeLayers(parsed)), 'utf8');
  } finally {
    zeroize(...layers);
  }
}

/**
 * Versions to delete so at most `max` remain, oldest first, never the current
 * (newest) version of any environment layer, tombstones included, since removing
 * a current tombstone would resurrect the layer's previous value, and never a
 * version in `keep` (key-ring members within their grace).
 */
export function pruneCandidates(history: readonly VersionMeta[], max: number, keep: ReadonlySet<number> = new Set()): number[] {
  if (history.length <= max) return [];
  const currentByEnv = new Map<string, number>();
  for (const row of history) currentByEnv.set(row.env, Math.max(currentByEnv.get(row.env) ?? 0, row.version));
  const current = new Set(currentByEnv.values());
  const removable = history.filter((row) => !current.has(row.version) && !keep.has(row.version)).sort((a, b) => a.version - b.version);
  return removable.slice(0, Math.max(0, history.length - max)).map((row) => row.version);
}

/** The sealed columns as stored, from a `seal()` result. */
export function sealedColumns(keyId: string, keyVersion: number, sealed: { iv: Buffer; ciphertext: Buffer; tag: Buffer }, aadVersion: AadVersion): SealedColumns {
  return { keyId, keyVersion, aadVersion, iv: sealed.iv, ciphertext: sealed.ciphertext, tag: sealed.tag };
}
