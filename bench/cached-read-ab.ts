/**
 * Cached-read A/B (docs/FOOTPRINT-LOG.md, "Cached read, per request"): server
 * CPU per request for bare node:http, the agent's data path alone
 * (bench/refs/data-path.ts, with node's default flags and with the agent's
 * `--max-semi-space-size=4`), bare node:http answering each key's URL with
 * its own body (`bare-http.ts … <keys>`), and the real agent, all on the SUT core, taking
 * turns for `--rounds` rounds of `--requests` autocannon requests each
 * (16 keep-alive connections over the Unix socket, 1 KiB raw bodies). Shorter
 * and more interleaved than the suite's scenarios, so on a shared machine the
 * medians of the ratios settle where a single suite run does not. Its
 * default 200 keys put the agent 0.1–0.2 below the suite's ratio, which
 * holds 10,000 and reads 1,000 a run (the agent's cost of many keys,
 * docs/FOOTPRINT-LOG.md s28): `--keys 10000` for a figure beside the suite's.
 *
 *   taskset -c 1 node bench/cached-read-ab.ts --rounds 5 --requests 30000 [--agent-flag=--memory-saver-mode] [--agent-env=MALLOC_ARENA_MAX=1]
 *
 * `--profile DIR` runs the agents and bare under `--cpu-prof` and stops them
 * cleanly at the end, so their profiles of the measured load land in DIR; `--only bare`
 * measures the agent and the named references alone (names' first words:
 * bare, data, listener-options: bare node:http created with the agent's
 * data-listener options and connection limit; headers, headers-str,
 * headers-flat: bare node:http sending the agent's six headers of a cached
 * 200, as an object with numbers, as an object of strings, as a flat array
 * of strings (bare-http.ts `agent-headers…`); users-plain, users-other,
 * users-http2, users-undici, users-worker: bare node:http at the bin's polymorphic-map
 * limit, alone, after the agent's other kinds of node:events users ran in its
 * process, after HTTP/2 alone, after undici alone, with them all run in a
 * Worker thread of its process: refs/other-users-http.ts). `--agent-variant='FLAGS'` (repeatable) adds a second agent
 * started with those node flags (space-separated) in front of the bin's own,
 * e.g. `--agent-variant=--max-semi-space-size=16` (with `=`: node's parseArgs takes no value that starts with a dash otherwise): the bin's runtime
 * settings against another choice, in the same rounds. `--agent-log DIR`
 * starts every agent with `--log-level debug` and writes its output (the
 * trimmer's `heap trimmed` lines, and `--trace-gc` when given as an agent
 * flag) to DIR/<variant>.log, with a `--- round N` line where each
 * measured round starts. `--perf-record DIR` runs `perf record -k mono -g`
 * on every system during one more, unrecorded round (DIR/<system>.data); with the
 * agents started with `--perf-prof --perf-prof-path=DIR
 * --interpreted-frames-native-stack` (`--agent-flag`, and in the variant),
 * `perf inject --jit -i X.data -o X.jit.data` names JavaScript frames by
 * tier even after a trim moved or dropped code (docs/FOOTPRINT-LOG.md,
 * "Footprint": how the trimmer's after-effect was found).
 * `--client lean` (the default) drives the load with the suite's lean
 * closed-loop client (lib/lean-load.ts), so every server is saturated and
 * CPU per request is the suite's "at saturation" figure; `--client
 * autocannon` keeps the older, client-bound load (each wake-up included).
 * `--agent-cli=NAME=PATH` (repeatable) adds an agent started from another
 * build's bin (e.g. a worktree of the commit before a change, built, at
 * `…/dist/cli/main.js`): an A/B of two builds in the same rounds;
 * `--agent-cli='NAME=PATH FLAGS'` starts that bin with node flags in front
 * (as an operator would), so one build with and without a flag compare
 * compiled against compiled.
 * With two or more `--agent-cli` builds, each later one is also paired with
 * the first, round by round (`mine vs base`).
 * Every system but the plain agent also gets "vs agent per round": its
 * CPU per request over the plain agent's in the same round, median and range
 * over the rounds (the figure to judge a few-percent change by); `--versus
 * NAME` takes that column against another system (e.g. `users-plain`).
 * `--transport tcp` drives every agent through its 127.0.0.1 listener with
 * the pod token (the suite's cached-read-tcp) and the bare-http.ts
 * references over loopback TCP (the other references are socket-only and
 * left out); two more systems then split what TCP costs: `bare-token`, the
 * bare TCP server sent the same token header (which it ignores: what
 * parsing the header costs node:http), and `agent-socket`, the plain agent's
 * own process read over its Unix socket in the same rounds.
 * Each system's line of the split also gives the share of the SUT core other
 * processes took during its rounds (/proc/stat less its own CPU): nothing
 * here raises the servers' priority, and a round others shared pulls the
 * ratios towards 1 (docs/FOOTPRINT-LOG.md, s28), so read a figure with
 * more than a few percent there as contended.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, readdirSync, readFileSync, type WriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { itemPath, ITEMS_NS, readAll, seedRange } from './lib/context.ts';
import { runAutocannon, type Target } from './lib/load.ts';
import { runClosedLoop } from './lib/lean-load.ts';
import { CLK_TCK, cpuSeconds, startChild, stopAllChildren, SUT_CORE } from './lib/proc.ts';
import { ServerClient, startAgent, startServer, waitReady } from './lib/stack.ts';
import { median } from './lib/stats.ts';
import { coreBusySeconds } from './lib/schedstat.ts';
import { benchArgs, envPairs, wholeNumber } from './lib/args.ts';
import { HEADERS } from '../src/shared/protocol-constants.ts';

const values = benchArgs('Usage: node bench/cached-read-ab.ts [--rounds 5] [--requests 30000] [--keys 200] [--connections 16] [--agent-flag=NODE_FLAG …] [--agent-env=KEY=value …] [--agent-variant=\'FLAGS\' …] [--agent-cli="NAME=PATH [NODE_FLAGS]" …] [--client lean|autocannon] [--transport socket|tcp] [--profile DIR] [--agent-log DIR] [--perf-record DIR] [--only bare,data] [--versus users-plain]', {
  rounds: { type: 'string', default: '5' },
  requests: { type: 'string', default: '30000' },
  keys: { type: 'string', default: '200' },
  connections: { type: 'string', default: '16' },
  /** A node flag for the agent, in front of the bin's own (repeatable), e.g. --agent-flag=--memory-saver-mode. */
  'agent-flag': { type: 'string', multiple: true },
  /** An environment variable for the agent (repeatable), e.g. --agent-env=MALLOC_ARENA_MAX=1; the bin keeps one that is set. */
  'agent-env': { type: 'string', multiple: true },
  'agent-variant': { type: 'string', multiple: true },
  'agent-cli': { type: 'string', multiple: true },
  client: { type: 'string', default: 'lean' },
  transport: { type: 'string', default: 'socket' },
  profile: { type: 'string' },
  'agent-log': { type: 'string' },
  'perf-record': { type: 'string' },
  only: { type: 'string' },
  /** The system (first word of its name) the per-round ratio column is taken against; the plain agent unless given. */
  versus: { type: 'string', default: 'agent' },
});
const agentLog = values['agent-log'];
const perfDir = values['perf-record'];
if (perfDir !== undefined) mkdirSync(perfDir, { recursive: true });
const PERF_ATTACH_MS = 200;
if (agentLog !== undefined) mkdirSync(agentLog, { recursive: true });
/** Each agent's log file (`--agent-log`), by system name. */
const logs = new Map<string, WriteStream>();
const rounds = wholeNumber('rounds', values.rounds);
const requests = wholeNumber('requests', values.requests);
const keys = wholeNumber('keys', values.keys);
const connections = wholeNumber('connections', values.connections);
if (values.client !== 'lean' && values.client !== 'autocannon') throw new Error(`--client is lean or autocannon, got ${values.client}`);
if (values.transport !== 'socket' && values.transport !== 'tcp') throw new Error(`--transport is socket or tcp, got ${values.transport}`);
const tcp = values.transport === 'tcp';
const runLoad = values.client === 'lean' ? runClosedLoop : runAutocannon;
const agentEnv = envPairs(values['agent-env'] ?? []);
const only = values.only?.split(',');
const wanted = (name: string): boolean => only === undefined || only.includes(name.split(/[ ,]/)[0] ?? '');
const REFS = fileURLToPath(new URL('./refs/', import.meta.url));

