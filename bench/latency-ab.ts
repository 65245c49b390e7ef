/**
 * Fixed-rate latency A/B (docs/ARCHITECTURE.md, "Cached read, per request"):
 * bare node:http and the agent on the SUT core take turns answering an
 * open-loop load at `--rate` req/s for `--seconds` per round (the
 * latency-fixed-rate scenario's client: 4 undici connections over the Unix
 * socket, every request timed), so their p99s come from the same minutes.
 * The agent runs with `--trace-gc`; each round reports the scavenges and
 * mark-compacts it did and their longest pause, next to its p99, so a tail
 * can be matched to GC or ruled out.
 *
 *   taskset -c 1 node bench/latency-ab.ts --rounds 5 --seconds 3 [--agent-flag=--max-semi-space-size=8]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { itemPath, ITEMS_NS, readAll, seedRange } from './lib/context.ts';
import { runFixedRate, type Target } from './lib/load.ts';
import { startBareHttp } from './lib/refs.ts';
import { stopAllChildren, SUT_CORE } from './lib/proc.ts';
import { ServerClient, startAgent, startServer, waitReady } from './lib/stack.ts';
import { median } from './lib/stats.ts';
import { benchArgs, positiveNumber, wholeNumber } from './lib/args.ts';

const values = benchArgs('Usage: node bench/latency-ab.ts [--rounds 5] [--seconds 3] [--rate 2000] [--keys 2000] [--agent-flag=NODE_FLAG …]', {
  rounds: { type: 'string', default: '5' },
  seconds: { type: 'string', default: '3' },
  rate: { type: 'string', default: '2000' },
  keys: { type: 'string', default: '2000' },
  /** A node flag for the agent, in front of the bin's own (repeatable). */
  'agent-flag': { type: 'string', multiple: true },
});
const rounds = wholeNumber('rounds', values.rounds);
const seconds = positiveNumber('seconds', values.seconds);
const rate = positiveNumber('rate', values.rate);
const keys = wholeNumber('keys', values.keys);
const CONNECTIONS = 4;

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
  const systems: Array<{ name: string; target: Target }> = [
    { name: 'bare node:http', target: { kind: 'socket', socketPath: bare.socketPath as string } },
    { name: 'agent', target: { kind: 'socket', socketPath: agent.socketPath } },
  ];
  const p99 = new Map<string, number[]>(systems.map((s) => [s.name, []]));
  const p50 = new Map<string, number[]>(systems.map((s) => [s.name, []]));
  console.log(`${rounds} rounds × ${seconds} s at ${rate} req/s, ${CONNECTIONS} connections, ${keys} keys`);
  for (let round = 0; round < rounds; round++) {
    for (const sys of systems) {
      const before = agent.child.output().length;
      const r = await runFixedRate(sys.target, { rate, durationS: seconds, connections: CONNECTIONS, nextPath: (i) => paths[(i * 7919) % paths.length] as string });
      p99.get(sys.name)?.push(r.latency.p99);
      p50.get(sys.name)?.push(r.latency.p50);
      const gc = sys.name === 'agent' ? gcSummary(agent.child.output().slice(before)) : undefined;
      console.log(
        `round ${round} ${sys.name.padEnd(15)} p50 ${r.latency.p50.toFixed(0)} µs  p99 ${r.latency.p99.toFixed(0)} µs  p99.9 ${r.latency.p999.toFixed(0)} µs  max ${r.latency.max.toFixed(0)} µs  dropped ${r.dropped}` +
          (gc ? `  GC: ${gc.scavenges} scavenges, ${gc.markCompacts} mark-compacts, longest ${gc.maxPauseMs.toFixed(2)} ms` : ''),
      );
    }
  }
  const bareP99 = median(p99.get('bare node:http') ?? []);
  for (const sys of systems) {
    const v = p99.get(sys.name) ?? [];
    console.log(`${sys.name.padEnd(15)} p50 ${median(p50.get(sys.name) ?? []).toFixed(0)} µs  p99 ${median(v).toFixed(0)} µs (${Math.min(...v).toFixed(0)}–${Math.max(...v).toFixed(0)}) ${(median(v) / bareP99).toFixed(2)}× bare`);
  }
  await bare.stop();
} finally {
  await agent?.stop();
  await client.close();
  await stopAllChildren();
  await server.stop().catch(() => {});
  await rm(dir, { recursive: true, force: true });
}
