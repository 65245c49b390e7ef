/**
 * What serving many keys costs a cached read, without sockets: CPU
 * nanoseconds per `handleDataRequest` + release through a real `ValueCache`
 * (lru-cache, the URL memo, the 200's headers, the system clock, so a
 * key's Age second rolls over as in the agent), cycling through `--keys`
 * URLs in order as the load clients do, against a reference that does what
 * bare node:http with distinct bodies does (a `Map` lookup by the URL
 * string, then the body's length). Each (tree, keys) in a fresh process
 * with the bin's semi-space flags, taking turns for `--rounds` rounds. The
 * agent's cost over the reference as keys grow is what serving many keys
 * costs the agent itself (docs/FOOTPRINT-LOG.md, k28).
 *
 *   taskset -c 1 node bench/many-keys-cost.ts --rounds 5 --keys 200,2000,10000 [--tree base=/work/wt/base]
 *
 * `--seconds` bounds each measurement (default 2 s of calls, after one
 * warm-up pass over the keys and 1 s of calls).
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { benchArgs, wholeNumber } from './lib/args.ts';
import { median } from './lib/stats.ts';
import type * as RequestHandler from '../src/agent/request-handler.ts';
import type * as ValueCacheModule from '../src/agent/value-cache.ts';

const values = benchArgs('Usage: node bench/many-keys-cost.ts [--rounds 5] [--keys 200,2000,10000] [--seconds 2] [--garbage 4800] [--rate 50000] [--tree NAME=DIR …]', {
  rounds: { type: 'string', default: '5' },
  keys: { type: 'string', default: '200,2000,10000' },
  seconds: { type: 'string', default: '2' },
  /** Young garbage per read, as node:http makes around each request (~4.8 KB, docs/FOOTPRINT-LOG.md), so collections come as often per read as in the agent; 0 = none. */
  garbage: { type: 'string', default: '0' },
  /**
   * Reads per second of the cache's clock: each read moves it on by 1/rate s,
   * so a key's Age second rolls over after as many reads as in an agent
   * serving this many (e.g. 50000: at 10,000 keys each key is read 5 times per
   * age second); 0 = the system clock (reads come ~100× faster than an agent's).
   */
  rate: { type: 'string', default: '0' },
  /** Another source tree (its src/agent/…), measured in the same rounds (repeatable). */
  tree: { type: 'string', multiple: true },
  /** Internal: run one measurement in this process: DIR, or `reference`. */
  child: { type: 'string' },
  'child-keys': { type: 'string' },
});

/** The bin's semi-space flags (src/cli/runtime-settings.ts), so the young generation collects as often as in the agent. */
const NODE_FLAGS = ['--max-semi-space-size=4', '--min-semi-space-size=4'];
const BODY_BYTES = 1024;
const CALLS_PER_CHECK = 10_000;
const NS = 'bench/items';
const GARBAGE_SLOTS = Math.floor(Number(values.garbage) / 4);
let sink: unknown;
/** The request's young garbage (`--garbage`): an array that dies with the call. */
const litter = (): void => {
  if (GARBAGE_SLOTS > 0) sink = new Array(GARBAGE_SLOTS);
};

/** node:http's parser makes a new URL string per request: decode it from bytes each call, as the reference does too. */
const urlBytes = (keys: number): Buffer[] => Array.from({ length: keys }, (_, i) => Buffer.from(`/v1/items/${NS}/key-${i}?format=raw`));

/** Calls `once` for `seconds` of wall time after a warm-up; CPU ns per call. */
function timed(once: (i: number) => void, keys: number, seconds: number): number {
  let i = 0;
  const warmUntil = Date.now() + 1000;
  for (let k = 0; k < keys; k++) once(i++);
  while (Date.now() < warmUntil) for (let c = 0; c < CALLS_PER_CHECK; c++) once(i++);
  // With node's --trace-gc, where the measured calls begin (what the collections during them promote).
  if (process.env.MANY_KEYS_MARK === '1') console.log('--- round 1');
  const before = process.cpuUsage();
  const start = i;
  const until = Date.now() + seconds * 1000;
  while (Date.now() < until) for (let c = 0; c < CALLS_PER_CHECK; c++) once(i++);
  const used = process.cpuUsage(before);
  return ((used.user + used.system) * 1000) / (i - start);
}

function measureReference(keys: number, seconds: number): number {
  const urls = urlBytes(keys);
  const bodies = new Map<string, Buffer>();
  for (const bytes of urls) bodies.set(bytes.toString('latin1'), Buffer.alloc(BODY_BYTES, bytes.toString('latin1')));
  let total = 0;
  const ns = timed((i) => {
    litter();
    const body = bodies.get((urls[i % keys] as Buffer).toString('latin1'));
    total += body === undefined ? 0 : body.length;
  }, keys, seconds);
  if (total === 0) throw new Error('the reference found no body');
  return ns;
}

