/**
 * Subscribers to committed events (the Watch fan-out). Called by the store's
 * after-commit hook, one commit at a time in revision order; a listener that
 * throws is logged and never breaks the write or the other listeners.
 */
import { describeError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { LogEvent } from './control-plane.ts';

export type CommitListener = (events: readonly LogEvent[]) => void;

export class CommitListeners {
  readonly #listeners = new Set<CommitListener>();
  readonly #logger: Logger;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** Returns an unsubscribe function; calling it twice is harmless. */
  add(listener: CommitListener): () => void {
    // Wrapped so the same function subscribed twice gets two independent slots.
    const slot: CommitListener = (events) => listener(events);
    this.#listeners.add(slot);
    return () => {
      this.#listeners.delete(slot);
    };
  }

  emit(events: readonly LogEvent[]): void {
    if (events.length === 0) return;
    for (const listener of [...this.#listeners]) {
      try {
        listener(events);
      } catch (err) {
        this.#logger.error({ err: describeError(err), revision: events[0]?.revision }, 'a commit listener failed');
      }
    }
  }

  clear(): void {
    this.#listeners.clear();
  }
}
