/**
 * Delivers committed events to the Watch streams off the write's path. A
 * commit only queues its events; they are encoded once (sealed layers read
 * once per batch, one buffer per event whatever the number of streams) and
 * offered to the streams a slice at a time, yielding to the event loop
 * between slices, so a write is acknowledged as soon as it is committed and
 * other requests are served while thousands of streams receive it. The
 * first few streams (FAN_OUT_FIRST_SLICE, a bounded cost) are offered a
 * batch in the commit's own turn, before the committing request flushes its
 * audit row and answers; the rest after it has answered.
 *
 * Order is kept: batches are delivered one after another in commit order,
 * each to every stream before the next starts. The streams are the ones open
 * when the batch's delivery begins; a stream opened later reads the log after
 * it subscribed, which already holds the batch (watch-stream.ts dedupes).
 *
 * A batch may have an audience (a targeted event, e.g. a candidate value for
 * a canary): every stream is still offered it, so bookmarks move past its
 * revision everywhere, but only the audience's streams send it.
 */
import { describeError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { LogEvent } from '../control-plane.ts';
import type { EncodedEvent } from './event-codec.ts';
import type { WatchStream } from './watch-stream.ts';

/**
 * Streams offered a batch per turn of the event loop: at ~20 µs per HTTP/2
 * write, 256 streams hold the loop ~5 ms, so a write arriving meanwhile waits
 * at most that long.
 */
export const FAN_OUT_SLICE = 256;

/**
 * Streams offered a batch in the commit's own turn, before the committing
 * request answers. Waiting for the answer first cost every change the
 * request's audit flush and response (~1 ms at p50, more when the loop is
 * busy after it) on its way to the agents (freshness, issue 11); bounded so
 * that the ack does not grow with the number of watchers (16 × ~20 µs per
 * HTTP/2 write, issue 21).
 */
export const FAN_OUT_FIRST_SLICE = 16;

/** Which streams send a batch (all when absent); the others only move their bookmark past it. */
export type Audience = (stream: WatchStream) => boolean;

export interface FanOutOptions {
  /** Encodes a batch in order; `wanted` says whether some stream will send an event (it then carries its sealed layers). */
  readonly encode: (events: readonly LogEvent[], wanted: (event: LogEvent) => boolean) => Promise<EncodedEvent[]>;
  /** The streams open now. */
  readonly streams: () => Iterable<WatchStream>;
  readonly logger: Logger;
  /** Streams per slice. @default FAN_OUT_SLICE */
  readonly slice?: number;
  /** Streams offered a drain's first batch at once, before `firstTurn` (0: none). @default FAN_OUT_FIRST_SLICE */
  readonly firstSlice?: number;
  /** Gives the event loop a turn between slices (tests may count them). @default setImmediate */
  readonly yieldTurn?: () => Promise<void>;
  /** Waits before the rest of a drain's first batch (past `firstSlice`). @default the next loop iteration */
  readonly firstTurn?: () => Promise<void>;
  /** Called when a batch has been offered to every stream, with the seconds since it was published. */
  readonly onDone?: (seconds: number) => void;
}

interface Batch {
  readonly events: readonly LogEvent[];
  readonly audience: Audience | undefined;
  readonly publishedAt: number;
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
/**
 * An immediate queued from an immediate runs in the next loop iteration,
 * after this iteration's immediates, where the committing request finishes
 * (its audit row is flushed on an immediate, then it answers): the writer is
 * not kept waiting behind a slice. Not a zero timer: that waits at least
 * 1 ms, which every change paid on its way to every agent (freshness SSE
 * p50 0.17 → 2.06 ms, files p99 10 → 17-30 ms in the bench, issue 11).
 */
const afterThisIteration = (): Promise<void> => new Promise((resolve) => setImmediate(() => setImmediate(resolve)));

export class FanOut {
  readonly #o: FanOutOptions;
  readonly #slice: number;
  readonly #firstSlice: number;
  readonly #yield: () => Promise<void>;
  readonly #first: () => Promise<void>;
  #pending: Batch[] = [];
  #running: Promise<void> | undefined;
  #closed = false;

  constructor(options: FanOutOptions) {
    this.#o = options;
    this.#slice = Math.max(1, options.slice ?? FAN_OUT_SLICE);
    this.#firstSlice = Math.max(0, options.firstSlice ?? FAN_OUT_FIRST_SLICE);
    this.#yield = options.yieldTurn ?? nextTurn;
    this.#first = options.firstTurn ?? options.yieldTurn ?? afterThisIteration;
  }

  /** Queues committed events for every stream (or only `audience`'s); returns at once. */
  publish(events: readonly LogEvent[], audience?: Audience): void {
    if (this.#closed || events.length === 0) return;
    this.#pending.push({ events, audience, publishedAt: performance.now() });
    this.#running ??= this.#drain();
  }

  /** Resolves once everything published so far has been offered to every stream. */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  /** Drops what is queued; later publishes are ignored. */
  close(): void {
    this.#closed = true;
    this.#pending = [];
  }

  async #drain(): Promise<void> {
    let first = true;
    for (let batch = this.#pending.shift(); batch && !this.#closed; batch = this.#pending.shift()) {
      try {
        await this.#deliver(batch, first);
        first = false;
        if (!this.#closed) this.#o.onDone?.((performance.now() - batch.publishedAt) / 1000);
      } catch (err) {
        this.#o.logger.error({ err: describeError(err), revision: batch.events[0]?.revision }, 'watch fan-out failed');
      }
    }
    // Cleared in the same turn the queue was found empty (not in a later
    // .finally), so a batch published right after starts a new drain.
    this.#running = undefined;
  }

  /** `first`: a drain's first batch, published in this turn by a request that has not answered yet. */
  async #deliver({ events, audience }: Batch, first: boolean): Promise<void> {
    const head = first ? this.#firstSlice : 0;
    // The committing request answers before any stream past the first few is offered the batch.
    if (first && head === 0) await this.#first();
    const streams = [...this.#o.streams()];
    const sends = (stream: WatchStream): boolean => !stream.ended && (!audience || audience(stream));
    const encoded = await this.#o.encode(events, (event) => streams.some((s) => sends(s) && s.matches(event.namespace)));
    const offer = (from: number, to: number): void => {
      for (let i = from; i < to; i++) {
        const stream = streams[i] as WatchStream;
        const inAudience = !audience || audience(stream);
        for (const event of encoded) stream.offer(event, inAudience);
      }
    };
    if (this.#closed) return;
    let from = Math.min(head, streams.length);
    offer(0, from);
    if (head > 0 && from < streams.length) await this.#first();
    for (let n = 0; from < streams.length; n++, from += this.#slice) {
      if (n > 0) await this.#yield();
      if (this.#closed) return;
      offer(from, Math.min(streams.length, from + this.#slice));
    }
  }
}
