/**
 * Where decrypted values come from. `createEnvelopeLoader` turns the server's
 * ciphertext envelope into plaintext (DEK per layer, AAD per identity, config
 * layers deep-merged), for the cache to call on a miss. `ValueSource` is the
 * read API other agent modules (the file renderer) use: every read goes
 * through the cache, so it is coalesced and invalidated like an API read.
 */
import { AppError } from '../shared/errors.ts';
import { openLayers } from './layer-opener.ts';
import type { RingRead, RingStore } from './ring-store.ts';
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
    const plaintext = await openLayers(ref, envelope.kind, envelope.layers, deks, signal, () => observer?.decryptionFailed(ref));
    observer?.fetched?.(ref, envelope.rollout, envelope.version);
    return { kind: envelope.kind, version: envelope.version, revision: envelope.revision, etag: envelope.etag, plaintext } satisfies LoadedValue;
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
  /** The item's key ring (issue 20); private copies the caller zero-fills (`releaseRing`). */
  readRing(ref: ItemRef, env: string, signal?: AbortSignal): Promise<RingRead>;
}

export function createValueSource(cache: ValueCache, defaultEnv: string, allowed: (ref: ItemRef) => boolean, rings?: RingStore): ValueSource {
  return {
    defaultEnv,
    readRing(ref, env, signal) {
      if (!allowed(ref)) return Promise.reject(new AppError('permission_denied', `${ref.namespace} is outside this agent's --prefix list.`));
      if (!rings) return Promise.reject(new AppError('unavailable', 'This agent does not serve key rings.'));
      return rings.read(ref, env, signal);
    },
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
