/**
 * Which pages of the node binary a process has resident (docs/FOOTPRINT-LOG.md,
 * "Footprint", "The node binary's pages, attributed"): for each target process, the pages of
 * its executable present in /proc/PID/pagemap, attributed to the binary's
 * sections, to the library each symbol belongs to (ICU data, V8 and its
 * embedded builtins, OpenSSL, nghttp2, llhttp, …) and to the largest symbols,
 * side by side, with the symbols whose resident bytes differ most between the
 * first and the last target.
 *
 *   npm run build && node bench/binary-pages.ts [--target bare] [--target libs] [--target agent] \
 *     [--probe 'name|JS module code' …] [--agent 'name|other build's dist/cli/main.js' …] [--pid PID …] [--top 25] [--settle-ms 2000]
 *
 * Targets: `bare` (node with the agent's runtime settings, idle), `libs` (the
 * same after loading node:http, node:http2 and node:crypto with
 * `process.getBuiltinModule`, as the agent does), `agent` (the
 * bin as installed, `dist/cli/main.js agent` against a local control plane,
 * ready with an empty cache). `--probe` runs a module (ESM, may `await
 * import(...)`) in the same kind of process, to bisect what pulls pages;
 * `--agent` starts another build's bin the way `agent` starts this one's (a
 * before/after in one run); `--pid` reads a running process. Every process is read `--settle-ms` after
 * it is ready. The figures are the kernel's view: a fault maps a whole
 * fault-around window (64 KiB by default) of the file, not one page.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { AGENT_ENV, AGENT_NODE_FLAGS } from '../src/cli/runtime-settings.ts';
import { benchArgs, wholeNumber } from './lib/args.ts';
import { attributePages, librariesOf, type Attribution } from './lib/binary-attribution.ts';
import { Context } from './lib/context.ts';
import { readElfImage } from './lib/elf-image.ts';
import { icuDataItems } from './lib/icu-data.ts';
import { residentPagesOfExe } from './lib/page-map.ts';
import { memoryStatus, startChild, stopAllChildren, SUT_CORE, type MemoryStatus } from './lib/proc.ts';
import { DIST_CLI, startAgent, waitReady } from './lib/stack.ts';
import { PROFILES } from './lib/types.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const USAGE =
  "Usage: npm run build && node bench/binary-pages.ts [--target bare|libs|agent …] [--probe 'name|JS module code' …] [--agent 'name|dist/cli/main.js' …] [--pid PID …] [--top 25] [--settle-ms 2000]";
const BUILT_IN = ['bare', 'libs', 'agent'];

const values = benchArgs(USAGE, {
  target: { type: 'string', multiple: true },
  probe: { type: 'string', multiple: true, default: [] },
  agent: { type: 'string', multiple: true, default: [] },
  pid: { type: 'string', multiple: true, default: [] },
  top: { type: 'string', default: '25' },
  'settle-ms': { type: 'string', default: '2000' },
});
const top = wholeNumber('top', values.top);
const settleMs = wholeNumber('settle-ms', values['settle-ms'], 0);
const explicit = values.target !== undefined || values.probe.length > 0 || values.agent.length > 0 || values.pid.length > 0;
const targets = values.target ?? (explicit ? [] : BUILT_IN);
for (const t of targets) {
  if (!BUILT_IN.includes(t)) {
    console.error(`--target takes one of ${BUILT_IN.join(', ')}, got "${t}"; use --probe 'name|code' for a process of your own\n${USAGE}`);
    process.exit(2);
  }
}
/** `name|value` pairs of a repeatable option, or exit 2 naming it. */
function pairs(option: string, specs: readonly string[], what: string): Array<readonly [string, string]> {
  return specs.map((spec) => {
    const bar = spec.indexOf('|');
    if (bar < 1) {
      console.error(`--${option} takes 'name|${what}', got "${spec}"\n${USAGE}`);
      process.exit(2);
    }
    return [spec.slice(0, bar), spec.slice(bar + 1)] as const;
  });
}
// Other builds first, so the last column (which the tables sort by and compare with the first) is this checkout's agent.
const agents = [...pairs('agent', values.agent, 'dist/cli/main.js'), ...(targets.includes('agent') ? [['agent', DIST_CLI] as const] : [])];
const probes = [
  // getBuiltinModule, as the agent takes node:http (shared/node-http.ts); an ESM import of node:http costs ~12 MiB more.
  ...targets.filter((t) => t !== 'agent').map((t) => [t, t === 'libs' ? "for (const m of ['node:http', 'node:http2', 'node:crypto']) process.getBuiltinModule(m);" : ''] as const),
  ...pairs('probe', values.probe, 'JS module code'),
];

interface Reading {
  readonly name: string;
  readonly status: MemoryStatus;
  readonly fileBytes: number;
  readonly anonBytes: number;
  readonly attribution: Attribution;
}

const log = (msg: string): void => void process.stderr.write(`[binary-pages] ${msg}\n`);
const exe = process.execPath;
const elf = readElfImage(exe);
const icuData = elf.symbols.find((s) => /^icudt\d+_dat$/.test(s.name));
// ICU's data split into its items, so a page of it is named by what it serves.
const image = icuData ? { ...elf, symbols: [...elf.symbols.filter((s) => s !== icuData), ...icuDataItems(exe, icuData)].sort((a, b) => a.offset - b.offset) } : elf;
const libraries = librariesOf(image);
log(`${exe}: ${image.sections.length} sections, ${image.symbols.length} sized symbols`);

