/**
 * How a long-running command (server; agent, webhook and dev can use it too)
 * ends on SIGTERM/SIGINT: the first signal runs the orderly close; a hard
 * deadline exits even when something in close never settles; a second signal
 * exits at once. The exit itself cannot hang on the
 * log pipe (see `exitAfterLogs`).
 */
import type { EventEmitter } from 'node:events';
import { pino, type Logger } from 'pino';
import { systemClock, type Clock } from './clock.ts';
import type { Milliseconds } from './units.ts';

/** Time past the grace period (after which close cuts connections) for closing the store and flushing logs. */
export const HARD_EXIT_MARGIN_MS = 5_000;
/** How long the last log lines get to reach stdout before the process exits without them. */
export const LOG_DRAIN_TIMEOUT_MS = 1_000;
/** Exit status of a shutdown that failed, overran the deadline or was cut short by a second signal. */
export const FORCED_EXIT_CODE = 1;

export const SHUTDOWN_SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];

export interface ShutdownOptions {
  /** The orderly close (stop accepting, end streams, finish requests, close the store). */
  readonly close: () => Promise<void>;
  readonly logger: Logger;
  /** The grace period close() gives in-flight work; the hard deadline is this plus HARD_EXIT_MARGIN_MS. */
  readonly graceMs: Milliseconds;
  readonly clock?: Clock;
  /** Ends the process; tests pass a recorder. @default exitAfterLogs */
  readonly exit?: (code: number) => void;
  /** Where signals arrive. @default process */
  readonly signals?: Pick<EventEmitter, 'on' | 'off'>;
}

/**
 * Installs the signal handlers. Listeners stay installed after the first
 * signal (a `once` handler would restore the default action only after the
 * orderly path had already been chosen, and hide a hang behind it).
 */
export function exitOnSignals(options: ShutdownOptions): () => void {
  const { logger, graceMs } = options;
  const clock = options.clock ?? systemClock;
  const exit = options.exit ?? ((code: number) => void exitAfterLogs(logger, code));
  const signals = options.signals ?? process;
  let exited = false;
  let stopping = false;
  const exitOnce = (code: number): void => {
    if (exited) return;
    exited = true;
    deadline?.cancel();
    exit(code);
  };
  let deadline: ReturnType<Clock['setTimeout']> | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn({ signal }, 'second signal during shutdown; exiting now');
      exitOnce(FORCED_EXIT_CODE);
      return;
    }
    stopping = true;
    logger.info({ signal, graceMs }, 'signal received');
    const hardDeadlineMs = graceMs + HARD_EXIT_MARGIN_MS;
    deadline = clock.setTimeout(() => {
      logger.error({ signal, deadlineMs: hardDeadlineMs }, 'shutdown did not finish by the hard deadline; exiting');
      exitOnce(FORCED_EXIT_CODE);
    }, hardDeadlineMs);
    options.close().then(
      () => exitOnce(0),
      (err: unknown) => {
        logger.error({ err: err instanceof Error ? err.message : String(err) }, 'shutdown failed');
        exitOnce(FORCED_EXIT_CODE);
      },
    );
  };
  for (const signal of SHUTDOWN_SIGNALS) signals.on(signal, onSignal);
  if (options.signals === undefined) nonBlockingStdout();
  return () => {
    for (const signal of SHUTDOWN_SIGNALS) signals.off(signal, onSignal);
  };
}

/**
 * A child's stdout pipe is blocking by default. pino writes it from a libuv
 * worker thread, and when the pipe is full (a reader that stopped reading)
 * that write blocks forever; process.exit then waits for the thread, so no
 * exit is possible at all, not even past the hard deadline. Opening
 * process.stdout makes libuv switch a pipe or socket to non-blocking mode: a
 * full pipe then answers EAGAIN, sonic-boom retries on a timer, and the exit
 * below can give up on the logs. Files and TTYs are left as they are.
 */
function nonBlockingStdout(): void {
  void process.stdout;
}

interface LogStream {
  once(event: 'drain' | 'error', listener: () => void): unknown;
  off(event: 'drain' | 'error', listener: () => void): unknown;
}

/**
 * Exits after the last log lines reached stdout, or after LOG_DRAIN_TIMEOUT_MS
 * without them. pino's asynchronous destination is flushed synchronously in a
 * process 'exit' hook, and sonic-boom retries that write forever while the
 * pipe is full (a reader that stopped reading) or broken (EPIPE: the reader is
 * gone, e.g. a killed parent). A process in that state consumed SIGTERM and
 * never exited, so when the logs did not drain in time the hook is skipped.
 */
export async function exitAfterLogs(logger: Logger, code: number, timeoutMs: Milliseconds = LOG_DRAIN_TIMEOUT_MS): Promise<void> {
  const stream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as LogStream | undefined;
  const drained =
    stream === undefined
      ? false
      : await new Promise<boolean>((resolve) => {
          const done = (ok: boolean): void => {
            clearTimeout(timer);
            stream.off('drain', onDrain);
            stream.off('error', onError);
            resolve(ok);
          };
          const onDrain = (): void => done(true);
          const onError = (): void => done(false);
          const timer = setTimeout(() => done(false), timeoutMs);
          stream.once('drain', onDrain);
          stream.once('error', onError);
          // This line is the write whose completion ('drain') shows the pipe is taking output.
          logger.info({ code }, 'exiting');
        });
  if (!drained) process.removeAllListeners('exit');
  process.exit(code);
}
