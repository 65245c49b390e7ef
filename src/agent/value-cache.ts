/**
 * The decrypted-value cache (DESIGN.md §5): lru-cache bounded by entries and
 * bytes, with request coalescing, refresh-ahead, stale-if-error up to
 * max-stale, short negative caching of 404s, and invalidation by applied
 * events. It knows nothing of HTTP or gRPC: values come from a `Loader`.
 *
 * Its parts live in cache/: the cached-value representation
 * (cache/cached-value.ts), the pure freshness decision (cache/freshness.ts),
 * fills in flight with their per-key and cache-wide generations
 * (cache/fill-flights.ts), the cache key (cache/cache-key.ts), the index of
 * an item's variants (cache/variant-index.ts), the counters it reports
 * (cache/cache-observer.ts) and a caller's abortable wait on a shared fetch
 * (cache/abortable.ts). What the watch stream does to the cache is decided
 * in event-applier.ts, never here.
 */
import { LRUCache } from 'lru-cache';
import type { Clock } from '../shared/clock.ts';
import { AppError, clientActionOf } from '../shared/errors.ts';
import { zeroize } from '../shared/crypto.ts';
import { itemKey, type ItemRef } from '../shared/paths.ts';
import type { ItemKind } from '../shared/protocol.ts';
import type { Bytes, Milliseconds } from '../shared/units.ts';
import { drop, heldBytes, isZeroed, release, retain, toCachedValue, type CachedValue, type LoadedValue, type Loader } from './cache/cached-value.ts';
import { abortable } from './cache/abortable.ts';
import { noopObserver, type CacheObserver } from './cache/cache-observer.ts';
import { cacheKey, variantOf } from './cache/cache-key.ts';
import { FillFlights, type Flight } from './cache/fill-flights.ts';
import { freshness, staleIfError } from './cache/freshness.ts';
import { VariantIndex } from './cache/variant-index.ts';

export { release, retain, type CachedValue, type LoadedValue, type Loader } from './cache/cached-value.ts';
export type { CacheObserver } from './cache/cache-observer.ts';
/** The cache key of an (item, env), for a caller that reads the same variant many times (cache/cache-key.ts). */
export { cacheKey as variantKey } from './cache/cache-key.ts';

/** 404s are remembered this long so a caller polling a missing key does not hammer the server. */
export const NEGATIVE_TTL_MS: Milliseconds = 2_000;
/** A hit on an entry older than this fraction of the TTL refreshes it in the background. */
export const REFRESH_AHEAD_FRACTION = 0.8;
/** A key read within this window counts as hot: refetched at once after an event. */
export const HOT_WINDOW_MS: Milliseconds = 60_000;
/**
 * A read moves its entry to the LRU's tail at most this often: eviction is
 * least-recently-used to within this interval (an entry read now is never
 * evicted before one last read or stored more than this long ago), and a hot
 * key's reads skip lru-cache's move-to-tail, which cost ~0.27 µs per read at
 * saturation (docs/FOOTPRINT-LOG.md, e16).
 */
export const RECENCY_INTERVAL_MS: Milliseconds = 1_000;
/** While the stream is down, stale entries are revalidated in the background at most this often. */
export const STALE_REVALIDATE_INTERVAL_MS: Milliseconds = 1_000;
/** Fetches discarded in a row for one read (the key changes faster than we fetch) before giving up. */
export const MAX_SUPERSEDED_RETRIES = 5;
/**
 * Heap an entry costs besides its buffers, counted against --cache-max-bytes
 * so the bound is what the cache holds: the value and LRU records, two Buffer
 * views and their ArrayBuffer, the key strings, LRU and map slots
 * (`node --expose-gc bench/entry-cost.ts`: 813 B at 1 KiB values).
 */
export const ENTRY_OVERHEAD_BYTES: Bytes = 800;

