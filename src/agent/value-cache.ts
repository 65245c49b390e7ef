/**
 * The decrypted-value cache (DESIGN.md §5): lru-cache bounded by entries and
 * bytes, with request coalescing, refresh-ahead, stale-if-error up to
 * max-stale, short negative caching of 404s, and invalidation by applied
 * events. It knows nothing of HTTP or gRPC: values come from a `Loader`.
 *
 * No stale read after an applied event: every upstream fetch is a `Flight`
 * record that acts as the key's generation. `invalidate()` marks the key's
 * flight superseded and detaches it, so a response that was in flight when
 * the event landed is never stored and never handed to a caller; waiting
 * callers fetch again.
 *
 * Freshness: while the watch stream is connected an entry is fresh until its
 * TTL (a backstop for lost events). While the stream is down an entry is
 * "stale since" max(stream down, fetched) and is served with its staleness
 * until max-stale, when it must be refetched or the read fails.
 */
import { LRUCache } from 'lru-cache';
import type { Clock } from '../shared/clock.ts';
import { AppError } from '../shared/errors.ts';
import { zeroize } from '../shared/crypto.ts';
import { itemKey, type ItemRef } from '../shared/paths.ts';
import type { ItemKind } from '../shared/protocol.ts';
import type { Bytes, Milliseconds } from '../shared/units.ts';
import { representations, type Representations } from './item-representation.ts';

/** 404s are remembered this long so a caller polling a missing key does not hammer the server. */
export const NEGATIVE_TTL_MS: Milliseconds = 2_000;
/** A hit on an entry older than this fraction of the TTL refreshes it in the background. */
export const REFRESH_AHEAD_FRACTION = 0.8;
/** A key read within this window counts as hot: refetched at once after an event. */
export const HOT_WINDOW_MS: Milliseconds = 60_000;
/** While the stream is down, stale entries are revalidated in the background at most this often. */
export const STALE_REVALIDATE_INTERVAL_MS: Milliseconds = 1_000;
/** Fetches discarded in a row for one read (the key changes faster than we fetch) before giving up. */
export const MAX_SUPERSEDED_RETRIES = 5;
/** Fixed per-entry overhead counted against the byte budget. */
const ENTRY_OVERHEAD_BYTES: Bytes = 256;

/** What a loader returns: one decrypted, merged value. */
export interface LoadedValue {
  readonly kind: ItemKind;
  readonly version: number;
  readonly revision: number;
  readonly etag: string;
  /** Merged JSON bytes (config) or raw bytes (secret). Owned by the cache from now on. */
  readonly plaintext: Buffer;
}

export type Loader = (ref: ItemRef, env: string, signal: AbortSignal) => Promise<LoadedValue>;

/** A cached value, with its data-API JSON body rendered once at store time. */
export interface CachedValue extends LoadedValue {
  readonly namespace: string;
  readonly name: string;
  readonly env: string;
  /** `{ namespace, name, kind, env, version, revision, value[, encoding] }` as bytes. */
  readonly json: Buffer;
  /** When the server last confirmed this value (clock ms). */
  readonly fetchedAt: Milliseconds;
  /** The data API's JSON and raw representations with their fixed headers, built at store time. */
  readonly representations: Representations;
  /** Lease count: a value being written to a socket is zero-filled only once released. */
  readonly life: { leases: number; dropped: boolean };
}

/** Holds a value's buffers while a response is written from them. */
export function retain(value: CachedValue): void {
  value.life.leases += 1;
}

/** Ends a `retain`; zero-fills the buffers if the cache dropped the value meanwhile. */
export function release(value: CachedValue): void {
  value.life.leases -= 1;
  if (value.life.leases === 0 && value.life.dropped) zeroize(value.plaintext, value.json);
}

/** The cache lets go of a value: zero-fill now, or when its last lease ends. */
function drop(value: CachedValue): void {
  if (value.life.dropped) return;
  value.life.dropped = true;
  if (value.life.leases === 0) zeroize(value.plaintext, value.json);
}

/** A read's outcome. `value` is retained for the caller: call `release(value)` when done with its buffers. */
export interface ReadResult {
  readonly value: CachedValue;
  readonly source: 'hit' | 'miss' | 'coalesced' | 'stale';
  /** Seconds the value may be behind the server; 0 when known fresh. */
  readonly staleSeconds: number;
  /** Seconds since the server confirmed the value. */
  readonly ageSeconds: number;
}

