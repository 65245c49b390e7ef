/**
 * Key rings in the agent (issue 20): the current value of an item and its
 * previous versions still within their grace, decrypted from the server's
 * ring envelope and held apart from the value cache (whose per-entry layout
 * is its own). Kept fresh by the same events: the event applier invalidates
 * an item's rings synchronously, and a fill that raced an invalidation is
 * dropped and read again (per-key generation, as the value cache does).
 * Previous versions age out on the injectable clock; when one does, the
 * entry drops it (zero-filled) and `onAgedOut` publishes a change, so SSE
 * clients and rendered files follow. While the watch stream is down a held
 * ring is served stale-marked within max-stale, like a value (freshness.ts):
 * only events keep a ring fresh, so without the stream it cannot be vouched
 * for, but a verifier is better served the ring it had than refused.
 * With `--snapshot-dir` the held rings go into the warm-restart snapshot
 * (`held`) and come back from it (`restore`): stale-marked until the stream
 * resumes, which drops them (a resume vouches for no ring), so one restored
 * is read again from the server before it is ever served as fresh.
 */
import { LRUCache } from 'lru-cache';
import { zeroize } from '../shared/crypto.ts';
import { AppError, clientActionOf } from '../shared/errors.ts';
import { itemKey, type ItemRef } from '../shared/paths.ts';
import type { ItemKind } from '../shared/protocol.ts';
import { ringEtag, type RingEnvelopeResponse } from '../shared/ring-proto.ts';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import type { Milliseconds } from '../shared/units.ts';
import type { DekStore } from './dek-store.ts';
import { freshness, type Freshness } from './cache/freshness.ts';
import { openLayers } from './layer-opener.ts';

/** Rings held at most (each a handful of values); the least recently read go first. */
export const MAX_RINGS = 1024;
/** A fill superseded by events this many times in a row gives up (503) instead of looping. */
const MAX_FILL_ATTEMPTS = 3;

export interface RingMemberValue {
  readonly version: number;
  readonly plaintext: Buffer;
  readonly retiredAt: Milliseconds;
  readonly expiresAt: Milliseconds;
}

/** A ring's values: private copies the caller zero-fills (`releaseRing`). */
interface RingValues extends ItemRef {
  readonly kind: ItemKind;
  readonly env: string;
  readonly revision: number;
  readonly current: { readonly version: number; readonly plaintext: Buffer };
  readonly previous: readonly RingMemberValue[];
}

/** A ring as read. */
export interface RingRead extends RingValues {
  readonly etag: string;
  /** Set when served while the stream is down: how long the ring may be behind the server. */
  readonly staleSeconds?: number;
}

/** A held ring as the warm-restart snapshot keeps it. */
export interface HeldRing extends RingValues {
  /** The current value's etag (the served etag adds the members' versions). */
  readonly currentEtag: string;
}

export function releaseRing(ring: RingValues): void {
  zeroize(ring.current.plaintext, ...ring.previous.map((p) => p.plaintext));
}

interface Entry {
  readonly ring: RingRead;
  /** The current value's etag; the ring's etag adds the members. */
  readonly currentEtag: string;
  readonly fetchedAt: Milliseconds;
  previous: RingMemberValue[];
  timer: TimerHandle | undefined;
  /** From the warm-restart snapshot: never served as fresh, only stale-marked until the server is asked again. */
  readonly restored: boolean;
}

export interface RingStoreOptions {
  readonly upstream: { fetchRingEnvelope(ref: ItemRef, env: string, signal?: AbortSignal): Promise<RingEnvelopeResponse> };
  readonly deks: DekStore;
  readonly clock: Clock;
  /** A previous version aged out of a held ring: announce the change (files re-render, SSE). */
  readonly onAgedOut: (ref: ItemRef, env: string, version: number) => void;
  /** When the watch stream went down; undefined while it is connected. */
  readonly streamDownSince: () => Milliseconds | undefined;
  /** How long a held ring is served stale-marked while the stream is down (the agent's --max-stale). */
  readonly maxStale: Milliseconds;
  readonly maxRings?: number;
}

const keyOf = (ref: ItemRef, env: string): string => `${env}\u0000${itemKey(ref)}`;