interface System {
  readonly name: string;
  readonly pid: number;
  readonly target: Target;
}

/** What the load client sends the agent over TCP besides the request line: the token header, as the suite's cached-read-tcp. */
const tokenHeaders = (token: string): Record<string, string> => ({ [HEADERS.podToken]: token });

const dir = await mkdtemp(join(tmpdir(), 'csb-ab-'));
const systems: System[] = [];
const paths = Array.from({ length: keys }, (_, i) => itemPath(ITEMS_NS, i));

/** The reference processes, stopped with SIGTERM at the end so a profiled one writes its profile. */
const references: Array<{ stop(): Promise<void> }> = [];
async function reference(name: string, nodeArgs: readonly string[], script: string, extra: readonly string[]): Promise<void> {
  if (!wanted(name)) return;
  // Over TCP only bare-http.ts (which takes `tcp` for its socket path) has a counterpart; the others listen on a socket.
  if (tcp && script !== 'bare-http.ts') return;
  const socketPath = join(dir, `${name}.sock`);
  const child = startChild(name, process.execPath, [...nodeArgs, join(REFS, script), tcp ? 'tcp' : socketPath, ...extra], { core: SUT_CORE });
  references.push(child);
  const line = await child.waitForLine((l) => l.startsWith('listening '));
  const url = `http://127.0.0.1:${line.slice('listening '.length).trim()}`;
  systems.push({ name, pid: child.pid, target: tcp ? { kind: 'tcp', url } : { kind: 'socket', socketPath } });
  if (tcp && name === 'bare node:http' && wanted('bare-token')) {
    // The same process, sent a token header it ignores (a random one of the pod token's length).
    systems.push({ name: 'bare-token node:http, token header sent', pid: child.pid, target: { kind: 'tcp', url, headers: tokenHeaders(randomBytes(32).toString('base64url')) } });
  }
}

