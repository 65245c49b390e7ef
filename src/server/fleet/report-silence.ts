/**
 * When an agent's last fleet report stops counting: the one rule the fleet
 * list, the status page, the fleet gauges and rollouts share. A live agent
 * reports every REPORT_INTERVAL_MS with nothing new (the server's ack sets
 * the interval) and at once when its stream state changes, so a report older
 * than SILENT_AFTER_MS means it missed three: its pod is gone, stopped or cut
 * off from the server, whatever that report said. The stored report time is
 * the truth every replica shares (on PostgreSQL the agent's Watch stream may
 * be on another replica, so this replica's own streams cannot tell).
 */
import type { Milliseconds } from '../../shared/units.ts';

/** How often an agent with nothing new reports (the ack tells it); well inside the expiry. */
export const REPORT_INTERVAL_MS: Milliseconds = 10_000;
/** A report older than this is silence: three report intervals missed. */
export const SILENT_AFTER_MS: Milliseconds = 3 * REPORT_INTERVAL_MS;

export function isSilent(lastSeen: Milliseconds, now: Milliseconds): boolean {
  return now - lastSeen > SILENT_AFTER_MS;
}

/** The report as a view or a rollout may count it: a silent agent's stream counts as down, whatever it last said. */
export function heardFrom<R extends { readonly connected: boolean; readonly lastSeen: Milliseconds }>(report: R, now: Milliseconds): R {
  return report.connected && isSilent(report.lastSeen, now) ? { ...report, connected: false } : report;
}

/** Why a silent agent is not shown as connected (the fleet list and the status page show this text). */
export function silenceReason(lastSeen: Milliseconds, now: Milliseconds): string {
  const seconds = Math.floor((now - lastSeen) / 1000);
  return `no report for ${seconds} s (agents report every ${REPORT_INTERVAL_MS / 1000} s; silent after ${SILENT_AFTER_MS / 1000} s): its pod is gone, stopped or cut off from the server`;
}
