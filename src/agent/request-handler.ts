/**
 * The data API as one pure decision (STYLE.md §2): (request, dependencies) →
 * result, the same for the socket and the TCP listener, tested without
 * sockets. Checks run in a fixed chain, like the AWS Secrets Manager Agent's:
 * forwarded header → pod token (TCP) → method → body → route → prefix →
 * read. Errors become a response in exactly one place (`errorResult`).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { AppError, errorBody, toAppError } from '../shared/errors.ts';
import { decodePathRemainder, namespaceMatchesAny, parseItemPath, validatePrefix, type ItemRef } from '../shared/paths.ts';
import { HEADERS } from '../shared/protocol-constants.ts';
import type { Bytes } from '../shared/units.ts';
import { contentType, JSON_CONTENT_TYPE } from './item-representation.ts';
import type { ReadResult, VariantMemo } from './value-cache.ts';
import { wantsRing } from '../shared/ring-proto.ts';
import { ringResult, type RingReader } from './ring-response.ts';
import { podTokenAccepted, type TokenProof } from './pod-token.ts';

/** The data API takes no request body; anything larger is refused without reading it. */
export const MAX_REQUEST_BODY_BYTES: Bytes = 1024;
export const MAX_URL_LENGTH = 2048;
const FORWARDED_HEADERS = ['x-forwarded-for', 'forwarded', 'via'] as const;
export const STALE_WARNING = '110 - "Response is Stale"';
const ITEMS_ROUTE = '/v1/items/';
const WATCH_ROUTE = '/v1/watch';
/** POST: the application's health signal (app-health.ts); the one route that takes a body. */
export const HEALTH_ROUTE = '/v1/health';

export type ListenerKind = 'socket' | 'tcp';

export interface DataRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly listener: ListenerKind;
  /** The TCP connection's pod-token proof (pod-token.ts), kept by the listener; undefined on the socket. */
  readonly tokenProof?: TokenProof | undefined;
}

/**
 * A complete response. `lease` is the read whose value the body is written
 * from: the listener hands it to `HandlerDeps.release` once the bytes have
 * left (data, not a closure, so a read allocates no function).
 */
export interface BodyResult {
  readonly kind: 'body';
  readonly status: number;
  /** An object, or for an item read a flat `HeaderList` (cheaper for node to write). */
  readonly headers: Readonly<Record<string, string | number>> | HeaderList;
  readonly body: Buffer | undefined;
  readonly lease?: ReadResult | undefined;
  /** A body made for this response only (a key ring's rendering): zero-filled once its bytes have left. */
  readonly scrub?: Buffer | undefined;
}

/**
 * Response headers as a flat list, name, value, name, value, … (lower-case
 * names), as `res.writeHead` takes them: node writes an object's headers
 * through a `for…in` with an own-property check per name, which costs a
 * cached read more than building this list does (docs/FOOTPRINT-LOG.md, h28).
 */
export type HeaderList = readonly (string | number)[];

/** Hand the connection to the SSE stream. */
export interface SseResult {
  readonly kind: 'sse';
  /** '' = every prefix this agent serves. */
  readonly prefix: string;
  readonly sinceRevision: number | undefined;
}

/** Read the (small) body and hand it to the health signal. */
export interface HealthResult {
  readonly kind: 'health';
}

export type DataResult = BodyResult | SseResult | HealthResult;

export interface HandlerDeps {
  readonly prefixes: () => readonly string[];
  /** The pod token TCP callers must present. */
  readonly podToken: Buffer;
  readonly env: string;
  read(ref: ItemRef, env: string): Promise<ReadResult>;
  /**
   * A synchronous cache hit, or undefined (then `read`); lets a hit skip every
   * promise. `key` is `cacheKey(ref, env)`, remembered per URL, and `memo`
   * the URL's memo of that key's entry (value-cache.ts `VariantMemo`).
   */
  readCached?(ref: ItemRef, env: string, key: string | undefined, memo?: VariantMemo): ReadResult | undefined;
  /** The cache's key for an (item, env) (value-cache.ts `variantKey`), remembered per URL so a read builds none. */
  cacheKey?(ref: ItemRef, env: string): string;
  release(result: ReadResult): void;
  /** `?ring=1` reads (issue 20, ring-response.ts). */
  readRing?: RingReader | undefined;
}


export function errorResult(err: unknown): BodyResult {
  const appError = toAppError(err);
  const body = Buffer.from(JSON.stringify(errorBody(appError)));
  return {
    kind: 'body',
    status: appError.httpStatus,
    headers: { 'content-type': JSON_CONTENT_TYPE, 'content-length': body.length, 'cache-control': 'no-store', ...appError.headers },
    body,
  };
}

