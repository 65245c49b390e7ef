/**
 * A FIFO async mutex. SQLite has one write lock per database and one
 * connection runs one transaction at a time, so the domain layer, which awaits
 * inside a transaction (KEK calls), must queue behind the transaction in flight.
 */
export class Mutex {
  #tail: Promise<void> = Promise.resolve();

  /** Runs `fn` after every earlier holder has finished. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const previous = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((resolve) => {
      release = resolve;
    });
    await previous;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
