/**
 * The key-ring wire contract (issue 20), shared by the server, the agent and
 * the CLI: the `ringGrace` / `revokePrevious` write options, the answer of
 * `GET /v1/items/{ns...}/{name}?ring=1` (server and agent), the agent-facing
 * ring envelope (`GET /v1/envelopes/...?ring=1`) and the ring's ETag.
 */
import { z } from 'zod';
import { AppError } from './errors.ts';
import { envelopeLayer, envelopeResponse } from './protocol.ts';
import { parseDuration, type Milliseconds } from './units.ts';

/** Longest grace a ring may keep a version that stopped being current. */
export const RING_GRACE_MAX: Milliseconds = 366 * 24 * 3600 * 1000;

/** Validated write options: `grace` in ms (0 = off), undefined = keep the item's setting. */
export interface RingWrite {
  readonly grace?: Milliseconds;
  readonly revokePrevious?: boolean;
}

/** Parses `ringGrace` / `revokePrevious` from a body at the edge; `where` prefixes the error ("changes.2."). */
export function ringWriteOf(body: { ringGrace?: string | undefined; revokePrevious?: boolean | undefined }, where = ''): RingWrite | undefined {
  if (body.ringGrace === undefined && body.revokePrevious === undefined) return undefined;
  let grace: Milliseconds | undefined;
  if (body.ringGrace !== undefined) {
    grace = body.ringGrace === '0' ? 0 : parseDuration(body.ringGrace);
    if (grace === undefined || grace < 0 || grace > RING_GRACE_MAX) {
      throw new AppError('invalid_argument', `${where}ringGrace must be a duration such as "24h" or "30m" (at most 366d), or "0s" to turn the ring off, not ${JSON.stringify(body.ringGrace.slice(0, 32))}.`);
    }
  }
  return { ...(grace === undefined ? {} : { grace }), ...(body.revokePrevious === undefined ? {} : { revokePrevious: body.revokePrevious }) };
}

/** `?ring=1` (or `true`) asks for the ring. */
export function wantsRing(query: URLSearchParams): boolean {
  const ring = query.get('ring');
  return ring === '1' || ring === 'true';
}

/**
 * The ring's ETag: the current value's etag plus the versions still in the
 * ring, so it changes when a version joins or ages out of the ring.
 */
export function ringEtag(currentEtag: string, previousVersions: readonly number[]): string {
  return `"${currentEtag.replaceAll('"', '')}~${previousVersions.join('.')}"`;
}

// --- GET /v1/items/{ns...}/{name}?ring=1 (server and agent) -----------------
const ringValue = {
  version: z.number().int(),
  value: z.json(),
  /** Secret bytes that are not UTF-8 text come as base64. */
  encoding: z.enum(['utf8', 'base64']).optional(),
};

export const ringResponse = z.object({
  namespace: z.string(),
  name: z.string(),
  kind: z.enum(['config', 'secret']),
  env: z.string(),
  revision: z.number().int(),
  current: z.object(ringValue),
  /** Newest first; each stopped being current at `retiredAt` and leaves the ring at `expiresAt`. */
  previous: z.array(z.object({ ...ringValue, retiredAt: z.string(), expiresAt: z.string() })),
  etag: z.string(),
});
export type RingResponse = z.infer<typeof ringResponse>;

// --- GET /v1/envelopes/{ns...}/{name}?ring=1 (agent-facing) ------------------
/** The current envelope plus, per previous version in the ring, the layers that make its value. */
export const ringEnvelopeResponse = envelopeResponse.extend({
  previous: z.array(
    z.object({
      version: z.number().int(),
      retiredAt: z.string(),
      expiresAt: z.string(),
      layers: z.array(envelopeLayer).min(1),
    }),
  ),
});
export type RingEnvelopeResponse = z.infer<typeof ringEnvelopeResponse>;
