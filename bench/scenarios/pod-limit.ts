/**
 * Pod limit: the agent under a real memory limit, the injector's default
 * (`config-sidecar.io/memory-limit`) and each further limit of the profile
 * (128Mi in the full one), with default flags, loaded with N × 1 KiB
 * entries read through it and M SSE clients; one fresh agent per limit. The bench makes a transient
 * memory cgroup (v2 `memory.max` where the host has the unified hierarchy, v1
 * `memory.limit_in_bytes` otherwise; swap off) and starts the agent inside it,
 * so the agent detects the limit itself (src/agent/memory-limit.ts) as in a
 * pod. Needs root; otherwise the scenario is not run, with the reason shown.
 *
 * Pass: no OOM kill, peak RSS ≤ 80 % of the limit, and reads keep answering.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseQuantity } from '../../src/webhook/quantity.ts';
import { DEFAULT_MEMORY_LIMIT } from '../../src/webhook/annotations.ts';
import { Client } from 'undici';
import { ITEMS_NS, itemPath, type Context } from '../lib/context.ts';
import { memoryStatus, rssBytes, SUT_CORE, type MemoryStatus } from '../lib/proc.ts';
import { watchSse, type SseWatcher } from '../lib/sse.ts';
import { metric, startAgent, waitReady } from '../lib/stack.ts';
import type { Row, ScenarioResult, TargetCheck } from '../lib/types.ts';

const MiB = 2 ** 20;
const TARGET_RATIO = 0.8;
const SAMPLE_MS = 100;
/** Reads after the load that must all answer 200. */
const CHECK_READS = 1_000;
/**
 * Readers, each its own connection (a pipelined connection is answered in
 * order, so one miss would hold up the requests behind it), and requests in
 * flight on each.
 */
const LOAD_CONNECTIONS = 8;
const LOAD_PIPELINING = 4;
const PROGRESS_CHUNK = 5_000;
/**
 * Reading 100k items through the agent under both limits takes about this long
 * on 2 shared cores: ~60 s each once the server's key fetch stopped reading
 * every current version (2026-11-30), with room for a loaded machine.
 */
const LARGE_LOAD_NEEDS_S = 420;

/** Times a read answered 503 or 504 is asked again (as a client does on a retryable error), with RETRY_BASE_MS × attempt between. */
const MAX_RETRIES = 5;
const RETRY_BASE_MS = 250;

/** Answers the load met: retried 503/504s (the control plane too slow on a loaded machine) and reset connections, not failures. */
interface ReadTally {
  retried: number;
  /**
   * Connections the agent closed before answering: while the refused SSE
   * clients' sockets are still closing the agent is at its connection cap and
   * sheds the oldest connection without a request (src/shared/connection-limit.ts).
   */
  reset: number;
}

/** A request on a connection the agent shed: a client reconnects and asks again. */
function isReset(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE';
}

/**
 * Reads every path once over LOAD_CONNECTIONS connections; a 503/504 is
 * retried up to MAX_RETRIES times (counted), anything else but 200 throws.
 */
async function readParallel(socketPath: string, paths: readonly string[], tally: ReadTally): Promise<void> {
  const share = Math.ceil(paths.length / LOAD_CONNECTIONS);
  const reader = async (mine: readonly string[]): Promise<void> => {
    const client = new Client('http://localhost', { socketPath, pipelining: LOAD_PIPELINING });
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < mine.length) {
        const path = mine[next++] as string;
        for (let attempt = 0; ; attempt++) {
          let res;
          try {
            res = await client.request({ method: 'GET', path, headersTimeout: 30_000 });
            await res.body.dump();
          } catch (err) {
            if (!isReset(err) || attempt >= MAX_RETRIES) throw err;
            tally.reset += 1;
            continue;
          }
          if (res.statusCode === 200) break;
          if ((res.statusCode !== 503 && res.statusCode !== 504) || attempt >= MAX_RETRIES) throw new Error(`reading ${path}: ${res.statusCode}${attempt > 0 ? ` after ${attempt} retries` : ''}`);
          tally.retried += 1;
          await new Promise((r) => setTimeout(r, RETRY_BASE_MS * (attempt + 1)));
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: LOAD_PIPELINING }, worker));
    } finally {
      await client.close();
    }
  };
  await Promise.all(Array.from({ length: LOAD_CONNECTIONS }, (_, i) => reader(paths.slice(i * share, (i + 1) * share))));
}

interface Cgroup {
  readonly version: 1 | 2;
  readonly dir: string;
  usage(): number;
  peak(): number | undefined;
  oomKills(): number;
  remove(): void;
}

