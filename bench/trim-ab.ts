/**
 * What the agent's heap trimmer (src/agent/heap-trimmer.ts) costs a cached
 * read right after a burst (docs/FOOTPRINT-LOG.md, third pass):
 * for each variant one compiled agent reads N × 1 KiB through the socket (the
 * burst), then serves a warm-up and two rounds of cached reads pipelined 16
 * deep; printed per variant: VmRSS / RssAnon idle, after the burst and after
 * the reads, the agent's CPU per read in each round, its GC counts and times
 * (`nodejs_gc_duration_seconds` from /metrics) per round, and the trims it
 * logged (RSS before → after, pause).
 *
 *   npm run build && taskset -c 1 node bench/trim-ab.ts --count 10000 --reads 20000 \
 *     --variant 'trim|' --variant 'notrim|--no-expose-gc'
 *
 * A variant is `name|node flags|ENV=value …`, as in bench/footprint.ts.
 */
import { Context, ITEMS_NS, itemPath } from './lib/context.ts';
import { agentVariant, benchArgs, wholeNumber } from './lib/args.ts';
import { cpuPerRead, idleThenLoaded } from './lib/cached-reads.ts';
import { memoryStatus, stopAllChildren, SUT_CORE, type MemoryStatus } from './lib/proc.ts';
import { DIST_CLI, startAgent } from './lib/stack.ts';
import { PROFILES } from './lib/types.ts';

const USAGE = "Usage: npm run build && node bench/trim-ab.ts [--count 10000] [--reads 20000] [--variant 'name|node flags|ENV=value …' …]";

const values = benchArgs(USAGE, {
  count: { type: 'string', default: '10000' },
  reads: { type: 'string', default: '20000' },
  variant: { type: 'string', multiple: true, default: ['trim|', 'notrim|--no-expose-gc'] },
});
const count = wholeNumber('count', values.count);
const reads = wholeNumber('reads', values.reads);
const variants = values.variant.map(agentVariant);
const fmt = (m: MemoryStatus): string => `${m.vmRss.toFixed(1)} / ${m.rssAnon.toFixed(1)}`;

/** GC count and seconds by kind, from the agent's default metrics. */
async function gcFigures(adminUrl: string): Promise<Map<string, { count: number; seconds: number }>> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const out = new Map<string, { count: number; seconds: number }>();
  for (const line of text.split('\n')) {
    const m = /^config_sidecar_agent_nodejs_gc_duration_seconds_(count|sum)\{kind="(\w+)"\} (\S+)$/.exec(line);
    if (!m) continue;
    const kind = m[2] as string;
    const entry = out.get(kind) ?? { count: 0, seconds: 0 };
    if (m[1] === 'count') entry.count = Number(m[3]);
    else entry.seconds = Number(m[3]);
    out.set(kind, entry);
  }
  return out;
}

const gcDelta = (a: Map<string, { count: number; seconds: number }>, b: Map<string, { count: number; seconds: number }>): string =>
  [...b]
    .map(([kind, v]) => `${kind} ${v.count - (a.get(kind)?.count ?? 0)} (${((v.seconds - (a.get(kind)?.seconds ?? 0)) * 1000).toFixed(0)} ms)`)
    .join(', ');

const ctx = new Context(PROFILES.full, (msg) => process.stderr.write(`[trim-ab] ${msg}\n`));
try {
  const base = await ctx.baseWith(count);
  const paths = Array.from({ length: count }, (_, i) => itemPath(ITEMS_NS, i));
  for (const { name, nodeArgs, env, cli } of variants) {
    const agent = await startAgent(base.server, {
      cli: cli ?? DIST_CLI,
      core: SUT_CORE,
      prefixes: ['bench'],
      args: ['--cache-ttl', '1h', '--log-level', 'debug'],
      nodeArgs,
      env,
    });
    try {
      const { idle, loaded } = await idleThenLoaded(agent, paths);
      const g0 = await gcFigures(agent.adminUrl);
      const warm = await cpuPerRead(agent.child.pid, agent.socketPath, paths, Math.ceil(reads / 5));
      const g1 = await gcFigures(agent.adminUrl);
      const first = await cpuPerRead(agent.child.pid, agent.socketPath, paths, reads);
      const g2 = await gcFigures(agent.adminUrl);
      const second = await cpuPerRead(agent.child.pid, agent.socketPath, paths, reads);
      const g3 = await gcFigures(agent.adminUrl);
      const after = memoryStatus(agent.child.pid);
      const trims = agent.child
        .output()
        .split('\n')
        .filter((l) => l.includes('"heap trimmed"'))
        .map((l) => {
          const j = JSON.parse(l) as { rssBeforeMiB: number; rssAfterMiB: number; pauseMs: number };
          return `${j.rssBeforeMiB} → ${j.rssAfterMiB} MiB in ${j.pauseMs} ms`;
        });
      console.log(`${name}: VmRSS / RssAnon MiB idle ${fmt(idle)}, after ${count} ${fmt(loaded)}, after the reads ${fmt(after)}`);
      console.log(`  CPU µs per read: warm-up ${warm.toFixed(1)}, first ${reads} ${first.toFixed(1)}, second ${reads} ${second.toFixed(1)}`);
      console.log(`  GC in the warm-up: ${gcDelta(g0, g1)}; first: ${gcDelta(g1, g2)}; second: ${gcDelta(g2, g3)}`);
      console.log(`  trims: ${trims.length ? trims.join('; ') : 'none'}`);
    } finally {
      await agent.stop();
    }
  }
} finally {
  await ctx.close();
  await stopAllChildren();
}
