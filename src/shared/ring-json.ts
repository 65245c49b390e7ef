/**
 * The JSON body of a ring read (`?ring=1`, `RingResponse` in ring-proto.ts),
 * built around the plaintext bytes without parsing them, the same on the
 * server and the agent: a config value is already JSON; a secret is UTF-8
 * text when valid, else base64 with `"encoding": "base64"`. Only the returned
 * buffer holds the values; every intermediate copy is zero-filled.
 */
import { isUtf8 } from 'node:buffer';
import { zeroize } from './crypto.ts';
import type { ItemKind } from './protocol.ts';
import type { Milliseconds } from './units.ts';

export interface RingJsonInput {
  readonly namespace: string;
  readonly name: string;
  readonly kind: ItemKind;
  readonly env: string;
  readonly revision: number;
  readonly etag: string;
  readonly current: { readonly version: number; readonly value: Buffer };
  readonly previous: ReadonlyArray<{ readonly version: number; readonly value: Buffer; readonly retiredAt: Milliseconds; readonly expiresAt: Milliseconds }>;
}

/** `{"version":N,"value":<value>[,"encoding":"base64"]<extra>}`, appended to `parts`. */
function entry(parts: Buffer[], kind: ItemKind, version: number, value: Buffer, extra: string): void {
  parts.push(Buffer.from(`{"version":${version},"value":`));
  if (kind === 'config') {
    parts.push(Buffer.from(value));
    parts.push(Buffer.from(`${extra}}`));
  } else if (isUtf8(value)) {
    parts.push(Buffer.from(JSON.stringify(value.toString('utf8'))));
    parts.push(Buffer.from(`${extra}}`));
  } else {
    parts.push(Buffer.from(`"${value.toString('base64')}"`));
    parts.push(Buffer.from(`,"encoding":"base64"${extra}}`));
  }
}

export function ringJson(ring: RingJsonInput): Buffer {
  const head = { namespace: ring.namespace, name: ring.name, kind: ring.kind, env: ring.env, revision: ring.revision, etag: ring.etag };
  const parts: Buffer[] = [Buffer.from(`${JSON.stringify(head).slice(0, -1)},"current":`)];
  try {
    entry(parts, ring.kind, ring.current.version, ring.current.value, '');
    parts.push(Buffer.from(',"previous":['));
    ring.previous.forEach((p, i) => {
      if (i > 0) parts.push(Buffer.from(','));
      entry(parts, ring.kind, p.version, p.value, `,"retiredAt":"${new Date(p.retiredAt).toISOString()}","expiresAt":"${new Date(p.expiresAt).toISOString()}"`);
    });
    parts.push(Buffer.from(']}'));
    return Buffer.concat(parts);
  } finally {
    zeroize(...parts);
  }
}
