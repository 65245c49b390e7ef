/**
 * Time is injectable: TTLs, max-stale, heartbeats, backoff and key age read a
 * `Clock`, so tests drive them with `ManualClock.advance()` instead of sleeping.
 */
import type { Milliseconds } from './units.ts';

export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): Milliseconds;
  /** Runs `fn` once after `ms`; the timer never keeps the process alive. */
  setTimeout(fn: () => void, ms: Milliseconds): TimerHandle;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return { cancel: () => clearTimeout(timer) };
  },
};

interface PendingTimer {
  readonly at: Milliseconds;
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/** A clock that moves only when told to; due timers fire in order during `advance`. */
export class ManualClock implements Clock {
  #now: Milliseconds;
  #seq = 0;
  #timers: PendingTimer[] = [];

  constructor(start: Milliseconds = Date.UTC(2026, 0, 1)) {
    this.#now = start;
  }

  now(): Milliseconds {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: Milliseconds): TimerHandle {
    const timer: PendingTimer = { at: this.#now + Math.max(0, ms), seq: this.#seq++, fn, cancelled: false };
    this.#timers.push(timer);
    return {
      cancel: () => {
        timer.cancelled = true;
      },
    };
  }

  /** Moves time forward, firing every timer that falls due, in due order. */
  advance(ms: Milliseconds): void {
    const target = this.#now + ms;
    for (;;) {
      this.#timers = this.#timers.filter((t) => !t.cancelled);
      this.#timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.#timers[0];
      if (!next || next.at > target) break;
      this.#timers.shift();
      this.#now = Math.max(this.#now, next.at);
      next.fn();
    }
    this.#now = target;
  }

  /** Number of timers waiting (for tests). */
  get pending(): number {
    return this.#timers.filter((t) => !t.cancelled).length;
  }
}

/**
 * A system clock shifted by an offset the test hooks can move, for tests that
 * drive real processes (see `CONFIG_SIDECAR_TEST_HOOKS`). Timers scheduled
 * before a jump fire early by the jumped amount.
 */
export class OffsetClock implements Clock {
  #offset = 0;
  #timers = new Set<{ at: Milliseconds; fn: () => void; timer: NodeJS.Timeout }>();

  now(): Milliseconds {
    return Date.now() + this.#offset;
  }

  setTimeout(fn: () => void, ms: Milliseconds): TimerHandle {
    const entry = {
      at: this.now() + ms,
      fn,
      timer: setTimeout(() => {
        this.#timers.delete(entry);
        fn();
      }, ms),
    };
    entry.timer.unref();
    this.#timers.add(entry);
    return {
      cancel: () => {
        clearTimeout(entry.timer);
        this.#timers.delete(entry);
      },
    };
  }

  advance(ms: Milliseconds): void {
    this.#offset += ms;
    for (const entry of [...this.#timers]) {
      clearTimeout(entry.timer);
      const remaining = Math.max(0, entry.at - this.now());
      entry.timer = setTimeout(() => {
        this.#timers.delete(entry);
        entry.fn();
      }, remaining);
      entry.timer.unref();
    }
  }
}
