/**
 * Garbage per cached read (docs/FOOTPRINT-LOG.md, a27):
 * bare node:http and agent builds under the same saturated load (the lean
 * closed-loop client, 1 KiB values over the Unix socket, every system on the
 * SUT core, taking turns), each run with `--trace-gc-nvp`. Per system, medians
 * over the rounds of: bytes allocated per request (V8's `allocated=` summed
 * over the round's GCs), scavenges and their total pause per 100k requests,
 * and CPU per request. Bare runs twice: with node's default young generation
 * and with the bin's (`--min-semi-space-size=4 --max-semi-space-size=4`), so
 * the scavenge counts also compare at the same size.
 *
 *   flock /tmp/bench.lock taskset -c 1 node bench/alloc-per-read.ts --rounds 4 --requests 100000 \
 *     --agent-cli=base=/work/wt/base/dist/cli/main.js --agent-cli=mine=$PWD/dist/cli/main.js [--sites DIR]
 *
 * `--sites DIR` runs one more round per system under V8's sampling heap
 * profiler (bench/lib/heap-sampler.ts; collected objects included) and
 * prints each system's top allocation sites in bytes per request, grouped as
 * the agent's code, node internals and libraries; DIR gets the
 * `.heapprofile` files (Chrome DevTools opens them). That round is not in
 * the figures (sampling costs CPU), but the sampler's inspector session is
 * loaded in every process for the whole run, which roughly triples the
 * scavenge pauses: take pauses and CPU from a run without `--sites`.
 */
import { readFileSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { benchArgs, wholeNumber } from './lib/args.ts';
import { itemPath, ITEMS_NS, readAll, seedRange } from './lib/context.ts';
import { runClosedLoop } from './lib/lean-load.ts';
import { cpuSeconds, startChild, stopAllChildren, SUT_CORE } from './lib/proc.ts';
import { DIST_CLI, ServerClient, startAgent, startServer, waitReady } from './lib/stack.ts';
import { median } from './lib/stats.ts';

const USAGE = 'Usage: node bench/alloc-per-read.ts [--rounds 4] [--requests 100000] [--keys 200] [--connections 16] [--agent-cli=NAME=PATH …] [--sites DIR] [--interval 1024]';
const values = benchArgs(USAGE, {
  rounds: { type: 'string', default: '4' },
  requests: { type: 'string', default: '100000' },
  keys: { type: 'string', default: '200' },
  connections: { type: 'string', default: '16' },
  'agent-cli': { type: 'string', multiple: true },
  sites: { type: 'string' },
  interval: { type: 'string', default: '1024' },
});
const rounds = wholeNumber('rounds', values.rounds);
const requests = wholeNumber('requests', values.requests);
const keys = wholeNumber('keys', values.keys);
const connections = wholeNumber('connections', values.connections);
const interval = wholeNumber('interval', values.interval);
const sitesDir = values.sites;
if (sitesDir !== undefined) await mkdir(sitesDir, { recursive: true });
const SAMPLER = fileURLToPath(new URL('./lib/heap-sampler.ts', import.meta.url));
const REFS = fileURLToPath(new URL('./refs/', import.meta.url));
/** The bin's young-generation flags (src/cli/runtime-settings.ts): the young generation held at 4 MiB. */
const SEMI_SPACE_FLAGS = ['--max-semi-space-size=4', '--min-semi-space-size=4'];
/** Lets the last GC lines of a round through the pipe before the totals are read. */
const DRAIN_MS = 150;

/** Running totals of one process's `--trace-gc-nvp` lines. */
interface GcTotals {
  scavenges: number;
  scavengeMs: number;
  majors: number;
  allocated: number;
}

interface System {
  readonly name: string;
  readonly pid: number;
  readonly socketPath: string;
  readonly gc: GcTotals;
  readonly profile: string | undefined;
}

/** Feeds `--trace-gc-nvp` output into `totals` (chunks may split lines). */
function gcParser(totals: GcTotals): (chunk: string) => void {
  let pending = '';
  return (chunk) => {
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      const kind = /\bgc=(\w+)/.exec(line)?.[1];
      if (kind === undefined) continue;
      totals.allocated += Number(/\ballocated=(\d+)/.exec(line)?.[1] ?? 0);
      if (kind === 's') {
        totals.scavenges++;
        totals.scavengeMs += Number(/\bpause=([\d.]+)/.exec(line)?.[1] ?? 0);
      } else totals.majors++;
    }
  };
}