function read(name: string, pid: number): Reading {
  const pages = residentPagesOfExe(pid);
  if (pages.exe !== exe) log(`${name} runs ${pages.exe}, not ${exe}: its symbols are read from ${exe} anyway`);
  return {
    name,
    status: memoryStatus(pid),
    fileBytes: pages.file.length * 4096,
    anonBytes: pages.anon.length * 4096,
    attribution: attributePages(image, libraries, [...pages.file, ...pages.anon]),
  };
}

/** A node process with the agent's runtime settings that runs `code` as a module, says ready, and idles. */
async function probeReading(name: string, code: string): Promise<Reading> {
  const child = startChild(name, exe, [...AGENT_NODE_FLAGS, '--input-type=module', '-e', `${code}\nprocess.stdout.write('probe ready\\n');\nsetInterval(() => {}, 1 << 30);`], {
    core: SUT_CORE,
    cwd: ROOT,
    env: { ...process.env, ...AGENT_ENV },
  });
  try {
    await child.waitForLine((l) => l === 'probe ready');
    await sleep(settleMs);
    return read(name, child.pid);
  } finally {
    await child.stop();
  }
}

/** The bin at `cli` as the bench starts an agent, against one local control plane, read once ready with an empty cache. */
async function agentReading(ctx: Context, name: string, cli: string): Promise<Reading> {
  const base = await ctx.baseWith(0);
  const agent = await startAgent(base.server, { cli, core: SUT_CORE, prefixes: ['bench'], args: ['--cache-ttl', '1h'] });
  try {
    await waitReady(agent.adminUrl);
    await sleep(settleMs);
    return read(name, agent.child.pid);
  } finally {
    await agent.stop();
  }
}

const mib = (bytes: number | undefined): string => ((bytes ?? 0) / 2 ** 20).toFixed(1);

const kib = (bytes: number | undefined): string => ((bytes ?? 0) / 1024).toFixed(0);

function table(title: string, readings: readonly Reading[], pick: (a: Attribution) => ReadonlyMap<string, number>, rows?: readonly string[]): void {
  const unit = rows ? 'KiB' : 'MiB';
  const fmt = rows ? kib : mib;
  const last = readings.at(-1) as Reading;
  const byLast = (a: string, b: string): number => (pick(last.attribution).get(b) ?? 0) - (pick(last.attribution).get(a) ?? 0);
  const sorted = rows ?? [...new Set(readings.flatMap((r) => [...pick(r.attribution).keys()]))].sort(byLast);
  console.log(`\n${title} (${unit} resident)\n`);
  console.log(`| ${title} | ${readings.map((r) => r.name).join(' | ')} |`);
  console.log(`| --- | ${readings.map(() => '---').join(' | ')} |`);
  for (const key of sorted) {
    const cells = readings.map((r) => pick(r.attribution).get(key) ?? 0);
    if (!rows && cells.every((b) => b < 0.05 * 2 ** 20)) continue;
    console.log(`| ${key} | ${cells.map(fmt).join(' | ')} |`);
  }
}

const ctx = new Context(PROFILES.full, log);
try {
  const readings: Reading[] = [];
  for (const [name, code] of probes) readings.push(await probeReading(name, code));
  for (const [name, cli] of agents) readings.push(await agentReading(ctx, name, cli));
  for (const pid of values.pid) readings.push(read(`pid ${pid}`, wholeNumber('pid', pid)));
  if (readings.length === 0) throw new Error('nothing to read');

  console.log(`node binary ${exe}, read ${settleMs} ms after each process was ready\n`);
  console.log(`| process | VmRSS | RssAnon | RssFile | binary, file pages | binary, copied (anonymous) pages |`);
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const r of readings) {
    console.log(`| ${r.name} | ${r.status.vmRss.toFixed(1)} | ${r.status.rssAnon.toFixed(1)} | ${r.status.rssFile.toFixed(1)} | ${mib(r.fileBytes)} | ${mib(r.anonBytes)} |`);
  }
  table('section', readings, (a) => a.bySection);
  table('library', readings, (a) => a.byLibrary);
  const first = readings[0] as Reading;
  const last = readings.at(-1) as Reading;
  const symbols = [...last.attribution.bySymbol.keys()].sort((a, b) => (last.attribution.bySymbol.get(b) ?? 0) - (last.attribution.bySymbol.get(a) ?? 0));
  table(`largest symbols of ${last.name}`, readings, (a) => a.bySymbol, symbols.slice(0, top));
  if (readings.length > 1) {
    const all = new Set([...first.attribution.bySymbol.keys(), ...last.attribution.bySymbol.keys()]);
    const delta = (s: string): number => (last.attribution.bySymbol.get(s) ?? 0) - (first.attribution.bySymbol.get(s) ?? 0);
    table(`symbols ${last.name} has most beyond ${first.name}`, readings, (a) => a.bySymbol, [...all].sort((a, b) => delta(b) - delta(a)).slice(0, top));
  }
} finally {
  await ctx.close();
  await stopAllChildren();
}
