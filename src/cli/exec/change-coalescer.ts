/**
 * Turns a burst of changes into at most two actions: the first change acts at
 * once (the app gets a new value without waiting out the window), and every
 * change that lands while that action runs or within `windowMs` of its start
 * is folded into one trailing action. So ten changes inside one window cause
 * at most two actions, and the last one always sees the last value. Actions
 * never overlap: a restart that outlasts the window is followed, not raced.
 * An action that found nothing to do (the values read are the ones the app
 * has) opens no window, so a replayed or duplicate event never delays a
 * real change.
 */
import type { Clock, TimerHandle } from '../../shared/clock.ts';
import type { Milliseconds } from '../../shared/units.ts';

export class ChangeCoalescer {
  readonly #windowMs: Milliseconds;
  readonly #clock: Clock;
  readonly #act: () => Promise<boolean>;
  #pending = false;
  #running = false;
  #window: TimerHandle | undefined;
  #closed = false;

  /** `act` resolves true when it did something (restarted, signalled), false for a no-op. */
  constructor(windowMs: Milliseconds, clock: Clock, act: () => Promise<boolean>) {
    this.#windowMs = windowMs;
    this.#clock = clock;
    this.#act = act;
  }

  /** A change happened. */
  notify(): void {
    this.#pending = true;
    this.#pump();
  }

  /** No further actions; a running one finishes. */
  close(): void {
    this.#closed = true;
    this.#window?.cancel();
    this.#window = undefined;
  }

  /** True while an action runs (for tests and shutdown). */
  get busy(): boolean {
    return this.#running;
  }

  #pump(): void {
    if (this.#closed || this.#running || this.#window || !this.#pending) return;
    this.#pending = false;
    this.#running = true;
    if (this.#windowMs > 0) {
      this.#window = this.#clock.setTimeout(() => {
        this.#window = undefined;
        this.#pump();
      }, this.#windowMs);
    }
    void this.#act()
      .catch(() => true) // the action reports its own failures
      .then((acted) => {
        if (!acted) {
          this.#window?.cancel();
          this.#window = undefined;
        }
        this.#running = false;
        this.#pump();
      });
  }
}
