/**
 * The one module that owns the rules from the watch stream to the cache,
 * the files and SSE (docs/ARCHITECTURE.md, "Freshness protocol"). Events are
 * applied in stream order and synchronously (nothing interleaves between
 * invalidation and announcement): the cache first, then the applied
 * position, then the applied-events hub (SSE and file renderer).
 *
 * - Position: the agent's applied position is (store id, revision, digest).
 *   A stream starts `now` when the agent has none, else `after` it. A
 *   heartbeat advances it (a bookmark) when nothing in the prefixes changed.
 * - A start from `now` supersedes every fill in flight and every cached value
 *   (a cache-wide generation) and revalidates every (item, env) served; a
 *   fill whose ETag changed is announced, so files and SSE learn of it.
 * - ResyncRequired, or another store id: drop everything (values, data keys,
 *   remembered 404s), adopt the position it carries, refetch what is hot.
 * - A change with inline layers is applied locally (no request); without,
 *   hot variants are refetched. A key rotation refetches no value (plaintext
 *   and ETag are unchanged), only the new data key. Background fetches (that
 *   key, refetches after a resync or connect) are spread over a random delay
 *   so a fleet of agents does not hit the server at once; a caller that
 *   needs one meanwhile fetches at once.
 */
import type { Clock, TimerHandle } from '../shared/clock.ts';
import type { Logger } from '../shared/logger.ts';
import { namespaceMatchesAny, type ItemRef } from '../shared/paths.ts';
import type { ItemKind } from '../shared/protocol.ts';
import type { Milliseconds } from '../shared/units.ts';
import type { LogPosition, StartFrom, WatchEvent } from '../shared/watch-proto.ts';
import type { AgentMetrics } from './agent-metrics.ts';
import type { AppliedEvent, AppliedEventsHub } from './applied-events.ts';
import type { CachedValue } from './cache/cached-value.ts';
import type { DekStore } from './dek-store.ts';
import { inlineLoaders } from './inline-layers.ts';
import type { ValueCache, Variant } from './value-cache.ts';

function appliedEventOf(event: Extract<WatchEvent, { type: 'itemChanged' | 'itemDeleted' }>): AppliedEvent {
  return {
    type: event.type === 'itemChanged' ? 'changed' : 'deleted',
    namespace: event.namespace,
    name: event.name,
    env: event.env || undefined,
    version: event.version,
    revision: event.revision,
    ...(event.setRevision ? { setRevision: event.setRevision } : {}),
  };
}

export interface EventApplierOptions {
  readonly cache: ValueCache;
  readonly deks: DekStore;
  readonly hub: AppliedEventsHub;
  readonly prefixes: () => readonly string[];
  /** Items to reload after a resync (the prefetch set), in the agent's env. */
  readonly prefetch: () => readonly ItemRef[];
  readonly env: string;
  readonly clock: Clock;
  readonly jitterMs: Milliseconds;
  readonly random?: () => number;
  readonly metrics: AgentMetrics;
  readonly logger: Logger;
  /** Key rings held apart from the cache (ring-store.ts), invalidated with it. */
  readonly rings?: { invalidate(ref: ItemRef): void; clear(): void } | undefined;
}

type ItemEvent = Extract<WatchEvent, { type: 'itemChanged' | 'itemDeleted' }>;

export class EventApplier {
  readonly #o: EventApplierOptions;
  readonly #random: () => number;
  readonly #timers = new Set<TimerHandle>();
  #position: LogPosition | undefined;
  /** The start of the stream whose first message has not arrived yet. */
  #opening: StartFrom | undefined;
  #environments: readonly string[] = [];
  #serverRevision = 0;

  constructor(options: EventApplierOptions) {
    this.#o = options;
    this.#random = options.random ?? Math.random;
  }

  /** The revision of the applied position (0 before the first heartbeat). */
  get appliedRevision(): number {
    return this.#position?.revision ?? 0;
  }

  /** The applied position; undefined until the stream first told us where we are. */
  get position(): LogPosition | undefined {
    return this.#position;
  }

  /** The server's revision at its last heartbeat. */
  get serverRevision(): number {
    return this.#serverRevision;
  }

