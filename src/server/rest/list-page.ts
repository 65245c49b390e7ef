/**
 * Paging of GET /v1/list: `limit` and an opaque `cursor` in, `nextCursor`
 * out. Keyset paging by (namespace, name) in byte order, so a page costs
 * one index range however deep it is, and items written or deleted between
 * pages never shift the ones still to come (no OFFSET). The cursor is the
 * last key a page scanned, bound to the listing's prefix; it is opaque to
 * clients (base64url JSON) so the encoding can change, and it carries no
 * value or secret, so it needs no signature: a forged one only moves the
 * start of a listing the caller may already read.
 */
import { AppError } from '../../shared/errors.ts';
import { SEGMENT_RE, validateNamespace, type ItemRef } from '../../shared/paths.ts';
import type { ListRange } from '../control-plane.ts';

/** Items per page when the request names no `limit`: small enough for one quick answer, enough for most namespaces in one. */
export const LIST_LIMIT_DEFAULT = 1000;
/** The largest `limit` accepted: about 1.5 MB of JSON, answered in tens of milliseconds. */
export const LIST_LIMIT_MAX = 10_000;
/** A cursor longer than this is not one the server made (8 segments of 63 characters and a name, encoded). */
const CURSOR_MAX_CHARS = 1024;

export type ListPage = ListRange;

const CURSOR_HELP = 'pass the nextCursor of the previous page unchanged, or leave cursor out to start from the beginning';

/** Reads `?limit=` and `?cursor=` of a listing of `prefix` (already validated); a bad one is invalid_argument naming it. */
export function parseListPage(query: URLSearchParams, prefix: string): ListPage {
  const limitParam = query.get('limit');
  let limit = LIST_LIMIT_DEFAULT;
  if (limitParam !== null) {
    if (!/^[0-9]{1,6}$/.test(limitParam) || Number(limitParam) < 1 || Number(limitParam) > LIST_LIMIT_MAX) {
      throw new AppError('invalid_argument', `limit must be a whole number from 1 to ${LIST_LIMIT_MAX}, not ${JSON.stringify(limitParam.slice(0, 20))}; leave it out for ${LIST_LIMIT_DEFAULT}.`);
    }
    limit = Number(limitParam);
  }
  const cursor = query.get('cursor');
  if (cursor === null || cursor === '') return { limit, after: undefined };
  return { limit, after: decodeCursor(cursor, prefix) };
}

export function encodeListCursor(prefix: string, after: ItemRef): string {
  return Buffer.from(JSON.stringify({ p: prefix, n: after.namespace, k: after.name })).toString('base64url');
}

function decodeCursor(cursor: string, prefix: string): ItemRef {
  let decoded: unknown;
  try {
    if (cursor.length > CURSOR_MAX_CHARS || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw new Error('not base64url');
    decoded = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw new AppError('invalid_argument', `cursor is not one this server gave; ${CURSOR_HELP}.`);
  }
  const { p, n, k } = (typeof decoded === 'object' && decoded !== null ? decoded : {}) as Record<string, unknown>;
  if (typeof p !== 'string' || typeof n !== 'string' || typeof k !== 'string' || !SEGMENT_RE.test(k) || !isNamespace(n)) {
    throw new AppError('invalid_argument', `cursor is not one this server gave; ${CURSOR_HELP}.`);
  }
  if (p !== prefix) {
    throw new AppError('invalid_argument', `cursor continues a listing of "${p.slice(0, 200)}", not of "${prefix}"; ${CURSOR_HELP}.`);
  }
  return { namespace: n, name: k };
}

function isNamespace(namespace: string): boolean {
  try {
    validateNamespace(namespace);
    return true;
  } catch {
    return false;
  }
}
