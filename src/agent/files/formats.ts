/**
 * Turns item values into file bytes, one pure function per format (rules in
 * docs/FILES.md). Nothing here touches the disk or the cache: `renderFile`
 * takes a spec and the values it names and returns bytes or throws a
 * `FileRenderError` naming the item or key that cannot be represented.
 *
 * The data rule, shared by every format: a `config` item's value is its merged
 * JSON value; a `secret` is its bytes, read as UTF-8 text wherever the format
 * is text (binary secrets only fit `raw`). With one item and no template,
 * json/yaml emit that value itself and env/properties use its keys; with
 * several items (or a template) each value is nested under its item's `as`
 * name (default: the item name).
 */
import Mustache from 'mustache';
import type { FileFormat, FileSpec } from './file-spec.ts';
import { isPem } from './pem.ts';
import { FileRenderError } from './render-error.ts';
import type { ItemValue } from './item-value.ts';
import { renderRing } from './ring-formats.ts';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * `yaml`'s stringify, loaded by `loadFormats` only when a file is rendered as
 * YAML without a template: the library added ~10 MiB VmRSS (2 anonymous) to
 * every agent with `files:`, most of which never write YAML
 * (docs/FOOTPRINT-LOG.md, f28).
 */
let yamlStringify: ((value: unknown) => string) | undefined;

/** Loads the libraries `specs` need to render (the renderer calls it before rendering a new list). */
export async function loadFormats(specs: readonly FileSpec[]): Promise<void> {
  if (yamlStringify === undefined && specs.some((spec) => spec.format === 'yaml' && spec.template === undefined)) {
    yamlStringify = (await import('yaml')).stringify;
  }
}

/** The data form of an item (see the module comment). */
export function itemData(label: string, item: ItemValue, format: FileFormat): Json {
  if (item.kind === 'config') {
    try {
      return JSON.parse(item.value.toString('utf8')) as Json;
    } catch {
      throw new FileRenderError('unrepresentable', `config item ${label} is not valid JSON`);
    }
  }
  try {
    return utf8.decode(item.value);
  } catch {
    throw new FileRenderError('binary', `secret ${label} is binary (not UTF-8) and cannot be written as ${format}; use format raw`);
  }
}

// ---- env ------------------------------------------------------------------

/** POSIX shell variable names; the npm dotenv parser accepts a superset (`[\w.-]+`). */
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `db-host` → `DB_HOST`, `log.level` → `LOG_LEVEL`; other characters are not mapped. */
export function envName(name: string): string {
  return name.replace(/[-.]/g, '_').toUpperCase();
}

/** What python-dotenv expands by default (`interpolate=True`), in any quoting: `${NAME}` and `${NAME:-default}`. */
const PYTHON_DOTENV_VARIABLE_RE = /\$\{[^}:]*(?::-[^}]*)?\}/;

/**
 * Quotes one value so that `sh` (`set -a; . file`), the npm `dotenv` parser
 * and python-dotenv (`dotenv_values`, default settings) all read back exactly
 * the same string:
 *   - no `'` in the value → single quotes: literal in sh and in npm dotenv
 *     (which expands `\n` only inside double quotes); newlines allowed;
 *     python-dotenv also reads `\\` as one backslash and `\'` as a quote there,
 *     so two backslashes in a row, or a value ending in one, are refused;
 *   - a `'` but none of `"` `$` `` ` `` `\` → double quotes: sh expands only
 *     those four there and both dotenv parsers treat them all as literal;
 *   - anything else (a `'` together with one of those four), `${…}` (which
 *     python-dotenv replaces by a variable in any quoting), a carriage return
 *     (npm dotenv rewrites CR LF to LF) or a NUL byte (sh cannot hold it) has
 *     no quoting all three read identically, and is refused naming the key.
 */
