/**
 * The schema of the `files:` entries (file-spec.ts has their types): each
 * entry, then the entries together (destinations relative, no `..`, no
 * duplicates or overlaps, octal mode, template parses, format fits the item
 * count). It runs with the rest of the agent's settings (agent-settings.ts),
 * in the processes that validate them: the bin's first image and a reload's
 * validator child, never the serving process (zod and mustache stay out of
 * it; docs/FOOTPRINT-LOG.md, f28).
 * Every message names the entry (`files[2] (app/.env)`), so an operator can act.
 */
import { isAbsolute } from 'node:path';
import Mustache from 'mustache';
import { z } from 'zod';
import { AppError } from '../../shared/errors.ts';
import { SEGMENT_RE, parseItemPath, type ItemRef } from '../../shared/paths.ts';
import { isLoopbackHost, SettingError } from '../../shared/settings.ts';
import { durationSchema } from '../../shared/setting-schemas.ts';
import { DEFAULT_HOOK_RETRIES, DEFAULT_HOOK_TIMEOUT_MS, type ReloadHook } from './reload-hook.ts';
import { DEFAULT_FILE_MODE, entryLabel, FILE_FORMATS, type FileItem, type FileSpec } from './file-spec.ts';

/** Deep destinations are legal but a typo like `a/b/c/d/e/f/g/h/i` is not useful. */
const MAX_PATH_SEGMENTS = 8;
const MAX_PATH_LENGTH = 255;
/** A template is config, not data; bound it so a pasted blob is refused early. */
const MAX_TEMPLATE_LENGTH = 64 * 1024;

/** Why a relative destination is refused, or undefined when it is fine. */
export function destinationProblem(path: string): string | undefined {
  if (path === '') return 'the path is empty';
  if (path.length > MAX_PATH_LENGTH) return `the path is longer than ${MAX_PATH_LENGTH} characters`;
  if (isAbsolute(path) || path.startsWith('/') || /^[A-Za-z]:/.test(path)) return 'the path is absolute; write it relative to --files-dir';
  if (path.includes('\\')) return 'the path contains a backslash; use "/" between segments';
  if (path.includes('\0')) return 'the path contains a NUL byte';
  const segments = path.split('/');
  if (segments.length > MAX_PATH_SEGMENTS) return `the path has more than ${MAX_PATH_SEGMENTS} segments`;
  for (const segment of segments) {
    if (segment === '') return 'the path has an empty segment (double or trailing "/")';
    if (segment === '..') return 'the path contains ".." and would leave --files-dir';
    if (segment === '.') return 'the path contains a "." segment; write the path without it';
    // `..data`, `..data_tmp` and the timestamped snapshots belong to the atomic writer.
    if (segment.startsWith('..')) return `the segment "${segment}" starts with ".." (reserved for the atomic writer's snapshots)`;
  }
  return undefined;
}

/** Parses a mode written as an octal string (`"0440"`, `"440"`, `"0o440"`). */
export function parseMode(value: string | number): number | undefined {
  // YAML 1.2 reads an unquoted `0440` as the decimal number 440: its digits are what the operator meant.
  const text = typeof value === 'number' ? (Number.isInteger(value) && value >= 0 ? String(value) : '') : value.trim();
  const match = /^(?:0o|0)?([0-7]{3})$/.exec(text);
  return match ? Number.parseInt(match[1] as string, 8) : undefined;
}

const modeSchema = z.union([z.string(), z.number()]).transform((value, ctx): number => {
  const mode = parseMode(value);
  if (mode === undefined) {
    ctx.addIssue({ code: 'custom', message: `mode "${value}" is not an octal file mode; write e.g. "0440" or "0640"` });
    return z.NEVER;
  }
  if ((mode & 0o400) === 0) {
    ctx.addIssue({ code: 'custom', message: `mode "${value}" leaves the owner (the agent) unable to read the file; include 0400` });
    return z.NEVER;
  }
  return mode;
});

const envNameSchema = z.string().regex(SEGMENT_RE, 'env must be 1-63 characters of a-z, 0-9, ".", "_" or "-"');

const itemRefSchema = z.string().transform((value, ctx): ItemRef => {
  try {
    return parseItemPath(value);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: `item "${value}": ${err instanceof AppError ? err.message : String(err)}` });
    return z.NEVER;
  }
});

/** An item is `namespace/name` or `{ item: namespace/name, env?, as? }`; the short form is normalised first so errors stay specific. */
const itemSchema = z
  .preprocess(
    (value) => (typeof value === 'string' ? { item: value } : value),
    z
      .object({
        item: itemRefSchema,
        env: envNameSchema.optional(),
        as: z.string().min(1).max(128).optional(),
      })
      .strict(),
  )
    // No `env` key when absent: the spec travels as JSON to the serving process and must read back equal.
  .transform((o): FileItem => ({ namespace: o.item.namespace, name: o.item.name, ...(o.env === undefined ? {} : { env: o.env }), as: o.as ?? o.item.name }));

/** Mustache tags that would pull in outside text or change delimiters are refused: templates stay plain data. */
function templateProblem(template: string): string | undefined {
  let tokens: unknown[];
  try {
    tokens = Mustache.parse(template) as unknown[];
  } catch (err) {
    return `template does not parse: ${err instanceof Error ? err.message : String(err)}`;
  }
  const stack = [...tokens];
  while (stack.length > 0) {
    const token = stack.pop() as unknown[];
    if (token[0] === '>') return `template uses a partial "{{> ${String(token[1])}}}"; partials are not supported`;
    if (Array.isArray(token[4])) stack.push(...(token[4] as unknown[]));
  }
  return undefined;
}

