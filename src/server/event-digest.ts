/**
 * Digests of log events, the third part of a log position (store id,
 * revision, digest). A digest is taken once, when the event is written, over
 * the store id, the revision, the event's payload and a random nonce, so two
 * events that reuse one revision number (a restored backup written to again,
 * one backup restored twice, a promoted standby that lost commits) never share
 * a digest even when their payloads are equal.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { WatchEvent } from '../shared/watch-proto.ts';

/** Bytes kept of the SHA-256: 128 bits make an accidental match negligible. */
export const EVENT_DIGEST_BYTES = 16;
const NONCE_BYTES = 16;

type Digestible = Extract<WatchEvent, { type: 'itemChanged' | 'itemDeleted' | 'keyRotated' }>;

/** Hex digest of `event` in the store `storeId`. */
export function eventDigest(storeId: string, event: Digestible): string {
  const { digest: _ignored, ...payload } = event;
  void _ignored;
  return createHash('sha256')
    .update(storeId)
    .update('\0')
    .update(String(event.revision))
    .update('\0')
    .update(JSON.stringify(payload))
    .update(randomBytes(NONCE_BYTES))
    .digest()
    .subarray(0, EVENT_DIGEST_BYTES)
    .toString('hex');
}

/** A digest for a position no event stands at (the boundary a restore marks as compacted). */
export function randomDigest(): string {
  return randomBytes(EVENT_DIGEST_BYTES).toString('hex');
}
