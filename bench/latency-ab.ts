/**
 * Fixed-rate latency A/B (docs/FOOTPRINT-LOG.md, "Cached read, per request"):
 * bare node:http and the agent on the SUT core take turns answering an
 * open-loop load at `--rate` req/s for `--seconds` per round (the
 * latency-fixed-rate scenario's client: 4 undici connections over the Unix
 * socket, every request timed), so their p99s come from the same minutes.
 * The agent runs with `--trace-gc`; each round reports the scavenges and
 * mark-compacts it did and their longest pause, next to its p99, so a tail
 * can be matched to GC or ruled out. `--client undici` runs the load
 * client the suite used before the lean one (bench/lib/lean-http.ts), whose
 * own GC pauses were the per-round stall; `--client both` runs each system
 * under both, taking turns. `--together` (lean client only) loads bare and
 * the agent at once on one schedule, as the latency-fixed-rate scenario
 * does, instead of taking turns.
 *
 *   taskset -c 1 node bench/latency-ab.ts --rounds 5 --seconds 3 [--client lean|undici|both] [--together] [--agent-flag=--max-semi-space-size=8]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { itemPath, ITEMS_NS, readAll, seedRange } from './lib/context.ts';
import { runFixedRate, type FixedRateResult, type Target } from './lib/load.ts';
import { runOpenLoop, runOpenLoops } from './lib/lean-load.ts';
import { startBareHttp } from './lib/refs.ts';
import { stopAllChildren, SUT_CORE } from './lib/proc.ts';
import { ServerClient, startAgent, startServer, waitReady } from './lib/stack.ts';
import { median } from './lib/stats.ts';
import { benchArgs, positiveNumber, wholeNumber } from './lib/args.ts';

const values = benchArgs('Usage: node bench/latency-ab.ts [--rounds 5] [--seconds 3] [--rate 2000] [--keys 2000] [--client lean|undici|both] [--together] [--agent-flag=NODE_FLAG …]', {
  rounds: { type: 'string', default: '5' },
  seconds: { type: 'string', default: '3' },
  rate: { type: 'string', default: '2000' },
  keys: { type: 'string', default: '2000' },
  client: { type: 'string', default: 'lean' },
  together: { type: 'boolean', default: false },
  /** A node flag for the agent, in front of the bin's own (repeatable). */
  'agent-flag': { type: 'string', multiple: true },
});
const rounds = wholeNumber('rounds', values.rounds);
const seconds = positiveNumber('seconds', values.seconds);
const rate = positiveNumber('rate', values.rate);
const keys = wholeNumber('keys', values.keys);
const CONNECTIONS = 4;
const CLIENTS = { lean: ['lean'], undici: ['undici'], both: ['lean', 'undici'] }[values.client];
if (CLIENTS === undefined || (values.together && values.client !== 'lean')) {
  console.error(`--client ${values.client}${values.together ? ' --together' : ''}: expected lean, undici or both (--together only with lean)`);
  process.exit(2);
}

/** The load client under test: the lean one (the suite's) or undici (the suite's before it). */
function fixedRate(client: string, target: Target, nextPath: (i: number) => string): Promise<FixedRateResult> {
  const options = { rate, durationS: seconds, connections: CONNECTIONS, nextPath };
  return client === 'lean' ? runOpenLoop(target, options) : runFixedRate(target, options);
}

/** `--trace-gc` lines: `[pid:addr:gc,   123 ms: Scavenge 5.1 (8.2) -> 1.2 (8.2) MB, pooled: 0 MB, 0.42 / 0.00 ms  (average mu = …`. */
function gcSummary(text: string): { scavenges: number; markCompacts: number; maxPauseMs: number } {
  let scavenges = 0;
  let markCompacts = 0;
  let maxPauseMs = 0;
  for (const line of text.split('\n')) {
    const kind = /\bms: (Scavenge|Mark-Compact|Mark-sweep|Minor Mark-Sweep)\b/.exec(line)?.[1];
    if (kind === undefined) continue;
    if (kind === 'Scavenge' || kind === 'Minor Mark-Sweep') scavenges++;
    else markCompacts++;
    const pause = /MB, (?:pooled: [\d.]+ MB, )?([\d.]+) \/ [\d.]+ ms/.exec(line)?.[1];
    if (pause !== undefined) maxPauseMs = Math.max(maxPauseMs, Number(pause));
  }
  return { scavenges, markCompacts, maxPauseMs };
}

