/**
 * The data API's key-ring read (`GET /v1/items/{ns...}/{name}?ring=1`, issue
 * 20): the ring as JSON (the server's shape), or with `format=jwks` /
 * `format=pem-bundle` the same bytes a ring-format file would hold. Throws
 * AppError; the request handler turns it into the response.
 */
import { AppError } from '../shared/errors.ts';
import { HEADERS } from '../shared/protocol-constants.ts';
import { ringJson } from '../shared/ring-json.ts';
import type { ItemRef } from '../shared/paths.ts';
import { FileRenderError } from './files/render-error.ts';
import { isRingFormat, renderRing } from './files/ring-formats.ts';
import { JSON_CONTENT_TYPE } from './item-representation.ts';
import { releaseRing, type RingRead } from './ring-store.ts';
import { STALE_WARNING, type BodyResult, type DataRequest } from './request-handler.ts';

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  json: JSON_CONTENT_TYPE,
  jwks: 'application/jwk-set+json',
  'pem-bundle': 'application/x-pem-file',
};

export type RingReader = (ref: ItemRef, env: string) => Promise<RingRead>;

export async function ringResult(req: DataRequest, ref: ItemRef, env: string, query: URLSearchParams, readRing: RingReader | undefined): Promise<BodyResult> {
  const format = query.get('format') ?? 'json';
  if (format !== 'json' && !isRingFormat(format)) throw new AppError('bad_request', 'With ring=1, format must be json, jwks or pem-bundle.');
  if (!readRing) throw new AppError('unavailable', 'This agent does not serve key rings.');
  const ring = await readRing(ref, env);
  try {
    const etag = format === 'json' ? ring.etag : `${ring.etag.slice(0, -1)}-${format}"`;
    const headers: Record<string, string | number> = { etag, [HEADERS.revision]: ring.revision, 'cache-control': 'no-store' };
    if (ring.staleSeconds !== undefined) Object.assign(headers, { warning: STALE_WARNING, [HEADERS.stale]: ring.staleSeconds });
    if (req.headers['if-none-match'] === etag) return { kind: 'body', status: 304, headers, body: undefined };
    let body: Buffer;
    if (format === 'json') {
      body = ringJson({ ...ring, current: { version: ring.current.version, value: ring.current.plaintext }, previous: ring.previous.map((p) => ({ ...p, value: p.plaintext })) });
    } else {
      try {
        const value = (v: { version: number; plaintext: Buffer }) => ({ kind: ring.kind, version: v.version, value: v.plaintext });
        body = renderRing(format, [{ label: `${ring.namespace}/${ring.name}`, current: value(ring.current), previous: ring.previous.map(value) }]);
      } catch (err) {
        if (err instanceof FileRenderError) throw new AppError('invalid_argument', `The key ring cannot be rendered as ${format}: ${err.message}.`);
        throw err;
      }
    }
    Object.assign(headers, { 'content-type': CONTENT_TYPES[format] as string, 'content-length': body.length });
    if (req.method === 'HEAD') {
      body.fill(0);
      return { kind: 'body', status: 200, headers, body: undefined };
    }
    return { kind: 'body', status: 200, headers, body, scrub: body };
  } finally {
    releaseRing(ring);
  }
}
