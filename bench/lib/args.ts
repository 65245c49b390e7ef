/**
 * The command line of a bench tool (bench/*.ts): `--help` prints the usage,
 * a wrong option or number exits 2 saying what was wrong, and the agent
 * variants / environment pairs the A/B tools take are read one way.
 */
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';

const HELP = { help: { type: 'boolean', short: 'h', default: false } } as const;

/** Parses `process.argv` with `options` and `--help`; prints `usage` and exits 0 on `--help`, exits 2 on an unknown option. */
export function benchArgs<const O extends ParseArgsOptionsConfig>(usage: string, options: O) {
  let parsed;
  try {
    parsed = parseArgs({ options: { ...options, ...HELP }, allowPositionals: false });
  } catch (err) {
    console.error(`${(err as Error).message}\n${usage}`);
    process.exit(2);
  }
  if ((parsed.values as { help?: boolean }).help) {
    console.log(usage);
    process.exit(0);
  }
  return parsed.values;
}

/** The option's value as a whole number of at least `min`, or exit 2 naming the option. */
export function wholeNumber(name: string, value: string | undefined, min = 1): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) {
    console.error(`--${name} takes a whole number of at least ${min}, got "${value ?? ''}"`);
    process.exit(2);
  }
  return n;
}

/** The option's value as a number above 0, or exit 2 naming the option. */
export function positiveNumber(name: string, value: string | undefined): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`--${name} takes a number above 0, got "${value ?? ''}"`);
    process.exit(2);
  }
  return n;
}

/** `KEY=value` words as an environment. */
export function envPairs(words: readonly string[]): Record<string, string> {
  return Object.fromEntries(words.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
}

export interface AgentVariant {
  readonly name: string;
  /** Node flags in front of the bin; empty runs it as installed (its own runtime settings). */
  readonly nodeArgs: readonly string[];
  readonly env: Record<string, string>;
  /** Another build's `dist/cli/main.js` (an A/B against main's build); default this checkout's. */
  readonly cli?: string;
}

/** A variant spec `name|node flags|ENV=value …|cli path` (flags and env space-separated, any may be empty). */
export function agentVariant(spec: string): AgentVariant {
  const [name = spec, flags = '', env = '', cli = ''] = spec.split('|');
  const words = (s: string): string[] => (s.trim() === '' ? [] : s.trim().split(/\s+/));
  return { name, nodeArgs: words(flags), env: envPairs(words(env)), ...(cli.trim() !== '' && { cli: cli.trim() }) };
}
