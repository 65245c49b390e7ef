/**
 * The runtime settings the agent runs with, wherever it is started from (the
 * image's entrypoint, npm's bin link, `node dist/cli/main.js agent`, the
 * injector): node flags and malloc's environment cannot be set from inside a
 * running process, so the bin re-executes itself once with them through
 * `process.execve`, which keeps the PID (the kubelet, the bench and
 * `kill $PID` see one process). Each value was chosen by measurement
 * (docs/FOOTPRINT-LOG.md: memory saved next to CPU per read).
 * A setting the operator already gave (a node flag on the command line or in
 * NODE_OPTIONS, or the environment variable) is left as it is.
 */

/** Commands that run long enough for their footprint to matter. */
const COMMANDS = new Set(['agent']);

/**
 * Node flags for the agent. `--max-semi-space-size`: the young generation
 * otherwise scales with the heap limit (64 MiB per semi-space on a host with
 * a 4 GiB limit) and stays resident once a load has grown it.
 * Not `--memory-saver-mode`: it saved 32 MiB RSS after 10k × 1 KiB (−7 MiB
 * idle) but cost 1.3–1.7× the CPU per cached read and about half the
 * saturated throughput (bench/cached-read-ab.ts; docs/FOOTPRINT-LOG.md,
 * "Footprint"). An operator short of memory can pass it on node's command
 * line (`node --memory-saver-mode …/main.js agent`); the bin keeps it.
 *
 * `--min-semi-space-size` (the same 4 MiB; V8 clamps it to a smaller
 * maximum an operator sets): a trim's collection shrinks the young
 * generation to its minimum (1 MiB), and short-lived request garbage never
 * grows it back, so a trimmed agent scavenged twice as often per cached
 * read for the rest of its life (114–160 scavenges per 30k reads against
 * 58–64; docs/FOOTPRINT-LOG.md). The pages are committed only
 * as the load touches them, so idle memory is the same.
 *
 * `--expose-gc`: the agent's heap trimmer (agent/heap-trimmer.ts) runs V8's
 * memory-reducing collection once a burst of fills has passed; without the
 * flag nothing can ask V8 to give the old space back.
 *
 * `--max-valid-polymorphic-map-count=16` (V8's default 4): node's own HTTP,
 * stream and event code is shared by everything in the agent that uses it
 * (the control-plane client, gRPC over http2, the admin and TCP listeners),
 * which hands it objects of more than four shapes, so its property accesses
 * went megamorphic (a stub-cache probe each) on the cached read too: ~1 µs
 * per request that the data path alone in its own process does not pay
 * (docs/FOOTPRINT-LOG.md, s16).
 *
 * Not bigger inlining budgets, `--no-maglev`, `--no-use-osr` or a higher
 * polymorphic-map count: none beat the bin as it is by a clear margin in
 * compiled A/Bs at 16 and 64 connections, and 4× the TurboFan budgets cost
 * 1.25–1.51× the CPU and ~7 MiB after 10k entries (docs/FOOTPRINT-LOG.md,
 * "Footprint", i27).
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--min-semi-space-size=4', '--expose-gc', '--max-valid-polymorphic-map-count=16'];

/**
 * Environment for the agent's process. glibc otherwise creates up to 8 malloc
 * arenas per core for Node's threads, each keeping freed memory resident; one
 * arena, and a fixed trim threshold with no top pad (glibc otherwise raises
 * the threshold after large frees and keeps 128 KiB spare), leave less of a
 * burst's freed buffers resident: 3–4 MiB less after 10k × 1 KiB with a
 * tighter spread, and the same CPU per cached read (docs/FOOTPRINT-LOG.md,
 * "Footprint").
 */
export const AGENT_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '1', MALLOC_TRIM_THRESHOLD_: '131072', MALLOC_TOP_PAD_: '0' };

export interface RuntimeInput {
  readonly execPath: string;
  /** `process.argv`: [node, script, command, ...]. */
  readonly argv: readonly string[];
  readonly execArgv: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
}

export interface ReexecPlan {
  readonly file: string;
  readonly args: string[];
  readonly env: Record<string, string>;
}

/** `--max_semi_space_size=8` and `--max-semi-space-size` are one flag, and `--no-x` is the operator's word on `--x`. */
const flagName = (flag: string): string => (flag.split('=', 1)[0] ?? flag).replaceAll('_', '-').replace(/^--no-/, '--');

/** The re-exec that applies the missing settings, or undefined when nothing is missing (or the command is not the agent). */
export function runtimePlan(input: RuntimeInput): ReexecPlan | undefined {
  if (!COMMANDS.has(input.argv[2] ?? '')) return undefined;
  const given = new Set([...input.execArgv, ...(input.env.NODE_OPTIONS ?? '').split(/\s+/)].filter((f) => f.startsWith('--')).map(flagName));
  const flags = AGENT_NODE_FLAGS.filter((flag) => !given.has(flagName(flag)));
  const envToSet = Object.entries(AGENT_ENV).filter(([name]) => input.env[name] === undefined);
  if (flags.length === 0 && envToSet.length === 0) return undefined;
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(input.env)) if (value !== undefined) env[name] = value;
  for (const [name, value] of envToSet) env[name] = value;
  return { file: input.execPath, args: [input.execPath, ...input.execArgv, ...flags, ...input.argv.slice(1)], env };
}
