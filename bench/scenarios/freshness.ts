/**
 * Freshness: time from a `put` (or a `rotate`) to the agent serving the new
 * value (API), to an SSE watcher receiving the event (SSE), and to the
 * rendered file holding the new content (files). Lag is taken twice: from
 * the moment the write is sent and from the moment its acknowledgement
 * arrives. The target is on the lag from the send: it is what an operator
 * waits for after issuing a change, it includes the write itself, and it
 * does not move when the server changes when it acknowledges (since issue
 * 21 the ack goes out before the watch fan-out; before, after it, so an
 * event could arrive before its ack and count as 0 from the ack). The lag
 * from the ack is kept for comparison with earlier reports.
 * Correctness is checked while measuring: the agent's SSE event marks the
 * moment it has applied a change, and a read started after that moment that
 * still returns an older version is a stale read, which fails the scenario;
 * so does any read going back to an older version than one already served.
 */
import { readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Client } from 'undici';
import { newHistogram, summarise, type LatencySummary } from '../lib/load.ts';
import { watchSse, type TimedEvent } from '../lib/sse.ts';
import { SUT_CORE } from '../lib/proc.ts';
import { keyName, metric, ramDir, startAgent, valueFor, waitReady } from '../lib/stack.ts';
import { percentile } from '../lib/stats.ts';
import { seedRange, VALUE_BYTES, type Context } from '../lib/context.ts';
import type { Row, ScenarioResult } from '../lib/types.ts';

export type FreshnessMode = 'api' | 'sse' | 'files';

const NAMESPACE = 'bench/fresh';
/** Keys the changes rotate over (the files scenario uses the first only: one file). */
const KEYS = 16;
/** Every ROTATE_EVERY-th change is a namespace key rotation instead of a put (API and SSE). */
const ROTATE_EVERY = 10;
/** A change not visible within this is counted as a timeout (and fails the scenario). */
const CHANGE_TIMEOUT_MS = 2_000;
const TARGET_P99_MS: Record<FreshnessMode, number> = { api: 50, sse: 50, files: 100 };
const FILE_NAME = 'fresh.txt';

const GEN_RE = /^k(\d+)-g(\d+)-/;

function genOf(body: string): number {
  const m = GEN_RE.exec(body);
  return m ? Number(m[2]) : -1;
}

interface LagSeries {
  readonly all: number[];
  readonly histogram: ReturnType<typeof newHistogram>;
  record(rep: number, lagNs: number): void;
  rows(system: string, from: string): Row[];
}

/** Lags in ms, overall and per repetition, with a histogram for the chart. */
function newLagSeries(reps: number): LagSeries {
  const all: number[] = [];
  const perRep: number[][] = Array.from({ length: reps }, () => []);
  const histogram = newHistogram();
  return {
    all,
    histogram,
    record(rep, lagNs) {
      histogram.recordValue(Math.max(1, lagNs));
      all.push(lagNs / 1e6);
      perRep[rep]?.push(lagNs / 1e6);
    },
    rows: (system, from) =>
      ([['p50', 50], ['p99', 99], ['max', 100]] as const).map(([name, p]) => ({
        system,
        metric: `lag ${name} (${from})`,
        unit: 'ms',
        values: perRep.map((l) => percentile(l, p)),
        better: 'lower' as const,
      })),
  };
}