  /**
   * Adopts the position of a restored snapshot (before the first stream), so
   * the stream resumes after it instead of starting from `now`.
   */
  restore(position: LogPosition): void {
    if (this.#position) return;
    this.#position = position;
    this.#updateGauges();
  }

  /** Where the next stream starts (called once per attempt, before it opens). */
  startFrom(): StartFrom {
    const start: StartFrom = this.#position ? { kind: 'after', position: this.#position } : { kind: 'now' };
    this.#opening = start;
    return start;
  }

  /**
   * A fill replaced a value with another ETag (TTL refresh, revalidation,
   * refetch after a resync): announce it so files and SSE clients see it.
   */
  valueChanged(value: CachedValue): void {
    this.#o.hub.publish({ type: 'changed', namespace: value.namespace, name: value.name, env: value.env, version: value.version, revision: Math.max(value.revision, this.appliedRevision) });
  }

  apply(event: WatchEvent): void {
    const started = performance.now();
    const opening = this.#opening;
    this.#opening = undefined;
    switch (event.type) {
      case 'heartbeat': {
        this.#serverRevision = Math.max(this.#serverRevision, event.currentRevision);
        if (event.environments?.length) this.#environments = event.environments;
        const at: LogPosition = { storeId: event.storeId ?? '', revision: event.revision || event.currentRevision, digest: event.digest ?? '' };
        if (this.#position && at.storeId !== '' && this.#position.storeId !== '' && at.storeId !== this.#position.storeId) {
          this.#resync(at, 'store', `store id changed from ${this.#position.storeId} to ${at.storeId}`);
        } else if (!this.#position || opening?.kind === 'now') {
          this.#startedNow(at);
        } else if (opening?.kind === 'after') {
          this.#resumed(this.#position);
        } else if (opening === undefined && at.revision > this.#position.revision) {
          // A bookmark: nothing in our prefixes changed up to here. (The first
          // heartbeat of a resume precedes its replay and moves nothing.)
          this.#position = { storeId: at.storeId || this.#position.storeId, revision: at.revision, digest: at.digest };
        }
        break;
      }
      case 'itemChanged':
      case 'itemDeleted':
        if (this.#served(event.namespace, event.type)) {
          const applied = this.#applyItem(event);
          this.#advance(event);
          // Applied alone (a set of one, or the only member in this agent's prefixes): it ends its set here.
          this.#o.hub.publish(event.setRevision ? { ...applied, endsSet: true } : applied);
        } else {
          this.#advance(event);
        }
        break;
      case 'keyRotated': {
        if (this.#served(event.namespace, event.type)) {
          this.#o.metrics.invalidations.inc({ type: event.type });
          // Re-encryption keeps every plaintext and ETag, so cached values stay
          // as they are and nothing is refetched (refetching each hot value cost
          // a request per key and loaded the server while the next change was
          // being applied). Only the new data key is fetched, once, spread over
          // the jitter window; a change that needs it sooner fetches it at once.
          const known = this.#o.deks.has(event.namespace);
          this.#o.deks.rotated(event.namespace, event.keyVersion);
          if (known) this.#later(() => this.#o.deks.prefetch(event.namespace, event.keyVersion));
          this.#advance(event);
          this.#o.hub.publish({ type: 'rotated', namespace: event.namespace, version: event.keyVersion, revision: event.revision });
        } else {
          this.#advance(event);
        }
        break;
      }
      case 'resyncRequired': {
        if (event.environments?.length) this.#environments = event.environments;
        this.#serverRevision = Math.max(this.#serverRevision, event.currentRevision);
        const at: LogPosition = { storeId: event.storeId ?? this.#position?.storeId ?? '', revision: event.revision || event.currentRevision, digest: event.digest ?? '' };
        this.#resync(at, 'server', event.reason);
        break;
      }
    }
    this.#updateGauges();
    this.#o.metrics.eventApplySeconds.observe((performance.now() - started) / 1000);
  }

  /** First message of a stream that started `now`: nothing cached can be vouched for. */
  #startedNow(at: LogPosition): void {
    this.#position = at;
    this.#o.hub.setFloor(at.revision);
    const served = this.#o.cache.variants();
    this.#o.cache.supersedeAll();
    this.#o.rings?.clear();
    if (served.length === 0) return;
    // Values filled before the stream existed could have missed an event:
    // files and SSE clients re-read now (a read waits for a fresh fill), and
    // every (item, env) served is revalidated in the background.
    this.#o.hub.publish({ type: 'resync', namespace: '', revision: at.revision, reason: 'server' });
    for (const variant of served) this.#later(() => this.#o.cache.refresh(variant.ref, variant.env));
  }

  /**
   * First message of a resume after `at`: values filled from later revisions
   * (REST is ahead of the stream, more so while it was down) cannot be
   * vouched for — the server may have lost that history (a failover) — so
   * they are dropped and re-read; the replay brings everything else.
   */
  #resumed(at: LogPosition): void {
    // After a warm restart this is the process's first stream: SSE resumes from before it get a resync.
    this.#o.hub.setFloor(at.revision);
    // Rings are few and read on demand: none is vouched for across a gap.
    this.#o.rings?.clear();
    for (const variant of this.#o.cache.dropNewerThan(at.revision)) {
      this.#o.hub.publish({ type: 'changed', namespace: variant.ref.namespace, name: variant.ref.name, env: variant.env, revision: at.revision });
    }
  }

