/**
 * Keeps the audit log bounded and its health known: retention by age and row
 * count at start and every `AUDIT_COMPACT_INTERVAL_MS`, and while audit writes
 * fail (readiness reports it; secret reads are refused), a probe row every
 * `AUDIT_PROBE_INTERVAL_MS` so readiness returns as soon as writes succeed
 * again, even with no traffic.
 */
import type { Clock, TimerHandle } from '../shared/clock.ts';
import { describeError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { Milliseconds } from '../shared/units.ts';
import type { ControlPlane } from './control-plane.ts';
import type { ServerMetrics } from './metrics.ts';

export const AUDIT_COMPACT_INTERVAL_MS: Milliseconds = 60_000;
export const AUDIT_PROBE_INTERVAL_MS: Milliseconds = 1_000;

export interface AuditUpkeep {
  close(): void;
}

export function startAuditUpkeep(options: {
  readonly controlPlane: ControlPlane;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: ServerMetrics;
  readonly retainAge: Milliseconds;
  readonly maxRows: number;
}): AuditUpkeep {
  const { controlPlane, clock, logger, metrics } = options;
  let closed = false;
  let compactTimer: TimerHandle | undefined;
  let probeTimer: TimerHandle | undefined;

  const compact = async (): Promise<void> => {
    try {
      const deleted = await controlPlane.compactAudit(options.retainAge, options.maxRows);
      if (deleted.age > 0) metrics.auditDropped.inc({ reason: 'age' }, deleted.age);
      if (deleted.rows > 0) metrics.auditDropped.inc({ reason: 'rows' }, deleted.rows);
      if (deleted.age + deleted.rows > 0) logger.info({ ...deleted, retainAgeMs: options.retainAge, maxRows: options.maxRows }, 'audit log compacted');
    } catch (err) {
      logger.error({ err: describeError(err) }, 'audit log compaction failed; will retry');
    }
    if (!closed) compactTimer = clock.setTimeout(() => void compact(), AUDIT_COMPACT_INTERVAL_MS);
  };

  const probe = (): void => {
    probeTimer = clock.setTimeout(() => {
      const next = (): void => {
        if (!closed) probe();
      };
      if (controlPlane.auditWritable) return next();
      controlPlane.audit({ subject: '(server)', action: 'admin', target: 'audit', outcome: 'ok', detail: 'audit write probe' }).then(next, next);
    }, AUDIT_PROBE_INTERVAL_MS);
  };

  void compact();
  probe();
  return {
    close() {
      closed = true;
      compactTimer?.cancel();
      probeTimer?.cancel();
    },
  };
}