function samplerArgs(name: string): { nodeArgs: string[]; env: Record<string, string>; profile: string | undefined } {
  if (sitesDir === undefined) return { nodeArgs: ['--trace-gc-nvp'], env: {}, profile: undefined };
  const profile = join(sitesDir, `${name.replace(/[^a-z0-9=.-]+/gi, '_')}.heapprofile`);
  return { nodeArgs: ['--trace-gc-nvp', `--import=${SAMPLER}`], env: { HEAP_SAMPLER_OUT: profile, HEAP_SAMPLER_INTERVAL: String(interval) }, profile };
}

const dir = await mkdtemp(join(tmpdir(), 'csb-alloc-'));
const paths = Array.from({ length: keys }, (_, i) => itemPath(ITEMS_NS, i));
const systems: System[] = [];

async function bare(name: string, flags: readonly string[]): Promise<void> {
  const socketPath = join(dir, `${systems.length}.sock`);
  const gc: GcTotals = { scavenges: 0, scavengeMs: 0, majors: 0, allocated: 0 };
  const s = samplerArgs(name);
  const child = startChild(name, process.execPath, [...flags, ...s.nodeArgs, join(REFS, 'bare-http.ts'), socketPath, '1024'], {
    core: SUT_CORE,
    env: { ...process.env, ...s.env },
    onOutput: gcParser(gc),
  });
  await child.waitForLine((l) => l.startsWith('listening '));
  systems.push({ name, pid: child.pid, socketPath, gc, profile: s.profile });
}

async function measure(sys: System): Promise<{ cpuUs: number; bytes: number; scavenges: number; scavengeMs: number; majors: number }> {
  const before = { ...sys.gc };
  const cpu0 = cpuSeconds(sys.pid);
  const run = await runClosedLoop({ kind: 'socket', socketPath: sys.socketPath }, { connections, amount: requests, paths });
  const cpuUs = ((cpuSeconds(sys.pid) - cpu0) / run.requests) * 1e6;
  if (run.non2xx || run.errors) throw new Error(`${sys.name}: ${run.non2xx} non-2xx, ${run.errors} errors`);
  await delay(DRAIN_MS);
  const per100k = 100_000 / run.requests;
  return {
    cpuUs,
    bytes: (sys.gc.allocated - before.allocated) / run.requests,
    scavenges: (sys.gc.scavenges - before.scavenges) * per100k,
    scavengeMs: (sys.gc.scavengeMs - before.scavengeMs) * per100k,
    majors: (sys.gc.majors - before.majors) * per100k,
  };
}

interface ProfileNode {
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly selfSize: number;
  readonly children: readonly ProfileNode[];
}

/** Self bytes per allocating function, over every node of a sampling heap profile. */
function sites(file: string): Map<string, number> {
  const bySite = new Map<string, number>();
  const visit = (node: ProfileNode): void => {
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url === '' ? '' : ` ${url.replace(/^file:\/\/.*?\/(dist|src|node_modules)\//, '$1/')}:${lineNumber + 1}`;
    const key = `${functionName || '(anonymous)'}${where}`;
    if (node.selfSize > 0) bySite.set(key, (bySite.get(key) ?? 0) + node.selfSize);
    for (const child of node.children) visit(child);
  };
  visit((JSON.parse(readFileSync(file, 'utf8')) as { head: ProfileNode }).head);
  return bySite;
}

