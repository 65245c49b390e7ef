/**
 * An in-memory stand-in for the server's key handling, for agent unit tests
 * and the simulation suite: one DEK per namespace (per store), sealing of
 * layers as the server seals them, and an Upstream whose fetchDeks wraps the
 * keys for the agent's transport key exactly as POST /v1/deks does.
 */
import { generateEphemeralKeyPair, newDek, parseTransportPublicKey, seal, sealedToWire, valueAad, wrapDek } from '../../src/shared/crypto.ts';
import type { InlineLayer } from '../../src/shared/watch-proto.ts';
import type { DeksResponse } from '../../src/shared/protocol.ts';

export const KEY_ID = 'k1';

export class SealedKeyring {
  readonly #deks = new Map<string, Buffer>();
  deksFetched = 0;

  dek(namespace: string): Buffer {
    let dek = this.#deks.get(namespace);
    if (!dek) {
      dek = newDek();
      this.#deks.set(namespace, dek);
    }
    return dek;
  }

  /** A new set of keys (a store reset or restore to another store). */
  reset(): void {
    this.#deks.clear();
  }

  sealLayer(namespace: string, name: string, layer: { env: string; version: number; revision: number }, plaintext: Buffer): InlineLayer {
    // AAD v1 (no aadVersion on the layer), which agents still open during the re-seal migration.
    const aad = valueAad({ namespace, name, version: layer.version, env: layer.env, kind: 'config', keyId: KEY_ID, keyVersion: 1 }, 1);
    const wire = sealedToWire(seal(this.dek(namespace), plaintext, aad));
    return { env: layer.env, version: layer.version, revision: layer.revision, keyId: KEY_ID, keyVersion: 1, ...wire };
  }

  fetchDeks(namespace: string, publicKey: string): DeksResponse {
    this.deksFetched += 1;
    const ephemeral = generateEphemeralKeyPair();
    const recipient = parseTransportPublicKey(publicKey);
    const wrapped = wrapDek(this.dek(namespace), recipient, ephemeral, { namespace, keyVersion: 1 });
    return { namespace, keyId: KEY_ID, currentVersion: 1, serverPublicKey: ephemeral.publicKeyBase64, keys: [{ ...wrapped, version: 1 }] };
  }
}
