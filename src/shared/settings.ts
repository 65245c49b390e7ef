/**
 * One config pipeline for every command (STYLE.md §3): read flags / env / file
 * → reject unknown keys → check each field, naming it → check fields together
 * → freeze. Commander supplies flag and env-twin values (`Option.env`); the
 * schemas here turn text into typed values and every failure into a
 * `SettingError` that names the flag, its environment variable and the fix.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { z } from 'zod';
import { describeUnknownKeys } from './suggest.ts';
import { parseDuration, parseSize, type Bytes, type Milliseconds } from './units.ts';

export const ENV_PREFIX = 'CONFIG_SIDECAR_';

/** `--data-dir` → `CONFIG_SIDECAR_DATA_DIR`. */
export function envNameFor(flag: string): string {
  return ENV_PREFIX + flag.replace(/^--/, '').replace(/-/g, '_').toUpperCase();
}

/** A start-up failure that names the setting; the CLI prints it and exits 2. */
export class SettingError extends Error {
  override readonly name = 'SettingError';
  readonly setting: string;
  /** The message without the setting, to re-label it. */
  readonly detail: string;
  constructor(setting: string, message: string) {
    super(`Invalid setting ${setting}: ${message}`);
    this.setting = setting;
    this.detail = message;
  }
}

/** A zod string that parses `30s`-style durations to milliseconds. */
export const durationSchema = z
  .union([z.string(), z.number()])
  .transform((value, ctx): Milliseconds => {
    const ms = typeof value === 'number' ? value : parseDuration(value);
    if (ms === undefined || ms < 0) {
      ctx.addIssue({ code: 'custom', message: `"${value}" is not a duration; write e.g. 500ms, 30s, 5m, 1h or 90d` });
      return z.NEVER;
    }
    return ms;
  });

/** A zod string that parses `64MiB`-style sizes to bytes. */
export const sizeSchema = z
  .union([z.string(), z.number()])
  .transform((value, ctx): Bytes => {
    const bytes = typeof value === 'number' ? value : parseSize(value);
    if (bytes === undefined || bytes < 0) {
      ctx.addIssue({ code: 'custom', message: `"${value}" is not a size; write e.g. 512KiB, 64MiB or 1GiB` });
      return z.NEVER;
    }
    return bytes;
  });

/** A `host:port` listen address; port 0 asks the OS for a free port. */
export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export const listenSchema = z.string().transform((value, ctx): ListenAddress => {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    ctx.addIssue({ code: 'custom', message: `"${value}" is not host:port; write e.g. 127.0.0.1:8420 or 0.0.0.0:8422` });
    return z.NEVER;
  }
  return { host: (match[1] ?? match[2]) as string, port };
});

export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

/** A comma-separated list flag (`a,b,c`) or repeated flag values. */
export const listSchema = z
  .union([z.string(), z.array(z.string())])
  .transform((value) =>
    (Array.isArray(value) ? value : [value])
      .flatMap((v) => v.split(','))
      .map((v) => v.trim())
      .filter((v) => v !== ''),
  );

/**
 * The label table for `parseSettings` from a settings-key → flag table:
 * `dataDir: '--data-dir'` becomes `--data-dir (CONFIG_SIDECAR_DATA_DIR)`. A
 * flag text that already says where the value comes from (it holds a `(`) is
 * kept as written, for secrets read from a file or an env var.
 */
export function flagLabels(flags: Readonly<Record<string, string>>): Readonly<Record<string, string>> {
  return Object.freeze(Object.fromEntries(Object.entries(flags).map(([key, flag]) => [key, flag.includes('(') ? flag : `${flag} (${envNameFor(flag)})`])));
}

/** Drops keys whose value is undefined, so an absent flag neither overrides another source nor hides a default. */
export function definedSettings(raw: Readonly<Record<string, unknown>>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined));
}

/** Describes a setting for messages: `--data-dir (CONFIG_SIDECAR_DATA_DIR)`. */
export function settingLabel(key: string, labels: Readonly<Record<string, string>>): string {
  return labels[key] ?? key;
}

/**
 * Parses raw settings with a schema; the first failure becomes a SettingError
 * naming the setting through `labels` (key → `--flag (ENV)`), and the result is
 * frozen.
 */
export function parseSettings<S extends z.ZodType>(
  schema: S,
  raw: unknown,
  labels: Readonly<Record<string, string>> = {},
): Readonly<z.infer<S>> {
  const result = schema.safeParse(raw);
  if (!result.success) {
    // A misspelt key also leaves the right key missing; the spelling is the cause to report.
    const issue = result.error.issues.find((i) => i.code === 'unrecognized_keys') ?? result.error.issues[0];
    const key = issue?.path.map(String).join('.') ?? '';
    const label = settingLabel(key.split('.')[0] ?? key, labels) + (key.includes('.') ? ` (${key})` : '');
    const message =
      issue?.code === 'unrecognized_keys'
        ? `${describeUnknownKeys(issue.keys, schema, issue.path)}; check the spelling against --help`
        : (issue?.message ?? 'invalid value');
    throw new SettingError(label || 'configuration', message);
  }
  return Object.freeze(result.data);
}

/**
 * Reads a secret from a file or an environment variable, never from a
 * command-line value (which `ps` would show). Trailing newlines are trimmed.
 */
export function readSecretSetting(options: {
  readonly fileFlag: string;
  readonly file?: string | undefined;
  readonly envVar: string;
  readonly env?: NodeJS.ProcessEnv;
}): string | undefined {
  const env = options.env ?? process.env;
  if (options.file) {
    try {
      return readFileSync(options.file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      throw new SettingError(options.fileFlag, `cannot read "${options.file}" (${code}); point it at a readable file`);
    }
  }
  const value = env[options.envVar];
  return value === undefined || value === '' ? undefined : value;
}
