/**
 * What each import costs a fresh Node process (docs/FOOTPRINT-LOG.md,
 * "Footprint"): VmRSS and RssAnon after `import(spec)` and the collection the
 * agent's heap trimmer runs (V8's memory-reducing one), minus a bare
 * process's, median of `--reps` fresh processes, plus the import's wall time.
 * The process runs with the agent's runtime settings (cli/runtime-settings.ts),
 * so the figure is what the import still costs a settled agent. Imports share
 * dependencies, so the figures overlap and do not add up.
 *
 *   npm run build && node bench/import-cost.ts --reps 3 [--only <part of a row's name>]
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { median } from './lib/stats.ts';
import { AGENT_ENV, AGENT_NODE_FLAGS } from '../src/cli/runtime-settings.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const dist = (path: string): string => pathToFileURL(`${ROOT}dist/${path}`).href;

const { values } = parseArgs({ options: { reps: { type: 'string', default: '3' }, only: { type: 'string' } } });
const reps = Number(values.reps);

/** A module that imports absolute URLs and runs a few lines: a probe for what using an import costs, not just loading it. */
const script = (code: string): string => `data:text/javascript,${encodeURIComponent(code)}`;
const PROM_CLIENT = pathToFileURL(`${ROOT}node_modules/prom-client/index.js`).href;

/** What the agent's process loads, package by package, then the agent's own graph. */
const IMPORTS: ReadonlyArray<readonly [string, string]> = [
  ['zod', 'zod'],
  ['zod/v4/core (zod and zod/mini both load it, with all 64 locales)', 'zod/v4/core'],
  ['prom-client', 'prom-client'],
  [
    "prom-client + collectDefaultMetrics on a registry, scraped once (the agent's default metrics before)",
    script(`import p from '${PROM_CLIENT}'; const r = new p.Registry(); p.collectDefaultMetrics({ register: r, prefix: 'x_' }); await r.metrics();`),
  ],
  [
    "the Node built-ins prom-client requires (cluster, http, https, zlib, util, url, perf_hooks; most of them the agent loads anyway)",
    script(`import 'node:cluster'; import 'node:http'; import 'node:https'; import 'node:zlib'; import 'node:util'; import 'node:url'; import 'node:perf_hooks';`),
  ],
  [
    "perf_hooks alone: monitorEventLoopDelay and a gc PerformanceObserver (what the default metrics keep running)",
    script(`import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks'; monitorEventLoopDelay({ resolution: 10 }).enable(); new PerformanceObserver(() => {}).observe({ entryTypes: ['gc'] });`),
  ],
  [
    "the agent's metrics (dist/agent/agent-metrics.js: createAgentMetrics, scraped once)",
    script(`import { createAgentMetrics } from '${dist('agent/agent-metrics.js')}'; const m = createAgentMetrics({ entries: () => 0, bytes: () => 0 }); await m.registry.metrics();`),
  ],
  ['@opentelemetry/api (prom-client loads it)', '@opentelemetry/api'],
  ['pino', 'pino'],
  ['@grpc/grpc-js', '@grpc/grpc-js'],
  ['@grpc/proto-loader', '@grpc/proto-loader'],
  ['undici Pool (shared/undici-pool)', dist('shared/undici-pool.js')],
  ['lru-cache', 'lru-cache'],
  ['commander', 'commander'],
  ['mustache', 'mustache'],
  ['yaml (only with --config)', 'yaml'],
  ['chokidar (only with files: or --config)', 'chokidar'],
  ['files: the spec module (dist/agent/files/file-spec.js graph)', dist('agent/files/file-spec.js')],
  ['files: the renderer (dist/agent/files/render-files.js graph)', dist('agent/files/render-files.js')],
  ['files: the guard (dist/agent/files/file-guard.js graph, chokidar loaded on start)', dist('agent/files/file-guard.js')],
  ['files: the formats (dist/agent/files/formats.js graph)', dist('agent/files/formats.js')],
  ['every command module (dist/cli/commands.js graph, nothing run)', dist('cli/commands.js')],
  ['the agent (dist/agent/agent.js graph)', dist('agent/agent.js')],
  [
    'the agent graph + prom-client with its default metrics, scraped once (what prom-client adds to it)',
    script(`await import('${dist('agent/agent.js')}'); const { default: p } = await import('${PROM_CLIENT}'); const r = new p.Registry(); p.collectDefaultMetrics({ register: r, prefix: 'x_' }); await r.metrics();`),
  ],
];

const PROBE = `
const t0 = performance.now();
if (process.argv[1]) await import(process.argv[1]);
const ms = performance.now() - t0;
globalThis.gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
const s = (await import('node:fs')).readFileSync('/proc/self/status', 'utf8');
const kib = (f) => Number(new RegExp(f + ':\\\\s+(\\\\d+)').exec(s)[1]);
process.stdout.write(JSON.stringify({ vmRss: kib('VmRSS') / 1024, rssAnon: kib('RssAnon') / 1024, ms }));
`;

interface Probe {
  vmRss: number;
  rssAnon: number;
  ms: number;
}

function probe(spec: string): Probe {
  const r = spawnSync(process.execPath, [...new Set([...AGENT_NODE_FLAGS, '--expose-gc']), '--input-type=module', '-e', PROBE, spec], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, ...AGENT_ENV },
  });
  if (r.status !== 0) throw new Error(`import(${spec}) failed: ${r.stderr.slice(0, 500)}`);
  return JSON.parse(r.stdout) as Probe;
}

const bare: Probe[] = [];
const results = new Map<string, Probe[]>();
const selected = values.only === undefined ? IMPORTS : IMPORTS.filter(([name]) => name.includes(values.only ?? ''));
for (let rep = 0; rep < reps; rep++) {
  bare.push(probe(''));
  for (const [name, spec] of selected) results.set(name, [...(results.get(name) ?? []), probe(spec)]);
}
const bareVm = median(bare.map((p) => p.vmRss));
const bareAnon = median(bare.map((p) => p.rssAnon));
console.log(`bare node: VmRSS ${bareVm.toFixed(1)} MiB, RssAnon ${bareAnon.toFixed(1)} MiB (median of ${reps})`);
console.log('| import | +VmRSS MiB | +RssAnon MiB | import ms |');
console.log('| --- | --- | --- | --- |');
for (const [name, ps] of results) {
  console.log(`| ${name} | ${(median(ps.map((p) => p.vmRss)) - bareVm).toFixed(1)} | ${(median(ps.map((p) => p.rssAnon)) - bareAnon).toFixed(1)} | ${median(ps.map((p) => p.ms)).toFixed(0)} |`);
}
