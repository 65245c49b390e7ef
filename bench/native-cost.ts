/**
 * What a cached read costs at the system level, per request, for bare
 * node:http (refs/bare-http.ts, also with the agent's listener options and
 * connection limit: `agent-listener`) and the agent (this build's `dist/`, plus any
 * `--agent-cli=NAME=PATH`): docs/FOOTPRINT-LOG.md,
 * "s16". Each system, pinned to the SUT core, gets a warm-up round, then
 *
 *  1. a round under `perf stat` (software events: task-clock, context
 *     switches, migrations, page faults) with each thread's CPU and context
 *     switches from /proc/PID/task/TID/{stat,status} before and after,
 *     grouped by thread name;
 *  2. a round under `strace -f -c` (every thread's syscalls by name; strace
 *     slows the process, so this round's CPU is not a figure).
 *
 * Everything is divided by the round's request count. Needs `perf` and
 * `strace` (root, or a perf_event_paranoid that allows attaching).
 *
 *   flock /tmp/bench.lock taskset -c 1 node bench/native-cost.ts --requests 100000 [--connections 16] [--agent-cli=base=/work/wt/base/dist/cli/main.js] [--keep DIR]
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { itemPath, ITEMS_NS, readAll, seedRange } from './lib/context.ts';
import { runClosedLoop } from './lib/lean-load.ts';
import { startChild, stopAllChildren, SUT_CORE } from './lib/proc.ts';
import { DIST_CLI, ServerClient, startAgent, startServer, waitReady } from './lib/stack.ts';
import { benchArgs, wholeNumber } from './lib/args.ts';

const values = benchArgs('Usage: node bench/native-cost.ts [--requests 100000] [--keys 200] [--connections 16] [--agent-cli=NAME=PATH …] [--agent-flag=NODE_FLAG …] [--keep DIR]', {
  requests: { type: 'string', default: '100000' },
  keys: { type: 'string', default: '200' },
  connections: { type: 'string', default: '16' },
  'agent-cli': { type: 'string', multiple: true },
  'agent-flag': { type: 'string', multiple: true },
  /** Keep strace's and perf's raw output in DIR. */
  keep: { type: 'string' },
});
const requests = wholeNumber('requests', values.requests);
const keys = wholeNumber('keys', values.keys);
const connections = wholeNumber('connections', values.connections);
const CLK_TCK = 100;
/** perf and strace need a moment to attach before the load starts. */
const ATTACH_MS = 300;
const PERF_EVENTS = ['task-clock', 'context-switches', 'cpu-migrations', 'page-faults', 'minor-faults', 'major-faults'];

interface System {
  readonly name: string;
  readonly pid: number;
  readonly socketPath: string;
}

interface ThreadSample {
  readonly name: string;
  readonly user: number;
  readonly sys: number;
  readonly switches: number;
}

/** Each live thread's CPU ticks and context switches (voluntary + involuntary), by TID. */
function threads(pid: number): Map<string, ThreadSample> {
  const out = new Map<string, ThreadSample>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      const switches = Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0) + Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0);
      out.set(tid, { name, user: Number(fields[11]), sys: Number(fields[12]), switches });
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out;
}

/** Per thread name: [threads, user CPU µs per request, system CPU µs per request, context switches per request]. */
function threadDelta(before: Map<string, ThreadSample>, after: Map<string, ThreadSample>, count: number): Map<string, [number, number, number, number]> {
  const out = new Map<string, [number, number, number, number]>();
  const us = (ticks: number): number => ((ticks / CLK_TCK) * 1e6) / count;
  for (const [tid, a] of after) {
    const b = before.get(tid) ?? { user: 0, sys: 0, switches: 0 };
    const row = out.get(a.name) ?? [0, 0, 0, 0];
    row[0] += 1;
    row[1] += us(a.user - b.user);
    row[2] += us(a.sys - b.sys);
    row[3] += (a.switches - b.switches) / count;
    out.set(a.name, row);
  }
  return out;
}

/** Starts `cmd` attached to the process and returns a function that stops it with SIGINT and waits for it. */
async function attach(cmd: string, args: readonly string[]): Promise<() => Promise<string>> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (err) => {
      stderr += err.message;
      resolve();
    });
  });
  await new Promise((resolve) => setTimeout(resolve, ATTACH_MS));
  return async () => {
    child.kill('SIGINT');
    await exited;
    return stderr;
  };
}

const paths = Array.from({ length: keys }, (_, i) => itemPath(ITEMS_NS, i));

async function load(sys: System): Promise<number> {
  const run = await runClosedLoop({ kind: 'socket', socketPath: sys.socketPath }, { connections, amount: requests, paths });
  if (run.non2xx || run.errors) throw new Error(`${sys.name}: ${run.non2xx} non-2xx, ${run.errors} errors`);
  return run.requests;
}

