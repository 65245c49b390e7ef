import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ManualClock } from '../src/shared/clock.ts';
import { CHECK_INTERVAL_MS, MIN_GAP_MS, MIN_GROWTH_BYTES, processHeap, QUIET_UTILIZATION, startHeapTrimmer, type HeapProbe, type HeapTrim } from '../src/agent/heap-trimmer.ts';

const MIB = 2 ** 20;

/** A process whose resident set and busyness the test sets; a collection gives back what `reclaimable` says. */
function fakeProcess(): HeapProbe & { rssBytes: number; busy: number; reclaimable: number; collections: number } {
  const p = {
    rssBytes: 40 * MIB,
    busy: 0,
    reclaimable: 0,
    collections: 0,
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

test('a burst that grew the process is given back once the event loop is quiet, and only then', () => {
  const clock = new ManualClock();
  const proc = fakeProcess();
  const trims: HeapTrim[] = [];
  const trimmer = startHeapTrimmer({ clock, probe: proc, onTrim: (t) => trims.push(t) });
  try {
    // Start-up is the first burst: trimmed at the first quiet look.
    clock.advance(CHECK_INTERVAL_MS);
    assert.equal(proc.collections, 1);
    // A burst of fills: 60 MiB more, 30 of it garbage; busy while it lasts.
    proc.busy = 0.9;
    proc.rssBytes += 60 * MIB;
    proc.reclaimable = 30 * MIB;
    clock.advance(MIN_GAP_MS + 5 * CHECK_INTERVAL_MS);
    assert.equal(proc.collections, 1, 'never while busy');
    proc.busy = QUIET_UTILIZATION / 2;
    clock.advance(CHECK_INTERVAL_MS);
    assert.equal(proc.collections, 2);
    assert.deepEqual(
      trims.slice(1).map((t) => [t.before / MIB, t.after / MIB]),
      [[100, 70]],
    );
    // Quiet and not grown since: nothing more to do.
    clock.advance(MIN_GAP_MS * 3);
    assert.equal(proc.collections, 2);
  } finally {
    trimmer.stop();
  }
});

test('growth below the threshold is left alone, and bursts back to back are trimmed at most once per gap', () => {
  const clock = new ManualClock();
  const proc = fakeProcess();
  const trimmer = startHeapTrimmer({ clock, probe: proc });
  try {
    clock.advance(CHECK_INTERVAL_MS);
    assert.equal(proc.collections, 1);
    proc.rssBytes += MIN_GROWTH_BYTES - 1;
    clock.advance(MIN_GAP_MS * 2);
    assert.equal(proc.collections, 1, 'below the growth threshold');
    proc.rssBytes += 1;
    clock.advance(CHECK_INTERVAL_MS);
    assert.equal(proc.collections, 2);
    // Grown again right away (the cache holding more): the next trim waits for the gap.
    proc.rssBytes += 2 * MIN_GROWTH_BYTES;
    clock.advance(MIN_GAP_MS - 2 * CHECK_INTERVAL_MS);
    assert.equal(proc.collections, 2);
    clock.advance(2 * CHECK_INTERVAL_MS);
    assert.equal(proc.collections, 3);
  } finally {
    trimmer.stop();
  }
});

test("a pod's first burst, seconds after start-up's trim, is given back as soon as it is over", () => {
  // The memory bench's 1k load: ready, 1.5 s idle, 2.4 s of reads, then quiet.
  const clock = new ManualClock();
  const proc = fakeProcess();
  const trimmer = startHeapTrimmer({ clock, probe: proc });
  try {
    clock.advance(CHECK_INTERVAL_MS);
    assert.equal(proc.collections, 1, "start-up's trim");
    clock.advance(1_500);
    proc.busy = 0.8;
    proc.rssBytes += 40 * MIB;
    proc.reclaimable = 35 * MIB;
    clock.advance(2_400);
    proc.busy = 0;
    clock.advance(2 * CHECK_INTERVAL_MS);
    assert.equal(proc.collections, 2, 'trimmed within two looks of the burst ending');
    assert.equal(proc.rssBytes, 45 * MIB);
  } finally {
    trimmer.stop();
  }
});

test('stop cancels the timer; stopping twice is harmless', () => {
  const clock = new ManualClock();
  const trimmer = startHeapTrimmer({ clock, probe: fakeProcess() });
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
