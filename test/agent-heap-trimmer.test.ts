import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { stripTypeScriptTypes } from 'node:module';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { AppliedEventsHub } from '../src/agent/applied-events.ts';
import { createDataServer, listenSocket, type RequestCount } from '../src/agent/data-listeners.ts';
import { rawEtag } from '../src/agent/item-representation.ts';
import type { HandlerDeps } from '../src/agent/request-handler.ts';
import type { CachedValue, ReadResult } from '../src/agent/value-cache.ts';
import { ManualClock } from '../src/shared/clock.ts';
import { CHECK_INTERVAL_MS, GAP_FACTOR, MAX_GAP_MS, MIN_GAP_MS, MIN_GROWTH_BYTES, processHeap, QUIET_UTILIZATION, REGROWN_WITHIN_MS, startHeapTrimmer, type HeapProbe, type HeapTrim } from '../src/agent/heap-trimmer.ts';

const MIB = 2 ** 20;

/**
 * A process whose resident set, busyness and traffic the test sets (`perLook`:
 * requests and applied events between two looks of the trimmer); a collection
 * gives back what `reclaimable` says.
 */
function fakeProcess(): HeapProbe & { rssBytes: number; busy: number; reclaimable: number; collections: number; perLook: number; activity: () => number } {
  let served = 0;
  const p = {
    rssBytes: 40 * MIB,
    busy: 0,
    reclaimable: 0,
    collections: 0,
    perLook: 0,
    activity: () => (served += p.perLook),
    rss: () => p.rssBytes,
    utilization: () => p.busy,
    collect: () => {
      p.collections++;
      p.rssBytes -= p.reclaimable;
      p.reclaimable = 0;
    },
  };
  return p;
}

type FakeProcess = ReturnType<typeof fakeProcess>;

/** A trimmer over a fake process, stopped when the test ends, past start-up's trim (the first quiet look). */
function pastStartup(t: TestContext, onTrim?: (trim: HeapTrim, clock: ManualClock, proc: FakeProcess) => void): { clock: ManualClock; proc: FakeProcess } {
  const clock = new ManualClock();
  const proc = fakeProcess();
  const trimmer = startHeapTrimmer({ clock, probe: proc, activity: proc.activity, ...(onTrim ? { onTrim: (trim: HeapTrim) => onTrim(trim, clock, proc) } : {}) });
  t.after(() => trimmer.stop());
  clock.advance(CHECK_INTERVAL_MS);
  assert.equal(proc.collections, 1, "start-up's trim");
  return { clock, proc };
}

test('a burst that grew the process is given back once the event loop is quiet, and only then', (t) => {
  const trims: HeapTrim[] = [];
  const { clock, proc } = pastStartup(t, (trim) => trims.push(trim));
  // A burst of fills: 60 MiB more, 30 of it garbage; busy while it lasts.
  proc.busy = 0.9;
  proc.perLook = 5_000;
  proc.rssBytes += 60 * MIB;
  proc.reclaimable = 30 * MIB;
  clock.advance(MIN_GAP_MS + 5 * CHECK_INTERVAL_MS);
  assert.equal(proc.collections, 1, 'never while busy');
  proc.busy = QUIET_UTILIZATION / 2;
  clock.advance(CHECK_INTERVAL_MS);
  assert.equal(proc.collections, 1, 'never while requests come, however quiet the loop');
  proc.perLook = 0;
  clock.advance(CHECK_INTERVAL_MS);
  assert.equal(proc.collections, 2);
  assert.deepEqual(
    trims.slice(1).map((trim) => [trim.before / MIB, trim.after / MIB]),
    [[100, 70]],
  );
  // Quiet and not grown since: nothing more to do.
  clock.advance(MIN_GAP_MS * 3);
  assert.equal(proc.collections, 2);
});

test('growth below the threshold is left alone', (t) => {
  const { clock, proc } = pastStartup(t);
  proc.rssBytes += MIN_GROWTH_BYTES - 1;
  clock.advance(MIN_GAP_MS * 2);
  assert.equal(proc.collections, 1, 'below the growth threshold');
  proc.rssBytes += 1;
  clock.advance(CHECK_INTERVAL_MS);
  assert.equal(proc.collections, 2);
});

