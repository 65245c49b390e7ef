/** Starts the torn-read checker (files-reader.ts) in a worker; `stop()` resolves with its findings. */
import { Worker } from 'node:worker_threads';

export interface ReaderReport {
  readonly reads: number;
  readonly mixes: string[][];
  readonly distinct: number;
}

export interface SnapshotReader {
  /** Asks the worker to finish, resolves with its report, and ends the worker. Safe to call twice. */
  stop(): Promise<ReaderReport>;
}

/**
 * Starts the reader. Pass the test's context: the worker is a busy loop that
 * would keep the test process alive for ever, so it is stopped in `t.after`
 * even when the test fails before its own `stop()`.
 */
export function startSnapshotReader(t: { after(fn: () => unknown): void }, dir: string, files: readonly string[], marker: RegExp): SnapshotReader {
  const stopFlag = new SharedArrayBuffer(4);
  const worker = new Worker(new URL('./files-reader.ts', import.meta.url), { workerData: { dir, files, marker: marker.source, stop: stopFlag } });
  const report = new Promise<ReaderReport>((resolve, reject) => {
    worker.once('message', (m: ReaderReport) => resolve(m));
    worker.once('error', reject);
    // An exit without a report (a crash, a terminate) must not leave stop() waiting.
    worker.once('exit', (code) => reject(new Error(`snapshot reader exited (${code}) without a report`)));
  });
  let stopping: Promise<ReaderReport> | undefined;
  const stop = (): Promise<ReaderReport> => {
    stopping ??= (async () => {
      Atomics.store(new Int32Array(stopFlag), 0, 1);
      try {
        return await report;
      } finally {
        await worker.terminate();
      }
    })();
    return stopping;
  };
  t.after(() => stop().then(() => undefined, () => undefined));
  return { stop };
}
