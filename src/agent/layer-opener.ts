/**
 * Opens the sealed layers of one value (an envelope's, or a key-ring
 * member's) with the namespace's data keys and merges them: each layer's AAD
 * is rebuilt from its identity, a key held from before a store reset is
 * refreshed once, and every intermediate plaintext is zero-filled.
 */
import { aadVersionOf, open, sealedFromWire, valueAad, zeroize } from '../shared/crypto.ts';
import { AppError } from '../shared/errors.ts';
import { mergePlaintexts } from '../shared/item-layers.ts';
import type { ItemRef } from '../shared/paths.ts';
import type { EnvelopeLayer, ItemKind } from '../shared/protocol.ts';
import type { DekStore } from './dek-store.ts';

/** The merged plaintext of `layers` (least to most specific); the caller owns and zero-fills it. */
export async function openLayers(
  ref: ItemRef,
  kind: ItemKind,
  layers: readonly EnvelopeLayer[],
  deks: DekStore,
  signal?: AbortSignal,
  onFailed?: () => void,
): Promise<Buffer> {
  const plaintexts: Buffer[] = [];
  let keysRefreshed = false;
  try {
    for (const layer of layers) {
      // Both AAD layouts open during the server's re-seal migration; each layer names its own.
      const aad = valueAad(
        { namespace: ref.namespace, name: ref.name, version: layer.version, env: layer.env, kind, keyId: layer.keyId, keyVersion: layer.keyVersion },
        aadVersionOf(layer.aadVersion),
      );
      for (;;) {
        const dek = await deks.key(ref.namespace, layer.keyId, layer.keyVersion, signal);
        try {
          plaintexts.push(open(dek, sealedFromWire(layer), aad));
          break;
        } catch (err) {
          // Keys held from before a store reset or restore open nothing: fetch the namespace's keys once more.
          if (!keysRefreshed && err instanceof AppError && err.code === 'decryption_failed') {
            keysRefreshed = true;
            deks.invalidate(ref.namespace);
            continue;
          }
          onFailed?.();
          throw err;
        } finally {
          zeroize(dek);
        }
      }
    }
    return mergePlaintexts(kind, plaintexts);
  } finally {
    zeroize(...plaintexts);
  }
}