type Entry =
  | { readonly state: 'value'; readonly value: CachedValue; lastReadAt: Milliseconds; reads: number; revalidateAfter: Milliseconds }
  | { readonly state: 'absent'; readonly until: Milliseconds; readonly error: AppError };

interface Flight {
  readonly key: string;
  readonly promise: Promise<CachedValue>;
  /** Set when an event for the key landed while this fetch was out: its result is never used. */
  superseded: boolean;
  waiters: number;
}

/** Counters the cache reports; the agent wires them to Prometheus. */
export interface CacheObserver {
  hit(): void;
  miss(): void;
  coalesced(): void;
  stale(): void;
  eviction(reason: string): void;
  superseded(): void;
  upstreamFailure(code: string): void;
}

const noopObserver: CacheObserver = {
  hit() {},
  miss() {},
  coalesced() {},
  stale() {},
  eviction() {},
  superseded() {},
  upstreamFailure() {},
};

export interface ValueCacheOptions {
  readonly loader: Loader;
  readonly clock: Clock;
  /** Backstop TTL while the stream is connected. */
  readonly ttl: Milliseconds;
  /** How long a value may be served after the server became unreachable. */
  readonly maxStale: Milliseconds;
  readonly maxEntries: number;
  readonly maxBytes: Bytes;
  /** When the watch stream went down, or undefined while it is connected. */
  readonly streamDownSince: () => Milliseconds | undefined;
  readonly observer?: CacheObserver;
  /** Background work failed (logged by the agent; never carries a value). */
  readonly onBackgroundError?: (ref: ItemRef, env: string, err: AppError) => void;
}

/** Upstream failures after which the last good value may still be served. */
export function isTransient(err: AppError): boolean {
  return err.code === 'unavailable' || err.code === 'upstream_error' || err.code === 'upstream_timeout' || err.code === 'store_unavailable';
}

/** Failures that mean the data is gone or no longer ours: the entry is dropped. */
function dropsEntry(err: AppError): boolean {
  return err.code === 'not_found' || err.code === 'permission_denied' || err.code === 'unauthenticated' || err.code === 'decryption_failed';
}

const cacheKey = (ref: ItemRef, env: string): string => `${env}\u0000${ref.namespace}/${ref.name}`;

function renderJson(ref: ItemRef, env: string, loaded: LoadedValue): Buffer {
  let value: unknown;
  let encoding: 'utf8' | 'base64' | undefined;
  if (loaded.kind === 'config') {
    value = JSON.parse(loaded.plaintext.toString('utf8')) as unknown;
  } else {
    const text = new TextDecoder('utf-8', { fatal: false }).decode(loaded.plaintext);
    const valid = Buffer.byteLength(text) === loaded.plaintext.length && !text.includes('\uFFFD');
    value = valid ? text : loaded.plaintext.toString('base64');
    encoding = valid ? 'utf8' : 'base64';
  }
  return Buffer.from(
    JSON.stringify({
      namespace: ref.namespace,
      name: ref.name,
      kind: loaded.kind,
      env,
      version: loaded.version,
      revision: loaded.revision,
      value,
      ...(encoding ? { encoding } : {}),
    }),
  );
}

/**
 * Copies an entry's two buffers into one allocation of its own and zero-fills
 * the inputs. Why: small `Buffer.from` results are slices of Node's shared
 * 8 KiB pool, which the loader's transient buffers (base64 decode, decipher
 * output) also fill, so a long-lived entry kept whole slabs of dead bytes
 * alive: about 2.5× the cached bytes in external memory at 10k × 1 KiB.
 */
function packBuffers(plaintext: Buffer, json: Buffer): { plaintext: Buffer; json: Buffer } {
  const packed = Buffer.allocUnsafeSlow(plaintext.length + json.length);
  plaintext.copy(packed, 0);
  json.copy(packed, plaintext.length);
  zeroize(plaintext, json);
  return { plaintext: packed.subarray(0, plaintext.length), json: packed.subarray(plaintext.length) };
}

export class ValueCache {
  readonly #options: ValueCacheOptions;
  readonly #observer: CacheObserver;
  readonly #lru: LRUCache<string, Entry>;
  readonly #flights = new Map<string, Flight>();
  /** item key → cache keys (one per env) so an event finds every variant. */
  readonly #variants = new Map<string, Set<string>>();
  readonly #refs = new Map<string, { ref: ItemRef; env: string }>();
  #closed = false;