  #resync(at: LogPosition, cause: 'server' | 'store', reason: string): void {
    const reload = new Map<string, { ref: ItemRef; env: string }>();
    for (const ref of this.#o.prefetch()) reload.set(`${this.#o.env}\u0000${ref.namespace}/${ref.name}`, { ref, env: this.#o.env });
    for (const variant of this.#o.cache.hotVariants()) reload.set(`${variant.env}\u0000${variant.ref.namespace}/${variant.ref.name}`, variant);
    this.#o.cache.clear();
    this.#o.rings?.clear();
    this.#o.deks.clear();
    this.#o.metrics.invalidations.inc({ type: 'resyncRequired' });
    this.#o.logger.warn({ cause, reason, storeId: at.storeId, revision: at.revision, previousRevision: this.#position?.revision ?? 0 }, 'resync required: cache dropped');
    this.#position = at;
    this.#o.hub.setFloor(at.revision);
    for (const { ref, env } of reload.values()) this.#later(() => this.#o.cache.refresh(ref, env));
    this.#o.hub.publish({ type: 'resync', namespace: '', revision: at.revision, reason: 'server' });
  }

  /** Invalidates and refills (inline) or refetches one item; returns what to announce (the caller publishes). */
  #applyItem(event: ItemEvent): AppliedEvent {
    const ref = { namespace: event.namespace, name: event.name };
    const kind: ItemKind | undefined = event.type === 'itemChanged' ? (event.kind as ItemKind) : this.#o.cache.kindOf(ref);
    const variants = this.#o.cache.invalidate(ref, event.revision);
    this.#o.rings?.invalidate(ref);
    this.#o.metrics.invalidations.inc({ type: event.type });
    const loaders = event.layers && kind ? inlineLoaders({ ref, kind, layers: event.layers }, variants.map((v) => v.env), this.#environments, this.#o.deks) : undefined;
    if (loaders) {
      // One local decrypt per event; every variant served is refilled with no request.
      for (const variant of variants) this.#o.cache.fill(variant.ref, variant.env, loaders.get(variant.env) as NonNullable<ReturnType<typeof loaders.get>>);
    } else if (event.type === 'itemChanged') {
      // A hot key is refetched at once so the next read is a hit.
      for (const variant of variants) if (variant.hot) this.#o.cache.refresh(variant.ref, variant.env);
    }
    return appliedEventOf(event);
  }

  /**
   * Applies every member of a change set as one step (change-set-assembler.ts):
   * all are invalidated (and refilled) before any is announced, the applied
   * position moves once to the set's end, and the hub gets the members back
   * to back, the last marked `endsSet` (SSE writes them together; the file
   * renderer publishes once). Synchronous, so no read on the event loop falls
   * between two members.
   */
  applyBatch(events: readonly WatchEvent[]): void {
    const started = performance.now();
    this.#opening = undefined;
    const announced: AppliedEvent[] = [];
    for (const event of events) {
      if ((event.type === 'itemChanged' || event.type === 'itemDeleted') && this.#served(event.namespace, event.type)) announced.push(this.#applyItem(event));
    }
    for (const event of events) this.#advance(event);
    announced.forEach((event, i) => this.#o.hub.publish(i === announced.length - 1 ? { ...event, endsSet: true } : event));
    this.#o.metrics.changeSetsApplied?.inc();
    this.#updateGauges();
    this.#o.metrics.eventApplySeconds.observe((performance.now() - started) / 1000);
  }

  #served(namespace: string, type: string): boolean {
    if (namespaceMatchesAny(namespace, this.#o.prefixes())) return true;
    // The server filters by prefix; an event outside ours is a server bug or a misconfiguration.
    this.#o.metrics.ignoredEvents.inc({ reason: 'outside-prefix' });
    this.#o.logger.warn({ namespace, type }, 'watch event outside this agent\'s prefixes ignored');
    return false;
  }

  #advance(event: WatchEvent): void {
    if (event.revision > this.appliedRevision) {
      this.#position = { storeId: this.#position?.storeId ?? '', revision: event.revision, digest: event.digest ?? '' };
    }
  }

  #later(fn: () => void): void {
    const delay = Math.floor(this.#random() * this.#o.jitterMs);
    if (delay <= 0) {
      fn();
      return;
    }
    const handle = this.#o.clock.setTimeout(() => {
      this.#timers.delete(handle);
      fn();
    }, delay);
    this.#timers.add(handle);
  }

  #updateGauges(): void {
    this.#o.metrics.appliedRevision.set(this.appliedRevision);
    this.#o.metrics.revisionLag.set(Math.max(0, this.#serverRevision - this.appliedRevision));
  }

  close(): void {
    for (const handle of this.#timers) handle.cancel();
    this.#timers.clear();
  }
}

export type { Variant };
