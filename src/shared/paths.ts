/**
 * Item addressing (DESIGN.md §2): a namespace path of 1–8 segments plus a name,
 * each segment `[a-z0-9][a-z0-9._-]{0,62}`. Prefixes match whole segments, so
 * `production/ml` never matches `production/ml-admin`.
 */
import { AppError } from './errors.ts';

export const SEGMENT_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const MAX_NAMESPACE_SEGMENTS = 8;

/** A validated item address. */
export interface ItemRef {
  readonly namespace: string;
  readonly name: string;
}

function segmentProblem(segment: string): string | undefined {
  if (segment === '') return 'an empty segment (double or trailing slash)';
  if (segment === '.' || segment === '..') return `the segment "${segment}" (relative paths are not allowed)`;
  if (!SEGMENT_RE.test(segment)) {
    return `the segment "${segment.slice(0, 70)}" (segments are 1-63 characters of a-z, 0-9, ".", "_" or "-", starting with a letter or digit)`;
  }
  return undefined;
}

/** Validates a namespace path (`a/b/c`); throws `invalid_path` naming the bad segment. */
export function validateNamespace(namespace: string, what = 'namespace'): string {
  const segments = namespace.split('/');
  if (segments.length > MAX_NAMESPACE_SEGMENTS) {
    throw new AppError('invalid_path', `The ${what} has ${segments.length} segments; at most ${MAX_NAMESPACE_SEGMENTS} are allowed.`);
  }
  for (const segment of segments) {
    const problem = segmentProblem(segment);
    if (problem) throw new AppError('invalid_path', `The ${what} contains ${problem}.`);
  }
  return namespace;
}

/** Validates a namespace prefix; same rules as a namespace. */
export function validatePrefix(prefix: string): string {
  return validateNamespace(prefix.replace(/\/+$/, ''), 'prefix');
}

export function validateName(name: string): string {
  const problem = segmentProblem(name);
  if (problem) throw new AppError('invalid_path', `The item name is ${problem}.`);
  return name;
}

/**
 * Splits `namespace.../name` (already URL-decoded segments joined by `/`) into a
 * validated reference. The last segment is the name; at least one namespace
 * segment is required.
 */
export function parseItemPath(path: string): ItemRef {
  const trimmed = path.replace(/^\/+/, '');
  const cut = trimmed.lastIndexOf('/');
  if (cut <= 0) {
    throw new AppError('invalid_path', 'An item path is "<namespace>/<name>", e.g. "production/ml-service/db-password".');
  }
  const namespace = validateNamespace(trimmed.slice(0, cut));
  const name = validateName(trimmed.slice(cut + 1));
  return { namespace, name };
}

/**
 * Decodes the raw path remainder of a URL (after the route prefix) into segments,
 * refusing encoded slashes and dot segments so no path can escape its route.
 */
export function decodePathRemainder(raw: string): string {
  const segments = raw.split('/');
  const decoded: string[] = [];
  for (const segment of segments) {
    let value: string;
    try {
      value = decodeURIComponent(segment);
    } catch {
      throw new AppError('invalid_path', 'The path contains an invalid percent-encoding.');
    }
    if (value.includes('/')) throw new AppError('invalid_path', 'The path contains an encoded "/".');
    decoded.push(value);
  }
  return decoded.join('/');
}

/** True when `namespace` equals `prefix` or lies under it on a segment boundary. */
export function namespaceMatchesPrefix(namespace: string, prefix: string): boolean {
  const p = prefix.replace(/\/+$/, '');
  return namespace === p || namespace.startsWith(`${p}/`);
}

/** True when the namespace lies under any of the prefixes. */
export function namespaceMatchesAny(namespace: string, prefixes: readonly string[]): boolean {
  return prefixes.some((prefix) => namespaceMatchesPrefix(namespace, prefix));
}

const SLASH = 0x2f;

/**
 * namespaceMatchesAny with the prefixes normalised once, for matching many
 * namespaces against the same prefixes (a Watch stream is offered every
 * committed event: thousands of streams per event, no regex or string built per call).
 */
export function namespaceMatcher(prefixes: readonly string[]): (namespace: string) => boolean {
  const bases = prefixes.map((prefix) => prefix.replace(/\/+$/, ''));
  return (namespace) => {
    for (const base of bases) if (namespace.startsWith(base) && (namespace.length === base.length || namespace.charCodeAt(base.length) === SLASH)) return true;
    return false;
  };
}

/** `namespace/name`, the printable key of an item. */
export function itemKey(ref: ItemRef): string {
  return `${ref.namespace}/${ref.name}`;
}
