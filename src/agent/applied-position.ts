/**
 * The agent's applied revision as something a fetch can wait on. A value the
 * server answers with a revision the agent has not applied yet belongs to a
 * change whose event is still on its way: storing it now would let a reader
 * see it beside members of the same change set (or of an earlier one) that
 * are still cached at their old values. The loader waits here until the
 * stream has applied that revision, whose event then invalidates the fill
 * and the read is retried on the new snapshot; bounded, and skipped while the
 * stream is down (nothing would arrive).
 */
import type { Clock, TimerHandle } from '../shared/clock.ts';
import type { Milliseconds } from '../shared/units.ts';

/** Longest a fetch waits for the stream to apply the revision it saw. */
export const FUTURE_FILL_WAIT_MS: Milliseconds = 1_000;

export type WaitOutcome = 'current' | 'applied' | 'timeout' | 'disconnected';

interface Waiter {
  readonly revision: number;
  readonly done: (outcome: WaitOutcome) => void;
}

export class AppliedPosition {
  readonly #applied: () => number;
  readonly #connected: () => boolean;
  readonly #clock: Clock;
  readonly #waitMs: Milliseconds;
  readonly #waiters = new Set<Waiter>();

  constructor(options: { applied: () => number; connected: () => boolean; clock: Clock; waitMs?: Milliseconds }) {
    this.#applied = options.applied;
    this.#connected = options.connected;
    this.#clock = options.clock;
    this.#waitMs = options.waitMs ?? FUTURE_FILL_WAIT_MS;
  }

  /** Call after every applied event or set. */
  advanced(): void {
    const applied = this.#applied();
    for (const waiter of [...this.#waiters]) if (waiter.revision <= applied) waiter.done('applied');
  }

  /** Call when the stream goes down: nothing will be applied until it returns. */
  disconnected(): void {
    for (const waiter of [...this.#waiters]) waiter.done('disconnected');
  }

  /** Resolves once `revision` is applied, at once when it already is or the stream is down, or after the bound. */
  waitFor(revision: number, signal?: AbortSignal): Promise<WaitOutcome> {
    if (revision <= this.#applied()) return Promise.resolve('current');
    if (!this.#connected()) return Promise.resolve('disconnected');
    return new Promise((resolve) => {
      const onAbort = (): void => waiter.done('timeout');
      const waiter: Waiter = {
        revision,
        done: (outcome) => {
          if (!this.#waiters.delete(waiter)) return;
          timer.cancel();
          signal?.removeEventListener('abort', onAbort);
          resolve(outcome);
        },
      };
      this.#waiters.add(waiter);
      const timer: TimerHandle = this.#clock.setTimeout(() => waiter.done('timeout'), this.#waitMs);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  close(): void {
    this.disconnected();
  }
}
