/**
 * Gives back the memory a burst of work left resident. A burst of cache
 * fills (undici bodies, envelope JSON, decrypt buffers) is garbage promoted
 * out of the small young generation while in flight; V8 keeps the old space
 * it grew to, and its memory reducer did not shrink it within 30 s in any
 * measurement (docs/FOOTPRINT-LOG.md). A plain major GC frees the
 * objects but keeps the pages; only V8's memory-reducing collection (the
 * `last-resort` flavour of `gc()`, which needs node's `--expose-gc`: the bin
 * sets it for the agent) compacts and unmaps them. It blocks the event loop
 * for tens to hundreds of milliseconds, so it runs only when the process is
 * idle (no data request and no applied event since the last look, and the
 * loop nearly unused: a steady 2,000 req/s is only ~4 % busy, and a pause
 * there lands in its p99) and has grown since the last one.
 *
 * A trim also throws away compiled code and heap the process needs again at
 * once. When memory comes back within minutes of a trim it is the working set,
 * not a burst's leftovers, so each trim soon after the previous one multiplies
 * the gap before the next (capped at `MAX_GAP_MS`); a long trim-free time
 * resets it. Start-up's trim and the first burst's stay prompt.
 */
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import type { Clock, TimerHandle } from '../shared/clock.ts';
import type { Bytes, Milliseconds } from '../shared/units.ts';

/** How often the trimmer looks; a trim follows a burst within about two of these. */
export const CHECK_INTERVAL_MS: Milliseconds = 500;
/** Growth of the resident set since the last trim (or start) worth a trim. */
export const MIN_GROWTH_BYTES: Bytes = 16 * 2 ** 20;
/** Event-loop utilisation below which the last interval counts as quiet. */
export const QUIET_UTILIZATION = 0.05;
/**
 * Bounds the pauses when bursts keep coming. Short, since a trim needs 16 MiB
 * of growth and a quiet loop anyway: a burst soon after start-up's trim (a
 * pod's first reads) must not wait for the next burst to be given back.
 */
export const MIN_GAP_MS: Milliseconds = 2_000;
/** A trim within this time of the previous one found the memory back: the gap before the next one grows by `GAP_FACTOR`. */
export const REGROWN_WITHIN_MS: Milliseconds = 30 * 60_000;
export const GAP_FACTOR = 4;
/** The longest gap between trims however often the memory comes back. */
export const MAX_GAP_MS: Milliseconds = 10 * 60_000;

/** What the trimmer reads and does; the node implementation is `processHeap()`, tests pass their own. */
export interface HeapProbe {
  /** Resident set size now. */
  rss(): Bytes;
  /** Fraction of the time since the previous call the event loop was busy (0–1). */
  utilization(): number;
  /** Runs the memory-reducing collection. */
  collect(): void;
}

export interface HeapTrim {
  readonly before: Bytes;
  readonly after: Bytes;
  readonly pauseMs: Milliseconds;
  /** How long after this trim the next one may run at the earliest. */
  readonly nextGapMs: Milliseconds;
}

export interface HeapTrimmerOptions {
  readonly clock: Clock;
  readonly probe: HeapProbe;
  /**
   * A count that grows with every data request and applied event (read once
   * per look, never per request); unchanged since the previous look is part
   * of being idle.
   */
  readonly activity: () => number;
  readonly onTrim?: (trim: HeapTrim) => void;
}

export interface HeapTrimmer {
  stop(): void;
}

type GcFunction = (options: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

/** The running process's probe, or undefined when node was started without `--expose-gc`. */
export function processHeap(): HeapProbe | undefined {
  const gc = (globalThis as { gc?: GcFunction }).gc;
  if (typeof gc !== 'function') return undefined;
  let last: EventLoopUtilization = performance.eventLoopUtilization();
  return {
    rss: () => process.memoryUsage.rss(),
    utilization: () => {
      const now = performance.eventLoopUtilization();
      const delta = performance.eventLoopUtilization(now, last);
      last = now;
      return delta.utilization;
    },
    collect: () => {
      // A queued tick keeps the tick object's hidden classes alive through the collection (see `keepTickShapes`).
      process.nextTick(keepTickShapes);
      gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    },
  };
}

/**
 * Queued by a trim so that one tick object is alive while it collects.
 * The memory-reducing collection does not retain hidden classes (maps) that
 * no live object uses, which an ordinary one does for a few cycles; an idle
 * agent has no tick object, so the maps of node's `process.nextTick` object
 * (`{ [async_id_symbol], [trigger_async_id_symbol], callback, args }`) could
 * die (in about one trim of six), the next tick built new ones, and the
 * feedback of that literal's computed keys turned megamorphic for good
 * (test/agent-heap-trimmer.test.ts): every `nextTick` (several per request)
 * then defined both keys in the runtime, 14 % of the agent's CPU under
 * cached reads (`perf` with `--perf-prof`, docs/FOOTPRINT-LOG.md,
 * "Footprint"). One live tick object keeps the whole chain of maps.
 */
function keepTickShapes(): void {}

export function startHeapTrimmer(options: HeapTrimmerOptions): HeapTrimmer {
  const { clock, probe, activity } = options;
  // Start-up (module loading, compilation) is the first burst: the baseline is zero, so the first quiet interval trims it.
  let baseline: Bytes = 0;
  let lastTrimAt: Milliseconds = Number.NEGATIVE_INFINITY;
  let gap: Milliseconds = MIN_GAP_MS;
  let lastActivity = activity();
  let timer: TimerHandle | undefined;
  let stopped = false;

  const check = (): void => {
    timer = undefined;
    if (stopped) return;
    const count = activity();
    const idle = probe.utilization() < QUIET_UTILIZATION && count === lastActivity;
    lastActivity = count;
    const now = clock.now();
    const before = probe.rss();
    if (idle && before - baseline >= MIN_GROWTH_BYTES && now - lastTrimAt >= gap) {
      // Start-up's trim has no predecessor, so the gap after it stays short for the first burst.
      gap = now - lastTrimAt < REGROWN_WITHIN_MS ? Math.min(gap * GAP_FACTOR, MAX_GAP_MS) : MIN_GAP_MS;
      const started = performance.now();
      probe.collect();
      const pauseMs = performance.now() - started;
      const after = probe.rss();
      baseline = after;
      lastTrimAt = now;
      options.onTrim?.({ before, after, pauseMs, nextGapMs: gap });
      // The collection itself was busy time, not the application's.
      probe.utilization();
    } else if (before < baseline) {
      baseline = before;
    }
    timer = clock.setTimeout(check, CHECK_INTERVAL_MS);
  };
  timer = clock.setTimeout(check, CHECK_INTERVAL_MS);
  return {
    stop: () => {
      stopped = true;
      timer?.cancel();
    },
  };
}
