/**
 * Applies Watch events to the agent's state, in stream order and
 * synchronously (so nothing interleaves between invalidation and
 * announcement): the cache first, then the applied revision, then the
 * applied-events hub (SSE and file renderer). Refetches after KeyRotated and
 * ResyncRequired are spread over a random delay so a fleet of agents does not
 * hit the server at once; a caller that reads meanwhile fetches at once.
 */
import type { Clock, TimerHandle } from '../shared/clock.ts';
import type { Logger } from '../shared/logger.ts';
import { namespaceMatchesAny, type ItemRef } from '../shared/paths.ts';
import type { Milliseconds } from '../shared/units.ts';
import type { WatchEvent } from '../shared/watch-proto.ts';
import type { AgentMetrics } from './agent-metrics.ts';
import type { AppliedEvent, AppliedEventsHub } from './applied-events.ts';
import type { DekStore } from './dek-store.ts';
import type { ValueCache } from './value-cache.ts';

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
}

export class EventApplier {
  readonly #o: EventApplierOptions;
  readonly #random: () => number;
  readonly #timers = new Set<TimerHandle>();
  #applied = 0;
  #serverRevision = 0;
  #sawHeartbeat = false;

  constructor(options: EventApplierOptions) {
    this.#o = options;
    this.#random = options.random ?? Math.random;
  }

  /** The last revision applied; the stream resumes after it. */
  get appliedRevision(): number {
    return this.#applied;
  }

  /** The server's revision at its last heartbeat. */
  get serverRevision(): number {
    return this.#serverRevision;
  }

  apply(event: WatchEvent): void {
    const started = performance.now();
    switch (event.type) {
      case 'heartbeat':
        this.#serverRevision = Math.max(this.#serverRevision, event.currentRevision);
        if (!this.#sawHeartbeat) {
          this.#sawHeartbeat = true;
          // A fresh start (since 0) begins at the server's current revision; resume from there next time.
          if (this.#applied === 0) this.#applied = event.currentRevision;
          this.#o.hub.setFloor(this.#applied);
        }
        this.#updateGauges();
        return;
      case 'itemChanged':
      case 'itemDeleted': {
        if (!this.#served(event.namespace, event.type)) break;
        const hot = this.#invalidate(event);
        for (const variant of hot) this.#o.cache.refresh(variant.ref, variant.env);
        this.#advance(event.revision);
        // Applied alone (a set of one, or the only member in this agent's prefixes): it ends its set here.
        this.#o.hub.publish({ ...appliedEventOf(event), ...(event.setRevision ? { endsSet: true } : {}) });
        break;
      }
      case 'keyRotated': {
        if (!this.#served(event.namespace, event.type)) break;
        this.#o.deks.invalidate(event.namespace);
        this.#o.metrics.invalidations.inc({ type: event.type });
        // Re-encryption keeps every plaintext, so cached values stay correct;
        // hot ones are refetched under the new key, spread over the jitter window.
        for (const variant of this.#o.cache.variantsIn(event.namespace)) {
          if (variant.hot) this.#later(() => this.#o.cache.refresh(variant.ref, variant.env));
        }
        this.#advance(event.revision);
        this.#o.hub.publish({ type: 'rotated', namespace: event.namespace, version: event.keyVersion, revision: event.revision });
        break;
      }
      case 'resyncRequired': {
        const reload = new Map<string, ItemRef>();
        for (const ref of this.#o.prefetch()) reload.set(`${ref.namespace}/${ref.name}`, ref);
        for (const variant of this.#o.cache.hotVariants()) reload.set(`${variant.namespace}/${variant.name}`, variant);
        this.#o.cache.clear();
        this.#o.deks.clear();
        this.#o.metrics.invalidations.inc({ type: event.type });
        this.#o.logger.warn({ oldestRevision: event.oldestRevision, currentRevision: event.currentRevision, reason: event.reason }, 'resync required: cache dropped');
        this.#applied = Math.max(this.#applied, event.currentRevision);
        this.#serverRevision = Math.max(this.#serverRevision, event.currentRevision);
        for (const ref of reload.values()) this.#later(() => this.#o.cache.refresh(ref, this.#o.env));
        this.#o.hub.publish({ type: 'resync', namespace: '', revision: this.#applied, reason: 'server' });
        break;
      }
    }
    this.#updateGauges();
    this.#o.metrics.eventApplySeconds.observe((performance.now() - started) / 1000);
  }

  /**
   * Applies every member of a change set as one step: all are invalidated
   * before any is refetched or announced, the applied revision moves once to
   * the set's end, and the hub gets the members back to back (SSE writes them
   * together; the file renderer publishes once). Synchronous, so no read on
   * the event loop can fall between two members.
   */
  applyBatch(events: readonly WatchEvent[]): void {
    const started = performance.now();
    const members = events.filter(
      (e): e is Extract<WatchEvent, { type: 'itemChanged' | 'itemDeleted' }> => (e.type === 'itemChanged' || e.type === 'itemDeleted') && this.#served(e.namespace, e.type),
    );
    const hot = members.flatMap((event) => this.#invalidate(event));
    const last = events.at(-1);
    if (last) this.#advance(last.revision);
    for (const variant of hot) this.#o.cache.refresh(variant.ref, variant.env);
    members.forEach((event, i) => this.#o.hub.publish({ ...appliedEventOf(event), ...(i === members.length - 1 ? { endsSet: true } : {}) }));
    this.#o.metrics.changeSetsApplied?.inc();
    this.#updateGauges();
    this.#o.metrics.eventApplySeconds.observe((performance.now() - started) / 1000);
  }

  /** Drops an item's cached variants; returns the hot ones to refetch (only after a change: a delete has nothing to fetch). */
  #invalidate(event: Extract<WatchEvent, { type: 'itemChanged' | 'itemDeleted' }>): Array<{ ref: ItemRef; env: string }> {
    const hot = this.#o.cache.invalidate({ namespace: event.namespace, name: event.name }, event.revision);
    this.#o.metrics.invalidations.inc({ type: event.type });
    // A hot key is refetched at once so the next read is a hit.
    return event.type === 'itemChanged' ? hot : [];
  }

  #served(namespace: string, type: string): boolean {
    if (namespaceMatchesAny(namespace, this.#o.prefixes())) return true;
    // The server filters by prefix; an event outside ours is a server bug or a misconfiguration.
    this.#o.metrics.ignoredEvents.inc({ reason: 'outside-prefix' });
    this.#o.logger.warn({ namespace, type }, 'watch event outside this agent\'s prefixes ignored');
    return false;
  }

  #advance(revision: number): void {
    if (revision > this.#applied) this.#applied = revision;
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
    this.#o.metrics.appliedRevision.set(this.#applied);
    this.#o.metrics.revisionLag.set(Math.max(0, this.#serverRevision - this.#applied));
  }

  close(): void {
    for (const handle of this.#timers) handle.cancel();
    this.#timers.clear();
  }
}
