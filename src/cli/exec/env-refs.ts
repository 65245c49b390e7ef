/**
 * What `exec` puts in the child's environment: the `NAME=namespace/name[#/json/pointer]`
 * references of `--env` and `--env-file`, the `PREFIX_=namespace/name` of
 * `--env-prefix`, and the pure step from the items read to the variables.
 * Messages name the flag and the variable, never a value.
 */
import { readFileSync } from 'node:fs';
import { parseItemPath } from '../../shared/paths.ts';
import { SettingError } from '../../shared/settings.ts';

const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** One reference, with where it was written (`--env`, `--env-file f:3`) for messages. */
export type EnvRef =
  | { readonly kind: 'var'; readonly name: string; readonly item: string; readonly pointer: string | undefined; readonly source: string }
  | { readonly kind: 'prefix'; readonly prefix: string; readonly item: string; readonly source: string };

/** An item as read through the agent: what the environment is built from. */
export interface ReadItem {
  readonly kind: 'config' | 'secret';
  readonly value: unknown;
  readonly encoding?: 'utf8' | 'base64' | undefined;
}

/** `namespace/name` checked as the agent would; a bad one is a SettingError naming `setting`. */
function checkItem(item: string, setting: string): string {
  try {
    const ref = parseItemPath(item);
    return `${ref.namespace}/${ref.name}`;
  } catch (err) {
    throw new SettingError(setting, `"${item}" is not namespace/name (${(err as Error).message})`);
  }
}

/** `NAME=namespace/name[#/json/pointer]`. */
export function parseVarRef(text: string, source: string): EnvRef {
  const eq = text.indexOf('=');
  const name = eq === -1 ? '' : text.slice(0, eq).trim();
  if (!ENV_NAME_RE.test(name)) {
    throw new SettingError(source, `"${text}" is not NAME=namespace/name; NAME must match [A-Za-z_][A-Za-z0-9_]*, e.g. DB_PASSWORD=production/app/db-password`);
  }
  const target = text.slice(eq + 1).trim();
  const hash = target.indexOf('#');
  const pointer = hash === -1 ? undefined : target.slice(hash + 1);
  if (pointer !== undefined && pointer !== '' && !pointer.startsWith('/')) {
    throw new SettingError(source, `${name}: "#${pointer}" is not a JSON Pointer; write e.g. #/db/host (RFC 6901)`);
  }
  const item = checkItem(hash === -1 ? target : target.slice(0, hash), `${source} ${name}`);
  return { kind: 'var', name, item, pointer: pointer === '' ? undefined : pointer, source };
}

/** `PREFIX_=namespace/name`: each top-level key of a JSON item becomes PREFIX_KEY. */
export function parsePrefixRef(text: string, source: string): EnvRef {
  const eq = text.indexOf('=');
  const prefix = eq === -1 ? '' : text.slice(0, eq).trim();
  if (!ENV_NAME_RE.test(prefix)) {
    throw new SettingError(source, `"${text}" is not PREFIX_=namespace/name; PREFIX_ must match [A-Za-z_][A-Za-z0-9_]*, e.g. DB_=production/app/database`);
  }
  return { kind: 'prefix', prefix, item: checkItem(text.slice(eq + 1).trim(), `${source} ${prefix}`), source };
}

/** An env file: `NAME=namespace/name[#/pointer]` per line; blank lines and `#` comments skipped. */
export function parseEnvFile(path: string, flag: string): EnvRef[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new SettingError(flag, `cannot read "${path}" (${(err as NodeJS.ErrnoException).code ?? 'error'}); point it at a readable file of NAME=namespace/name lines`);
  }
  return text
    .split(/\r?\n/)
    .map((line, index) => ({ line: line.trim(), at: `${flag} ${path}:${index + 1}` }))
    .filter(({ line }) => line !== '' && !line.startsWith('#'))
    .map(({ line, at }) => parseVarRef(line.replace(/^export\s+/, ''), at));
}

/** Refuses a variable set by two references: one of them is a mistake. */
export function checkDistinct(refs: readonly EnvRef[]): void {
  const seen = new Map<string, string>();
  for (const ref of refs) {
    const key = ref.kind === 'var' ? ref.name : `${ref.prefix}*`;
    const earlier = seen.get(key);
    if (earlier !== undefined) throw new SettingError(ref.source, `${key} is already set by ${earlier}; keep one`);
    seen.set(key, ref.source);
  }
}