function etagMatches(ifNoneMatch: string | undefined, etag: string): boolean {
  if (!ifNoneMatch) return false;
  if (ifNoneMatch.trim() === '*') return true;
  return ifNoneMatch.split(',').some((tag) => tag.trim().replace(/^W\//, '') === etag);
}

/**
 * The forwarded header a refused request carries. Its own function: a closure
 * in `checkCaller` would make V8 allocate a context on every call.
 */
function forwardedHeader(headers: IncomingHttpHeaders): string | undefined {
  return FORWARDED_HEADERS.find((name) => headers[name] !== undefined);
}

/** Checks that run before routing; throws the refusal. */
export function checkCaller(req: DataRequest, deps: Pick<HandlerDeps, 'podToken'>): void {
  const { headers } = req;
  // Three named reads (monomorphic) before the search that names the refusal: a cached read only pays the first line.
  if (headers['x-forwarded-for'] !== undefined || headers.forwarded !== undefined || headers.via !== undefined) {
    throw new AppError('forwarded_request', `Requests carrying ${forwardedHeader(headers)} are refused: the agent serves its own pod only.`);
  }
  if (req.listener === 'tcp' && !podTokenAccepted(headers[HEADERS.podToken], deps.podToken, req.tokenProof)) {
    throw new AppError('unauthenticated', `Send the pod token (the file "token" next to the agent socket) in ${HEADERS.podToken}.`);
  }
  if (req.method !== 'GET' && req.method !== 'HEAD' && !(req.method === 'POST' && req.url === HEALTH_ROUTE)) {
    throw new AppError('method_not_allowed', `The data API is read-only: use GET (POST only for ${HEALTH_ROUTE}).`, { headers: { allow: 'GET, HEAD' } });
  }
  const length = Number(headers['content-length'] ?? 0);
  if (headers['transfer-encoding'] !== undefined || !(length <= MAX_REQUEST_BODY_BYTES)) {
    throw new AppError('payload_too_large', 'The data API takes no request body.');
  }
  if (req.url.length > MAX_URL_LENGTH) throw new AppError('invalid_path', `The URL is longer than ${MAX_URL_LENGTH} characters.`);
}

/**
 * An item read's URL, parsed: the item and the representation asked for;
 * also the cache's memo of the entry `key` names (`VariantMemo`).
 */
interface ItemUrl extends VariantMemo {
  readonly ref: ItemRef;
  readonly raw: boolean;
  /** `?ring=1` (issue 20): the query, for the ring's own format handling. */
  readonly ring: URLSearchParams | undefined;
  /**
   * The prefix list (by identity) the item was last found inside, so a hot
   * key skips the prefix match; a different list (a reload) matches again.
   */
  allowedBy: readonly string[] | undefined;
  /** `HandlerDeps.cacheKey` of the item in `keyEnv` (the env the listener serves), made on the URL's first read. */
  key: string | undefined;
  keyEnv: string | undefined;
}

/**
 * Parsed item URLs (path and `format`), so a hot key's URL is split, decoded
 * and validated once, not per request: a cached read then costs one map
 * lookup here. Only valid URLs are kept; a bad one throws each time.
 */
const URL_MEMO_MAX = 10_000;
const urlMemo = new Map<string, ItemUrl>();

function parseItemUrl(url: string): ItemUrl | undefined {
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  if (!path.startsWith(ITEMS_ROUTE)) return undefined;
  const ref = parseItemPath(decodePathRemainder(path.slice(ITEMS_ROUTE.length)));
  const search = q === -1 ? undefined : url.slice(q + 1);
  if (search?.includes('ring=')) {
    const query = new URLSearchParams(search);
    if (wantsRing(query)) return newItemUrl(ref, false, query);
  }
  const format = formatParam(search);
  if (format !== 'json' && format !== 'raw') throw new AppError('bad_request', 'format must be json or raw.');
  return newItemUrl(ref, format === 'raw', undefined);
}

/**
 * Every field from the start, in one literal: all memo entries share one
 * hidden class that never changes as a URL's reads fill them in, so the
 * handler's loads of them stay monomorphic.
 */
function newItemUrl(ref: ItemRef, raw: boolean, ring: URLSearchParams | undefined): ItemUrl {
  return { ref, raw, ring, allowedBy: undefined, key: undefined, keyEnv: undefined, entry: undefined, entryOf: undefined };
}

function itemUrl(url: string): ItemUrl | undefined {
  const memo = urlMemo.get(url);
  if (memo) return memo;
  const parsed = parseItemUrl(url);
  if (!parsed) return undefined;
  if (urlMemo.size >= URL_MEMO_MAX) urlMemo.clear();
  urlMemo.set(url, parsed);
  return parsed;
}

/**
 * The `format` query parameter. The two exact forms clients send skip building
 * a URLSearchParams per cached read (it showed in the CPU profile); anything
 * else is parsed in full, so the result is the same either way.
 */
function formatParam(search: string | undefined): string {
  if (search === undefined || search === '') return 'json';
  if (search === 'format=raw') return 'raw';
  if (search === 'format=json') return 'json';
  return new URLSearchParams(search).get('format') ?? 'json';
}

/**
 * Decides the response for one request. Never throws: every failure is a
 * result. A cache hit answers synchronously; anything else returns a promise.
 */
export function handleDataRequest(req: DataRequest, deps: HandlerDeps): DataResult | Promise<DataResult> {
  try {
    checkCaller(req, deps);
    const item = itemUrl(req.url);
    if (item) {
      const { ref } = item;
      const prefixes = deps.prefixes();
      if (item.allowedBy !== prefixes) {
        if (!namespaceMatchesAny(ref.namespace, prefixes)) {
          throw new AppError('permission_denied', `${ref.namespace} is outside this pod's prefixes (${prefixes.join(', ')}).`);
        }
        item.allowedBy = prefixes;
      }
      if (item.ring) return ringResult(req, ref, deps.env, item.ring, deps.readRing).catch(errorResult);
      if (item.keyEnv !== deps.env && deps.cacheKey) {
        item.key = deps.cacheKey(ref, deps.env);
        item.keyEnv = deps.env;
        item.entryOf = undefined;
      }
      const known = item.keyEnv === deps.env;
      const hit = deps.readCached?.(ref, deps.env, known ? item.key : undefined, known ? item : undefined);
      if (hit) return itemResult(req, deps, hit, item);
      return readThenAnswer(req, deps, item);
    }
    const q = req.url.indexOf('?');
    const path = q === -1 ? req.url : req.url.slice(0, q);
    const search = q === -1 ? undefined : req.url.slice(q + 1);
    if (path === WATCH_ROUTE) return watchStream(req, deps, new URLSearchParams(search));
    if (path === HEALTH_ROUTE) {
      if (req.method !== 'POST') throw new AppError('method_not_allowed', `Use POST for ${HEALTH_ROUTE} with {"healthy": true|false, "reason"?: "..."}.`, { headers: { allow: 'POST' } });
      return { kind: 'health' };
    }
    throw new AppError('not_found', `No route ${path.slice(0, 100)}; use /v1/items/<namespace>/<name> or /v1/watch?prefix=<namespace>.`);
  } catch (err) {
    return errorResult(err);
  }
}

/** A read the cache cannot answer now. Its own function: the closure in `handleDataRequest` would cost every read a context. */
function readThenAnswer(req: DataRequest, deps: HandlerDeps, item: ItemUrl): Promise<DataResult> {
  return deps.read(item.ref, deps.env).then((result) => itemResult(req, deps, result, item), errorResult);
}

function itemResult(req: DataRequest, deps: HandlerDeps, result: ReadResult, item: ItemUrl): BodyResult {
  const { value } = result;
  const { raw } = item;
  // The ETag of either representation and both bodies were made when the value was cached.
  const etag = raw ? value.rawEtag : value.etag;
  const ifNoneMatch = req.headers['if-none-match'];
  if (ifNoneMatch !== undefined && etagMatches(ifNoneMatch, etag)) {
    deps.release(result);
    const headers = ['etag', etag, 'age', result.ageSeconds, 'x-config-revision', value.revision, 'cache-control', 'no-store'];
    return { kind: 'body', status: 304, headers: result.source === 'stale' ? withStaleness(headers, result) : headers, body: undefined };
  }
  const body = raw ? value.plaintext : value.json;
  // A fresh list per read: one young array, no per-URL memo to hold (h28: node writes a list faster than
  // the object q16 shared, and the memo's comparisons and memory go with it).
  const headers = ['etag', etag, 'age', result.ageSeconds, 'x-config-revision', value.revision, 'cache-control', 'no-store', 'content-type', contentType(value.kind, raw), 'content-length', body.length];
  if (result.source === 'stale') withStaleness(headers, result);
  if (req.method === 'HEAD') {
    deps.release(result);
    return { kind: 'body', status: 200, headers, body: undefined };
  }
  return { kind: 'body', status: 200, headers, body, lease: result };
}

function withStaleness(headers: Array<string | number>, result: ReadResult): HeaderList {
  headers.push('warning', STALE_WARNING, HEADERS.stale, result.staleSeconds);
  return headers;
}

function watchStream(req: DataRequest, deps: HandlerDeps, query: URLSearchParams): SseResult {
  const requested = query.get('prefix') ?? '';
  const prefix = requested === '' ? '' : validatePrefix(requested);
  if (prefix !== '' && !namespaceMatchesAny(prefix, deps.prefixes())) {
    throw new AppError('permission_denied', `${prefix} is outside this pod's prefixes (${deps.prefixes().join(', ')}).`);
  }
  const lastEventId = req.headers['last-event-id'] ?? query.get('lastEventId') ?? undefined;
  let sinceRevision: number | undefined;
  if (typeof lastEventId === 'string' && lastEventId !== '') {
    if (!/^\d{1,15}$/.test(lastEventId)) throw new AppError('bad_request', 'Last-Event-ID must be a revision number.');
    sinceRevision = Number(lastEventId);
  }
  return { kind: 'sse', prefix: prefix.replace(/\/+$/, ''), sinceRevision };
}
