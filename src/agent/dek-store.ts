/**
 * Namespace data keys, fetched wrapped for this agent's X25519 key and kept
 * unwrapped in memory (key material in the cache, zero-filled when dropped).
 * Concurrent misses for one namespace share one upstream call; a rotation
 * event drops the namespace's keys and supersedes a fetch in flight, exactly
 * as the value cache does.
 */
import { LRUCache } from 'lru-cache';
import { dekUnwrapper, zeroize, type TransportKeyPair } from '../shared/crypto.ts';
import { AppError } from '../shared/errors.ts';
import type { Upstream } from './upstream.ts';

/** A copy in its own memory (not a slice of Buffer's shared pool), for the caller to zero-fill. */
function privateCopy(key: Buffer): Buffer {
  const copy = Buffer.alloc(key.length);
  key.copy(copy);
  return copy;
}

/** Message prefix of the (transient) error for a key version the server no longer sends. */
export const KEY_VERSION_GONE = 'data key version retired';

/** Namespaces whose keys are held at most (each a handful of 32-byte keys). */
export const MAX_DEK_NAMESPACES = 10_000;

interface DekSet {
  readonly keyId: string;
  readonly currentVersion: number;
  readonly keys: Map<number, Buffer>;
}

interface Flight {
  readonly promise: Promise<DekSet>;
  superseded: boolean;
}

export class DekStore {
  readonly #upstream: Upstream;
  readonly #keyPair: TransportKeyPair;
  readonly #sets: LRUCache<string, DekSet>;
  readonly #flights = new Map<string, Flight>();

  /** `maxNamespaces` (default MAX_DEK_NAMESPACES): lru-cache allocates its slots up front, so many short-lived stores (the simulation suite) ask for fewer. */
  constructor(upstream: Upstream, keyPair: TransportKeyPair, options: { maxNamespaces?: number } = {}) {
    this.#upstream = upstream;
    this.#keyPair = keyPair;
    this.#sets = new LRUCache<string, DekSet>({
      max: options.maxNamespaces ?? MAX_DEK_NAMESPACES,
      dispose: (set) => {
        for (const key of set.keys.values()) zeroize(key);
      },
    });
  }

  /**
   * A private copy of DEK `version` of `namespace` (the caller zero-fills it),
   * fetching the namespace's keys if they are not held. Never the held buffer:
   * an eviction or rotation zero-fills that while a caller may still use it.
   */
  async key(namespace: string, keyId: string, version: number, signal?: AbortSignal): Promise<Buffer> {
    const heldSet = this.#sets.get(namespace);
    const held = heldSet?.keyId === keyId ? heldSet.keys.get(version) : undefined;
    if (held) return privateCopy(held);
    // Unknown version (a rotation we have not seen yet): fetch once more.
    const set = await this.#fetch(namespace, signal);
    if (set.keyId !== keyId) throw new AppError('decryption_failed', `The envelope names key ${keyId}, the server sent ${set.keyId}.`);
    const key = set.keys.get(version);
    // Not tampering: a rotation retired the version between the envelope and the key fetch.
    if (!key) throw new AppError('upstream_error', `${KEY_VERSION_GONE}: no data key version ${version} for ${namespace}.`);
    return privateCopy(key);
  }

  #fetch(namespace: string, signal?: AbortSignal): Promise<DekSet> {
    const existing = this.#flights.get(namespace);
    if (existing) return existing.promise;
    const flight: Flight = { superseded: false, promise: undefined as unknown as Promise<DekSet> };
    (flight as { promise: Promise<DekSet> }).promise = (async () => {
      try {
        const response = await this.#upstream.fetchDeks(namespace, this.#keyPair.publicKeyBase64, signal);
        const keys = new Map<number, Buffer>();
        const unwrapper = dekUnwrapper(this.#keyPair, response.serverPublicKey);
        try {
          for (const wrapped of response.keys) keys.set(wrapped.version, unwrapper.unwrap(wrapped, { namespace, keyVersion: wrapped.version }));
        } catch (err) {
          zeroize(...keys.values());
          throw err;
        } finally {
          unwrapper.done();
        }
        const set: DekSet = { keyId: response.keyId, currentVersion: response.currentVersion, keys };
        if (!flight.superseded) {
          this.#sets.set(namespace, set);
        } else {
          // Never held, so never disposed: zero-fill once this flight's waiters
          // have copied their key (they resume in microtasks, before the immediate).
          setImmediate(() => zeroize(...keys.values()));
        }
        return set;
      } finally {
        if (this.#flights.get(namespace) === flight) this.#flights.delete(namespace);
      }
    })();
    this.#flights.set(namespace, flight);
    return flight.promise;
  }

  /** True when keys for the namespace are held. */
  has(namespace: string): boolean {
    return this.#sets.has(namespace);
  }

  /**
   * A new key version exists (KeyRotated). Versions below it are dropped and
   * zero-filled (issue 20): the rotation re-sealed every current value, so
   * none needs them, and after `retire-previous` the server destroyed them;
   * a key ring's older member that still needs one fetches it again. The
   * other held versions stay, so the next change event waits on at most one
   * fetch. A fetch in flight is superseded, since its answer may predate the
   * new version.
   */
  rotated(namespace: string, keyVersion: number): void {
    const flight = this.#flights.get(namespace);
    if (flight) {
      flight.superseded = true;
      this.#flights.delete(namespace);
    }
    const held = this.#sets.get(namespace);
    if (!held) return;
    for (const [version, key] of held.keys) {
      if (version >= keyVersion) continue;
      held.keys.delete(version);
      zeroize(key);
    }
  }

  /**
   * Fetches the namespace's keys ahead of need when `version` is not held (after
   * a rotation, spread over the refetch jitter); a failure is left for the
   * caller that needs the key to meet, with its own fetch.
   */
  prefetch(namespace: string, version: number): void {
    if (this.#sets.get(namespace)?.keys.has(version)) return;
    this.#fetch(namespace).catch(() => {});
  }

  /** Drops a namespace's keys (a key that no longer opens its values, resync). */
  invalidate(namespace: string): void {
    const flight = this.#flights.get(namespace);
    if (flight) {
      flight.superseded = true;
      this.#flights.delete(namespace);
    }
    this.#sets.delete(namespace);
  }

  clear(): void {
    for (const flight of this.#flights.values()) flight.superseded = true;
    this.#flights.clear();
    this.#sets.clear();
  }

  get size(): number {
    return this.#sets.size;
  }

  /** The key versions held per namespace (the test hooks' state: which keys this agent holds). */
  heldVersions(): Record<string, number[]> {
    const out: Record<string, number[]> = {};
    for (const [namespace, set] of this.#sets.entries()) out[namespace] = [...set.keys.keys()].sort((a, b) => a - b);
    return out;
  }
}
