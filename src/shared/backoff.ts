/**
 * Exponential backoff with full jitter (the AWS architecture blog's "full
 * jitter"): each delay is uniform in [0, min(cap, base·2^attempt)], so a fleet
 * of agents reconnecting after an outage spreads out instead of stampeding.
 */
import type { Milliseconds } from './units.ts';

export const INITIAL_BACKOFF_MS: Milliseconds = 100;
export const MAX_BACKOFF_MS: Milliseconds = 30_000;

export interface BackoffOptions {
  readonly baseMs?: Milliseconds;
  readonly capMs?: Milliseconds;
  /** Source of randomness in [0, 1); tests pass a fixed one. */
  readonly random?: () => number;
}

export class Backoff {
  readonly #base: Milliseconds;
  readonly #cap: Milliseconds;
  readonly #random: () => number;
  #attempt = 0;

  constructor(options: BackoffOptions = {}) {
    this.#base = options.baseMs ?? INITIAL_BACKOFF_MS;
    this.#cap = options.capMs ?? MAX_BACKOFF_MS;
    this.#random = options.random ?? Math.random;
  }

  /** The next delay; never 0 so a failure loop can never spin. */
  next(): Milliseconds {
    const ceiling = Math.min(this.#cap, this.#base * 2 ** Math.min(this.#attempt, 30));
    this.#attempt += 1;
    return Math.max(1, Math.floor(this.#random() * ceiling));
  }

  reset(): void {
    this.#attempt = 0;
  }

  get attempt(): number {
    return this.#attempt;
  }
}