/** A failure to build the environment from what was read (no value in the message). */
export class EnvBuildError extends Error {
  override readonly name = 'EnvBuildError';
}

/** RFC 6901 evaluation; undefined when the pointer names nothing. */
function resolvePointer(value: unknown, pointer: string): unknown {
  let current = value;
  for (const raw of pointer.slice(1).split('/')) {
    const token = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(current) && /^(0|[1-9]\d*)$/.test(token)) current = current[Number(token)];
    else if (current !== null && typeof current === 'object' && !Array.isArray(current) && Object.hasOwn(current, token)) {
      current = (current as Record<string, unknown>)[token];
    } else return undefined;
  }
  return current;
}

/** A JSON value as an environment string: strings as they are, anything else as JSON. */
function envText(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function checkText(name: string, item: string, text: string): string {
  if (text.includes('\0')) throw new EnvBuildError(`${name} (${item}): the value contains a NUL byte, which an environment variable cannot hold`);
  return text;
}

function secretText(name: string, item: string, read: ReadItem): string {
  if (read.encoding !== 'base64') return checkText(name, item, String(read.value));
  const bytes = Buffer.from(String(read.value), 'base64');
  try {
    return checkText(name, item, new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    if (err instanceof EnvBuildError) throw err;
    throw new EnvBuildError(`${name} (${item}): the secret is binary, not UTF-8 text; read it through the socket or a rendered file instead`);
  } finally {
    bytes.fill(0);
  }
}

/** `batchSize` → `BATCHSIZE`, `db-host` → `DB_HOST`: the rule of the agent's env files. */
const envKey = (key: string): string => key.replace(/[-.]/g, '_').toUpperCase();

/** The variables for `refs` from the items read (keyed `namespace/name`); throws EnvBuildError. */
export function buildEnv(refs: readonly EnvRef[], items: ReadonlyMap<string, ReadItem>): Record<string, string> {
  const env: Record<string, string> = {};
  const explicit = new Set(refs.flatMap((r) => (r.kind === 'var' ? [r.name] : [])));
  for (const ref of refs) {
    const read = items.get(ref.item);
    if (!read) throw new EnvBuildError(`${ref.item} was not read`);
    if (ref.kind === 'var') {
      if (ref.pointer === undefined) {
        env[ref.name] = read.kind === 'secret' ? secretText(ref.name, ref.item, read) : checkText(ref.name, ref.item, envText(read.value));
        continue;
      }
      if (read.kind !== 'config') throw new EnvBuildError(`${ref.name} (${ref.item}#${ref.pointer}): a JSON Pointer needs a config item; ${ref.item} is a secret`);
      const found = resolvePointer(read.value, ref.pointer);
      if (found === undefined) throw new EnvBuildError(`${ref.name}: ${ref.item} has nothing at ${ref.pointer}`);
      env[ref.name] = checkText(ref.name, ref.item, envText(found));
      continue;
    }
    if (read.kind !== 'config' || read.value === null || typeof read.value !== 'object' || Array.isArray(read.value)) {
      throw new EnvBuildError(`${ref.prefix}* (${ref.item}): --env-prefix needs a config item holding a JSON object`);
    }
    for (const [key, value] of Object.entries(read.value as Record<string, unknown>)) {
      const name = ref.prefix + envKey(key);
      if (!ENV_NAME_RE.test(name)) throw new EnvBuildError(`${ref.prefix}* (${ref.item}): key "${key}" gives "${name}", which is not [A-Za-z_][A-Za-z0-9_]*`);
      // An explicit --env of the same name wins over a key swept in by a prefix.
      if (explicit.has(name)) continue;
      if (Object.hasOwn(env, name)) throw new EnvBuildError(`${name} is given by two --env-prefix items; rename a key or a prefix`);
      env[name] = checkText(name, ref.item, envText(value));
    }
  }
  return env;
}

/** The distinct items `refs` read. */
export const itemsOf = (refs: readonly EnvRef[]): string[] => [...new Set(refs.map((r) => r.item))];
