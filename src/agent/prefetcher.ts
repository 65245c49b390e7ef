/**
 * Loads the prefetch set into the cache, retrying failed items with capped
 * backoff until each is loaded (an item that is missing on the server keeps the
 * agent unready, visibly, in /readyz), or until the agent stops.
 */
import { Backoff } from '../shared/backoff.ts';
import type { Clock } from '../shared/clock.ts';
import type { AppError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { itemKey, type ItemRef } from '../shared/paths.ts';
import type { Milliseconds } from '../shared/units.ts';
import type { ValueCache } from './value-cache.ts';

export const PREFETCH_RETRY_BASE_MS: Milliseconds = 250;
export const PREFETCH_RETRY_CAP_MS: Milliseconds = 10_000;

export interface PrefetchOptions {
  readonly cache: ValueCache;
  readonly env: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly stopped: () => boolean;
  /** Items still failing after each round (empty when done). */
  readonly onRound?: (failing: readonly string[]) => void;
}

export async function prefetchAll(refs: readonly ItemRef[], options: PrefetchOptions): Promise<void> {
  const backoff = new Backoff({ baseMs: PREFETCH_RETRY_BASE_MS, capMs: PREFETCH_RETRY_CAP_MS });
  let pending = [...refs];
  while (pending.length > 0 && !options.stopped()) {
    const results = await Promise.allSettled(pending.map((ref) => options.cache.prefetch(ref, options.env)));
    const failed: ItemRef[] = [];
    results.forEach((result, i) => {
      if (result.status === 'fulfilled') return;
      const ref = pending[i] as ItemRef;
      failed.push(ref);
      options.logger.warn({ namespace: ref.namespace, name: ref.name, code: (result.reason as AppError).code }, 'prefetch failed; retrying');
    });
    pending = failed;
    options.onRound?.(failed.map(itemKey));
    if (pending.length > 0) await new Promise<void>((resolve) => options.clock.setTimeout(resolve, backoff.next()));
  }
}
