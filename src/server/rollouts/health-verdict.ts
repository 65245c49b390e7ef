/**
 * What a rollout's canaries' reports mean, as a pure decision: roll back (more
 * than maxUnhealthy unhealthy), advance (the bake time passed without that),
 * or just note who is unhealthy now. Only health a canary reported after it
 * applied the candidate counts: a report that lists this rollout among the
 * values the agent serves says the candidate is applied, and the agent resets
 * its application signal when it applies one (an old "unhealthy" is not
 * blamed on the new value). A canary that has not applied the candidate by
 * the end of the bake counts as unhealthy. A canary whose watch stream is
 * down counts only after STREAM_DOWN_GRACE_MS: a server restart or failover
 * drops every canary's stream at once, and its Report may reach the server
 * before its stream does; until then it holds the rollout (no advance).
 * A canary whose last report is older than SILENT_AFTER_MS (report-silence.ts)
 * is silent: its pod is gone or crash-looping, so what that report said
 * (connected, applied, healthy) no longer counts; it counts as stream down,
 * applied or not, with the same grace.
 * A canary that renders files has applied the candidate only once its files
 * are published at the rollout's revision too (its report's files revision):
 * an app reading files has not seen the candidate before that.
 */
import type { AgentHealth } from '../../shared/fleet-proto.ts';
import type { CanaryStatus } from '../../shared/protocol.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { RolloutRecord, UnhealthyCanary } from './rollout-record.ts';
import { isSilent, SILENT_AFTER_MS } from '../fleet/report-silence.ts';

/**
 * How long a canary's stream may be down before it counts as unhealthy: agents
 * reconnect with a jittered backoff capped at 10 s, so a restarted server sees
 * every stream back well within it.
 */
export const STREAM_DOWN_GRACE_MS: Milliseconds = 30_000;

/** What the verdict needs from an agent's last report. */
export interface CanaryReport {
  readonly id: string;
  readonly appliedRevision: number;
  readonly connected: boolean;
  readonly health: AgentHealth;
  readonly appHealth: string;
  readonly appHealthRevision: number;
  readonly healthReason: string;
  /** The agent renders files: applied needs `filesRevision` at the rollout's revision too. */
  readonly rendersFiles?: boolean | undefined;
  readonly filesRevision?: number | undefined;
  /** When the report was stored (the server's clock); absent: fresh. */
  readonly lastSeen?: Milliseconds | undefined;
  /** When the judging replica counts this agent's stream down from (absent: now, or for a silent one SILENT_AFTER_MS after its report). */
  readonly downSince?: Milliseconds | undefined;
}

/** The silent report's time, or undefined while the agent is heard from. */
const silentSince = (report: CanaryReport, now: Milliseconds): Milliseconds | undefined => (report.lastSeen !== undefined && isSilent(report.lastSeen, now) ? report.lastSeen : undefined);

/** Why a silent canary counts as down; stable while it stays silent (the rollout's unhealthy list is rewritten only when it changes). */
export const silenceReason = (lastSeen: Milliseconds): string => `silent: no report since ${new Date(lastSeen).toISOString()}`;

export type Verdict =
  | { readonly kind: 'rollback'; readonly unhealthy: readonly UnhealthyCanary[]; readonly reason: string }
  | { readonly kind: 'advance'; readonly unhealthy: readonly UnhealthyCanary[] }
  | { readonly kind: 'hold'; readonly unhealthy: readonly UnhealthyCanary[] };

const filesPending = (record: Pick<RolloutRecord, 'revision'>, report: CanaryReport): boolean => report.rendersFiles === true && (report.filesRevision ?? 0) < record.revision;

