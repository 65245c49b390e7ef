/**
 * Where decrypted values come from. `createEnvelopeLoader` turns the server's
 * ciphertext envelope into plaintext (DEK per layer, AAD per identity, config
 * layers deep-merged), for the cache to call on a miss. `ValueSource` is the
 * read API other agent modules (the file renderer) use: every read goes
 * through the cache, so it is coalesced and invalidated like an API read.
 */
import { aadVersionOf, open, sealedFromWire, valueAad, zeroize } from '../shared/crypto.ts';
import { AppError } from '../shared/errors.ts';
import { mergePlaintexts } from '../shared/item-layers.ts';
import type { ItemRef } from '../shared/paths.ts';
import { itemKey } from '../shared/paths.ts';
import { KEY_VERSION_GONE, type DekStore } from './dek-store.ts';
import type { Upstream } from './upstream.ts';
import { release, type LoadedValue, type Loader, type ValueCache } from './value-cache.ts';
import type { ItemKind } from '../shared/protocol.ts';

/** Test hook: lets a test hold a fetched envelope before the cache sees it (see test-hooks.ts). */
export interface FetchGate {
  afterFetch(key: string): Promise<void>;
}

export interface LoaderObserver {
  decryptionFailed(ref: ItemRef): void;
  /** A fetched value was newer than the applied revision and waited (see applied-position.ts). */
  futureFill?(outcome: 'applied' | 'timeout' | 'disconnected'): void;
  /** A value was fetched: a staged rollout's candidate (its id) or the stable version (undefined). */
  fetched?(ref: ItemRef, rollout: string | undefined, version: number): void;
}

/** Holds a fill from a revision the agent has not applied yet (applied-position.ts). */
export interface FillPosition {
  waitFor(revision: number, signal?: AbortSignal): Promise<'current' | 'applied' | 'timeout' | 'disconnected'>;
}

export function createEnvelopeLoader(upstream: Upstream, deks: DekStore, gate?: FetchGate, observer?: LoaderObserver, position?: FillPosition): Loader {
  const once = loadOnce(upstream, deks, gate, observer, position);
  return async (ref, env, signal) => {
    try {
      return await once(ref, env, signal);
    } catch (err) {
      // A rotation landed between the envelope and the keys: the next envelope names the new key.
      if (err instanceof AppError && err.message.startsWith(KEY_VERSION_GONE)) return once(ref, env, signal);
      throw err;
    }
  };
}

function loadOnce(upstream: Upstream, deks: DekStore, gate?: FetchGate, observer?: LoaderObserver, position?: FillPosition): Loader {
  return async (ref, env, signal) => {
    const envelope = await upstream.fetchEnvelope(ref, env, signal);
    if (gate) await gate.afterFetch(itemKey(ref));
    if (position) {
      // The event for this value is still on its way: let it land first (it supersedes this fill, and the read retries on the new snapshot).
      const outcome = await position.waitFor(envelope.revision, signal);
      if (outcome === 'applied' || outcome === 'timeout') observer?.futureFill?.(outcome);
    }
    if (envelope.namespace !== ref.namespace || envelope.name !== ref.name) {
      throw new AppError('upstream_error', 'The server answered for another item.');
    }
    const plaintexts: Buffer[] = [];
    let keysRefreshed = false;
    try {
      for (const layer of envelope.layers) {
        // Both AAD layouts open during the server's re-seal migration; each layer names its own.
        const aad = valueAad(
          { namespace: ref.namespace, name: ref.name, version: layer.version, env: layer.env, kind: envelope.kind, keyId: layer.keyId, keyVersion: layer.keyVersion },
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
            observer?.decryptionFailed(ref);
            throw err;
          } finally {
            zeroize(dek);
          }
        }
      }
      const plaintext = mergePlaintexts(envelope.kind, plaintexts);
      observer?.fetched?.(ref, envelope.rollout, envelope.version);
      return { kind: envelope.kind, version: envelope.version, revision: envelope.revision, etag: envelope.etag, plaintext } satisfies LoadedValue;
    } finally {
      zeroize(...plaintexts);
    }
  };
}

/** One decrypted value handed to a consumer outside the cache; the caller owns `plaintext` and zero-fills it when done. */
export interface SourcedValue {
  readonly namespace: string;
  readonly name: string;
  readonly env: string;
  readonly kind: ItemKind;
  readonly version: number;
  readonly revision: number;
  readonly etag: string;
  /** A private copy: merged JSON bytes (config) or raw bytes (secret). */
  readonly plaintext: Buffer;
  /** Seconds the value may be behind the server (0 = known fresh). */
  readonly staleSeconds: number;
}

/** Reads decrypted values through the cache (coalesced, invalidated by events). */
export interface ValueSource {
  /** `env` defaults to the agent's `--env`. Throws AppError (not_found, permission_denied, unavailable, …). */
  read(ref: ItemRef, env?: string, signal?: AbortSignal): Promise<SourcedValue>;
  /** The agent's default environment. */
  readonly defaultEnv: string;
}

export function createValueSource(cache: ValueCache, defaultEnv: string, allowed: (ref: ItemRef) => boolean): ValueSource {
  return {
    defaultEnv,
    async read(ref, env = defaultEnv, signal) {
      if (!allowed(ref)) throw new AppError('permission_denied', `${ref.namespace} is outside this agent's --prefix list.`);
      const result = await cache.read(ref, env, signal ? { signal } : {});
      const v = result.value;
      try {
        return {
        namespace: v.namespace,
        name: v.name,
        env: v.env,
        kind: v.kind,
        version: v.version,
        revision: v.revision,
        etag: v.etag,
        plaintext: Buffer.from(v.plaintext),
        staleSeconds: result.staleSeconds,
        };
      } finally {
        release(v);
      }
    },
  };
}
