/**
 * The suite's paired saturation ratio (bench/lib/stats.ts,
 * bench/lib/saturation-runs.ts, bench/lib/schedstat.ts): per-pair ratios and
 * their median and range, the ABBA order that cancels a linear drift, the
 * order the runs really take against two real servers, and the scheduler's
 * CPU time agreeing with /proc/PID/stat. Never asserts a speed.
 */
import { test } from 'node:test';
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { formatRatio, median, pairedRatios, pooled, subjectFirst, summariseRatios } from '../bench/lib/stats.ts';
import { MAX_WARMUP_RUNS, runPaired, settled, type System } from '../bench/lib/saturation-runs.ts';
import { cpuSample } from '../bench/lib/schedstat.ts';
import { cpuSeconds } from '../bench/lib/proc.ts';
import { raisePriority, RAISED_NICE } from '../bench/lib/priority.ts';
import { readdirSync } from 'node:fs';
import { getPriority } from 'node:os';

test('paired ratios: one per pair, a pair with a missing side or a zero reference gives none, counts must match', () => {
  assert.deepEqual(pairedRatios([12, 15, 30], [10, 12, 20]), [1.2, 1.25, 1.5]);
  assert.deepEqual(pairedRatios([12, Number.NaN, 30, 5], [10, 12, 0, 5]), [1.2, 1]);
  assert.throws(() => pairedRatios([1, 2], [1]), /paired runs differ in count: 2 subject, 1 reference/);
});

test('paired ratios: a subject run that answered nothing is a ratio of 0 (a miss), not a pair left out', () => {
  // The agent answered nothing in three runs of four (req/s 0, every request an error): the target must not pass on the fourth alone.
  const rps = pairedRatios([0, 0, 9_000, 0], [10_000, 10_000, 10_000, 10_000]);
  assert.deepEqual(rps, [0, 0, 0.9, 0]);
  const s = summariseRatios(rps);
  assert.equal(s.pairs, 4);
  assert.equal(s.median, 0);
  assert.equal(formatRatio(s), '0.00× (0.00–0.90 over 4 pairs)');
});

test('ratio summary: median and range over the pairs, and how the report prints it', () => {
  const s = summariseRatios([1.3, 1.1, 1.2, 1.6]);
  assert.equal(s.pairs, 4);
  assert.equal(s.min, 1.1);
  assert.equal(s.max, 1.6);
  assert.ok(Math.abs(s.median - 1.25) < 1e-12);
  assert.equal(formatRatio(s), '1.25× (1.10–1.60 over 4 pairs)');
  assert.equal(formatRatio(summariseRatios([])), '–');
  assert.equal(formatRatio(summariseRatios([1.04])), '1.04× (1.04–1.04 over 1 pair)');
  assert.equal(formatRatio(s, 1.318), '1.25× (1.10–1.60 over 4 pairs; all runs pooled 1.32×)');
});

test('settled: a run whose own threads waited for the core a tenth of it or more is still warming up; the time other processes held the core does not count', () => {
  assert.equal(settled({ waitPercent: 2.5, otherOnCorePercent: 0.5 }), true);
  assert.equal(settled({ waitPercent: 22.9, otherOnCorePercent: 0.5 }), false);
  assert.equal(settled({ waitPercent: 22.9, otherOnCorePercent: 15 }), true);
  assert.equal(settled({ waitPercent: Number.NaN, otherOnCorePercent: 0 }), true, 'no schedstat: one warm-up run');
});

test('pooled: work that lands in one run of eight is spread over all of them, where the median of the runs leaves it out', () => {
  const requests = [1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000];
  // 20 µs per request, and in one run a 0.02 s burst on top (a major GC).
  const cpu = requests.map((n, i) => n * 20e-6 + (i === 3 ? 0.02 : 0));
  assert.ok(Math.abs(median(cpu.map((c, i) => c / (requests[i] as number))) - 20e-6) < 1e-12);
  assert.ok(Math.abs(pooled(cpu, requests) - 22.5e-6) < 1e-12);
  assert.ok(Number.isNaN(pooled([1], [0])));
  assert.throws(() => pooled([1, 2], [1]), /pooled runs differ in count/);
});

test('ABBA order: a machine slowing down run by run leaves the median ratio where it is; always agent-first does not', () => {
  assert.deepEqual([0, 1, 2, 3].map(subjectFirst), [true, false, true, false]);
  const trueRatio = 1.2;
  const drift = 0.03; // every run 3 % slower than the one before it
  const pairs = 8;
  const measureRatio = (first: (pair: number) => boolean): number => {
    const subject: number[] = [];
    const reference: number[] = [];
    let slot = 0;
    for (let pair = 0; pair < pairs; pair++) {
      const slowdown = (): number => 1 + drift * slot++;
      if (first(pair)) {
        subject.push(trueRatio * slowdown());
        reference.push(slowdown());
      } else {
        reference.push(slowdown());
        subject.push(trueRatio * slowdown());
      }
    }
    return median(pairedRatios(subject, reference));
  };
  const abba = measureRatio(subjectFirst);
  const agentFirst = measureRatio(() => true);
  assert.ok(Math.abs(abba / trueRatio - 1) < 0.002, `ABBA median ${abba}`);
  assert.ok(Math.abs(agentFirst / trueRatio - 1) > 0.02, `agent-first median ${agentFirst}`);
});