/**
 * A read's outcome. `value` is retained for the caller: call `release(value)`
 * when done with its buffers. Immutable, one per read (the lease is counted
 * on the value, once per read). A fresh hit's is made per read and dies
 * young: one shared per entry and age second was kept by the entry for a
 * second, so with many keys it was promoted garbage (docs/FOOTPRINT-LOG.md,
 * k28).
 */
export interface ReadResult {
  readonly value: CachedValue;
  readonly source: 'hit' | 'miss' | 'coalesced' | 'stale';
  /** Seconds the value may be behind the server; 0 when known fresh. */
  readonly staleSeconds: number;
  /** Seconds since the server confirmed the value. */
  readonly ageSeconds: number;
}

/**
 * `generation`: the cache-wide generation the value was filled in (older =
 * superseded). `lastReadAt`: when a read last moved the entry to the LRU's
 * tail, so exact to `RECENCY_INTERVAL_MS`. `reads`: reads of the entry, counted up to 2 (refresh-ahead skips a value
 * read only once).
 */
interface ValueEntry {
  readonly state: 'value';
  /** `RELEASED` once the LRU let go of the entry (a `VariantMemo` may still hold it). */
  value: CachedValue;
  readonly generation: number;
  lastReadAt: Milliseconds;
  reads: number;
  revalidateAfter: Milliseconds;
}
type Entry = ValueEntry | { readonly state: 'absent'; readonly until: Milliseconds; readonly error: AppError };

/**
 * What a disposed entry holds instead of its value, so a `VariantMemo` that
 * still points at the entry keeps no value (and no buffers) alive.
 */
const RELEASED: CachedValue = toCachedValue({ namespace: '', name: '' }, '', { kind: 'config', version: 0, revision: 0, etag: '""', plaintext: Buffer.from('null') }, 0);
drop(RELEASED);

/**
 * Where a caller that reads one variant many times (the data API keeps one
 * per URL) lets the cache remember the entry the last read found, so the
 * next read skips lru-cache's key lookup: with many keys that lookup's hash
 * table, key string and slot are memory a read would otherwise touch (CPU
 * cache misses, docs/FOOTPRINT-LOG.md k28). Both fields are the cache's own
 * (opaque to the caller), checked on every read; a caller that reads
 * another key with the memo sets `entryOf` to undefined first.
 */
export interface VariantMemo {
  entry?: unknown;
  entryOf?: unknown;
}

/** One (item, env) the cache holds or is filling. */
export interface Variant {
  readonly ref: ItemRef;
  readonly env: string;
  /** Read within the hot window, or a caller is waiting on its fill. */
  readonly hot: boolean;
}

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
  /**
   * A fill replaced a value (or a remembered 404) with a different ETag: TTL
   * refreshes, revalidation and resync reach files and SSE through this.
   */
  readonly onChange?: (value: CachedValue, previousEtag: string | undefined) => void;
}

/** Upstream failures after which the last good value may still be served. */
export function isTransient(err: AppError): boolean {
  return clientActionOf(err.code) === 'retry';
}

export class ValueCache {
  readonly #options: ValueCacheOptions;
  readonly #observer: CacheObserver;
  readonly #lru: LRUCache<string, Entry>;
  readonly #flights = new FillFlights<CachedValue>();
  readonly #variants = new VariantIndex();
  #closed = false;
  readonly #ttl: Milliseconds;
  /** A fresh hit on an entry older than this refreshes it in the background. */
  readonly #refreshAheadAge: Milliseconds;
  readonly #streamDownSince: () => Milliseconds | undefined;

