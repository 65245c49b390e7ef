/**
 * The applied-events hub: where the cache announces every change it has
 * applied, and where the SSE endpoint and the file renderer listen.
 *
 * - Delivery is bounded per subscriber (STYLE.md §5): a subscriber that falls
 *   more than `maxQueue` events behind has its queue replaced by one explicit
 *   `resync` event, so a slow reader never holds up the cache and never sees a
 *   silent gap.
 * - A bounded ring of recent events lets a subscriber resume after a revision
 *   (SSE `Last-Event-ID`); when the revision is older than the ring can prove
 *   complete, the subscriber gets a `resync` first.
 * - Cancellation by `AbortSignal` or `close()`; closing twice is harmless.
 */
import type { SseEventType } from '../shared/protocol.ts';

export type AppliedEventType = SseEventType;

export interface AppliedEvent {
  readonly type: AppliedEventType;
  /** For `resync`: the prefix being resynced ('' = everything this agent serves). */
  readonly namespace: string;
  readonly name?: string | undefined;
  /** The environment layer that changed (changed/deleted), when the event names one. */
  readonly env?: string | undefined;
  /** Item version (changed/deleted) or key version (rotated). */
  readonly version?: number | undefined;
  readonly revision: number;
  /** For a member of a change set: the set's last revision (the SSE `id` of every member). */
  readonly setRevision?: number | undefined;
  /** True on the last member of a set this agent applied (the set's last revision may be outside its prefixes). */
  readonly endsSet?: boolean | undefined;
  /** Why a resync happened: `server` (ResyncRequired), `overflow` (slow subscriber) or `gap` (resume too old). */
  readonly reason?: 'server' | 'overflow' | 'gap' | undefined;
}

export const DEFAULT_RING_SIZE = 4096;
export const DEFAULT_MAX_QUEUE = 1024;

export interface SubscribeOptions {
  readonly signal?: AbortSignal | undefined;
  /** Only events passing the filter are delivered; `resync` events always are. */
  readonly filter?: ((event: AppliedEvent) => boolean) | undefined;
  /** Replay every retained event after this revision first (exclusive). */
  readonly sinceRevision?: number | undefined;
}

export interface AppliedEventsSubscription extends AsyncIterable<AppliedEvent> {
  /** Resolves with the next event, or undefined once closed. */
  next(): Promise<AppliedEvent | undefined>;
  /** The queued head when it passes `predicate` (taken), else undefined; never waits. */
  takeQueued(predicate: (event: AppliedEvent) => boolean): AppliedEvent | undefined;
  /** Events waiting (for tests and metrics). */
  readonly pending: number;
  readonly closed: boolean;
  close(): void;
}

class Subscriber implements AppliedEventsSubscription {
  readonly #hub: AppliedEventsHub;
  readonly #filter: ((event: AppliedEvent) => boolean) | undefined;
  readonly #maxQueue: number;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = (): void => this.close();
  #queue: AppliedEvent[] = [];
  #waiter: ((event: AppliedEvent | undefined) => void) | undefined;
  #closed = false;

  constructor(hub: AppliedEventsHub, options: SubscribeOptions, maxQueue: number) {
    this.#hub = hub;
    this.#filter = options.filter;
    this.#maxQueue = maxQueue;
    this.#signal = options.signal;
    this.#signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  offer(event: AppliedEvent): void {
    if (this.#closed) return;
    if (event.type !== 'resync' && this.#filter && !this.#filter(event)) return;
    if (this.#waiter) {
      const waiter = this.#waiter;
      this.#waiter = undefined;
      waiter(event);
      return;
    }
    if (this.#queue.length >= this.#maxQueue) {
      // Too far behind: replace the backlog with one explicit resync.
      this.#queue = [{ type: 'resync', namespace: '', revision: event.revision, reason: 'overflow' }];
      return;
    }
    this.#queue.push(event);
  }

  next(): Promise<AppliedEvent | undefined> {
    const head = this.#queue.shift();
    if (head) return Promise.resolve(head);
    if (this.#closed) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      this.#waiter = resolve;
    });
  }

  takeQueued(predicate: (event: AppliedEvent) => boolean): AppliedEvent | undefined {
    const head = this.#queue[0];
    if (head === undefined || !predicate(head)) return undefined;
    return this.#queue.shift();
  }

  get pending(): number {
    return this.#queue.length;
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#hub.remove(this);
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.(undefined);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<AppliedEvent> {
    try {
      for (;;) {
        const event = await this.next();
        if (event === undefined) return;
        yield event;
      }
    } finally {
      this.close();
    }
  }
}

export interface AppliedEventsHubOptions {
  /** Events kept for resume. @default 4096 */
  readonly ringSize?: number;
  /** Events queued per subscriber before it is resynced. @default 1024 */
  readonly maxQueue?: number;
}

export class AppliedEventsHub {
  readonly #ring: AppliedEvent[] = [];
  readonly #ringSize: number;
  readonly #maxQueue: number;
  readonly #subscribers = new Set<Subscriber>();
  /**
   * Every event after this revision is in the ring (or was never applied);
   * undefined until the watch stream has told us where we started.
   */
  #floor: number | undefined;
  #latest = 0;
  #published = 0;

  constructor(options: AppliedEventsHubOptions = {}) {
    this.#ringSize = options.ringSize ?? DEFAULT_RING_SIZE;
    this.#maxQueue = options.maxQueue ?? DEFAULT_MAX_QUEUE;
  }

  /** Marks the revision from which this hub's history is complete (the stream's starting point). */
  setFloor(revision: number): void {
    if (this.#floor === undefined) this.#floor = revision;
    this.#latest = Math.max(this.#latest, revision);
  }

  get latestRevision(): number {
    return this.#latest;
  }

  /** Events published since start (the heap trimmer reads it to tell idle). */
  get publishedCount(): number {
    return this.#published;
  }

  get subscriberCount(): number {
    return this.#subscribers.size;
  }

  publish(event: AppliedEvent): void {
    this.#published++;
    this.#latest = Math.max(this.#latest, event.revision);
    this.#ring.push(event);
    if (this.#ring.length > this.#ringSize) {
      const dropped = this.#ring.shift() as AppliedEvent;
      this.#floor = Math.max(this.#floor ?? 0, dropped.revision);
    }
    for (const subscriber of this.#subscribers) subscriber.offer(event);
  }

  /**
   * Subscribes; with `sinceRevision` the retained events after it are queued
   * first (or one `resync` when they cannot be proven complete). Replay and
   * registration happen in the same tick, so nothing falls between them.
   */
  subscribe(options: SubscribeOptions = {}): AppliedEventsSubscription {
    const subscriber = new Subscriber(this, options, this.#maxQueue);
    if (options.signal?.aborted) {
      subscriber.close();
      return subscriber;
    }
    const since = options.sinceRevision;
    if (since !== undefined) {
      if (this.#floor === undefined || since < this.#floor) {
        subscriber.offer({ type: 'resync', namespace: '', revision: this.#latest, reason: 'gap' });
      } else {
        for (const event of this.#ring) if ((event.setRevision ?? event.revision) > since) subscriber.offer(event);
      }
    }
    this.#subscribers.add(subscriber);
    return subscriber;
  }

  /** Called by a subscriber as it closes. */
  remove(subscriber: AppliedEventsSubscription): void {
    this.#subscribers.delete(subscriber as Subscriber);
  }

  /** Closes every subscriber (agent shutdown). */
  closeAll(): void {
    for (const subscriber of [...this.#subscribers]) subscriber.close();
  }
}