test('a steady load that keeps the loop under 5 % busy never pauses it; the trim comes once the requests stop', (t) => {
  // 2,000 req/s is ~4 % busy: quiet by utilisation alone, and a trim's pause would land in its p99.
  const { clock, proc } = pastStartup(t);
  proc.busy = QUIET_UTILIZATION * 0.8;
  proc.perLook = 1_000;
  proc.rssBytes += 100 * MIB;
  proc.reclaimable = 60 * MIB;
  clock.advance(10 * 60_000);
  assert.equal(proc.collections, 1, 'no trim while requests keep coming');
  // A single request (or applied event) per look is enough to count as not idle.
  proc.busy = 0;
  proc.perLook = 1;
  clock.advance(10 * CHECK_INTERVAL_MS);
  assert.equal(proc.collections, 1);
  proc.perLook = 0;
  clock.advance(CHECK_INTERVAL_MS);
  assert.equal(proc.collections, 2, 'trimmed at the first idle look');
  assert.equal(proc.rssBytes, 80 * MIB);
});

test('trims that keep finding the memory back wait longer each time, up to 10 minutes; a long trim-free time makes them prompt again', (t) => {
  const trimmedAt: number[] = [];
  let regrow = true;
  // The working set: whatever the trim gave back, the next reads take again at once.
  const { clock, proc } = pastStartup(t, (_trim, at, p) => {
    trimmedAt.push(at.now());
    if (regrow) p.rssBytes += 2 * MIN_GROWTH_BYTES;
  });
  assert.equal(trimmedAt.length, 1, "start-up's trim");
  clock.advance(40 * 60_000);
  const gaps = trimmedAt.slice(1).map((at, i) => at - (trimmedAt[i] as number));
  const expected: number[] = [];
  for (let gap = MIN_GAP_MS; expected.length < gaps.length; gap = Math.min(gap * GAP_FACTOR, MAX_GAP_MS)) expected.push(gap);
  assert.deepEqual(gaps, expected);
  assert.deepEqual(gaps.slice(0, 6), [2_000, 8_000, 32_000, 128_000, 512_000, 600_000]);
  // Then the working set stays put: no more trims, and after a long trim-free time a burst is given back promptly again.
  regrow = false;
  const settled = trimmedAt.length;
  clock.advance(REGROWN_WITHIN_MS);
  assert.equal(trimmedAt.length, settled + 1, 'the growth left over from the last regrowth, then nothing');
  clock.advance(REGROWN_WITHIN_MS);
  const burst = (): void => {
    proc.rssBytes += 40 * MIB;
    proc.reclaimable = 30 * MIB;
  };
  burst();
  clock.advance(CHECK_INTERVAL_MS);
  assert.equal(trimmedAt.length, settled + 2, 'prompt after a long trim-free time');
  burst();
  clock.advance(MIN_GAP_MS);
  assert.equal(trimmedAt.length, settled + 3, 'and the burst after it too, as after start-up');
});

test("a pod's first burst, seconds after start-up's trim, is given back as soon as it is over", (t) => {
  // The memory bench's 1k load: ready, 1.5 s idle, 2.4 s of reads, then quiet.
  const { clock, proc } = pastStartup(t);
  clock.advance(1_500);
  proc.busy = 0.8;
  proc.perLook = 1_000;
  proc.rssBytes += 40 * MIB;
  proc.reclaimable = 35 * MIB;
  clock.advance(2_400);
  proc.busy = 0;
  proc.perLook = 0;
  clock.advance(2 * CHECK_INTERVAL_MS);
  assert.equal(proc.collections, 2, 'trimmed within two looks of the burst ending');
  assert.equal(proc.rssBytes, 45 * MIB);
});

test('stop cancels the timer; stopping twice is harmless', () => {
  const clock = new ManualClock();
  const proc = fakeProcess();
  const trimmer = startHeapTrimmer({ clock, probe: proc, activity: proc.activity });
  assert.equal(clock.pending, 1);
  trimmer.stop();
  trimmer.stop();
  assert.equal(clock.pending, 0);
});

test('without --expose-gc there is no probe (the trimmer is not started); with it, a real collection runs', () => {
  const hasGc = typeof (globalThis as { gc?: unknown }).gc === 'function';
  const probe = processHeap();
  assert.equal(probe !== undefined, hasGc);
  if (probe) {
    probe.collect();
    assert.ok(probe.rss() > 0);
    const u = probe.utilization();
    assert.ok(u >= 0 && u <= 1, String(u));
  }
});

