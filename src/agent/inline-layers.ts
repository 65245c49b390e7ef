/**
 * Applies a change event's inline sealed layers with no request to the
 * server: each contributing layer is opened once with the namespace's data
 * key (fetched only when its version is unknown), then merged for every env
 * the agent serves along that env's chain (the heartbeat's `environments`).
 * The result is one `Loader` per env for the cache to fill from.
 */
import { aadVersionOf, open, sealedFromWire, valueAad, zeroize } from '../shared/crypto.ts';
import { AppError } from '../shared/errors.ts';
import { contributingLayers, layersEtag, mergePlaintexts } from '../shared/item-layers.ts';
import { environmentChain } from '../shared/merge.ts';
import type { ItemRef } from '../shared/paths.ts';
import type { ItemKind } from '../shared/protocol.ts';
import type { InlineLayer } from '../shared/watch-proto.ts';
import type { LoadedValue, Loader } from './cache/cached-value.ts';
import type { DekStore } from './dek-store.ts';

export interface InlineItem {
  readonly ref: ItemRef;
  readonly kind: ItemKind;
  readonly layers: readonly InlineLayer[];
}

/**
 * One loader per env in `envs`, or undefined when an env is not in
 * `environments` (the agent cannot tell its chain: refetch instead).
 */
export function inlineLoaders(item: InlineItem, envs: readonly string[], environments: readonly string[], deks: DekStore): Map<string, Loader> | undefined {
  const chains = new Map<string, string[]>();
  for (const env of envs) {
    const chain = environmentChain(env, environments);
    if (!chain) return undefined;
    chains.set(env, chain);
  }
  let opened: Promise<Map<string, LoadedValue | AppError>> | undefined;
  const openAll = async (signal: AbortSignal): Promise<Map<string, LoadedValue | AppError>> => {
    const plaintexts = new Map<string, Buffer>();
    try {
      const needed = new Set<InlineLayer>();
      for (const chain of chains.values()) for (const layer of contributingLayers(item.kind, item.layers, chain)) needed.add(layer);
      for (const layer of needed) {
        const dek = await deks.key(item.ref.namespace, layer.keyId, layer.keyVersion, signal);
        const aad = valueAad(
          { namespace: item.ref.namespace, name: item.ref.name, version: layer.version, env: layer.env, kind: item.kind, keyId: layer.keyId, keyVersion: layer.keyVersion },
          aadVersionOf(layer.aadVersion),
        );
        try {
          plaintexts.set(layer.env, open(dek, sealedFromWire(layer), aad));
        } finally {
          zeroize(dek);
        }
      }
      const out = new Map<string, LoadedValue | AppError>();
      for (const [env, chain] of chains) {
        const layers = contributingLayers(item.kind, item.layers, chain);
        if (layers.length === 0) {
          out.set(env, new AppError('not_found', `${item.ref.namespace}/${item.ref.name} has no value in ${env}.`));
          continue;
        }
        out.set(env, {
          kind: item.kind,
          version: Math.max(...layers.map((l) => l.version)),
          revision: Math.max(...layers.map((l) => l.revision)),
          etag: layersEtag(layers),
          plaintext: mergePlaintexts(item.kind, layers.map((l) => plaintexts.get(l.env) as Buffer)),
        });
      }
      return out;
    } finally {
      zeroize(...plaintexts.values());
    }
  };
  const loaders = new Map<string, Loader>();
  for (const env of envs) {
    loaders.set(env, async (_ref, _env, signal) => {
      opened ??= openAll(signal);
      const result = (await opened).get(env);
      if (result === undefined || result instanceof AppError) throw result ?? new AppError('internal');
      return result;
    });
  }
  return loaders;
}
