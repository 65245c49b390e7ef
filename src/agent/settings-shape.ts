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
  // Raw entries: the files renderer parses them with file-spec.ts (loaded only with files:).
  files: opt((value, path) => array(value, path, (entry) => entry)),
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
