/**
 * Delivers committed events to the Watch streams off the write's path. A
 * commit only queues its events; they are encoded once (sealed layers read
 * once per batch, one buffer per event whatever the number of streams) and
 * offered to the streams a slice at a time, yielding to the event loop
 * between slices, so a write is acknowledged as soon as it is committed and
 * other requests are served while thousands of streams receive it.
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
  /** Gives the event loop a turn between slices (tests may count them). @default setImmediate */
  readonly yieldTurn?: () => Promise<void>;
  /** Waits before a batch's first slice. @default a zero timer */
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
 * A timer runs after this loop iteration's immediates, where the committing
 * request finishes (its audit row is flushed on an immediate, then it
 * answers): the writer is not kept waiting behind a slice.
 */
const afterThisIteration = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 0));

export class FanOut {
  readonly #o: FanOutOptions;
  readonly #slice: number;
  readonly #yield: () => Promise<void>;
  readonly #first: () => Promise<void>;
  #pending: Batch[] = [];
  #running: Promise<void> | undefined;
  #closed = false;

  constructor(options: FanOutOptions) {
    this.#o = options;
    this.#slice = Math.max(1, options.slice ?? FAN_OUT_SLICE);
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
    // The committing request answers first: delivery starts on a later turn.
    await this.#first();
    for (let batch = this.#pending.shift(); batch && !this.#closed; batch = this.#pending.shift()) {
      try {
        await this.#deliver(batch);
        if (!this.#closed) this.#o.onDone?.((performance.now() - batch.publishedAt) / 1000);
      } catch (err) {
        this.#o.logger.error({ err: describeError(err), revision: batch.events[0]?.revision }, 'watch fan-out failed');
      }
    }
    // Cleared in the same turn the queue was found empty (not in a later
    // .finally), so a batch published right after starts a new drain.
    this.#running = undefined;
  }

  async #deliver({ events, audience }: Batch): Promise<void> {
    const streams = [...this.#o.streams()];
    const sends = (stream: WatchStream): boolean => !stream.ended && (!audience || audience(stream));
    const encoded = await this.#o.encode(events, (event) => streams.some((s) => sends(s) && s.matches(event.namespace)));
    for (let from = 0; from < streams.length; from += this.#slice) {
      if (from > 0) await this.#yield();
      if (this.#closed) return;
      const to = Math.min(streams.length, from + this.#slice);
      for (let i = from; i < to; i++) {
        const stream = streams[i] as WatchStream;
        const inAudience = !audience || audience(stream);
        for (const event of encoded) stream.offer(event, inAudience);
      }
    }
  }
}