async function measureAgent(dir: string, keys: number, seconds: number): Promise<number> {
  const handler = (await import(pathToFileURL(`${dir}/src/agent/request-handler.ts`).href)) as typeof RequestHandler;
  const cacheModule = (await import(pathToFileURL(`${dir}/src/agent/value-cache.ts`).href)) as typeof ValueCacheModule;
  const rate = Number(values.rate);
  let reads = 0;
  const start = Date.now();
  const clock = { now: rate > 0 ? () => start + Math.floor((reads * 1000) / rate) : () => Date.now(), setTimeout: () => ({ cancel: () => {} }) };
  const cache = new cacheModule.ValueCache({
    loader: (ref) => Promise.resolve({ kind: 'secret', version: 1, revision: 1, etag: `"${ref.name}-1"`, plaintext: Buffer.alloc(BODY_BYTES, ref.name) }),
    clock,
    ttl: 3_600_000,
    maxStale: 60_000,
    maxEntries: keys * 2,
    maxBytes: keys * 8 * 1024,
    streamDownSince: () => undefined,
  });
  const prefixes = [NS];
  const deps: RequestHandler.HandlerDeps = {
    prefixes: () => prefixes,
    podToken: Buffer.alloc(0),
    env: 'prod',
    read: (ref, env) => cache.read(ref, env),
    readCached: (ref, env, key, memo) => cache.readCached(ref, env, key, memo),
    cacheKey: cacheModule.variantKey,
    release: (result) => cacheModule.release(result.value),
  };
  // Stored over time as the agent fills them (one key per ~0.1 ms), so Age seconds roll over at different moments.
  for (let k = 0; k < keys; k++) await cache.read({ namespace: NS, name: `key-${k}` }, 'prod');
  const urls = urlBytes(keys);
  let bytes = 0;
  const ns = timed((i) => {
    litter();
    reads += 1;
    const url = (urls[i % keys] as Buffer).toString('latin1');
    const result = handler.handleDataRequest({ method: 'GET', url, headers: { host: 'agent' }, listener: 'socket', tokenProof: undefined }, deps) as RequestHandler.BodyResult;
    bytes += result.body?.length ?? 0;
    if (result.lease !== undefined) deps.release(result.lease);
  }, keys, seconds);
  if (bytes === 0 || (GARBAGE_SLOTS > 0 && sink === undefined)) throw new Error('the agent answered no body');
  return ns;
}

if (values.child !== undefined) {
  const keys = wholeNumber('child-keys', values['child-keys'] ?? '200');
  const seconds = Number(values.seconds);
  console.log(String(values.child === 'reference' ? measureReference(keys, seconds) : await measureAgent(values.child, keys, seconds)));
} else {
  const self = fileURLToPath(import.meta.url);
  const systems: Array<[string, string]> = [
    ['reference', 'reference'],
    ['this tree', fileURLToPath(new URL('..', import.meta.url)).replace(/\/$/, '')],
  ];
  for (const spec of values.tree ?? []) {
    const eq = spec.indexOf('=');
    if (eq < 1) {
      console.error(`--tree takes NAME=DIR, got "${spec}"`);
      process.exit(2);
    }
    systems.push([spec.slice(0, eq), spec.slice(eq + 1)]);
  }
  const keyCounts = (values.keys ?? '').split(',').map((k) => wholeNumber('keys', k));
  const samples = new Map<string, number[]>();
  for (let round = 0; round < wholeNumber('rounds', values.rounds); round++) {
    for (const keys of keyCounts) {
      for (const [name, dir] of systems) {
        const run = spawnSync(process.execPath, [...NODE_FLAGS, self, '--child', dir, '--child-keys', String(keys), '--seconds', String(values.seconds), '--garbage', String(values.garbage), '--rate', String(values.rate)], { encoding: 'utf8' });
        if (run.status !== 0) throw new Error(`${name}: ${run.stderr}`);
        const key = `${name} @ ${keys}`;
        samples.set(key, [...(samples.get(key) ?? []), Number(run.stdout.trim())]);
      }
    }
  }
  console.log(`${values.rounds} rounds, ${values.seconds} s of cached reads each (handleDataRequest + release through a ValueCache; the reference: Map.get by URL); CPU ns per read, median (range)`);
  for (const [name, ns] of samples) console.log(`${name.padEnd(22)} ${median(ns).toFixed(0).padStart(5)} ns (${Math.min(...ns).toFixed(0)}–${Math.max(...ns).toFixed(0)})`);
}