function group(site: string): string {
  if (/ (dist|src)\//.test(site)) return 'agent';
  if (/ node_modules\//.test(site)) return 'libraries';
  return 'node/V8';
}

const server = await startServer(undefined);
const client = new ServerClient(server);
try {
  await bare('bare node:http', []);
  await bare('bare node:http, semi-space 4 MiB', SEMI_SPACE_FLAGS);
  await seedRange(client, ITEMS_NS, 0, keys, 120_000);
  const clis = values['agent-cli']?.length ? values['agent-cli'] : [`agent=${DIST_CLI}`];
  for (const spec of clis) {
    const eq = spec.indexOf('=');
    if (eq <= 0) throw new Error(`--agent-cli takes NAME=PATH (a build's dist/cli/main.js), got ${spec}`);
    const name = `agent ${spec.slice(0, eq)}`;
    const gc: GcTotals = { scavenges: 0, scavengeMs: 0, majors: 0, allocated: 0 };
    const s = samplerArgs(name);
    const agent = await startAgent(server, {
      core: SUT_CORE,
      prefixes: [ITEMS_NS],
      args: ['--cache-ttl', '1h'],
      nodeArgs: s.nodeArgs,
      cli: spec.slice(eq + 1),
      env: s.env,
      onOutput: gcParser(gc),
    });
    await waitReady(agent.adminUrl);
    await readAll(agent.socketPath, paths);
    systems.push({ name, pid: agent.child.pid, socketPath: agent.socketPath, gc, profile: s.profile });
  }
  for (const sys of systems) await measure(sys); // warm-up
  const results = new Map(systems.map((s) => [s.name, [] as Array<Awaited<ReturnType<typeof measure>>>]));
  for (let round = 0; round < rounds; round++) {
    for (const sys of systems) results.get(sys.name)?.push(await measure(sys));
  }
  console.log(`${rounds} rounds × ${requests} requests, ${connections} connections, ${keys} keys; medians (range of bytes/request)`);
  if (sitesDir !== undefined) console.log('(--sites: every process runs an inspector session, which inflates the scavenge pauses and CPU; bytes and counts hold)');
  console.log('| system | bytes allocated / request | scavenges / 100k | scavenge pause ms / 100k | major GCs / 100k | CPU µs / request |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const sys of systems) {
    const rs = results.get(sys.name) ?? [];
    const bytes = rs.map((r) => r.bytes);
    const med = (f: (r: (typeof rs)[number]) => number): number => median(rs.map(f));
    console.log(
      `| ${sys.name} | ${med((r) => r.bytes).toFixed(0)} (${Math.min(...bytes).toFixed(0)}–${Math.max(...bytes).toFixed(0)}) | ${med((r) => r.scavenges).toFixed(0)} | ${med((r) => r.scavengeMs).toFixed(1)} | ${med((r) => r.majors).toFixed(1)} | ${med((r) => r.cpuUs).toFixed(2)} |`,
    );
  }
  if (sitesDir !== undefined) {
    for (const sys of systems) {
      rmSync(sys.profile ?? '', { force: true });
      const written = profileWritten(sys);
      process.kill(sys.pid, 'SIGUSR2');
      await runClosedLoop({ kind: 'socket', socketPath: sys.socketPath }, { connections, amount: requests, paths });
      process.kill(sys.pid, 'SIGUSR2');
      await written;
      const bySite = [...sites(sys.profile ?? '')].sort((a, b) => b[1] - a[1]);
      const total = bySite.reduce((sum, [, bytes]) => sum + bytes, 0);
      const groups = new Map<string, number>();
      for (const [site, bytes] of bySite) groups.set(group(site), (groups.get(group(site)) ?? 0) + bytes);
      console.log(`\n${sys.name}: sampled ${(total / requests).toFixed(0)} B/request; ${[...groups].map(([g, b]) => `${g} ${(b / requests).toFixed(0)}`).join(', ')}`);
      for (const [site, bytes] of bySite.slice(0, 15)) console.log(`  ${(bytes / requests).toFixed(1).padStart(7)} B  ${site}`);
    }
  }
} finally {
  await stopAllChildren();
  await server.stop();
  await rm(dir, { recursive: true, force: true });
}

/** Resolves once the system's sampler wrote its profile (polls the file; bounded). */
async function profileWritten(sys: System): Promise<void> {
  for (let i = 0; i < 600; i++) {
    await delay(100);
    try {
      if (i > 0 && readFileSync(sys.profile ?? '', 'utf8').length > 0) return;
    } catch {
      // not written yet
    }
  }
  throw new Error(`${sys.name}: no heap profile after 60 s`);
}
