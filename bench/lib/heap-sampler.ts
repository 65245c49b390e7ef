/**
 * A preload (`node --import=…/heap-sampler.ts`) for bench/alloc-per-read.ts:
 * V8's sampling heap profiler, toggled by SIGUSR2 (first: start, second: stop
 * and write `$HEAP_SAMPLER_OUT`, a `.heapprofile` Chrome DevTools opens).
 * Unlike node's `--heap-prof`, the samples of objects the GC already
 * collected are kept, so short-lived per-request garbage is attributed to
 * the function that allocated it. Bench only: never loaded by the agent
 * otherwise.
 */
import { Session } from 'node:inspector';
import { writeFileSync } from 'node:fs';

const out = process.env.HEAP_SAMPLER_OUT;
const interval = Number(process.env.HEAP_SAMPLER_INTERVAL ?? 1024);
if (out !== undefined) {
  const session = new Session();
  session.connect();
  let sampling = false;
  process.on('SIGUSR2', () => {
    if (!sampling) {
      sampling = true;
      session.post('HeapProfiler.startSampling', { samplingInterval: interval, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
      process.stderr.write('heap-sampler started\n');
      return;
    }
    sampling = false;
    session.post('HeapProfiler.stopSampling', (err, result) => {
      if (err) process.stderr.write(`heap-sampler: ${err.message}\n`);
      else writeFileSync(out, JSON.stringify(result.profile));
      process.stderr.write('heap-sampler written\n');
    });
  });
}