  constructor(options: ValueCacheOptions) {
    this.#options = options;
    this.#observer = options.observer ?? noopObserver;
    this.#ttl = options.ttl;
    this.#refreshAheadAge = options.ttl * REFRESH_AHEAD_FRACTION;
    this.#streamDownSince = options.streamDownSince;
    this.#lru = new LRUCache<string, Entry>({
      max: options.maxEntries,
      maxSize: options.maxBytes,
      sizeCalculation: (entry) => (entry.state === 'value' ? heldBytes(entry.value) + ENTRY_OVERHEAD_BYTES : ENTRY_OVERHEAD_BYTES),
      dispose: (entry, key, reason) => {
        if (entry.state === 'value') {
          drop(entry.value);
          // A memo may still point at the entry: it must find it released, and hold nothing.
          entry.value = RELEASED;
        }
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

  /** The cache-wide generation (bumped by `supersedeAll`). */
  get generation(): number {
    return this.#flights.generation;
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
   * hit costs no promise. `key` is `variantKey(ref, env)`, when the caller
   * remembers it; `memo` (with that key) remembers the key's entry.
   */
  readCached(ref: ItemRef, env: string, key = cacheKey(ref, env), memo?: VariantMemo): ReadResult | undefined {
    if (this.#closed) throw new AppError('unavailable', 'The agent is shutting down.');
    const now = this.#options.clock.now();
    let entry: Entry | undefined;
    if (memo !== undefined && memo.entryOf === this && (memo.entry as ValueEntry).value !== RELEASED) {
      entry = memo.entry as ValueEntry;
    } else {
      // peek: the move to the LRU's tail is paid at most once per RECENCY_INTERVAL_MS below.
      entry = this.#lru.peek(key);
      if (memo !== undefined && entry?.state === 'value') {
        memo.entry = entry;
        memo.entryOf = this;
      }
    }
    if (entry === undefined) return undefined;
    if (entry.state === 'absent') {
      if (entry.until > now) {
        this.#observer.hit();
        throw entry.error;
      }
      this.#lru.delete(key);
      return undefined;
    }
    const sinceRead = now - entry.lastReadAt;
    // Negative after the wall clock stepped back (an NTP step): move now, or no entry would move until the clock caught up.
    if (sinceRead >= RECENCY_INTERVAL_MS || sinceRead < 0) {
      this.#lru.get(key);
      entry.lastReadAt = now;
    }
    // Counted up to 2 (all refresh-ahead asks), so a hot entry's reads write nothing to it.
    if (entry.reads < 2) entry.reads += 1;
    const value = entry.value;
    const age = now - value.fetchedAt;
    // The common case in one test: what `freshness` answers 'fresh' for while the stream is connected.
    if (age < this.#ttl && entry.generation === this.#flights.generation && this.#streamDownSince() === undefined) return this.#freshHit(entry, ref, env, age);
    const fresh = freshness({
      now,
      fetchedAt: value.fetchedAt,
      superseded: entry.generation !== this.#flights.generation,
      streamDownSince: this.#streamDownSince(),
      ttl: this.#ttl,
      maxStale: this.#options.maxStale,
    });
    if (fresh.kind === 'fresh') return this.#freshHit(entry, ref, env, age);
    if (fresh.kind === 'stale') {
      // The stream is down: serve what we have, marked, and revalidate quietly.
      this.#observer.stale();
      if (now >= entry.revalidateAfter) {
        entry.revalidateAfter = now + STALE_REVALIDATE_INTERVAL_MS;
        this.#background(ref, env);
      }
      return this.#result(value, 'stale', fresh.staleMs, now);
    }
    // Expired (TTL, superseded, or past max-stale): only a foreground fetch may answer.
    return undefined;
  }

  /** A fresh hit: refresh-ahead when old, and a result of its own. */
  #freshHit(entry: ValueEntry, ref: ItemRef, env: string, age: Milliseconds): ReadResult {
    this.#observer.hit();
    if (age > this.#refreshAheadAge && entry.reads > 1) this.#background(ref, env);
    const ageSeconds = age > 0 ? Math.floor(age / 1000) : 0;
    retain(entry.value);
    return { value: entry.value, source: 'hit', staleSeconds: 0, ageSeconds };
  }

  /**
   * What a read would serve now without the read's side effects (hotness,
   * refresh-ahead, revalidation): for diagnostics and the simulation suite.
   */
  peek(ref: ItemRef, env: string): { value: CachedValue; fresh: boolean } | undefined {
    const entry = this.#lru.peek(cacheKey(ref, env));
    if (entry?.state !== 'value') return undefined;
    const fresh = freshness({
      now: this.#options.clock.now(),
      fetchedAt: entry.value.fetchedAt,
      superseded: entry.generation !== this.#flights.generation,
      streamDownSince: this.#options.streamDownSince(),
      ttl: this.#options.ttl,
      maxStale: this.#options.maxStale,
    });
    return fresh.kind === 'expired' ? undefined : { value: entry.value, fresh: fresh.kind === 'fresh' };
  }

  async #fetchForCaller(ref: ItemRef, env: string, key: string, signal: AbortSignal | undefined): Promise<ReadResult> {
    for (let attempt = 0; attempt <= MAX_SUPERSEDED_RETRIES; attempt++) {
      const existing = this.#flights.get(key);
      const flight = existing ?? this.#startFlight(ref, env, key, this.#options.loader);
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
      // Evicted and zero-filled between the fetch settling and this continuation: fetch again.
      if (isZeroed(value)) continue;
      return this.#result(value, existing ? 'coalesced' : 'miss', 0, this.#options.clock.now());
    }
    throw new AppError('unavailable', 'The value changed repeatedly while it was being fetched; retry.');
  }

  /** After a failed fetch: the last good value if the failure is transient and within max-stale. */
  #staleOrThrow(key: string, err: AppError): ReadResult {
    const entry = this.#lru.get(key);
    const now = this.#options.clock.now();
    if (entry?.state === 'value' && isTransient(err)) {
      const staleMs = staleIfError({
        now,
        fetchedAt: entry.value.fetchedAt,
        streamDownSince: this.#options.streamDownSince(),
        ttl: this.#options.ttl,
        maxStale: this.#options.maxStale,
      });
      if (staleMs !== undefined) {
        this.#observer.stale();
        return this.#result(entry.value, 'stale', staleMs, now);
      }
      throw new AppError('stale_expired', `The server is unreachable (${err.code}) and the cached value is older than max-stale.`);
    }
    throw err;
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

  #startFlight(ref: ItemRef, env: string, key: string, loader: Loader): Flight<CachedValue> {
    const controller = new AbortController();
    const started = this.#options.clock.now();
    const flight = this.#flights.start(key, (self) =>
      loader(ref, env, controller.signal).then(
        (loaded) => {
          this.#flights.settle(self);
          const outdated = !this.#flights.usable(self, loaded.revision);
          if (outdated || this.#closed) {
            // An event (or a new generation) landed while we were fetching, newer than this value: never store or serve.
            zeroize(loaded.plaintext);
            if (outdated) this.#observer.superseded();
            this.#forgetIfIdle(key);
            throw new AppError('unavailable', 'superseded');
          }
          const value = toCachedValue(ref, env, loaded, started);
          this.#store(key, value, self.generation);
          return value;
        },
        (err: unknown) => {
          this.#flights.settle(self);
          const appError = err instanceof AppError ? err : new AppError('internal', undefined, { cause: err });
          if (!self.superseded) this.#onFailure(key, appError);
          this.#forgetIfIdle(key);
          throw appError;
        },
      ),
    );
    // Background flights may have no waiter; their rejection is handled here.
    flight.promise.catch(() => {});
    this.#variants.add(key);
    return flight;
  }

  #store(key: string, value: CachedValue, generation: number): void {
    const previous = this.#lru.get(key);
    // Read before the set: the set disposes the previous entry, which then holds RELEASED.
    const previousEtag = previous?.state === 'value' ? previous.value.etag : undefined;
    this.#lru.set(key, {
      state: 'value',
      value,
      generation,
      lastReadAt: previous?.state === 'value' ? previous.lastReadAt : this.#options.clock.now(),
      reads: previous?.state === 'value' ? previous.reads : 0,
      revalidateAfter: 0,
    });
    this.#variants.add(key);
    const stored = this.#lru.peek(key);
    if (stored?.state !== 'value' || stored.value !== value) {
      // Over lru-cache's max entry size: never stored, so never disposed. The
      // flight's waiters still get it (they resume in microtasks, before the
      // immediate); the last lease to end zero-fills it.
      value.leases += 1;
      value.dropped = true;
      setImmediate(() => release(value));
    }
    if (previous && previousEtag !== value.etag) this.#options.onChange?.(value, previousEtag);
  }

  #onFailure(key: string, err: AppError): void {
    this.#observer.upstreamFailure(err.code);
    if (clientActionOf(err.code) !== 'drop') return;
    // Revoked, deleted or corrupt: stop serving the old value now.
    const tracked = this.#variants.has(key);
    this.#lru.delete(key);
    if (err.code === 'not_found') {
      this.#lru.set(key, { state: 'absent', until: this.#options.clock.now() + NEGATIVE_TTL_MS, error: err });
      if (tracked) this.#variants.add(key);
    }
  }

  /** Starts a fetch nobody waits on (refresh-ahead, post-event refetch, stale revalidation). */
  #background(ref: ItemRef, env: string, loader: Loader = this.#options.loader, replace = false): void {
    const key = cacheKey(ref, env);
    if (this.#closed || (!replace && this.#flights.has(key))) return;
    const flight = this.#startFlight(ref, env, key, loader);
    flight.promise.catch((err: unknown) => {
      if (!flight.superseded && err instanceof AppError) this.#options.onBackgroundError?.(ref, env, err);
    });
  }

  /** Loads a value in the background now (prefetch, hot refetch). Resolves when stored or failed. */
  async prefetch(ref: ItemRef, env: string): Promise<void> {
    release((await this.read(ref, env)).value);
  }

  /** Refetches in the background without invalidating what is served meanwhile (a current fill is reused). */
  refresh(ref: ItemRef, env: string): void {
    this.#background(ref, env);
  }

  /**
   * Fills a variant from `loader` (an event's inline layers), superseding any
   * fill in flight; readers wait on it as on a fetch.
   */
  fill(ref: ItemRef, env: string, loader: Loader): void {
    this.#background(ref, env, loader, true);
  }

  /**
   * Puts a value restored from the warm-restart snapshot in the cache, as last
   * confirmed by the server at `confirmedAt`, in the current generation (the
   * stream's resume after the snapshot's position vouches for it or replays
   * what changed). Never replaces a value or a fill already there. A stale
   * read before `quietUntil` does not revalidate it: the stream's resume is
   * about to vouch for it, and a fetch now would be the full refetch the
   * snapshot exists to avoid.
   */
  restore(ref: ItemRef, env: string, loaded: LoadedValue, confirmedAt: Milliseconds, quietUntil: Milliseconds = 0): void {
    const key = cacheKey(ref, env);
    if (this.#closed || this.#lru.has(key) || this.#flights.has(key)) {
      zeroize(loaded.plaintext);
      return;
    }
    this.#store(key, toCachedValue(ref, env, loaded, confirmedAt), this.#flights.generation);
    const entry = this.#lru.peek(key);
    if (entry?.state === 'value') entry.revalidateAfter = quietUntil;
  }

  /**
   * Applies an event for one item: drops every env variant, supersedes any
   * fetch in flight, and returns the variants (hot ones to refetch).
   * `revision` is the event's: a fill in flight that returns a value at least
   * that new is still good. Without it every fill in flight is discarded.
   */
  invalidate(ref: ItemRef, revision = Number.POSITIVE_INFINITY): Variant[] {
    const item = itemKey(ref);
    const keys = this.#variants.keysOf(item);
    if (keys.length === 0) return [];
    const out: Variant[] = [];
    const now = this.#options.clock.now();
    for (const key of keys) {
      const flight = this.#flights.supersede(key, revision);
      const entry = this.#lru.peek(key);
      out.push({ ...variantOf(key), hot: (entry?.state === 'value' && now - entry.lastReadAt < HOT_WINDOW_MS) || (flight !== undefined && flight.waiters > 0) });
      if (entry) this.#lru.delete(key);
    }
    return out;
  }

  /**
   * Begins a new cache-wide generation: every fill in flight is superseded and
   * every cached value must be revalidated before it is served fresh again
   * (kept meanwhile for stale-if-error and to compare ETags).
   */
  supersedeAll(): void {
    for (const key of this.#flights.supersedeAll()) this.#forgetIfIdle(key);
    // A remembered 404 cannot be vouched for either, and is cheap to ask again.
    const absent: string[] = [];
    for (const [key, entry] of this.#lru.entries()) if (entry.state === 'absent') absent.push(key);
    for (const key of absent) this.#lru.delete(key);
  }

  /** The kind of any cached variant of the item (undefined when none is cached). */
  kindOf(ref: ItemRef): ItemKind | undefined {
    for (const key of this.#variants.keysOf(itemKey(ref))) {
      const entry = this.#lru.peek(key);
      if (entry?.state === 'value') return entry.value.kind;
    }
    return undefined;
  }

  /**
   * Drops every value filled from a revision after `revision`, and supersedes
   * every fill in flight: on a resume they are ahead of the stream, and the
   * server's history after the position may be gone (a failover that lost
   * commits). Returns the dropped variants.
   */
  dropNewerThan(revision: number): Variant[] {
    const dropped: Variant[] = [];
    for (const key of this.#flights.supersedeFlights()) this.#forgetIfIdle(key);
    const keys: string[] = [];
    for (const [key, entry] of this.#lru.entries()) if (entry.state === 'value' && entry.value.revision > revision) keys.push(key);
    for (const key of keys) {
      if (this.#variants.has(key)) dropped.push({ ...variantOf(key), hot: true });
      this.#lru.delete(key);
    }
    return dropped;
  }

  /** Every cached or in-flight item under a namespace prefix (exact namespace when `exact`). */
  itemsUnder(prefix: string, exact = false): ItemRef[] {
    const out = new Map<string, ItemRef>();
    for (const key of this.#variants.keys()) {
      const { ref } = variantOf(key);
      const match = exact ? ref.namespace === prefix : prefix === '' || ref.namespace === prefix || ref.namespace.startsWith(`${prefix}/`);
      if (match) out.set(itemKey(ref), ref);
    }
    return [...out.values()];
  }

  /** Every (item, env) the cache holds or is filling, optionally in one namespace. */
  variants(namespace?: string): Variant[] {
    const now = this.#options.clock.now();
    const out: Variant[] = [];
    for (const key of this.#variants.keys()) {
      const tracked = variantOf(key);
      if (namespace !== undefined && tracked.ref.namespace !== namespace) continue;
      const entry = this.#lru.peek(key);
      out.push({ ...tracked, hot: entry?.state === 'value' && now - entry.lastReadAt < HOT_WINDOW_MS });
    }
    return out;
  }

  /** Variants of cached items under a namespace (for rotation refreshes). */
  variantsIn(namespace: string): Variant[] {
    return this.variants(namespace);
  }

  /** Variants read within the hot window (refetched after a resync). */
  hotVariants(): Variant[] {
    return this.variants().filter((v) => v.hot);
  }

  #forgetIfIdle(key: string): void {
    if (!this.#lru.has(key)) this.#forgetVariant(key);
  }

  #forgetVariant(key: string): void {
    if (!this.#flights.has(key)) this.#variants.delete(key);
  }

  /** Drops everything, remembered 404s included, and zero-fills every buffer (resync, new store, shutdown). */
  clear(): void {
    this.#flights.supersedeAll();
    this.#lru.clear();
    this.#variants.clear();
  }

  close(): void {
    this.#closed = true;
    this.clear();
  }
}
