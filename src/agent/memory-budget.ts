/**
 * The agent's memory budget: from the container's limit, the bounds that keep
 * its cgroup usage (what the OOM killer counts) under MEMORY_TARGET_RATIO of
 * the limit under any load. A pure function of the limit and the flags; the
 * sizing rule is documented in docs/OPERATIONS.md ("Memory sizing").
 *
 *   target     = 80 % of the limit
 *   spare      = target − BASELINE_RSS_BYTES − (files ? FILES_RESERVE_BYTES : 0)
 *   cache      = spare × CACHE_SHARE / (CACHE_COST_FACTOR + (snapshot ? SNAPSHOT_PAGES_FACTOR : 0))   (--cache-max-bytes)
 *   SSE cap    = spare × SSE_SHARE / SSE_CLIENT_BYTES, at most MAX_SSE_CLIENTS
 *   connections= spare × CONNECTION_SHARE / CONNECTION_BYTES, at most MAX_CONNECTIONS
 *   V8 young gen = 3 × SEMI_SPACE_BYTES (--max-semi-space-size; Node's own default lets it reach 192 MiB)
 *   V8 old space = target − NATIVE_RESERVE_BYTES − young gen
 *
 * A flag wins over a derived value; a flag that cannot fit is an error naming
 * both numbers. Without a limit the defaults stay as they were.
 */
import { SettingError } from '../shared/settings.ts';
import { formatSize } from '../shared/units.ts';
import type { Bytes } from '../shared/units.ts';
import { MAX_CONNECTIONS } from './data-listeners.ts';
import { detectMemoryLimit, withLimitFlag, type MemoryLimit } from './memory-limit.ts';

const MiB = 1024 * 1024;

/** `256MiB` for round sizes, else `17.6 MiB`: derived bounds are rarely whole. */
export function describeBytes(bytes: Bytes): string {
  const exact = formatSize(bytes);
  return exact.endsWith('B') && !/[KMG]iB$/.test(exact) ? `${(bytes / MiB).toFixed(1)} MiB` : exact;
}
/** Cgroup usage stays under this share of the limit. */
export const MEMORY_TARGET_RATIO = 0.8;
/**
 * RSS of a ready agent with an empty cache before the heap trimmer's start-up
 * trim, as the bin runs it (bench/footprint.ts, 2026-11-30: 92.7–93.3 MiB).
 * Trimmed it settles lower (~84 MiB), but the limit must hold the peak, not
 * the settled figure: start-up and every burst before its trim reach it.
 */
export const BASELINE_RSS_BYTES: Bytes = 94 * MiB;
/** Rendered files on a memory-backed volume (the injector's default files-size-limit, 16Mi): tmpfs pages are charged to the writer's cgroup, the agent's. */
export const FILES_RESERVE_BYTES: Bytes = 16 * MiB;
/**
 * Resident bytes per byte counted against --cache-max-bytes: the entry's
 * buffers, its LRU and map slots, and the garbage a read leaves until the next
 * GC (bench `memory`: 111 MiB RSS for 23.2 MiB counted at 10k entries, 272 MiB
 * for 64 MiB at 100k).
 */
export const CACHE_COST_FACTOR = 4;
/**
 * Memory-backed pages of the warm-restart snapshot per byte counted against
 * --cache-max-bytes: the snapshot holds at most the cached plaintext (under
 * the counted bytes) plus a small header per value, and while a new one is
 * written the old one still exists until the rename: two copies at peak.
 */
export const SNAPSHOT_PAGES_FACTOR = 2;
/** One open /v1/watch stream: socket, HTTP state, subscription and a queued event or two. */
export const SSE_CLIENT_BYTES: Bytes = 64 * 1024;
/** One idle keep-alive connection on a data listener. */
export const CONNECTION_BYTES: Bytes = 32 * 1024;
/** What lies outside V8's old space: code, new space, Node's own allocations, buffers. */
export const NATIVE_RESERVE_BYTES: Bytes = 48 * MiB;
/**
 * V8's semi-space; the young generation is three of them. The bin runs every
 * agent with this size, limit or not (AGENT_NODE_FLAGS in
 * src/cli/runtime-settings.ts, kept equal by test/agent-runtime.test.ts).
 */
export const SEMI_SPACE_BYTES: Bytes = 4 * MiB;
/** The smallest old space worth running with. */
export const MIN_OLD_SPACE_BYTES: Bytes = 64 * MiB;
export const CACHE_SHARE = 0.75;
export const SSE_SHARE = 0.15;
export const CONNECTION_SHARE = 0.1;
/** Cap without a limit (and upper bound with one); MAX_CONNECTIONS (data-listeners.ts) likewise. */
export const MAX_SSE_CLIENTS = 256;
export const DEFAULT_CACHE_MAX_BYTES: Bytes = 64 * MiB;
/** Never derive a cache smaller than this; a limit that small gets a warning instead. */
export const MIN_CACHE_BYTES: Bytes = 4 * MiB;
const MIN_SSE_CLIENTS = 8;
const MIN_CONNECTIONS = 64;

export interface MemoryBudget {
  /** The container's limit, or undefined (no limit: the fixed defaults). */
  readonly limit: Bytes | undefined;
  /** Cgroup usage to stay under (80 % of the limit). */
  readonly target: Bytes | undefined;
  readonly cacheMaxBytes: Bytes;
  /** Where the cache bound came from. */
  readonly cacheMaxBytesFrom: 'flag' | 'limit' | 'default';
  readonly maxSseClients: number;
  readonly maxConnections: number;
  /** V8's old-space limit to run with (--max-old-space-size), or undefined to keep Node's. */
  readonly oldSpaceBytes: Bytes | undefined;
  /** V8's semi-space size to run with (--max-semi-space-size), or undefined to keep Node's. */
  readonly semiSpaceBytes: Bytes | undefined;
  /** Set when the limit is too small for the baseline: the bounds are at their minimums. */
  readonly warning: string | undefined;
}

