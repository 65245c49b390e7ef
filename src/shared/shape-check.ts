/**
 * Small hand-written readers for JSON shapes the agent checks at run time
 * (upstream responses, POST bodies, the settings handoff). zod would do the
 * same, but it is the largest library the agent's process would load for a
 * handful of fixed shapes (docs/FOOTPRINT-LOG.md). Each reader
 * returns the value as its type or throws a `ShapeError` naming where the
 * value first went wrong (`layers.0.keyVersion: expected an integer`);
 * `checked` turns that into a discriminated result at the edge. Objects are
 * rebuilt from the known keys only, so nothing a peer adds is kept.
 */

/** The outcome of a shape check: the value, or where it first went wrong. */
export type Checked<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: string };

export class ShapeError extends Error {
  override readonly name = 'ShapeError';
}

/** `path: problem`, or the problem alone at the top. */
const at = (path: string, problem: string): ShapeError => new ShapeError(path === '' ? problem : `${path}: ${problem}`);

const join = (path: string, key: string | number): string => (path === '' ? String(key) : `${path}.${key}`);

/** What a value is, for messages: `received string`. */
function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

export function record(value: unknown, path: string): Readonly<Record<string, unknown>> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw at(path, `expected an object, received ${kindOf(value)}`);
  return value as Record<string, unknown>;
}

/** Refuses keys outside `known`, as a strict schema does. */
export function onlyKeys(value: Readonly<Record<string, unknown>>, known: readonly string[], path: string): void {
  const extra = Object.keys(value).filter((key) => !known.includes(key));
  if (extra.length > 0) throw at(path, `unknown key(s) ${extra.map((key) => JSON.stringify(key)).join(', ')}`);
}

export function string(value: unknown, path: string): string {
  if (typeof value !== 'string') throw at(path, `expected a string, received ${kindOf(value)}`);
  return value;
}

export function boolean(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') throw at(path, `expected true or false, received ${kindOf(value)}`);
  return value;
}

/** A safe integer (revisions and versions stay below 2^53). */
export function integer(value: unknown, path: string): number {
  if (!Number.isSafeInteger(value)) throw at(path, `expected an integer, received ${typeof value === 'number' ? String(value) : kindOf(value)}`);
  return value as number;
}

export function finiteNumber(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw at(path, `expected a number, received ${kindOf(value)}`);
  return value;
}

export function oneOf<T extends string>(value: unknown, options: readonly T[], path: string): T {
  if (typeof value !== 'string' || !(options as readonly string[]).includes(value)) {
    throw at(path, `expected one of ${options.map((o) => JSON.stringify(o)).join(', ')}, received ${typeof value === 'string' ? JSON.stringify(value.slice(0, 32)) : kindOf(value)}`);
  }
  return value as T;
}

/** Each element read by `item`; at least `min` of them. */
export function array<T>(value: unknown, path: string, item: (element: unknown, path: string) => T, min = 0): T[] {
  if (!Array.isArray(value)) throw at(path, `expected an array, received ${kindOf(value)}`);
  if (value.length < min) throw at(path, `expected at least ${min} element(s), received ${value.length}`);
  return value.map((element, index) => item(element, join(path, index)));
}

/** Absent (undefined) stays absent; anything else must satisfy `read`. */
export function optional<T>(value: unknown, path: string, read: (value: unknown, path: string) => T): T | undefined {
  return value === undefined ? undefined : read(value, path);
}

/** `record[key]` read by `read`, with the key appended to the path. */
export function field<T>(value: Readonly<Record<string, unknown>>, key: string, path: string, read: (value: unknown, path: string) => T): T {
  return read(value[key], join(path, key));
}

/** Runs a reader at the edge: the value, or the first problem as a message. */
export function checked<T>(read: () => T): Checked<T> {
  try {
    return { ok: true, value: read() };
  } catch (err) {
    if (err instanceof ShapeError) return { ok: false, error: err.message };
    throw err;
  }
}