function readNumber(path: string): number | undefined {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

/** A transient memory cgroup with `limit` bytes and no swap, or the reason there cannot be one. */
function makeCgroup(limit: number): Cgroup | string {
  if (process.getuid?.() !== 0) return 'needs root to create a memory cgroup';
  const name = `csb-pod-limit-${process.pid}`;
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    const dir = join('/sys/fs/cgroup', name);
    try {
      const controllers = readFileSync('/sys/fs/cgroup/cgroup.subtree_control', 'utf8');
      if (!controllers.includes('memory')) writeFileSync('/sys/fs/cgroup/cgroup.subtree_control', '+memory');
      mkdirSync(dir);
      writeFileSync(join(dir, 'memory.max'), String(limit));
      if (existsSync(join(dir, 'memory.swap.max'))) writeFileSync(join(dir, 'memory.swap.max'), '0');
    } catch (err) {
      return `cannot make a cgroup v2 memory cgroup at ${dir}: ${(err as Error).message}`;
    }
    return {
      version: 2,
      dir,
      usage: () => readNumber(join(dir, 'memory.current')) ?? Number.NaN,
      peak: () => readNumber(join(dir, 'memory.peak')),
      oomKills: () => Number(/oom_kill (\d+)/.exec(readFileSync(join(dir, 'memory.events'), 'utf8'))?.[1] ?? 0),
      remove: () => rmdirSync(dir),
    };
  }
  const dir = join('/sys/fs/cgroup/memory', name);
  try {
    mkdirSync(dir);
    writeFileSync(join(dir, 'memory.limit_in_bytes'), String(limit));
    // Swap would hide an overrun; the memsw file exists only with swap accounting.
    if (existsSync(join(dir, 'memory.memsw.limit_in_bytes'))) writeFileSync(join(dir, 'memory.memsw.limit_in_bytes'), String(limit));
    if (existsSync(join(dir, 'memory.swappiness'))) writeFileSync(join(dir, 'memory.swappiness'), '0');
  } catch (err) {
    return `cannot make a cgroup v1 memory cgroup at ${dir}: ${(err as Error).message}`;
  }
  return {
    version: 1,
    dir,
    usage: () => readNumber(join(dir, 'memory.usage_in_bytes')) ?? Number.NaN,
    peak: () => readNumber(join(dir, 'memory.max_usage_in_bytes')),
    oomKills: () => Number(/oom_kill (\d+)/.exec(readFileSync(join(dir, 'memory.oom_control'), 'utf8'))?.[1] ?? 0),
    remove: () => rmdirSync(dir),
  };
}

interface LimitRun {
  readonly rows: Row[];
  readonly targets: TargetCheck[];
  readonly notes: string[];
  readonly extra: Record<string, number>;
}

export async function podLimit(ctx: Context): Promise<Omit<ScenarioResult, 'seconds'>> {
  const limits = [...new Set([DEFAULT_MEMORY_LIMIT, ...ctx.profile.podLimitMemory])];
  const sseClients = ctx.profile.podLimitSseClients;
  const setup = `the agent compiled to JavaScript, default flags (TTL 1 h), in a transient memory cgroup limited to the injector's default ${DEFAULT_MEMORY_LIMIT}${limits.length > 1 ? ` and then to ${limits.slice(1).join(', ')} (a fresh agent each)` : ''}; ${sseClients} SSE clients, then every one of N × 1 KiB items read through it`;
  const runs: LimitRun[] = [];
  for (const quantity of limits) {
    const limit = parseQuantity(quantity);
    if (limit === undefined) throw new Error(`pod-limit: ${quantity} is not a memory quantity`);
    const run = await underLimit(ctx, quantity, limit, sseClients);
    if (typeof run === 'string') return { id: 'pod-limit', title: 'Pod limit: the agent under a real memory limit', status: 'not-run', reason: run, setup, rows: [], targets: [], notes: [`Not run: ${run}.`] };
    runs.push(run);
  }
  return {
    id: 'pod-limit',
    title: 'Pod limit: the agent under a real memory limit',
    status: 'ok',
    setup,
    rows: runs.flatMap((r) => r.rows),
    targets: runs.flatMap((r) => r.targets),
    notes: runs.flatMap((r) => r.notes),
    extra: Object.fromEntries(runs.map((r, i) => [limits[i] as string, r.extra])),
  };
}

