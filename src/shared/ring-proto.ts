/**
 * The key-ring wire contract (issue 20), shared by the server, the agent and
 * the CLI: the `ringGrace` / `revokePrevious` write options, the agent-facing
 * ring envelope (`GET /v1/envelopes/...?ring=1`, checked by hand: the agent
 * does not load zod) and the ring's ETag. The answer of `GET
 * /v1/items/{ns...}/{name}?ring=1` is `ringResponse` in protocol.ts.
 */
import { AppError } from './errors.ts';
import { readEnvelopeLayer, readEnvelopeResponse, type EnvelopeLayer, type EnvelopeResponse } from './envelope-wire.ts';
import { array, checked, field, integer, record, string, type Checked } from './shape-check.ts';
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

// The answer of GET /v1/items/{ns...}/{name}?ring=1 (`ringResponse`) is a zod schema in protocol.ts.

// --- GET /v1/envelopes/{ns...}/{name}?ring=1 (agent-facing) ------------------
/** The current envelope plus, per previous version in the ring, the layers that make its value. */
export interface RingEnvelopeResponse extends EnvelopeResponse {
  previous: Array<{ version: number; retiredAt: string; expiresAt: string; layers: EnvelopeLayer[] }>;
}

/** Checked by hand (envelope-wire.ts), as the agent reads it without zod. */
export function checkRingEnvelopeResponse(value: unknown): Checked<RingEnvelopeResponse> {
  return checked(() => ({
    ...readEnvelopeResponse(value),
    previous: field(record(value, ''), 'previous', '', (v, p) =>
      array(v, p, (entry, at) => {
        const o = record(entry, at);
        return {
          version: field(o, 'version', at, integer),
          retiredAt: field(o, 'retiredAt', at, string),
          expiresAt: field(o, 'expiresAt', at, string),
          layers: field(o, 'layers', at, (l, lp) => array(l, lp, readEnvelopeLayer, 1)),
        };
      }),
    ),
  }));
}
