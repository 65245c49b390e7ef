/** Starts the torn-read checker (files-reader.ts) in a worker; `stop()` resolves with its findings. */
import { Worker } from 'node:worker_threads';

export interface ReaderReport {
  readonly reads: number;
  readonly mixes: string[][];
  readonly distinct: number;
}

export function startSnapshotReader(dir: string, files: readonly string[], marker: RegExp): { stop(): Promise<ReaderReport> } {
  const stop = new SharedArrayBuffer(4);
  const worker = new Worker(new URL('./files-reader.ts', import.meta.url), { workerData: { dir, files, marker: marker.source, stop } });
  const report = new Promise<ReaderReport>((resolve, reject) => {
    worker.once('message', (m: ReaderReport) => resolve(m));
    worker.once('error', reject);
  });
  return {
    async stop() {
      Atomics.store(new Int32Array(stop), 0, 1);
      const r = await report;
      await worker.terminate();
      return r;
    },
  };
}
