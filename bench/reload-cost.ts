/**
 * What a `--config` reload costs the running agent (docs/FOOTPRINT-LOG.md,
 * "Footprint"): the serving process does not hold the settings schema
 * (zod) or `yaml`; the first reload imports both. For each repetition a fresh
 * agent (the bin as installed, `dist/cli/main.js`, with a config file) is
 * read idle, then its config file is edited; the reading after the
 * `config reloaded` log line (and `--settle-ms` for the heap trimmer) minus
 * the idle one is the reload's cost, with the reload's wall time (edit →
 * log line, which includes chokidar's notice and the file's stability wait).
 *
 *   npm run build && taskset -c 1 node bench/reload-cost.ts --reps 3
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Context } from './lib/context.ts';
import { benchArgs, wholeNumber } from './lib/args.ts';
import { memoryStatus, stopAllChildren, SUT_CORE, type MemoryStatus } from './lib/proc.ts';
import { DIST_CLI, startAgent, waitReady } from './lib/stack.ts';
import { median } from './lib/stats.ts';
import { PROFILES } from './lib/types.ts';

const USAGE = 'Usage: npm run build && node bench/reload-cost.ts [--reps 3] [--settle-ms 3000]';
const values = benchArgs(USAGE, { reps: { type: 'string', default: '3' }, 'settle-ms': { type: 'string', default: '3000' } });
const reps = wholeNumber('reps', values.reps);
const settleMs = wholeNumber('settle-ms', values['settle-ms'], 0);

const ctx = new Context(PROFILES.full, (msg) => process.stderr.write(`[reload-cost] ${msg}\n`));
try {
  const base = await ctx.baseWith(0);
  const rows: Array<{ before: MemoryStatus; after: MemoryStatus; ms: number }> = [];
  for (let rep = 0; rep < reps; rep++) {
    const agent = await startAgent(base.server, { cli: DIST_CLI, core: SUT_CORE, prefixes: ['bench'], configYaml: 'cacheTtl: 1h\n', args: ['--log-level', 'debug'] });
    try {
      await waitReady(agent.adminUrl);
      // Start-up's trim (agent/heap-trimmer.ts) comes within about a second of listening.
      await agent.child.waitForLine((l) => l.includes('"heap trimmed"'), 10_000).catch(() => undefined);
      await sleep(settleMs);
      const before = memoryStatus(agent.child.pid);
      const edited = performance.now();
      await writeFile(join(agent.dir, 'agent.yaml'), 'cacheTtl: 30m\n');
      await agent.child.waitForLine((l) => l.includes('"config reloaded"'), 30_000);
      const ms = performance.now() - edited;
      await sleep(settleMs);
      const after = memoryStatus(agent.child.pid);
      rows.push({ before, after, ms });
      process.stderr.write(`[reload-cost] rep ${rep}: VmRSS ${before.vmRss.toFixed(1)} → ${after.vmRss.toFixed(1)}, RssAnon ${before.rssAnon.toFixed(1)} → ${after.rssAnon.toFixed(1)} MiB, ${ms.toFixed(0)} ms\n`);
    } finally {
      await agent.stop();
    }
  }
  const med = (xs: number[]): string => `${median(xs).toFixed(1)} (${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)})`;
  console.log(`| ${reps} agents | VmRSS before | VmRSS after | +VmRSS | RssAnon before | RssAnon after | +RssAnon | edit → reloaded ms |`);
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
  console.log(
    `| first reload | ${med(rows.map((r) => r.before.vmRss))} | ${med(rows.map((r) => r.after.vmRss))} | ${med(rows.map((r) => r.after.vmRss - r.before.vmRss))} | ${med(rows.map((r) => r.before.rssAnon))} | ${med(rows.map((r) => r.after.rssAnon))} | ${med(rows.map((r) => r.after.rssAnon - r.before.rssAnon))} | ${med(rows.map((r) => r.ms))} |`,
  );
} finally {
  await ctx.close();
  await stopAllChildren();
}