/** A loopback http URL: the app's own reload endpoint, never a way to reach another host from the pod. */
const hookUrlSchema = z.string().transform((value, ctx): string => {
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  const host = url?.hostname.replace(/^\[|\]$/g, '');
  if (!url || url.protocol !== 'http:' || !host || !isLoopbackHost(host) || url.username !== '' || url.password !== '') {
    ctx.addIssue({ code: 'custom', message: `"${value}" is not a loopback http URL; write e.g. http://127.0.0.1:8080/-/reload (the app's own endpoint, in the pod)` });
    return z.NEVER;
  }
  return url.href;
});

/** `onChange: { http, method?, timeout?, retries? }`. */
const onChangeSchema = z
  .object({
    http: hookUrlSchema,
    method: z.enum(['POST', 'PUT', 'GET']).default('POST'),
    timeout: durationSchema.refine((ms) => ms > 0 && ms <= 60_000, 'timeout must be between 1ms and 60s').default(DEFAULT_HOOK_TIMEOUT_MS),
    retries: z.number().int().min(0).max(10).default(DEFAULT_HOOK_RETRIES),
  })
  .strict()
  .transform((o): ReloadHook => Object.freeze({ url: o.http, method: o.method, timeoutMs: o.timeout, retries: o.retries }));

/** The zod schema of one `files:` entry; the agent config schema uses it as `files: filesSchema`. */
export const fileSpecSchema = z
  .object({
    path: z.string(),
    items: z.array(itemSchema).min(1, 'items needs at least one "namespace/name"').max(64),
    format: z.enum(FILE_FORMATS).default('raw'),
    template: z.string().max(MAX_TEMPLATE_LENGTH).optional(),
    mode: modeSchema.default(DEFAULT_FILE_MODE),
    onChange: onChangeSchema.optional(),
  })
  .strict()
  .superRefine((spec, ctx) => {
    const problem = destinationProblem(spec.path);
    if (problem) ctx.addIssue({ code: 'custom', path: ['path'], message: `path "${spec.path}": ${problem}` });
    const seen = new Map<string, number>();
    spec.items.forEach((item, index) => {
      const earlier = seen.get(item.as);
      if (earlier !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['items', index],
          message: `items[${earlier}] and items[${index}] are both nested under "${item.as}"; give one an "as:" name`,
        });
      }
      seen.set(item.as, index);
    });
    if (spec.template !== undefined && (spec.format === 'jwks' || spec.format === 'pem-bundle')) {
      ctx.addIssue({ code: 'custom', path: ['template'], message: `format ${spec.format} renders key rings and takes no template` });
    } else if (spec.template !== undefined) {
      const tp = templateProblem(spec.template);
      if (tp) ctx.addIssue({ code: 'custom', path: ['template'], message: tp });
    } else if (spec.format === 'raw' && spec.items.length > 1) {
      ctx.addIssue({ code: 'custom', path: ['format'], message: 'format raw takes exactly one item; use json, yaml, env or properties, or a template' });
    }
  })
  .transform((spec): FileSpec => Object.freeze({ ...spec, items: Object.freeze(spec.items) }));

/** The `files:` list: each entry valid, and no two entries writing the same destination or one inside another. */
export const filesSchema = z
  .array(fileSpecSchema)
  .max(256)
  .superRefine((specs, ctx) => {
    const owners = new Map<string, number>();
    specs.forEach((spec, index) => {
      const other = owners.get(spec.path);
      if (other !== undefined) {
        ctx.addIssue({ code: 'custom', path: [index, 'path'], message: `${entryLabel(index, spec.path)} writes the same destination as ${entryLabel(other, spec.path)}` });
      }
      owners.set(spec.path, index);
    });
    specs.forEach((spec, index) => {
      specs.forEach((other, j) => {
        if (j !== index && spec.path.startsWith(`${other.path}/`)) {
          ctx.addIssue({
            code: 'custom',
            path: [index, 'path'],
            message: `${entryLabel(index, spec.path)} would be inside the file written by ${entryLabel(j, other.path)}`,
          });
        }
      });
    });
  });

/** The first issue of a failed parse, as one line naming the entry. */
export function describeFilesIssue(error: z.ZodError, specs: unknown): string {
  const issue = error.issues[0];
  if (!issue) return 'invalid files';
  const [index, ...rest] = issue.path;
  const entries = Array.isArray(specs) ? specs : [];
  const raw = typeof index === 'number' ? (entries[index] as { path?: unknown } | undefined) : undefined;
  const where = typeof index === 'number' ? entryLabel(index, raw?.path) : 'files';
  const field = rest.length > 0 ? ` ${rest.map(String).join('.')}` : '';
  const message = issue.code === 'unrecognized_keys' ? `unknown key(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}` : issue.message;
  return `${where}${field}: ${message}`;
}

/** Parses `files:` or throws a SettingError naming the entry (setting `files`). */
export function parseFileSpecs(raw: unknown): readonly FileSpec[] {
  const result = filesSchema.safeParse(raw ?? []);
  if (!result.success) throw new SettingError('files', describeFilesIssue(result.error, raw));
  return Object.freeze(result.data);
}
