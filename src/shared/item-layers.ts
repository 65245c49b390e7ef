/**
 * Pure rules of an item's environment layers, shared by the server (which
 * resolves what a read returns) and the agent (which re-merges the layers an
 * event carries inline): which layers contribute to a read of `env` (configs
 * inherit and deep-merge along the chain, a secret takes the most specific
 * layer), the ETag over them, and the merge of their plaintexts.
 */
import { AppError } from './errors.ts';
import { mergeLayers, type JsonValue } from './merge.ts';
import type { ItemKind } from './protocol.ts';

/** The layers of `live` (one per env, any order) that a read along `chain` combines, least to most specific. */
export function contributingLayers<L extends { readonly env: string }>(kind: ItemKind, live: readonly L[], chain: readonly string[]): L[] {
  const byEnv = new Map(live.map((layer) => [layer.env, layer]));
  const out: L[] = [];
  for (const env of chain) {
    const layer = byEnv.get(env);
    if (layer) out.push(layer);
  }
  return kind === 'secret' ? out.slice(-1) : out;
}

/**
 * The etag lists every contributing version in chain order. Versions are unique
 * per item (across environments and deletions), so the list changes whenever
 * the set of contributing writes does, and not when a rotation re-seals them.
 */
export function layersEtag(layers: readonly { readonly version: number }[]): string {
  return `"${layers.map((layer) => layer.version).join('.')}"`;
}

/**
 * The value a read returns from its contributing plaintexts (least to most
 * specific): configs deep-merged as JSON, a secret's most specific layer.
 * Returns a new buffer; the inputs stay the caller's to zero-fill.
 */
export function mergePlaintexts(kind: ItemKind, plaintexts: readonly Buffer[]): Buffer {
  if (kind !== 'config') return Buffer.from(plaintexts[plaintexts.length - 1] as Buffer);
  let layers: JsonValue[];
  try {
    layers = plaintexts.map((p) => JSON.parse(p.toString('utf8')) as JsonValue);
  } catch {
    throw new AppError('upstream_error', 'A config layer is not valid JSON.');
  }
  return Buffer.from(JSON.stringify(mergeLayers(layers)));
}