/** `perf record` attached to the system until the returned function stops it (SIGINT, as perf expects). */
async function recordPerf(sys: System, dir: string): Promise<() => Promise<void>> {
  const file = join(dir, `${sys.name.replace(/[^a-z0-9=.-]+/gi, '_')}.data`);
  const perf = spawn('perf', ['record', '-k', 'mono', '-g', '-e', 'cpu-clock', '-o', file, '-p', String(sys.pid)], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => {
    perf.once('exit', () => resolve());
    perf.once('error', (err) => {
      console.error(`perf record: ${err.message}`);
      resolve();
    });
  });
  // perf needs a moment to attach before the load starts.
  await new Promise((resolve) => setTimeout(resolve, PERF_ATTACH_MS));
  return async () => {
    perf.kill('SIGINT');
    await exited;
  };
}

/** Per system, each round's CPU per request split as [main thread user, main thread kernel, other threads user, other threads kernel] (µs). */
const splits = new Map<string, number[][]>();
/** CPU seconds of the process split by thread and mode (from /proc/PID/task/TID/stat): where a growth with connections lands. */
function threadSplit(pid: number): number[] {
  const out = [0, 0, 0, 0];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch {
      continue; // a thread that ended between the listing and the read
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const base = tid === String(pid) ? 0 : 2;
    out[base] = (out[base] ?? 0) + Number(fields[11]) / CLK_TCK;
    out[base + 1] = (out[base + 1] ?? 0) + Number(fields[12]) / CLK_TCK;
  }
  return out;
}

/** Per system, each round's share of the SUT core that other processes took (%): a contended round's ratio is pulled towards 1 (s28). */
const othersOnCore = new Map<string, number[]>();

async function measure(sys: System, perfDir?: string): Promise<{ cpuUs: number; rps: number }> {
  const stopPerf = perfDir === undefined ? undefined : await recordPerf(sys, perfDir);
  const core0 = coreBusySeconds(SUT_CORE);
  const cpu0 = cpuSeconds(sys.pid);
  const split0 = threadSplit(sys.pid);
  const run = await runLoad(sys.target, { connections, amount: requests, paths });
  const cpuS = cpuSeconds(sys.pid) - cpu0;
  const cpuUs = (cpuS / run.requests) * 1e6;
  const others = othersOnCore.get(sys.name) ?? [];
  others.push(Math.max(0, ((coreBusySeconds(SUT_CORE) - core0 - cpuS) / run.seconds) * 100));
  othersOnCore.set(sys.name, others);
  const split1 = threadSplit(sys.pid);
  const parts = splits.get(sys.name) ?? [];
  parts.push(split1.map((v, i) => ((v - (split0[i] ?? 0)) / run.requests) * 1e6));
  splits.set(sys.name, parts);
  await stopPerf?.();
  if (run.non2xx || run.errors) throw new Error(`${sys.name}: ${run.non2xx} non-2xx, ${run.errors} errors`);
  return { cpuUs, rps: run.rps };
}

