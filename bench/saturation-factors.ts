/**
 * Why the suite's cached-read ratio and the A/B tool's differ (s28,
 * docs/FOOTPRINT-LOG.md): the suite's paired scheme (lib/saturation-runs.ts:
 * warm-up until settled, ABBA pairs, schedstat CPU of every thread, nice
 * −10) run against the same processes with one factor at a time moved from
 * the suite's choice towards the A/B tool's (bench/cached-read-ab.ts):
 *
 *   suite        10,000 keys read, a window of 1,000 per run; 0.75-s runs; the agent filled with all of them
 *   keys200      200 keys read (the A/B's default), 0.75-s runs
 *   long         the suite's keys, runs of --requests requests (the A/B's 150,000)
 *   keys200-long both
 *   fresh-agent  both, against a second agent that only ever cached those 200 (the A/B's agent)
 *   ab           the A/B tool's scheme: fresh-agent's systems and runs, no priority raise, one warm-up run each, then rounds of (bare, agent)
 *   ab-raised    ab at nice −10;  ab-paired: ab's systems and priority under the suite's warm-up and ABBA pairs
 *   bare-bodies  bare-http.ts answering each key with its own body against the constant one, the suite's keys and runs
 *   bare-A/A     bare against a second constant-body bare: the scheme's own bias and spread
 *
 * and one factor of the agent's side alone, the agent against itself or its twin in ABBA pairs (no bare):
 *   agent-state  the agent filled with every key against one that only ever cached the 200 it is read (both read those 200, 0.75-s runs)
 *   agent-keys   the agent read over the suite's window of 1,000 of all keys against the same process read over 200
 *   agent-length the agent's 0.75-s runs against its --requests runs (the suite's keys);  bare-length: the same for bare
 *   agent-both   the suite's agent side (filled with all keys, its window, 0.75-s runs) against the A/B's (200 keys, fresh, --requests runs)
 *
 * Each configuration prints the median of its per-pair CPU ratios, their
 * range, and each side's median µs per request, core busy and wait.
 *
 *   flock /tmp/bench.lock taskset -c 1 node bench/saturation-factors.ts --agent-cli /work/wt/base/dist/cli/main.js [--configs suite,keys200] [--connections 16] [--pairs 8] [--requests 150000] [--no-raise]
 */
import { itemPath, ITEMS_NS, readAll, seedRange, VALUE_BYTES } from './lib/context.ts';
import { startChild, stopAllChildren, SUT_CORE } from './lib/proc.ts';
import { raisePriority } from './lib/priority.ts';
import { measure, runPaired, type Measured, type PairedRuns, type RunLength, type System } from './lib/saturation-runs.ts';
import { DIST_CLI, ServerClient, startAgent, startServer, tempDir, waitReady } from './lib/stack.ts';
import { formatRatio, median, pairedRatios, subjectFirst, summariseRatios } from './lib/stats.ts';
import { benchArgs, wholeNumber } from './lib/args.ts';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';

const CONFIGS = ['suite', 'keys200', 'long', 'keys200-long', 'fresh-agent', 'ab', 'ab-raised', 'ab-paired', 'bare-bodies', 'bare-A/A', 'agent-state', 'agent-keys', 'agent-length', 'bare-length', 'agent-both'] as const;
type Config = (typeof CONFIGS)[number];

const values = benchArgs('Usage: node bench/saturation-factors.ts [--agent-cli PATH] [--configs suite,keys200,…] [--keys 10000] [--few-keys 200] [--connections 16] [--pairs 8] [--seconds 0.75] [--requests 150000] [--no-raise]', {
  'agent-cli': { type: 'string', default: DIST_CLI },
  configs: { type: 'string', default: CONFIGS.join(',') },
  keys: { type: 'string', default: '10000' },
  'few-keys': { type: 'string', default: '200' },
  connections: { type: 'string', default: '16' },
  pairs: { type: 'string', default: '8' },
  seconds: { type: 'string', default: '0.75' },
  requests: { type: 'string', default: '150000' },
  'no-raise': { type: 'boolean', default: false },
});
const configs = (values.configs ?? '').split(',').filter(Boolean) as Config[];
for (const c of configs) {
  if (!CONFIGS.includes(c)) {
    console.error(`--configs: no configuration named "${c}"; name some of ${CONFIGS.join(', ')}`);
    process.exit(2);
  }
}
const keys = wholeNumber('keys', values.keys);
const fewKeys = wholeNumber('few-keys', values['few-keys']);
const connections = wholeNumber('connections', values.connections);
const pairs = wholeNumber('pairs', values.pairs);
const requests = wholeNumber('requests', values.requests);
const seconds = Number(values.seconds);
const BARE = fileURLToPath(new URL('./refs/bare-http.ts', import.meta.url));

