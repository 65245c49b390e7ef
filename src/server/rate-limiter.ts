/**
 * Per-subject token buckets on the injectable Clock. Hand-written (a dozen
 * lines) because the libraries read Date.now directly, which tests could not
 * drive. Buckets of idle subjects are swept so memory stays bounded.
 */
import type { Clock } from '../shared/clock.ts';
import { AppError } from '../shared/errors.ts';

/** A bucket holds this many seconds of the rate, i.e. the burst allowance. */
const BURST_SECONDS = 2;
/** Above this many tracked subjects, full (idle) buckets are dropped. */
const SWEEP_AT_SUBJECTS = 10_000;

export interface RateLimiter {
  /** Throws `rate_limited` with Retry-After when the subject is over its rate. */
  take(subject: string): void;
}

export function createRateLimiter(perSecond: number, clock: Clock): RateLimiter {
  if (perSecond <= 0) return { take: () => {} };
  const capacity = perSecond * BURST_SECONDS;
  const buckets = new Map<string, { tokens: number; at: number }>();
  const refill = (bucket: { tokens: number; at: number }, now: number): void => {
    bucket.tokens = Math.min(capacity, bucket.tokens + ((now - bucket.at) / 1000) * perSecond);
    bucket.at = now;
  };
  return {
    take(subject) {
      const now = clock.now();
      let bucket = buckets.get(subject);
      if (!bucket) {
        if (buckets.size >= SWEEP_AT_SUBJECTS) {
          for (const [key, b] of buckets) {
            refill(b, now);
            if (b.tokens >= capacity) buckets.delete(key);
          }
        }
        bucket = { tokens: capacity, at: now };
        buckets.set(subject, bucket);
      }
      refill(bucket, now);
      if (bucket.tokens < 1) {
        const retryAfterS = Math.max(1, Math.ceil((1 - bucket.tokens) / perSecond));
        throw new AppError('rate_limited', `Over ${perSecond} requests per second; retry in ${retryAfterS}s.`, {
          headers: { 'retry-after': String(retryAfterS) },
        });
      }
      bucket.tokens -= 1;
    },
  };
}
