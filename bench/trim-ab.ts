/**
 * What the agent's heap trimmer (src/agent/heap-trimmer.ts) costs a cached
 * read right after a burst (docs/ARCHITECTURE.md, "Footprint", third pass):
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
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Client } from 'undici';
import { readAll, Context, ITEMS_NS, itemPath } from './lib/context.ts';
import { cpuSeconds, memoryStatus, stopAllChildren, SUT_CORE, type MemoryStatus } from './lib/proc.ts';
import { startAgent, waitReady } from './lib/stack.ts';
import { PROFILES } from './lib/types.ts';

const CLI = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const SETTLE_MS = 1_500;
const PIPELINE = 16;

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '10000' },
    reads: { type: 'string', default: '20000' },
    variant: { type: 'string', multiple: true, default: ['trim|', 'notrim|--no-expose-gc'] },
  },
});
const count = Number(values.count);
const reads = Number(values.reads);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
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

/** Agent CPU µs per read over `total` cached reads pipelined on one socket connection. */
async function cpuPerRead(pid: number, socketPath: string, paths: readonly string[], total: number): Promise<number> {
  const client = new Client('http://localhost', { socketPath, pipelining: PIPELINE });
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) {
      const res = await client.request({ method: 'GET', path: paths[next++ % paths.length] as string });
      await res.body.dump();
    }
  };
  const before = cpuSeconds(pid);
  try {
    await Promise.all(Array.from({ length: PIPELINE }, worker));
  } finally {
    await client.close();
  }
  return ((cpuSeconds(pid) - before) / total) * 1e6;
}

const ctx = new Context(PROFILES.full, (msg) => process.stderr.write(`[trim-ab] ${msg}\n`));
try {
  const base = await ctx.baseWith(count);
  const paths = Array.from({ length: count }, (_, i) => itemPath(ITEMS_NS, i));
  for (const spec of values.variant) {
    const [name = spec, flags = '', env = ''] = spec.split('|');
    const agent = await startAgent(base.server, {
      cli: CLI,
      core: SUT_CORE,
      prefixes: ['bench'],
      args: ['--cache-ttl', '1h', '--log-level', 'debug'],
      nodeArgs: flags.trim() === '' ? [] : flags.trim().split(/\s+/),
      env: Object.fromEntries(env.trim() === '' ? [] : env.trim().split(/\s+/).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
    });
    try {
      await waitReady(agent.adminUrl);
      await sleep(SETTLE_MS);
      const idle = memoryStatus(agent.child.pid);
      await readAll(agent.socketPath, paths, 32);
      await sleep(SETTLE_MS);
      const loaded = memoryStatus(agent.child.pid);
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