export class RingStore {
  readonly #o: RingStoreOptions;
  readonly #entries: LRUCache<string, Entry>;
  /**
   * Per item with a fill in flight: fills running and invalidations seen; a
   * fill that saw an invalidation start after it is not stored. Only items
   * being filled have an entry, so events for other items cost nothing here.
   */
  readonly #flights = new Map<string, { running: number; invalidations: number }>();
  #epoch = 0;

  constructor(options: RingStoreOptions) {
    this.#o = options;
    this.#entries = new LRUCache<string, Entry>({
      max: options.maxRings ?? MAX_RINGS,
      dispose: (entry) => {
        entry.timer?.cancel();
        zeroize(entry.ring.current.plaintext, ...entry.previous.map((p) => p.plaintext));
      },
    });
  }

  /** The ring of `ref` as served for `env`, from memory or the server. */
  async read(ref: ItemRef, env: string, signal?: AbortSignal): Promise<RingRead> {
    const key = keyOf(ref, env);
    for (let attempt = 0; attempt < MAX_FILL_ATTEMPTS; attempt += 1) {
      const held = this.#entries.get(key);
      let staleMs: Milliseconds | undefined;
      if (held) {
        const fresh = this.#freshness(held);
        // The stream vouches for rings read since it connected, not for one restored from before the restart.
        if (fresh.kind === 'fresh' && !held.restored) return this.#copy(held);
        if (fresh.kind === 'stale') return this.#copy(held, fresh.staleMs);
        this.#entries.delete(key);
        // Past max-stale: only the server may answer now.
        if (fresh.kind === 'expired') staleMs = this.#o.maxStale;
      }
      const item = itemKey(ref);
      const flight = this.#flights.get(item) ?? { running: 0, invalidations: 0 };
      this.#flights.set(item, flight);
      flight.running += 1;
      const started = { epoch: this.#epoch, invalidations: flight.invalidations };
      let entry: Entry;
      try {
        entry = await this.#load(ref, env, signal);
      } catch (err) {
        if (staleMs !== undefined && err instanceof AppError && clientActionOf(err.code) === 'retry') {
          throw new AppError('stale_expired', `The server is unreachable (${err.code}) and the held key ring of ${itemKey(ref)} is older than max-stale.`);
        }
        throw err;
      } finally {
        flight.running -= 1;
        if (flight.running === 0 && this.#flights.get(item) === flight) this.#flights.delete(item);
      }
      if (started.epoch !== this.#epoch || started.invalidations !== flight.invalidations) {
        // An event for the item landed while the envelope was on its way: read again.
        zeroize(entry.ring.current.plaintext, ...entry.previous.map((p) => p.plaintext));
        continue;
      }
      this.#entries.set(key, entry);
      this.#schedule(key, entry);
      return this.#copy(entry);
    }
    throw new AppError('unavailable', `The key ring of ${itemKey(ref)} kept changing while it was read; retry.`);
  }

  /** An item event was applied: its rings (every env) are dropped and read again on demand. */
  invalidate(ref: ItemRef): void {
    const item = itemKey(ref);
    const flight = this.#flights.get(item);
    if (flight) flight.invalidations += 1;
    for (const key of [...this.#entries.keys()]) if (key.endsWith(`\u0000${item}`)) this.#entries.delete(key);
  }

  /** A resync or a fresh stream: nothing held can be vouched for. */
  clear(): void {
    this.#epoch += 1;
    this.#entries.clear();
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Private copies of every ring a read would serve now (fresh or within max-stale), for the snapshot. */
  held(): HeldRing[] {
    const out: HeldRing[] = [];
    for (const entry of this.#entries.values()) {
      if (this.#freshness(entry).kind === 'expired') continue;
      const { namespace, name, kind, env, revision, current } = entry.ring;
      out.push({
        namespace,
        name,
        kind,
        env,
        revision,
        currentEtag: entry.currentEtag,
        current: { version: current.version, plaintext: Buffer.from(current.plaintext) },
        previous: entry.previous.map((p) => ({ ...p, plaintext: Buffer.from(p.plaintext) })),
      });
    }
    return out;
  }

  /**
   * Holds a ring restored from the warm-restart snapshot, as last confirmed at
   * `confirmedAt` (the store owns its buffers from then on). Members aged out
   * by now are dropped, never served; a ring already held or being read wins.
   */
  restore(held: HeldRing, confirmedAt: Milliseconds): void {
    const key = keyOf(held, held.env);
    const now = this.#o.clock.now();
    const gone = held.previous.filter((p) => p.expiresAt <= now);
    const previous = held.previous.filter((p) => p.expiresAt > now);
    if (this.#entries.has(key) || this.#flights.has(itemKey(held))) {
      releaseRing(held);
      return;
    }
    zeroize(...gone.map((p) => p.plaintext));
    const ring: RingRead = {
      namespace: held.namespace,
      name: held.name,
      kind: held.kind,
      env: held.env,
      revision: held.revision,
      etag: ringEtag(held.currentEtag, previous.map((p) => p.version)),
      current: held.current,
      previous,
    };
    const entry: Entry = { ring, currentEtag: held.currentEtag, fetchedAt: confirmedAt, previous, timer: undefined, restored: true };
    this.#entries.set(key, entry);
    this.#schedule(key, entry);
  }

  #freshness(entry: Entry): Freshness {
    return freshness({ now: this.#o.clock.now(), fetchedAt: entry.fetchedAt, superseded: false, streamDownSince: this.#o.streamDownSince(), ttl: Infinity, maxStale: this.#o.maxStale });
  }

  async #load(ref: ItemRef, env: string, signal?: AbortSignal): Promise<Entry> {
    const envelope = await this.#o.upstream.fetchRingEnvelope(ref, env, signal);
    if (envelope.namespace !== ref.namespace || envelope.name !== ref.name) throw new AppError('upstream_error', 'The server answered for another item.');
    const current = await openLayers(ref, envelope.kind, envelope.layers, this.#o.deks, signal);
    const previous: RingMemberValue[] = [];
    const now = this.#o.clock.now();
    try {
      for (const member of envelope.previous) {
        const retiredAt = Date.parse(member.retiredAt);
        const expiresAt = Date.parse(member.expiresAt);
        if (!Number.isFinite(retiredAt) || !Number.isFinite(expiresAt)) throw new AppError('upstream_error', 'The server sent a ring member without valid times.');
        // Aged out by this agent's clock already: never served.
        if (expiresAt <= now) continue;
        previous.push({ version: member.version, retiredAt, expiresAt, plaintext: await openLayers(ref, envelope.kind, member.layers, this.#o.deks, signal) });
      }
    } catch (err) {
      zeroize(current, ...previous.map((p) => p.plaintext));
      throw err;
    }
    const ring: RingRead = {
      ...ref,
      kind: envelope.kind,
      env,
      revision: envelope.revision,
      etag: ringEtag(envelope.etag, previous.map((p) => p.version)),
      current: { version: envelope.version, plaintext: current },
      previous,
    };
    return { ring, currentEtag: envelope.etag, fetchedAt: now, previous, timer: undefined, restored: false };
  }

  #copy(entry: Entry, staleMs?: Milliseconds): RingRead {
    const ring = entry.ring;
    return {
      ...ring,
      ...(staleMs === undefined ? {} : { staleSeconds: Math.floor(staleMs / 1000) }),
      etag: ringEtag(entry.currentEtag, entry.previous.map((p) => p.version)),
      current: { version: ring.current.version, plaintext: Buffer.from(ring.current.plaintext) },
      previous: entry.previous.map((p) => ({ ...p, plaintext: Buffer.from(p.plaintext) })),
    };
  }

  /** Arms the timer for the next member to age out. */
  #schedule(key: string, entry: Entry): void {
    entry.timer?.cancel();
    entry.timer = undefined;
    if (entry.previous.length === 0) return;
    const next = Math.min(...entry.previous.map((p) => p.expiresAt));
    entry.timer = this.#o.clock.setTimeout(() => this.#ageOut(key, entry), Math.max(0, next - this.#o.clock.now()));
  }

  #ageOut(key: string, entry: Entry): void {
    entry.timer = undefined;
    if (this.#entries.peek(key) !== entry) return;
    const now = this.#o.clock.now();
    const gone = entry.previous.filter((p) => p.expiresAt <= now);
    if (gone.length > 0) {
      entry.previous = entry.previous.filter((p) => p.expiresAt > now);
      zeroize(...gone.map((p) => p.plaintext));
    }
    this.#schedule(key, entry);
    if (gone.length > 0) this.#o.onAgedOut(entry.ring, entry.ring.env, entry.ring.current.version);
  }
}
