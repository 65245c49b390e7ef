/**
 * The shape of validated `AgentSettings` as plain JSON, checked by hand, for
 * settings that crossed a process boundary: the bin's re-exec hands the
 * first image's settings to the serving one (cli/agent-handoff.ts), and a
 * `--config` reload gets them back from the short-lived process that ran
 * the schema (config-validator.ts). Neither reader may load zod, so this
 * guard checks each field's type against `AgentSettings` (a setting the
 * schema gains is a compile error here until it is listed); the values
 * themselves were checked by the schema that made them.
 */
import type { AgentSettings } from './agent-settings.ts';
import { LOG_LEVELS } from '../shared/log-levels.ts';
import type { ListenAddress } from '../shared/settings.ts';
import type { ItemRef } from '../shared/paths.ts';
import { FILE_FORMATS, type FileItem, type FileSpec } from './files/file-spec.ts';
import type { ReloadHook } from './files/reload-hook.ts';
import { array, boolean, field, finiteNumber, integer, oneOf, onlyKeys, optional, record, string } from '../shared/shape-check.ts';

type Reader<T> = (value: unknown, path: string) => T;

const opt =
  <T>(read: Reader<T>): Reader<T | undefined> =>
  (value, path) =>
    optional(value, path, read);
const strings: Reader<string[]> = (value, path) => array(value, path, string);
const listen: Reader<ListenAddress> = (value, path) => {
  const o = record(value, path);
  onlyKeys(o, ['host', 'port'], path);
  return { host: field(o, 'host', path, string), port: field(o, 'port', path, integer) };
};
const itemRef: Reader<ItemRef> = (value, path) => {
  const o = record(value, path);
  onlyKeys(o, ['namespace', 'name'], path);
  return { namespace: field(o, 'namespace', path, string), name: field(o, 'name', path, string) };
};
const literalOr =
  <const L extends string, T>(literals: readonly L[], read: Reader<T>): Reader<L | T> =>
  (value, path) =>
    typeof value === 'string' ? oneOf<L>(value, literals, path) : read(value, path);

const fileItem: Reader<FileItem> = (value, path) => {
  const o = record(value, path);
  onlyKeys(o, ['namespace', 'name', 'env', 'as'], path);
  const env = field(o, 'env', path, opt(string));
  return Object.freeze({ namespace: field(o, 'namespace', path, string), name: field(o, 'name', path, string), ...(env === undefined ? {} : { env }), as: field(o, 'as', path, string) });
};
const reloadHook: Reader<ReloadHook> = (value, path) => {
  const o = record(value, path);
  onlyKeys(o, ['url', 'method', 'timeoutMs', 'retries'], path);
  return Object.freeze({
    url: field(o, 'url', path, string),
    method: field(o, 'method', path, (v, at) => oneOf(v, ['POST', 'PUT', 'GET'] as const, at)),
    timeoutMs: field(o, 'timeoutMs', path, finiteNumber),
    retries: field(o, 'retries', path, integer),
  });
};
/** A `files:` entry as file-spec-schema.ts makes it (the renderer's `FileSpec`), not as an operator writes it. */
const fileSpec: Reader<FileSpec> = (value, path) => {
  const o = record(value, path);
  onlyKeys(o, ['path', 'items', 'format', 'template', 'mode', 'onChange'], path);
  const template = field(o, 'template', path, opt(string));
  const onChange = field(o, 'onChange', path, opt(reloadHook));
  return Object.freeze({
    path: field(o, 'path', path, string),
    items: Object.freeze(field(o, 'items', path, (v, at) => array(v, at, fileItem, 1))),
    format: field(o, 'format', path, (v, at) => oneOf(v, FILE_FORMATS, at)),
    ...(template === undefined ? {} : { template }),
    mode: field(o, 'mode', path, integer),
    ...(onChange === undefined ? {} : { onChange }),
  });
};

/** One reader per setting; the mapped type makes a setting the schema gains a compile error until it is listed. */
const FIELDS: { readonly [K in keyof AgentSettings]-?: Reader<AgentSettings[K]> } = {
  config: opt(string),
  server: strings,
  serverGrpc: strings,
  serverCa: opt(string),
  insecure: boolean,
  tokenFile: opt(string),
  env: string,
  prefix: strings,
  prefetch: (value, path) => array(value, path, itemRef),
  socket: string,
  httpListen: literalOr(['off'], listen),
  adminListen: listen,
  cacheTtl: finiteNumber,
  cacheMaxEntries: integer,
  cacheMaxBytes: opt(finiteNumber),
  memoryLimit: literalOr(['auto', 'none'], finiteNumber),
  maxStale: finiteNumber,
  refetchJitter: finiteNumber,
  logLevel: (value, path) => oneOf(value, LOG_LEVELS, path),
  otlpEndpoint: opt(string),
  traceSampleRatio: finiteNumber,
  agentId: opt(string),
  appHealthUrl: opt(string),
  filesDir: opt(string),
  snapshotDir: opt(string),
  snapshotInterval: finiteNumber,
  // Validated specs: the serving process does not load their schema (zod, mustache).
  files: opt((value, path) => array(value, path, fileSpec)),
};

/** The frozen settings in `value`, or a ShapeError naming the first field (under `path`) that is not what the schema makes. */
export function readAgentSettings(value: unknown, path: string): AgentSettings {
  const raw = record(value, path);
  onlyKeys(raw, Object.keys(FIELDS), path);
  const settings: Record<string, unknown> = {};
  for (const [key, read] of Object.entries(FIELDS) as Array<[string, Reader<unknown>]>) {
    const setting = field(raw, key, path, read);
    if (setting !== undefined) settings[key] = setting;
  }
  return Object.freeze(settings) as AgentSettings;
}

/** Flag values as commander gives them (strings, lists of strings, `true`). */
export function readFlags(value: unknown, path: string): Record<string, unknown> {
  const o = record(value, path);
  const flag: Reader<unknown> = (v, at) => (typeof v === 'boolean' ? v : Array.isArray(v) ? strings(v, at) : string(v, at));
  return Object.fromEntries(Object.keys(o).map((key) => [key, field(o, key, path, flag)]));
}
