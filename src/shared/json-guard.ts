/**
 * Limits on the shape of untrusted JSON, checked on the raw text before
 * anything recursive (zod, merge, stringify) walks it: a body nested thousands
 * deep would otherwise overflow the stack (a 500) instead of being refused.
 */
import { AppError } from './errors.ts';

/** Objects and arrays nest at most this deep (documented in docs/SERVER.md). */
export const MAX_JSON_DEPTH = 64;

const OPEN_OBJECT = 0x7b;
const OPEN_ARRAY = 0x5b;
const CLOSE_OBJECT = 0x7d;
const CLOSE_ARRAY = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Throws `invalid_json` when the text nests objects/arrays deeper than `max` (one linear pass, strings skipped). */
export function assertJsonDepth(text: Buffer, max: number = MAX_JSON_DEPTH): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) {
      inString = true;
    } else if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      if (++depth > max) throw new AppError('invalid_json', `The JSON is nested more than ${max} levels deep; flatten it.`);
    } else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
      depth--;
    }
  }
}

/**
 * Refuses a `__proto__` key anywhere: JSON.parse keeps it as an own property,
 * but every later copy (schema validation, merge) turns it into a prototype
 * assignment and silently drops it, so the stored value would not be what was
 * sent. Call after `assertJsonDepth`, which bounds this walk's recursion.
 */
export function assertNoProtoKeys(value: unknown, path = '$'): void {
  if (Array.isArray(value)) {
    value.forEach((v, i) => assertNoProtoKeys(v, `${path}[${i}]`));
  } else if (typeof value === 'object' && value !== null) {
    if (Object.hasOwn(value, '__proto__')) {
      throw new AppError('invalid_json', `The key "__proto__" (at ${path}) is not allowed in a JSON body; rename it.`);
    }
    for (const [key, v] of Object.entries(value)) assertNoProtoKeys(v, `${path}.${key.slice(0, 40)}`);
  }
}

/** Parses untrusted JSON text under the depth limit, refusing `__proto__` keys. */
export function parseUntrustedJson(text: Buffer): unknown {
  assertJsonDepth(text);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.toString('utf8')) as unknown;
  } catch {
    throw new AppError('invalid_json', 'The request body is not valid JSON.');
  }
  assertNoProtoKeys(parsed);
  return parsed;
}
