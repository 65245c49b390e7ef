/**
 * Footprint experiments (docs/FOOTPRINT-LOG.md): the compiled
 * agent run under several node flag / environment variants, in one run, next
 * to a bare Node process holding the same buffers. For each variant and
 * repetition: /proc/PID/status (VmRSS, RssAnon, RssFile) idle and after
 * reading N × 1 KiB through the socket, the heap figures the agent's /metrics
 * reports, and the agent's CPU per cached read over `--reads` requests
 * (pipelined on one socket connection, the generator on the other core).
 * `--heap-snapshot` writes one snapshot after the load and prints its largest
 * retainers by constructor.
 *
 *   npm run build && taskset -c 1 node bench/footprint.ts --count 10000 --reps 3 \
 *     --variant 'bin|' --variant 'semi8|--max-semi-space-size=8' --variant 'arena2||MALLOC_ARENA_MAX=2'
 *
 * A variant is `name|node flags|ENV=value …|cli`; an empty flag field runs the
 * bin as installed (`dist/cli/main.js` with its own runtime settings), a
 * non-empty one passes those flags to node in front of it; `cli`, when
 * given, is another build's `dist/cli/main.js` (main's, for an A/B).
 *
 * `--files` runs every agent with a `--config` file holding a typical
 * `files:` list (what the injector's ConfigMap holds, docs/FILES.md: an env
 * file of two items, a JSON file, a template with a reload hook) and a temp
 * `--files-dir`; the idle figure is then read after the files are published
 * (the agent is ready only then). `--files-as-prefetch` gives the same
 * config `prefetch:` of those four items instead of `files:`: the same
 * upstream reads at start without the renderer, so the difference between
 * the two is what rendering files itself costs.
 */
import { copyFileSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Context, ITEMS_NS, itemPath, VALUE_BYTES } from './lib/context.ts';
import { agentVariant, benchArgs, wholeNumber } from './lib/args.ts';
import { cpuPerRead, idleThenLoaded, SETTLE_MS } from './lib/cached-reads.ts';
import { memoryStatus, startChild, stopAllChildren, SUT_CORE, type MemoryStatus } from './lib/proc.ts';
import { DIST_CLI, keyName, startAgent, tempDir, waitReady } from './lib/stack.ts';
import { median } from './lib/stats.ts';
import { PROFILES } from './lib/types.ts';
import { summariseSnapshot } from './lib/heap-snapshot.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const HOLD = join(ROOT, 'bench', 'refs', 'hold-entries.mjs');
/** Default for `--late-ms`: a second reading, once V8's memory reducer (which starts 8 s after allocation slows) has had its turn. */
const LATE_MS = 10_000;
const USAGE = "Usage: npm run build && node bench/footprint.ts [--count 10000] [--reps 1] [--reads 50000] [--variant 'name|node flags|ENV=value …|cli' …] [--heap-snapshot] [--late-ms 10000] [--files | --files-as-prefetch]";

/** A typical `files:` list over the seeded items (f28): formats, a template and an `onChange` hook (to a closed loopback port, tried once). */
const FILES_YAML = [
  'files:',
  `  - { path: app.env, items: [${ITEMS_NS}/${keyName(0)}, ${ITEMS_NS}/${keyName(1)}], format: env }`,
  `  - { path: config/settings.json, items: [${ITEMS_NS}/${keyName(2)}], format: json, mode: "0440" }`,
  `  - path: app.conf`,
  `    items: [{ item: ${ITEMS_NS}/${keyName(3)}, as: token }]`,
  `    template: "token={{token}}\\n"`,
  `    onChange: { http: "http://127.0.0.1:9/-/reload", retries: 0 }`,
  '',
].join('\n');
const PREFETCH_YAML = `prefetch: [${[0, 1, 2, 3].map((i) => `${ITEMS_NS}/${keyName(i)}`).join(', ')}]\n`;

const values = benchArgs(USAGE, {
  count: { type: 'string', default: '10000' },
  reps: { type: 'string', default: '1' },
  reads: { type: 'string', default: '50000' },
  variant: { type: 'string', multiple: true, default: ['bin|'] },
  'heap-snapshot': { type: 'boolean', default: false },
  'late-ms': { type: 'string', default: String(LATE_MS) },
  files: { type: 'boolean', default: false },
  'files-as-prefetch': { type: 'boolean', default: false },
});
const count = wholeNumber('count', values.count);
const reps = wholeNumber('reps', values.reps);
const reads = wholeNumber('reads', values.reads);
const lateMs = wholeNumber('late-ms', values['late-ms'], 0);
const variants = values.variant.map(agentVariant);

const fmt = (m: MemoryStatus): string => `${m.vmRss.toFixed(1)} / ${m.rssAnon.toFixed(1)} / ${m.rssFile.toFixed(1)}`;

/** The heap figures of the agent's default metrics (MiB): heap used/total, external, each V8 space's size. */
async function heapFigures(adminUrl: string): Promise<string[]> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^config_sidecar_agent_(nodejs_heap_size_used_bytes|nodejs_heap_size_total_bytes|nodejs_external_memory_bytes|nodejs_heap_space_size_total_bytes\{space="(\w+)"\}|cache_bytes|cache_entries) (\S+)$/.exec(line);
    if (!m) continue;
    const value = Number(m[3]);
    out.push(m[1]?.startsWith('cache_entries') ? `cache entries ${value}` : `${m[2] ? `space ${m[2]} total` : m[1]} ${(value / 2 ** 20).toFixed(1)} MiB`);
  }
  return out;
}