/** `perf stat -x,` output: event name → count. */
function perfCounts(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [value, , event] = line.split(',');
    if (event !== undefined && value !== undefined && value !== '' && !Number.isNaN(Number(value))) out.set(event, Number(value));
  }
  return out;
}

/** `strace -c` summary: syscall → calls. */
function straceCounts(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$/.exec(line);
    if (m && m[2] !== 'total') out.set(m[2] as string, Number(m[1]));
  }
  return out;
}

const dir = values.keep ?? (await mkdtemp(join(tmpdir(), 'csb-native-')));
mkdirSync(dir, { recursive: true });
const server = await startServer(undefined);
const client = new ServerClient(server);
const agents: Array<Awaited<ReturnType<typeof startAgent>>> = [];
const systems: System[] = [];
try {
  const bareSock = join(dir, 'bare.sock');
  const bare = startChild('bare', process.execPath, [fileURLToPath(new URL('./refs/bare-http.ts', import.meta.url)), bareSock, '1024'], { core: SUT_CORE });
  await bare.waitForLine((l) => l.startsWith('listening '));
  systems.push({ name: 'bare node:http', pid: bare.pid, socketPath: bareSock });
  const listenerSock = join(dir, 'listener.sock');
  const listener = startChild('bare-listener', process.execPath, [fileURLToPath(new URL('./refs/bare-http.ts', import.meta.url)), listenerSock, '1024', '0', 'agent-listener'], { core: SUT_CORE });
  await listener.waitForLine((l) => l.startsWith('listening '));
  systems.push({ name: "bare node:http, the agent's listener options", pid: listener.pid, socketPath: listenerSock });
  await seedRange(client, ITEMS_NS, 0, keys, 120_000);
  const variants: Array<[string, string]> = [
    ['agent', DIST_CLI],
    ...(values['agent-cli'] ?? []).map((spec): [string, string] => {
      const eq = spec.indexOf('=');
      if (eq <= 0) throw new Error(`--agent-cli takes NAME=PATH (the bin of another build), got ${spec}`);
      return [`agent ${spec.slice(0, eq)}`, spec.slice(eq + 1)];
    }),
  ];
  for (const [name, cli] of variants) {
    const agent = await startAgent(server, { core: SUT_CORE, prefixes: [ITEMS_NS], args: ['--cache-ttl', '1h'], nodeArgs: values['agent-flag'] ?? [], cli });
    agents.push(agent);
    await waitReady(agent.adminUrl);
    await readAll(agent.socketPath, paths);
    systems.push({ name, pid: agent.child.pid, socketPath: agent.socketPath });
  }
  for (const sys of systems) await load(sys); // warm-up
  const file = (sys: System, ext: string): string => join(dir, `${sys.name.replace(/[^a-z0-9=.-]+/gi, '_')}.${ext}`);
  for (const sys of systems) {
    const t0 = threads(sys.pid);
    const stopPerf = await attach('perf', ['stat', '-x,', '-e', PERF_EVENTS.join(','), '-o', file(sys, 'perf'), '-p', String(sys.pid)]);
    const n = await load(sys);
    const t1 = threads(sys.pid);
    await stopPerf();
    const perf = perfCounts(await readFile(file(sys, 'perf'), 'utf8'));
    const stopStrace = await attach('strace', ['-f', '-c', '-o', file(sys, 'strace'), '-p', String(sys.pid)]);
    const m = await load(sys);
    await stopStrace();
    const calls = straceCounts(await readFile(file(sys, 'strace'), 'utf8'));
    console.log(`\n## ${sys.name} (pid ${sys.pid}), ${n} requests, ${connections} connections`);
    // task-clock is in milliseconds (msec) with -x.
    console.log(`perf: task-clock ${(((perf.get('task-clock') ?? Number.NaN) * 1e3) / n).toFixed(2)} µs/req` + PERF_EVENTS.slice(1).map((e) => `, ${e} ${((perf.get(e) ?? Number.NaN) / n).toFixed(4)}`).join(''));
    for (const [tname, [count, user, sys, sw]] of threadDelta(t0, t1, n)) {
      if (user + sys > 0 || sw > 0) console.log(`thread ${tname.padEnd(18)} ×${count}  CPU ${(user + sys).toFixed(2)} µs/req (user ${user.toFixed(2)}, sys ${sys.toFixed(2)})  switches ${sw.toFixed(4)}/req`);
    }
    const sorted = [...calls].sort((a, b) => b[1] - a[1]);
    console.log(`syscalls (${m} requests): total ${([...calls.values()].reduce((a, b) => a + b, 0) / m).toFixed(3)}/req; ` + sorted.map(([k, v]) => `${k} ${(v / m).toFixed(3)}`).join(', '));
  }
} finally {
  for (const agent of agents) await agent.stop();
  await client.close();
  await stopAllChildren();
  await server.stop().catch(() => {});
  if (values.keep === undefined) await rm(dir, { recursive: true, force: true });
}
