/**
 * Refused requests (401, 403) folded into aggregate audit rows, so a flood of
 * unauthenticated or forbidden calls cannot grow the audit log at line rate:
 * the first refusal of a kind (subject, action, reason) in a window is written
 * at once, the rest are counted and written as one row when the window ends.
 * The target is attacker-chosen, so it is not part of the kind; the aggregate
 * row names the first target seen. Kinds per window are bounded; past the
 * bound every further kind is counted under one overflow row.
 */
import type { Clock, TimerHandle } from '../shared/clock.ts';
import type { Milliseconds } from '../shared/units.ts';
import type { AuditEntry } from './control-plane.ts';

export const REFUSAL_WINDOW_MS: Milliseconds = 60_000;
/** The subject of a refusal whose caller sent no valid credential. */
export const UNAUTHENTICATED_SUBJECT = '(unauthenticated)';
export const MAX_REFUSAL_KINDS = 1_000;
const OVERFLOW_KIND = '(overflow)';

export interface RefusalAudit {
  /** Records one refusal; resolves once a row that must be written now is written (never rejects). */
  record(entry: AuditEntry): Promise<void>;
  /** Writes the aggregate rows of the current window now (shutdown). */
  flush(): Promise<void>;
}

interface Pending {
  readonly first: AuditEntry;
  count: number;
}

export function createRefusalAudit(options: {
  readonly write: (entry: AuditEntry) => Promise<void>;
  readonly clock: Clock;
  readonly windowMs?: Milliseconds;
  /** Called with how many refusals an aggregate row stands for beyond its first (metrics). */
  readonly onAggregated?: (count: number) => void;
}): RefusalAudit {
  const windowMs = options.windowMs ?? REFUSAL_WINDOW_MS;
  let pending = new Map<string, Pending>();
  let timer: TimerHandle | undefined;

  const flush = async (): Promise<void> => {
    timer?.cancel();
    timer = undefined;
    const done = pending;
    pending = new Map();
    for (const [kind, p] of done) {
      if (p.count === 0) continue;
      options.onAggregated?.(p.count);
      const reason = kind === OVERFLOW_KIND ? 'refusals of other kinds' : p.first.detail ?? '';
      await options.write({
        subject: kind === OVERFLOW_KIND ? OVERFLOW_KIND : p.first.subject,
        action: p.first.action,
        target: p.first.target,
        outcome: p.first.outcome,
        detail: `${reason}; ${p.count} more within ${Math.round(windowMs / 1000)}s (aggregated)`,
      });
    }
  };

  return {
    async record(entry) {
      let kind = `${entry.subject}\u0000${entry.action}\u0000${entry.outcome}\u0000${entry.detail ?? ''}`;
      if (!pending.has(kind) && pending.size >= MAX_REFUSAL_KINDS) kind = OVERFLOW_KIND;
      const seen = pending.get(kind);
      if (seen) {
        seen.count += 1;
        return;
      }
      pending.set(kind, { first: entry, count: 0 });
      timer ??= options.clock.setTimeout(() => void flush(), windowMs);
      if (kind !== OVERFLOW_KIND) await options.write(entry);
      else pending.get(kind)!.count = 1;
    },
    flush,
  };
}
