/**
 * One timer for every Watch stream's heartbeat instead of one per stream.
 * Streams are spread over HEARTBEAT_SLOTS slots by id and the timer ticks
 * once per slot, so each stream still beats once per interval while the
 * writes (and their encoding) are spread over the interval rather than
 * bunched: with 10,000 streams a tick writes 500 heartbeats, not 10,000.
 * Streams whose bookmarks are equal share one encoded heartbeat per tick.
 */
import type { Clock, TimerHandle } from '../../shared/clock.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { WatchStream } from './watch-stream.ts';

/** Ticks per heartbeat interval; a stream beats on the tick of its slot (id modulo this). */
export const HEARTBEAT_SLOTS = 20;

export interface HeartbeatTickerOptions {
  readonly clock: Clock;
  readonly interval: Milliseconds;
  /** The streams open now. */
  readonly streams: () => Iterable<WatchStream>;
  /** Ticks per interval. @default HEARTBEAT_SLOTS */
  readonly slots?: number;
}

export class HeartbeatTicker {
  readonly #o: HeartbeatTickerOptions;
  readonly #slots: number;
  #tick = 0;
  #timer: TimerHandle | undefined;
  #stopped = false;

  constructor(options: HeartbeatTickerOptions) {
    this.#o = options;
    this.#slots = Math.max(1, Math.trunc(options.slots ?? HEARTBEAT_SLOTS));
    this.#schedule();
  }

  /** Stops the timer; calling it twice is harmless. */
  stop(): void {
    this.#stopped = true;
    this.#timer?.cancel();
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = this.#o.clock.setTimeout(() => {
      const slot = this.#tick;
      this.#tick = (this.#tick + 1) % this.#slots;
      const shared = new Map<string, Buffer>();
      for (const stream of this.#o.streams()) if (stream.id % this.#slots === slot) stream.beat(shared);
      this.#schedule();
    }, this.#o.interval / this.#slots);
  }
}
