/**
 * When an agent's last fleet report stops counting for a rollout. A live agent
 * reports every REPORT_INTERVAL_MS with nothing new (the server's ack sets
 * the interval) and at once when its stream state changes, so a report older
 * than SILENT_AFTER_MS means it missed three: its pod is gone or crash-looping,
 * whatever that report said. The stored report time is the truth every
 * replica shares (on PostgreSQL the agent's Watch stream may be on another
 * replica, so this replica's own streams cannot tell).
 */
import type { Milliseconds } from '../../shared/units.ts';
import { REPORT_INTERVAL_MS } from '../fleet/agent-registry.ts';

/** A report older than this is silence: three report intervals missed. */
export const SILENT_AFTER_MS: Milliseconds = 3 * REPORT_INTERVAL_MS;

export function isSilent(lastSeen: Milliseconds, now: Milliseconds): boolean {
  return now - lastSeen > SILENT_AFTER_MS;
}

/** The report as a rollout may count it: a silent agent's stream counts as down, whatever it last said. */
export function heardFrom<R extends { readonly connected: boolean; readonly lastSeen: Milliseconds }>(report: R, now: Milliseconds): R {
  return report.connected && isSilent(report.lastSeen, now) ? { ...report, connected: false } : report;
}