const server = await startServer(undefined);
const client = new ServerClient(server);
const agents: Array<Awaited<ReturnType<typeof startAgent>>> = [];
try {
  const profileFlags = values.profile === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${values.profile}`];
  // Bare too (its SIGTERM closes the server, so node writes the profile): which functions grow with connections in each.
  await reference('bare node:http', profileFlags, 'bare-http.ts', ['1024']);
  await reference(`bare node:http, ${keys} bodies`, [], 'bare-http.ts', ['1024', String(keys)]);
  await reference('listener-options bare node:http', [], 'bare-http.ts', ['1024', '0', 'agent-listener']);
  await reference('headers bare node:http, agent headers', [], 'bare-http.ts', ['1024', '0', 'agent-headers']);
  await reference('headers-str bare node:http, agent headers as strings', [], 'bare-http.ts', ['1024', '0', 'agent-headers-str']);
  await reference('headers-flat bare node:http, agent headers flat', [], 'bare-http.ts', ['1024', '0', 'agent-headers-flat']);
  await reference('users-plain node:http', ['--max-valid-polymorphic-map-count=16'], 'other-users-http.ts', ['plain']);
  await reference('users-other node:http', ['--max-valid-polymorphic-map-count=16'], 'other-users-http.ts', ['other-users']);
  await reference('users-http2 node:http', ['--max-valid-polymorphic-map-count=16'], 'other-users-http.ts', ['http2']);
  await reference('users-undici node:http', ['--max-valid-polymorphic-map-count=16'], 'other-users-http.ts', ['undici']);
  await reference('users-worker node:http', ['--max-valid-polymorphic-map-count=16'], 'other-users-http.ts', ['worker']);
  await reference('data path', [], 'data-path.ts', [String(keys)]);
  await reference('data path, --max-semi-space-size=4', ['--max-semi-space-size=4'], 'data-path.ts', [String(keys)]);
  await seedRange(client, ITEMS_NS, 0, keys, 120_000);
  const variants: Array<[string, string[], string?]> = [
    ['agent', [...(values['agent-flag'] ?? []), ...profileFlags]],
    ...(values['agent-variant'] ?? []).map((flags): [string, string[]] => [`agent ${flags}`, flags.split(' ').filter(Boolean)]),
    ...(values['agent-cli'] ?? []).map((spec): [string, string[], string] => {
      const eq = spec.indexOf('=');
      if (eq <= 0) throw new Error(`--agent-cli takes NAME=PATH (the bin of another build), got ${spec}`);
      const [cli = '', ...cliFlags] = spec.slice(eq + 1).split(' ').filter(Boolean);
      return [`agent ${spec.slice(0, eq)}`, [...(values['agent-flag'] ?? []), ...profileFlags, ...cliFlags], cli];
    }),
  ];
  for (const [name, nodeArgs, cli] of variants) {
    const log = agentLog === undefined ? undefined : createWriteStream(join(agentLog, `${name.replace(/[^a-z0-9=.-]+/gi, '_')}.log`));
    if (log !== undefined) logs.set(name, log);
    const agent = await startAgent(server, {
      core: SUT_CORE,
      prefixes: [ITEMS_NS],
      args: ['--cache-ttl', '1h', ...(log === undefined ? [] : ['--log-level', 'debug'])],
      nodeArgs,
      ...(cli === undefined ? {} : { cli }),
      env: agentEnv,
      onOutput: log === undefined ? undefined : (chunk) => log.write(chunk),
    });
    agents.push(agent);
    await waitReady(agent.adminUrl);
    await readAll(agent.socketPath, paths);
    const socket: Target = { kind: 'socket', socketPath: agent.socketPath };
    systems.push({ name, pid: agent.child.pid, target: tcp ? { kind: 'tcp', url: agent.httpUrl, headers: tokenHeaders(agent.podToken) } : socket });
    if (tcp && name === 'agent' && wanted('agent-socket')) systems.push({ name: 'agent-socket, the same agent over its socket', pid: agent.child.pid, target: socket });
  }
  const mark = (phase: string): void => {
    for (const log of logs.values()) log.write(`--- ${phase} ${new Date().toISOString()}\n`);
  };
  // Before the rounds, not after them: a --versus naming no system would otherwise quietly give the ratios against the agent.
  const versusName = systems.find((s) => s.name === values.versus || s.name.split(/[ ,]/)[0] === values.versus)?.name;
  if (values.versus !== 'agent' && versusName === undefined) {
    throw new Error(`--versus ${values.versus} names none of the systems measured (${systems.map((s) => s.name.split(/[ ,]/)[0]).join(', ')}): name one of them, or leave --versus out for the plain agent`);
  }
  mark('warm-up');
  for (const sys of systems) await measure(sys); // warm-up, unrecorded
  const cpu = new Map<string, number[]>(systems.map((s) => [s.name, []]));
  const rps = new Map<string, number[]>(systems.map((s) => [s.name, []]));
  for (let round = 0; round < rounds; round++) {
    mark(`round ${round + 1}`);
    for (const sys of systems) {
      const r = await measure(sys);
      cpu.get(sys.name)?.push(r.cpuUs);
      rps.get(sys.name)?.push(r.rps);
    }
  }
  if (perfDir !== undefined) {
    // One more round, unrecorded, so perf's sampling does not count in the figures.
    mark('perf round');
    for (const sys of systems) await measure(sys, perfDir);
  }
  mark('end');
  /**
   * Each round's CPU per request over the plain agent's in the same round:
   * the load others put on the machine moves both alike, so the median of
   * these pairs settles on a flag's few-percent effect where the medians of
   * the absolute figures (±15 % across rounds) do not. `--versus` takes them
   * against another system instead (references against each other).
   */
  const pairedRatio = (c: readonly number[], agent: readonly number[] | undefined): string => {
    if (agent === undefined || c === agent) return '';
    const pairs = c.map((v, i) => v / (agent[i] ?? Number.NaN));
    return `  vs ${(versusName ?? 'agent').split(/[ ,]/)[0] ?? ''} per round ${median(pairs).toFixed(3)}× (${Math.min(...pairs).toFixed(3)}–${Math.max(...pairs).toFixed(3)})`;
  };
  const bareCpu = median(cpu.get('bare node:http') ?? [Number.NaN]);
  const bareRps = median(rps.get('bare node:http') ?? [Number.NaN]);
  console.log(`${rounds} rounds × ${requests} requests, ${connections} connections over ${tcp ? 'loopback TCP (agents with the pod token)' : 'the Unix socket'}, ${keys} keys, ${values.client} client; medians (range)`);
  for (const sys of systems) {
    const c = cpu.get(sys.name) ?? [];
    const r = rps.get(sys.name) ?? [];
    console.log(
      `${sys.name.padEnd(36)} CPU ${median(c).toFixed(1)} µs/req (${Math.min(...c).toFixed(1)}–${Math.max(...c).toFixed(1)}) ${(median(c) / bareCpu).toFixed(2)}×` +
        `  req/s ${median(r).toFixed(0)} ${(median(r) / bareRps).toFixed(2)}×` +
        pairedRatio(c, cpu.get(versusName ?? 'agent')),
    );
  }
  // Where each system's CPU goes, so a growth with --connections can be placed (kernel, main thread's JavaScript, GC helpers).
  for (const sys of systems) {
    const rows = splits.get(sys.name)?.slice(1) ?? []; // the first is the warm-up
    const col = (i: number): string => median(rows.map((r) => r[i] ?? Number.NaN)).toFixed(2);
    const others = othersOnCore.get(sys.name)?.slice(1, rounds + 1) ?? [];
    console.log(
      `${sys.name.padEnd(36)} µs/req main thread user ${col(0)} kernel ${col(1)}, other threads user ${col(2)} kernel ${col(3)}; other processes on the SUT core ${median(others).toFixed(1)} % (max ${Math.max(...others).toFixed(1)})`,
    );
  }
  // Each other agent against `agent` round by round: the machine's drift between rounds cancels out.
  const own = cpu.get('agent') ?? [];
  for (const sys of systems) {
    if (!sys.name.startsWith('agent ')) continue;
    const paired = (cpu.get(sys.name) ?? []).map((c, i) => c / (own[i] ?? Number.NaN));
    console.log(`${sys.name.padEnd(36)} CPU vs agent, per round: ${median(paired).toFixed(3)}× (${Math.min(...paired).toFixed(3)}–${Math.max(...paired).toFixed(3)})`);
  }
  // Two builds (--agent-cli) against each other, round by round: the A/B of a change, without the source agent in between.
  const builds = systems.filter((s) => s.name.startsWith('agent ') && (values['agent-cli'] ?? []).some((spec) => s.name === `agent ${spec.slice(0, spec.indexOf('='))}`));
  for (let i = 1; i < builds.length; i++) {
    const [a, b] = [builds[i], builds[0]];
    if (a === undefined || b === undefined) continue;
    const base = cpu.get(b.name) ?? [];
    const paired = (cpu.get(a.name) ?? []).map((c, r) => c / (base[r] ?? Number.NaN));
    console.log(`${a.name} vs ${b.name}, CPU per round: ${median(paired).toFixed(3)}× (${Math.min(...paired).toFixed(3)}–${Math.max(...paired).toFixed(3)})`);
  }
} finally {
  // A clean stop (SIGTERM) lets --cpu-prof write the agent's profile.
  for (const agent of agents) await agent.stop();
  for (const ref of references) await ref.stop();
  for (const log of logs.values()) log.end();
  await client.close();
  await stopAllChildren();
  await server.stop().catch(() => {});
  await rm(dir, { recursive: true, force: true });
}