const allPaths = Array.from({ length: keys }, (_, i) => itemPath(ITEMS_NS, i));
const fewPaths = allPaths.slice(0, fewKeys);
const short: RunLength = { durationS: seconds };
const long: RunLength = { amount: requests };

const dir = await tempDir('csb-factors-');
async function bare(name: string, distinct: number): Promise<System> {
  const socketPath = join(dir, `${name}.sock`);
  const child = startChild(name, process.execPath, [BARE, socketPath, String(VALUE_BYTES), String(distinct)], { core: SUT_CORE });
  await child.waitForLine((l) => l.startsWith('listening '));
  return { name, reference: true, pid: child.pid, target: { kind: 'socket', socketPath }, paths: allPaths };
}

const server = await startServer(undefined);
const client = new ServerClient(server);
try {
  await seedRange(client, ITEMS_NS, 0, keys, 300_000);
  const startFilled = async (name: string, paths: readonly string[]): Promise<System> => {
    const agent = await startAgent(server, { cli: values['agent-cli'], core: SUT_CORE, prefixes: [ITEMS_NS], args: ['--cache-ttl', '1h'] });
    await waitReady(agent.adminUrl);
    await readAll(agent.socketPath, paths);
    return { name, reference: false, pid: agent.child.pid, target: { kind: 'socket', socketPath: agent.socketPath }, paths };
  };
  const agent = await startFilled('agent', allPaths);
  const freshAgent = configs.some((c) => c === 'fresh-agent' || c === 'agent-state' || c === 'agent-both' || c.startsWith('ab')) ? await startFilled('fresh agent', fewPaths) : undefined;
  const constant = await bare('bare', 0);
  const bodies = configs.includes('bare-bodies') ? await bare('bare-bodies', keys) : undefined;
  const second = configs.includes('bare-A/A') ? await bare('bare2', 0) : undefined;
  const pids = [...[agent, freshAgent, constant, bodies, second].flatMap((s) => (s ? [s.pid] : [])), process.pid];
  console.log(`${keys} keys, ${connections} connections, ${pairs} pairs`);
  const few = (s: System): System => ({ ...s, paths: fewPaths });
  type Plan = [System, System, RunLength, 'paired' | 'rounds' | 'twins', boolean, RunLength?];
  const plan: Record<Config, () => Plan> = {
    suite: () => [agent, constant, short, 'paired', true],
    keys200: () => [few(agent), few(constant), short, 'paired', true],
    long: () => [agent, constant, long, 'paired', true],
    'keys200-long': () => [few(agent), few(constant), long, 'paired', true],
    'fresh-agent': () => [freshAgent as System, few(constant), long, 'paired', true],
    ab: () => [freshAgent as System, few(constant), long, 'rounds', false],
    'ab-raised': () => [freshAgent as System, few(constant), long, 'rounds', true],
    'ab-paired': () => [freshAgent as System, few(constant), long, 'paired', false],
    'bare-bodies': () => [bodies as System, constant, short, 'paired', true],
    'bare-A/A': () => [second as System, constant, short, 'paired', true],
    'agent-state': () => [few(agent), freshAgent as System, short, 'twins', true],
    'agent-keys': () => [agent, few(agent), short, 'twins', true],
    'agent-length': () => [agent, agent, short, 'twins', true, long],
    'bare-length': () => [constant, constant, short, 'twins', true, long],
    'agent-both': () => [agent, freshAgent as System, short, 'twins', true, long],
  };
  /** The main thread's schedstat CPU (s): with the run's total, where an agent-side difference lands (its JavaScript, or GC helper threads). */
  const mainThreadS = (pid: number): number => Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e9;
  const split = new Map<string, Array<[number, number]>>();
  const measureSplit = async (sys: System, length: RunLength, side: string): Promise<Measured> => {
    const main0 = mainThreadS(sys.pid);
    const m = await measure(sys, connections, length);
    const main = ((mainThreadS(sys.pid) - main0) / m.run.requests) * 1e6;
    split.set(side, [...(split.get(side) ?? []), [main, m.cpuUsPerReq - main]]);
    return m;
  };
  /** Two warm-up runs of each, then ABBA pairs; each side with its own run length. */
  const twins = async (subject: System, reference: System, length: RunLength, refLength: RunLength): Promise<PairedRuns> => {
    for (let i = 0; i < 2; i++) {
      await measure(subject, connections, length);
      await measure(reference, connections, refLength);
    }
    const out = { subject: [] as Measured[], reference: [] as Measured[], subjectFirst: [] as boolean[], warmUpRuns: { subject: 2, reference: 2 } };
    for (let pair = 0; pair < pairs; pair++) {
      const first = subjectFirst(pair);
      if (first) out.subject.push(await measureSplit(subject, length, 'subject'));
      out.reference.push(await measureSplit(reference, refLength, 'reference'));
      if (!first) out.subject.push(await measureSplit(subject, length, 'subject'));
      out.subjectFirst.push(first);
    }
    return out;
  };
  /** The A/B tool's order: one unkept run of each (reference first), then rounds of (reference, subject). */
  const rounds = async (subject: System, reference: System, length: RunLength): Promise<PairedRuns> => {
    await measure(reference, connections, length);
    await measure(subject, connections, length);
    const out = { subject: [] as Measured[], reference: [] as Measured[], subjectFirst: [] as boolean[], warmUpRuns: { subject: 1, reference: 1 } };
    for (let round = 0; round < pairs; round++) {
      out.reference.push(await measure(reference, connections, length));
      out.subject.push(await measure(subject, connections, length));
      out.subjectFirst.push(false);
    }
    return out;
  };
  {
    for (const config of configs) {
      const [subject, reference, length, scheme, raise, refLength] = plan[config]();
      const t0 = Date.now();
      split.clear();
      const raised = raise && !values['no-raise'] ? raisePriority(pids) : undefined;
      let paired: PairedRuns;
      try {
        paired =
          scheme === 'paired'
            ? await runPaired(subject, reference, connections, length, pairs)
            : scheme === 'rounds'
              ? await rounds(subject, reference, length)
              : await twins(subject, reference, length, refLength ?? length);
      } finally {
        raised?.restore();
      }
      const ratios = pairedRatios(paired.subject.map((m) => m.cpuUsPerReq), paired.reference.map((m) => m.cpuUsPerReq));
      const rps = summariseRatios(pairedRatios(paired.subject.map((m) => m.run.rps), paired.reference.map((m) => m.run.rps)));
      const side = (runs: typeof paired.subject): string =>
        `${median(runs.map((m) => m.cpuUsPerReq)).toFixed(2)} µs (busy ${median(runs.map((m) => m.busyPercent)).toFixed(0)} %, waited ${median(runs.map((m) => m.waitPercent)).toFixed(1)} %, others on core ${median(runs.map((m) => m.otherOnCorePercent)).toFixed(1)} %)`;
      console.log(
        `${config.padEnd(13)} CPU ${formatRatio(summariseRatios(ratios))}  req/s ${rps.median.toFixed(2)}×  ${subject.name} ${side(paired.subject)}  ${reference.name} ${side(paired.reference)}  warm-ups ${paired.warmUpRuns.subject}/${paired.warmUpRuns.reference}${((Date.now() - t0) / 1000).toFixed(0)} s`,
      );
      for (const [side, rows] of split) {
        console.log(`  ${side}: main thread ${median(rows.map((r) => r[0])).toFixed(2)} µs, other threads ${median(rows.map((r) => r[1])).toFixed(2)} µs per request`);
      }
    }
  }
} finally {
  await client.close();
  await stopAllChildren();
  await server.stop().catch(() => {});
  await rm(dir, { recursive: true, force: true });
}
