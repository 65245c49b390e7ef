/**
 * The schemas of the one config pipeline (settings.ts): zod types that turn
 * flag, env and file text into typed values, and `parseSettings`, which runs a
 * command's schema and names the failing setting. Kept apart from settings.ts
 * because zod is the largest library the agent would otherwise load
 * (docs/FOOTPRINT-LOG.md): only a process that validates settings
 * imports this module.
 */
import { z } from 'zod';
import { describeUnknownKeys } from './suggest.ts';
import { SettingError, settingLabel, type ListenAddress } from './settings.ts';
import { parseDuration, parseSize, type Bytes, type Milliseconds } from './units.ts';

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

export const listenSchema = z.string().transform((value, ctx): ListenAddress => {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    ctx.addIssue({ code: 'custom', message: `"${value}" is not host:port; write e.g. 127.0.0.1:8420 or 0.0.0.0:8422` });
    return z.NEVER;
  }
  return { host: (match[1] ?? match[2]) as string, port };
});

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