export function envQuote(key: string, value: string): string {
  if (value.includes('\0')) throw new FileRenderError('unrepresentable', `env key ${key}: the value contains a NUL byte, which a shell cannot hold`);
  if (value.includes('\r')) {
    throw new FileRenderError('unrepresentable', `env key ${key}: the value contains a carriage return, which dotenv rewrites; no quoting round-trips`);
  }
  if (PYTHON_DOTENV_VARIABLE_RE.test(value)) {
    throw new FileRenderError('unrepresentable', `env key ${key}: the value contains \${…}, which python-dotenv replaces by a variable in any quoting`);
  }
  if (!value.includes("'")) {
    if (value.includes('\\\\') || value.endsWith('\\')) {
      throw new FileRenderError(
        'unrepresentable',
        `env key ${key}: the value has two backslashes in a row or ends in one, which python-dotenv reads differently inside quotes`,
      );
    }
    return `'${value}'`;
  }
  if (!/["$`\\]/.test(value)) return `"${value}"`;
  throw new FileRenderError(
    'unrepresentable',
    `env key ${key}: the value contains a single quote together with one of " $ \` \\; no quoting reads back identically in sh and dotenv`,
  );
}

function scalarText(value: Json): string {
  if (value === null) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  // Arrays stay one value (their JSON text): list positions are not stable names.
  return JSON.stringify(value);
}

function isObject(value: Json): value is { [key: string]: Json } {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Flattens nested objects into `[path, text]` pairs; arrays and scalars are leaves. */
function flatten(prefix: readonly string[], value: Json, out: Array<[readonly string[], string]>): void {
  if (isObject(value)) {
    for (const [key, child] of Object.entries(value)) flatten([...prefix, key], child, out);
    return;
  }
  out.push([prefix, scalarText(value)]);
}

/** The (path, text) pairs of a file's data, prefixed by item names when there are several items. */
function leaves(entries: ReadonlyArray<readonly [string, Json]>): Array<[readonly string[], string]> {
  const out: Array<[readonly string[], string]> = [];
  if (entries.length === 1) {
    const [as, value] = entries[0] as readonly [string, Json];
    // One object item: its keys are the file's keys. One scalar: the item name is the key.
    flatten(isObject(value) ? [] : [as], value, out);
    return out;
  }
  for (const [as, value] of entries) flatten([as], value, out);
  return out;
}

function renderEnv(entries: ReadonlyArray<readonly [string, Json]>): string {
  const lines: string[] = [];
  const origin = new Map<string, string>();
  for (const [path, text] of leaves(entries)) {
    const dotted = path.join('.');
    const key = path.map(envName).join('_');
    if (!ENV_NAME_RE.test(key)) {
      throw new FileRenderError('unrepresentable', `key "${dotted}" gives the env name "${key}", which is not [A-Za-z_][A-Za-z0-9_]*`);
    }
    const earlier = origin.get(key);
    if (earlier !== undefined) throw new FileRenderError('unrepresentable', `keys "${earlier}" and "${dotted}" both give the env name ${key}`);
    origin.set(key, dotted);
    lines.push(`${key}=${envQuote(key, text)}`);
  }
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

// ---- properties -----------------------------------------------------------

/** Java `Properties.store` escaping: `\`, separators, comment starts and controls; non-ASCII as `\uXXXX`. */
export function escapeProperties(text: string, isKey: boolean): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    const code = text.charCodeAt(i);
    switch (ch) {
      case '\\':
        out += '\\\\';
        break;
      case ' ':
        // Keys escape every space; values only a leading one (a trailing one survives: load trims only leading).
        out += isKey || i === 0 ? '\\ ' : ' ';
        break;
      case '\t':
        out += '\\t';
        break;
      case '\n':
        out += '\\n';
        break;
      case '\r':
        out += '\\r';
        break;
      case '\f':
        out += '\\f';
        break;
      case '=':
      case ':':
      case '#':
      case '!':
        out += `\\${ch}`;
        break;
      default:
        out += code < 0x20 || code > 0x7e ? `\\u${code.toString(16).padStart(4, '0')}` : ch;
    }
  }
  return out;
}

function renderProperties(entries: ReadonlyArray<readonly [string, Json]>): string {
  const lines: string[] = [];
  const seen = new Set<string>();
  for (const [path, text] of leaves(entries)) {
    const key = path.join('.');
    if (seen.has(key)) throw new FileRenderError('unrepresentable', `two values have the properties key "${key}"`);
    seen.add(key);
    lines.push(`${escapeProperties(key, true)}=${escapeProperties(text, false)}`);
  }
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

// ---- pem ------------------------------------------------------------------

function renderPem(entries: ReadonlyArray<readonly [string, Json]>): string {
  const parts: string[] = [];
  for (const [as, value] of entries) {
    if (typeof value !== 'string' || !isPem(value)) throw new FileRenderError('not_pem', `item "${as}" is not PEM text (-----BEGIN ...----- blocks)`);
    parts.push(value.trim());
  }
  // Several items concatenate, e.g. a certificate followed by its chain.
  return `${parts.join('\n')}\n`;
}

// ---- templates ------------------------------------------------------------

type Frame = Json;

function lookup(stack: readonly Frame[], name: string): { found: boolean; value?: Json } {
  if (name === '.') return { found: true, value: stack[stack.length - 1] as Json };
  const parts = name.split('.');
  for (let i = stack.length - 1; i >= 0; i--) {
    let current: Json = stack[i] as Json;
    let ok = true;
    for (const part of parts) {
      if (isObject(current) && Object.hasOwn(current, part)) current = current[part] as Json;
      else if (Array.isArray(current) && /^\d+$/.test(part) && Number(part) < current.length) current = current[Number(part)] as Json;
      else {
        ok = false;
        break;
      }
    }
    if (ok) return { found: true, value: current };
  }
  return { found: false };
}

/**
 * Mustache renders a missing name as empty text; a config file missing its
 * password is worse than no file, so every name is resolved first, walking
 * sections as Mustache would, and a missing one is an error naming it.
 */
function checkNames(tokens: readonly unknown[], stack: Frame[]): void {
  for (const raw of tokens) {
    const token = raw as [string, string, number, number, unknown[]?];
    const [type, name] = token;
    if (type !== 'name' && type !== '&' && type !== '#' && type !== '^') continue;
    const hit = lookup(stack, name);
    if (!hit.found) throw new FileRenderError('missing_key', `the template references "${name}", which the items do not have`);
    const children = token[4] ?? [];
    if (type === '^') {
      checkNames(children, stack);
      continue;
    }
    if (type !== '#') continue;
    const value = hit.value as Json;
    if (Array.isArray(value)) for (const element of value) checkNames(children, [...stack, element]);
    else if (value !== null && value !== false && value !== '' && value !== 0) checkNames(children, [...stack, value]);
  }
}

function templateEscape(format: FileFormat, name: () => string): (value: unknown) => string {
  const text = (value: unknown): string => (typeof value === 'string' ? value : JSON.stringify(value));
  switch (format) {
    case 'json':
    case 'yaml':
      // A JSON literal is also a YAML flow scalar, so one escape serves both.
      return (value) => JSON.stringify(value);
    case 'env':
      return (value) => envQuote(name(), text(value));
    case 'properties':
      return (value) => escapeProperties(text(value), false);
    case 'pem':
      return (value) => {
        const t = text(value);
        if (!isPem(t)) throw new FileRenderError('not_pem', `"${name()}" is not PEM text`);
        return t.trim();
      };
    case 'raw':
    case 'jwks':
    case 'pem-bundle':
      return text;
  }
}

function renderTemplate(spec: FileSpec, view: { [key: string]: Json }): string {
  const template = spec.template as string;
  const tokens = Mustache.parse(template) as unknown[];
  checkNames(tokens, [view]);
  // Mustache hands the escape function only the value, so the name for messages comes from a tracking view.
  let current = '';
  const tracked = new Proxy(view, {
    get(target, prop, receiver) {
      if (typeof prop === 'string') current = prop;
      return Reflect.get(target, prop, receiver) as unknown;
    },
  });
  try {
    const out = Mustache.render(template, tracked, {}, { escape: templateEscape(spec.format, () => current) });
    if (spec.format === 'pem' && !isPem(out)) throw new FileRenderError('not_pem', 'the rendered template is not PEM text');
    return out;
  } catch (err) {
    if (err instanceof FileRenderError) throw err;
    throw new FileRenderError('template', `the template failed: ${err instanceof Error ? err.message : String(err)}`);
  }
}

// ---- entry point ----------------------------------------------------------

/**
 * Renders one file. `values` maps each item's `as` name to its value; an absent
 * one is a `missing_item` error naming it.
 */
export function renderFile(spec: FileSpec, values: ReadonlyMap<string, ItemValue>): Buffer {
  for (const item of spec.items) {
    if (!values.has(item.as)) {
      throw new FileRenderError('missing_item', `item ${item.namespace}/${item.name}${item.env ? ` (env ${item.env})` : ''} is not available`);
    }
  }
  if (spec.format === 'jwks' || spec.format === 'pem-bundle') {
    return renderRing(
      spec.format,
      spec.items.map((item) => {
        const value = values.get(item.as) as ItemValue;
        return { label: `${item.namespace}/${item.name}`, current: value, previous: value.previous ?? [] };
      }),
    );
  }
  if (spec.template === undefined && spec.format === 'raw') {
    const only = values.get((spec.items[0] as { as: string }).as) as ItemValue;
    if (only.kind === 'secret') return Buffer.from(only.value);
    const data = itemData(spec.items[0]?.as ?? '', only, 'raw');
    return Buffer.from(typeof data === 'string' ? data : `${JSON.stringify(data, null, 2)}\n`);
  }
  const entries = spec.items.map((item) => [item.as, itemData(`${item.namespace}/${item.name}`, values.get(item.as) as ItemValue, spec.format)] as const);
  if (spec.template !== undefined) return Buffer.from(renderTemplate(spec, Object.fromEntries(entries)));
  const tree: Json = entries.length === 1 ? (entries[0] as readonly [string, Json])[1] : Object.fromEntries(entries);
  switch (spec.format) {
    case 'json':
      return Buffer.from(`${JSON.stringify(tree, null, 2)}\n`);
    case 'yaml':
      if (yamlStringify === undefined) throw new Error('renderFile: loadFormats was not called for a yaml file');
      return Buffer.from(yamlStringify(tree));
    case 'env':
      return Buffer.from(renderEnv(entries));
    case 'properties':
      return Buffer.from(renderProperties(entries));
    case 'pem':
      return Buffer.from(renderPem(entries));
    case 'raw':
      // Refused at config load (raw takes one item); kept for exhaustiveness.
      throw new FileRenderError('unrepresentable', 'format raw takes exactly one item');
  }
}
