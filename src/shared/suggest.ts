/**
 * "Did you mean" for a misspelt key: the closest known key by edit distance
 * (fastest-levenshtein), offered only when it is close enough to be a typo.
 */
import { closest, distance } from 'fastest-levenshtein';
import type { z } from 'zod';

/** The closest candidate within max(2, a third of the word's length) edits, or undefined. */
export function closestMatch(word: string, candidates: readonly string[]): string | undefined {
  if (candidates.length === 0) return undefined;
  const best = closest(word.toLowerCase(), candidates.map((c) => c.toLowerCase()));
  const index = candidates.findIndex((c) => c.toLowerCase() === best);
  return distance(word.toLowerCase(), best) <= Math.max(2, Math.floor(word.length / 3)) ? candidates[index] : undefined;
}

/** `unknown key(s) "prefech" (did you mean "prefetch"?)`, for the keys a schema knows at `path`. */
export function describeUnknownKeys(keys: readonly string[], schema: z.ZodType, path: ReadonlyArray<PropertyKey>): string {
  const known = knownKeysAt(schema, path);
  return `unknown key(s) ${keys
    .map((key) => {
      const match = closestMatch(key, known);
      return match ? `"${key}" (did you mean "${match}"?)` : `"${key}"`;
    })
    .join(', ')}`;
}

interface SchemaDef {
  readonly type?: string;
  readonly shape?: Record<string, unknown>;
  readonly element?: unknown;
  readonly innerType?: unknown;
  readonly in?: unknown;
}

function defOf(schema: unknown): SchemaDef | undefined {
  return (schema as { _zod?: { def?: SchemaDef } } | undefined)?._zod?.def;
}

/** The keys of the object schema found by walking `path` through objects, arrays and wrappers. */
export function knownKeysAt(schema: z.ZodType, path: ReadonlyArray<PropertyKey>): string[] {
  let current: unknown = schema;
  let rest = [...path];
  for (let guard = 0; guard < 64 && current; guard++) {
    const def = defOf(current);
    if (!def) return [];
    if (def.innerType) {
      current = def.innerType;
    } else if (def.type === 'pipe') {
      current = def.in;
    } else if (def.type === 'object' && def.shape) {
      if (rest.length === 0) return Object.keys(def.shape);
      current = def.shape[String(rest[0])];
      rest = rest.slice(1);
    } else if (def.type === 'array') {
      current = def.element;
      rest = rest.slice(1);
    } else {
      return [];
    }
  }
  return [];
}
