/**
 * The pure freshness decision: may a cached value be served, and how stale is
 * it? While the watch stream is connected a value is fresh until its TTL (a
 * backstop for lost events) unless a (re)connect from `now` or a resync
 * superseded it (its generation is older than the cache's): then only a
 * refetch may answer, because the stream cannot vouch for it. While the
 * stream is down a value is "stale since" max(stream down, fetched) and is
 * served with its staleness until max-stale.
 */
import type { Milliseconds } from '../../shared/units.ts';

export type Freshness = { readonly kind: 'fresh' } | { readonly kind: 'stale'; readonly staleMs: Milliseconds } | { readonly kind: 'expired' };

export interface FreshnessInput {
  readonly now: Milliseconds;
  readonly fetchedAt: Milliseconds;
  /** The value was stored before the cache's current generation began. */
  readonly superseded: boolean;
  /** When the stream went down; undefined while it is connected. */
  readonly streamDownSince: Milliseconds | undefined;
  readonly ttl: Milliseconds;
  readonly maxStale: Milliseconds;
}

const FRESH: Freshness = { kind: 'fresh' };
const EXPIRED: Freshness = { kind: 'expired' };

export function freshness(input: FreshnessInput): Freshness {
  if (input.streamDownSince === undefined) {
    if (input.superseded) return EXPIRED;
    return input.now - input.fetchedAt < input.ttl ? FRESH : EXPIRED;
  }
  const staleMs = Math.max(0, input.now - Math.max(input.streamDownSince, input.fetchedAt));
  return staleMs <= input.maxStale ? { kind: 'stale', staleMs } : EXPIRED;
}

/**
 * After a failed refetch of a value the stream no longer vouches for: how long
 * it has been stale, or undefined when past max-stale.
 */
export function staleIfError(input: Omit<FreshnessInput, 'superseded'>): Milliseconds | undefined {
  const staleSince = input.streamDownSince === undefined ? input.fetchedAt + input.ttl : Math.max(input.streamDownSince, input.fetchedAt);
  const staleMs = Math.max(0, input.now - staleSince);
  return staleMs <= input.maxStale ? staleMs : undefined;
}