export async function freshness(ctx: Context, mode: FreshnessMode): Promise<Omit<ScenarioResult, 'seconds'>> {
  const base = await ctx.baseWith(0);
  const ns = `${NAMESPACE}-${mode}`;
  await seedRange(base.client, ns, 0, KEYS, 60_000);
  const filesDir = mode === 'files' ? join(await ramDir('csb-files-'), 'files') : undefined;
  const item = (j: number): string => `${ns}/${keyName(j)}`;
  const agent = await startAgent(base.server, {
    core: SUT_CORE,
    prefixes: ['bench'],
    prefetch: Array.from({ length: KEYS }, (_, j) => item(j)),
    args: ['--cache-ttl', '1h', ...(filesDir ? ['--files-dir', filesDir] : [])],
    ...(filesDir ? { configYaml: `files: ${JSON.stringify([{ path: FILE_NAME, items: [item(0)], format: 'raw' }])}\n` } : {}),
  });
  const reader = new Client('http://localhost', { socketPath: agent.socketPath });
  const sse = watchSse(agent.socketPath, ns);
  const events: TimedEvent[] = [];
  const eventWaiters = new Set<{ revision: number; resolve: (e: TimedEvent) => void }>();
  sse.onEvent((e) => {
    events.push(e);
    const rev = Number(e.id);
    for (const w of [...eventWaiters]) {
      if (rev >= w.revision) {
        eventWaiters.delete(w);
        w.resolve(e);
      }
    }
  });
  const appliedAt = (revision: number): bigint | undefined => events.find((e) => Number(e.id) >= revision)?.atNs;
  const waitEvent = (revision: number): Promise<TimedEvent | undefined> => {
    const seen = events.find((e) => Number(e.id) >= revision);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => {
      const w = { revision, resolve: (e: TimedEvent | undefined) => resolve(e) };
      eventWaiters.add(w);
      setTimeout(() => {
        if (eventWaiters.delete(w)) resolve(undefined);
      }, CHANGE_TIMEOUT_MS);
    });
  };

  const changes = ctx.profile.freshnessChanges;
  const fromSend = newLagSeries(ctx.profile.reps);
  const fromAck = newLagSeries(ctx.profile.reps);
  const lastSeen = new Map<number, number>();
  let staleReads = 0;
  let regressions = 0;
  let timeouts = 0;
  let reads = 0;
  let rotations = 0;
  let eventBeforeAck = 0;
  const staleExamples: string[] = [];
  try {
    await waitReady(agent.adminUrl);
    await sse.opened;
    const readKey = async (j: number): Promise<{ gen: number; startNs: bigint; endNs: bigint }> => {
      const startNs = process.hrtime.bigint();
      const res = await reader.request({ method: 'GET', path: `/v1/items/${item(j)}?format=raw`, headersTimeout: CHANGE_TIMEOUT_MS });
      const body = await res.body.text();
      reads++;
      if (res.statusCode !== 200) throw new Error(`read ${item(j)}: ${res.statusCode} ${body.slice(0, 200)}`);
      return { gen: genOf(body), startNs, endNs: process.hrtime.bigint() };
    };
    const readFileGen = async (): Promise<{ gen: number; endNs: bigint }> => {
      let text = '';
      try {
        text = await readFile(join(filesDir as string, FILE_NAME), 'utf8');
      } catch {
        // between publications the symlink is always present; a miss here is reported as no change
      }
      reads++;
      return { gen: genOf(text), endNs: process.hrtime.bigint() };
    };
    /** A read is stale when it started after the agent announced applying `revision` yet returned a generation below `gen`. */
    const check = (j: number, got: number, gen: number, revision: number, startNs: bigint): void => {
      const prev = lastSeen.get(j) ?? 0;
      if (got < prev) {
        regressions++;
        if (staleExamples.length < 5) staleExamples.push(`key ${j}: served g${got} after g${prev}`);
      }
      const applied = appliedAt(revision);
      if (got < gen && applied !== undefined && startNs > applied) {
        staleReads++;
        if (staleExamples.length < 5) staleExamples.push(`key ${j}: g${got} read after the agent applied g${gen} (revision ${revision})`);
      }
      if (got > prev) lastSeen.set(j, got);
    };

    for (let i = 0; i < changes; i++) {
      const rep = Math.min(ctx.profile.reps - 1, Math.floor((i * ctx.profile.reps) / changes));
      const j = mode === 'files' ? 0 : i % KEYS;
      const gen = i + 1;
      const rotate = mode !== 'files' && i % ROTATE_EVERY === ROTATE_EVERY - 1;
      let revision: number;
      let ackNs: bigint;
      const sendNs = process.hrtime.bigint();
      if (rotate) {
        revision = (await base.client.rotate(ns)).revision;
        ackNs = process.hrtime.bigint();
        rotations++;
      } else {
        revision = (await base.client.put(item(j), valueFor(j, gen, VALUE_BYTES))).revision;
        ackNs = process.hrtime.bigint();
      }
      const deadline = ackNs + BigInt(CHANGE_TIMEOUT_MS) * 1_000_000n;
      let doneNs: bigint | undefined;
      if (mode === 'sse' || (mode === 'api' && rotate)) {
        if (mode === 'api') {
          // A rotation leaves values unchanged: the agent serving it is its applied revision reaching the rotation's.
          for (;;) {
            const applied = await metric(agent.adminUrl, 'config_sidecar_agent_applied_revision');
            const now = process.hrtime.bigint();
            if (applied >= revision) {
              doneNs = now;
              break;
            }
            if (now > deadline) break;
          }
        } else {
          const e = await waitEvent(revision);
          if (e) {
            if (e.atNs < ackNs) eventBeforeAck++;
            doneNs = e.atNs;
          }
        }
      } else if (mode === 'api') {
        for (;;) {
          const r = await readKey(j);
          check(j, r.gen, gen, revision, r.startNs);
          if (r.gen >= gen) {
            doneNs = r.endNs;
            break;
          }
          if (r.endNs > deadline) break;
        }
        // One more read after the value was served must not go back.
        const again = await readKey(j);
        check(j, again.gen, gen, revision, again.startNs);
      } else {
        for (;;) {
          const r = await readFileGen();
          if (r.gen >= 0 && r.gen < (lastSeen.get(0) ?? 0)) {
            regressions++;
            if (staleExamples.length < 5) staleExamples.push(`file went back to g${r.gen} after g${lastSeen.get(0)}`);
          }
          if (r.gen > (lastSeen.get(0) ?? 0)) lastSeen.set(0, r.gen);
          if (r.gen >= gen) {
            doneNs = r.endNs;
            break;
          }
          if (r.endNs > deadline) break;
          await new Promise((resolve) => setImmediate(resolve));
        }
      }
      if (doneNs === undefined) {
        timeouts++;
        continue;
      }
      fromSend.record(rep, Number(doneNs - sendNs));
      // An event that arrived before its ack counts as 0 from the ack.
      fromAck.record(rep, Math.max(0, Number(doneNs - ackNs)));
    }
    if (mode !== 'sse') {
      // Every key once more, after all events: nothing may be older than the last value served.
      for (let j = 0; j < (mode === 'files' ? 0 : KEYS); j++) {
        const r = await readKey(j);
        const last = lastSeen.get(j) ?? 0;
        if (r.gen < last) regressions++;
      }
    }
  } finally {
    sse.close();
    await reader.close();
    await agent.stop();
    if (filesDir) await rm(dirname(filesDir), { recursive: true, force: true });
  }
  const p99 = percentile(fromSend.all, 99);
  const target = TARGET_P99_MS[mode];
  const systemName = { api: 'agent API read', sse: 'agent SSE watcher', files: 'rendered file' }[mode];
  const rows: Row[] = [...fromSend.rows(systemName, 'from send'), ...fromAck.rows(systemName, 'from ack')];
  const lag: Record<string, LatencySummary> = { [systemName]: summarise(fromSend.histogram), [`${systemName} (from ack)`]: summarise(fromAck.histogram) };
  const correctness = mode === 'sse' ? timeouts === 0 : timeouts === 0 && staleReads === 0 && regressions === 0;
  return {
    id: `freshness-${mode}`,
    title: `Freshness, ${mode === 'api' ? 'API' : mode === 'sse' ? 'SSE' : 'files'}`,
    status: 'ok',
    setup:
      `${changes} sequential changes on ${mode === 'files' ? 'one item rendered to one file' : `${KEYS} items`}` +
      (mode === 'files' ? '' : ` (every ${ROTATE_EVERY}th a namespace key rotation)`) +
      `, lag measured from the write's send (and, second, from its ack) to ${mode === 'api' ? 'the first read over the socket returning the new version (for a rotation: the agent\'s applied revision reaching it)' : mode === 'sse' ? 'the SSE event arriving' : 'the file (read in a tight loop) holding the new content'}; TTL 1 h so only the watch stream can refresh`,
    rows,
    lag,
    targets: [
      { target: `p99 from the send ≤ ${target} ms over all ${changes} changes`, measured: `${p99.toFixed(2)} ms`, pass: Number.isFinite(p99) ? p99 <= target && timeouts === 0 : null },
      {
        target: mode === 'sse' ? 'every change delivered (no timeout)' : 'zero stale reads, no version going back, no timeout',
        measured: `stale ${staleReads}, went back ${regressions}, timeouts ${timeouts} (${reads} reads)`,
        pass: correctness,
      },
    ],
    notes: [
      ...staleExamples,
      ...(rotations ? [`${rotations} rotations among the changes`] : []),
      ...(eventBeforeAck ? [`${eventBeforeAck} events arrived before the write's response (lag from the ack counted as 0)`] : []),
      'Lag from the send includes the write itself (commit and response); the target is on it because it does not depend on whether the server acknowledges before or after the watch fan-out. Lag from the ack is the figure earlier reports gave.',
      'Stale read: a read started after the agent announced the change on its SSE stream that still returned an older version. Reads during the propagation window before that are the lag being measured, not stale reads.',
    ],
    extra: { reads, staleReads, regressions, timeouts, rotations },
  };
}
