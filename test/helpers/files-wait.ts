/**
 * Bounded waits for the files unit tests. The watchers under test are
 * chokidar with `persistent: false` (the agent's servers keep it alive), so
 * in a test process nothing else may hold the event loop open while a test
 * waits for a watcher event: Node would end the file with "Promise
 * resolution is still pending but the event loop has already resolved".
 * The timer here is deliberately ref'd: it keeps the loop alive for the
 * wait, and turns a missed event into a named failure instead of a hang.
 */
/** What nextEvent needs of an emitter (typed emitters such as `EventEmitter<FileActivity>` included). */
export interface Emitter {
  once(event: string, listener: (...args: any[]) => void): unknown; // eslint-disable-line @typescript-eslint/no-explicit-any
  off(event: string, listener: (...args: any[]) => void): unknown; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** Generous: a deadline for a lost event under a loaded machine, not a speed check. */
export const EVENT_WAIT_MS = 30_000;

/** Resolves with the arguments of the next `event` on `emitter`; rejects after `timeoutMs`. */
export function nextEvent<T extends unknown[] = unknown[]>(emitter: Emitter, event: string, timeoutMs = EVENT_WAIT_MS): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const listener = (...args: unknown[]): void => {
      clearTimeout(timer);
      resolve(args as T);
    };
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`no '${event}' event within ${timeoutMs}ms`));
    }, timeoutMs);
    emitter.once(event, listener);
  });
}

/** Races `promise` against a ref'd deadline naming `what`. */
export async function within<T>(promise: Promise<T>, what: string, timeoutMs = EVENT_WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} not seen within ${timeoutMs}ms`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