async function socketServer(t: { after: (fn: () => Promise<void>) => void }, name: string, order: string[]): Promise<System> {
  const dir = await mkdtemp(join(tmpdir(), 'paired-'));
  const socketPath = join(dir, `${name}.sock`);
  const server: Server = createServer((_req, res) => res.end('x'.repeat(16)));
  // A run opens its own connections, one here: one entry per run.
  server.on('connection', () => order.push(name));
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });
  return { name, reference: name === 'bare', pid: process.pid, target: { kind: 'socket', socketPath }, paths: ['/k'] };
}

test('paired runs: warm-up runs of each until settled, then ABBA pairs next to each other, the others after every second pair', async (t) => {
  const order: string[] = [];
  const agent = await socketServer(t, 'agent', order);
  const bare = await socketServer(t, 'bare', order);
  const quads: number[] = [];
  const paired = await runPaired(agent, bare, 1, { amount: 20 }, 5, async (quad) => {
    quads.push(quad);
    order.push(`others${quad}`);
  });
  // Warm-up runs until settled, not kept: usually one each, more when this process's own threads were busy.
  const { subject: warmAgent, reference: warmBare } = paired.warmUpRuns;
  assert.ok(warmAgent >= 1 && warmAgent <= MAX_WARMUP_RUNS && warmBare >= 1 && warmBare <= MAX_WARMUP_RUNS);
  assert.deepEqual(order, [
    ...Array<string>(warmAgent).fill('agent'),
    ...Array<string>(warmBare).fill('bare'),
    'agent', 'bare', 'bare', 'agent', 'others0',
    'agent', 'bare', 'bare', 'agent', 'others1',
    'agent', 'bare', 'others2',
  ]);
  assert.deepEqual(quads, [0, 1, 2]);
  assert.equal(paired.subject.length, 5);
  assert.equal(paired.reference.length, 5);
  assert.deepEqual(paired.subjectFirst, [true, false, true, false, true]);
  for (const m of [...paired.subject, ...paired.reference]) {
    assert.equal(m.run.requests, 20);
    assert.equal(m.run.errors + m.run.non2xx, 0);
    assert.ok(Number.isFinite(m.cpuUsPerReq) && m.cpuUsPerReq > 0);
  }
});

test("schedstat CPU: every thread's time, the same as /proc/PID/stat's to within its clock ticks", async () => {
  const burnMs = 400;
  const before = cpuSample(process.pid);
  const ticksBefore = cpuSeconds(process.pid);
  // A second thread burns too, so counting the main thread alone would fall short by its time.
  const worker = new Worker(
    `const { parentPort } = require('node:worker_threads');
     const end = Date.now() + ${burnMs}; while (Date.now() < end);
     parentPort.postMessage('done'); setInterval(() => {}, 1000);`,
    { eval: true },
  );
  const done = new Promise((resolve) => worker.once('message', resolve));
  const end = Date.now() + burnMs;
  while (Date.now() < end);
  await done;
  const after = cpuSample(process.pid);
  const ticksAfter = cpuSeconds(process.pid);
  await worker.terminate();
  const sched = after.cpuS - before.cpuS;
  const ticks = ticksAfter - ticksBefore;
  assert.ok(sched > 0.1, `schedstat saw ${sched} s of CPU`);
  assert.ok(Math.abs(sched - ticks) <= 0.04, `schedstat ${sched} s against /proc/PID/stat ${ticks} s`);
  assert.ok(after.waitS >= before.waitS);
});

test('schedstat CPU: a process that has exited is an error, and the figures of the others stay in nanoseconds', async () => {
  const child = spawn(process.execPath, ['-e', '']);
  const pid = child.pid as number;
  await new Promise((resolve) => child.once('exit', resolve));
  assert.throws(() => cpuSample(pid), /ENOENT/);
  assert.ok(Number.isFinite(cpuSample(process.pid).waitS), 'a gone process does not switch every later sample to /proc/PID/stat');
});

test('priority: every thread raised for the runs and each put back after; under nice or without the right, nothing changes and it says so', () => {
  const tids = (): number[] => readdirSync(`/proc/${process.pid}/task`).map(Number);
  const before = new Map(tids().map((t) => [t, getPriority(t)]));
  const p = raisePriority([process.pid]);
  const during = tids().map((t) => getPriority(t));
  p.restore();
  for (const [t, nice] of before) assert.equal(getPriority(t), nice, `thread ${t} back to ${nice}`);
  if (getPriority(process.pid) > 0) {
    assert.equal(p.state, 'runner-niced');
    assert.deepEqual(during, [...before.values()]);
  } else if (process.getuid?.() === 0) {
    assert.equal(p.state, 'raised');
    assert.ok(during.every((n) => n === RAISED_NICE), `every thread at ${RAISED_NICE}: ${during.join(' ')}`);
  } else {
    assert.equal(p.state, 'refused');
    assert.deepEqual(during, [...before.values()]);
  }
});