/** One fresh agent under `limit` bytes (`quantity` as the annotation writes it); a string when no cgroup can be made. */
async function underLimit(ctx: Context, quantity: string, limit: number, sseClients: number): Promise<LimitRun | string> {
  let count = ctx.profile.podLimitEntries;
  const notes: string[] = [];
  const cgroup = makeCgroup(limit);
  if (typeof cgroup === 'string') return cgroup;
  ctx.onCleanup(async () => {
    try {
      cgroup.remove();
    } catch {
      // Still holding a process that is being killed; the kernel frees an empty cgroup's memory anyway.
    }
  });
  if (count > 10_000 && ctx.secondsLeft() < LARGE_LOAD_NEEDS_S) {
    notes.push(`${count} entries would not fit the suite's time budget (${ctx.secondsLeft().toFixed(0)} s left); loaded 10000 instead.`);
    count = 10_000;
  }
  const { cli } = await ctx.compiledCli();
  const base = await ctx.baseWith(count);
  // The agent joins the cgroup before it execs, so its whole life (start-up, re-exec) is charged there.
  const join_ = `echo $$ > ${cgroup.dir}/cgroup.procs && exec "$@"`;
  const agent = await startAgent(base.server, {
    cli,
    core: SUT_CORE,
    prefixes: ['bench'],
    args: ['--cache-ttl', '1h'],
    wrap: ['/bin/sh', '-c', join_, 'sh'],
  });
  let peakRss = 0;
  let atPeak: MemoryStatus | undefined;
  let peakUsage = 0;
  let samples = 0;
  const sampler = setInterval(() => {
    try {
      const status = memoryStatus(agent.child.pid);
      if (status.vmRss * MiB > peakRss) {
        peakRss = status.vmRss * MiB;
        atPeak = status;
      }
      peakUsage = Math.max(peakUsage, cgroup.usage());
      samples++;
    } catch {
      // The process is gone: the exit (an OOM kill) is reported below.
    }
  }, SAMPLE_MS);
  const watchers: SseWatcher[] = [];
  let accepted = 0;
  let refused = 0;
  let okReads = 0;
  let checkReads = 0;
  let failedReads = 0;
  let killed = false;
  const tally: ReadTally = { retried: 0, reset: 0 };
  let cacheMax = Number.NaN;
  let entries = Number.NaN;
  let heapUsed = Number.NaN;
  let heapTotal = Number.NaN;
  let budgetLine: Record<string, unknown> | undefined;
  try {
    await waitReady(agent.adminUrl);
    budgetLine = JSON.parse(await agent.child.waitForLine((l) => l.includes('"memory budget"'))) as Record<string, unknown>;
    for (let i = 0; i < sseClients; i++) watchers.push(watchSse(agent.socketPath, 'bench'));
    const opened = await Promise.allSettled(watchers.map((w) => w.opened));
    accepted = opened.filter((o) => o.status === 'fulfilled').length;
    refused = opened.length - accepted;
    const started = Date.now();
    // In chunks, so a slow run shows where it is (and what the agent holds) in the log.
    for (let from = 0; from < count; from += PROGRESS_CHUNK) {
      const to = Math.min(count, from + PROGRESS_CHUNK);
      await readParallel(agent.socketPath, Array.from({ length: to - from }, (_, i) => itemPath(ITEMS_NS, from + i)), tally);
      ctx.log(`pod-limit ${quantity}: ${to}/${count} read, RSS ${(rssBytes(agent.child.pid) / MiB).toFixed(1)} MiB, cgroup ${(cgroup.usage() / MiB).toFixed(1)} MiB, ${((Date.now() - started) / 1000).toFixed(0)} s`);
    }
    ctx.log(`pod-limit: ${count} items read through the agent under ${quantity} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    // Reads keep answering after the load: the last items (cached) and the first (evicted, fetched again).
    const half = Math.min(count, CHECK_READS) / 2;
    const check = [...Array.from({ length: Math.ceil(half) }, (_, i) => itemPath(ITEMS_NS, count - 1 - i)), ...Array.from({ length: Math.floor(half) }, (_, i) => itemPath(ITEMS_NS, i))];
    checkReads = check.length;
    try {
      await readParallel(agent.socketPath, check, tally);
      okReads = check.length;
    } catch (err) {
      failedReads = 1;
      notes.push(`A read after the load failed: ${(err as Error).message}`);
    }
    cacheMax = await metric(agent.adminUrl, 'config_sidecar_agent_memory_cache_max_bytes');
    heapUsed = await metric(agent.adminUrl, 'config_sidecar_agent_nodejs_heap_size_used_bytes');
    heapTotal = await metric(agent.adminUrl, 'config_sidecar_agent_nodejs_heap_size_total_bytes');
    entries = await metric(agent.adminUrl, 'config_sidecar_agent_cache_entries');
  } catch (err) {
    notes.push(`The load stopped: ${(err as Error).message.slice(0, 300)}`);
  } finally {
    clearInterval(sampler);
    for (const w of watchers) w.close();
    killed = agent.child.proc.exitCode !== null || agent.child.proc.signalCode !== null;
    await agent.stop();
  }
  const oomKills = cgroup.oomKills();
  const kernelPeak = cgroup.peak();
  try {
    cgroup.remove(); // empty now that the agent is gone; the cleanup hook covers a run cut short
  } catch {
    // left to the cleanup hook
  }
  const peak = Math.max(peakUsage, kernelPeak ?? 0);
  const target = limit * TARGET_RATIO;
  const at = `under ${quantity}`;
  const rows: Row[] = [
    { system: 'agent', metric: `${at}: memory limit (cgroup)`, unit: 'MiB', values: [limit / MiB], better: 'lower' },
    { system: 'agent', metric: `${at}: peak RSS`, unit: 'MiB', values: [peakRss / MiB], better: 'lower' },
    { system: 'agent', metric: `${at}: peak cgroup usage (cgroup v${cgroup.version}, page cache included)`, unit: 'MiB', values: [peak / MiB], better: 'lower' },
    { system: 'agent', metric: `${at}: headroom, 80 % of the limit minus peak RSS`, unit: 'MiB', values: [(target - peakRss) / MiB], better: 'higher' },
    { system: 'agent', metric: `${at}: OOM kills`, unit: 'count', values: [oomKills], better: 'lower' },
  ];
  notes.push(`${at}: ${count} × 1 KiB read; the agent held ${entries} entries under a derived --cache-max-bytes of ${(cacheMax / MiB).toFixed(1)} MiB.`);
  notes.push(`${at}: ${tally.retried} read(s) answered 503/504 (the control plane slow on the shared machine) and ${tally.reset} met a connection the agent shed at its connection cap; each was asked again, up to ${MAX_RETRIES} times.`);
  if (atPeak) notes.push(`${at}: at peak RSS, ${atPeak.rssAnon.toFixed(1)} MiB anonymous and ${atPeak.rssFile.toFixed(1)} MiB file-backed and shared (mostly the node binary's pages, charged to whichever cgroup first read them, so counted in RSS but not necessarily in the cgroup's usage).`);
  notes.push(`${at}: V8 heap after the load: ${(heapUsed / MiB).toFixed(1)} MiB used of ${(heapTotal / MiB).toFixed(1)} MiB allocated.`);
  notes.push(`${at}: ${sseClients} SSE clients: ${accepted} accepted, ${refused} refused (429: the cap derived from the limit).`);
  notes.push(`${at}: RSS and cgroup usage sampled every ${SAMPLE_MS} ms (${samples} samples); the kernel's own peak: ${kernelPeak === undefined ? 'not kept' : `${(kernelPeak / MiB).toFixed(1)} MiB`}.`);
  if (budgetLine) notes.push(`${at}: the agent's budget (its 'memory budget' log line): limit ${String(budgetLine.limit)} from ${String(budgetLine.source)}, cache ${String(budgetLine.cacheMaxBytes)} B, ${String(budgetLine.maxWatchStreams)} watch streams, V8 heap limit ${String(budgetLine.heapLimit)} B.`);
  const targets: TargetCheck[] = [
    { target: `no OOM kill ${at}${quantity === DEFAULT_MEMORY_LIMIT ? " (the injector's default limit)" : ''}`, measured: `${oomKills} OOM kill(s)${killed ? ', the agent exited during the load' : ''}`, pass: oomKills === 0 && !killed },
    { target: `${at}: peak RSS ≤ 80 % of the limit (${(target / MiB).toFixed(1)} MiB)`, measured: `${(peakRss / MiB).toFixed(1)} MiB`, pass: peakRss > 0 ? peakRss <= target : null },
    { target: `${at}: reads keep answering after the load`, measured: `${okReads} of ${checkReads} answered 200`, pass: failedReads === 0 && checkReads > 0 && okReads === checkReads },
  ];
  return { rows, targets, notes, extra: { limit, count, peakRss, peakUsage: peak, oomKills, accepted, refused, entries, cacheMax, retried: tally.retried, reset: tally.reset, heapUsed, heapTotal } };
}
