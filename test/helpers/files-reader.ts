/**
 * A reader that follows the documented pattern for applications (docs/FILES.md):
 * resolve `..data` once, read every file under that snapshot, retry from the
 * top when the snapshot disappeared under it. Runs in a worker thread so its
 * reads really race the writer. It reports every pair it read whose
 * publication markers differ (a torn read), and how many reads it made.
 *
 * workerData: { dir, files: string[], marker: string (regex with one group), stop: SharedArrayBuffer }
 */
import { parentPort, workerData } from 'node:worker_threads';
import { readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

interface ReaderData {
  readonly dir: string;
  readonly files: readonly string[];
  readonly marker: string;
  readonly stop: SharedArrayBuffer;
}

const data = workerData as ReaderData;
const stop = new Int32Array(data.stop);
const marker = new RegExp(data.marker);
let reads = 0;
const mixes: string[][] = [];
const seen = new Set<string>();

function readOnce(): string[] | undefined {
  let snapshot: string;
  try {
    snapshot = readlinkSync(join(data.dir, '..data'));
  } catch {
    return undefined;
  }
  const markers: string[] = [];
  for (const file of data.files) {
    let text: string;
    try {
      text = readFileSync(join(data.dir, snapshot, file), 'utf8');
    } catch {
      return undefined; // the snapshot was replaced and removed: start again
    }
    markers.push(marker.exec(text)?.[1] ?? `unmatched:${text.slice(0, 40)}`);
  }
  return markers;
}

while (Atomics.load(stop, 0) === 0) {
  const markers = readOnce();
  if (!markers) continue;
  reads++;
  for (const m of markers) seen.add(m);
  if (new Set(markers).size !== 1 && mixes.length < 10) mixes.push(markers);
}
parentPort?.postMessage({ reads, mixes, distinct: seen.size });
