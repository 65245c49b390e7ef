/**
 * The cached-value representation: what a loader returns, what the cache
 * keeps (plaintext and the data API's rendered JSON body in one allocation),
 * and the lease rules that decide when those bytes are zero-filled.
 */
import { zeroize } from '../../shared/crypto.ts';
import type { ItemRef } from '../../shared/paths.ts';
import type { ItemKind } from '../../shared/protocol.ts';
import type { Milliseconds } from '../../shared/units.ts';
import { rawEtag } from '../item-representation.ts';

/** What a loader returns: one decrypted, merged value. */
export interface LoadedValue {
  readonly kind: ItemKind;
  readonly version: number;
  readonly revision: number;
  readonly etag: string;
  /** Merged JSON bytes (config) or raw bytes (secret). Owned by the cache from now on. */
  readonly plaintext: Buffer;
}

export type Loader = (ref: ItemRef, env: string, signal: AbortSignal) => Promise<LoadedValue>;

/** A cached value, with its data-API JSON body rendered once at store time. */
export interface CachedValue extends LoadedValue {
  readonly namespace: string;
  readonly name: string;
  readonly env: string;
  /** `{ namespace, name, kind, env, version, revision, value[, encoding] }` as bytes. */
  readonly json: Buffer;
  /** When the server last confirmed this value (clock ms). */
  readonly fetchedAt: Milliseconds;
  /** ETag of the raw representation (`etag` is the JSON one's), derived once at store time. */
  readonly rawEtag: string;
  /**
   * Responses being written from the buffers: a dropped value is zero-filled
   * only once this is back to 0. On the value itself rather than in an object
   * of its own: one object less per entry.
   */
  leases: number;
  /** The cache let go of the value (its buffers are zero-filled once no lease is left). */
  dropped: boolean;
}

/** Holds a value's buffers while a response is written from them. */
export function retain(value: CachedValue): void {
  value.leases += 1;
}

/** Ends a `retain`; zero-fills the buffers if the cache dropped the value meanwhile. */
export function release(value: CachedValue): void {
  value.leases -= 1;
  if (value.leases === 0 && value.dropped) zeroize(value.plaintext, value.json);
}

/** The cache lets go of a value: zero-fill now, or when its last lease ends. */
export function drop(value: CachedValue): void {
  if (value.dropped) return;
  value.dropped = true;
  if (value.leases === 0) zeroize(value.plaintext, value.json);
}

/** True once the value's bytes are gone (dropped with no lease left). */
export function isZeroed(value: CachedValue): boolean {
  return value.dropped && value.leases === 0;
}

function renderJson(ref: ItemRef, env: string, loaded: LoadedValue): Buffer {
  let value: unknown;
  let encoding: 'utf8' | 'base64' | undefined;
  if (loaded.kind === 'config') {
    value = JSON.parse(loaded.plaintext.toString('utf8')) as unknown;
  } else {
    const text = new TextDecoder('utf-8', { fatal: false }).decode(loaded.plaintext);
    const valid = Buffer.byteLength(text) === loaded.plaintext.length && !text.includes('\uFFFD');
    value = valid ? text : loaded.plaintext.toString('base64');
    encoding = valid ? 'utf8' : 'base64';
  }
  return Buffer.from(
    JSON.stringify({
      namespace: ref.namespace,
      name: ref.name,
      kind: loaded.kind,
      env,
      version: loaded.version,
      revision: loaded.revision,
      value,
      ...(encoding ? { encoding } : {}),
    }),
  );
}

/**
 * Puts an entry's bytes in one allocation of its own and zero-fills the
 * inputs. When the plaintext appears verbatim in the rendered JSON (text that
 * needs no escaping, compact JSON config: the usual case) the raw body is a
 * view into the JSON body, so the value is held once; otherwise both are
 * copied side by side. Why one allocation: small `Buffer.from` results are
 * slices of Node's shared 8 KiB pool, which the loader's transient buffers
 * (base64 decode, decipher output) also fill, so a long-lived entry kept
 * whole slabs of dead bytes alive (about 2.5× the cached bytes at 10k × 1 KiB).
 */
function packBuffers(plaintext: Buffer, json: Buffer): { plaintext: Buffer; json: Buffer } {
  const at = json.indexOf(plaintext);
  const packed = Buffer.allocUnsafeSlow(at === -1 ? plaintext.length + json.length : json.length);
  let packedJson: Buffer;
  let packedPlaintext: Buffer;
  if (at === -1) {
    plaintext.copy(packed, 0);
    json.copy(packed, plaintext.length);
    packedPlaintext = packed.subarray(0, plaintext.length);
    packedJson = packed.subarray(plaintext.length);
  } else {
    json.copy(packed, 0);
    packedJson = packed;
    packedPlaintext = packed.subarray(at, at + plaintext.length);
  }
  zeroize(plaintext, json);
  return { plaintext: packedPlaintext, json: packedJson };
}

/** Bytes an entry holds: its one allocation (the plaintext may be a view into the JSON body). */
export function heldBytes(value: Pick<CachedValue, 'plaintext' | 'json'>): number {
  return value.plaintext.buffer === value.json.buffer ? value.json.buffer.byteLength : value.plaintext.length + value.json.length;
}

/** Builds the cached form of a loaded value; the loaded plaintext is zero-filled. */
export function toCachedValue(ref: ItemRef, env: string, loaded: LoadedValue, fetchedAt: Milliseconds): CachedValue {
  const { plaintext, json } = packBuffers(loaded.plaintext, renderJson(ref, env, loaded));
  return {
    kind: loaded.kind,
    version: loaded.version,
    revision: loaded.revision,
    etag: loaded.etag,
    plaintext,
    namespace: ref.namespace,
    name: ref.name,
    env,
    json,
    rawEtag: rawEtag(loaded.etag),
    fetchedAt,
    leases: 0,
    dropped: false,
  };
}