const ctx = new Context(PROFILES.full, (msg) => process.stderr.write(`[footprint] ${msg}\n`));
try {
  const base = await ctx.baseWith(count);
  const paths = Array.from({ length: count }, (_, i) => itemPath(ITEMS_NS, i));
  const results = new Map<string, { idle: MemoryStatus[]; loaded: MemoryStatus[]; late: MemoryStatus[]; cpu: number[]; heap: string[] }>();
  const refs: MemoryStatus[] = [];
  for (let rep = 0; rep < reps; rep++) {
    // Variants take turns so drift on a shared machine hits them alike.
    for (const v of variants) {
      const agent = await startAgent(base.server, {
        cli: v.cli ?? DIST_CLI,
        core: SUT_CORE,
        prefixes: ['bench'],
        args: ['--cache-ttl', '1h', ...(values.files ? ['--files-dir', join(await tempDir('csb-footprint-files-'), 'files')] : [])],
        ...(values.files ? { configYaml: FILES_YAML } : values['files-as-prefetch'] ? { configYaml: PREFETCH_YAML } : {}),
        nodeArgs: [...v.nodeArgs, ...(values['heap-snapshot'] && rep === 0 ? ['--heapsnapshot-signal=SIGUSR2'] : [])],
        env: v.env,
      });
      try {
        const { idle, loaded } = await idleThenLoaded(agent, paths);
        await sleep(Math.max(0, lateMs - SETTLE_MS));
        const late = memoryStatus(agent.child.pid);
        const heap = await heapFigures(agent.adminUrl);
        const smaps = readFileSync(`/proc/${agent.child.pid}/smaps_rollup`, 'utf8')
          .split('\n')
          .filter((l) => /^(Rss|Pss_Anon|Pss_File|Anonymous|Shared_Clean|Private_Clean|Private_Dirty):/.test(l))
          .map((l) => l.replace(/\s+/g, ' '));
        // Warm-up first (JIT, and the GC work the load left), so the figure is the steady state's.
        await cpuPerRead(agent.child.pid, agent.socketPath, paths, Math.ceil(reads / 5));
        const cpu = await cpuPerRead(agent.child.pid, agent.socketPath, paths, reads);
        const r = results.get(v.name) ?? { idle: [], loaded: [], late: [], cpu: [], heap: [] };
        r.idle.push(idle);
        r.loaded.push(loaded);
        r.late.push(late);
        r.cpu.push(cpu);
        if (rep === 0) r.heap.push(...heap, ...smaps);
        results.set(v.name, r);
        process.stderr.write(`[footprint] ${v.name} rep ${rep}: idle ${fmt(idle)}, loaded ${fmt(loaded)}, ${lateMs / 1000} s later ${fmt(late)} (VmRSS / RssAnon / RssFile MiB), ${cpu.toFixed(2)} µs CPU per read\n`);
        if (values['heap-snapshot'] && rep === 0) {
          agent.child.proc.kill('SIGUSR2');
          const dir = agent.dir;
          const deadline = Date.now() + 60_000;
          let file: string | undefined;
          // The snapshot is complete once the agent answers again (writing it blocks the event loop).
          while (!file && Date.now() < deadline) {
            await sleep(200);
            file = readdirSync(dir).find((f) => f.endsWith('.heapsnapshot'));
          }
          await waitReady(agent.adminUrl, 60_000);
          if (file) {
            const kept = join(tmpdir(), `footprint-${v.name}.heapsnapshot`);
            copyFileSync(join(dir, file), kept);
            r.heap.push(...summariseSnapshot(kept), `  (kept as ${kept})`);
          }
        }
      } finally {
        await agent.stop();
      }
    }
    const hold = startChild('hold-entries', process.execPath, [HOLD, String(count), String(VALUE_BYTES)], { core: SUT_CORE });
    try {
      await hold.waitForLine((l) => l.startsWith('holding '));
      await sleep(SETTLE_MS / 4);
      refs.push(memoryStatus(hold.pid));
    } finally {
      await hold.stop();
    }
  }
  const med = (xs: number[]): string => `${median(xs).toFixed(1)} (${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)})`;
  const refRss = median(refs.map((m) => m.vmRss));
  console.log(`${count} × ${VALUE_BYTES} B, ${reps} rep(s), ${reads} cached reads for CPU; bare Node + lru-cache VmRSS ${med(refs.map((m) => m.vmRss))} MiB`);
  console.log(`| variant | VmRSS idle | RssAnon idle | VmRSS loaded | RssAnon loaded | ratio to bare | KiB per entry (anon) | VmRSS ${lateMs / 1000} s after | RssAnon ${lateMs / 1000} s after | CPU µs/read |`);
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const [name, r] of results) {
    const perEntry = r.loaded.map((m, i) => ((m.rssAnon - (r.idle[i] as MemoryStatus).rssAnon) * 1024) / count);
    console.log(
      `| ${name} | ${med(r.idle.map((m) => m.vmRss))} | ${med(r.idle.map((m) => m.rssAnon))} | ${med(r.loaded.map((m) => m.vmRss))} | ${med(r.loaded.map((m) => m.rssAnon))} | ${(median(r.loaded.map((m) => m.vmRss)) / refRss).toFixed(2)} | ${med(perEntry)} | ${med(r.late.map((m) => m.vmRss))} | ${med(r.late.map((m) => m.rssAnon))} | ${med(r.cpu)} |`,
    );
  }
  for (const [name, r] of results) console.log(`\n${name}:\n  ${r.heap.join('\n  ')}`);
} finally {
  await ctx.close();
  await stopAllChildren();
}
