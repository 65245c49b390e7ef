/**
 * An item's two data API representations (the JSON document and the raw
 * bytes), each with the response headers that do not change between reads,
 * computed once when the value is cached so a read only adds `Age` (and the
 * staleness headers). The raw representation has its own ETag (`"<etag>-raw"`).
 */
import type { ItemKind } from '../shared/protocol.ts';

export const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';
const OCTET_STREAM = 'application/octet-stream';

export interface Representation {
  readonly body: Buffer;
  readonly etag: string;
  readonly contentType: string;
  /** `X-Config-Revision`. */
  readonly revision: number;
}

export interface Representations {
  readonly json: Representation;
  readonly raw: Representation;
}

/** Both representations over the entry's own buffers (nothing is copied). */
export function representations(value: { readonly kind: ItemKind; readonly etag: string; readonly revision: number; readonly plaintext: Buffer; readonly json: Buffer }): Representations {
  return {
    json: { body: value.json, etag: value.etag, contentType: JSON_CONTENT_TYPE, revision: value.revision },
    raw: { body: value.plaintext, etag: `${value.etag.slice(0, -1)}-raw"`, contentType: value.kind === 'config' ? JSON_CONTENT_TYPE : OCTET_STREAM, revision: value.revision },
  };
}
