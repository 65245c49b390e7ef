// Memory reference: a bare Node process holding `count` 1 KiB buffers in
// lru-cache, keyed like the agent's entries, and nothing else. Plain
// JavaScript so it pays no type-stripping overhead (the agent is measured
// compiled too). Usage: node hold-entries.mjs <count> [bytes]; prints `holding <count>`.
import { Buffer } from 'node:buffer';
import process from 'node:process';
import { clearTimeout, setTimeout } from 'node:timers';
import { LRUCache } from 'lru-cache';

/** Bound on how long the reference stays alive if the bench never stops it. */
const MAX_LIFETIME_MS = 120_000;
const count = Number(process.argv[2] ?? 10_000);
const bytes = Number(process.argv[3] ?? 1024);
const cache = new LRUCache({ max: count + 1 });
for (let i = 0; i < count; i++) cache.set(`bench/items/k${String(i).padStart(6, '0')}`, Buffer.alloc(bytes, i % 256));
process.stdout.write(`holding ${cache.size}\n`);
const timer = setTimeout(() => process.exit(0), MAX_LIFETIME_MS);
process.on('SIGTERM', () => {
  clearTimeout(timer);
  process.exit(0);
});
