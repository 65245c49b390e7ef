/**
 * What one cached entry costs the agent's heap, apart from process noise
 * (docs/FOOTPRINT-LOG.md): the agent's own ValueCache, filled
 * in-process through a loader that returns what the envelope loader returns
 * (a fresh plaintext buffer per value), N entries read as the data API reads
 * them, then V8's heap and the external (ArrayBuffer) bytes after full GCs,
 * minus the same before. No sockets, no server: the figure is the entry's
 * representation and the cache's bookkeeping only.
 *
 *   node --expose-gc bench/entry-cost.ts --count 10000 --bytes 1024 [--heap-snapshot]
 *
 * `--heap-snapshot` also writes one (`v8.writeHeapSnapshot`) and prints the
 * object groups with at least one object per entry, by constructor.
 */
import { parseArgs } from 'node:util';
import { writeHeapSnapshot } from 'node:v8';
import { summariseSnapshot } from './lib/heap-snapshot.ts';
import { systemClock } from '../src/shared/clock.ts';
import { release, ValueCache, type LoadedValue } from '../src/agent/value-cache.ts';

const { values } = parseArgs({ options: { count: { type: 'string', default: '10000' }, bytes: { type: 'string', default: '1024' }, 'heap-snapshot': { type: 'boolean', default: false } } });
const count = Number(values.count);
const bytes = Number(values.bytes);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');

const settle = (): NodeJS.MemoryUsage => {
  for (let i = 0; i < 4; i++) gc();
  return process.memoryUsage();
};

const cache = new ValueCache({
  // What the envelope loader returns: plaintext bytes of a printable 1 KiB secret.
  loader: (ref): Promise<LoadedValue> => Promise.resolve({ kind: 'secret', version: 1, revision: 1, etag: '"1"', plaintext: Buffer.from(`${ref.name}-`.padEnd(bytes, 'x')) }),
  clock: systemClock,
  ttl: 3_600_000,
  maxStale: 3_600_000,
  maxEntries: count + 1,
  maxBytes: 2 ** 40,
  streamDownSince: () => undefined,
});
const before = settle();
for (let i = 0; i < count; i++) {
  // The ref as the request handler makes it: strings sliced out of a request URL.
  const url = `/v1/items/bench/items/k${String(i).padStart(6, '0')}?format=raw`;
  const path = url.slice('/v1/items/'.length, url.indexOf('?'));
  const slash = path.lastIndexOf('/');
  release((await cache.read({ namespace: path.slice(0, slash), name: path.slice(slash + 1) }, 'prod')).value);
}
const after = settle();
const heap = (after.heapUsed - before.heapUsed) / count;
// `external` includes the ArrayBuffers (Node Buffers) backing the entries.
const external = (after.external - before.external) / count;
console.log(`${count} entries of ${bytes} B: ${heap.toFixed(0)} B of V8 heap and ${external.toFixed(0)} B of buffers per entry; the cache counts ${(cache.bytes / count).toFixed(0)} B per entry against --cache-max-bytes`);
if (values['heap-snapshot']) {
  const file = writeHeapSnapshot();
  for (const line of summariseSnapshot(file, { minCount: count })) console.log(line);
  console.log(`  (kept as ${file})`);
}