const dir = await mkdtemp(join(tmpdir(), 'csb-lat-'));
const paths = Array.from({ length: keys }, (_, i) => itemPath(ITEMS_NS, i));
const server = await startServer(undefined);
const client = new ServerClient(server);
let agent: Awaited<ReturnType<typeof startAgent>> | undefined;
try {
  const bare = await startBareHttp(SUT_CORE, 'socket');
  await seedRange(client, ITEMS_NS, 0, keys, 120_000);
  agent = await startAgent(server, { core: SUT_CORE, prefixes: [ITEMS_NS], args: ['--cache-ttl', '1h'], nodeArgs: ['--trace-gc', ...(values['agent-flag'] ?? [])] });
  await waitReady(agent.adminUrl);
  await readAll(agent.socketPath, paths);
  const agentSocket = agent.socketPath;
  const systems: Array<{ name: string; target: Target; client: string }> = CLIENTS.flatMap((client) => {
    const suffix = CLIENTS.length > 1 ? ` (${client})` : '';
    return [
      { name: `bare node:http${suffix}`, target: { kind: 'socket' as const, socketPath: bare.socketPath as string }, client },
      { name: `agent${suffix}`, target: { kind: 'socket' as const, socketPath: agentSocket }, client },
    ];
  });
  const p99 = new Map<string, number[]>(systems.map((s) => [s.name, []]));
  const p50 = new Map<string, number[]>(systems.map((s) => [s.name, []]));
  console.log(`${rounds} rounds × ${seconds} s at ${rate} req/s, ${CONNECTIONS} connections, ${keys} keys, client ${CLIENTS.join(' and ')}, ${values.together ? 'systems together' : 'systems taking turns'}`);
  const nextPath = (i: number): string => paths[(i * 7919) % paths.length] as string;
  // Taking turns, each system is a group of its own; together, one group of all.
  const groups = values.together ? [systems] : systems.map((sys) => [sys]);
  for (let round = 0; round < rounds; round++) {
    for (const group of groups) {
      const before = agent.child.output().length;
      const results = values.together
        ? await runOpenLoops(group.map((sys) => ({ target: sys.target, nextPath })), { rate, durationS: seconds, connections: CONNECTIONS })
        : [await fixedRate((group[0] as (typeof systems)[number]).client, (group[0] as (typeof systems)[number]).target, nextPath)];
      const gc = gcSummary(agent.child.output().slice(before));
      group.forEach((sys, k) => {
        const r = results[k] as FixedRateResult;
        p99.get(sys.name)?.push(r.latency.p99);
        p50.get(sys.name)?.push(r.latency.p50);
        console.log(
          `round ${round} ${sys.name.padEnd(24)} p50 ${r.latency.p50.toFixed(0)} µs  p99 ${r.latency.p99.toFixed(0)} µs  p99.9 ${r.latency.p999.toFixed(0)} µs  max ${r.latency.max.toFixed(0)} µs  dropped ${r.dropped}` +
            (sys.name.startsWith('agent') ? `  GC: ${gc.scavenges} scavenges, ${gc.markCompacts} mark-compacts, longest ${gc.maxPauseMs.toFixed(2)} ms` : ''),
        );
      });
    }
  }
  for (const sys of systems) {
    const bareP99 = median(p99.get(sys.name.replace('agent', 'bare node:http')) ?? []);
    const v = p99.get(sys.name) ?? [];
    console.log(`${sys.name.padEnd(24)} p50 ${median(p50.get(sys.name) ?? []).toFixed(0)} µs  p99 ${median(v).toFixed(0)} µs (${Math.min(...v).toFixed(0)}–${Math.max(...v).toFixed(0)}) ${(median(v) / bareP99).toFixed(2)}× bare`);
  }
  await bare.stop();
} finally {
  await agent?.stop();
  await client.close();
  await stopAllChildren();
  await server.stop().catch(() => {});
  await rm(dir, { recursive: true, force: true });
}