  constructor(options: ValueCacheOptions) {
    this.#options = options;
    this.#observer = options.observer ?? noopObserver;
    this.#lru = new LRUCache<string, Entry>({
      max: options.maxEntries,
      maxSize: options.maxBytes,
      sizeCalculation: (entry) => (entry.state === 'value' ? entry.value.plaintext.length + entry.value.json.length + ENTRY_OVERHEAD_BYTES : ENTRY_OVERHEAD_BYTES),
      dispose: (entry, key, reason) => {
        if (entry.state === 'value') drop(entry.value);
        if (reason === 'evict') this.#observer.eviction('capacity');
        if (reason !== 'set') this.#forgetVariant(key);
      },
    });
  }

  get size(): number {
    return this.#lru.size;
  }

  get bytes(): Bytes {
    return this.#lru.calculatedSize;
  }

  /**
   * Reads a value: from the cache when fresh, else through one coalesced
   * upstream fetch; serves the last good value marked stale when the server
   * is unreachable, until max-stale.
   */
  async read(ref: ItemRef, env: string, options: { signal?: AbortSignal } = {}): Promise<ReadResult> {
    return this.readCached(ref, env) ?? this.#fetchForCaller(ref, env, cacheKey(ref, env), options.signal);
  }

  /**
   * The synchronous part of `read`: a fresh hit, a stale-marked serve while the
   * stream is down, or a remembered 404 (thrown); undefined when only an
   * upstream fetch can answer. The data API's hot path calls this first so a
   * hit costs no promise.
   */
  readCached(ref: ItemRef, env: string): ReadResult | undefined {
    if (this.#closed) throw new AppError('unavailable', 'The agent is shutting down.');
    const key = cacheKey(ref, env);
    const now = this.#options.clock.now();
    const entry = this.#lru.get(key);
    if (entry?.state === 'absent') {
      if (entry.until > now) {
        this.#observer.hit();
        throw entry.error;
      }
      this.#lru.delete(key);
      return undefined;
    }
    if (entry?.state !== 'value') return undefined;
    entry.lastReadAt = now;
    entry.reads += 1;
    const fresh = this.#freshness(entry.value, now);
    if (fresh.kind === 'fresh') {
      this.#observer.hit();
      if (now - entry.value.fetchedAt > this.#options.ttl * REFRESH_AHEAD_FRACTION && entry.reads > 1) this.#background(ref, env);
      return this.#result(entry.value, 'hit', 0, now);
    }
    if (fresh.kind === 'stale') {
      // The stream is down: serve what we have, marked, and revalidate quietly.
      this.#observer.stale();
      if (now >= entry.revalidateAfter) {
        entry.revalidateAfter = now + STALE_REVALIDATE_INTERVAL_MS;
        this.#background(ref, env);
      }
      return this.#result(entry.value, 'stale', fresh.staleMs, now);
    }
    // Expired (TTL, or past max-stale): only a foreground fetch may answer.
    return undefined;
  }

  async #fetchForCaller(ref: ItemRef, env: string, key: string, signal: AbortSignal | undefined): Promise<ReadResult> {
    for (let attempt = 0; attempt <= MAX_SUPERSEDED_RETRIES; attempt++) {
      const existing = this.#flights.get(key);
      const flight = existing ?? this.#startFlight(ref, env, key);
      if (existing) this.#observer.coalesced();
      else this.#observer.miss();
      flight.waiters += 1;
      let value: CachedValue;
      try {
        value = await abortable(flight.promise, signal);
      } catch (err) {
        const appError = err instanceof AppError ? err : new AppError('internal', undefined, { cause: err });
        if (flight.superseded) continue;
        return this.#staleOrThrow(key, appError);
      } finally {
        flight.waiters -= 1;
      }
      if (flight.superseded) continue;
      // Evicted and zero-filled between the fetch settling and this continuation: fetch again.
      if (value.life.dropped && value.life.leases === 0) continue;
      return this.#result(value, existing ? 'coalesced' : 'miss', 0, this.#options.clock.now());
    }
    throw new AppError('unavailable', 'The value changed repeatedly while it was being fetched; retry.');
  }

  /** After a failed fetch: the last good value if the failure is transient and within max-stale. */
  #staleOrThrow(key: string, err: AppError): ReadResult {
    const entry = this.#lru.get(key);
    const now = this.#options.clock.now();
    if (entry?.state === 'value' && isTransient(err)) {
      const downSince = this.#options.streamDownSince();
      const staleSince = downSince === undefined ? entry.value.fetchedAt + this.#options.ttl : Math.max(downSince, entry.value.fetchedAt);
      const staleMs = Math.max(0, now - staleSince);
      if (staleMs <= this.#options.maxStale) {
        this.#observer.stale();
        return this.#result(entry.value, 'stale', staleMs, now);
      }
      throw new AppError('stale_expired', `The server is unreachable (${err.code}) and the cached value is older than max-stale.`);
    }
    throw err;
  }

  #freshness(value: CachedValue, now: Milliseconds): { kind: 'fresh' } | { kind: 'stale'; staleMs: Milliseconds } | { kind: 'expired' } {
    const downSince = this.#options.streamDownSince();
    if (downSince === undefined) {
      return now - value.fetchedAt < this.#options.ttl ? { kind: 'fresh' } : { kind: 'expired' };
    }
    const staleMs = Math.max(0, now - Math.max(downSince, value.fetchedAt));
    return staleMs <= this.#options.maxStale ? { kind: 'stale', staleMs } : { kind: 'expired' };
  }

  #result(value: CachedValue, source: ReadResult['source'], staleMs: Milliseconds, now: Milliseconds): ReadResult {
    retain(value);
    return {
      value,
      source,
      staleSeconds: Math.floor(staleMs / 1000),
      ageSeconds: Math.max(0, Math.floor((now - value.fetchedAt) / 1000)),
    };
  }

  #startFlight(ref: ItemRef, env: string, key: string): Flight {
    const controller = new AbortController();
    const flight: Flight = { key, superseded: false, waiters: 0, promise: undefined as unknown as Promise<CachedValue> };
    const started = this.#options.clock.now();
    (flight as { promise: Promise<CachedValue> }).promise = this.#options
      .loader(ref, env, controller.signal)
      .then(
        (loaded) => {
          if (this.#flights.get(key) === flight) this.#flights.delete(key);
          if (flight.superseded || this.#closed) {
            // An event for this key landed while we were fetching: never store or serve.
            zeroize(loaded.plaintext);
            if (flight.superseded) this.#observer.superseded();
            this.#forgetIfIdle(key);
            throw new AppError('unavailable', 'superseded');
          }
          const { plaintext, json } = packBuffers(loaded.plaintext, renderJson(ref, env, loaded));
          const value: CachedValue = {
            ...loaded,
            plaintext,
            namespace: ref.namespace,
            name: ref.name,
            env,
            json,
            representations: representations({ kind: loaded.kind, etag: loaded.etag, revision: loaded.revision, plaintext, json }),
            fetchedAt: started,
            life: { leases: 0, dropped: false },
          };
          this.#store(ref, env, key, value);
          return value;
        },
        (err: unknown) => {
          if (this.#flights.get(key) === flight) this.#flights.delete(key);
          const appError = err instanceof AppError ? err : new AppError('internal', undefined, { cause: err });
          if (!flight.superseded) this.#onFailure(key, appError);
          this.#forgetIfIdle(key);
          throw appError;
        },
      );
    // Background flights may have no waiter; their rejection is handled here.
    flight.promise.catch(() => {});
    this.#flights.set(key, flight);
    this.#trackVariant(ref, env, key);
    return flight;
  }

  #store(ref: ItemRef, env: string, key: string, value: CachedValue): void {
    const previous = this.#lru.get(key);
    this.#lru.set(key, {
      state: 'value',
      value,
      lastReadAt: previous?.state === 'value' ? previous.lastReadAt : this.#options.clock.now(),
      reads: previous?.state === 'value' ? previous.reads : 0,
      revalidateAfter: 0,
    });
    this.#trackVariant(ref, env, key);
  }

  #onFailure(key: string, err: AppError): void {
    this.#observer.upstreamFailure(err.code);
    if (!dropsEntry(err)) return;
    // Revoked, deleted or corrupt: stop serving the old value now.
    const ref = this.#refs.get(key);
    this.#lru.delete(key);
    if (err.code === 'not_found') {
      this.#lru.set(key, { state: 'absent', until: this.#options.clock.now() + NEGATIVE_TTL_MS, error: err });
      if (ref) this.#trackVariant(ref.ref, ref.env, key);
    }
  }

  /** Starts a fetch nobody waits on (refresh-ahead, post-event refetch, stale revalidation). */
  #background(ref: ItemRef, env: string): void {
    const key = cacheKey(ref, env);
    if (this.#closed || this.#flights.has(key)) return;
    const flight = this.#startFlight(ref, env, key);
    flight.promise.catch((err: unknown) => {
      if (!flight.superseded && err instanceof AppError) this.#options.onBackgroundError?.(ref, env, err);
    });
  }

  /** Loads a value in the background now (prefetch, hot refetch). Resolves when stored or failed. */
  async prefetch(ref: ItemRef, env: string): Promise<void> {
    release((await this.read(ref, env)).value);
  }

  /** Refetches in the background without invalidating what is served meanwhile. */
  refresh(ref: ItemRef, env: string): void {
    this.#background(ref, env);
  }

  /**
   * Applies an event for one item: drops every env variant, supersedes any
   * fetch in flight, and returns the variants that were hot (to refetch).
   */
  invalidate(ref: ItemRef): Array<{ ref: ItemRef; env: string }> {
    const item = itemKey(ref);
    const keys = this.#variants.get(item);
    if (!keys) return [];
    const hot: Array<{ ref: ItemRef; env: string }> = [];
    const now = this.#options.clock.now();
    for (const key of [...keys]) {
      const flight = this.#flights.get(key);
      if (flight) {
        flight.superseded = true;
        this.#flights.delete(key);
      }
      const entry = this.#lru.peek(key);
      const tracked = this.#refs.get(key);
      if (tracked && ((entry?.state === 'value' && now - entry.lastReadAt < HOT_WINDOW_MS) || (flight && flight.waiters > 0))) {
        hot.push(tracked);
      }
      if (entry) this.#lru.delete(key);
    }
    return hot;
  }

  /** Every cached or in-flight item under a namespace prefix (exact namespace when `exact`). */
  itemsUnder(prefix: string, exact = false): ItemRef[] {
    const out = new Map<string, ItemRef>();
    for (const { ref } of this.#refs.values()) {
      const match = exact ? ref.namespace === prefix : prefix === '' || ref.namespace === prefix || ref.namespace.startsWith(`${prefix}/`);
      if (match) out.set(itemKey(ref), ref);
    }
    return [...out.values()];
  }

  /** Variants of cached items under a namespace (for rotation refreshes). */
  variantsIn(namespace: string): Array<{ ref: ItemRef; env: string; hot: boolean }> {
    const now = this.#options.clock.now();
    const out: Array<{ ref: ItemRef; env: string; hot: boolean }> = [];
    for (const [key, tracked] of this.#refs) {
      if (tracked.ref.namespace !== namespace) continue;
      const entry = this.#lru.peek(key);
      out.push({ ...tracked, hot: entry?.state === 'value' && now - entry.lastReadAt < HOT_WINDOW_MS });
    }
    return out;
  }

  /** Items read within the hot window (refetched after a resync). */
  hotVariants(): ItemRef[] {
    const now = this.#options.clock.now();
    const out: ItemRef[] = [];
    for (const [key, tracked] of this.#refs) {
      const entry = this.#lru.peek(key);
      if (entry?.state === 'value' && now - entry.lastReadAt < HOT_WINDOW_MS) out.push(tracked.ref);
    }
    return out;
  }

  #trackVariant(ref: ItemRef, env: string, key: string): void {
    const item = itemKey(ref);
    let set = this.#variants.get(item);
    if (!set) {
      set = new Set();
      this.#variants.set(item, set);
    }
    set.add(key);
    if (!this.#refs.has(key)) this.#refs.set(key, { ref, env });
  }

  #forgetIfIdle(key: string): void {
    if (!this.#lru.has(key)) this.#forgetVariant(key);
  }

  #forgetVariant(key: string): void {
    if (this.#flights.has(key)) return;
    const tracked = this.#refs.get(key);
    if (!tracked) return;
    this.#refs.delete(key);
    const item = itemKey(tracked.ref);
    const set = this.#variants.get(item);
    set?.delete(key);
    if (set?.size === 0) this.#variants.delete(item);
  }

  /** Drops everything and zero-fills every buffer (resync, shutdown). */
  clear(): void {
    for (const flight of this.#flights.values()) flight.superseded = true;
    this.#flights.clear();
    this.#lru.clear();
    this.#variants.clear();
    this.#refs.clear();
  }

  close(): void {
    this.#closed = true;
    this.clear();
  }
}

/** Waits for a promise unless the caller gives up first (the shared fetch carries on). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(new AppError('unavailable', 'The request was cancelled.'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new AppError('unavailable', 'The request was cancelled.'));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
