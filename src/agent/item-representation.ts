/**
 * An item's two data API representations: the JSON document (the entry's
 * rendered body, its ETag) and the raw bytes (the plaintext, ETag
 * `"<etag>-raw"`). The raw ETag is derived once when the value is cached;
 * the rest is read off the entry, so a read allocates only its headers.
 */
import type { ItemKind } from '../shared/protocol.ts';

export const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';
const OCTET_STREAM = 'application/octet-stream';

/** The raw representation's ETag: its own validator, so a 304 never mixes representations. */
export function rawEtag(etag: string): string {
  return `${etag.slice(0, -1)}-raw"`;
}

export function contentType(kind: ItemKind, raw: boolean): string {
  return raw && kind !== 'config' ? OCTET_STREAM : JSON_CONTENT_TYPE;
}