/**
 * Warms `process.nextTick`, then 20 times: a batch of ticks, and a trim from
 * a later timer (no tick object queued, as in an idle agent); prints
 * nextTick's feedback with V8's `%DebugPrint`: the states of its object
 * literal's computed keys. One trim turned them megamorphic in about one run
 * of six (whether the tick object's maps died varies), 20 in every run.
 */
const TICK_FEEDBACK_SCRIPT = `
import { processHeap } from './heap-trimmer.mjs';
const probe = processHeap();
const tick = () => {};
const ticks = (n) => { for (let i = 0; i < n; i++) process.nextTick(tick); };
const later = (fn) => setTimeout(fn, 1);
let cycles = 20;
const cycle = () => {
  ticks(5000);
  later(() => {
    probe.collect();
    if (--cycles > 0) later(cycle);
    else later(() => { ticks(100); later(() => new Function('f', '%DebugPrint(f)')(process.nextTick)); });
  });
};
ticks(20000);
later(cycle);
`;

test("a trim leaves process.nextTick on its fast path, so reads after it cost what they did before (the tick literal's feedback stays monomorphic)", async (t) => {
  // The trimmer as plain JavaScript: loading any .ts file in the child (node's type stripping) happens to keep a tick object alive, which hides the effect.
  const dir = await mkdtemp(join(tmpdir(), 'csb-trim-tick-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const source = await readFile(new URL('../src/agent/heap-trimmer.ts', import.meta.url), 'utf8');
  await writeFile(join(dir, 'heap-trimmer.mjs'), stripTypeScriptTypes(source));
  await writeFile(join(dir, 'main.mjs'), TICK_FEEDBACK_SCRIPT);
  const run = spawnSync(process.execPath, ['--expose-gc', '--allow-natives-syntax', join(dir, 'main.mjs')], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(run.status, 0, run.stderr);
  const states = [...run.stdout.matchAll(/DefineKeyedOwnPropertyInLiteral (\w+)/g)].map((m) => m[1]);
  assert.ok(states.length > 0, `no DefineKeyedOwnPropertyInLiteral slot in nextTick's feedback:\n${run.stdout.slice(0, 2000)}`);
  assert.deepEqual(
    states.filter((state) => state === 'MEGAMORPHIC'),
    [],
    `nextTick's computed-key feedback after the trim: ${states.join(', ')}`,
  );
});

test("the agent's activity count grows with every data request, answered or refused, and every applied event", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'csb-trim-'));
  const socketPath = join(dir, 'run', 'agent.sock');
  const received: RequestCount = { requests: 0 };
  const plaintext = Buffer.alloc(16, 'a');
  const value: CachedValue = { namespace: 'production/ml', name: 'db', env: 'prod', kind: 'secret', version: 1, revision: 1, etag: '"1"', plaintext, json: Buffer.from('{}'), rawEtag: rawEtag('"1"'), fetchedAt: 0, leases: 0, dropped: false };
  const deps: HandlerDeps = {
    prefixes: () => ['production'],
    podToken: Buffer.from('t'),
    env: 'prod',
    read: () => Promise.reject(new Error('a cache hit is expected')),
    readCached: (): ReadResult => ({ value, source: 'hit', staleSeconds: 0, ageSeconds: 0 }),
    release: () => {},
  };
  const server = createDataServer('socket', { deps, serveSse: () => {}, received });
  try {
    await listenSocket(server, socketPath);
    const status = (path: string): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = request({ socketPath, path }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end();
      });
    assert.equal(await status('/v1/items/production/ml/db?format=raw'), 200);
    assert.equal(await status('/v1/items/elsewhere/db'), 403);
    assert.equal(await status('/nowhere'), 404);
    assert.equal(received.requests, 3);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  }
  const hub = new AppliedEventsHub();
  hub.publish({ type: 'changed', namespace: 'production/ml', name: 'db', env: 'prod', version: 2, revision: 2 });
  hub.publish({ type: 'deleted', namespace: 'production/ml', name: 'db', env: 'prod', revision: 3 });
  assert.equal(hub.publishedCount, 2);
});