export interface BudgetInput {
  readonly limit: Bytes | undefined;
  /** --cache-max-bytes when given. */
  readonly cacheMaxBytes: Bytes | undefined;
  readonly filesConfigured: boolean;
  /** --snapshot-dir is set: its tmpfs pages are charged to the agent's cgroup too. */
  readonly snapshotConfigured?: boolean;
}

export function deriveMemoryBudget(input: BudgetInput): MemoryBudget {
  const { limit } = input;
  if (limit === undefined) {
    return {
      limit,
      target: undefined,
      cacheMaxBytes: input.cacheMaxBytes ?? DEFAULT_CACHE_MAX_BYTES,
      cacheMaxBytesFrom: input.cacheMaxBytes === undefined ? 'default' : 'flag',
      maxSseClients: MAX_SSE_CLIENTS,
      maxConnections: MAX_CONNECTIONS,
      oldSpaceBytes: undefined,
      semiSpaceBytes: undefined,
      warning: undefined,
    };
  }
  const target = Math.floor(limit * MEMORY_TARGET_RATIO);
  const spare = Math.max(0, target - BASELINE_RSS_BYTES - (input.filesConfigured ? FILES_RESERVE_BYTES : 0));
  const costFactor = CACHE_COST_FACTOR + (input.snapshotConfigured ? SNAPSHOT_PAGES_FACTOR : 0);
  const fitting = Math.floor((spare * CACHE_SHARE) / costFactor);
  if (input.cacheMaxBytes !== undefined && input.cacheMaxBytes > fitting) {
    throw new SettingError(
      '--cache-max-bytes (CONFIG_SIDECAR_CACHE_MAX_BYTES)',
      `${describeBytes(input.cacheMaxBytes)} cannot fit the memory limit ${describeBytes(limit)}: a full cache needs about ${describeBytes(input.cacheMaxBytes * costFactor)} resident${input.snapshotConfigured ? ' (with its snapshot\'s memory-backed pages)' : ''} ` +
        `on top of the agent's ${describeBytes(BASELINE_RSS_BYTES)}, and at most ${describeBytes(fitting)} keeps it under ${Math.round(MEMORY_TARGET_RATIO * 100)} % of the limit. ` +
        `Lower --cache-max-bytes, or raise the container's memory limit (annotation config-sidecar.io/memory-limit).`,
    );
  }
  const warning =
    fitting < MIN_CACHE_BYTES ? `the memory limit ${describeBytes(limit)} leaves almost nothing above the agent's baseline ${describeBytes(BASELINE_RSS_BYTES)}; bounds are at their minimums and an OOM kill is likely` : undefined;
  return {
    limit,
    target,
    cacheMaxBytes: input.cacheMaxBytes ?? Math.max(MIN_CACHE_BYTES, fitting),
    cacheMaxBytesFrom: input.cacheMaxBytes === undefined ? 'limit' : 'flag',
    maxSseClients: Math.min(MAX_SSE_CLIENTS, Math.max(MIN_SSE_CLIENTS, Math.floor((spare * SSE_SHARE) / SSE_CLIENT_BYTES))),
    maxConnections: Math.min(MAX_CONNECTIONS, Math.max(MIN_CONNECTIONS, Math.floor((spare * CONNECTION_SHARE) / CONNECTION_BYTES))),
    oldSpaceBytes: Math.max(MIN_OLD_SPACE_BYTES, target - NATIVE_RESERVE_BYTES - 3 * SEMI_SPACE_BYTES),
    semiSpaceBytes: SEMI_SPACE_BYTES,
    warning,
  };
}

export interface AgentMemory {
  readonly memory: MemoryLimit;
  readonly budget: MemoryBudget;
}

/** `--memory-limit` over what was detected (`auto`), then the budget; throws a SettingError for a flag that cannot fit. */
export function agentMemory(
  settings: { memoryLimit: 'auto' | 'none' | Bytes; cacheMaxBytes?: Bytes | undefined; files?: readonly unknown[] | undefined; snapshotDir?: string | undefined },
  detected: MemoryLimit = detectMemoryLimit()): AgentMemory {
  const memory: MemoryLimit =
    settings.memoryLimit === 'auto' ? detected : settings.memoryLimit === 'none' ? { ...detected, limit: undefined, source: 'none' } : withLimitFlag(detected, settings.memoryLimit);
  const budget = deriveMemoryBudget({ limit: memory.limit, cacheMaxBytes: settings.cacheMaxBytes, filesConfigured: (settings.files?.length ?? 0) > 0, snapshotConfigured: settings.snapshotDir !== undefined });
  return { memory, budget };
}

/** The flags Node needs so V8's old space fits the budget, or undefined when it already does or the operator set one. */
export function heapFlags(budget: MemoryBudget, execArgv: readonly string[], nodeOptions: string | undefined): string[] | undefined {
  const given = [...execArgv, ...(nodeOptions ?? '').split(/\s+/)];
  const flags: string[] = [];
  if (budget.oldSpaceBytes !== undefined && !given.some((a) => a.startsWith('--max-old-space-size'))) flags.push(`--max-old-space-size=${Math.floor(budget.oldSpaceBytes / MiB)}`);
  if (budget.semiSpaceBytes !== undefined && !given.some((a) => a.startsWith('--max-semi-space-size'))) flags.push(`--max-semi-space-size=${Math.floor(budget.semiSpaceBytes / MiB)}`);
  return flags.length ? flags : undefined;
}