function canaryState(record: RolloutRecord, report: CanaryReport | undefined, now: Milliseconds): { applied: boolean; reason?: string; waiting?: true } {
  if (!report) return { applied: false };
  const applied = report.appliedRevision >= record.revision && !filesPending(record, report);
  if (applied && report.appHealth === 'unhealthy' && report.appHealthRevision >= record.revision) return { applied: true, reason: report.healthReason || 'application unhealthy' };
  const lastHeard = silentSince(report, now);
  if (lastHeard !== undefined) {
    const since = report.downSince ?? lastHeard + SILENT_AFTER_MS;
    return now - since < STREAM_DOWN_GRACE_MS ? { applied, waiting: true } : { applied, reason: silenceReason(lastHeard) };
  }
  if (!applied) return { applied: false };
  if (!report.connected) return now - (report.downSince ?? now) < STREAM_DOWN_GRACE_MS ? { applied: true, waiting: true } : { applied: true, reason: 'watch stream down' };
  if (report.health === 'degraded') return { applied: true, reason: `agent degraded${report.healthReason ? `: ${report.healthReason}` : ''}` };
  return { applied: true };
}

const describe = (list: readonly UnhealthyCanary[]): string => list.map((u) => `${u.agent} (${u.reason})`).join(', ');

export function healthVerdict(record: RolloutRecord, reports: ReadonlyMap<string, CanaryReport>, now: Milliseconds): Verdict {
  const unhealthy: UnhealthyCanary[] = [];
  const pending: string[] = [];
  let waiting = false;
  for (const agent of record.canary) {
    const state = canaryState(record, reports.get(agent), now);
    if (state.reason !== undefined) unhealthy.push({ agent, reason: state.reason.slice(0, 240) });
    else if (!state.applied) pending.push(agent);
    waiting ||= state.waiting === true;
  }
  if (unhealthy.length > record.maxUnhealthy) {
    return { kind: 'rollback', unhealthy, reason: `${unhealthy.length} canary agent(s) unhealthy, more than maxUnhealthy ${record.maxUnhealthy}: ${describe(unhealthy)}` };
  }
  if (record.state !== 'rolling' || waiting || now - record.stepStartedAt < record.bakeSeconds * 1000) return { kind: 'hold', unhealthy };
  const late = [
    ...unhealthy,
    ...pending.map((agent) => {
      const report = reports.get(agent);
      const files = report !== undefined && report.appliedRevision >= record.revision && filesPending(record, report);
      return { agent, reason: files ? `did not publish its files at revision ${record.revision} within bakeSeconds (published at ${report.filesRevision ?? 0})` : 'did not apply the candidate within bakeSeconds' };
    }),
  ];
  if (late.length > record.maxUnhealthy) {
    return { kind: 'rollback', unhealthy: late, reason: `${late.length} canary agent(s) unhealthy at the end of the bake, more than maxUnhealthy ${record.maxUnhealthy}: ${describe(late)}` };
  }
  return { kind: 'advance', unhealthy };
}

/**
 * Where each canary is, level by level, for `rollout status` and the status
 * page: reporting (and when it last did; silent when that is too long ago,
 * which counts as its stream down), the candidate applied (its applied
 * revision), its files published at that revision (agents rendering files),
 * and the application's own signal observed since.
 */
export function canaryStatuses(record: Pick<RolloutRecord, 'canary' | 'revision'>, reports: ReadonlyMap<string, CanaryReport>, now: Milliseconds): CanaryStatus[] {
  return record.canary.map((agent) => {
    const report = reports.get(agent);
    if (!report) return { agent, reporting: false, connected: false, applied: false, files: 'none', appHealth: 'unknown' };
    const quiet = silentSince(report, now) !== undefined;
    return {
      agent,
      reporting: true,
      ...(report.lastSeen === undefined ? {} : { lastReport: new Date(report.lastSeen).toISOString() }),
      ...(quiet ? { silent: true as const } : {}),
      connected: report.connected && !quiet,
      applied: report.appliedRevision >= record.revision,
      files: report.rendersFiles !== true ? 'none' : filesPending(record, report) ? 'pending' : 'published',
      appHealth: report.appHealthRevision >= record.revision && (report.appHealth === 'healthy' || report.appHealth === 'unhealthy') ? report.appHealth : 'unknown',
    };
  });
}
