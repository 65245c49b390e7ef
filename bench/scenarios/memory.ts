/**
 * Memory: the agent's RSS after every one of N 1 KiB items has been read
 * through it (N = 10k, and 100k in the full profile, which exceeds the
 * default --cache-max-bytes of 64 MiB and is reported against it), next to a
 * bare Node process holding the same N buffers in lru-cache.
 */
import { fileURLToPath } from 'node:url';
import { readAll, ITEMS_NS, itemPath, VALUE_BYTES, type Context } from '../lib/context.ts';
import { rssBytes, startChild, SUT_CORE } from '../lib/proc.ts';
import { metric, startAgent, waitReady } from '../lib/stack.ts';
import { median } from '../lib/stats.ts';
import type { Row, ScenarioResult, TargetCheck } from '../lib/types.ts';

// Plain JavaScript, so the reference pays no type-stripping overhead either.
const HOLD = fileURLToPath(new URL('../refs/hold-entries.mjs', import.meta.url));
const TARGET_MIB_AT_10K = 112;
/** Let the agent's heap settle (GC after the load) before reading RSS. */
const SETTLE_MS = 1_000;
const CACHE_MAX_BYTES = '64MiB';
/** Seeding and reading 100k items through the agent takes about this long on 2 shared cores. */
const LARGE_LOAD_NEEDS_S = 150;
/** Concurrent reads while loading the agent (misses are bound by upstream fetches). */
const LOAD_CONCURRENCY = 32;

export async function memory(ctx: Context): Promise<Omit<ScenarioResult, 'seconds'>> {
  const counts = ctx.profile.memoryCounts;
  const { cli, compiled } = await ctx.compiledCli();
  const base = await ctx.baseWith(Math.max(...counts.filter((c) => c <= 10_000 || ctx.secondsLeft() >= LARGE_LOAD_NEEDS_S)));
  const rows: Row[] = [];
  const targets: TargetCheck[] = [];
  const notes: string[] = [];
  for (const count of counts) {
    // The smaller size is repeated (fresh agent each time); the 100k load is run once, it takes a minute or two.
    const reps = count <= 10_000 ? ctx.profile.memoryReps : 1;
    if (count > 10_000 && ctx.secondsLeft() < LARGE_LOAD_NEEDS_S) {
      notes.push(`${count} entries: not run, the suite's time budget had ${ctx.secondsLeft().toFixed(0)} s left (needs about ${LARGE_LOAD_NEEDS_S} s).`);
      targets.push({ target: `${count} entries reported against --cache-max-bytes ${CACHE_MAX_BYTES}`, measured: 'not run (time budget)', pass: null });
      continue;
    }
    const agentRss: number[] = [];
    const idleRss: number[] = [];
    const refRss: number[] = [];
    let entries = Number.NaN;
    let bytes = Number.NaN;
    let evictions = Number.NaN;
    for (let rep = 0; rep < reps; rep++) {
      const agent = await startAgent(base.server, { cli, core: SUT_CORE, prefixes: ['bench'], args: ['--cache-ttl', '1h', '--cache-max-bytes', CACHE_MAX_BYTES] });
      try {
        await waitReady(agent.adminUrl);
        idleRss.push(rssBytes(agent.child.pid) / 2 ** 20);
        const started = Date.now();
        if (base.seeded < count) await ctx.baseWith(count);
        await readAll(agent.socketPath, Array.from({ length: count }, (_, i) => itemPath(ITEMS_NS, i)), LOAD_CONCURRENCY);
        if (rep === 0) ctx.log(`${count} items read through the agent in ${((Date.now() - started) / 1000).toFixed(1)} s`);
        await new Promise((r) => setTimeout(r, SETTLE_MS));
        agentRss.push(rssBytes(agent.child.pid) / 2 ** 20);
        entries = await metric(agent.adminUrl, 'config_sidecar_agent_cache_entries');
        bytes = await metric(agent.adminUrl, 'config_sidecar_agent_cache_bytes');
        evictions = await metric(agent.adminUrl, 'config_sidecar_agent_cache_evictions_total');
      } finally {
        await agent.stop();
      }
      const hold = startChild('hold-entries', process.execPath, [HOLD, String(count), String(VALUE_BYTES)], { core: SUT_CORE });
      try {
        await hold.waitForLine((l) => l.startsWith('holding '));
        await new Promise((r) => setTimeout(r, SETTLE_MS / 4));
        refRss.push(rssBytes(hold.pid) / 2 ** 20);
      } finally {
        await hold.stop();
      }
    }
    const label = `${count >= 1000 ? `${count / 1000}k` : count} × 1 KiB`;
    rows.push({ system: 'agent', metric: `RSS idle (ready, empty cache), before the ${label} load`, unit: 'MiB', values: idleRss, better: 'lower' });
    rows.push({ system: 'agent', metric: `RSS after reading ${label}`, unit: 'MiB', values: agentRss, better: 'lower' });
    rows.push({ system: 'bare Node + lru-cache holding the same', metric: `RSS after reading ${label}`, unit: 'MiB', values: refRss, better: 'lower', reference: true });
    notes.push(`${label}: the agent held ${entries} entries, ${(bytes / 2 ** 20).toFixed(1)} MiB counted against --cache-max-bytes ${CACHE_MAX_BYTES}, ${Number.isNaN(evictions) ? 0 : evictions} evictions.`);
    if (reps < 3) notes.push(`${label}: ${reps} repetition${reps === 1 ? '' : 's'} in this profile (each load takes a while).`);
    if (count === 10_000) {
      const m = median(agentRss);
      targets.push({ target: `RSS ≤ ${TARGET_MIB_AT_10K} MiB with 10k × 1 KiB entries`, measured: `${m.toFixed(1)} MiB`, pass: Number.isFinite(m) ? m <= TARGET_MIB_AT_10K : null });
    } else {
      targets.push({
        target: `${label}: reported against --cache-max-bytes ${CACHE_MAX_BYTES} (bounded)`,
        measured: `${median(agentRss).toFixed(1)} MiB RSS, ${(bytes / 2 ** 20).toFixed(1)} MiB cached`,
        pass: Number.isFinite(bytes) ? bytes <= 64 * 2 ** 20 : null,
      });
    }
  }
  if (!counts.includes(10_000)) notes.push('The 10k target is only checked when the profile loads 10k entries.');
  return {
    id: 'memory',
    title: 'Memory: agent RSS after load',
    status: 'ok',
    setup: `${compiled ? 'the agent compiled to JavaScript as shipped' : 'the agent from TypeScript source (the build failed)'}; each size read once through a fresh agent (TTL 1 h, --cache-max-bytes ${CACHE_MAX_BYTES}), RSS from /proc/PID/status ${SETTLE_MS} ms after the load`,
    rows,
    targets,
    notes,
  };
}
